//! Accepting connections: TCP, optional TLS with ALPN, then HTTP/1.1 or HTTP/2 (by
//! ALPN, or by the HTTP/2 preface in clear text), with the listener's limits.
//!
//! Every phase of a connection is bounded: the TLS handshake and the first request
//! byte by the header read timeout, a request head by hyper's own header timer, a
//! quiet connection by the idle timeout, the number of connections by a cap, and an
//! HTTP/2 client that cancels stream after stream by a count of premature resets.
//! The admin listener goes through the same code with fixed limits.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::{self, HttpServerConnExec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use weft_engine::{ConnectionInfo, TlsInfo};

use crate::body::ProxyBody;
use crate::conn::{ConnCounts, ConnLimits, ConnParts, ConnWatch, InFlight, ListenerTls, Watched};
use crate::service;
use crate::state::ListenerState;

/// Counts a connection open until dropped, also when its task is aborted.
struct Open(Arc<ConnCounts>);

impl Open {
    fn new(counts: &Arc<ConnCounts>) -> Self {
        counts.open.fetch_add(1, Ordering::Relaxed);
        Self(counts.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accept until `stop` turns true, serving each connection with `serve`, then let the
/// connections finish for up to `drain` and close what is left.
///
/// Past `max_connections()` open connections, new ones are closed at once. Accept
/// errors (out of file descriptors, say) back off instead of spinning.
pub(crate) async fn accept_loop<F, Fut>(
    name: &str,
    listener: TcpListener,
    max_connections: impl Fn() -> usize,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    counts: Arc<ConnCounts>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut backoff = Backoff::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(e) => {
                    let pause = backoff.pause();
                    tracing::warn!(listener = name, "accept failed: {e}; pausing {pause:?}");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = stopped(&mut stop) => break,
                    }
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = stopped(&mut stop) => break,
        };
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        if connections.len() >= max_connections() {
            tracing::debug!(listener = name, %peer, "connection limit reached; closing");
            counts.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let open = Open::new(&counts);
        let served = serve(stream, peer, stop.clone());
        connections.spawn(async move {
            served.await;
            drop(open);
        });
    }
    drop(listener);
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, all_done).await.is_err() {
        tracing::warn!(
            listener = name,
            open = connections.len(),
            "connections still open after {drain:?}; closing them"
        );
        connections.shutdown().await;
    }
}

/// How long to pause after an accept error: 10 ms, doubling to a second. Every
/// listener of Weft's (proxy, admin, config server) waits this way when accepting
/// fails, rather than spin on an error that would repeat at once.
#[derive(Debug, Default)]
pub struct Backoff(u32);

impl Backoff {
    /// The next pause.
    pub fn pause(&mut self) -> Duration {
        let pause = Duration::from_millis(10) * 2u32.pow(self.0.min(7));
        self.0 = self.0.saturating_add(1);
        pause.min(Duration::from_secs(1))
    }

