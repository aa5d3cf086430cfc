//! One body type for both directions: streamed from the peer, or a buffer the proxy
//! or a filter produced. An enum rather than a boxed trait object, so the request path
//! allocates nothing for it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use std::sync::Arc;
use tokio::sync::oneshot;

use crate::done::DoneBody;

/// A message body on its way through the proxy.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed through from the client, never buffered.
    Stream(ClientBody),
    /// Streamed through from an upstream, never buffered.
    Upstream(UpstreamBody),
    /// An upstream body whose first frames were read ahead to learn its trailers.
    Peeked(Box<Peeked>),
    /// A whole body in memory; `None` once sent.
    Full(Option<Bytes>),
    /// A response body whose end runs the filters' `on-done` hooks.
    Done(Box<DoneBody<ProxyBody>>),
}

/// Where an upstream's HTTP/1 connection goes back once its response has been read
/// to the end: the endpoint's idle queue.
pub(crate) trait Pool: Send + Sync {
    /// Take the connection back for the next request.
    fn checkin(&self, sender: http1::SendRequest<ProxyBody>);
}

/// A response body from an upstream. Read to its end, it hands its HTTP/1
/// connection back to the pool; dropped before that, the connection closes with it.
pub struct UpstreamBody {
    inner: Incoming,
    checkin: Option<(Arc<dyn Pool>, http1::SendRequest<ProxyBody>)>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    pub(crate) fn new(
        inner: Incoming,
        pooled: Option<(Arc<dyn Pool>, http1::SendRequest<ProxyBody>)>,
    ) -> Self {
        let mut body = Self {
            inner,
            checkin: pooled,
        };
        // HEAD, 204, 304 and empty bodies are at their end already; hyper may never
        // poll them.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((pool, sender)) = self.checkin.take() {
            pool.checkin(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            // The last frame: hyper stops polling once `is_end_stream` says so.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(None) => this.release(),
            // A broken body leaves the connection in an unknown state: never reuse it.
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client's body streamed upstream: maybe a first part read ahead (for a retry that
/// then could not keep it whole), and a signal for when it has all arrived, from
/// which the request's timeout counts.
#[derive(Debug)]
pub struct ClientBody {
    prefix: Option<Bytes>,
    inner: Incoming,
    arrived: Option<oneshot::Sender<Instant>>,
}

impl ClientBody {
    /// A client's body, with `arrived` told the moment its last byte came.
    pub(crate) fn new(
        prefix: Option<Bytes>,
        inner: Incoming,
        arrived: Option<oneshot::Sender<Instant>>,
    ) -> Self {
        Self {
            prefix,
            inner,
            arrived,
        }
    }

    fn ended(&mut self) {
        if let Some(tx) = self.arrived.take() {
            let _ = tx.send(Instant::now());
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + extra);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}

/// An upstream body read ahead by a frame or two.
#[derive(Debug)]
pub struct Peeked {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<UpstreamBody>,
}

impl Peeked {
    /// Read the first frame of `body`, and the next one only if it is there already:
    /// a short answer (a gRPC status in trailers) shows its trailers, a stream is not
    /// held back. Returns the body to send on, and the trailers (empty when there
    /// were none) when the body has ended.
    pub(crate) async fn read(
        mut body: UpstreamBody,
    ) -> Result<(ProxyBody, Option<HeaderMap>), hyper::Error> {
        let mut p = Peeked {
            data: None,
            trailers: None,
            rest: None,
        };
        match body.frame().await {
            None => return Ok(p.ended()),
            Some(frame) => match frame?.into_data() {
                Ok(data) => p.data = Some(data),
                Err(frame) => {
                    p.trailers = frame.into_trailers().ok();
                    return Ok(p.ended());
                }
            },
        }
        if body.is_end_stream() {
            return Ok(p.ended());
        }
        match futures_util::FutureExt::now_or_never(body.frame()) {
            Some(None) => Ok(p.ended()),
            Some(Some(frame)) => match frame?.into_data() {
                Ok(more) => {
                    // Still coming: a stream, sent on as it is.
                    let first = p.data.take().unwrap_or_default();
                    p.data = Some([first, more].concat().into());
                    p.rest = Some(body);
                    Ok((ProxyBody::Peeked(Box::new(p)), None))
                }
                Err(frame) => {
                    p.trailers = frame.into_trailers().ok();
                    Ok(p.ended())
                }
            },
            None => {
                p.rest = Some(body);
                Ok((ProxyBody::Peeked(Box::new(p)), None))
            }
        }
    }

    fn ended(self) -> (ProxyBody, Option<HeaderMap>) {
        let trailers = Some(self.trailers.clone().unwrap_or_default());
        (ProxyBody::Peeked(Box::new(self)), trailers)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(rest) = &mut self.rest {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }

    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::Full(None)
        } else {
            Self::Full(Some(bytes))
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Stream(s) => Pin::new(s).poll_frame(cx),
            Self::Upstream(s) => Pin::new(s).poll_frame(cx),
            Self::Peeked(p) => p.poll(cx),
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Done(d) => Pin::new(&mut **d).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(s) => s.is_end_stream(),
            Self::Upstream(s) => s.is_end_stream(),
            Self::Peeked(p) => p.is_end_stream(),
            Self::Full(b) => b.is_none(),
            Self::Done(d) => d.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream(s) => s.size_hint(),
            Self::Upstream(s) => s.size_hint(),
            Self::Peeked(_) => SizeHint::default(),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Done(d) => d.size_hint(),
        }
    }
}

/// Why a body could not be buffered.
#[derive(Debug)]
pub(crate) enum BufferError {
    /// Larger than the limit.
    TooLarge,
    /// The peer failed while sending it.
    Peer(hyper::Error),
}

/// What became of a request body the proxy tried to keep for a retry.
pub(crate) enum Kept {
    /// All of it, in memory.
    Whole(Bytes),
    /// It was larger than the limit: what was read, and the rest still streaming.
    Partial(Bytes, Incoming),
}

/// Read a request body into memory if it ends within `limit` bytes; past it, hand
/// back what was read and the rest, so nothing is lost.
pub(crate) async fn keep(mut body: Incoming, limit: usize) -> Result<Kept, hyper::Error> {
    if body.size_hint().lower() > limit as u64 {
        return Ok(Kept::Partial(Bytes::new(), body));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        // Trailers of a request are rare and cannot be replayed; keep the data.
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Kept::Partial(buf.freeze(), body));
            }
        }
    }
    Ok(Kept::Whole(buf.freeze()))
}

/// Read a whole body, refusing more than `limit` bytes. Trailers are dropped.
pub(crate) async fn buffer<B>(body: B, limit: usize) -> Result<Bytes, BufferError>
where
    B: Body<Data = Bytes, Error = hyper::Error>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BufferError::TooLarge);
    }
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err(BufferError::Peer(*e)),
            Err(_) => Err(BufferError::TooLarge),
        },
    }
}
