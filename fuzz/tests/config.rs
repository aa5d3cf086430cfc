//! The proxy config loader and the mesh config loader (`weft_config`): arbitrary bytes,
//! and documents built from the real model's keys. Whatever they are given, they
//! return a config or an error; an error names the file and a line in it.
//!
//! Longer: `WEFT_FUZZ_CASES=200000 cargo test -p weft-fuzz --test config --release`,
//! or coverage-guided on nightly: `cargo bolero test -p weft-fuzz --test config
//! proxy_config_from_the_model`.

use std::collections::BTreeMap;

use bolero::check;
use weft_config::{Config, ConfigError, MeshConfig};
use weft_fuzz::{Choices, cases, yaml};

const FILE: &str = "fuzz.yaml";
const MESH_FILE: &str = "mesh.yaml";

/// What every error must say: the file it is about, and a line of it.
fn assert_located(e: &ConfigError, file: &str, text: &str) {
    let (named, line) = match e {
        ConfigError::Syntax { file, line, .. } => (file, *line),
        ConfigError::Invalid { file, line, .. } => (file, *line),
        other => panic!("a parse of text cannot fail to read a file: {other}\n--- input:\n{text}"),
    };
    assert_eq!(named, file, "{e}\n--- input:\n{text}");
    assert!(
        line >= 1,
        "the error names no line: {e}\n--- input:\n{text}"
    );
    assert!(e.to_string().starts_with(&format!("{file}:")), "{e}");
}

/// Parse and validate a proxy's file; what loads is used as the proxy would use it.
fn load_proxy_config(text: &str) {
    match Config::from_str(text, FILE, None) {
        Ok(config) => {
            config.validate().expect("a loaded config validates again");
            let _ = config.pushed_modules();
            for l in &config.listeners {
                let _ = l.upgrade_protocols();
                for f in &l.filters {
                    let _ = config.module_source(f);
                }
            }
        }
        Err(e) => assert_located(&e, FILE, text),
    }
}

/// Parse a mesh config and validate every group, as the config server does on apply.
fn load_mesh_config(text: &str) {
    let pushed: BTreeMap<String, String> = [("hello".to_owned(), "0".repeat(64))].into();
    let mesh = match MeshConfig::parse(text, MESH_FILE) {
        Ok(mesh) => mesh,
        Err(e) => return assert_located(&e, MESH_FILE, text),
    };
    match mesh.validate(&pushed) {
        Ok(configs) => {
            assert_eq!(configs.len(), mesh.proxies.len());
            for config in &configs {
                let _ = config.pushed_filters();
            }
        }
        Err(e) => assert_located(&e, MESH_FILE, text),
    }
    let _ = mesh.select("web", &BTreeMap::new());
}

#[test]
fn proxy_config_from_bytes() {
    check!()
        .with_iterations(cases(3000))
        .with_max_len(2048)
        .for_each(|bytes: &[u8]| load_proxy_config(&String::from_utf8_lossy(bytes)));
}

#[test]
fn mesh_config_from_bytes() {
    check!()
        .with_iterations(cases(3000))
        .with_max_len(2048)
        .for_each(|bytes: &[u8]| load_mesh_config(&String::from_utf8_lossy(bytes)));
}

#[test]
fn proxy_config_from_the_model() {
    check!()
        .with_iterations(cases(3000))
        .with_max_len(4096)
        .for_each(|bytes: &[u8]| load_proxy_config(&yaml::proxy_config(&mut Choices::new(bytes))));
}

#[test]
fn mesh_config_from_the_model() {
    check!()
        .with_iterations(cases(3000))
        .with_max_len(4096)
        .for_each(|bytes: &[u8]| load_mesh_config(&yaml::mesh_config(&mut Choices::new(bytes))));
}

/// The generator makes documents that load, not only ones that fail: else the
/// targets above would test little past the first error.
#[test]
fn the_model_makes_documents_that_load() {
    let mut loaded = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..500 {
        let bytes: Vec<u8> = (0..256)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let text = yaml::proxy_config(&mut Choices::new(&bytes));
        if Config::from_str(&text, FILE, None).is_ok_and(|c| !c.listeners.is_empty()) {
            loaded += 1;
        }
    }
    assert!(loaded >= 10, "only {loaded} of 500 documents loaded");
}
