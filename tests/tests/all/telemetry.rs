//! `builtin:telemetry` across two chained proxies, a caller's sidecar and a callee's:
//! exact RED counts under Istio's names on both, one trace across both hops (at the
//! backend and at an OTLP receiver), bounded label sets, and a collector that is down;
//! trace headers a client sets, and floods of the labels a client names; Envoy's
//! response flags; Istio's RED query and the Grafana dashboard's queries, evaluated by
//! promtool's PromQL engine over two scrapes of proxies with the demo's settings.

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
        "{ reporter: destination, workload: banking, service: banking, namespace: bank, canonical_revision: v7 }",
        receiver.addr,
        "{}",
    ))
    .start()
    .await;
    let caller = proxy(&sidecar(
        callee.addr,
        "{ reporter: source, workload: trading, namespace: markets, canonical_service: trading-app, duration: milliseconds }",
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
                ("source_workload_namespace", "markets"),
                ("source_canonical_service", "trading-app"),
                ("source_canonical_revision", "latest"),
                ("source_principal", "unknown"),
                ("destination_service", host),
                ("destination_workload", "next"),
                // The caller knows of the callee only the cluster it picked.
                ("destination_workload_namespace", "unknown"),
                ("destination_canonical_service", "unknown"),
                ("destination_canonical_revision", "unknown"),
                ("destination_principal", "unknown"),
                ("request_protocol", "http"),
                ("request_method", "GET"),
                ("route", "unknown"),
                ("grpc_response_status", ""),
                ("response_flags", "-"),
                ("connection_security_policy", "unknown"),
            ],
        ),
        (
            "callee",
            &callee,
            "weft_filter_",
            "weft_filter_request_duration_seconds",
            vec![
                ("reporter", "destination"),
                // All the caller's sidecar named in x-weft-source-workload.
                ("source_workload", "trading"),
                ("source_workload_namespace", "markets"),
                ("source_canonical_service", "trading-app"),
                ("source_canonical_revision", "latest"),
                ("source_principal", "unknown"),
                ("destination_service", "banking"),
                ("destination_workload", "banking"),
                ("destination_workload_namespace", "bank"),
                ("destination_canonical_service", "banking"),
                ("destination_canonical_revision", "v7"),
                ("destination_principal", "unknown"),
                ("request_protocol", "http"),
                ("request_method", "GET"),
                ("route", "unknown"),
                ("grpc_response_status", ""),
                // The upstream's own 503s: no failed exchange to flag.
                ("response_flags", "-"),
                ("connection_security_policy", "none"),
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
        // Istio's standard labels, and the proxy's `filter`.
        for s in select(&all, &requests, &[]) {
            assert_eq!(s.labels.len(), 20, "{side}: {s:?}");
        }
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
/// series included: about 100 admitted label sets of ~14 KB each (Istio's 19 labels
/// on each of a histogram's lines).
const FLOODED_METRICS_BOUND: usize = 2 << 20;

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
        // Every name a caller's sidecar gives made up: workload, namespace, canonical
        // service and revision.
        let (host, caller) = (format!("h{i}.example"), format!("w{i};n{i};c{i};r{i}"));
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
    for (label, first) in [
        ("source_workload", "w0"),
        ("source_workload_namespace", "n0"),
        ("source_canonical_service", "c0"),
        ("source_canonical_revision", "r0"),
    ] {
        let values = distinct(label);
        assert!(
            values.len() <= 101 && values.contains(first) && values.contains("unknown"),
            "{label}: {values:?}"
        );
    }
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

/// The series of `requests_total` with these labels, summed.
fn requests(all: &[Sample], labels: &[(&str, &str)]) -> f64 {
    total(all, "weft_filter_requests_total", labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_flags_protocol_and_security_say_what_weft_knows() {
    let web = backend("web").start().await;
    let flaky = backend("flaky").fail_first(usize::MAX, 503).start().await;
    let gone = refused();
    let silent = SilentUpstream::start().await;
    // One route for each failure Envoy's flags name; unmatched requests go on to the
    // proxy, which has no default cluster. Only a 503 from the upstream is retried.
    let yaml = format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: telemetry
        module: builtin:telemetry
        config: {{ workload: web, namespace: shop }}
      - name: retry
        module: builtin:retry
        config:
          max_retries: 1
          retry_on: [gateway-error]
          backoff: {{ base: 1ms, max: 1ms }}
          budget: {{ ratio: 1, min_per_second: 100 }}
      - name: router
        module: builtin:router
        config:
          no_match: continue
          routes:
            - {{ name: ok, match: {{ path: {{ exact: /ok }} }}, cluster: web }}
            - {{ name: refused, match: {{ path: {{ exact: /refused }} }}, cluster: gone }}
            - name: silent
              timeout: 200ms
              match: {{ path: {{ exact: /silent }} }}
              cluster: silent
            - {{ name: flaky, match: {{ path: {{ exact: /flaky }} }}, cluster: flaky }}
clusters:
  - name: web
    endpoints: ["{}"]
  - name: gone
    endpoints: ["{}"]
  - name: silent
    endpoints: ["{}"]
  - name: flaky
    endpoints: ["{}"]
"#,
        web.addr, gone.addr, silent.addr, flaky.addr
    );
    let p = proxy(&yaml).start().await;
    let c = client();
    assert_eq!(c.get(p.addr, "/ok").await.status, 200);
    let grpc = c
        .send(
            p.addr,
            "POST",
            "/ok",
            &[("content-type", "application/grpc+proto")],
            Default::default(),
        )
        .await;
    assert_eq!(grpc.status, 200);
    for (path, status) in [
        ("/refused", 503),
        ("/silent", 504),
        ("/flaky", 503),
        ("/nowhere", 404),
    ] {
        assert_eq!(c.get(p.addr, path).await.status, status, "{path}");
    }
    assert_eq!(flaky.requests(), 2, "the 503 was retried once");

    let text = scrape(&c, &p).await;
    let all = samples(&text);
    for (route, code, protocol, flags) in [
        ("ok", "200", "http", "-"),
        ("ok", "200", "grpc", "-"),
        ("refused", "503", "http", "UF"),
        ("silent", "504", "http", "UT"),
        ("flaky", "503", "http", "URX"),
        ("unknown", "404", "http", "NR"),
    ] {
        let labels = [
            ("route", route),
            ("response_code", code),
            ("request_protocol", protocol),
            ("response_flags", flags),
            ("connection_security_policy", "none"),
            ("source_principal", "unknown"),
            ("destination_workload_namespace", "shop"),
        ];
        assert_eq!(requests(&all, &labels), 1.0, "{labels:?}\n{text}");
    }
    assert_eq!(requests(&all, &[]), 6.0);
    assert_eq!(
        total(&all, "weft_filter_request_errors_total", &[]),
        3.0,
        "the 5xx"
    );
}

/// The demo mesh's filter chain (its first proxy's listener).
fn demo_filters() -> Vec<weft_config::FilterConfig> {
    let mesh = weft_config::MeshConfig::parse(
        include_str!("../../../cli/src/demo.yaml"),
        "cli/src/demo.yaml",
    )
    .expect("the demo's mesh parses");
    mesh.proxies[0].listeners[0].filters.clone()
}

/// The demo's chain as YAML list items, its telemetry fronting `service` in the
/// namespace `bookinfo`, under the demo's metric names (Istio's) or Weft's defaults.
fn demo_chain(service: &str, istio: bool) -> String {
    let mut out = String::new();
    for f in demo_filters() {
        let mut config = f
            .config
            .as_ref()
            .map_or_else(|| serde_json::json!({}), |c| c.value.json().clone());
        let mut prefix = f.metrics.prefix.clone();
        if f.module.value == "builtin:telemetry" {
            let c = config
                .as_object_mut()
                .expect("the telemetry config is a map");
            if istio {
                // What this test stands for: Istio's names, units and reporter.
                assert_eq!(prefix, "istio_");
                assert_eq!(c["duration"], "milliseconds");
                let reporter = c.get("reporter").and_then(|r| r.as_str());
                assert!(matches!(reporter, None | Some("destination")), "{c:?}");
            } else {
                prefix = "weft_filter_".to_owned();
                c.remove("duration");
            }
            for (k, v) in [
                ("workload", service),
                ("service", service),
                ("namespace", "bookinfo"),
            ] {
                c.insert(k.to_owned(), v.into());
            }
            c.insert("qualify_service".to_owned(), true.into());
        }
        out.push_str(&format!(
            "      - name: {}\n        module: {}\n        metrics: {{ prefix: {prefix} }}\n        \
             config: {config}\n",
            f.name.value, f.module.value
        ));
    }
    out
}

/// A proxy of the demo's chain in front of `web`: both of the demo's clusters are it.
async fn demo_proxy(service: &str, istio: bool, web: &Backend) -> Proxy {
    let yaml = format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: demo
    address: 127.0.0.1:0
    mesh_internal: true
    filters:
{}
clusters:
  - name: blue
    endpoints: ["{addr}"]
  - name: green
    endpoints: ["{addr}"]
"#,
        demo_chain(service, istio),
        addr = web.addr
    );
    proxy(&yaml).start().await
}

/// `ok` requests the backend answers, and `aborted` ones the demo's fault filter
/// answers 503.
async fn demo_traffic(c: &Client, p: &Proxy, ok: usize, aborted: usize) {
    for _ in 0..ok {
        assert_eq!(c.get(p.addr, "/hello").await.status, 200);
    }
    for _ in 0..aborted {
        let r = c
            .get_with(p.addr, "/hello", &[("x-weft-fault", "abort")])
            .await;
        assert_eq!(r.status, 503);
    }
}

/// A number as promtool's series notation writes it.
fn promtool_number(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".to_owned(),
        f64::INFINITY => "Inf".to_owned(),
        f64::NEG_INFINITY => "-Inf".to_owned(),
        v => v.to_string(),
    }
}

/// Two scrapes of each proxy as promtool's input series, the second 30 s after the
/// first, each series labelled with its proxy as Prometheus' `instance` label would.
fn input_series(scrapes: &[(&str, String, String)]) -> Vec<serde_json::Value> {
    let mut series = std::collections::BTreeMap::<String, [Option<f64>; 2]>::new();
    for (instance, first, second) in scrapes {
        for (i, text) in [first, second].into_iter().enumerate() {
            for s in samples(text) {
                let mut labels = s.labels.clone();
                labels.insert("instance".to_owned(), (*instance).to_owned());
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", serde_json::Value::from(v.as_str())))
                    .collect();
                let key = format!("{}{{{}}}", s.name, labels.join(","));
                series.entry(key).or_default()[i] = Some(s.value);
            }
        }
    }
    series
        .into_iter()
        .map(|(name, values)| {
            let values = values.map(|v| v.map_or_else(|| "_".to_owned(), promtool_number));
            serde_json::json!({ "series": name, "values": values.join(" ") })
        })
        .collect()
}

/// Evaluate each expression with promtool's PromQL engine at the second scrape, over
/// a minute, and check it gives exactly these samples (labels, value).
async fn promql(series: &[serde_json::Value], expect: &[(String, Vec<(String, f64)>)]) {
    let tests: Vec<serde_json::Value> = expect
        .iter()
        .map(|(expr, samples)| {
            let samples: Vec<_> = samples
                .iter()
                .map(|(labels, value)| serde_json::json!({ "labels": labels, "value": value }))
                .collect();
            serde_json::json!({ "expr": expr, "eval_time": "30s", "exp_samples": samples })
        })
        .collect();
    let file = serde_json::json!({
        "evaluation_interval": "30s",
        "tests": [{ "interval": "30s", "input_series": series, "promql_expr_test": tests }],
    });
    let dir = TempDir::new();
    let path = dir.0.join("queries.json");
    std::fs::write(&path, file.to_string()).expect("write the queries");
    let run = tokio::process::Command::new(promtool())
        .args(["test", "rules"])
        .arg(&path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LIMIT, run)
        .await
        .expect("promtool within the limit")
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istios_red_query_and_the_dashboard_read_the_demos_metrics_in_promql() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../examples/grafana/weft-proxies.json"))
            .expect("the dashboard is JSON");
    let panels: Vec<(&str, &str)> = (dashboard["panels"].as_array().expect("panels").iter())
        .flat_map(|p| {
            let title = p["title"].as_str().expect("a title");
            let targets = p["targets"].as_array().expect("targets");
            targets
                .iter()
                .map(move |t| (title, t["expr"].as_str().expect("expr")))
        })
        .collect();
    let c = client();
    // The demo's names (Istio's), then Weft's defaults: the dashboard reads both.
    for (istio, prefix) in [(true, "istio_"), (false, "weft_filter_")] {
        let reviews_web = backend("reviews").start().await;
        let ratings_web = backend("ratings").start().await;
        let reviews = demo_proxy("reviews", istio, &reviews_web).await;
        let ratings = demo_proxy("ratings", istio, &ratings_web).await;
        // Before the first scrape both services answered and failed; between the two,
        // reviews does both again and ratings only fails.
        demo_traffic(&c, &reviews, 4, 2).await;
        demo_traffic(&c, &ratings, 3, 2).await;
        let (reviews_first, ratings_first) =
            (scrape(&c, &reviews).await, scrape(&c, &ratings).await);
        demo_traffic(&c, &reviews, 5, 1).await;
        demo_traffic(&c, &ratings, 0, 3).await;
        let series = input_series(&[
            ("reviews", reviews_first, scrape(&c, &reviews).await),
            ("ratings", ratings_first, scrape(&c, &ratings).await),
        ]);

        let service =
            |name: &str| format!("{{destination_service=\"{name}.bookinfo.svc.cluster.local\"}}");
        let (rv, rt) = (service("reviews"), service("ratings"));
        let red = format!(
            "sum(rate({prefix}requests_total{{reporter=\"destination\", response_code!~\"5..\"}}[1m])) by (destination_service)"
        );
        let all = format!(
            "sum(rate({prefix}requests_total{{reporter=\"destination\"}}[1m])) by (destination_service)"
        );
        let mut expect = vec![
            // Istio's RED query: a rate for each service; ratings' only requests
            // between the scrapes were 5xx, so its rate without them is zero ...
            (
                format!("{red} > bool 0"),
                vec![(rv.clone(), 1.0), (rt.clone(), 0.0)],
            ),
            // ... though it had traffic, and reviews' 5xx are left out too.
            (
                format!("{all} > bool 0"),
                vec![(rv.clone(), 1.0), (rt.clone(), 1.0)],
            ),
            (format!("{red} < bool {all}"), vec![(rv, 1.0), (rt, 1.0)]),
            // The labels Istio's dashboards group by: one series per response code.
            (
                format!(
                    "count by (destination_workload_namespace, destination_canonical_service, \
                     request_protocol, connection_security_policy, response_flags) \
                     ({prefix}requests_total{{reporter=\"destination\"}})"
                ),
                ["reviews", "ratings"]
                    .map(|s| {
                        (
                            format!(
                                "{{destination_workload_namespace=\"bookinfo\", \
                                 destination_canonical_service=\"{s}\", request_protocol=\"http\", \
                                 connection_security_policy=\"none\", response_flags=\"-\"}}"
                            ),
                            2.0,
                        )
                    })
                    .to_vec(),
            ),
        ];
        // Every panel's every query parses and has data, under either name, but for
        // the retry budget's refusals: that counter has a series only once the budget
        // refused a retry, which the demo's traffic never makes it do.
        for (title, expr) in &panels {
            let expr = expr
                .replace("${prefix}", prefix)
                .replace("$prefix", prefix)
                .replace("$__rate_interval", "1m");
            assert!(!expr.contains('$'), "{title}: a variable left in {expr}");
            let data = if expr.contains("retry_budget_exhausted_total") {
                vec![]
            } else {
                vec![("{}".to_owned(), 1.0)]
            };
            expect.push((format!("count(({expr})) > bool 0"), data));
        }
        promql(&series, &expect).await;
    }
}
