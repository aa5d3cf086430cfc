//! `builtin:telemetry` across two chained proxies, a caller's sidecar and a callee's:
//! exact RED counts under Istio's names on both, one trace across both hops (at the
//! backend and at an OTLP receiver), bounded label sets, and a collector that is down;
//! trace headers a client sets, and floods of the labels a client names.

use std::net::SocketAddr;
use std::time::Duration;

use weft_tests::*;

/// A proxy with an admin listener, the telemetry filter first, and spans going to
/// `collector`. Its listener takes mesh traffic: a caller's sidecar names its workload
/// in `x-weft-source-workload`.
fn sidecar(upstream: SocketAddr, telemetry: &str, collector: SocketAddr, metrics: &str) -> String {
    format!(
        r#"
admin:
  address: 127.0.0.1:0
tracing:
  collector: "{collector}"
  flush_interval: 100ms
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: next
    mesh_internal: true
    filters:
      - name: telemetry
        module: builtin:telemetry
        metrics: {metrics}
        config: {telemetry}
clusters:
  - name: next
    endpoints: ["{upstream}"]
"#
    )
}

async fn scrape(c: &Client, p: &Proxy) -> String {
    let admin = p.running().admin_addr().expect("admin");
    let r = c.get(admin, "/metrics").await;
    assert_eq!(r.status, 200);
    r.text()
}

