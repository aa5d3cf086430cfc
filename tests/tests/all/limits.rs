//! Protection limits: oversized heads, slow clients.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_tests::*;

fn limited(web: &Backend) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
    limits:
      header_read_timeout: 500ms
      max_header_size: 8KiB
clusters:
  - name: web
    endpoints: ["{}"]
"#,
        web.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web)).start().await;
    let big = "a".repeat(20 * 1024);
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0; 1024];
    let n = tokio::time::timeout(LIMIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert_eq!(web.requests(), 0);
    // The proxy keeps serving.
    assert_eq!(client().get(p.addr, "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_cut_off() {
    let web = backend("web").start().await;
    let p = proxy(&limited(&web)).start().await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // Never finish the head: the proxy must close the connection on its own.
    let mut buf = vec![0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "connection still open after 10 s with a 500 ms header timeout"
    );
    assert_eq!(web.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_gets_504() {
    let logs = logs();
    // An upstream that accepts and never answers.
    let silent = SilentUpstream::start().await;
    let addr = silent.addr;
    let yaml = format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: silent
    limits: {{ request_timeout: 300ms }}
clusters:
  - name: silent
    endpoints: ["{addr}"]
"#
    );
    let p = proxy(&yaml).start().await;
    let r = client().get(p.addr, "/").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("upstream"));
    assert!(
        r.text().starts_with("upstream timed out (error id "),
        "{}",
        r.text()
    );
    let log = logs.of_error(&r);
    assert!(log.contains("did not answer the request within"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gets_503() {
    let logs = logs();
    let refused = refused();
    let addr = refused.addr;
    let yaml = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: gone\nclusters:\n  - name: gone\n    endpoints: [\"{addr}\"]\n"
    );
    let p = proxy(&yaml).start().await;
    let r = client().get(p.addr, "/").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().starts_with("upstream unavailable (error id "),
        "{}",
        r.text()
    );
    let log = logs.of_error(&r);
    assert!(log.contains("cannot connect to"), "{log}");
}
