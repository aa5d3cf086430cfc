//! Builds the guests the tests load, once, and exposes their paths as constants.

use std::fmt::Write;

const GUESTS: &[(&str, &str, &str)] = &[
    ("MISBEHAVE", "weft-test-guest-misbehave", "tests/guests/misbehave"),
    ("STAMP", "weft-test-guest-stamp", "tests/guests/stamp"),
    ("WRONG_WORLD", "weft-test-guest-wrong-world", "tests/guests/wrong-world"),
    ("HELLO", "hello-filter", "examples/hello-filter"),
];

fn main() {
    let list: Vec<_> = GUESTS.iter().map(|(_, p, d)| (*p, *d)).collect();
    let built = weft_guest_build::build(&list);
    let mut src = String::new();
    for ((konst, package, _), (_, path)) in GUESTS.iter().zip(&built) {
        writeln!(src, "/// The `{package}` component.").unwrap();
        writeln!(src, "pub const {konst}: &str = {:?};", path.display().to_string()).unwrap();
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, src).unwrap();
}
