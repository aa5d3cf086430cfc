//! A component of some other world, which the proxy must refuse as a filter.

wit_bindgen::generate!({ path: "wit", world: "other" });

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

#[cfg(target_arch = "wasm32")]
export!(Other);
