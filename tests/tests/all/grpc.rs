//! gRPC requests through Weft: errors the proxy makes are gRPC answers.

use std::net::SocketAddr;

use weft_tests::*;

/// A gRPC unary call over h2c; returns the response head and whether a body
/// followed it (a trailers-only answer has none).
async fn grpc_call(addr: SocketAddr) -> (http::response::Parts, bool) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let req = http::Request::post(format!("http://{addr}/demo.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut send) = h2.send_request(req, false).unwrap();
    // An empty message: compressed flag 0, length 0. The proxy may answer
    // (and end the stream) before the message is sent, when the upstream is
    // refused at once: then the stream is already closed, which is fine.
    let _ = send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true);
    let resp = tokio::time::timeout(LIMIT, resp).await.unwrap().unwrap();
    let (parts, body) = resp.into_parts();
    (parts, !body.is_end_stream())
}

fn header<'a>(parts: &'a http::response::Parts, name: &str) -> &'a str {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} in {:?}", parts.headers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_the_proxy_makes_are_grpc_answers() {
    let logs = logs();
    // Nothing listens here: UNAVAILABLE.
    let refused = refused();
    let gone = refused.addr;
    // Accepts and never answers: DEADLINE_EXCEEDED.
    let silent = SilentUpstream::start().await;
    let silent_addr = silent.addr;
    let yaml = format!(
        "listeners:\n  - name: gone\n    address: 127.0.0.1:0\n    default_cluster: gone\n\
         \x20 - name: slow\n    address: 127.0.0.1:0\n    default_cluster: silent\n    \
         limits: {{ request_timeout: 300ms }}\n\
         clusters:\n  - name: gone\n    endpoints: [\"{gone}\"]\n  - name: silent\n    \
         endpoints: [\"{silent_addr}\"]\n"
    );
    let p = proxy(&yaml).start().await;
    let running = p.running();

    for (listener, code, reason) in [
        ("gone", "14", "upstream unavailable"),
        ("slow", "4", "upstream timed out"),
    ] {
        let addr = running.listener_addr(listener).unwrap();
        let (parts, body) = grpc_call(addr).await;
        assert_eq!(parts.status, 200, "{listener}: {parts:?}");
        assert_eq!(header(&parts, "content-type"), "application/grpc");
        assert_eq!(header(&parts, "grpc-status"), code, "{listener}");
        let id = header(&parts, "x-weft-error-id");
        assert_eq!(
            header(&parts, "grpc-message"),
            format!("{reason} (error id {id})")
        );
        assert!(!body, "{listener}: a trailers-only answer has no body");
        assert!(
            logs.text()
                .lines()
                .any(|l| l.contains(id) && l.contains(reason)),
            "{listener}: the log has the detail under the error id"
        );
    }

    // A plain HTTP request to the same listener still gets an HTTP error.
    let r = client()
        .get(running.listener_addr("gone").unwrap(), "/")
        .await;
    assert_eq!(r.status, 503);
    assert!(r.header("grpc-status").is_none());
}
