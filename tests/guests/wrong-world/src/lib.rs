//! A component of some other world, which the proxy must refuse as a filter.

wit_bindgen::generate!({ path: "wit", world: "other" });

// Exported on wasm only; on the host (`cargo test --workspace`) it is unused.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

#[cfg(target_arch = "wasm32")]
export!(Other);
