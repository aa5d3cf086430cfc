//! Connections to one upstream endpoint, and their pool.
//!
//! HTTP/1.1 connections carry one exchange at a time. A connection goes back to its
//! endpoint's idle queue the moment its response body has been read to the end, by
//! the body itself ([`UpstreamBody`]): no task, lock or timer per request. A lock-free
//! queue holds the idle ones; a sweeper task, started with the first connection,
//! closes those idle longer than the cluster's `idle_timeout`.
//!
//! HTTP/2 connections multiplex: one per endpoint, shared by every request.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::balance::{Balanced, Stats};
use crate::body::{Pool, ProxyBody, UpstreamBody};

/// How connections to a cluster's endpoints are made, and how many may be.
pub(crate) struct Connector {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Speak HTTP/2 without asking (h2c, or TLS with ALPN `h2` only).
    pub(crate) http2_only: bool,
    pub(crate) tls: Option<TlsConnector>,
    /// Most connections open to the cluster, and how many are.
    pub(crate) max_connections: usize,
    pub(crate) connections: Arc<AtomicUsize>,
    /// Most requests waiting for a new connection, and how many do.
    pub(crate) max_pending: usize,
    pub(crate) pending: AtomicUsize,
}

/// Counts one in a circuit-breaking counter while it lives: borrowed (`&AtomicUsize`)
/// for what ends within a call, shared (`Arc`) for what outlives it (a connection).
pub(crate) struct Held<C: Deref<Target = AtomicUsize>>(C);

impl<C: Deref<Target = AtomicUsize>> Held<C> {
    /// Count one, unless `max` are counted already.
    pub(crate) fn try_new(counter: C, max: usize) -> Option<Self> {
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(counter))
    }

    /// Count one, whatever the count: for what is open already.
    pub(crate) fn force(counter: C) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter)
    }
}

impl<C: Deref<Target = AtomicUsize>> Drop for Held<C> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A byte stream to an endpoint, for tunnels.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection's place in its cluster's count of connections.
pub(crate) type HeldConnection = Held<Arc<AtomicUsize>>;

/// TLS to the endpoints, with the ALPN list the cluster's protocol allows.
pub(crate) struct TlsConnector {
    pub(crate) connector: tokio_rustls::TlsConnector,
    /// The name to verify; the endpoint's host when `None`.
    pub(crate) server_name: Option<rustls::pki_types::ServerName<'static>>,
    /// Mutual TLS with the workload identity: servers prove a SPIFFE ID.
    pub(crate) mesh: bool,
}

/// A connection ready for one request.
pub(crate) enum Conn {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

/// A failure to reach an endpoint: the request was never sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// A circuit-breaking limit of the cluster: `max_connections` or `max_pending`.
    #[error("the cluster's {0} is reached")]
    Limit(&'static str),
}

struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// One endpoint of a cluster and its connections.
pub(crate) struct Endpoint {
    pub(crate) authority: Authority,
    /// The DNS name this address was found under: the name TLS verifies.
    pub(crate) name: Option<Arc<str>>,
    /// Load, latency and health, for the balancer.
    pub(crate) stats: Stats,
    idle: ArrayQueue<Idle>,
    h2: ArcSwapOption<http2::SendRequest<ProxyBody>>,
    /// Only one HTTP/2 connection is made at a time; the others wait and share it.
    h2_connecting: tokio::sync::Mutex<()>,
    sweeper: AtomicBool,
    /// The SPIFFE ID this endpoint proved at its last mutual TLS handshake.
    proven: ArcSwapOption<Arc<str>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("authority", &self.authority)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub(crate) fn new(
        authority: Authority,
        name: Option<Arc<str>>,
        max_idle: usize,
        weight: u32,
    ) -> Self {
        Self {
            authority,
            name,
            stats: Stats::new(weight),
            idle: ArrayQueue::new(max_idle.max(1)),
            h2: ArcSwapOption::empty(),
            h2_connecting: tokio::sync::Mutex::new(()),
            sweeper: AtomicBool::new(false),
            proven: ArcSwapOption::empty(),
        }
    }

    /// The SPIFFE ID this endpoint proved by mutual TLS (a mesh cluster's, once
    /// connected).
    pub(crate) fn proven_identity(&self) -> Option<Arc<str>> {
        self.proven.load().as_deref().cloned()
    }

