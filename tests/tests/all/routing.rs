//! The built-in router: by path, method, header and query; weighted splits; rewrites.

use weft_tests::*;

/// One listener with the router in front of two clusters, `a` and `b`.
pub(crate) fn routed(a: &Backend, b: &Backend, routes: &str, listener_extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
{listener_extra}
    filters:
      - name: router
        module: builtin:router
        config:
          routes:
{routes}
clusters:
  - name: a
    endpoints: ["{}"]
  - name: b
    endpoints: ["{}"]
"#,
        a.addr, b.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_path_method_header_and_query() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let routes = r#"
            - match: { path: { exact: /exact } }
              cluster: b
            - match: { path: { regex: "^/users/[0-9]+$" } }
              cluster: b
            - match: { path: { prefix: /write }, method: [POST, PUT] }
              cluster: b
            - match: { path: { prefix: /write } }
              cluster: a
            - match:
                headers: [{ name: x-user, exact: alice }]
              cluster: b
            - match:
                query: [{ name: debug, exact: "1" }]
              cluster: b
            - match: { path: { prefix: / } }
              cluster: a
"#;
    let p = proxy(&routed(&a, &b, routes, "")).start().await;
    let c = client();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("GET", "/exact", &[], "b"),
        ("GET", "/exact/not", &[], "a"),
        ("GET", "/users/42", &[], "b"),
        ("GET", "/users/bob", &[], "a"),
        ("POST", "/write/x", &[], "b"),
        ("GET", "/write/x", &[], "a"),
        ("GET", "/any", &[("x-user", "alice")], "b"),
        ("GET", "/any", &[("x-user", "bob")], "a"),
        ("GET", "/any?debug=1", &[], "b"),
        ("GET", "/any?debug=0", &[], "a"),
    ];
    for (method, path, headers, want) in cases {
        let r = c
            .send(p.addr, method, path, headers, Default::default())
            .await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        assert_eq!(
            r.header("x-backend"),
            Some(*want),
            "{method} {path} {headers:?}"
        );
        assert_eq!(
            r.header("x-path"),
            Some(*path),
            "the path reaches the backend as sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_is_a_clear_404() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let routes = "            - match: { path: { prefix: /api } }\n              cluster: a\n";
    let p = proxy(&routed(&a, &b, routes, "")).start().await;
    let r = client().get(p.addr, "/elsewhere").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("/elsewhere"), "{}", r.text());
    assert_eq!(a.requests() + b.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_lands_within_five_percent() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let routes = r#"
            - match: { path: { prefix: / } }
              split:
                - { cluster: a, weight: 80 }
                - { cluster: b, weight: 20 }
"#;
    let p = proxy(&routed(&a, &b, routes, "")).start().await;
    let c = client();
    let total = 2000;
    let mut to_a = 0;
    for _ in 0..total {
        let r = c.get(p.addr, "/split").await;
        assert_eq!(r.status, 200);
        if r.header("x-backend") == Some("a") {
            to_a += 1;
        }
    }
    let share = to_a as f64 / total as f64;
    assert!((0.75..=0.85).contains(&share), "share to a: {share}");
    assert_eq!(a.requests() + b.requests(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_and_host_rewrites_reach_the_backend() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let routes = r#"
            - match: { path: { prefix: /old/ } }
              cluster: a
              rewrite: { prefix: /new/, host: internal.example }
            - match: { path: { prefix: /strip } }
              cluster: b
              rewrite: { prefix: / }
"#;
    let p = proxy(&routed(&a, &b, routes, "")).start().await;
    let c = client();
    let r = c.get(p.addr, "/old/page?x=1").await;
    assert_eq!(r.header("x-backend"), Some("a"));
    assert_eq!(r.header("x-path"), Some("/new/page?x=1"));
    assert_eq!(r.header("x-host"), Some("internal.example"));
    let r = c.get(p.addr, "/strip/inner").await;
    assert_eq!(r.header("x-backend"), Some("b"));
    assert_eq!(r.header("x-path"), Some("/inner"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_rejects_a_bad_config_at_load() {
    let e = config_error(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: router
        module: builtin:router
        config:
          routes:
            - match: { path: { regex: "([" } }
              cluster: a
clusters:
  - name: a
    endpoints: ["127.0.0.1:1"]
"#,
    );
    // At the regex itself, not at `config:`.
    assert!(
        e.starts_with(
            "test.yaml:10:39: listeners[0].filters[0].config.routes[0].match.path.regex: \
             filter \"router\" rejected its config: invalid regex"
        ),
        "{e}"
    );
}

#[test]
fn a_route_to_a_cluster_that_does_not_exist_is_refused_at_load_where_it_is_written() {
    // `carts` for `cart`, and a split entry at weight 0: both would answer 502 at
    // request time; both are refused when the configuration loads.
    for (route, line_col, key) in [
        (
            "cluster: carts",
            "test.yaml:13:",
            "listeners[0].filters[0].config.routes[1].cluster",
        ),
        (
            "split: [{ cluster: cart, weight: 100 }, { cluster: shopv2, weight: 0 }]",
            "test.yaml:13:",
            "listeners[0].filters[0].config.routes[1].split[1].cluster",
        ),
    ] {
        let yaml = format!(
            r#"listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: router
        module: builtin:router
        config:
          routes:
            - match: {{ path: {{ prefix: /a }} }}
              cluster: cart
            - match: {{ path: {{ prefix: / }} }}
              timeout: 2s
              {route}
clusters:
  - name: cart
    endpoints: ["127.0.0.1:1"]
  - name: shop
    endpoints: ["127.0.0.1:1"]
"#
        );
        let e = config_error(&yaml);
        assert!(e.starts_with(line_col) && e.contains(key), "{e}");
        assert!(e.contains("clusters: cart, shop"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_routes_only_to_the_clusters_it_declared() {
    let logs = logs();
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let yaml = |declare: &str| {
        format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    filters:\n\
             \x20     - name: stamp\n        module: {}\n        \
             config: {{ name: s, route: b, declare: {declare} }}\n\
             clusters:\n  - name: a\n    endpoints: [\"{}\"]\n  - name: b\n    endpoints: [\"{}\"]\n",
            guests::STAMP,
            a.addr,
            b.addr
        )
    };
    // Declared a, routed to b: refused, and the log says why.
    let p = proxy(&yaml("[a]")).start().await;
    let r = client().get(p.addr, "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(logs.of_error(&r).contains("which it did not declare"));
    assert_eq!(b.requests(), 0);
    // A filter that declares nothing (one written before declarations) routes anywhere.
    let p = proxy(&yaml("[]")).start().await;
    let r = client().get(p.addr, "/").await;
    assert_eq!(r.header("x-backend"), Some("b"), "{}", r.text());
    // A declared cluster that does not exist is refused at its key.
    let e = config_error(&yaml("[a, nope]"));
    assert!(
        e.contains("listeners[0].filters[0].config.declare[1]") && e.contains("\"nope\""),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_passes_unmatched_requests_on_when_told_to() {
    let a = backend("a").start().await;
    let b = backend("b").start().await;
    let routes = "            - match: { path: { prefix: /a } }\n              cluster: a\n";
    let listener = "    default_cluster: b";
    let p = proxy(&routed(&a, &b, routes, listener)).start().await;
    let r = client().get(p.addr, "/elsewhere").await;
    assert_eq!(r.status, 404, "the default: the router's own 404");
    assert!(r.text().contains("no route for GET /elsewhere"));
    let yaml = routed(&a, &b, routes, listener).replace(
        "        config:\n          routes:",
        "        config:\n          no_match: continue\n          routes:",
    );
    let p = proxy(&yaml).start().await;
    let r = client().get(p.addr, "/elsewhere").await;
    assert_eq!(r.header("x-backend"), Some("b"), "{}", r.text());
    assert_eq!(
        client().get(p.addr, "/a").await.header("x-backend"),
        Some("a")
    );
}
