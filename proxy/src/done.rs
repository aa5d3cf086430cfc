//! The end of a request: once its response body has been sent (or has failed), the
//! filters' `on-done` hooks learn how it went. The body carries the request's
//! exchange to its end, so the hooks run exactly once, also when the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use weft_engine::{Exchange, Responder, Summary};

use crate::access::AccessLog;
use crate::chain::FilterChain;

/// A response body that runs the `on-done` hooks when it ends or is dropped.
pub struct DoneBody<B: Body> {
    inner: B,
    bytes: u64,
    pending: Option<Pending>,
}

struct Pending {
    chain: FilterChain,
    ex: Box<Exchange>,
    status: u16,
    responder: Responder,
    log: Option<Arc<AccessLog>>,
}

impl<B: Body + std::fmt::Debug> std::fmt::Debug for DoneBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoneBody")
            .field("inner", &self.inner)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Give a response the body that ends the request's life.
pub(crate) fn wrap<B: Body>(
    resp: Response<B>,
    chain: &FilterChain,
    ex: Box<Exchange>,
    responder: Responder,
    log: Option<Arc<AccessLog>>,
) -> Response<DoneBody<B>> {
    let status = resp.status().as_u16();
    let mut ex = ex;
    // A trailers-only gRPC answer carries its status in the head.
    if let Some(code) = resp.headers().get("grpc-status") {
        ex.ctx.grpc_status = parse_grpc_status(code.as_bytes());
    }
    resp.map(|inner| DoneBody {
        inner,
        bytes: 0,
        pending: Some(Pending {
            chain: chain.clone(),
            ex,
            status,
            responder,
            log,
        }),
    })
}

fn parse_grpc_status(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

impl<B: Body> DoneBody<B> {
    fn finish(&mut self, complete: bool) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let summary = Summary {
            status: p.status,
            responder: p.responder,
            response_bytes: self.bytes,
            duration: u64::try_from(p.ex.ctx.received.elapsed().as_nanos()).unwrap_or(u64::MAX),
            complete,
        };
        let mut ex = p.ex;
        // Last filter first, as responses go.
        for filter in p.chain.filters().iter().rev().filter(|f| f.interest().done) {
            ex = filter.on_done(ex, &summary);
        }
        if let Some(log) = p.log {
            log.write(&ex, &summary);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for DoneBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(code) = trailers.get("grpc-status")
                    && let Some(p) = self.pending.as_mut()
                {
                    p.ex.ctx.grpc_status = parse_grpc_status(code.as_bytes());
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
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

impl<B: Body> Drop for DoneBody<B> {
    fn drop(&mut self) {
        // Dropped at its end (an empty body is never polled) or cut short.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
