//! The examples' stories, run from the examples' own files so that they cannot rot:
//! `examples/trading-banking` and `examples/grpc`. Each test applies the example's
//! `mesh.yaml` (its 127.0.0.1 addresses replaced by free ports) to a real config
//! server, starts sidecars that know nothing but that server (proxies and agents,
//! certified by its CA), runs the example's Python apps (and its OTLP collector), and
//! checks what the example's README shows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use weft_testkit::{ANY_PORT, Log, Process, TempDir, eventually_async};
use weft_tests::control::{api, apply, config_server, free_port, sidecar};
use weft_tests::mesh::{Issued, get_over, mesh_client_config, tls_connect};
use weft_tests::*;

const TRADING: &str = "spiffe://bank.example/ns/default/sa/trading";
const CLIENT: &str = "spiffe://example.org/ns/default/sa/client";

/// A file of an example.
fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path)
}

/// Debian's Python, where `apt-get install python3-grpcio` puts its packages.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// The example's mesh file with each of its 127.0.0.1 addresses replaced as `to`
/// says, in one pass; every address of the file must be named, and every one named
/// must be in the file, so the test and the example cannot drift apart.
fn mesh(file: &str, to: &[(&str, SocketAddr)]) -> String {
    let text = std::fs::read_to_string(example(file)).expect("the example's mesh file");
    let map: BTreeMap<&str, SocketAddr> = to.iter().copied().collect();
    let (mut out, mut rest) = (String::new(), text.as_str());
    while let Some(at) = rest.find("127.0.0.1:") {
        let digits = rest[at + 10..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(rest.len(), |n| at + 10 + n);
        let addr = &rest[at..digits];
        let new = map
            .get(addr)
            .unwrap_or_else(|| panic!("{file}: the test gives no address for {addr}"));
        out.push_str(&rest[..at]);
        out.push_str(&new.to_string());
        rest = &rest[digits..];
    }
    out.push_str(rest);
    for from in map.keys() {
        assert!(text.contains(from), "{file} no longer has {from}");
    }
    out
}

/// A Python script of an example, started with `args`; its standard output and
/// error, read as they come.
fn script(file: &str, args: &[&str], env: &[(&str, &str)]) -> (Process, Log, Log) {
    let mut cmd = Command::new(python());
    cmd.arg(example(file))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut process = Process::start(&mut cmd);
    let (out, err) = (process.stdout(), process.stderr());
    (process, out, err)
}

/// The address in a line that ends with it (`... listening on 127.0.0.1:PORT`).
fn listening(log: &Log) -> SocketAddr {
    let line = log.wait_for("listening on");
    let addr = line.rsplit(' ').next().unwrap_or_default();
    addr.parse()
        .unwrap_or_else(|e| panic!("{line:?}: not an address: {e}"))
}

/// Once each proxy serves `listener` and holds its workload certificate.
async fn ready(sidecars: &[(&weft_proxy::RunningProxy, &str)]) {
    eventually_async("the sidecars' listeners and certificates", async || {
        sidecars
            .iter()
            .all(|(p, l)| p.listener_addr(l).is_some() && p.identity().not_after().is_some())
    })
    .await;
}

async fn metrics(proxy: &weft_proxy::RunningProxy) -> Vec<Sample> {
    let admin = proxy.admin_addr().expect("an admin listener");
    let reply = client().get(admin, "/metrics").await;
    assert_eq!(reply.status, 200);
    samples(&reply.text())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The spans the collector printed of `trace`: trading's server and client spans,
/// and banking's, once there is one of banking's per attempt trading's client span
/// counts (`weft.attempts`).
async fn spans_of(collector: &Log, trace: &str) -> Vec<Value> {
    eventually_async(&format!("every span of trace {trace}"), async || {
        let spans: Vec<Value> = (collector.so_far().iter())
            .filter(|l| l.starts_with('{') && l.contains(trace))
            .map(|l| json(l))
            .filter(|s| s["trace_id"] == trace)
            .collect();
        let count = |service: &str, kind: &str| {
            (spans.iter())
                .filter(|s| s["service"] == service && s["kind"] == kind)
                .count()
        };
        let attempts = (spans.iter())
            .find(|s| s["service"] == "trading" && s["kind"] == "client")
            .and_then(|s| s["attributes"]["weft.attempts"].as_str()?.parse().ok());
        match attempts {
            Some(n) if count("trading", "server") == 1 && count("banking", "server") >= n => {
                Ok(spans)
            }
            _ => Err(format!("{spans:#?}")),
        }
    })
    .await
}

/// Place BUY orders until one succeeds whose call to Banking the trading sidecar
/// retried (a fifth of Banking's calls fail by the fault filter, so a few orders
/// do); its answer.
async fn a_retried_order(inbound: SocketAddr, trading: &weft_proxy::RunningProxy) -> Value {
    let retries = async || {
        total(
            &metrics(trading).await,
            "weft_cluster_retries_total",
            &[("cluster", "banking")],
        )
    };
    let c = client();
    let mut seen = Vec::new();
    for i in 0..60 {
        let before = retries().await;
        let body = format!(
            r#"{{"account": "a{i}", "side": "BUY", "symbol": "WEFT", "quantity": 2, "price": 10}}"#
        );
        let headers = [("content-type", "application/json")];
        let reply = c
            .send(inbound, "POST", "/orders", &headers, body.into())
            .await;
        if reply.status == 201 && retries().await > before {
            return json(&reply.text());
        }
        seen.push((reply.status, reply.text()));
    }
    panic!("no order among 60 was retried and filled: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trading_and_banking_one_order_across_the_mesh() {
    let (_collector, spans, collector_err) =
        script("trading-banking/collector.py", &["--listen", ANY_PORT], &[]);
    let collector = listening(&collector_err);
    let (_banking_app, banking_out, _) =
        script("trading-banking/banking.py", &["--listen", ANY_PORT], &[]);
    let outbound = free_port();
    let proxy = format!("http://{outbound}");
    let (_trading_app, trading_out, _) = script(
        "trading-banking/trading.py",
        &["--listen", ANY_PORT],
        &[("http_proxy", &proxy), ("no_proxy", "")],
    );
    let (trading_in, banking_in) = (free_port(), free_port());
    let yaml = mesh(
        "trading-banking/mesh.yaml",
        &[
            ("127.0.0.1:4317", collector),
            ("127.0.0.1:8001", listening(&trading_out)),
            ("127.0.0.1:8002", listening(&banking_out)),
            ("127.0.0.1:15001", trading_in),
            ("127.0.0.1:15101", outbound),
            ("127.0.0.1:15002", banking_in),
        ],
    );
    let data = TempDir::new();
    let server = config_server(&data.0)
        .report_interval(Duration::from_secs(1))
        .start()
        .await;
    apply(server.addr(), &yaml).await;
    let (state_t, state_b) = (TempDir::new(), TempDir::new());
    let (trading, _agent_t) = sidecar(server.addr(), "trading", &state_t.0).await;
    let (banking, _agent_b) = sidecar(server.addr(), "banking", &state_b.0).await;
    ready(&[(&trading, "outbound"), (&banking, "inbound")]).await;
    // As the trading app calls Banking: its sidecar as its HTTP proxy.
    eventually_async("banking through trading's outbound listener", async || {
        let r = client()
            .get_with(outbound, "/healthz", &[("host", "banking")])
            .await;
        r.status == 200
    })
    .await;

    // A BUY order is filled; Banking saw Trading's identity, proven over mutual TLS.
    let order = a_retried_order(trading_in, &trading).await;
    assert_eq!(order["status"], "filled", "{order}");
    let caller = order["debit"]["caller"].as_str().unwrap_or_default();
    assert!(caller.ends_with(&format!(";URI={TRADING}")), "{order}");

    // One trace across every hop, banking's app included.
    let trace = order["trace_id"].as_str().expect("a trace id").to_owned();
    assert_eq!(order["debit"]["trace_id"], trace.as_str(), "banking's app");
    one_trace(&spans, &trace).await;
    refusals(&data.0, banking_in).await;
    stats_show(server.addr(), &["banking", "trading"]).await;
}

/// The spans of `trace` link every hop: trading's inbound (server) and outbound
/// (client) spans, and banking's, one per attempt (the fault's 503s, then the 200),
/// each a child of trading's client span.
async fn one_trace(collector: &Log, trace: &str) {
    let spans = spans_of(collector, trace).await;
    let of = |service: &str, kind: &str| -> Vec<&Value> {
        (spans.iter())
            .filter(|s| s["service"] == service && s["kind"] == kind)
            .collect()
    };
    let (inbound, outbound_span, mut at_banking) = (
        of("trading", "server"),
        of("trading", "client"),
        of("banking", "server"),
    );
    assert_eq!((inbound.len(), outbound_span.len()), (1, 1), "{spans:#?}");
    assert_eq!(outbound_span[0]["parent_span_id"], inbound[0]["span_id"]);
    assert!(
        inbound[0]["parent_span_id"] == "",
        "trading's sidecar began it"
    );
    at_banking.sort_by_key(|s| s["start_ns"].as_u64());
    // Each attempt as banking's sidecar answered it: the fault's 503s, then the app's 200.
    let answers: Vec<(&str, &str)> = (at_banking.iter())
        .map(|s| &s["attributes"])
        .filter_map(|a| {
            let code = a["http.response.status_code"].as_str()?;
            Some((code, a["weft.responder"].as_str()?))
        })
        .collect();
    assert!(answers.len() >= 2, "retried: {spans:#?}");
    let (last, before) = answers.split_last().expect("banking's spans");
    assert_eq!(*last, ("200", "upstream"), "{spans:#?}");
    assert!(
        before.iter().all(|a| *a == ("503", "filter:fault")),
        "{spans:#?}"
    );
    for s in &at_banking {
        assert_eq!(s["parent_span_id"], outbound_span[0]["span_id"], "{s}");
    }
}

/// Banking's sidecar refuses a caller that proves another identity of the same CA
/// (403, the policy's rule) and one that proves none (403, STRICT).
async fn refusals(data: &Path, banking: SocketAddr) {
    let ca = weft_config_server::ca::Ca::load(&data.join("ca.pem"), &data.join("ca-key.pem"))
        .expect("the server's CA");
    let id = "spiffe://bank.example/ns/default/sa/intruder";
    let made = (ca.issue_workload(id, &[], &[], Duration::from_secs(600)))
        .expect("a certificate for the intruder");
    let intruder = Issued {
        cert: made.issued.chain_pem,
        key: made.key_pem,
    };
    let config = mesh_client_config(ca.bundle_pem(), Some(&intruder), &[b"http/1.1"]);
    let mut tls = tls_connect(banking, config, "banking")
        .await
        .expect("the handshake: the intruder's certificate is of the mesh CA");
    let answer = get_over(&mut tls, "/accounts/42", "").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("caller not allowed"), "{answer}");
    let plain = client().get(banking, "/accounts/42").await;
    assert_eq!(plain.status, 403);
    assert!(
        plain.text().contains("mutual TLS required"),
        "{}",
        plain.text()
    );
}

/// `weft stat`'s source, the server's `/v1/stats`, lists these services.
async fn stats_show(server: SocketAddr, wanted: &[&str]) {
    eventually_async("weft stat to show every service", async || {
        let stats = json(&api(server, "GET", "/v1/stats?window=30s&reporter=auto", "").await);
        let services: Vec<&str> = (stats["services"].as_array().into_iter().flatten())
            .filter_map(|s| s["service"].as_str())
            .collect();
        if wanted.iter().all(|w| services.contains(w)) {
            Ok(())
        } else {
            Err(stats.to_string())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_cross_two_sidecars_over_mtls_and_unavailable_is_retried() {
    let (_greeter, greeter_out, _) = script(
        "grpc/greeter.py",
        &["server", "--listen", ANY_PORT, "--unavailable-every", "2"],
        &[],
    );
    let (outbound, inbound) = (free_port(), free_port());
    let yaml = mesh(
        "grpc/mesh.yaml",
        &[
            ("127.0.0.1:50051", listening(&greeter_out)),
            ("127.0.0.1:15151", outbound),
            ("127.0.0.1:15052", inbound),
        ],
    );
    let data = TempDir::new();
    let server = config_server(&data.0)
        .report_interval(Duration::from_secs(1))
        .start()
        .await;
    apply(server.addr(), &yaml).await;
    let (state_c, state_g) = (TempDir::new(), TempDir::new());
    let (client_side, _agent_c) = sidecar(server.addr(), "client", &state_c.0).await;
    let (greeter_side, _agent_g) = sidecar(server.addr(), "greeter", &state_g.0).await;
    ready(&[(&client_side, "outbound"), (&greeter_side, "inbound")]).await;

    // Three calls, each answered UNAVAILABLE once by the server and retried by the
    // client's sidecar: the client sees three answers, each naming it as the caller
    // its sidecar proved.
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(python());
        let target = outbound.to_string();
        cmd.arg(example("grpc/greeter.py"))
            .args(["client", "--target", &target, "--authority", "greeter"])
            .args(["--count", "3"]);
        output(&mut cmd)
    })
    .await
    .expect("the client ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Vec<Value> = (stdout.lines())
        .filter(|l| l.starts_with('{'))
        .map(json)
        .collect();
    assert_eq!(replies.len(), 3, "{stdout}");
    for r in &replies {
        let caller = r["caller"].as_str().unwrap_or_default();
        assert!(caller.ends_with(&format!(";URI={CLIENT}")), "{r}");
    }

    grpc_statuses_counted(&greeter_side, &client_side).await;
}

/// The gRPC status in the metrics: the greeter's sidecar saw each UNAVAILABLE and
/// each OK, over mutual TLS from the client; the client's sidecar retried three
/// times and its client got three OKs. (A request is counted once its response
/// has gone, which may be just after the client read it.)
async fn grpc_statuses_counted(
    greeter_side: &weft_proxy::RunningProxy,
    client_side: &weft_proxy::RunningProxy,
) {
    let mtls = [
        ("source_principal", CLIENT),
        ("connection_security_policy", "mutual_tls"),
    ];
    let with = |status: &'static str| {
        let mut l = mtls.to_vec();
        l.push(("grpc_response_status", status));
        l
    };
    let ok = [("reporter", "source"), ("grpc_response_status", "0")];
    let retries = [("cluster", "greeter")];
    eventually_async("every call counted by both sidecars", async || {
        let (at_greeter, at_client) = (metrics(greeter_side).await, metrics(client_side).await);
        let counts = [
            total(&at_greeter, "istio_requests_total", &with("14")),
            total(&at_greeter, "istio_requests_total", &with("0")),
            total(&at_client, "weft_cluster_retries_total", &retries),
            total(&at_client, "istio_requests_total", &ok),
        ];
        if counts == [3.0; 4] {
            Ok(())
        } else {
            Err(format!(
                "UNAVAILABLE, OK at the greeter; retries, OK at the client: {counts:?}"
            ))
        }
    })
    .await;
}
