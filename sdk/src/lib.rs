//! Write Weft filters in Rust.
//!
//! A Weft filter is a WebAssembly component that the proxy runs on every request of a
//! listener. With this crate:
//!
//! 1. Make a `cdylib` crate that depends on `weft-sdk`.
//! 2. Declare the filter as a type that is also its configuration: the SDK
//!    deserializes the filter's `config` (from the proxy's YAML) into it with serde.
//! 3. Implement [`Filter`]: only [`Filter::on_request`] is required.
//! 4. Export it with [`export!`], and build with
//!    `cargo build --release --target wasm32-wasip2` (or `cargo component build`).
//!
//! ```no_run
//! use weft_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! #[serde(crate = "weft_sdk::serde")]
//! struct Hello { greeting: String }
//!
//! impl Filter for Hello {
//!     fn on_request(&mut self, req: &Request) -> Action {
//!         if req.path() == "/hello" { Action::respond(200, &self.greeting) } else { Action::Continue }
//!     }
//! }
//!
//! weft_sdk::export!(Hello);
//! ```
//!
//! The proxy keeps several instances of a filter and lends each hook call to a free
//! one, so keep per-request state out of the filter value; use [`state`] for what
//! instances share.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod __weft_bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "../wit",
        world: "filter-world",
        pub_export_macro: true,
        export_macro_name: "__weft_export_world",
        default_bindings_module: "weft_sdk::__weft_bindings",
    });
}

mod filter;
pub mod host;

pub use __weft_bindings::weft::filter::types::{
    Action, BodyMode, Connection, Header, HeaderError, HttpVersion, Interest, LocalResponse,
    Request, Response, ResponseAction,
};
pub use filter::Filter;
pub use host::{log, metrics, random, state, time};
pub use serde;

/// What a filter usually needs, in one import.
pub mod prelude {
    pub use crate::{
        Action, BodyMode, Filter, Interest, LocalResponse, Request, Response, ResponseAction,
    };
    pub use serde::Deserialize;
}

#[doc(hidden)]
pub mod __private {
    pub use crate::filter::{init, on_request, on_response};
}

/// Export a [`Filter`] type as the component's filter.
///
/// ```no_run
/// # use weft_sdk::prelude::*;
/// # #[derive(Deserialize)] #[serde(crate = "weft_sdk::serde")] struct MyFilter;
/// # impl Filter for MyFilter { fn on_request(&mut self, _: &Request) -> Action { Action::Continue } }
/// weft_sdk::export!(MyFilter);
/// ```
#[macro_export]
macro_rules! export {
    ($filter:ty) => {
        #[doc(hidden)]
        struct __WeftExportedFilter;

        impl $crate::__weft_bindings::exports::weft::filter::filter::Guest for __WeftExportedFilter {
            fn init(config: ::std::string::String) -> ::std::result::Result<$crate::Interest, ::std::string::String> {
                $crate::__private::init::<$filter>(&config)
            }
            fn on_request(request: &$crate::Request) -> $crate::Action {
                $crate::__private::on_request::<$filter>(request)
            }
            fn on_response(response: &$crate::Response) -> $crate::ResponseAction {
                $crate::__private::on_response::<$filter>(response)
            }
        }

        // Only wasm has the component's export names; on the host (unit tests of a
        // filter's logic) there is nothing to export.
        #[cfg(target_arch = "wasm32")]
        $crate::__weft_bindings::__weft_export_world!(__WeftExportedFilter with_types_in $crate::__weft_bindings);
    };
}

impl Action {
    /// Answer with this status and a `text/plain` body.
    pub fn respond(status: u16, body: impl AsRef<[u8]>) -> Self {
        Action::Respond(LocalResponse::new(status).text(body))
    }

    /// Send the request to this cluster (then go on with the next filter).
    pub fn route(cluster: impl Into<String>) -> Self {
        Action::Route(cluster.into())
    }

    /// Hold the request this long (then go on with the next filter).
    pub fn delay(duration: std::time::Duration) -> Self {
        Action::Delay(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl LocalResponse {
    /// An empty response with this status.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: value.as_ref().to_vec(),
        });
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// Set a plain-text body (and its content type).
    pub fn text(self, body: impl AsRef<[u8]>) -> Self {
        self.header("content-type", "text/plain; charset=utf-8")
            .body(body)
    }
}

impl Interest {
    /// The request hook only, no bodies: the default.
    pub const REQUEST: Interest = Interest {
        request: true,
        request_body: BodyMode::None,
        response: false,
        response_body: BodyMode::None,
    };

    /// Also call `on_response`.
    pub const fn with_response(mut self) -> Self {
        self.response = true;
        self
    }

    /// Buffer the request body for `on_request`.
    pub const fn with_request_body(mut self) -> Self {
        self.request_body = BodyMode::Buffered;
        self
    }

    /// Call `on_response` with the response body buffered.
    pub const fn with_response_body(mut self) -> Self {
        self.response = true;
        self.response_body = BodyMode::Buffered;
        self
    }
}
