use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A backend on loopback that answers `hello` and counts the connections it accepted.
struct Backend {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(keep_alive: bool) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"hello"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        accepted,
        task,
    }
}

fn cluster(addr: std::net::SocketAddr, extra: &str) -> Cluster {
    let yaml = format!("clusters:\n  - name: be\n    endpoints: [\"{addr}\"]\n{extra}");
    let config = weft_config::Config::parse(&yaml, "test.yaml").unwrap();
    Cluster::new(
        &config.clusters[0],
        &config.dns,
        &crate::Identity::default(),
    )
    .unwrap()
}

fn get() -> http::request::Parts {
    let (mut parts, ()) = http::Request::get("/x").body(()).unwrap().into_parts();
    parts
        .headers
        .insert(http::header::HOST, "be".parse().unwrap());
    parts
}

async fn exchange(cluster: &Cluster) -> Bytes {
    let resp = cluster
        .send(get(), ProxyBody::empty(), &mut Attempt::default())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn a_connection_is_reused_once_its_body_was_read() {
    let be = backend(true).await;
    let cluster = cluster(be.addr, "");
    for _ in 0..20 {
        assert_eq!(exchange(&cluster).await, "hello");
    }
    assert_eq!(be.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(cluster.set.load().endpoints[0].idle_len(), 1);
}

#[tokio::test]
async fn a_body_dropped_unread_closes_its_connection() {
    let be = backend(true).await;
    let cluster = cluster(be.addr, "");
    let resp = cluster
        .send(get(), ProxyBody::empty(), &mut Attempt::default())
        .await
        .unwrap();
    drop(resp);
    assert_eq!(cluster.set.load().endpoints[0].idle_len(), 0);
    assert_eq!(exchange(&cluster).await, "hello");
    assert_eq!(be.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connections_the_upstream_closes_are_not_reused() {
    let be = backend(false).await;
    let cluster = cluster(be.addr, "");
    for _ in 0..10 {
        assert_eq!(exchange(&cluster).await, "hello");
    }
    assert_eq!(be.accepted.load(Ordering::SeqCst), 10);
}

/// An upstream that closes each connection right after its answer, without saying so:
/// the next request finds a dead pooled connection and must still succeed.
#[tokio::test]
async fn a_silently_closed_pooled_connection_costs_no_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                    .await;
            });
        }
    });
    let cluster = cluster(addr, "");
    for _ in 0..20 {
        assert_eq!(exchange(&cluster).await, "hello");
    }
    task.abort();
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let be = backend(true).await;
    let cluster = cluster(be.addr, "    idle_timeout: 50ms\n");
    assert_eq!(exchange(&cluster).await, "hello");
    assert_eq!(cluster.set.load().endpoints[0].idle_len(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cluster.set.load().endpoints[0].idle_len() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle connection never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(exchange(&cluster).await, "hello");
    assert_eq!(be.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_requests_each_get_a_connection_and_the_pool_is_bounded() {
    let be = backend(true).await;
    let cluster = Arc::new(cluster(be.addr, "    max_idle_per_endpoint: 4\n"));
    // Hold eight responses unread at once, so eight connections are open.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            cluster
                .send(get(), ProxyBody::empty(), &mut Attempt::default())
                .await
                .unwrap(),
        );
    }
    assert_eq!(be.accepted.load(Ordering::SeqCst), 8);
    for resp in held {
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "hello"
        );
    }
    assert_eq!(cluster.set.load().endpoints[0].idle_len(), 4);
}

#[tokio::test]
async fn an_endpoint_that_refuses_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cluster = cluster(addr, "");
    let err = cluster
        .send(get(), ProxyBody::empty(), &mut Attempt::default())
        .await
        .unwrap_err();
    assert!(err.connect, "{err}");
    assert!(err.to_string().starts_with("cannot connect to"), "{err}");
}
