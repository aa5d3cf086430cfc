//! Compiles the built-in filters to components and embeds them.

use std::fmt::Write;

/// `(name users write after builtin:, package, folder)`.
const BUILTINS: &[(&str, &str, &str)] = &[
    ("router", "weft-filter-router", "filters/router"),
    ("fault", "weft-filter-fault", "filters/fault"),
    ("retry", "weft-filter-retry", "filters/retry"),
    ("telemetry", "weft-filter-telemetry", "filters/telemetry"),
    (
        "encryption-policy",
        "weft-filter-encryption-policy",
        "filters/encryption-policy",
    ),
];

fn main() {
    let guests: Vec<_> = BUILTINS.iter().map(|(_, p, d)| (*p, *d)).collect();
    let built = weft_guest_build::build(&guests);
    let mut src = String::from(
        "/// Every built-in filter: `(name, component bytes)`.\npub static BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for ((name, _, _), (_, path)) in BUILTINS.iter().zip(&built) {
        writeln!(
            src,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    src.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("builtins.rs");
    std::fs::write(out, src).unwrap();
}
