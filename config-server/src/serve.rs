//! The accept loop. Every connection is bounded in number and in every phase: a
//! peer that connects and says nothing, trickles a request head, sits idle on a
//! keep-alive connection, or vanishes under a long-lived stream, is closed.
//!
//! - A semaphore caps the connections served at once; past the cap the loop stops
//!   accepting, and new connections wait in the kernel's queue.
//! - Accept errors about the listener (out of file descriptors, memory) back off
//!   instead of spinning.
//! - Each connection is watched: it must start a request within the header timeout,
//!   and is closed once it has had no request in progress for the idle timeout. A
//!   request is in progress until its response body is dropped, so a proxy's gRPC
//!   stream is never idle; HTTP/2 pings notice a proxy that is gone.
//! - On shutdown every connection is closed gracefully: requests in flight finish.
//! - With TLS (see `tls`), the handshake must end within the header timeout too, and
//!   the identity a client certificate proved goes with each of its requests.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::Limits;
use crate::tls::{Proven, proven};

/// Largest request head (HTTP/1 buffer, HTTP/2 header list): the API's requests and
/// gRPC's are small.
const MAX_HEAD: usize = 64 << 10;

/// Requests (streams) at once on one HTTP/2 connection: a proxy needs one.
const MAX_STREAMS: u32 = 64;

/// How long a connection that was asked to close may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// What every connection shares.
struct Serving {
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    /// None: plain text.
    tls: Option<TlsAcceptor>,
}

/// Serve `app` on `listener` (over TLS with `tls`) until `stop` turns true, then
/// close every connection gracefully and return once they are all closed. Dropping
/// the future (aborting its task) drops every connection at once.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout)
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEAD as u32);
    let serving = Arc::new(Serving {
        app,
        builder,
        limits,
        tls,
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        let next = async {
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            (slot, accept(|| listener.accept()).await)
        };
        let (slot, (stream, peer)) = tokio::select! {
            biased;
            _ = stopping.wait_for(|s| *s) => break,
            next = next => next,
        };
        // Small messages (ACKs, API answers) go out at once.
        let _ = stream.set_nodelay(true);
        connections.spawn(accepted(stream, peer, serving.clone(), stop.clone(), slot));
        // Reap finished connections so the set holds only live ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The next accepted connection. Errors about one connection (reset before it was
/// accepted) are skipped; errors about the listener, such as running out of file
/// descriptors, would fail again at once, so they wait, longer each time, rather
/// than spin a core.
async fn accept<T, F: Future<Output = io::Result<T>>>(mut accept: impl FnMut() -> F) -> T {
    let mut backoff = weft_proxy::Backoff::default();
    loop {
        match accept().await {
            Ok(accepted) => return accepted,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                let wait = backoff.pause();
                tracing::warn!("cannot accept connections: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Serve one accepted connection, after its TLS handshake when there is one; it
/// holds its `_slot` until it closes.
async fn accepted(
    stream: TcpStream,
    peer: SocketAddr,
    serving: Arc<Serving>,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let Some(tls) = &serving.tls else {
        return connection(stream, peer, None, &serving, stop).await;
    };
    let within = serving.limits.header_read_timeout;
    match tokio::time::timeout(within, tls.accept(stream)).await {
        Ok(Ok(stream)) => {
            let proven = proven(stream.get_ref().1.peer_certificates());
            connection(stream, peer, Some(proven), &serving, stop).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => tracing::debug!(%peer, "no TLS handshake within {within:?}"),
    }
}

/// Serve one connection until it closes, goes idle, or the server stops.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    proven: Option<Proven>,
    serving: &Serving,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = serving.limits;
    // The number of requests in progress on this connection.
    let busy = Arc::new(watch::Sender::new(0usize));
    let mut in_progress = busy.subscribe();
    let app = TowerToHyperService::new(serving.app.clone());
    let service = hyper::service::service_fn({
        let busy = busy.clone();
        move |mut req: Request<Incoming>| {
            // Handlers and the gRPC service learn who is calling from this.
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(proven) = &proven {
                req.extensions_mut().insert(proven.clone());
            }
            let guard = Busy::start(busy.clone());
            let response = app.call(req);
            async move {
                let response: Response<Body> = response.await?;
                Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: guard }))
            }
        }
    });
    let conn = (serving.builder).serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Until the first request, the deadline is for its head; then, whenever no
    // request is in progress, for the next one to start.
    let mut deadline = Instant::now() + limits.header_read_timeout;
    let why = loop {
        tokio::select! {
            biased;
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = in_progress.changed() => {
                if *in_progress.borrow_and_update() == 0 {
                    deadline = Instant::now() + limits.idle_timeout;
                }
            }
            () = tokio::time::sleep_until(deadline), if *in_progress.borrow() == 0 => {
                break "idle";
            }
            _ = stop.wait_for(|s| *s) => break "the server is stopping",
        }
    };
    tracing::debug!(%peer, "closing the connection: {why}");
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(CLOSE_GRACE, conn).await.is_err() {
        tracing::debug!(%peer, "connection still open {CLOSE_GRACE:?} after it was asked to close; dropping it");
    }
}

/// One request in progress on a connection, from its head until its response body
/// is dropped.
struct Busy(Arc<watch::Sender<usize>>);

impl Busy {
    fn start(count: Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body that keeps its request counted as in progress.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn listener_errors_back_off_instead_of_spinning() {
        let start = Instant::now();
        let mut calls = 0;
        let got = accept(|| {
            calls += 1;
            std::future::ready(match calls {
                // A reset connection is the peer's problem: try the next at once.
                1 => Err(io::Error::from(io::ErrorKind::ConnectionAborted)),
                // EMFILE: the next accept fails the same way until a file closes.
                2..=8 => Err(io::Error::from_raw_os_error(24)),
                _ => Ok(calls),
            })
        })
        .await;
        assert_eq!(got, 9);
        // 10 + 20 + 40 + 80 + 160 + 320 + 640 ms of waiting (paused time advances
        // only by sleeping).
        assert_eq!(start.elapsed(), Duration::from_millis(1270));

        // The wait stops growing at one second.
        let start = Instant::now();
        let mut calls = 0;
        accept(|| {
            calls += 1;
            std::future::ready(if calls <= 12 {
                Err(io::Error::from_raw_os_error(24))
            } else {
                Ok(())
            })
        })
        .await;
        assert_eq!(start.elapsed(), Duration::from_millis(1270 + 5 * 1000));
    }
}
