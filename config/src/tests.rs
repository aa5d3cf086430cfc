use super::*;

fn err(yaml: &str) -> String {
    match Config::from_str(yaml, "weft.yaml", None) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

const GOOD: &str = r#"
admin:
  address: 127.0.0.1:9901
listeners:
  - name: ingress
    address: 127.0.0.1:8080
    default_cluster: web
    limits:
      header_read_timeout: 5s
      max_header_size: 8KiB
    filters:
      - name: router
        module: builtin:router
        failure: fail-open
        timeout: 5ms
        config:
          routes:
            - match: { path: { prefix: /api } }
              cluster: web
clusters:
  - name: web
    endpoints: [127.0.0.1:9001, "localhost:9002"]
    protocol: http2
"#;

#[test]
fn parses_a_full_config() {
    let c = Config::from_str(GOOD, "weft.yaml", None).unwrap();
    let l = &c.listeners[0];
    assert_eq!(
        l.limits.header_read_timeout.0,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(l.limits.max_header_size.0, 8 * 1024);
    assert_eq!(l.filters[0].failure, FailurePolicy::FailOpen);
    assert_eq!(l.filters[0].timeout.0, std::time::Duration::from_millis(5));
    assert_eq!(c.clusters[0].protocol, UpstreamProtocol::Http2);
    assert!(l.filters[0].config.as_ref().unwrap().value.json()["routes"].is_array());
    assert_eq!(
        c.module_source(&l.filters[0]),
        ModuleRef::Builtin("router".into())
    );
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = err("listeners:\n  - name: a\n    adress: 127.0.0.1:1\n");
    assert!(e.starts_with("weft.yaml:3:"), "{e}");
    assert!(e.contains("adress"), "{e}");
}

#[test]
fn invalid_yaml_names_line() {
    let e = err("listeners:\n  - name: a\n   address: [\n");
    assert!(e.starts_with("weft.yaml:"), "{e}");
    assert!(!e.starts_with("weft.yaml:0:"), "{e}");
}

#[test]
fn bad_duration_and_policy() {
    let e = err(
        "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    limits:\n      request_timeout: soon\n",
    );
    assert!(
        e.contains("weft.yaml:5:") && e.contains("invalid duration"),
        "{e}"
    );
    let e = err(
        "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    filters:\n      - name: f\n        module: builtin:router\n        failure: explode\n",
    );
    assert!(e.contains("weft.yaml:7:") && e.contains("explode"), "{e}");
}

#[test]
fn missing_cluster_is_named() {
    let e =
        err("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    default_cluster: nowhere\n");
    assert_eq!(
        e,
        "weft.yaml:4:22: listeners[0].default_cluster: no cluster named \"nowhere\""
    );
}

#[test]
fn duplicate_names_and_bad_endpoints() {
    let e =
        err("clusters:\n  - name: a\n    endpoints: [x:1]\n  - name: a\n    endpoints: [x:1]\n");
    assert!(
        e.contains("weft.yaml:4:") && e.contains("duplicate cluster"),
        "{e}"
    );
    let e = err("clusters:\n  - name: a\n    endpoints: [nope]\n");
    assert!(
        e.contains("weft.yaml:3:") && e.contains("clusters[0].endpoints[0]"),
        "{e}"
    );
}

#[test]
fn endpoints_are_parsed_strictly() {
    for bad in [
        "\"exa mple:80\"",
        "\"a\\r\\nb:80\"",
        "\":80\"",
        "\"x:0\"",
        "\"x:65536\"",
        "\"[::1:80\"",
        "\"[nope]:80\"",
        "\"a/b:80\"",
        "\"user@host:80\"",
        "\".bad:80\"",
    ] {
        let e = err(&format!("clusters:\n  - name: a\n    endpoints: [{bad}]\n"));
        assert!(
            e.starts_with("weft.yaml:3:") && e.contains("clusters[0].endpoints[0]: "),
            "{bad}: {e}"
        );
    }
    for good in [
        "web:80",
        "10.0.0.1:8080",
        "[::1]:9000",
        "a-b.c_d.internal:1",
    ] {
        let a = parse_endpoint(good).unwrap();
        assert_eq!(a.as_str(), good);
    }
}

#[test]
fn relative_modules_resolve_against_the_file() {
    let c = Config::from_str(
        "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    filters:\n      - name: f\n        module: filters/f.wasm\n",
        "conf/weft.yaml",
        Some(Path::new("conf")),
    )
    .unwrap();
    assert_eq!(
        c.module_source(&c.listeners[0].filters[0]),
        ModuleRef::File(PathBuf::from("conf/filters/f.wasm"))
    );
}

#[test]
fn a_clusters_ca_is_relative_to_the_file_too() {
    let yaml = "clusters:\n  - name: up\n    endpoints: [\"127.0.0.1:1\"]\n    tls: { mode: terminate, ca: certs/ca.pem }\n  - name: abs\n    endpoints: [\"127.0.0.1:2\"]\n    tls: { mode: terminate, ca: /etc/ca.pem }\n";
    let ca = |c: &Config, i: usize| -> PathBuf {
        let tls = c.clusters[i].tls.as_ref().unwrap();
        tls.ca.as_ref().unwrap().value.clone()
    };
    let c = Config::from_str(yaml, "conf/weft.yaml", Some(Path::new("conf"))).unwrap();
    assert_eq!(ca(&c, 0), PathBuf::from("conf/certs/ca.pem"));
    assert_eq!(ca(&c, 1), PathBuf::from("/etc/ca.pem"));
    // Without a folder (a pushed configuration) the path stays as written.
    let c = Config::from_str(yaml, "pushed", None).unwrap();
    assert_eq!(ca(&c, 0), PathBuf::from("certs/ca.pem"));
}

const MESH: &str = r#"
clusters:
  - name: web
    endpoints: ["127.0.0.1:9001"]
proxies:
  - select: { service: web, labels: { zone: a } }
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: web
        filters:
          - name: hello
            module: filter:hello
  - select: {}
    listeners:
      - name: other
        address: 127.0.0.1:0
        default_cluster: web
        filters:
          - name: hello
            module: filter:hello
            sha256: "1111111111111111111111111111111111111111111111111111111111111111"
"#;

#[test]
fn mesh_groups_select_by_service_and_labels_in_order() {
    let mesh = MeshConfig::parse(MESH, "mesh.yaml").unwrap();
    let zone_a = std::collections::BTreeMap::from([("zone".to_owned(), "a".to_owned())]);
    assert_eq!(mesh.select("web", &zone_a), Some(0));
    assert_eq!(mesh.select("web", &Default::default()), Some(1));
    assert_eq!(mesh.select("db", &zone_a), Some(1));
}

#[test]
fn mesh_resolves_pushed_filters_unless_pinned() {
    let mesh = MeshConfig::parse(MESH, "mesh.yaml").unwrap();
    let sha = "2".repeat(64);
    let filters = std::collections::BTreeMap::from([("hello".to_owned(), sha.clone())]);
    let c = mesh.proxy_config(0, &filters).unwrap();
    assert_eq!(
        c.listeners[0].filters[0].sha256.as_ref().unwrap().value,
        sha
    );
    let c = mesh.proxy_config(1, &filters).unwrap();
    assert_eq!(
        c.listeners[0].filters[0].sha256.as_ref().unwrap().value,
        "1".repeat(64)
    );
    // Not pushed yet: the error names the mesh file, line and key.
    let e = mesh
        .proxy_config(0, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("mesh.yaml:13:21: proxies[0].listeners[0].filters[0].module:")
            && e.contains("no filter was pushed under the name \"hello\""),
        "{e}"
    );
}

#[test]
fn files_belong_to_proxy_files_and_pushed_filters_to_meshes() {
    let mesh = MeshConfig::parse(
        &MESH.replacen("filter:hello", "./hello.wasm", 1),
        "mesh.yaml",
    )
    .unwrap();
    let e = mesh.validate(&Default::default()).unwrap_err().to_string();
    assert!(e.contains("a mesh config cannot name files"), "{e}");
    let e = err(&GOOD.replace("builtin:router", "filter:router"));
    assert!(
        e.contains("filter:NAME names a filter pushed to a config server"),
        "{e}"
    );
}

#[test]
fn dns_endpoints_and_resolvers_are_checked() {
    let e = err("clusters:\n  - name: a\n    endpoints: [{ dns: \"10.0.0.1:80\" }]\n");
    assert!(
        e.starts_with("weft.yaml:3:")
            && e.contains("clusters[0].endpoints[0]: ")
            && e.contains("DNS name"),
        "{e}"
    );
    let e = err("clusters:\n  - name: a\n    endpoints: [{ dns: \"api.internal\" }]\n");
    assert!(e.contains("is not host:port"), "{e}");
    let e = err("dns:\n  servers: [\"resolver.local\"]\n");
    assert!(
        e.starts_with("weft.yaml:2:") && e.contains("dns.servers[0]"),
        "{e}"
    );
    let e = err("dns:\n  min_refresh: 10s\n  max_refresh: 1s\n");
    assert!(
        e.starts_with("weft.yaml:2:") && e.contains("dns: min_refresh"),
        "{e}"
    );
    // With `min_refresh` left at its default, the written `max_refresh` is at fault.
    let e = err("dns:\n  servers: []\n  max_refresh: 500ms\n");
    assert!(e.starts_with("weft.yaml:3:"), "{e}");
    let e = err("dns:\n  max_addresses: 0\n");
    assert!(
        e.starts_with("weft.yaml:2:") && e.contains("dns.max_addresses"),
        "{e}"
    );
}

#[test]
fn dns_endpoints_keep_their_weight_beside_addresses() {
    let c = Config::from_str(
        "dns:\n  servers: [\"127.0.0.1:53\"]\nclusters:\n  - name: a\n    \
         endpoints: [{ dns: \"api.internal:80\", weight: 3 }, \"10.0.0.1:80\"]\n",
        "weft.yaml",
        None,
    )
    .unwrap();
    let e = &c.clusters[0].endpoints[0].value;
    assert!(e.is_dns() && e.weight() == 3 && e.address() == "api.internal:80");
    assert!(!c.clusters[0].endpoints[1].value.is_dns());
}

#[test]
fn a_yaml_error_says_its_place_once_and_names_the_file() {
    let e = err("listeners:\n  - name: main\n    address: [1, 2\n");
    assert!(e.starts_with("weft.yaml:3:14: "), "{e}");
    assert!(
        !e.contains("line 3 column 14"),
        "the place is said once: {e}"
    );
    assert!(!e.contains("<input>"), "{e}");
    assert!(e.contains("--> weft.yaml:3:14"), "{e}");
}

#[test]
fn a_mesh_group_may_set_its_own_access_log_and_shutdown() {
    let mesh = MeshConfig::parse(
        "access_log: { sample: 0.5 }\nshutdown: { drain_delay: 1s }\nproxies:\n\
         \x20 - select: { service: web }\n    access_log: { sample: 1.0 }\n    \
         shutdown: { drain_delay: 5s }\n\
         \x20 - select: {}\n",
        "mesh.yaml",
    )
    .unwrap();
    let none = std::collections::BTreeMap::new();
    let web = mesh.proxy_config(0, &none).unwrap();
    assert_eq!(web.access_log.as_ref().unwrap().sample.value, 1.0);
    assert_eq!(
        web.shutdown.drain_delay.0,
        std::time::Duration::from_secs(5)
    );
    let other = mesh.proxy_config(1, &none).unwrap();
    assert_eq!(other.access_log.as_ref().unwrap().sample.value, 0.5);
    assert_eq!(
        other.shutdown.drain_delay.0,
        std::time::Duration::from_secs(1)
    );
}

#[test]
fn a_filter_keeps_its_state_unless_told_to_reset() {
    let c = Config::from_str(GOOD, "weft.yaml", None).unwrap();
    assert_eq!(c.listeners[0].filters[0].state, StatePolicy::Keep);
    let reset = GOOD.replace("failure: fail-open", "state: reset");
    let c = Config::from_str(&reset, "weft.yaml", None).unwrap();
    assert_eq!(c.listeners[0].filters[0].state, StatePolicy::Reset);
    let e = err(
        "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    filters:\n      - name: f\n        module: builtin:router\n        state: forget\n",
    );
    assert!(
        e.contains("weft.yaml:7:") && e.contains("forget") && e.contains("reset"),
        "{e}"
    );
}
