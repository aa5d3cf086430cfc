//! The control plane as operators run it: a real `weft config-server`, real `weft
//! proxy --config-server` processes, the real `weft push/apply/status/rollback`
//! commands, and HTTP load through the proxies while filters are swapped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use weft_testkit::{ANY_PORT, LIMIT, TempDir, eventually, listener, output};
use weft_tests::{backend, guests};

mod support;

use support::plane::*;
use support::{admin_get, weft};

/// The mesh of these tests: every `web` proxy in zone a gets an `inbound` listener
/// with the pushed `tag` filter in front of the backend.
fn mesh(backend: SocketAddr, extra: &str) -> String {
    format!(
        "clusters:
  - name: web
    endpoints: [\"{backend}\"]
proxies:
  - select: {{ service: web, labels: {{ zone: a }} }}
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: web
        filters:
          - name: tag
            module: filter:tag
{extra}"
    )
}

/// Requests in a loop from `clients` tasks over `targets`, until `stop`; returns
/// (failures with reasons, the tags seen, how many requests).
async fn load(
    targets: Vec<SocketAddr>,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<String>, BTreeMap<String, usize>, usize) {
    let mut tasks = Vec::new();
    for i in 0..clients {
        let target = targets[i % targets.len()];
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut failures = Vec::new();
            let mut tags = BTreeMap::new();
            let mut count = 0;
            while !stop.load(Ordering::Relaxed) {
                count += 1;
                let req = http::Request::get(format!("http://{target}/load"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match tokio::time::timeout(LIMIT, client.request(req)).await {
                    Ok(Ok(resp)) => {
                        let status = resp.status();
                        let tag = resp
                            .headers()
                            .get("x-echo-tag")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_owned();
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                        if status != 200 || body.is_err() {
                            failures.push(format!("{status} {body:?}"));
                        }
                        *tags.entry(tag).or_insert(0) += 1;
                    }
                    Ok(Err(e)) => failures.push(format!("transport: {e:?}")),
                    Err(_) => failures.push("no answer within the limit".into()),
                }
            }
            (failures, tags, count)
        }));
    }
    let mut all = (Vec::new(), BTreeMap::new(), 0);
    for t in tasks {
        let (f, tags, n) = t.await.unwrap();
        all.0.extend(f);
        for (k, v) in tags {
            *all.1.entry(k).or_insert(0) += v;
        }
        all.2 += n;
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_fail_no_request_and_free_old_versions() {
    let dir = TempDir::new();
    let web = backend("web").start().await;
    let server = config_server(&dir.0.join("server"), ANY_PORT);
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("created the API token")),
        "the first start prints the new token: {:?}",
        server.banner
    );
    // A filter first, then the mesh that uses it.
    let out = server.cli_ok(&["push", guests::TAG_ONE, "--name", "tag"]);
    assert!(out.contains("no mesh config applied yet"), "{out}");
    let mesh_file = write(&dir.0, "mesh.yaml", &mesh(web.addr, ""));
    let mut version = server.apply(&mesh_file);

    // One proxy on each scheduler: single-threaded, and two threads.
    let a = proxy(
        &server.url,
        &server.proxy_token,
        "web-a",
        &dir.0.join("a"),
        1,
    );
    let b = proxy(
        &server.url,
        &server.proxy_token,
        "web-b",
        &dir.0.join("b"),
        2,
    );
    let targets = vec![a.inbound(), b.inbound()];
    server.converged(&["web-a", "web-b"], version);

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(targets.clone(), 8, stop.clone()));
    let mut rss = Vec::new();
    for i in 0..20 {
        let module = if i % 2 == 0 {
            guests::TAG_TWO
        } else {
            guests::TAG_ONE
        };
        let pushed = tokio::task::block_in_place(|| server.push(module, "tag"));
        assert!(pushed > version, "every push is a new version");
        version = pushed;
        tokio::task::block_in_place(|| server.converged(&["web-a", "web-b"], version));
        if i == 4 || i == 19 {
            rss.push((a.rss_kib(), b.rss_kib()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (failures, tags, requests) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let seen: BTreeSet<_> = tags.keys().map(String::as_str).collect();
    assert_eq!(
        seen,
        BTreeSet::from(["one", "two"]),
        "every response came from version one or two of the filter: {tags:?}"
    );
    // The last push was version one again: new requests see it.
    let client = weft_tests::client();
    for t in &targets {
        assert_eq!(client.get(*t, "/").await.header("x-echo-tag"), Some("one"));
    }
    // Old versions are freed: one compiled component live per proxy, and a bounded
    // number of instances.
    for p in [&a, &b] {
        assert_eq!(p.metric("weft_engine_components"), 1.0, "proxy {}", p.pid());
        assert!(
            p.metric("weft_engine_instances") <= 8.0,
            "proxy {}",
            p.pid()
        );
    }
    let (early, late) = (rss[0], rss[1]);
    for (before, after) in [(early.0, late.0), (early.1, late.1)] {
        assert!(
            after < before + 8 * 1024,
            "RSS grew from {before} KiB after 5 swaps to {after} KiB after 20"
        );
    }
    eprintln!("{requests} requests, tags {tags:?}, RSS (KiB) after 5 and 20 swaps: {rss:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_outlive_the_server_and_start_from_their_disk_cache() {
    let dir = TempDir::new();
    let web = backend("web").start().await;
    let data = dir.0.join("server");
    let server = config_server(&data, ANY_PORT);
    server.cli_ok(&["push", guests::TAG_ONE, "--name", "tag"]);
    let mesh_file = write(&dir.0, "mesh.yaml", &mesh(web.addr, ""));
    server.apply(&mesh_file);
    let version = server.push(guests::TAG_TWO, "tag");
    let state = dir.0.join("a");
    let a = proxy(&server.url, &server.proxy_token, "web-a", &state, 2);
    let inbound = a.inbound();
    server.converged(&["web-a"], version);
    let client = weft_tests::client();
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("two")
    );

    // The server dies: the proxy keeps serving.
    let (addr, url, token) = (server.addr, server.url.clone(), server.proxy_token.clone());
    drop(server);
    assert_eq!(client.get(inbound, "/").await.status, 200);

    // A proxy started while the server is down serves from its disk cache.
    drop(a);
    let a = proxy(&url, &token, "web-a", &state, 1);
    let inbound = a.inbound();
    let reply = client.get(inbound, "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-echo-tag"), Some("two"));

    // The server comes back on the same address and data: every filter and version
    // is there, the token is not printed again, and the proxy reconnects.
    let server = config_server(&data, &addr.to_string());
    assert!(
        !server.banner.iter().any(|l| l.contains("token")),
        "{:?}",
        server.banner
    );
    let status = server.proxies();
    assert_eq!(status["version"], version);
    server.converged(&["web-a"], version);
    // And it converges on what is pushed next.
    let next = server.push(guests::TAG_ONE, "tag");
    server.converged(&["web-a"], next);
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("one")
    );
    // A rollback is a new version with the old content.
    let rolled = server.rollback(version);
    assert!(rolled > next, "{rolled}");
    server.converged(&["web-a"], rolled);
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("two")
    );
    // `weft status` says which module each proxy runs for the filter: the live one.
    let live = server.proxies()["filters"]["tag"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = server.cli_ok(&["status"]);
    assert!(
        status.contains(&format!("tag={}", &live[..12])) && !status.contains("not the live"),
        "{status}"
    );
    // Pushing the newer module again after the rollback makes it live again.
    let again = server.push(guests::TAG_ONE, "tag");
    assert!(again > rolled, "{again}");
    server.converged(&["web-a"], again);
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("one")
    );
    // The cached snapshot holds filter configs: only its owner may read it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("snapshot.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_are_refused_and_proxies_keep_their_last_good_snapshot() {
    let dir = TempDir::new();
    let web = backend("web").start().await;
    let server = config_server(&dir.0.join("server"), ANY_PORT);
    server.cli_ok(&["push", guests::TAG_ONE, "--name", "tag"]);
    let mesh_file = write(&dir.0, "mesh.yaml", &mesh(web.addr, ""));
    let version = server.apply(&mesh_file);
    let a = proxy(
        &server.url,
        &server.proxy_token,
        "web-a",
        &dir.0.join("a"),
        2,
    );
    let inbound = a.inbound();
    server.converged(&["web-a"], version);

    let not_wasm = write(&dir.0, "notes.wasm", "hello");
    let err = server.cli_err(&["push", &not_wasm, "--name", "tag"]);
    assert!(
        err.contains("400") && err.contains("not a WebAssembly"),
        "{err}"
    );
    let core = dir.0.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = server.cli_err(&["push", core.to_str().unwrap(), "--name", "tag"]);
    assert!(
        err.contains("400") && err.contains("core WebAssembly module"),
        "{err}"
    );
    let err = server.cli_err(&["push", guests::WRONG_WORLD, "--name", "tag"]);
    assert!(
        err.contains("422") && err.contains("not a Weft filter"),
        "{err}"
    );
    // The stamp filter refuses the tag filter's config (it needs a `name`).
    let err = server.cli_err(&["push", guests::STAMP, "--name", "tag"]);
    assert!(
        err.contains("422")
            && err.contains("proxies[0].listeners[0].filters[0]")
            && err.contains("rejected its config"),
        "{err}"
    );
    let broken = write(
        &dir.0,
        "broken.yaml",
        &mesh(web.addr, "").replace("default_cluster: web", "default_cluster: nowhere"),
    );
    let err = server.cli_err(&["apply", "-f", &broken]);
    assert!(
        err.contains("422")
            && err.contains("broken.yaml:9:26")
            && err.contains("proxies[0].listeners[0].default_cluster")
            && err.contains("nowhere"),
        "{err}"
    );
    // Writes need the token.
    let out = output(weft().args([
        "push",
        guests::TAG_TWO,
        "--name",
        "tag",
        "--server",
        &server.url,
        "--token",
        "wrong",
    ]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = output(
        weft()
            .args([
                "push",
                guests::TAG_TWO,
                "--name",
                "tag",
                "--server",
                &server.url,
            ])
            .env("XDG_DATA_HOME", dir.0.join("elsewhere")),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("--token"), "{err}");
    // Nothing changed: same version, same filter.
    let status = server.proxies();
    assert_eq!(status["version"], version, "{status:#}");
    let client = weft_tests::client();
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("one")
    );

    // A snapshot the server cannot check fully fails on the proxy: its listener's
    // address is taken there. The proxy says NACK, with the reason, and keeps serving.
    let taken = listener();
    let extra = format!(
        "      - name: admin-mirror\n        address: {}\n        default_cluster: web\n",
        taken.local_addr().unwrap()
    );
    let moved = write(&dir.0, "taken.yaml", &mesh(web.addr, &extra));
    let refused = server.apply(&moved);
    let nack = eventually(&format!("an answer to version {refused}"), || {
        let status = server.proxies();
        let p = status["proxies"][0].clone();
        if p["last"]["version"] == refused {
            Ok(p)
        } else {
            Err(format!("{status:#}"))
        }
    });
    assert_eq!(nack["last"]["result"], "nack", "{nack:#}");
    assert_eq!(nack["applied"], version, "{nack:#}");
    let reason = nack["last"]["error"].as_str().unwrap();
    assert!(
        reason.contains("proxies[0].listeners[1].address") && reason.contains("cannot listen"),
        "{reason}"
    );
    // A proxy that refuses the current version makes `weft status` fail.
    let out = server.cli(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("NACK: web-a refused version") && table.contains("cannot listen"),
        "{table}"
    );
    assert_eq!(
        client.get(inbound, "/").await.header("x-echo-tag"),
        Some("one")
    );
}

/// Prometheus' `histogram_quantile` over one series' cumulative buckets, as
/// (upper bound, count) sorted by bound.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let total = buckets.last().unwrap().1;
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return below.0;
            }
            return below.0 + (le - below.0) * (rank - below.1) / (count - below.1);
        }
        below = (le, count);
    }
    unreachable!("+Inf holds every observation")
}

