//! Capture listeners reached without redirection (no `weft init`, no root): a
//! connection made straight to one is served as on any listener and counted
//! `direct`. The redirected paths (original destinations, passthrough, refusals) run
//! in network namespaces, in `cli/tests/netns.rs`.

use weft_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_listener_reached_directly_is_an_ordinary_listener() {
    let web = backend("web").start().await;
    let yaml = format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: outbound
    address: 127.0.0.1:0
    default_cluster: web
    capture: {{ direction: outbound, passthrough: refuse }}
  - name: inbound
    address: 127.0.0.1:0
    capture: {{ direction: inbound }}
clusters:
  - name: web
    endpoints: ["{}"]
"#,
        web.addr
    );
    let p = proxy(&yaml).start().await;
    let c = client();
    // Not redirected, so nothing outside the mesh to refuse: its default cluster.
    let r = c.get(p.addr, "/").await;
    assert_eq!(r.header("x-backend"), Some("web"), "{}", r.text());
    // Inbound, with no original port and no default cluster: no route (and not a
    // cluster made for the listener's own port).
    let inbound = p.running().listener_addr("inbound").expect("inbound");
    assert_eq!(c.get(inbound, "/").await.status, 404);

    let admin = p.running().admin_addr().expect("admin");
    let text = c.get(admin, "/metrics").await.text();
    promtool_check(&text).await;
    let all = samples(&text);
    let count = |listener, route| {
        let labels = [("listener", listener), ("route", route)];
        total(&all, "weft_capture_connections_total", &labels)
    };
    assert_eq!(count("outbound", "direct"), 1.0);
    assert_eq!(count("inbound", "direct"), 1.0);
    assert_eq!(count("outbound", "refused"), 0.0);
    // Each direction shows its own routes.
    assert!(
        text.contains(r#"listener="outbound",route="cluster""#),
        "{text}"
    );
    assert!(
        !text.contains(r#"listener="outbound",route="local""#),
        "{text}"
    );
    assert!(
        text.contains(r#"listener="inbound",route="local""#),
        "{text}"
    );
}
