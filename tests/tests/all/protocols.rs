//! HTTP/1.1 and HTTP/2 on both sides, TLS with ALPN, and connection reuse.

use std::sync::Arc;

use bytes::Bytes;
use weft_tests::*;

fn plain(web: &Backend, protocol: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
clusters:
  - name: web
    endpoints: ["{}"]
    protocol: {protocol}
"#,
        web.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_end_to_end() {
    let web = backend("web").http2_only().start().await;
    let p = proxy(&plain(&web, "http2")).start().await;
    let c = h2c_client();
    for i in 0..20 {
        let r = c.get(p.addr, &format!("/h2/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.version,
            http::Version::HTTP_2,
            "client to proxy is HTTP/2"
        );
        assert_eq!(
            r.header("x-version"),
            Some("HTTP/2.0"),
            "proxy to backend is HTTP/2"
        );
        assert_eq!(r.header("x-path"), Some(format!("/h2/{i}").as_str()));
    }
    assert_eq!(web.connections(), 1, "one multiplexed upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keeps_upstream_connections_alive() {
    let web = backend("web").start().await;
    let p = proxy(&plain(&web, "http1")).start().await;
    let c = client();
    for _ in 0..200 {
        let r = c
            .send(
                p.addr,
                "POST",
                "/echo",
                &[("x-trace", "t1")],
                Bytes::from_static(b"ping"),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.version, http::Version::HTTP_11);
        assert_eq!(r.header("x-version"), Some("HTTP/1.1"));
        assert_eq!(r.header("x-echo-trace"), Some("t1"));
        assert_eq!(r.text(), "ping", "bodies stream through");
    }
    assert_eq!(web.requests(), 200);
    assert!(
        web.connections() <= 4,
        "{} connections for 200 requests",
        web.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let web = backend("web").start().await;
    let p = proxy(&plain(&web, "http1")).start().await;
    let r = client()
        .get_with(
            p.addr,
            "/",
            &[
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("x-public", "2"),
            ],
        )
        .await;
    assert_eq!(r.header("x-echo-public"), Some("2"));
    assert_eq!(
        r.header("x-echo-secret"),
        None,
        "headers named by connection are dropped"
    );
}

/// TLS on both sides: the client negotiates h2 with the proxy by ALPN, and the proxy
/// negotiates h2 with a TLS backend by ALPN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_on_both_sides() {
    let (cert, key) = self_signed();
    let web = backend("web").tls(server_tls(&cert, &key)).start().await;
    let (_d1, cert_path) = temp_file("cert.pem", cert.as_bytes());
    let (_d2, key_path) = temp_file("key.pem", key.as_bytes());
    let yaml = format!(
        r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
    tls: {{ cert: "{cert_path}", key: "{key_path}" }}
clusters:
  - name: web
    endpoints: ["{}"]
    protocol: auto
    tls: {{ ca: "{cert_path}", server_name: localhost }}
"#,
        web.addr
    );
    let p = proxy(&yaml).start().await;

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://localhost/secure")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        resp.headers()["x-version"],
        "HTTP/2.0",
        "ALPN picked h2 upstream"
    );
    assert_eq!(resp.headers()["x-path"], "/secure");
}

/// An upstream may answer before it has read the request body (a 413, say). Its
/// connection is then still busy carrying that body; a later request must not wait
/// behind the slow upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_answered_early_holds_up_no_other_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    // Uploads get 413 at once and their bodies are never read; the rest get 200.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut conn, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                    if text.contains("content-length") {
                        let _ = conn
                            .write_all(
                                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n",
                            )
                            .await;
                        // Hold the connection, never reading the body.
                        while let Ok(n) = conn.read(&mut buf).await {
                            if n == 0 {
                                return;
                            }
                        }
                        return;
                    }
                    head.drain(..end + 4);
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    let p = proxy(&format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    default_cluster: web\n\
         clusters:\n  - name: web\n    endpoints: [\"{addr}\"]\n"
    ))
    .start()
    .await;

    // A client announces 100 kB and sends 10 bytes of it, then stalls.
    let mut upload = TcpStream::connect(p.addr).await.unwrap();
    upload
        .write_all(b"POST /up HTTP/1.1\r\nhost: web\r\ncontent-length: 100000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = upload.read(&mut buf).await.unwrap();
            assert!(n > 0, "proxy closed the upload before answering");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the early 413 reached the client");
    assert!(answer.starts_with(b"HTTP/1.1 413"), "{answer:?}");

    // The upload's upstream connection is still busy: the next request takes another.
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client().get(p.addr, "/after"),
    )
    .await
    .expect("a request waited behind the stalled upload");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");
    drop(upload);
    server.abort();
}
