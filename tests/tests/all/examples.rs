//! The example filters in `examples/`, built for wasm as their READMEs build them and
//! run as their READMEs run them: the api-key filter pushed to a real config server
//! and applied with the example's own mesh file, the rate limiter in a proxy started
//! from the example's own proxy file. Only addresses (and the module's path) change.

use std::time::Duration;

use serde_json::Value;
use weft_testkit::{TempDir, eventually_async};
use weft_tests::control::{api, apply, config_server, free_port, sidecar};
use weft_tests::*;

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", reply.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_pushed_and_applied_lets_known_keys_through_names_their_owner_and_counts() {
    let data = TempDir::new();
    let server = config_server(&data.0).start().await;
    let web = backend("web").start().await;
    let inbound = free_port();

    // As the README: `weft push ... --name api-key`, then `weft apply -f mesh.yaml`.
    let module = std::fs::read(guests::API_KEY).expect("the built component");
    api(server.addr(), "PUT", "/v1/filters/api-key", &module).await;
    let mesh = include_str!("../../../examples/api-key/mesh.yaml")
        .replace("127.0.0.1:9001", &web.addr.to_string())
        .replace("127.0.0.1:8080", &inbound.to_string());
    apply(server.addr(), &mesh).await;
    let state = TempDir::new();
    let (proxy, _agent) = sidecar(server.addr(), "web", &state.0).await;
    eventually_async("the proxy to serve the mesh", async || {
        proxy.listener_addr("inbound").is_some()
    })
    .await;
    let c = client();

    let missing = c.get(inbound, "/orders").await;
    assert_eq!(missing.status, 401, "{}", missing.text());
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="api""#)
    );
    assert_eq!(json(&missing)["error"], "missing_api_key");

    let wrong = c
        .get_with(inbound, "/orders", &[("x-api-key", "wrong")])
        .await;
    assert_eq!(wrong.status, 401);
    let challenge = wrong.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert_eq!(json(&wrong)["error"], "invalid_api_key");
    assert_eq!(web.requests(), 0, "refused requests never reach the app");

    let alice = c
        .get_with(inbound, "/orders", &[("x-api-key", "alice-secret-1")])
        .await;
    assert_eq!(alice.status, 200, "{}", alice.text());
    assert_eq!(alice.header("x-echo-api-key-owner"), Some("alice"));
    // bob's key is configured as its SHA-256; a client's own owner header is replaced.
    let bob = [
        ("authorization", "Bearer bob-secret-2"),
        ("x-api-key-owner", "admin"),
    ];
    let bob = c.get_with(inbound, "/orders", &bob).await;
    assert_eq!(bob.status, 200, "{}", bob.text());
    assert_eq!(bob.header("x-echo-api-key-owner"), Some("bob"));
    assert_eq!(web.requests(), 2);

    let admin = proxy.admin_addr().expect("an admin listener");
    let metrics = samples(&c.get(admin, "/metrics").await.text());
    let count = |result: &str| {
        let labels = [("filter", "api-key"), ("result", result)];
        total(&metrics, "weft_filter_api_key_requests_total", &labels)
    };
    assert_eq!(
        [count("allowed"), count("missing"), count("refused")],
        [2.0, 1.0, 1.0]
    );
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

/// The rate limiter's README proxy, its listener at `listen` and its admin on a free
/// port, in front of `web`; its bucket refills once an hour, so no token comes back
/// while a test runs.
fn rate_limiter_proxy(web: &Backend, listen: &str) -> String {
    include_str!("../../../examples/rate-limiter/weft.yaml")
        .replace(
            "../../target/wasm32-wasip2/release/rate_limiter.wasm",
            guests::RATE_LIMITER,
        )
        .replace("127.0.0.1:9001", &web.addr.to_string())
        .replace("127.0.0.1:8080", listen)
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("refill_every: 10s", "refill_every: 1h")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiter_counts_down_per_client_answers_429_json_and_keeps_buckets_across_a_reload() {
    let web = backend("web").start().await;
    let p = proxy(&rate_limiter_proxy(&web, ANY_PORT)).start().await;
    let c = client();
    let acme = [("x-client-id", "acme")];

    for left in ["2", "1", "0"] {
        let r = c.get_with(p.addr, "/", &acme).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-remaining"), Some(left));
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    }
    for _ in 0..2 {
        let r = c.get_with(p.addr, "/", &acme).await;
        assert_eq!(r.status, 429, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        let wait: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!((1..=3600).contains(&wait), "retry-after: {wait}");
        let body = json(&r);
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["retry_after"], wait);
    }
    assert_eq!(web.requests(), 3, "limited requests never reach the app");

    // Another client has a bucket of its own; one without the header is its address.
    let other = c.get_with(p.addr, "/", &[("x-client-id", "other")]).await;
    assert_eq!(other.header("x-ratelimit-remaining"), Some("2"));
    let anonymous = c.get(p.addr, "/").await;
    assert_eq!(anonymous.header("x-ratelimit-remaining"), Some("2"));

    let admin = p.running().admin_addr().expect("an admin listener");
    let metrics = samples(&c.get(admin, "/metrics").await.text());
    let count = |result: &str| {
        let labels = [("filter", "rate-limiter"), ("result", result)];
        total(&metrics, "weft_filter_rate_limiter_requests_total", &labels)
    };
    assert_eq!([count("allowed"), count("limited")], [5.0, 2.0]);

    // A reload that changes only the filter's config (as SIGHUP or `weft apply` do;
    // the listener's address as written stays, so it keeps its socket): the new
    // config is in force, and acme's empty bucket is still empty.
    let changed = rate_limiter_proxy(&web, ANY_PORT).replace("capacity: 3", "capacity: 4");
    let config = weft_config::Config::from_str(&changed, "test.yaml", None).unwrap();
    p.running().reload(&config).expect("the reload is taken");
    let r = c.get_with(p.addr, "/", &acme).await;
    assert_eq!(
        r.status,
        429,
        "the bucket survived the reload: {}",
        r.text()
    );
    assert_eq!(r.header("x-ratelimit-limit"), Some("4"));
    let newcomer = c.get_with(p.addr, "/", &[("x-client-id", "new")]).await;
    assert_eq!(newcomer.header("x-ratelimit-remaining"), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_burst_gets_exactly_the_buckets_tokens_across_instances() {
    let web = backend("web").start().await;
    let p = proxy(&rate_limiter_proxy(&web, ANY_PORT)).start().await;
    // Twenty at once from one client: the filter's instances race on one bucket, and
    // compare-and-swap lets exactly `capacity` of them through.
    let burst = (0..20).map(|_| {
        let addr = p.addr;
        tokio::spawn(async move {
            let r = client()
                .get_with(addr, "/", &[("x-client-id", "burst")])
                .await;
            (
                r.status.as_u16(),
                r.header("x-ratelimit-remaining").map(str::to_owned),
            )
        })
    });
    let mut answers = Vec::new();
    for task in burst.collect::<Vec<_>>() {
        answers.push(within(task).await.expect("a request task"));
    }
    let mut passed: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    passed.sort();
    let left: Vec<_> = passed.iter().map(|(_, l)| l.as_deref()).collect();
    assert_eq!(left, [Some("0"), Some("1"), Some("2")], "{answers:?}");
    assert_eq!(answers.iter().filter(|(s, _)| *s == 429).count(), 17);
    assert_eq!(web.requests(), 3);
}