    /// A pooled connection, or a new one. The flag says whether it was pooled: a
    /// request a pooled connection refused unsent may go again on another.
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        connector: &Connector,
    ) -> Result<(Conn, bool), ConnectError> {
        if let Some(h2) = self.shared_h2() {
            return Ok((Conn::Http2(h2), true));
        }
        while let Some(idle) = self.idle.pop() {
            // A connection goes idle once its last response was read to the end, so
            // it is almost always ready at once, or closed by the upstream meanwhile.
            if idle.sender.is_ready() {
                return Ok((Conn::Http1(idle.sender), true));
            }
            if idle.sender.is_closed() {
                continue;
            }
            // Not yet: its task has not caught up, or it is still sending a request
            // body the upstream answered early. Never make this request wait on it:
            // it rejoins the queue when ready.
            tracing::trace!(endpoint = %self.authority, "pooled connection not ready yet");
            let (endpoint, mut sender) = (Arc::clone(self), idle.sender);
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    endpoint.checkin(sender);
                }
            });
        }
        // A request that needs a new connection waits for it: bounded per cluster.
        let _pending = Held::try_new(&connector.pending, connector.max_pending)
            .ok_or(ConnectError::Limit("max_pending"))?;
        if connector.http2_only {
            let _one_at_a_time = self.h2_connecting.lock().await;
            if let Some(h2) = self.shared_h2() {
                return Ok((Conn::Http2(h2), true));
            }
            return Ok((Box::pin(self.connect(connector)).await?, false));
        }
        // Boxed: connecting (TLS handshake included) is a large future, and every
        // request's future would otherwise carry its size, moved on each request.
        Ok((Box::pin(self.connect(connector)).await?, false))
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let guard = self.h2.load();
        let h2 = guard.as_deref()?;
        if h2.is_closed() {
            return None;
        }
        Some(h2.clone())
    }

    async fn connect(self: &Arc<Self>, connector: &Connector) -> Result<Conn, ConnectError> {
        // Counted from before the connect to the end of the connection's task.
        let held = Held::try_new(connector.connections.clone(), connector.max_connections)
            .ok_or(ConnectError::Limit("max_connections"))?;
        let tcp = self.tcp(connector).await?;
        self.start_sweeper(connector.idle_timeout);
        let Some(tls) = &connector.tls else {
            return self.handshake(tcp, connector.http2_only, held).await;
        };
        let stream = self.tls(tls, connector, tcp).await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        self.handshake(stream, h2, held).await
    }

    /// A connection for a tunnel (CONNECT): TCP, in TLS when the cluster speaks it,
    /// counted among the cluster's connections for as long as it is held.
    pub(crate) async fn tunnel(
        &self,
        connector: &Connector,
    ) -> Result<(Box<dyn Io>, HeldConnection), ConnectError> {
        let held = Held::try_new(connector.connections.clone(), connector.max_connections)
            .ok_or(ConnectError::Limit("max_connections"))?;
        let tcp = self.tcp(connector).await?;
        let io: Box<dyn Io> = match &connector.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(self.tls(tls, connector, tcp).await?),
        };
        Ok((io, held))
    }

    async fn tcp(&self, connector: &Connector) -> Result<TcpStream, ConnectError> {
        let tcp = tokio::time::timeout(
            connector.connect_timeout,
            TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| ConnectError::Timeout(connector.connect_timeout))??;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// TLS over `tcp`, verifying the configured name, else the name the endpoint was
    /// found under, else its host.
    async fn tls(
        &self,
        tls: &TlsConnector,
        connector: &Connector,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
        let name = match &tls.server_name {
            Some(n) => n.clone(),
            None => {
                let host = self.name.as_deref().unwrap_or(self.authority.host());
                rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|_| ConnectError::ServerName(host.to_owned()))?
            }
        };
        let handshake = tls.connector.connect(name, tcp);
        let stream = tokio::time::timeout(connector.connect_timeout, handshake)
            .await
            .map_err(|_| ConnectError::Timeout(connector.connect_timeout))??;
        if tls.mesh {
            // The verifier has checked the chain and the ID against the cluster's.
            let id = crate::identity::peer_id(stream.get_ref().1.peer_certificates());
            self.proven.store(id.map(|id| Arc::new(Arc::from(id))));
        }
        Ok(stream)
    }

    async fn handshake<T>(
        self: &Arc<Self>,
        io: T,
        h2: bool,
        held: HeldConnection,
    ) -> Result<Conn, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let authority = self.authority.clone();
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            drive(conn, authority, held);
            self.h2.store(Some(Arc::new(sender.clone())));
            Ok(Conn::Http2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            drive(conn.with_upgrades(), authority, held);
            Ok(Conn::Http1(sender))
        }
    }

    /// Close idle connections older than `idle_timeout`, every half of it, for as long
    /// as the endpoint exists.
    fn start_sweeper(self: &Arc<Self>, idle_timeout: Duration) {
        if self.sweeper.swap(true, Ordering::Relaxed) {
            return;
        }
        let endpoint: Weak<Self> = Arc::downgrade(self);
        let period = (idle_timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(endpoint) = endpoint.upgrade() else {
                    return;
                };
                endpoint.sweep(idle_timeout);
            }
        });
    }

    fn sweep(&self, idle_timeout: Duration) {
        for _ in 0..self.idle.len() {
            let Some(idle) = self.idle.pop() else {
                return;
            };
            if idle.since.elapsed() < idle_timeout && !idle.sender.is_closed() {
                let _ = self.idle.push(idle);
            }
        }
    }

    /// Idle HTTP/1.1 connections pooled now.
    pub(crate) fn idle_len(&self) -> usize {
        self.idle.len()
    }
}

