//! Accepting connections: TCP, optional TLS with ALPN, then HTTP/1.1 or HTTP/2 (by
//! ALPN, or by the HTTP/2 preface in clear text), with the listener's limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weft_engine::ConnectionInfo;

use crate::service::{self, ListenerState};

/// Per-connection protocol settings of a listener.
pub(crate) struct ConnSettings {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_size: usize,
    pub(crate) idle_timeout: Duration,
}

/// What a listener's connections are served with; swapped with its state on reload.
pub(crate) struct ConnParts {
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
}

impl std::fmt::Debug for ConnParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnParts")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ConnParts {
    pub(crate) fn new(tls: Option<tokio_rustls::TlsAcceptor>, settings: &ConnSettings) -> Self {
        Self {
            tls,
            builder: http_builder(settings),
        }
    }
}

fn http_builder(settings: &ConnSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // A client that never finishes its request head is cut off; this also
        // closes idle keep-alive connections waiting for their next request.
        .header_read_timeout(settings.header_read_timeout)
        // hyper answers 431 when a request head does not fit this buffer.
        .max_buf_size(settings.max_header_size.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(settings.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Accept until `stop` turns true, then let in-flight requests finish for up to
/// `drain` and return.
pub(crate) async fn run(
    name: Arc<str>,
    listener: TcpListener,
    state: Arc<ArcSwap<ListenerState>>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(listener = &*name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let conn = state.load().conn.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        let name = name.clone();
        tokio::spawn(async move {
            serve_connection(name, stream, peer, local, conn, state, watcher).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = &*name,
            "connections still open after {drain:?}; closing them"
        );
    }
}

async fn serve_connection(
    name: Arc<str>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    conn: Arc<ConnParts>,
    state: Arc<ArcSwap<ListenerState>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let mut info = ConnectionInfo {
        peer,
        local,
        tls: conn.tls.is_some(),
        peer_identity: None,
        sni: None,
    };
    let builder = &conn.builder;
    let result = match &conn.tls {
        None => {
            let info = Arc::new(info);
            let svc = service_fn(move |req| service::serve(state.load_full(), info.clone(), req));
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), svc))
                .await
        }
        Some(acceptor) => {
            let stream = match tokio::time::timeout(
                Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(listener = &*name, %peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = &*name, %peer, "TLS handshake timed out");
                    return;
                }
            };
            let (_, session) = stream.get_ref();
            info.sni = session.server_name().map(str::to_owned);
            let info = Arc::new(info);
            let svc = service_fn(move |req| service::serve(state.load_full(), info.clone(), req));
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), svc))
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = &*name, %peer, "connection ended: {e}");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
