//! Builds the benchmark's own guest: a filter whose hooks return at once.

fn main() {
    let built = weft_guest_build::build(&[("weft-bench-guest-empty", "bench/guests/empty")]);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    std::fs::write(
        out.join("guests.rs"),
        format!(
            "/// The empty guest's component.\npub const EMPTY: &str = {:?};\n",
            built[0].1.display().to_string()
        ),
    )
    .expect("writes guests.rs");
}
