//! The retry filter over the core's exchange loop: what is retried, what is not, how
//! often, and within what time.

use bytes::Bytes;
use weft_tests::*;

/// A proxy whose only cluster's one endpoint refuses connections (for as long as the
/// guard lives), with these filters (YAML list items indented by six spaces).
fn dead_cluster(filters: &str) -> (Refused, String) {
    let dead = refused();
    let yaml = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: dead\n    \
         filters:\n{filters}clusters:\n  - name: dead\n    endpoints: [\"{}\"]\n",
        dead.addr
    );
    (dead, yaml)
}

/// A chain of one retry filter with this config (YAML flow mapping).
fn retry(config: &str) -> String {
    format!("      - name: retry\n        module: builtin:retry\n        config: {config}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_and_the_upstream_sees_the_attempt() {
    let web = backend("web").fail_first(1, 503).start().await;
    let p = proxy(&chain(&web, &retry("{}"))).start().await;
    let r = client().get(p.addr, "/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(web.requests(), 2);
    assert_eq!(r.header("x-echo-weft-attempt"), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_not_retried_unless_configured() {
    let web = backend("web").fail_first(1, 503).start().await;
    let p = proxy(&chain(&web, &retry("{}"))).start().await;
    let body = Bytes::from_static(b"order #1");
    let r = client().send(p.addr, "POST", "/orders", &[], body).await;
    assert_eq!(r.status, 503);
    assert_eq!(web.requests(), 1, "a POST is not repeated by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_post_is_replayed_byte_for_byte() {
    let web = backend("web").fail_first(2, 502).start().await;
    let p = proxy(&chain(
        &web,
        &retry("{ methods: [POST], backoff: { base: 1ms, max: 5ms } }"),
    ))
    .start()
    .await;
    // Every byte value, and more than one read's worth.
    let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let r = client()
        .send(p.addr, "POST", "/orders", &[], Bytes::from(body.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(web.requests(), 3);
    assert_eq!(r.header("x-echo-weft-attempt"), Some("3"));
    assert!(r.body == body, "the third attempt got the same body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_max_body_goes_once_and_whole() {
    let web = backend("web").fail_first(1, 503).start().await;
    let p = proxy(&chain(&web, &retry("{ methods: [PUT], max_body: 1KiB }")))
        .start()
        .await;
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
    let r = client()
        .send(p.addr, "PUT", "/big", &[], Bytes::from(body.clone()))
        .await;
    // Not kept, so not retried; and nothing of it was lost on the way.
    assert_eq!(r.status, 503);
    assert_eq!(web.requests(), 1);
    assert!(r.body == body, "the upstream got the whole body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_and_then_answered_503() {
    let logs = logs();
    let (_dead, yaml) = dead_cluster(&retry("{ backoff: { base: 1ms, max: 2ms } }"));
    let p = proxy(&yaml).start().await;
    let body = Bytes::from_static(b"x");
    // Even a POST: the upstream never saw it.
    let r = client().send(p.addr, "POST", "/", &[], body).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-weft-error"), Some("upstream"));
    let text = logs.text();
    let failures = text.matches("upstream unavailable").count();
    assert!(
        failures >= 3,
        "three attempts logged, got {failures}:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_bounds_retries_against_a_dead_backend() {
    let web = backend("web").fail_first(usize::MAX, 503).start().await;
    let p = proxy(&chain(
        &web,
        &retry(
            "{ max_retries: 3, backoff: { base: 1ms, max: 1ms }, \
             budget: { ratio: 0.1, min_per_second: 1, window: 10s } }",
        ),
    ))
    .start()
    .await;
    let c = client();
    let n = 100;
    for i in 0..n {
        let r = c.get(p.addr, &format!("/{i}")).await;
        assert_eq!(r.status, 503);
    }
    let retries = web.requests() - n;
    // Within the window: 1/s for 10 s plus a tenth of the requests, 20 in all (the
    // first second's requests count as they come, so a few fewer may be allowed).
    // Without the budget it would be 300.
    assert!(retries <= 20, "{retries} retries");
    assert!(retries >= 10, "the minimum still retries: {retries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_budget_refuses_is_counted_per_cluster() {
    let web = backend("web").fail_first(usize::MAX, 503).start().await;
    // Room for 10 retries in the window (1/s for 10 s), none for the requests' share.
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:0\n{}",
        chain(
            &web,
            &retry(
                "{ max_retries: 1, backoff: { base: 1ms, max: 1ms }, \
                 budget: { ratio: 0, min_per_second: 1, window: 10s } }",
            ),
        )
    );
    let p = proxy(&yaml).start().await;
    let c = client();
    let n = 30;
    for i in 0..n {
        assert_eq!(c.get(p.addr, &format!("/{i}")).await.status, 503);
    }
    // Each request failed once and was either retried once or refused by the budget.
    let retries = web.requests() - n;
    assert!((1..=10).contains(&retries), "{retries} retries");
    let admin = p.running().admin_addr().expect("admin");
    let metrics = c.get(admin, "/metrics").await.text();
    let samples = samples(&metrics);
    let refused = total(
        &samples,
        "weft_filter_retry_budget_exhausted_total",
        &[("filter", "retry"), ("cluster", "web")],
    );
    assert_eq!(refused, (n - retries) as f64, "{metrics}");
    let retried = total(
        &samples,
        "weft_cluster_retries_total",
        &[("cluster", "web")],
    );
    assert_eq!(retried, retries as f64, "{metrics}");
    promtool_check(&metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_attempt_times_out_and_the_next_one_answers() {
    let web = backend("web").slow_first(1, 3000).start().await;
    let p = proxy(&chain(&web, &retry("{ per_try_timeout: 200ms }")))
        .start()
        .await;
    let r = client().get(p.addr, "/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(web.requests(), 2);
    assert_eq!(r.header("x-echo-weft-attempt"), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overall_timeout_bounds_every_attempt() {
    let logs = logs();
    let web = backend("web").slow_first(usize::MAX, 5000).start().await;
    let filters = format!(
        "{}      - name: router\n        module: builtin:router\n        config: {{ routes: [{{ name: slow, timeout: 500ms, cluster: web }}] }}\n",
        retry("{ per_try_timeout: 200ms, backoff: { base: 1ms, max: 1ms } }")
    );
    let p = proxy(&chain(&web, &filters)).start().await;
    let r = client().get(p.addr, "/").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().starts_with("upstream timed out"), "{}", r.text());
    let log = logs.of_error(&r);
    assert!(
        log.contains("did not answer the request within 500ms"),
        "{log}"
    );
    // Per-try timeouts of 200 ms inside a 500 ms route timeout: two or three tries.
    assert!((2..=3).contains(&web.requests()), "{}", web.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_hooks_see_the_proxys_errors_and_the_context() {
    let web = backend("web").fail_first(1, 503).start().await;
    let stamp = format!(
        "      - name: stamp\n        module: {}\n        config: {{ name: s }}\n",
        weft_tests::guests::STAMP
    );
    let p = proxy(&chain(&web, &format!("{stamp}{}", retry("{}"))))
        .start()
        .await;
    let r = client().get(p.addr, "/ctx?q=1").await;
    assert_eq!(r.status, 200);
    // The stamp's request hook left the path; its response hook read it back, and
    // saw the second attempt (the first was retried before it saw it).
    assert_eq!(r.header("x-stamp-ctx"), Some("/ctx?q=1"));
    assert_eq!(r.header("x-stamp-attempt"), Some("2"));
    assert_eq!(r.header("x-stamp-error"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_exchange_reaches_response_hooks_with_its_reason() {
    let (_dead, yaml) = dead_cluster(&format!(
        "      - name: stamp\n        module: {}\n        config: {{ name: s }}\n",
        weft_tests::guests::STAMP
    ));
    let p = proxy(&yaml).start().await;
    let r = client().get(p.addr, "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("x-stamp-error"),
        Some("ExchangeError::ConnectFailure")
    );
    assert_eq!(r.header("x-stamp-attempt"), Some("1"));
    // The proxy's own marks are still there for the client.
    assert_eq!(r.header("x-weft-error"), Some("upstream"));
}
