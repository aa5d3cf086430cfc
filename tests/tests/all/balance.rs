//! Clusters: balancers, weights, outlier ejection, health checks, circuit-breaking
//! limits, and clusters kept across reloads, against real backends on loopback.

use std::sync::Arc;
use std::time::Duration;

use weft_tests::*;

/// A listener `main` whose requests go to cluster `web`, with these endpoints and
/// extra cluster keys (YAML lines indented by four spaces).
fn cluster(endpoints: &[String], extra: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n\
         clusters:\n  - name: web\n    endpoints: [{}]\n{extra}",
        endpoints.join(", ")
    )
}

fn addr(b: &Backend) -> String {
    format!("\"{}\"", b.addr)
}

/// Requests a backend served, health checks not counted.
fn served(b: &Backend) -> usize {
    b.paths().iter().filter(|p| *p != "/healthz").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly_and_honours_weights() {
    let (a, b, c) = (
        backend("a").start().await,
        backend("b").start().await,
        backend("c").start().await,
    );
    let yaml = cluster(
        &[addr(&a), addr(&b), addr(&c)],
        "    balancer: round-robin\n",
    );
    let p = proxy(&yaml).start().await;
    let client = client();
    for _ in 0..300 {
        assert_eq!(client.get(p.addr, "/").await.status, 200);
    }
    assert_eq!((a.requests(), b.requests(), c.requests()), (100, 100, 100));

    let (d, e) = (backend("d").start().await, backend("e").start().await);
    let weighted = [
        addr(&d),
        format!("{{ address: \"{}\", weight: 3 }}", e.addr),
    ];
    let p = proxy(&cluster(&weighted, "    balancer: round-robin\n"))
        .start()
        .await;
    for _ in 0..400 {
        assert_eq!(client.get(p.addr, "/").await.status, 200);
    }
    assert_eq!((d.requests(), e.requests()), (100, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_hold_for_random_choices_too() {
    let (d, e) = (backend("d").start().await, backend("e").start().await);
    let weighted = [
        addr(&d),
        format!("{{ address: \"{}\", weight: 4 }}", e.addr),
    ];
    // Sequential requests: nothing in flight, so the draw decides alone.
    let p = proxy(&cluster(&weighted, "    balancer: least-request\n"))
        .start()
        .await;
    let client = client();
    for _ in 0..500 {
        assert_eq!(client.get(p.addr, "/").await.status, 200);
    }
    // Each request draws two and keeps the first on a tie: d is kept only when both
    // draws are d, 1/25 of the time, 20 in 500 (a wide bound for chance).
    assert!(d.requests() < 60, "d served {} of 500", d.requests());
}

/// Send `n` requests from `workers` concurrent clients.
async fn load(addr: std::net::SocketAddr, n: usize, workers: usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                assert_eq!(c.get(addr, "/").await.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_gets_clearly_less_traffic() {
    for balancer in ["least-request", "peak-ewma"] {
        let fast = backend("fast").start().await;
        // Ten times slower than a loopback answer could ever be slow: 20 ms.
        let slow = backend("slow").slow_first(usize::MAX, 20).start().await;
        let yaml = cluster(
            &[addr(&fast), addr(&slow)],
            &format!("    balancer: {balancer}\n"),
        );
        let p = proxy(&yaml).start().await;
        load(p.addr, 400, 8).await;
        let share = slow.requests() as f64 / 400.0;
        // Round robin would give it half.
        assert!(
            share < 0.25,
            "{balancer}: the slow endpoint served {share:.0}%"
        );
        assert_eq!(fast.requests() + slow.requests(), 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_and_comes_back() {
    let logs = logs();
    let bad = backend("bad").fail_first(usize::MAX, 503).start().await;
    let good = backend("good").start().await;
    let yaml = cluster(
        &[addr(&bad), addr(&good)],
        "    balancer: round-robin\n    outlier: { consecutive_failures: 3, base_ejection: 1s }\n",
    );
    let p = proxy(&yaml).start().await;
    let c = client();
    for _ in 0..20 {
        c.get(p.addr, "/").await;
    }
    assert_eq!(bad.requests(), 3, "ejected after three failures in a row");
    assert!(
        logs.text().contains("endpoint ejected for 1s"),
        "{}",
        logs.text()
    );
    // Back after its back-off.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for _ in 0..4 {
        c.get(p.addr, "/").await;
    }
    assert!(bad.requests() > 3, "it came back after its ejection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_dead_endpoint_out() {
    let good = backend("good").start().await;
    let sick = backend("sick").fail_first(usize::MAX, 500).start().await;
    let refused = refused();
    let dead = refused.addr;
    let yaml = cluster(
        &[addr(&good), addr(&sick), format!("\"{dead}\"")],
        "    balancer: round-robin\n    outlier: { consecutive_failures: 0 }\n    \
         health_check: { path: /healthz, interval: 100ms, timeout: 500ms, unhealthy_threshold: 2 }\n",
    );
    let p = proxy(&yaml).start().await;
    // Two failed checks each, 100 ms apart.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while p
        .running()
        .cluster_states("web")
        .is_some_and(|s| s.iter().filter(|(_, healthy, _)| *healthy).count() > 1)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "checks took too long"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(p.addr, "/").await.status, 200);
    }
    assert_eq!(served(&sick), 0);
    assert_eq!(served(&good), 20);
    assert!(good.paths().iter().any(|p| p == "/healthz"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_limits_answer_503_naming_the_limit() {
    let slow = backend("slow").slow_first(usize::MAX, 400).start().await;
    let yaml = cluster(&[addr(&slow)], "    limits: { max_requests: 2 }\n");
    let p = proxy(&yaml).start().await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move { client().get(addr, "/").await }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(r.header("x-weft-overflow"), Some("max_requests"));
                assert!(r.text().starts_with("upstream overloaded"), "{}", r.text());
                refused += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ok, refused), (2, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_cluster_keeps_its_connections_across_a_reload() {
    let web = backend("web").start().await;
    let yaml = cluster(&[addr(&web)], "");
    let p = proxy(&yaml).start().await;
    let c = client();
    assert_eq!(c.get(p.addr, "/").await.status, 200);
    let config = weft_config::Config::from_str(&yaml, "test.yaml", None).unwrap();
    p.running().reload(&config).unwrap();
    assert_eq!(c.get(p.addr, "/").await.status, 200);
    assert_eq!(web.connections(), 1, "the pooled connection was kept");
    // A changed cluster is built anew.
    let changed = cluster(&[addr(&web)], "    connect_timeout: 3s\n");
    let config = weft_config::Config::from_str(&changed, "test.yaml", None).unwrap();
    p.running().reload(&config).unwrap();
    assert_eq!(c.get(p.addr, "/").await.status, 200);
    assert_eq!(web.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_endpoints_keep_the_connections_of_those_that_stay() {
    let (a, b) = (backend("a").start().await, backend("b").start().await);
    let reload = |p: &Proxy, endpoints: &[String]| {
        let yaml = cluster(endpoints, "    balancer: round-robin\n");
        let config = weft_config::Config::from_str(&yaml, "test.yaml", None).unwrap();
        p.running().reload(&config).unwrap();
    };
    let p = proxy(&cluster(&[addr(&a)], "    balancer: round-robin\n"))
        .start()
        .await;
    let c = client();
    assert_eq!(c.get(p.addr, "/").await.status, 200);
    // A second endpoint joins: the first keeps its pooled connection.
    reload(&p, &[addr(&a), addr(&b)]);
    for _ in 0..10 {
        assert_eq!(c.get(p.addr, "/").await.status, 200);
    }
    assert_eq!((a.requests(), b.requests()), (6, 5));
    assert_eq!(a.connections(), 1, "a's connection survived the change");
    // The first leaves: everything goes to the second, on its pooled connection.
    reload(&p, &[addr(&b)]);
    for _ in 0..4 {
        assert_eq!(c.get(p.addr, "/").await.status, 200);
    }
    assert_eq!((a.requests(), b.requests()), (6, 9));
    assert_eq!(b.connections(), 1);
}