/// Run a connection's task until the connection ends; it counts in the cluster's
/// connections until then.
fn drive<C>(conn: C, authority: Authority, held: HeldConnection)
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let _held = held;
        if let Err(e) = conn.await {
            tracing::debug!(%authority, "upstream connection ended: {e}");
        }
    });
}

/// How long an HTTP/1 exchange the client gave up on may still take, and how much
/// of its response body is read, so that its connection can serve the next request.
const FINISH_CANCELLED: Duration = Duration::from_secs(5);
const FINISH_CANCELLED_BODY: usize = 64 * 1024;

type ResponseFuture = Pin<
    Box<
        dyn Future<
                Output = Result<
                    http::Response<Incoming>,
                    hyper::client::conn::TrySendError<http::Request<ProxyBody>>,
                >,
            > + Send,
    >,
>;

/// An HTTP/1 exchange in flight on a pooled connection.
///
/// A client that cancels its request (an HTTP/2 reset, a closed connection) drops the
/// request's future, and hyper closes an HTTP/1 connection whose response nobody
/// awaits: the next request would pay for a new connection, and a client resetting
/// stream after stream would make the proxy open one per request. Dropped before its
/// response, an exchange instead finishes in the background (bounded in time and
/// bytes) and gives its connection back to the pool.
pub(crate) struct Exchange {
    pending: Option<(ResponseFuture, Arc<Endpoint>, http1::SendRequest<ProxyBody>)>,
}

impl Exchange {
    pub(crate) fn send(
        endpoint: Arc<Endpoint>,
        mut sender: http1::SendRequest<ProxyBody>,
        req: http::Request<ProxyBody>,
    ) -> Self {
        let response = Box::pin(sender.try_send_request(req));
        Self {
            pending: Some((response, endpoint, sender)),
        }
    }
}

impl Future for Exchange {
    type Output = Result<
        http::Response<UpstreamBody>,
        hyper::client::conn::TrySendError<http::Request<ProxyBody>>,
    >;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some((response, _, _)) = this.pending.as_mut() else {
            return Poll::Pending;
        };
        let result = std::task::ready!(response.as_mut().poll(cx));
        let Some((_, endpoint, sender)) = this.pending.take() else {
            return Poll::Pending;
        };
        Poll::Ready(result.map(|resp| {
            // A connection that switched protocols belongs to its tunnel, not the pool.
            let pool = (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS)
                .then_some((endpoint as Arc<dyn Pool>, sender));
            resp.map(|b| UpstreamBody::new(b, pool))
        }))
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let Some((response, endpoint, sender)) = self.pending.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let finished = async {
                let Ok(resp) = response.await else { return };
                let mut body =
                    UpstreamBody::new(resp.into_body(), Some((endpoint as Arc<dyn Pool>, sender)));
                let mut read = 0;
                // Read to the end, which hands the connection back; a large body is
                // not worth it, and dropping it closes the connection.
                while let Some(Ok(frame)) =
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                {
                    read += frame.data_ref().map_or(0, Bytes::len);
                    if read > FINISH_CANCELLED_BODY {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(FINISH_CANCELLED, finished).await;
        });
    }
}

impl Pool for Endpoint {
    /// Back to the idle queue; dropped (and so closed) when the queue is full.
    fn checkin(&self, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let _ = self.idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

impl Balanced for Endpoint {
    fn stats(&self) -> &Stats {
        &self.stats
    }
}