/// The mesh of the `weft stat` test: a banking sidecar routing `/buy` and `/quote`
/// to their backends, and, once its address is known, a trading sidecar calling it.
fn bank_mesh(buy: SocketAddr, quote: SocketAddr, callee: Option<SocketAddr>) -> String {
    let mut mesh = format!(
        r#"clusters:
  - name: buy
    endpoints: ["{buy}"]
  - name: quote
    endpoints: ["{quote}"]
proxies:
  - select: {{ service: banking }}
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: buy
        filters:
          - name: telemetry
            module: builtin:telemetry
            config: {{ reporter: destination, workload: banking, service: banking }}
          - name: router
            module: builtin:router
            config:
              routes:
                - name: buy
                  match: {{ path: {{ prefix: /buy }} }}
                  cluster: buy
                - name: quote
                  match: {{ path: {{ prefix: /quote }} }}
                  cluster: quote
"#
    );
    if let Some(callee) = callee {
        mesh = mesh.replacen(
            "proxies:",
            &format!("  - name: banking\n    endpoints: [\"{callee}\"]\nproxies:"),
            1,
        );
        mesh.push_str(
            r#"  - select: { service: trading }
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: banking
        filters:
          - name: telemetry
            module: builtin:telemetry
            metrics: { prefix: istio_ }
            config: { reporter: source, workload: trading, service: banking, duration: milliseconds }
"#,
        );
    }
    mesh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_stat_shows_the_load_each_service_and_route_got() {
    let dir = TempDir::new();
    // /buy: the first 2 of 10 fail. /quote: the first 3 of 5 take 60 ms.
    let buy = backend("buy").fail_first(2, 503).start().await;
    let quote = backend("quote").slow_first(3, 60).start().await;
    let server = config_server_with(
        &dir.0.join("server"),
        ANY_PORT,
        &["--report-interval", "100ms"],
    );
    let mesh_file = write(&dir.0, "mesh.yaml", &bank_mesh(buy.addr, quote.addr, None));
    server.apply(&mesh_file);
    let sidecar = |node: &str, service: &str| {
        let state = dir.0.join(service);
        proxy_of(&server.url, &server.proxy_token, node, service, &state, 1)
    };
    let callee = sidecar("banking-1", "banking");
    let callee_addr = callee.inbound();
    let mesh_file = write(
        &dir.0,
        "mesh.yaml",
        &bank_mesh(buy.addr, quote.addr, Some(callee_addr)),
    );
    let version = server.apply(&mesh_file);
    let caller = sidecar("trading-1", "trading");
    let caller_addr = caller.inbound();
    server.converged(&["banking-1", "trading-1"], version);

    // Nothing has been sent yet: nothing to show.
    let empty = server.cli_ok(&["stat", "--once"]);
    assert!(
        empty.contains("no traffic reported in the window"),
        "{empty}"
    );

    let client = weft_tests::client();
    let mut sent = BTreeMap::new();
    for (path, n) in [("/buy/order", 10), ("/quote/eur", 5)] {
        for _ in 0..n {
            let status = client.get(caller_addr, path).await.status.as_u16();
            *sent.entry((path, status)).or_insert(0) += 1;
        }
    }
    assert_eq!(
        sent,
        BTreeMap::from([
            (("/buy/order", 200), 8),
            (("/buy/order", 503), 2),
            (("/quote/eur", 200), 5)
        ])
    );

    // The proxies report every 100 ms: wait until all 15 are in.
    let stat = |reporter: &str| -> Value {
        let out = server.cli_ok(&["stat", "--json", "--window", "2m", "--reporter", reporter]);
        serde_json::from_str(&out).unwrap()
    };
    let all_in = |reporter: &str| {
        eventually("all 15 requests reported", || {
            let view = stat(reporter);
            if view["services"][0]["requests"] == 15 {
                Ok(view)
            } else {
                Err(format!("{view:#}"))
            }
        })
    };
    let view = all_in("auto");
    // The callee's side is shown: each request once, not once per hop.
    let services = view["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{view:#}");
    let bank = &services[0];
    assert_eq!(bank["service"], "banking");
    assert_eq!(bank["reporter"], "destination");
    assert_eq!(
        (bank["requests"].as_u64(), bank["errors"].as_u64()),
        (Some(15), Some(2))
    );
    assert_close(&bank["success_rate"], 13.0 / 15.0);
    assert_eq!(bank["proxies"], 1);
    let covered = view["covered_seconds"].as_f64().unwrap();
    assert!((1.0..=120.0).contains(&covered), "{covered}");
    assert_close(&bank["rps"], 15.0 / covered);
    let routes: BTreeMap<String, &Value> = bank["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["route"].as_str().unwrap().to_owned(), r))
        .collect();
    assert_eq!(
        routes.keys().collect::<Vec<_>>(),
        ["buy", "quote"],
        "{view:#}"
    );
    let (b, q) = (routes["buy"], routes["quote"]);
    assert_eq!(
        (b["requests"].as_u64(), b["errors"].as_u64()),
        (Some(10), Some(2))
    );
    assert_close(&b["success_rate"], 0.8);
    assert_eq!(
        (q["requests"].as_u64(), q["errors"].as_u64()),
        (Some(5), Some(0))
    );
    assert_close(&q["success_rate"], 1.0);

    // The latency is what the callee measured: the quantiles of its own histogram,
    // read from its /metrics. Three of five quotes took at least 60 ms, so the median
    // lies in a bucket above 50 ms.
    let (_, text) = admin_get(callee.admin, "/metrics");
    let all = weft_tests::samples(&text);
    for (route, line) in [("buy", b), ("quote", q)] {
        let mut buckets: Vec<(f64, f64)> = weft_tests::select(
            &all,
            "weft_filter_request_duration_seconds_bucket",
            &[("route", route)],
        )
        .iter()
        .map(|s| (s.labels["le"].parse::<f64>().unwrap() * 1000.0, s.value))
        .fold(BTreeMap::<u64, (f64, f64)>::new(), |mut m, (le, n)| {
            // Summed over response codes.
            let e = m.entry(le.to_bits()).or_insert((le, 0.0));
            e.1 += n;
            m
        })
        .into_values()
        .collect();
        buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
        for q in ["p50", "p95", "p99"] {
            let want = histogram_quantile(q[1..].parse::<f64>().unwrap() / 100.0, &buckets);
            let got = line["latency_ms"][q].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-6,
                "{route} {q}: {got} vs {want} from {buckets:?}"
            );
        }
    }
    assert!(q["latency_ms"]["p50"].as_f64().unwrap() >= 50.0, "{q:#}");

    // The caller's side counted the same requests, without routes of its own.
    let source = all_in("source");
    let bank = &source["services"][0];
    assert_eq!(
        (
            bank["reporter"].as_str(),
            bank["requests"].as_u64(),
            bank["errors"].as_u64()
        ),
        (Some("source"), Some(15), Some(2)),
        "{source:#}"
    );
    assert_eq!(bank["routes"][0]["route"], "unknown", "{source:#}");

    // The table: one line for the service, one per route.
    let table = server.cli_ok(&["stat", "--window", "2m"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[1],
        [
            "SERVICE", "ROUTE", "REPORTER", "REQUESTS", "SUCCESS", "RPS", "P50", "P95", "P99",
            "PROXIES"
        ],
        "{table}"
    );
    assert_eq!(
        rows[2][..5],
        ["banking", "*", "destination", "15", "86.67%"],
        "{table}"
    );
    assert_eq!(
        rows[3][..5],
        ["banking", "buy", "destination", "10", "80.00%"],
        "{table}"
    );
    assert_eq!(
        rows[4][..5],
        ["banking", "quote", "destination", "5", "100.00%"],
        "{table}"
    );
    assert_eq!(rows[4][9], "1", "{table}");

    // Bad questions are answered with what is wrong.
    let err = server.cli_err(&["stat", "--window", "1h"]);
    assert!(err.contains("400") && err.contains("1s to 120s"), "{err}");
}

/// JSON numbers are compared within a rounding error: parsing one back need not
/// give the very float that was printed.
#[track_caller]
fn assert_close(got: &Value, want: f64) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{got} is not a number"));
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{got} vs {want}"
    );
}
