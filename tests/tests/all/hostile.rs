//! What a hostile client, a hostile backend or a web page on the same machine tries
//! against the newer paths: an `h2c` upgrade that would tunnel past every filter, an
//! unasked 101, a Host that names nothing, headers the proxy owns, trace ids and
//! paths made to fool a log reader, an HTTP/1.0 backend, a rebound admin name.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_tests::*;

/// A backend that speaks h2c as RFC 7540 §3.2 describes it: a request with
/// `Upgrade: h2c` is answered 101 and the connection goes on as HTTP/2, where every
/// request is answered `secret <path>`. With `always`, it switches whatever was asked,
/// as a hostile upstream would. Anything else gets `plain <path>` over HTTP/1.1.
struct H2cBackend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl H2cBackend {
    async fn start(always: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_h2c(stream, always));
            }
        });
        Self { addr, task }
    }
}

impl Drop for H2cBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_h2c(mut stream: TcpStream, always: bool) {
    loop {
        let Some(head) = read_head(&mut stream).await else {
            return;
        };
        let lower = head.to_ascii_lowercase();
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        if always || lower.contains("\r\nupgrade: h2c") {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
                )
                .await;
            let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let body = format!("secret {}", req.uri().path());
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            return;
        }
        let body = format!("plain {path}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-saw-upgrade: {}\r\n\r\n{body}",
            body.len(),
            lower.contains("\r\nupgrade:")
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Read one request or response head (through the blank line), as text.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(LIMIT, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Read a response to its end by its content-length, on a connection that stays open.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let head = read_head(stream).await.expect("a response head");
    let body = read_body(stream, &head).await;
    (head, body)
}

/// Read the body a response head announced with its content-length.
async fn read_body(stream: &mut TcpStream, head: &str) -> String {
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut body))
        .await
        .expect("body in time")
        .expect("body");
    String::from_utf8_lossy(&body).into_owned()
}

/// A listener whose router passes only `/public`, in front of `backend`.
fn public_only(backend: SocketAddr, listener_extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
{listener_extra}
    filters:
      - name: router
        module: builtin:router
        config:
          routes:
            - match: {{ path: {{ prefix: /public }} }}
              cluster: web
clusters:
  - name: web
    endpoints: ["{backend}"]
"#
    )
}

