//! CONNECT tunnels on a listener with `allow_connect`: curl through Weft, routing by
//! the named target, and tunnels counted in the cluster's `max_connections`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_tests::*;

/// Send `CONNECT target` and read the answer's head: the stream (the tunnel when it
/// is 200) and the head.
async fn open(addr: std::net::SocketAddr, target: &str) -> (TcpStream, String) {
    ask(
        addr,
        &format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n"),
    )
    .await
}

/// Send a request head on a fresh connection and read the answer's head, byte by
/// byte so that nothing after it is taken from the stream.
async fn ask(addr: std::net::SocketAddr, request: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

/// An HTTP/1.1 request through an open tunnel; the answer's text up to its body.
async fn through(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: inside\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + LIMIT;
    // The backend answers with a body naming itself after its headers.
    while !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
        assert!(Instant::now() < deadline);
        let n = tokio::time::timeout(LIMIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "tunnel closed");
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_tunnels_through_a_listener_that_allows_connect() {
    let web = backend("web").start().await;
    let yaml = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n    \
         allow_connect: true\n\
         clusters:\n  - name: web\n    endpoints: [\"{}\"]\n",
        web.addr
    );
    let p = proxy(&yaml).start().await;
    // curl asks Weft for a tunnel to a name that does not exist anywhere: Weft never
    // dials the named host, only the routed cluster.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--proxytunnel", "--proxy"])
        .arg(format!("http://{}", p.addr))
        .arg("http://nowhere.invalid:80/through/the/tunnel")
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("x-backend: web"), "{text}");
    assert!(text.contains("x-path: /through/the/tunnel"), "{text}");
    assert!(text.trim_end().ends_with("web"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_route_tunnels_and_tunnels_count_as_connections() {
    let web = backend("web").start().await;
    let db = backend("db").start().await;
    let routes = r#"{ match: { method: CONNECT, headers: [{ name: host, exact: "db.internal:5432" }] }, cluster: db }"#;
    let yaml = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    allow_connect: true\n    \
         filters:\n      - name: router\n        module: builtin:router\n        \
         config: {{ routes: [{routes}] }}\n\
         clusters:\n  - name: web\n    endpoints: [\"{}\"]\n  - name: db\n    \
         endpoints: [\"{}\"]\n    limits: {{ max_connections: 1 }}\n",
        web.addr, db.addr
    );
    let p = proxy(&yaml).start().await;

    let (mut tunnel, head) = open(p.addr, "db.internal:5432").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answer = through(&mut tunnel, "/one").await;
    assert!(answer.contains("x-backend: db"), "{answer}");

    // A target no route names: the router's 404, no tunnel.
    let (_s, head) = open(p.addr, "other.internal:443").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // The open tunnel holds db's only connection: another is refused at once.
    let (_s, head) = open(p.addr, "db.internal:5432").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("x-weft-overflow: max_connections"),
        "{head}"
    );

    // Closed, it frees its place.
    drop(tunnel);
    let deadline = Instant::now() + LIMIT;
    loop {
        let (mut s, head) = open(p.addr, "db.internal:5432").await;
        if head.starts_with("HTTP/1.1 200") {
            assert!(through(&mut s, "/two").await.contains("x-backend: db"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed tunnel kept its place"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(web.requests(), 0);
}

/// An upstream that switches every request to an echo protocol: it answers 101 and
/// sends back every byte it gets.
async fn echo_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let switch = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
                if s.write_all(switch).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Ask for an upgrade to the echo protocol; the stream and the answer's head.
async fn upgrade(addr: std::net::SocketAddr) -> (TcpStream, String) {
    ask(
        addr,
        "GET /echo HTTP/1.1\r\nhost: echo\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
}

async fn echoes(s: &mut TcpStream) -> bool {
    if s.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(LIMIT, s.read_exact(&mut buf)).await,
        Ok(Ok(4))
    ) && &buf == b"ping"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_count_as_connections_and_idle_ones_close() {
    let echo = echo_upstream().await;
    let yaml = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: echo\n    \
         limits: {{ idle_timeout: 1s }}\n    upgrades: [echo]\n\
         clusters:\n  - name: echo\n    endpoints: [\"{echo}\"]\n    \
         limits: {{ max_connections: 1 }}\n"
    );
    let p = proxy(&yaml).start().await;

    let (mut first, head) = upgrade(p.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(echoes(&mut first).await);

    // The switched connection still holds the cluster's only place.
    let (_s, head) = upgrade(p.addr).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("x-weft-overflow: max_connections"),
        "{head}"
    );

    // Quiet past the listener's idle timeout: the tunnel is closed, its place freed.
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(LIMIT, first.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    let deadline = Instant::now() + LIMIT;
    loop {
        let (mut s, head) = upgrade(p.addr).await;
        if head.starts_with("HTTP/1.1 101") {
            assert!(echoes(&mut s).await);
            break;
        }
        assert!(Instant::now() < deadline, "the idle tunnel kept its place");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
