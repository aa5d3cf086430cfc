//! Bad configuration is refused with the file, line, key and cause; a running proxy
//! keeps its last good configuration.

use weft_tests::*;

fn with_module(module: &str, extra: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: f
        module: "{module}"
{extra}"#
    )
}

#[test]
fn invalid_yaml_and_unknown_keys() {
    let e = config_error("listeners:\n  - name: main\n    address: [127.0.0.1:0\n");
    assert!(e.starts_with("test.yaml:"), "{e}");
    let e = config_error("listeners:\n  - name: main\n    address: 127.0.0.1:0\n    filterz: []\n");
    assert!(
        e.starts_with("test.yaml:4:") && e.contains("filterz"),
        "{e}"
    );
}

#[test]
fn missing_filter_file() {
    let e = config_error(&with_module("/nonexistent/f.wasm", ""));
    assert!(e.starts_with("test.yaml:6:"), "{e}");
    assert!(e.contains("listeners[0].filters[0].module"), "{e}");
    assert!(e.contains("cannot read /nonexistent/f.wasm"), "{e}");
}

#[test]
fn unknown_builtin() {
    let e = config_error(&with_module("builtin:nope", ""));
    assert!(
        e.contains("no built-in filter named \"nope\"") && e.contains("router"),
        "{e}"
    );
}

#[test]
fn not_wasm_and_core_modules() {
    let (_d, garbage) = temp_file("garbage.wasm", b"definitely not wasm");
    let e = config_error(&with_module(&garbage, ""));
    assert!(e.contains("not a WebAssembly file"), "{e}");
    let (_d, core) = temp_file("core.wasm", b"\0asm\x01\0\0\0");
    let e = config_error(&with_module(&core, ""));
    assert!(
        e.starts_with("test.yaml:6:") && e.contains("core WebAssembly module, not a component"),
        "{e}"
    );
    let (_d, broken) = temp_file("broken.wasm", b"\0asm\x0d\0\x01\0\xff\xff");
    let e = config_error(&with_module(&broken, ""));
    assert!(e.contains("invalid component"), "{e}");
}

#[test]
fn component_of_the_wrong_world() {
    let e = config_error(&with_module(guests::WRONG_WORLD, ""));
    assert!(e.starts_with("test.yaml:6:"), "{e}");
    assert!(e.contains("not a Weft filter"), "{e}");
}

#[test]
fn filter_rejecting_its_config() {
    let e = config_error(&with_module(
        guests::MISBEHAVE,
        "        config: { reject: true }\n",
    ));
    assert!(e.starts_with("test.yaml:7:"), "{e}");
    assert!(e.contains("listeners[0].filters[0].config"), "{e}");
    assert!(e.contains("rejected on purpose: reject is true"), "{e}");
    // An unknown key in the filter's own config is the filter's to refuse.
    let e = config_error(&with_module(
        guests::MISBEHAVE,
        "        config: { rejekt: true }\n",
    ));
    assert!(e.contains("rejekt"), "{e}");
}

#[test]
fn sha256_is_checked() {
    let e = config_error(&with_module(
        guests::HELLO,
        &format!("        sha256: {}\n", "0".repeat(64)),
    ));
    assert!(
        e.starts_with("test.yaml:7:") && e.contains("sha256 is"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_last_good_config() {
    let web = backend("web").start().await;
    let yaml = |name: &str, module: &str| {
        format!(
            r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
    filters:
      - name: stamp
        module: "{module}"
        config: {{ name: {name} }}
clusters:
  - name: web
    endpoints: ["{}"]
"#,
            web.addr
        )
    };
    let p = proxy(&yaml("v1", guests::STAMP)).start().await;
    let c = client();
    assert_eq!(c.get(p.addr, "/").await.header("x-stamp"), Some("v1"));

    let bad =
        weft_config::Config::from_str(&yaml("v2", "/missing.wasm"), "next.yaml", None).unwrap();
    let e = p.running().reload(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with("next.yaml:8:") && e.contains("/missing.wasm"),
        "{e}"
    );
    assert_eq!(
        c.get(p.addr, "/").await.header("x-stamp"),
        Some("v1"),
        "still the last good chain"
    );

    let good =
        weft_config::Config::from_str(&yaml("v2", guests::STAMP), "next.yaml", None).unwrap();
    p.running().reload(&good).unwrap();
    assert_eq!(c.get(p.addr, "/").await.header("x-stamp"), Some("v2"));
}

#[test]
fn observability_settings_are_checked() {
    let listener = "listeners:\n  - name: main\n    address: 127.0.0.1:0\n";
    let e = config_error(&format!(
        "access_log:\n  fields: [status, colour]\n{listener}"
    ));
    assert!(
        e.contains("access_log.fields[1]") && e.contains("no field \"colour\""),
        "{e}"
    );
    let e = config_error(&format!("access_log:\n  sample: 2\n{listener}"));
    assert!(
        e.contains("access_log.sample") && e.contains("not within 0 to 1"),
        "{e}"
    );
    let e = config_error(&format!("tracing:\n  collector: nowhere\n{listener}"));
    assert!(e.contains("tracing") && e.contains("not host:port"), "{e}");
    let e = config_error(&format!(
        "{listener}    filters:\n      - name: t\n        module: builtin:telemetry\n        metrics: {{ prefix: weft_mine_ }}\n"
    ));
    assert!(
        e.contains("filters[0].metrics") && e.contains("weft_"),
        "{e}"
    );
    let e = config_error(&format!(
        "{listener}    filters:\n      - name: t\n        module: builtin:telemetry\n        config: {{ reporter: source }}\n"
    ));
    assert!(e.contains("workload"), "{e}");
}
