//! One body type for both directions: streamed from the peer, or a buffer the proxy
//! or a filter produced. An enum rather than a boxed trait object, so the request path
//! allocates nothing for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::upstream::UpstreamBody;

/// A message body on its way through the proxy.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed through from the client, never buffered.
    Stream(Incoming),
    /// Streamed through from an upstream, never buffered.
    Upstream(UpstreamBody),
    /// A whole body in memory; `None` once sent.
    Full(Option<Bytes>),
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
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(s) => s.is_end_stream(),
            Self::Upstream(s) => s.is_end_stream(),
            Self::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream(s) => s.size_hint(),
            Self::Upstream(s) => s.size_hint(),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
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
