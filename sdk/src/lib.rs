//! Write Weft filters in Rust.
//!
//! A Weft filter is a WebAssembly component that the proxy runs on the requests (and,
//! when it asks, the responses) of a listener. With this crate:
//!
//! 1. Make a `cdylib` crate that depends on `weft-sdk`.
//! 2. Declare the filter as a type that is also its configuration: the SDK
//!    deserializes the filter's `config` (from the proxy's YAML, handed over as JSON)
//!    into it with serde. Derive [`Deserialize`](serde::Deserialize) with
//!    `#[serde(crate = "weft_sdk::serde")]`, so the crate needs no serde dependency of
//!    its own.
//! 3. Implement [`Filter`]: only [`Filter::on_request`] is required. Override
//!    [`Filter::init`] to check the configuration and [`Filter::interest`] to get
//!    [`Filter::on_response`] or message bodies.
//! 4. Export it with [`export!`].
//! 5. Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` file in
//!    `target/wasm32-wasip2/release/` is the filter's `module`.
//! 6. Test the hooks with `cargo test` on the host: there [`Request`], [`Response`] and
//!    [`Context`] are test doubles you build and inspect, and `weft_sdk::testing` runs
//!    a request through the filter as the proxy does (native builds only).
//!
//! ```no_run
//! use weft_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! #[serde(crate = "weft_sdk::serde")]
//! struct Hello { greeting: String }
//!
//! impl Filter for Hello {
//!     fn on_request(&mut self, req: &Request, _: &Context) -> Action {
//!         if req.head().path() == "/hello" { Action::respond(200, &self.greeting) } else { Action::Continue }
//!     }
//! }
//!
//! weft_sdk::export!(Hello);
//! ```
//!
//! The proxy keeps several instances of a filter and lends each hook call to a free
//! one, so the two hooks of one request may run on different instances: keep only
//! configuration (and caches of it) in the filter value, the request's [`Context`]
//! for what one request carries from hook to hook, and [`state`] for what instances
//! must share. The proxy's services ([`log`], [`metrics`], [`state`],
//! [`time`], [`random`]) never block, and the ones that can fail return `Result`.
#![deny(missing_docs)]
#![deny(unsafe_code)]

/// The one place the WIT contract (`wit/filter.wit`) becomes Rust. It is public only
/// because [`export!`] expands in the filter's crate and must name the generated glue.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code)]
pub mod __weft_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "filter-world",
        pub_export_macro: true,
        export_macro_name: "__weft_export_world",
        default_bindings_module: "weft_sdk::__weft_bindings",
        // Hooks return these; tests compare them.
        additional_derives: [PartialEq],
    });
}

mod config;
#[cfg(not(target_arch = "wasm32"))]
mod double;
mod filter;
// Which headers a filter may set; the engine includes this same file.
pub mod header_rules;
mod host;
// The proxy's rules on metric names and state; the engine includes this same file.
#[cfg(not(target_arch = "wasm32"))]
mod limits;
#[cfg(not(target_arch = "wasm32"))]
mod native;
mod same_api;
pub mod spiffe;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;
pub mod units;

pub use __weft_bindings::weft::filter::types::{
    Action, BodyMode, Connection, ExchangeError, ExchangeSetting, Facts, Header, HeaderError,
    HttpVersion, Interest, LocalResponse, PropertyError, Responder, ResponseAction, SettingError,
    Summary, TlsInfo,
};
// In a filter component the proxy lends its request, response and context; natively
// (a filter crate's own tests) they are the SDK's test doubles, with the same methods.
#[cfg(target_arch = "wasm32")]
pub use __weft_bindings::weft::filter::types::{Context, Request, Response};
#[cfg(not(target_arch = "wasm32"))]
pub use double::{Context, Request, Response};
pub use filter::{ClusterRef, Filter, from_config};
pub use host::{log, metrics, random, state, time, trace};
pub use serde;
pub use types::{RequestHead, ResponseHead};

/// What a filter usually needs, in one import.
pub mod prelude {
    pub use crate::{
        Action, BodyMode, ClusterRef, Context, Filter, Interest, LocalResponse, Request, Response,
        ResponseAction, Summary,
    };
    pub use serde::Deserialize;
}

/// What [`export!`] expands to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::__weft_bindings::exports::weft::filter::filter::Guest;
    pub use crate::filter::{Slot, init, on_done, on_request, on_response};

    /// The generated export trait, natively: over the test doubles, so that the
    /// glue [`export!`](crate::export) makes is type-checked in native builds too.
    #[cfg(not(target_arch = "wasm32"))]
    pub trait Guest {
        /// `init`.
        fn init(config: String) -> Result<crate::Interest, String>;
        /// `on-request`.
        fn on_request(request: &crate::Request, context: &crate::Context) -> crate::Action;
        /// `on-response`.
        fn on_response(
            response: &crate::Response,
            context: &crate::Context,
        ) -> crate::ResponseAction;
        /// `on-done`.
        fn on_done(context: &crate::Context, summary: crate::Summary);
    }
}

/// Export a [`Filter`] type as this component's filter.
///
/// Call it once, at the top level of the filter's crate, with the filter type. It
/// implements the WIT exports and keeps the instance's one filter value, created by
/// the proxy's `init` call; a hook called before `init` succeeded answers 500.
///
/// ```no_run
/// # use weft_sdk::prelude::*;
/// # #[derive(Deserialize)] #[serde(crate = "weft_sdk::serde")] struct MyFilter {}
/// # impl Filter for MyFilter { fn on_request(&mut self, _: &Request, _: &Context) -> Action { Action::Continue } }
/// weft_sdk::export!(MyFilter);
/// ```
#[macro_export]
macro_rules! export {
    ($filter:ty $(,)?) => {
        // An unnamed const keeps the glue out of the filter crate's namespace while
        // `$filter` still resolves where the macro was called.
        #[doc(hidden)]
        const _: () = {
            ::std::thread_local! {
                // Wasm instances are single-threaded: this is the instance's filter.
                static __WEFT_FILTER: $crate::__private::Slot<$filter> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            // Only the wasm export below names it; on the host it is unused.
            #[allow(dead_code)]
            struct __WeftExport;

            impl $crate::__private::Guest for __WeftExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<$crate::Interest, ::std::string::String> {
                    $crate::__private::init::<$filter>(&__WEFT_FILTER, &config)
                }

                fn on_request(
                    request: &$crate::Request,
                    context: &$crate::Context,
                ) -> $crate::Action {
                    $crate::__private::on_request::<$filter>(&__WEFT_FILTER, request, context)
                }

                fn on_response(
                    response: &$crate::Response,
                    context: &$crate::Context,
                ) -> $crate::ResponseAction {
                    $crate::__private::on_response::<$filter>(&__WEFT_FILTER, response, context)
                }

                fn on_done(context: &$crate::Context, summary: $crate::Summary) {
                    $crate::__private::on_done::<$filter>(&__WEFT_FILTER, context, &summary)
                }
            }

            // Only wasm has the component's export names; on the host (unit tests of
            // a filter's logic) there is nothing to export.
            #[cfg(target_arch = "wasm32")]
            $crate::__weft_bindings::__weft_export_world!(
                __WeftExport with_types_in $crate::__weft_bindings
            );
            // On the host the filter is still built and type-checked as a filter.
            #[cfg(not(target_arch = "wasm32"))]
            const _: fn(&str) -> ::std::result::Result<$filter, ::std::string::String> =
                $crate::from_config::<$filter>;
        };
    };
}
