//! Push-to-live: how long from `PUT /v1/filters/NAME` until every proxy serves the new
//! version, and whether any request fails meanwhile.
//!
//! Usage: `push-live WEFT_BINARY MODULE.wasm [PROXIES] [SUBSCRIBERS] [PUSHES]`.
//!
//! - A `weft config-server` process, and PROXIES real `weft proxy --config-server`
//!   processes, each with its own compile cache. Every push is a module never seen
//!   before (MODULE with a custom section holding the push number), so each proxy
//!   compiles it, as a real new filter version would make it.
//! - SUBSCRIBERS lightweight subscribers in this process: real gRPC streams that
//!   receive each snapshot with its module, check its sha256 and ACK. They stand for
//!   proxies that would not fit on the machine as processes.
//! - Eight closed-loop HTTP clients run through the first two proxies the whole time.
//!
//! Prints a markdown table: per-proxy push-to-live p50/p99/max (until that proxy's
//! ACK), per-push time until every proxy is live, and failed requests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use weft_api::proxy_message::Kind;

const LIMIT: Duration = Duration::from_secs(120);

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Http = Client<HttpConnector, Full<Bytes>>;

async fn call(
    http: &Http,
    method: &str,
    url: &str,
    token: &str,
    body: Bytes,
) -> (u16, serde_json::Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(body))
        .expect("valid request");
    let resp = http.request(req).await.expect("config server answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// `GET /v1/proxies`: every proxy and the version it applied.
async fn proxy_status(http: &Http, url: &str, token: &str) -> serde_json::Value {
    call(
        http,
        "GET",
        &format!("{url}/v1/proxies"),
        token,
        Bytes::new(),
    )
    .await
    .1
}

/// MODULE with a custom section naming push `n`: same behaviour, new sha256.
fn variant(module: &[u8], n: u64) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"weft-bench-push";
    let payload = n.to_le_bytes();
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(&payload);
    let mut out = module.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// Spawn and return the first stderr/stdout line containing `marker`.
fn spawn_until(mut cmd: Command, marker: &str, stdout: bool) -> (Kill, String) {
    if stdout {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn");
    let pipe: Box<dyn std::io::Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("piped"))
    } else {
        Box::new(child.stderr.take().expect("piped"))
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if !sent && line.contains(&marker) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    let line = rx.recv_timeout(LIMIT).expect("the process starts");
    (Kill(child), line)
}

fn after<'a>(line: &'a str, prefix: &str) -> &'a str {
    line.split(prefix)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address in line")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A lightweight subscriber: a real stream, a sha256 check per module, an ACK.
