//! Weft's built-in filters, compiled to `wasm32-wasip2` components at build time and
//! embedded in the binary, so a configuration names them as `builtin:router` with no
//! build step of its own.
//!
//! 1. The build script compiles `filters/*` with the workspace's SDK.
//! 2. [`get`] returns a filter's component bytes by name.
//!
//! ```no_run
//! let router = weft_builtin::get("router").expect("embedded");
//! assert_eq!(&router[..4], b"\0asm");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The component bytes of a built-in filter.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The names of the built-in filters.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(n, _)| *n)
}
