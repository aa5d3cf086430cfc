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
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::{self, HttpServerConnExec};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use weft_engine::{ConnectionInfo, TlsInfo};

use crate::metrics::ConnCounts;

use crate::body::ProxyBody;
use crate::service::{self, ListenerState};

/// Per-connection protocol settings of a listener.
pub(crate) struct ConnSettings {
    pub(crate) max_header_size: usize,
    pub(crate) limits: ConnLimits,
}

/// What bounds one connection in time and abuse.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// For the TLS handshake, for the first byte, and (hyper's timer) for each
    /// request head.
    pub(crate) header_read_timeout: Duration,
    /// No byte in either direction and no request in flight for this long: closed.
    pub(crate) idle_timeout: Duration,
    /// Streams the client cancels after they were taken, before the connection is
    /// closed (when they are also at least half of its streams).
    pub(crate) max_premature_resets: u32,
    /// Connections open at once on the listener.
    pub(crate) max_connections: usize,
}

/// What a listener's connections are served with; swapped with its state on reload.
pub(crate) struct ConnParts {
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    pub(crate) limits: ConnLimits,
}

impl std::fmt::Debug for ConnParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnParts")
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ConnParts {
    pub(crate) fn new(tls: Option<tokio_rustls::TlsAcceptor>, settings: &ConnSettings) -> Self {
        Self {
            tls,
            builder: http_builder(settings),
            limits: settings.limits,
        }
    }
}