    /// Start again from the shortest pause.
    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

/// Accept on a data-plane listener until `stop`, then drain.
pub(crate) async fn run(
    name: Arc<str>,
    listener: TcpListener,
    state: Arc<ArcSwap<ListenerState>>,
    stop: watch::Receiver<bool>,
    drain: Duration,
    counts: Arc<ConnCounts>,
) {
    let limit_state = state.clone();
    let bytes = counts.clone();
    accept_loop(
        &name.clone(),
        listener,
        move || limit_state.load().conn.limits.max_connections,
        stop,
        drain,
        counts,
        move |stream, peer, stop| {
            let local = stream.local_addr().unwrap_or(peer);
            let conn = state.load().conn.clone();
            let served = Served {
                name: name.clone(),
                peer,
                local,
                counts: bytes.clone(),
            };
            serve_connection(served, stream, conn, state.clone(), stop)
        },
    )
    .await;
}

/// Who a data-plane connection is for: its listener (name and counts) and its ends.
struct Served {
    name: Arc<str>,
    peer: SocketAddr,
    local: SocketAddr,
    counts: Arc<ConnCounts>,
}

async fn serve_connection(
    served: Served,
    stream: TcpStream,
    conn: Arc<ConnParts>,
    state: Arc<ArcSwap<ListenerState>>,
    mut stop: watch::Receiver<bool>,
) {
    let Served {
        name,
        peer,
        local,
        counts,
    } = served;
    let limits = conn.limits;
    // A capture listener serves a redirected connection as if it were its original
    // destination, or joins it as TCP (or refuses it) there and then.
    let capture = state.load().capture.clone();
    let (stream, captured) = match capture {
        None => (stream, None),
        Some(capture) => match capture.intercept(stream, local, &limits, &counts).await {
            Some(kept) => kept,
            None => return,
        },
    };
    let info = ConnectionInfo {
        peer,
        local: captured.unwrap_or(local),
        tls: None,
    };
    let watch = Arc::new(ConnWatch::new(limits.max_premature_resets));
    let (acceptor, identity) = match &conn.tls {
        None => (None, None),
        Some(ListenerTls::Terminate(acceptor)) => (Some(acceptor), None),
        // A mesh listener serves mutual TLS and clear text on one port: a TLS
        // record starts with its content type, 22 (handshake); HTTP with a letter
        // or, for HTTP/2's preface, `P`.
        Some(ListenerTls::Mesh(acceptor, identity)) => {
            match first_byte(&stream, limits.header_read_timeout).await {
                Some(TLS_HANDSHAKE) => (Some(acceptor), Some(identity)),
                Some(_) => (None, None),
                None => return,
            }
        }
    };
    let result = match acceptor {
        None => {
            let svc = request_service(state, Arc::new(info), captured, watch.clone());
            let io = Watched::new(stream, watch.clone()).counting(counts);
            drive(io, &conn.builder, svc, &limits, &watch, &mut stop).await
        }
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            let stream = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
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
            let info = ConnectionInfo {
                tls: Some(tls_info(stream.get_ref().1, identity)),
                ..info
            };
            let svc = request_service(state, Arc::new(info), captured, watch.clone());
            // Counted after TLS: the bytes of HTTP, as the listener's filters see them.
            let io = Watched::new(stream, watch.clone()).counting(counts);
            drive(io, &conn.builder, svc, &limits, &watch, &mut stop).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = &*name, %peer, "connection ended: {e}");
    }
}

/// The first byte of a TLS record of the handshake protocol.
const TLS_HANDSHAKE: u8 = 0x16;

/// The first byte a client sends, left in the socket; none if it closes or sends
/// nothing in time.
async fn first_byte(stream: &TcpStream, limit: std::time::Duration) -> Option<u8> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(limit, stream.peek(&mut byte)).await {
        Ok(Ok(1)) => Some(byte[0]),
        _ => None,
    }
}

/// What filters learn of a TLS connection: the version, cipher, SNI and ALPN, and
/// on a mesh listener the identities each side proved.
fn tls_info(session: &rustls::ServerConnection, identity: Option<&crate::Identity>) -> TlsInfo {
    TlsInfo {
        version: session
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or(""),
        cipher: session
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or(""),
        sni: session.server_name().map(str::to_owned),
        alpn: session
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        // The client's chain was verified against the bundle in the handshake.
        peer_identity: identity.and_then(|_| crate::identity::peer_id(session.peer_certificates())),
        local_identity: identity.and_then(crate::Identity::spiffe_id),
    }
}

/// The per-request service of a data-plane connection: the request path, with the
/// connection's count of requests in flight and of requests the client gave up on,
/// and the original destination of a captured connection.
fn request_service(
    state: Arc<ArcSwap<ListenerState>>,
    info: Arc<ConnectionInfo>,
    captured: Option<SocketAddr>,
    watch: Arc<ConnWatch>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
> + Clone {
    service_fn(move |req| {
        let request = service::serve(state.load_full(), info.clone(), captured, req);
        let watch = watch.clone();
        async move {
            let stream = InFlight::start(&watch);
            let resp = request.await;
            stream.finish();
            resp
        }
    })
}

/// Serve HTTP on `io` with `svc` until the connection ends, closing it gracefully when
/// the listener stops, when it has been quiet too long, or when its client abuses
/// stream resets.
pub(crate) async fn drive<I, S>(
    io: Watched<I>,
    builder: &auto::Builder<TokioExecutor>,
    svc: S,
    limits: &ConnLimits,
    watch: &ConnWatch,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>,
    S::Future: Send + 'static,
    TokioExecutor: HttpServerConnExec<S::Future, ProxyBody>,
{
    // With upgrades: a WebSocket's 101 hands this connection to its tunnel.
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), svc));
    let why = tokio::select! {
        result = conn.as_mut() => return result,
        () = stopped(stop) => None,
        why = watch.expired(limits) => Some(why),
    };
    if let Some(why) = why {
        tracing::debug!("closing connection: {why}");
    }
    conn.as_mut().graceful_shutdown();
    // A graceful close lets requests in flight finish. When the listener stops, its
    // drain timeout bounds that; otherwise give them as long as a head may take.
    if why.is_none() {
        return conn.await;
    }
    match tokio::time::timeout(limits.header_read_timeout, conn).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_to_a_second() {
        let mut b = Backoff::default();
        let pauses: Vec<_> = (0..10).map(|_| b.pause().as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.pause().as_millis(), 10);
    }
}