async fn subscriber(
    url: String,
    token: String,
    node: String,
    received: Arc<Mutex<HashMap<u64, Vec<Instant>>>>,
) {
    let mut client = weft_api::ControlClient::connect(url)
        .await
        .expect("connect")
        .max_decoding_message_size(weft_api::MAX_MESSAGE_SIZE);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = weft_api::Hello {
        instance: format!("bench-subscriber-{node}"),
        node,
        service: "web".into(),
        ..Default::default()
    };
    tx.send(weft_api::ProxyMessage {
        kind: Some(Kind::Hello(hello)),
    })
    .await
    .expect("send hello");
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        weft_api::bearer(&token).expect("the proxy token is ASCII"),
    );
    let mut stream = client
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner();
    let mut have: Vec<String> = Vec::new();
    while let Ok(Some(snapshot)) = stream.message().await {
        for m in &snapshot.modules {
            assert_eq!(hex::encode(Sha256::digest(&m.wasm)), m.sha256);
            have.push(m.sha256.clone());
        }
        received
            .lock()
            .expect("not poisoned")
            .entry(snapshot.version)
            .or_default()
            .push(Instant::now());
        let ack = weft_api::Ack {
            version: snapshot.version,
            listeners: Vec::new(),
            modules: have.clone(),
            ..Default::default()
        };
        if tx
            .send(weft_api::ProxyMessage {
                kind: Some(Kind::Ack(ack)),
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: push-live WEFT_BINARY MODULE.wasm [PROXIES] [SUBSCRIBERS] [PUSHES]");
        std::process::exit(2);
    }
    let weft = &args[1];
    let module = std::fs::read(&args[2]).expect("read the module");
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (proxies, subscribers, pushes) = (arg(3, 10) as usize, arg(4, 100) as usize, arg(5, 20));
    let dir = std::env::temp_dir().join(format!("weft-push-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // A backend for the load.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend_addr = backend.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = backend.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });

    let mut cmd = Command::new(weft);
    cmd.args(["config-server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("server"))
        .env("WEFT_CACHE_DIR", dir.join("server-cache"))
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_PROXY_TOKEN");
    let (_server, line) = spawn_until(cmd, "weft config server on http://", true);
    let url = format!("http://{}", after(&line, "http://"));
    let token = std::fs::read_to_string(dir.join("server/token"))
        .expect("token")
        .trim()
        .to_owned();
    let proxy_token_file = dir.join("server/proxy-token");
    let proxy_token = std::fs::read_to_string(&proxy_token_file)
        .expect("proxy token")
        .trim()
        .to_owned();
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let (status, _) = call(
        &http,
        "PUT",
        &format!("{url}/v1/filters/hello"),
        &token,
        variant(&module, 0).into(),
    )
    .await;
    assert!(status < 300, "first push: {status}");
    let mesh = format!(
        "clusters:\n  - name: web\n    endpoints: [\"{backend_addr}\"]\nproxies:\n  - select: {{ service: web }}\n    listeners:\n      - name: inbound\n        address: 127.0.0.1:0\n        default_cluster: web\n        filters:\n          - name: hello\n            module: filter:hello\n            config: {{ greeting: hi }}\n"
    );
    let (status, v) = call(
        &http,
        "PUT",
        &format!("{url}/v1/mesh?file=bench.yaml"),
        &token,
        mesh.into(),
    )
    .await;
    assert!(status < 300, "apply: {status} {v}");

    let mut procs = Vec::new();
    let mut admins = Vec::new();
    for i in 0..proxies {
        let mut cmd = Command::new(weft);
        cmd.args(["proxy", "--proxy-token-file"])
            .arg(&proxy_token_file)
            .args([
                "--config-server",
                &url,
                "--node",
                &format!("proxy-{i}"),
                "--service",
                "web",
                "--admin",
                "127.0.0.1:0",
                "--state-dir",
            ])
            .arg(dir.join(format!("proxy-{i}")))
            .env("WEFT_CACHE_DIR", dir.join(format!("cache-{i}")))
            .env("RUST_LOG", "warn,weft_proxy=info");
        let (child, line) = spawn_until(cmd, "admin listening", false);
        admins.push(
            after(&line, "addr=")
                .parse::<SocketAddr>()
                .expect("admin address"),
        );
        procs.push(child);
    }
    let received: Arc<Mutex<HashMap<u64, Vec<Instant>>>> = Arc::default();
    for i in 0..subscribers {
        tokio::spawn(subscriber(
            url.clone(),
            proxy_token.clone(),
            format!("light-{i}"),
            received.clone(),
        ));
    }

    // Wait until every proxy serves the current version.
    let applied = |v: &serde_json::Value| -> HashMap<String, u64> {
        v["proxies"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["node"].as_str().is_some_and(|n| n.starts_with("proxy-")))
                    .filter_map(|p| Some((p["node"].as_str()?.to_owned(), p["applied"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let start = Instant::now();
    loop {
        let v = proxy_status(&http, &url, &token).await;
        let current = v["version"].as_u64().unwrap_or(0);
        let a = applied(&v);
        if a.len() == proxies && a.values().all(|&x| x == current) {
            break;
        }
        assert!(start.elapsed() < LIMIT, "proxies did not start: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut targets = Vec::new();
    for admin in admins.iter().take(2) {
        let (_, v) = call(
            &http,
            "GET",
            &format!("http://{admin}/listeners"),
            "",
            Bytes::new(),
        )
        .await;
        targets.push(
            v["inbound"]
                .as_str()
                .expect("inbound listener")
                .parse::<SocketAddr>()
                .expect("address"),
        );
    }

    // Load through two proxies for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for i in 0..8 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let target = targets[i % targets.len()];
        load.push(tokio::spawn(async move {
            let client: Http = Client::builder(TokioExecutor::new()).build_http();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(format!("http://{target}/"))
                    .body(Full::new(Bytes::new()))
                    .expect("valid");
                let good = match client.request(req).await {
                    Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let mut per_proxy = Vec::new();
    let mut per_light = Vec::new();
    let mut all_live = Vec::new();
    let mut refused = std::collections::HashSet::new();
    for n in 1..=pushes {
        let bytes = Bytes::from(variant(&module, n));
        let t0 = Instant::now();
        let (status, v) = call(
            &http,
            "PUT",
            &format!("{url}/v1/filters/hello"),
            &token,
            bytes,
        )
        .await;
        assert!(status < 300, "push {n}: {status} {v}");
        let version = v["version"].as_u64().expect("a version");
        let mut live: HashMap<String, f64> = HashMap::new();
        loop {
            let v = proxy_status(&http, &url, &token).await;
            let elapsed = t0.elapsed().as_secs_f64() * 1e3;
            for (node, applied) in applied(&v) {
                if applied >= version {
                    live.entry(node).or_insert(elapsed);
                }
            }
            for p in v["proxies"].as_array().into_iter().flatten() {
                let node = p["node"].as_str().unwrap_or_default();
                if node.starts_with("proxy-")
                    && p["last"]["result"] == "nack"
                    && p["last"]["version"].as_u64() >= Some(version)
                    && refused.insert((node.to_owned(), version))
                {
                    eprintln!("{node} refused version {version}: {}", p["last"]["error"]);
                }
            }
            let lights = received
                .lock()
                .expect("not poisoned")
                .get(&version)
                .map_or(0, Vec::len);
            let settled = live.len() + refused.iter().filter(|r| r.1 == version).count();
            if settled >= proxies && lights == subscribers {
                break;
            }
            assert!(t0.elapsed() < LIMIT, "push {n} not live everywhere: {v}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let lights: Vec<f64> = received
            .lock()
            .expect("not poisoned")
            .get(&version)
            .into_iter()
            .flatten()
            .map(|t| t.duration_since(t0).as_secs_f64() * 1e3)
            .collect();
        let worst = live
            .values()
            .copied()
            .chain(lights.iter().copied())
            .fold(0.0, f64::max);
        all_live.push(worst);
        per_proxy.extend(live.into_values());
        per_light.extend(lights);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);

    let row = |name: &str, v: &mut Vec<f64>| {
        if v.is_empty() {
            return;
        }
        v.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(0.0)
        );
    };
    println!(
        "\nPush-to-live, {pushes} pushes of a new module version (ms from the push request):\n"
    );
    println!("| what | samples | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    row(
        &format!("each of {proxies} proxies (processes) serving it"),
        &mut per_proxy,
    );
    row(
        &format!("each of {subscribers} lightweight subscribers ACKing it"),
        &mut per_light,
    );
    row(
        &format!("all {} live", proxies + subscribers),
        &mut all_live,
    );
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "\nRequests through two of the proxies during the {pushes} swaps: {}, failed: {failed}. \
         Versions refused (NACK) by a proxy: {}.",
        ok + failed,
        refused.len()
    );
}