pub(crate) fn http_builder(settings: &ConnSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // A client that starts a request head and never finishes it is cut off.
        .header_read_timeout(settings.limits.header_read_timeout)
        // hyper answers 431 when a request head does not fit this buffer.
        .max_buf_size(settings.max_header_size.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(settings.limits.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

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
    let mut info = ConnectionInfo {
        peer,
        local,
        tls: None,
    };
    let limits = conn.limits;
    let watch = Arc::new(ConnWatch::new(limits.max_premature_resets));
    let result = match &conn.tls {
        None => {
            let svc = request_service(state, Arc::new(info), watch.clone());
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
            let (_, session) = stream.get_ref();
            info.tls = Some(TlsInfo {
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
                // Client certificates come with mutual TLS, which no listener asks for yet.
                peer_identity: None,
            });
            let svc = request_service(state, Arc::new(info), watch.clone());
            // Counted after TLS: the bytes of HTTP, as the listener's filters see them.
            let io = Watched::new(stream, watch.clone()).counting(counts);
            drive(io, &conn.builder, svc, &limits, &watch, &mut stop).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = &*name, %peer, "connection ended: {e}");
    }
}

/// The per-request service of a data-plane connection: the request path, with the
/// connection's count of requests in flight and of requests the client gave up on.
fn request_service(
    state: Arc<ArcSwap<ListenerState>>,
    info: Arc<ConnectionInfo>,
    watch: Arc<ConnWatch>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
> + Clone {
    service_fn(move |req| {
        let request = service::serve(state.load_full(), info.clone(), req);
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

/// What a connection's watchdog knows of it, shared with its I/O and its requests.
pub(crate) struct ConnWatch {
    /// Set by every read or write that moved bytes; the watchdog clears it.
    active: AtomicBool,
    /// Requests whose response head has not gone out.
    in_flight: AtomicU32,
    /// Requests taken on this connection.
    streams: AtomicU32,
    /// Requests the client cancelled (an HTTP/2 reset, a closed HTTP/1 connection)
    /// before their response head.
    premature_resets: AtomicU32,
    max_premature_resets: u32,
    abuse: Notify,
}

impl ConnWatch {
    pub(crate) fn new(max_premature_resets: u32) -> Self {
        Self {
            active: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            streams: AtomicU32::new(0),
            premature_resets: AtomicU32::new(0),
            max_premature_resets,
            abuse: Notify::new(),
        }
    }

    /// Resolves with the reason once the connection should be closed.
    async fn expired(&self, limits: &ConnLimits) -> &'static str {
        // Each phase is checked in quarters: one timer a quarter, and the close
        // comes within 1.25 times the limit.
        const CHECKS: u32 = 4;
        let quiet = async {
            // The first bytes must come within the header read timeout; a
            // connection that never says anything holds a socket for nothing.
            let mut spoke = false;
            for _ in 0..CHECKS {
                tokio::time::sleep(limits.header_read_timeout / CHECKS).await;
                if self.active.swap(false, Ordering::Relaxed)
                    || self.in_flight.load(Ordering::Relaxed) > 0
                {
                    spoke = true;
                    break;
                }
            }
            if !spoke {
                return "no request within the header read timeout";
            }
            // Then: quiet (no byte either way, no request in flight) for the idle
            // timeout.
            self.idle(limits.idle_timeout).await;
            "idle"
        };
        tokio::select! {
            why = quiet => why,
            () = self.abuse.notified() => "the client cancelled too many requests",
        }
    }
}

impl ConnWatch {
    /// Resolves once no byte moved and no request was in flight for `idle_timeout`
    /// (checked in quarters: within 1.25 times it).
    pub(crate) async fn idle(&self, idle_timeout: Duration) {
        const CHECKS: u32 = 4;
        let mut quiet_checks = 0;
        loop {
            tokio::time::sleep(idle_timeout / CHECKS).await;
            let busy = self.active.swap(false, Ordering::Relaxed)
                || self.in_flight.load(Ordering::Relaxed) > 0;
            quiet_checks = if busy { 0 } else { quiet_checks + 1 };
            if quiet_checks >= CHECKS {
                return;
            }
        }
    }
}

/// One request in flight on a connection. Dropped without [`InFlight::finish`], the
/// client cancelled it before its response head.
struct InFlight<'a>(&'a ConnWatch);

impl<'a> InFlight<'a> {
    fn start(watch: &'a ConnWatch) -> Self {
        watch.in_flight.fetch_add(1, Ordering::Relaxed);
        watch.streams.fetch_add(1, Ordering::Relaxed);
        Self(watch)
    }

    fn finish(self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        std::mem::forget(self);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let w = self.0;
        w.in_flight.fetch_sub(1, Ordering::Relaxed);
        let resets = w.premature_resets.fetch_add(1, Ordering::Relaxed) + 1;
        let streams = w.streams.load(Ordering::Relaxed);
        // Like Envoy's premature-reset check: many, and most of what the client sent.
        if resets >= w.max_premature_resets && u64::from(resets) * 2 >= u64::from(streams) {
            w.abuse.notify_one();
        }
    }
}

/// A connection's I/O, marking the watch active whenever bytes move, and counting
/// them for its listener when it serves one.
pub(crate) struct Watched<T> {
    inner: T,
    watch: Arc<ConnWatch>,
    counts: Option<Arc<ConnCounts>>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, watch: Arc<ConnWatch>) -> Self {
        Self {
            inner,
            watch,
            counts: None,
        }
    }

    /// Count the bytes read and written into the listener's `counts`.
    pub(crate) fn counting(self, counts: Arc<ConnCounts>) -> Self {
        Self {
            counts: Some(counts),
            ..self
        }
    }

    fn read(&self, n: usize) {
        // A plain store on a line only this connection writes: no contention.
        self.watch.active.store(true, Ordering::Relaxed);
        if let Some(c) = &self.counts {
            c.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn wrote(&self, n: usize) {
        self.watch.active.store(true, Ordering::Relaxed);
        if let Some(c) = &self.counts {
            c.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read(n);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.wrote(n);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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

    #[test]
    fn many_cancelled_requests_are_abuse_few_are_not() {
        let w = ConnWatch::new(3);
        for _ in 0..10 {
            InFlight::start(&w).finish();
        }
        for _ in 0..3 {
            drop(InFlight::start(&w));
        }
        // 3 resets of 13 streams: a client that cancels now and then.
        assert_eq!(w.premature_resets.load(Ordering::Relaxed), 3);
        assert_eq!(w.in_flight.load(Ordering::Relaxed), 0);
        let notified = w.abuse.notified();
        let mut notified = pin!(notified);
        assert!(
            futures_util::FutureExt::now_or_never(notified.as_mut()).is_none(),
            "not abuse yet"
        );
        for _ in 0..10 {
            drop(InFlight::start(&w));
        }
        // 13 resets of 23 streams.
        assert!(futures_util::FutureExt::now_or_never(notified).is_some());
    }
}
