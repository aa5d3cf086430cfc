//! The admin views: `/live`, `/config`, `/filters`, `/clusters` show what is in force,
//! and `/metrics` what each filter's hooks cost, until the filter is unloaded.

use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use weft_tests::*;

fn yaml(web: &Backend, with_misbehave: bool) -> String {
    let misbehave = if with_misbehave {
        format!(
            "      - name: misbehave\n        module: \"{}\"\n        failure: fail-open\n",
            guests::MISBEHAVE
        )
    } else {
        String::new()
    };
    format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
    filters:
      - name: fault
        module: builtin:fault
        config: {{ abort: {{ status: 503, header: {{ name: x-weft-fault, value: abort }} }} }}
{misbehave}clusters:
  - name: web
    endpoints: ["{}"]
"#,
        web.addr
    )
}

async fn view(c: &Client, admin: std::net::SocketAddr, path: &str) -> Value {
    let r = c.get(admin, path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_str(&r.text()).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.text()))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The value of the one sample line that starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_views_show_what_is_in_force_and_what_hooks_cost() {
    let web = backend("web").start().await;
    let p = proxy(&yaml(&web, true)).start().await;
    let admin = p.running().admin_addr().unwrap();
    let c = client();
    for _ in 0..5 {
        assert_eq!(c.get(p.addr, "/fine").await.status, 200);
    }
    // Trapping is a failure of the hook; fail-open lets the request through.
    assert_eq!(c.get(p.addr, "/trap").await.status, 200);

    let live = c.get(admin, "/live").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.text(), "live\n");

    let fault_sha = sha256(weft_builtin::get("fault").unwrap());
    let misbehave_sha = sha256(&std::fs::read(guests::MISBEHAVE).unwrap());
    let config = view(&c, admin, "/config").await;
    assert_eq!(config["version"], Value::Null, "from a file, not a server");
    let main = &config["listeners"][0];
    assert_eq!(main["name"], "main");
    assert_eq!(main["address"], p.addr.to_string());
    assert_eq!(main["default_cluster"], "web");
    assert_eq!(main["filters"][0]["name"], "fault");
    assert_eq!(main["filters"][0]["source"], "builtin:fault");
    assert_eq!(main["filters"][0]["sha256"], fault_sha.as_str());
    assert_eq!(main["filters"][0]["policy"], "fail-closed");
    assert_eq!(main["filters"][1]["sha256"], misbehave_sha.as_str());
    assert_eq!(main["filters"][1]["policy"], "fail-open");
    assert_eq!(config["clusters"], serde_json::json!(["web"]));

    let filters = view(&c, admin, "/filters").await;
    let filters = filters["filters"].as_array().unwrap();
    assert_eq!(filters.len(), 2, "{filters:?}");
    let fault = &filters[0];
    assert_eq!(
        (&fault["listener"], &fault["name"]),
        (&"main".into(), &"fault".into())
    );
    let hooks = fault["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "only on-request ran: {hooks:?}");
    assert_eq!(hooks[0]["hook"], "on-request");
    assert_eq!(hooks[0]["calls"], 6);
    assert_eq!(hooks[0]["failures"], 0);
    let (p50, p99) = (
        hooks[0]["p50_us"].as_f64().unwrap(),
        hooks[0]["p99_us"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{p50} {p99}");
    assert!(fault["instances"].as_i64().unwrap() >= 1);
    let misbehave = &filters[1]["hooks"][0];
    assert_eq!(
        (&misbehave["calls"], &misbehave["failures"]),
        (&6.into(), &1.into())
    );

    let clusters = view(&c, admin, "/clusters").await;
    let web_view = &clusters["clusters"][0];
    assert_eq!(web_view["name"], "web");
    assert_eq!(web_view["balancer"], "peak-ewma");
    let endpoint = &web_view["endpoints"][0];
    assert_eq!(endpoint["address"], web.addr.to_string());
    assert_eq!(endpoint["healthy"], true);
    assert_eq!(endpoint["ejected_for_ms"], Value::Null);
    assert_eq!(endpoint["in_flight"], 0);
    assert!(endpoint["ewma_ms"].as_f64().unwrap() > 0.0);

    let metrics = c.get(admin, "/metrics").await.text();
    let fault_series = format!(
        "weft_engine_filter_hook_duration_seconds_count{{filter=\"fault\",sha256=\"{fault_sha}\",hook=\"on-request\"}}"
    );
    assert_eq!(sample(&metrics, &fault_series), Some(6.0), "{metrics}");
    let inf = format!(
        "weft_engine_filter_hook_duration_seconds_bucket{{le=\"+Inf\",filter=\"fault\",sha256=\"{fault_sha}\",hook=\"on-request\"}}"
    );
    assert_eq!(
        sample(&metrics, &inf),
        Some(6.0),
        "the buckets add up: {metrics}"
    );
    let failures = format!(
        "weft_engine_filter_hook_failures_total{{filter=\"misbehave\",sha256=\"{misbehave_sha}\",hook=\"on-request\"}}"
    );
    assert_eq!(sample(&metrics, &failures), Some(1.0), "{metrics}");
    // The proxy's own, read from what it keeps anyway.
    let endpoint = format!("{{cluster=\"web\",endpoint=\"{}\"}}", web.addr);
    for (series, value) in [
        ("weft_config_version".to_owned(), 0.0),
        (
            "weft_listener_connections_refused_total{listener=\"main\"}".to_owned(),
            0.0,
        ),
        (
            "weft_cluster_requests_in_flight{cluster=\"web\"}".to_owned(),
            0.0,
        ),
        (
            "weft_cluster_retries_total{cluster=\"web\"}".to_owned(),
            0.0,
        ),
        (format!("weft_endpoint_healthy{endpoint}"), 1.0),
        (format!("weft_endpoint_ejected{endpoint}"), 0.0),
        (format!("weft_endpoint_ejections_total{endpoint}"), 0.0),
        (format!("weft_endpoint_requests_in_flight{endpoint}"), 0.0),
    ] {
        assert_eq!(
            sample(&metrics, &series),
            Some(value),
            "{series}: {metrics}"
        );
    }
    // The client keeps its connection, and the proxy its upstream one.
    for series in [
        "weft_listener_connections_total{listener=\"main\"}".to_owned(),
        "weft_listener_connections_open{listener=\"main\"}".to_owned(),
        format!("weft_endpoint_idle_connections{endpoint}"),
    ] {
        assert!(
            sample(&metrics, &series).unwrap_or(0.0) >= 1.0,
            "{series}: {metrics}"
        );
    }
    let ewma = sample(
        &metrics,
        &format!("weft_endpoint_latency_ewma_seconds{endpoint}"),
    );
    assert!(ewma.unwrap() > 0.0, "{metrics}");

    // Without the filter, its series leave once its last request is done.
    p.running()
        .reload(&weft_config::Config::from_str(&yaml(&web, false), "test.yaml", None).unwrap())
        .unwrap();
    assert_eq!(c.get(p.addr, "/fine").await.status, 200);
    let deadline = Instant::now() + LIMIT;
    loop {
        let metrics = c.get(admin, "/metrics").await.text();
        if !metrics.contains("filter=\"misbehave\"") {
            assert!(metrics.contains("filter=\"fault\""), "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "misbehave's series stayed: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filters = view(&c, admin, "/filters").await;
    assert_eq!(filters["filters"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_count_every_byte_each_way() {
    let web = backend("web").start().await;
    let p = proxy(&format!(
        "admin:\n  address: 127.0.0.1:0\n{}",
        chain(&web, "      []\n")
    ))
    .start()
    .await;
    let body = "b".repeat(3000);
    let requests = [
        "GET /one HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n".to_owned(),
        format!(
            "POST /two HTTP/1.1\r\nhost: b\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
        // Refused by the proxy itself: its own answer counts too.
        "GET /three HTTP/1.1\r\nhost: c\r\nhost: d\r\nconnection: close\r\n\r\n".to_owned(),
    ];
    let (mut sent, mut received) = (0, 0);
    for request in &requests {
        // Read until the proxy closes: every byte it wrote is here.
        let answer = raw_exchange(p.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
        sent += request.len();
        received += answer.len();
    }
    let admin = p.running().admin_addr().expect("admin");
    let metrics = client().get(admin, "/metrics").await.text();
    let samples = samples(&metrics);
    let main = [("listener", "main")];
    assert_eq!(
        total(&samples, "weft_listener_received_bytes_total", &main),
        sent as f64,
        "{metrics}"
    );
    assert_eq!(
        total(&samples, "weft_listener_sent_bytes_total", &main),
        received as f64,
        "{metrics}"
    );
    assert_eq!(
        total(&samples, "weft_listener_connections_total", &main),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_openmetrics_goes_to_who_asks() {
    // One 503, which a budget that allows no retry refuses: an error to count, and a
    // refusal.
    let web = backend("web").fail_first(1, 503).start().await;
    let yaml = format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
    filters:
      - name: telemetry
        module: builtin:telemetry
        config: {{}}
      - name: stamp
        module: "{}"
        config: {{ name: one }}
      - name: retry
        module: builtin:retry
        config: {{ budget: {{ ratio: 0, min_per_second: 0 }} }}
clusters:
  - name: web
    endpoints: ["{}"]
"#,
        guests::STAMP,
        web.addr
    );
    let p = proxy(&yaml).start().await;
    let admin = p.running().admin_addr().unwrap();
    let c = client();
    assert_eq!(c.get(p.addr, "/").await.status, 503);
    for path in ["/a", "/b"] {
        assert_eq!(c.get(p.addr, path).await.status, 200);
    }

    // What curl and promtool get: the Prometheus text format.
    let plain = c.get(admin, "/metrics").await;
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = plain.text();
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE weft_filter_stamp_requests_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE weft_engine_filter_hook_duration_seconds histogram"));
    promtool_check(&text).await;

    // Every series the Grafana dashboard queries is there.
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../examples/grafana/weft-proxies.json"))
            .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let exprs: Vec<&str> = (panels.iter())
        .flat_map(|p| p["targets"].as_array().expect("targets"))
        .map(|t| t["expr"].as_str().expect("expr"))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in exprs {
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("weft_"));
        for name in names {
            assert!(
                text.lines().any(|l| l
                    .strip_prefix(name)
                    .is_some_and(|r| r.starts_with(['{', ' ']))),
                "the dashboard queries {name}, which /metrics lacks"
            );
        }
    }

    // What Prometheus asks for first: OpenMetrics.
    let open = c
        .get_with(
            admin,
            "/metrics",
            &[(
                "accept",
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
            )],
        )
        .await;
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let open = open.text();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE weft_filter_stamp_requests counter"),
        "{open}"
    );
}
