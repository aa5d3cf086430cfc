//! Builds the guests the tests load, once, and exposes their paths as constants.
//!
//! `HELLO_P1` is the hello example built the way `cargo component build` builds it: a
//! `wasm32-wasip1` core module turned into a component with the WASI preview 1
//! adapter, so the tests prove such filters load too.

use std::fmt::Write;

const GUESTS: &[(&str, &str, &str)] = &[
    (
        "MISBEHAVE",
        "weft-test-guest-misbehave",
        "tests/guests/misbehave",
    ),
    ("STAMP", "weft-test-guest-stamp", "tests/guests/stamp"),
    (
        "WRONG_WORLD",
        "weft-test-guest-wrong-world",
        "tests/guests/wrong-world",
    ),
    ("HELLO", "hello-filter", "examples/hello-filter"),
    ("API_KEY", "api-key", "examples/api-key"),
    ("RATE_LIMITER", "rate-limiter", "examples/rate-limiter"),
    ("TAG_ONE", "weft-test-guest-tag-one", "tests/guests/tag-one"),
    ("TAG_TWO", "weft-test-guest-tag-two", "tests/guests/tag-two"),
    (
        "FROZEN_0_2",
        "weft-test-guest-frozen-0-2",
        "tests/guests/frozen-0-2",
    ),
    ("CHAOS", "weft-test-guest-chaos", "tests/guests/chaos"),
    ("COUNTER", "weft-test-guest-counter", "tests/guests/counter"),
];

fn main() {
    // The two tag guests share their source, which sits beside them.
    println!("cargo:rerun-if-changed=guests/tag.rs");
    let list: Vec<_> = GUESTS.iter().map(|(_, p, d)| (*p, *d)).collect();
    let built = weft_guest_build::build(&list);
    let mut src = String::new();
    for ((konst, package, _), (_, path)) in GUESTS.iter().zip(&built) {
        writeln!(src, "/// The `{package}` component.").unwrap();
        writeln!(
            src,
            "pub const {konst}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }

    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let p1 = weft_guest_build::build_for(
        "wasm32-wasip1",
        &[("hello-filter", "examples/hello-filter")],
    );
    let module = std::fs::read(&p1[0].1).expect("read the wasip1 module");
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("the module carries its component type")
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .expect("the adapter fits")
        .validate(true)
        .encode()
        .expect("componentize the wasip1 module");
    let p1_path = out.join("hello_filter_p1.wasm");
    std::fs::write(&p1_path, component).unwrap();
    writeln!(
        src,
        "/// The hello example as `cargo component build` makes it (wasip1 + adapter)."
    )
    .unwrap();
    writeln!(
        src,
        "pub const HELLO_P1: &str = {:?};",
        p1_path.display().to_string()
    )
    .unwrap();

    std::fs::write(out.join("guests.rs"), src).unwrap();
}
