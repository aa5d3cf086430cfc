//! The one place where the host side of the `weft:filter` WIT is generated.
//!
//! Everything outside this module uses the types re-exported from the crate root.
//! Their documentation is the WIT's own.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "filter-world",
    with: {
        "weft:filter/types.request": crate::resources::RequestRef,
        "weft:filter/types.response": crate::resources::ResponseRef,
        "weft:filter/types.context": crate::resources::ContextRef,
    },
});

pub(crate) use weft::filter::host as host_api;
pub(crate) use weft::filter::types;