const H2C_UPGRADE: &[u8] = b"GET /public HTTP/1.1\r\nhost: app.example\r\n\
    connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n\
    http2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_served_as_a_plain_request_and_never_tunnels_past_the_filters() {
    let backend = H2cBackend::start(false).await;
    let p = proxy(&public_only(backend.addr, "")).start().await;

    // The attack: ask for h2c on an allowed path, then send HTTP/2 for a path the
    // router refuses inside the tunnel a 101 would open.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(H2C_UPGRADE).await.unwrap();
    let head = read_head(&mut s).await.expect("an answer");
    if head.starts_with("HTTP/1.1 101") {
        let inside = tokio::time::timeout(Duration::from_secs(5), async {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                    .await
                    .ok()?;
            tokio::spawn(conn);
            let req = http::Request::builder()
                .uri("http://app.example/admin/secret")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = sender.send_request(req).await.ok()?;
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .ok()?;
            Some(String::from_utf8_lossy(&body.to_bytes()).into_owned())
        })
        .await;
        panic!("the proxy passed h2c; inside the tunnel /admin/secret got {inside:?}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-saw-upgrade: false"),
        "the backend saw an Upgrade: {head}"
    );
    assert_eq!(read_body(&mut s, &head).await, "plain /public");
    // HTTP/2 cleartext is the proxy's own to serve, through the router.
    let r = h2c_client().get(p.addr, "/admin/secret").await;
    assert_eq!(r.status, 404, "{}", r.text());

    // A plain request on the same connection is still served.
    s.write_all(b"GET /public/again HTTP/1.1\r\nhost: app.example\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "plain /public/again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_101_that_nobody_asked_for_is_a_502_not_a_tunnel() {
    let backend = H2cBackend::start(true).await;
    // Through the filter chain, and through the plain path of a listener without hooks.
    let filtered = proxy(&public_only(backend.addr, "")).start().await;
    let plain = proxy(&format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n\
         clusters:\n  - name: web\n    endpoints: [\"{}\"]\n",
        backend.addr
    ))
    .start()
    .await;
    for (what, addr) in [("filtered", filtered.addr), ("plain", plain.addr)] {
        let r = client().get(addr, "/public").await;
        assert_eq!(r.status, 502, "{what}: {}", r.text());
        assert!(
            r.text().contains("upstream protocol error"),
            "{what}: {}",
            r.text()
        );
        // Asked for h2c, which the listener does not pass: still no tunnel.
        let answer = raw_exchange(addr, H2C_UPGRADE).await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{what}: {answer}");
    }
}

#[test]
fn a_listener_cannot_be_told_to_pass_h2c() {
    let yaml = "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    \
                upgrades: [websocket, h2c]\n";
    let e = config_error(yaml);
    assert!(
        e.starts_with("test.yaml:4:") && e.contains("listeners[0].upgrades") && e.contains("h2c"),
        "{e}"
    );
    let e = config_error(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    upgrades: [\"web socket\"]\n",
    );
    assert!(e.contains("not a protocol name"), "{e}");
}

#[test]
fn an_endpoint_is_never_this_host_or_its_metadata_service() {
    let cluster = |endpoint: &str, extra: &str| {
        format!(
            "listeners: []
clusters:
  - name: web
{extra}    endpoints: [\"{endpoint}\"]\n"
        )
    };
    for bad in [
        "0.0.0.0:80",
        "[::]:80",
        "224.0.0.1:80",
        "255.255.255.255:80",
    ] {
        let e = config_error(&cluster(bad, ""));
        assert!(e.contains("clusters[0].endpoints[0]"), "{bad}: {e}");
    }
    for link_local in [
        "169.254.169.254:80",
        "[fe80::1]:80",
        "[::ffff:169.254.169.254]:80",
    ] {
        let e = config_error(&cluster(link_local, ""));
        assert!(e.contains("allow_link_local"), "{link_local}: {e}");
        let allowed = cluster(link_local, "    allow_link_local: true\n");
        assert!(
            weft_config::Config::from_str(&allowed, "test.yaml", None).is_ok(),
            "{link_local} with allow_link_local"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_names_nothing_is_a_400() {
    let web = backend("web").start().await;
    let p = proxy(&chain(&web, "      []")).start().await;
    for host in ["[]", "[x]", "[::1", "a]"] {
        let answer = raw_exchange(
            p.addr,
            format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{host}: {answer}");
    }
    assert_eq!(web.requests(), 0);
    // A bracketed IPv6 address is a host.
    let answer = raw_exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nhost: [::1]:80\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_the_proxy_owns_are_removed_from_client_requests() {
    let web = backend("web").start().await;
    let yaml = |extra: &str| {
        format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n{extra}\
             clusters:\n  - name: web\n    endpoints: [\"{}\"]\n",
            web.addr
        )
    };
    let edge = proxy(&yaml("")).start().await;
    let mesh = proxy(&yaml("    mesh_internal: true\n")).start().await;
    let sent = [
        ("x-weft-attempt", "7"),
        ("x-weft-source-workload", "payments"),
        ("x-weft-fault", "abort"),
        ("x-kept", "1"),
    ];
    let r = client().get_with(edge.addr, "/", &sent).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-kept"), Some("1"), "other headers pass");
    // Headers filters match on (the fault filter's) are the client's to send.
    assert_eq!(r.header("x-echo-weft-fault"), Some("abort"));
    for owned in ["weft-attempt", "weft-source-workload"] {
        assert_eq!(
            r.header(&format!("x-echo-{owned}")),
            None,
            "x-{owned} reached the backend"
        );
    }
    // A mesh listener's peers are proxies: their word on the caller passes, and only that.
    let r = client().get_with(mesh.addr, "/", &sent).await;
    assert_eq!(r.header("x-echo-weft-source-workload"), Some("payments"));
    assert_eq!(r.header("x-echo-weft-attempt"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_takes_trace_ids_only_from_a_context_the_chain_set_and_escapes_what_hides() {
    let logs = logs();
    let web = backend("web").start().await;
    let with_log = |filters: &str| {
        format!(
            "access_log:\n  fields: [request_id, trace_id, span_id, path]\n{}",
            chain(&web, filters)
        )
    };
    let bare = proxy(&with_log("      []")).start().await;
    let traced = proxy(&with_log(
        "      - name: telemetry\n        module: builtin:telemetry\n        config: {}",
    ))
    .start()
    .await;
    let forged = format!("00-<img src=x>\"Z{}-aaaaaaaaaaaaaaaa-01", "a".repeat(19));
    let shaped = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // A path with a right-to-left override and a C1 control, percent-encoded by the
    // client: normalisation leaves them encoded, so they are sent raw below.
    let path = "/pay/\u{202e}txt.exe\u{85}";
    for (addr, trace) in [
        (bare.addr, &*forged),
        (bare.addr, shaped),
        (traced.addr, shaped),
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: app.example\r\ntraceparent: {trace}\r\nconnection: close\r\n\r\n"
        );
        let answer = raw_exchange(addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let lines = wait_for_lines(&logs, "/pay/", 3).await;
    for line in &lines {
        // Every line stays one JSON object, with nothing invisible in it.
        let json = line
            .split_once('{')
            .map(|(_, rest)| format!("{{{rest}"))
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            !line.contains('\u{202e}') && !line.contains('\u{85}'),
            "{line}"
        );
        assert!(
            line.contains("\\u202e") && line.contains("\\u0085"),
            "{line}"
        );
        assert_eq!(v["path"], "/pay/\u{202e}txt.exe\u{85}", "{line}");
    }
    let trace_ids: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            let json = format!("{{{}", l.split_once('{').unwrap().1);
            serde_json::from_str::<serde_json::Value>(&json).unwrap()["trace_id"].clone()
        })
        .collect();
    // Without a filter that set the context, no trace id is logged, forged or not; with
    // telemetry, the trace the request continued.
    let nulls = trace_ids.iter().filter(|t| t.is_null()).count();
    assert_eq!(nulls, 2, "{lines:?}");
    assert!(
        trace_ids.contains(&serde_json::Value::from("4bf92f3577b34da6a3ce929d0e0e4736")),
        "{lines:?}"
    );
}

/// The access log lines that contain `needle`, once there are `n` of them.
async fn wait_for_lines(logs: &Logs, needle: &str, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let lines: Vec<String> = logs
            .text()
            .lines()
            .filter(|l| l.contains("weft::access") && l.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(lines.len(), n, "access log lines: {lines:?}");
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_backend_does_not_cost_the_client_its_connection() {
    // Python's http.server answers in HTTP/1.0, as many small servers do.
    let dir = TempDir::new();
    std::fs::write(dir.0.join("hello.txt"), "hello\n").unwrap();
    let mut server = tokio::process::Command::new("python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(&dir.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut out = server.stdout.take().unwrap();
    let port = tokio::time::timeout(LIMIT, async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let n = out.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some(rest) = text.split(" port ").nth(1)
                && let Some(port) = rest.split(' ').next().and_then(|p| p.parse::<u16>().ok())
            {
                return Some(port);
            }
        }
    })
    .await
    .ok()
    .flatten()
    .expect("http.server says its port");
    let p = proxy(&format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n\
         clusters:\n  - name: web\n    endpoints: [\"127.0.0.1:{port}\"]\n"
    ))
    .start()
    .await;

    // Three requests on one client connection, each answered in the client's version.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    for i in 0..3 {
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nhost: app.example\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
        assert_eq!(body, "hello\n");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
    }
    let _ = server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_only_hosts_that_cannot_be_rebound_and_only_views() {
    let yaml = "admin:\n  address: 127.0.0.1:0\n  allow_hosts: [weft-admin.internal]\n\
                listeners:\n  - name: main\n    address: 127.0.0.1:0\n";
    let p = proxy(yaml).start().await;
    let admin = p.running().admin_addr().unwrap();
    let ask = |request: String| async move { raw_exchange(admin, request.as_bytes()).await };
    for host in [
        format!("127.0.0.1:{}", admin.port()),
        "localhost".to_owned(),
        "[::1]:9901".to_owned(),
        "weft-admin.internal".to_owned(),
    ] {
        let answer = ask(format!(
            "GET /live HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
        ))
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    for host in [
        "evil.example",
        "evil.example:9901",
        "localhost.evil.example",
    ] {
        let answer = ask(format!(
            "GET /config HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
        ))
        .await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
        assert!(!answer.contains("listeners"), "{answer}");
    }
    let answer = ask(
        "POST /config HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .to_owned(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: get, head"),
        "{answer}"
    );
}