fn hex_id(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Check one histogram's buckets: cumulative, `+Inf` equal to the count.
fn buckets_add_up(all: &[Sample], name: &str, labels: &[(&str, &str)], count: f64) {
    let mut buckets: Vec<(f64, f64)> = select(all, &format!("{name}_bucket"), labels)
        .iter()
        .map(|s| (s.labels["le"].parse::<f64>().unwrap(), s.value))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 20, "Istio's 19 bounds and +Inf: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
    assert_eq!(total(all, &format!("{name}_count"), labels), count);
    assert!(total(all, &format!("{name}_sum"), labels) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_count_exactly_and_one_trace_crosses_both_hops() {
    let receiver = OtlpReceiver::start().await;
    // The first two requests fail with 503, the rest succeed.
    let banking = backend("banking").fail_first(2, 503).start().await;
    let callee = proxy(&sidecar(
        banking.addr,
        "{ reporter: destination, workload: banking, service: banking }",
        receiver.addr,
        "{}",
    ))
    .start()
    .await;
    let caller = proxy(&sidecar(
        callee.addr,
        "{ reporter: source, workload: trading, duration: milliseconds }",
        receiver.addr,
        "{ prefix: istio_ }",
    ))
    .start()
    .await;
    let c = client();
    const N: usize = 9;
    let mut hops = Vec::new();
    for i in 0..N {
        let r = c.get(caller.addr, &format!("/buy/{i}")).await;
        assert_eq!(r.status, if i < 2 { 503 } else { 200 }, "{i}");
        // The backend saw the callee's span as its parent.
        let seen = r
            .header("x-echo-traceparent")
            .expect("traceparent at the backend");
        let parts: Vec<&str> = seen.split('-').collect();
        assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{seen}");
        assert_eq!(
            r.header("x-echo-weft-source-workload"),
            None,
            "the callee strips the claim"
        );
        hops.push((parts[1].to_owned(), parts[2].to_owned()));
    }
    let traces: std::collections::HashSet<_> = hops.iter().map(|h| &h.0).collect();
    assert_eq!(traces.len(), N, "each request its own trace");

    // Exactly N on both sides, in the right series.
    let host = "127.0.0.1";
    // The caller uses Istio's names; the callee Weft's (seconds, as Prometheus has it).
    for (side, p, prefix, duration, labels) in [
        (
            "caller",
            &caller,
            "istio_",
            "istio_request_duration_milliseconds",
            vec![
                ("reporter", "source"),
                ("source_workload", "trading"),
                ("destination_service", host),
                ("destination_workload", "next"),
                ("request_method", "GET"),
                ("route", "unknown"),
                ("grpc_response_status", ""),
            ],
        ),
        (
            "callee",
            &callee,
            "weft_filter_",
            "weft_filter_request_duration_seconds",
            vec![
                ("reporter", "destination"),
                ("source_workload", "trading"),
                ("destination_service", "banking"),
                ("destination_workload", "banking"),
                ("request_method", "GET"),
                ("route", "unknown"),
                ("grpc_response_status", ""),
            ],
        ),
    ] {
        let text = scrape(&c, p).await;
        let problems = promtool_problems(&text).await;
        if side == "caller" {
            // Istio's own name breaks Prometheus' naming rule, and promtool says so.
            assert_eq!(
                problems,
                [
                    "istio_request_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\""
                ]
            );
        } else {
            assert!(problems.is_empty(), "{problems:?}");
        }
        let all = samples(&text);
        let requests = format!("{prefix}requests_total");
        let errors = format!("{prefix}request_errors_total");
        let with = |code: &'static str| {
            let mut l = labels.clone();
            l.push(("response_code", code));
            l
        };
        assert_eq!(total(&all, &requests, &[]), N as f64, "{side}: {text}");
        assert_eq!(
            total(&all, &requests, &with("200")),
            (N - 2) as f64,
            "{side}"
        );
        assert_eq!(total(&all, &requests, &with("503")), 2.0, "{side}");
        assert_eq!(total(&all, &errors, &with("503")), 2.0, "{side}");
        assert_eq!(total(&all, &errors, &[]), 2.0, "{side}");
        buckets_add_up(&all, duration, &with("200"), (N - 2) as f64);
        buckets_add_up(&all, duration, &with("503"), 2.0);
    }

    // Both hops' spans at the collector: the caller's client span is the root, the
    // callee's server span its child, and the backend's parent is the callee's span.
    let spans = receiver.wait_for(2 * N).await;
    assert_eq!(spans.len(), 2 * N, "{spans:#?}");
    for (trace, backend_parent) in &hops {
        let of_trace: Vec<_> = spans
            .iter()
            .filter(|(_, s)| hex_id(&s.trace_id) == *trace)
            .collect();
        assert_eq!(of_trace.len(), 2, "trace {trace}");
        let (server_service, server) = of_trace
            .iter()
            .find(|(_, s)| hex_id(&s.span_id) == *backend_parent)
            .expect("the callee's span");
        let (client_service, client) = of_trace
            .iter()
            .find(|(_, s)| hex_id(&s.span_id) != *backend_parent)
            .expect("the caller's span");
        assert_eq!(
            (server_service.as_str(), client_service.as_str()),
            ("banking", "trading")
        );
        assert_eq!(
            server.parent_span_id, client.span_id,
            "parent and child linked"
        );
        assert!(
            client.parent_span_id.is_empty(),
            "the caller started the trace"
        );
        use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(client.kind, SpanKind::Client as i32);
        assert!(client.start_time_unix_nano <= server.start_time_unix_nano);
        assert!(server.end_time_unix_nano <= client.end_time_unix_nano);
    }
    let failed = spans
        .iter()
        .filter(|(_, s)| s.status.as_ref().is_some_and(|st| st.code == 2));
    assert_eq!(failed.count(), 4, "the two 503s on both hops");
    // The exporter counts a batch once the collector answered.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let all = samples(&scrape(&c, &caller).await);
        let exported = total(&all, "weft_trace_spans_exported_total", &[]);
        if exported == N as f64 || tokio::time::Instant::now() > deadline {
            assert_eq!(exported, N as f64);
            assert_eq!(total(&all, "weft_trace_spans_dropped_total", &[]), 0.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_trace_is_continued_w3c_or_b3() {
    let receiver = OtlpReceiver::start().await;
    let web = backend("web").start().await;
    let p = proxy(&sidecar(web.addr, "{ workload: web }", receiver.addr, "{}"))
        .start()
        .await;
    let c = client();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = c
        .get_with(
            p.addr,
            "/",
            &[("traceparent", parent), ("tracestate", "vendor=x")],
        )
        .await;
    let sent = r.header("x-echo-traceparent").unwrap().to_owned();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert!(
        !sent.contains("00f067aa0ba902b7"),
        "a new span id for this hop: {sent}"
    );
    assert_eq!(
        r.header("x-echo-tracestate"),
        Some("vendor=x"),
        "tracestate goes on as it came"
    );
    // B3 in, W3C out, same trace.
    let r = c
        .get_with(
            p.addr,
            "/",
            &[
                ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-sampled", "1"),
            ],
        )
        .await;
    let sent = r.header("x-echo-traceparent").unwrap().to_owned();
    assert!(
        sent.starts_with("00-463ac35c9f6413ad48485a3953bb6124-"),
        "{sent}"
    );
    // An unsampled trace stays unsampled, and its span is not exported.
    let r = c
        .get_with(
            p.addr,
            "/",
            &[(
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-00",
            )],
        )
        .await;
    assert!(r.header("x-echo-traceparent").unwrap().ends_with("-00"));
    receiver.wait_for(2).await;
    // Long enough for a third span to come, were one exported.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let w3c = spans
        .iter()
        .find(|(_, s)| hex_id(&s.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736")
        .expect("the W3C request's span");
    assert_eq!(hex_id(&w3c.1.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(w3c.1.trace_state, "vendor=x");
    assert_eq!(w3c.0, "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_drops_spans_and_nothing_else() {
    let web = backend("web").start().await;
    let down = refused();
    let p = proxy(&sidecar(web.addr, "{}", down.addr, "{}"))
        .start()
        .await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(p.addr, "/").await.status, 200);
    }
    // The exporter gives up on its batches; requests never waited for it.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let dropped = loop {
        let all = samples(&scrape(&c, &p).await);
        let dropped = total(&all, "weft_trace_spans_dropped_total", &[]);
        if dropped >= 20.0 || tokio::time::Instant::now() > deadline {
            break dropped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dropped, 20.0);
    let all = samples(&scrape(&c, &p).await);
    assert_eq!(total(&all, "weft_trace_spans_exported_total", &[]), 0.0);
    assert_eq!(
        total(
            &all,
            "weft_filter_requests_total",
            &[("response_code", "200")]
        ),
        20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_hosts_and_paths_stay_under_the_series_limit_and_idle_series_expire() {
    let receiver = OtlpReceiver::start().await;
    let web = backend("web").start().await;
    let p = proxy(&sidecar(
        web.addr,
        "{}",
        receiver.addr,
        "{ max_series: 5, expire_after: 1s }",
    ))
    .start()
    .await;
    let c = client();
    for i in 0..30 {
        let host = format!("h{i}.example");
        let r = c
            .get_with(p.addr, &format!("/unique/{i}"), &[("host", &host)])
            .await;
        assert_eq!(r.status, 200);
    }
    let text = scrape(&c, &p).await;
    let all = samples(&text);
    let series = select(&all, "weft_filter_requests_total", &[]);
    assert_eq!(series.len(), 6, "five and the overflow series: {text}");
    assert_eq!(
        total(
            &all,
            "weft_filter_requests_total",
            &[("destination_service", "overflow")]
        ),
        25.0
    );
    assert_eq!(
        total(
            &all,
            "weft_engine_filter_metric_dropped_total",
            &[("filter", "telemetry"), ("metric", "requests_total")]
        ),
        25.0
    );
    assert!(!text.contains("/unique/"), "paths are never labels");
    // Idle series leave; the proxy keeps serving and counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = scrape(&c, &p).await;
    assert!(
        select(&samples(&text), "weft_filter_requests_total", &[]).is_empty(),
        "{text}"
    );
    assert_eq!(
        c.get_with(p.addr, "/", &[("host", "again.example")])
            .await
            .status,
        200
    );
    let all = samples(&scrape(&c, &p).await);
    assert_eq!(
        total(
            &all,
            "weft_filter_requests_total",
            &[("destination_service", "again.example")]
        ),
        1.0
    );
}

/// The `traceparent` a backend got, checked to be one well-formed W3C value; its trace id.
fn sent_trace_id(seen: Option<&str>) -> String {
    let seen = seen.expect("traceparent at the backend");
    let parts: Vec<&str> = seen.split('-').collect();
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && hex(parts[3], 2),
        "{seen}"
    );
    parts[1].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_id_with_a_multibyte_char_gets_the_backend_and_a_fresh_trace() {
    let web = backend("web").start().await;
    let down = refused();
    let p = proxy(&sidecar(web.addr, "{}", down.addr, "{}"))
        .start()
        .await;
    // 32 bytes each, a two-byte `é` across byte 16, as raw bytes on the wire.
    let id = format!("{}é{}", "0".repeat(15), "a".repeat(15));
    for headers in [
        format!("traceparent: 00-{id}-00f067aa0ba902b7-01\r\n"),
        format!("b3: {id}-e457b5a2e4d86bd1-1\r\n"),
        format!("x-b3-traceid: {id}\r\nx-b3-spanid: a2fb4a1d1a96d312\r\n"),
    ] {
        let request = format!("GET / HTTP/1.1\r\nhost: web\r\n{headers}connection: close\r\n\r\n");
        let r = raw_exchange(p.addr, request.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{headers}: {r}");
        let echoed = r
            .lines()
            .find_map(|l| l.strip_prefix("x-echo-traceparent: "));
        let trace = sent_trace_id(echoed);
        assert_ne!(trace, "0".repeat(32), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_one_trace_context_and_a_bounded_tracestate() {
    let web = backend("web").start().await;
    let down = refused();
    let p = proxy(&sidecar(web.addr, "{}", down.addr, "{}"))
        .start()
        .await;
    let c = client();
    let a = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let b = "00-11111111111111111111111111111111-2222222222222222-01";
    // A client's B3 does not go on beside this hop's traceparent.
    let r = c
        .get_with(
            p.addr,
            "/",
            &[
                ("traceparent", a),
                ("tracestate", "vendor=x"),
                ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
                ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
                ("x-b3-sampled", "1"),
                ("x-b3-flags", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        sent_trace_id(r.header("x-echo-traceparent")),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(r.header("x-echo-tracestate"), Some("vendor=x"));
    let b3: Vec<_> = (r.headers.keys())
        .filter(|k| k.as_str().starts_with("x-echo-b3"))
        .collect();
    assert!(b3.is_empty(), "B3 went on: {b3:?}");
    // Two traceparent headers are no context: a new trace, and no tracestate.
    let r = c
        .send(
            p.addr,
            "GET",
            "/",
            &[
                ("traceparent", a),
                ("traceparent", b),
                ("tracestate", "vendor=x"),
            ],
            Default::default(),
        )
        .await;
    let trace = sent_trace_id(r.header("x-echo-traceparent"));
    assert!(!a.contains(&trace) && !b.contains(&trace), "{trace}");
    assert_eq!(r.header("x-echo-tracestate"), None);
    // Past 32 members or 512 bytes, or malformed, tracestate is dropped whole.
    let members = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>();
    let long = format!("a={},b={}", "x".repeat(255), "y".repeat(253));
    for tracestate in [members.join(","), long, "a=b=c".to_owned()] {
        let r = c
            .get_with(
                p.addr,
                "/",
                &[("traceparent", a), ("tracestate", &tracestate)],
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-echo-tracestate"), None, "{tracestate}");
        sent_trace_id(r.header("x-echo-traceparent"));
    }
    // Within both, it goes on as it came; two headers go on as the one list they are.
    let members = members[..32].join(",");
    let r = c
        .get_with(p.addr, "/", &[("traceparent", a), ("tracestate", &members)])
        .await;
    assert_eq!(r.header("x-echo-tracestate"), Some(members.as_str()));
    let r = c
        .send(
            p.addr,
            "GET",
            "/",
            &[
                ("traceparent", a),
                ("tracestate", "a=1"),
                ("tracestate", "b=2"),
            ],
            Default::default(),
        )
        .await;
    assert_eq!(r.header("x-echo-tracestate"), Some("a=1,b=2"));
}

/// A proxy whose telemetry counts every request, then routes `/down` to a backend
/// that answers 503 and the rest to `web`. Its listener takes mesh traffic, so a
/// client can name its workload as well as its host.
fn with_a_failing_route(web: &Backend, down: &Backend, metrics: &str) -> String {
    format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
    mesh_internal: true
    filters:
      - name: telemetry
        module: builtin:telemetry
        metrics: {metrics}
        config: {{}}
      - name: router
        module: builtin:router
        config:
          routes:
            - match: {{ path: {{ prefix: /down }} }}
              cluster: down
            - match: {{ path: {{ prefix: / }} }}
              cluster: web
clusters:
  - name: web
    endpoints: ["{}"]
  - name: down
    endpoints: ["{}"]
"#,
        web.addr, down.addr
    )
}

/// What `/metrics` may weigh after a flood of client-named labels, the proxy's own
/// series included: about 100 admitted label sets of ~6 KB each.
const FLOODED_METRICS_BOUND: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_client_named_labels_keeps_metrics_small_and_every_error_counted() {
    let web = backend("web").start().await;
    let down = backend("down").fail_first(usize::MAX, 503).start().await;
    let p = proxy(&with_a_failing_route(&web, &down, "{}"))
        .start()
        .await;
    let c = client();
    const FLOOD: usize = 600;
    for i in 0..FLOOD {
        let (host, caller) = (format!("h{i}.example"), format!("w{i}"));
        let r = c
            .get_with(
                p.addr,
                "/",
                &[("host", &host), ("x-weft-source-workload", &caller)],
            )
            .await;
        assert_eq!(r.status, 200, "{i}");
    }
    const FAILED: usize = 7;
    for i in 0..FAILED {
        let host = format!("late{i}.example");
        let r = c.get_with(p.addr, "/down", &[("host", &host)]).await;
        assert_eq!(r.status, 503, "{i}");
    }
    let text = scrape(&c, &p).await;
    assert!(
        text.len() < FLOODED_METRICS_BOUND,
        "/metrics is {} bytes",
        text.len()
    );
    let all = samples(&text);
    let requests = select(&all, "weft_filter_requests_total", &[]);
    let distinct = |label: &str| {
        let values: std::collections::HashSet<_> =
            requests.iter().map(|s| s.labels[label].clone()).collect();
        values
    };
    let hosts = distinct("destination_service");
    assert!(hosts.len() <= 101 && hosts.contains("unknown"), "{hosts:?}");
    let callers = distinct("source_workload");
    assert!(
        callers.len() <= 101 && callers.contains("w0") && callers.contains("unknown"),
        "{callers:?}"
    );
    let counted = total(&all, "weft_filter_requests_total", &[]);
    assert_eq!(counted, (FLOOD + FAILED) as f64);
    assert_eq!(
        total(&all, "weft_filter_request_errors_total", &[]),
        FAILED as f64,
        "{text}"
    );
    assert_eq!(
        total(
            &all,
            "weft_filter_requests_total",
            &[("response_code", "503")]
        ),
        FAILED as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_metric_counts_new_label_sets_and_errors_in_its_overflow_series() {
    let web = backend("web").start().await;
    let down = backend("down").fail_first(usize::MAX, 503).start().await;
    let p = proxy(&with_a_failing_route(&web, &down, "{ max_series: 10 }"))
        .start()
        .await;
    let c = client();
    for i in 0..30 {
        let host = format!("h{i}.example");
        assert_eq!(
            c.get_with(p.addr, "/", &[("host", &host)]).await.status,
            200
        );
    }
    for i in 0..4 {
        let host = format!("h{i}.example");
        assert_eq!(
            c.get_with(p.addr, "/down", &[("host", &host)]).await.status,
            503
        );
    }
    let text = scrape(&c, &p).await;
    let all = samples(&text);
    assert_eq!(
        select(&all, "weft_filter_requests_total", &[]).len(),
        11,
        "ten label sets and the overflow series: {text}"
    );
    assert_eq!(total(&all, "weft_filter_requests_total", &[]), 34.0);
    let overflow = [
        ("destination_service", "overflow"),
        ("response_code", "overflow"),
    ];
    assert_eq!(
        total(&all, "weft_filter_requests_total", &overflow),
        24.0,
        "{text}"
    );
    assert_eq!(total(&all, "weft_filter_request_errors_total", &[]), 4.0);
    assert_eq!(
        total(
            &all,
            "weft_engine_filter_metric_dropped_total",
            &[("filter", "telemetry"), ("metric", "requests_total")]
        ),
        24.0
    );
}
