//! `weft new filter` as a filter author runs it: the crate it makes, in a folder of
//! its own, builds as it is for wasm32-wasip2, passes its own unit and harness tests,
//! and its component runs under `weft filter test`; `cargo component build` too, where
//! cargo-component is installed.
//!
//! The crate builds with this workspace's `Cargo.lock`, offline, into this
//! workspace's own target directory, so that what the workspace's tests compiled
//! with the same features is reused. Its smaller feature set still compiles the
//! engine's wasmtime again: on a clean two-core machine this test took 316 s, against
//! 448 s in a target directory of its own; once built, a few seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_testkit::{TempDir, output};

mod support;

use support::weft;

/// A first run compiles the engine for the crate's harness test: minutes on a small
/// machine. Later runs reuse it and take seconds.
const BUILD_LIMIT: Duration = Duration::from_secs(40 * 60);

/// The target directory this test was built in (Cargo gives its `tmp/` folder).
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .expect("tmp/ is in the target directory")
        .to_owned()
}

fn workspace() -> PathBuf {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
    cli.parent().expect("cli/ is in the workspace").to_owned()
}

/// Run `cargo ARGS` in `dir` to its end, within [`BUILD_LIMIT`]; whether it succeeded.
/// Its output goes where this test's goes, so a failure shows why.
fn cargo(dir: &Path, args: &[&str]) -> bool {
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir())
        // Also for the cargo the crate's harness test runs.
        .env("CARGO_NET_OFFLINE", "true")
        .stdin(Stdio::null());
    // This test's own build settings are not the new crate's.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().expect("run cargo");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            return status.success();
        }
        if started.elapsed() > BUILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cargo {args:?} took longer than {BUILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cargo_component_installed() -> bool {
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(program)
        .args(["component", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `weft filter test` of a built component on `GET /hello`; its stdout.
fn answers_hello(wasm: &Path) -> String {
    let out = output(
        weft()
            .args(["filter", "test"])
            .arg(wasm)
            .args(["--config", r#"{"greeting":"hi from wasm"}"#])
            .args(["--request", "GET /hello"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    stdout
}

#[test]
fn a_new_filter_builds_both_ways_passes_its_tests_and_runs() {
    let dir = TempDir::new();
    let krate = dir.0.join("greet-me");
    let out = output(
        weft()
            .args(["new", "filter", "greet-me", "--dir"])
            .arg(&krate),
    );
    assert!(out.status.success(), "{out:?}");
    // The workspace's versions, which are on this machine already.
    std::fs::copy(workspace().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();

    let release = [
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--offline",
    ];
    assert!(cargo(&krate, &release), "the new crate did not build");
    let wasm = target_dir().join("wasm32-wasip2/release/greet_me.wasm");
    let stdout = answers_hello(&wasm);
    assert!(stdout.contains("on-request  respond 200"), "{stdout}");
    assert!(stdout.contains(r#""hi from wasm""#), "{stdout}");

    // Its unit tests on the SDK's doubles, and its harness test of the component.
    assert!(cargo(&krate, &["test", "--offline"]), "its tests failed");

    if !cargo_component_installed() {
        eprintln!(
            "SKIPPED: `cargo component build` of the new crate (cargo-component is not \
             installed; `cargo install cargo-component --locked` to run it)"
        );
        return;
    }
    let component = ["component", "build", "--release", "--offline"];
    assert!(cargo(&krate, &component), "cargo component build failed");
    let p1 = target_dir().join("wasm32-wasip1/release/greet_me.wasm");
    let stdout = answers_hello(&p1);
    assert!(stdout.contains("on-request  respond 200"), "{stdout}");
}

#[test]
fn a_bad_name_or_a_folder_in_use_is_refused() {
    let dir = TempDir::new();
    let out = output(
        weft()
            .args(["new", "filter", "Bad Name", "--dir"])
            .arg(&dir.0),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot name a crate"), "{stderr}");

    std::fs::write(dir.0.join("keep.txt"), "mine").unwrap();
    let out = output(weft().args(["new", "filter", "fine", "--dir"]).arg(&dir.0));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
}
