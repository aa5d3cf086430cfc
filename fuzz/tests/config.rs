//! The proxy config loader and the mesh config loader (`weft_config`): arbitrary bytes,
//! and documents built from the real model's keys. Whatever they are given, they
//! return a config or an error; an error names the file and a line in it.
//!
//! Longer runs (`docs/fuzzing.md`):
//! `WEFT_FUZZ_CASES=1000000 cargo test -p weft-fuzz --test config`, or on nightly,
//! coverage-guided: `cargo bolero test -p weft-fuzz --test config proxy_config_from_the_model`.

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
            assert_identities(&mesh, text);
        }
        Err(e) => assert_located(&e, MESH_FILE, text),
    }
}

/// Every SPIFFE ID the mesh gives a proxy is one, whatever its service and labels.
fn assert_identities(mesh: &MeshConfig, text: &str) {
    for service in ["web", "", "a b", "x/y", "é", "..", "a%2F"] {
        for namespace in [None, Some(""), Some("prod"), Some("a/b"), Some("..")] {
            let labels: BTreeMap<String, String> = namespace
                .map(|n| ("namespace".to_owned(), n.to_owned()))
                .into_iter()
                .collect();
            let group = mesh.select(service, &labels);
            if let Ok(id) = mesh.identity(group, service, &labels) {
                assert!(
                    weft_config::spiffe::check_id(&id).is_ok(),
                    "{id:?} for {service:?} in {namespace:?}\n--- input:\n{text}"
                );
            }
        }
    }
}

#[test]
fn proxy_config_from_bytes() {
    check!()
        .with_iterations(cases(10_000))
        .with_max_len(2048)
        .for_each(|bytes: &[u8]| load_proxy_config(&String::from_utf8_lossy(bytes)));
}

#[test]
fn mesh_config_from_bytes() {
    check!()
        .with_iterations(cases(10_000))
        .with_max_len(2048)
        .for_each(|bytes: &[u8]| load_mesh_config(&String::from_utf8_lossy(bytes)));
}

#[test]
fn proxy_config_from_the_model() {
    check!()
        .with_iterations(cases(10_000))
        .with_max_len(4096)
        .for_each(|bytes: &[u8]| load_proxy_config(&yaml::proxy_config(&mut Choices::new(bytes))));
}

#[test]
fn mesh_config_from_the_model() {
    check!()
        .with_iterations(cases(10_000))
        .with_max_len(4096)
        .for_each(|bytes: &[u8]| load_mesh_config(&yaml::mesh_config(&mut Choices::new(bytes))));
}

/// The generator makes documents that load, not only ones that fail: else the
/// targets above would test little past the first error.
#[test]
fn the_model_makes_documents_that_load() {
    let (mut loaded, mut with_filters) = (0, 0);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let text = yaml::proxy_config(&mut Choices::new(&bytes));
        if let Ok(config) = Config::from_str(&text, FILE, None) {
            loaded += 1;
            if config.listeners.iter().any(|l| !l.filters.is_empty()) {
                with_filters += 1;
            }
        }
    }
    assert!(loaded >= 100, "only {loaded} of 2000 documents loaded");
    assert!(with_filters >= 1, "no document with a filter chain loaded");
}

/// Found by the targets above: the `dns` and `access_log` sections are checked with
/// no place in the file to point at, so their errors name line 0.
#[test]
fn errors_of_the_dns_and_access_log_sections_name_their_line() {
    for text in [
        "access_log:\n  sample: 2\n",
        "dns:\n  max_addresses: 0\n",
        "dns:\n  min_refresh: 10s\n  max_refresh: 1s\n",
    ] {
        let e = Config::from_str(text, FILE, None).expect_err(text);
        assert_located(&e, FILE, text);
        let e = MeshConfig::parse(&format!("proxies: [{{select: {{}}}}]\n{text}"), MESH_FILE)
            .and_then(|m| m.validate(&BTreeMap::new()).map(|_| ()))
            .expect_err(text);
        assert_located(&e, MESH_FILE, text);
    }
}
