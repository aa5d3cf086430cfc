//! One connection's parts and watch: the settings and limits it is served with, and
//! the watchdog its I/O and requests report to (activity for the idle timeout,
//! requests in flight, streams the client cancelled), apart from the accept loop
//! that makes connections and the request path that serves them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// A listener's connection counts.
#[derive(Debug, Default)]
pub(crate) struct ConnCounts {
    /// Connections accepted.
    pub(crate) accepted: AtomicU64,
    /// Connections closed at once because the listener had `max_connections` open.
    pub(crate) refused: AtomicU64,
    /// Connections open now (served, not yet closed).
    pub(crate) open: AtomicU64,
    /// Bytes read from clients (after TLS), upgraded connections' included.
    pub(crate) received_bytes: AtomicU64,
    /// Bytes written to clients (before TLS), upgraded connections' included.
    pub(crate) sent_bytes: AtomicU64,
}

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

/// How a listener speaks TLS.
pub(crate) enum ListenerTls {
    /// Every connection is TLS with the listener's own certificates.
    Terminate(tokio_rustls::TlsAcceptor),
    /// Mutual TLS with the workload identity, or clear text, told apart by the
    /// first byte.
    Mesh(tokio_rustls::TlsAcceptor, crate::Identity),
}

/// What a listener's connections are served with; swapped with its state on reload.
pub(crate) struct ConnParts {
    pub(crate) tls: Option<ListenerTls>,
    pub(crate) builder: auto::Builder<TokioExecutor>,
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
    pub(crate) fn new(tls: Option<ListenerTls>, settings: &ConnSettings) -> Self {
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
    pub(crate) async fn expired(&self, limits: &ConnLimits) -> &'static str {
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
pub(crate) struct InFlight<'a>(&'a ConnWatch);

impl<'a> InFlight<'a> {
    pub(crate) fn start(watch: &'a ConnWatch) -> Self {
        watch.in_flight.fetch_add(1, Ordering::Relaxed);
        watch.streams.fetch_add(1, Ordering::Relaxed);
        Self(watch)
    }

    pub(crate) fn finish(self) {
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

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

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
