//! Compiles guest crates of this workspace to `wasm32-wasip2` components from a build
//! script, so that built-in filters can be embedded and test guests found by path.
//!
//! 1. List the guests as `(package, folder relative to the workspace root)`.
//! 2. Call [`build`] from `build.rs`; it runs one nested `cargo build --release
//!    --target wasm32-wasip2` into a target folder shared by every caller.
//! 3. Use the returned paths, e.g. with `include_bytes!` or as constants.
//!
//! ```no_run
//! let built = weft_guest_build::build(&[("weft-filter-router", "filters/router")]);
//! println!("{}", built[0].1.display());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target guests are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The workspace root: the guests' paths are relative to it.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    manifest
        .ancestors()
        .find(|p| {
            std::fs::read_to_string(p.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
        })
        .map(Path::to_owned)
        .unwrap_or(manifest)
}

/// A target folder shared by every build script of the workspace, so guests and their
/// dependencies compile once.
fn guest_target_dir() -> PathBuf {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    out.ancestors()
        .find(|p| p.join("CACHEDIR.TAG").exists())
        .map_or_else(|| out.join("guests"), |t| t.join("wasm-guests"))
}

/// Build the guests; returns `(package, path of its .wasm)` in the order given.
///
/// Panics with the nested cargo's output when the build fails: a build script has no
/// better way to report it.
pub fn build(guests: &[(&str, &str)]) -> Vec<(String, PathBuf)> {
    build_for(TARGET, guests)
}

/// Like [`build`], for another wasm target (e.g. `wasm32-wasip1`, whose core modules
/// `cargo component` turns into components with an adapter).
pub fn build_for(target: &str, guests: &[(&str, &str)]) -> Vec<(String, PathBuf)> {
    let root = workspace_root();
    let target_dir = guest_target_dir();
    println!("cargo:rerun-if-changed={}", root.join("sdk").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    for (_, dir) in guests {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", target, "--target-dir"])
        .arg(&target_dir);
    for (package, _) in guests {
        cmd.args(["-p", package]);
    }
    // The outer build's flags are for the host; the guests get their own.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // Filters travel to every proxy and sit in its memory: ship them without DWARF.
    // Panic messages and the name section (for trap backtraces) stay.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let output = cmd.output().expect("cannot run cargo for the wasm guests");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            "\nhint: run `rustup target add wasm32-wasip2 wasm32-wasip1` (or ./dev, which does)"
        } else {
            ""
        };
        panic!("building wasm guests failed:\n{stderr}{hint}");
    }
    guests
        .iter()
        .map(|(package, _)| {
            let file = format!("{}.wasm", package.replace('-', "_"));
            let path = target_dir.join(target).join("release").join(file);
            assert!(path.exists(), "{} was not built", path.display());
            (package.to_string(), path)
        })
        .collect()
}
