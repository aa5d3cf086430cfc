//! Filters written against weft-sdk: the hello example from a file path, and the
//! stamp test filter for response hooks, bodies, shared state and metrics.

use weft_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_example_loads_from_a_path() {
    let web = backend("web").start().await;
    let yaml = chain(
        &web,
        &format!(
            "      - name: hello\n        module: \"{}\"\n        config: {{ greeting: \"hi from wasm\" }}",
            guests::HELLO
        ),
    );
    let p = proxy(&yaml).start().await;
    let c = client();
    let r = c.get(p.addr, "/hello").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hi from wasm");
    assert_eq!(web.requests(), 0, "answered by the filter");
    let r = c.get(p.addr, "/other").await;
    assert_eq!(r.header("x-backend"), Some("web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_order_bodies_state_and_metrics() {
    let web = backend("web").start().await;
    let yaml = format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
    filters:
      - name: first
        module: "{stamp}"
        config: {{ name: first, count: true }}
      - name: second
        module: "{stamp}"
        config: {{ name: second, upper: true }}
clusters:
  - name: web
    endpoints: ["{}"]
"#,
        web.addr,
        stamp = guests::STAMP,
    );
    let p = proxy(&yaml).start().await;
    let c = client();
    for n in 1..=3 {
        let r = c.get(p.addr, "/s").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-echo-stamp-req"),
            Some("first,second"),
            "request order"
        );
        let stamps: Vec<_> = r
            .headers
            .get_all("x-stamp")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(stamps, ["second", "first"], "responses run in reverse");
        assert_eq!(
            r.header("x-echo-count"),
            Some(n.to_string().as_str()),
            "shared state counts"
        );
        assert_eq!(r.text(), "WEB\n", "the buffered body was rewritten");
    }
    let admin = p.running().admin_addr().unwrap();
    let ready = c.get(admin, "/ready").await;
    assert_eq!(ready.status, 200);
    let metrics = c.get(admin, "/metrics").await.text();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("weft_filter_stamp_requests_total{filter=\"first\"")
                && l.ends_with(" 3")
        ),
        "{metrics}"
    );
}

/// `cargo component build` makes a wasip1 module plus an adapter; such a filter
/// imports WASI preview 2 interfaces the proxy grants nothing through, and loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_component_style_build_loads() {
    let web = backend("web").start().await;
    let yaml = chain(
        &web,
        &format!(
            "      - name: hello\n        module: \"{}\"\n        config: {{ greeting: \"hi from wasip1\" }}",
            guests::HELLO_P1
        ),
    );
    let p = proxy(&yaml).start().await;
    let r = client().get(p.addr, "/hello").await;
    assert_eq!(r.text(), "hi from wasip1");
}

/// Compiled components are cached on disk by sha256; a damaged cache file is
/// ignored and replaced, never trusted.
#[test]
fn compiled_components_are_cached_on_disk() {
    use weft_engine::{Engine, FilterSpec};
    let dir = TempDir::new();
    let bytes = std::fs::read(guests::HELLO).unwrap();
    let spec = || {
        let mut s = FilterSpec::new("hello", "hello.wasm", &bytes);
        s.config_json = r#"{"greeting":"hi"}"#.into();
        s
    };
    let engine = Engine::with_cache_dir(Some(dir.0.clone())).unwrap();
    let file = engine.cache_file(&bytes).unwrap();
    engine.load(spec()).unwrap();
    let written = std::fs::read(&file).expect("cached after the first compile");
    assert!(written.len() > 1000);

    // A fresh engine loads from the file.
    Engine::with_cache_dir(Some(dir.0.clone()))
        .unwrap()
        .load(spec())
        .unwrap();

    // A damaged file is refused by wasmtime's checks, recompiled and rewritten.
    std::fs::write(&file, b"garbage").unwrap();
    Engine::with_cache_dir(Some(dir.0.clone()))
        .unwrap()
        .load(spec())
        .unwrap();
    assert_eq!(std::fs::read(&file).unwrap().len(), written.len());
}

/// A filter that asks for the request body gets it whole and may replace it; a body
/// over the listener's `max_body_size` is refused with 413 before any filter runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_request_bodies_and_their_limit() {
    let web = backend("web").start().await;
    let yaml = chain(
        &web,
        &format!(
            "      - name: rev\n        module: \"{}\"\n        config: {{ name: rev, reverse: true }}",
            guests::STAMP
        ),
    )
    .replace(
        "    default_cluster: web\n",
        "    default_cluster: web\n    limits: { max_body_size: 1KiB }\n",
    );
    let p = proxy(&yaml).start().await;
    let c = client();
    let r = c
        .send(p.addr, "POST", "/", &[], bytes::Bytes::from_static(b"abc"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "cba", "the backend got the filter's body");
    let r = c
        .send(
            p.addr,
            "POST",
            "/",
            &[],
            bytes::Bytes::from(vec![b'x'; 4096]),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(web.requests(), 1);
}
