//! One upstream attempt: the request head and body it sends, the exchange with the
//! cluster (a tunnel for CONNECT), the attempt's and the request's timeouts, and what
//! the response hooks are shown of the outcome, a response or the proxy's own error.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use weft_engine::{Exchange, ExchangeError};

use crate::body::{ClientBody, Peeked, ProxyBody};
use crate::cluster::{Attempt, Cluster};
use crate::error::ProxyError;
use crate::normalize::ATTEMPT_HEADER;
use crate::upgrade::{Upgrade, switched_unasked};

/// The most attempts one request makes, whatever its filters ask.
pub(crate) const MAX_ATTEMPTS: u32 = 10;
const ATTEMPTS: [&str; MAX_ATTEMPTS as usize] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];

/// When a request has arrived, from which its timeout counts: at once for a request
/// without a body or with its body in memory, else when its streamed body ends, so a
/// slow upload is not cut short by a timeout meant for the upstream.
pub(crate) enum Arrival {
    At(Instant),
    Pending(oneshot::Receiver<Instant>),
}

impl Arrival {
    /// The request's deadline, once known.
    pub(crate) fn deadline(&self, timeout: Duration) -> Option<Instant> {
        match self {
            Arrival::At(at) => Some(*at + timeout),
            Arrival::Pending(_) => None,
        }
    }

    /// Wait for the request's deadline.
    pub(crate) async fn expire(self, timeout: Duration) {
        let at = match self {
            Arrival::At(at) => at,
            // A body that failed or was dropped has arrived as much as it ever will.
            Arrival::Pending(rx) => rx.await.unwrap_or_else(|_| Instant::now()),
        };
        tokio::time::sleep_until((at + timeout).into()).await;
    }
}

/// A client's body to stream upstream (none when it is empty), and its arrival.
pub(crate) fn stream_body(
    body: Incoming,
    prefix: Option<Bytes>,
    received: Instant,
) -> (Option<ProxyBody>, Arrival) {
    if prefix.is_none() && body.is_end_stream() {
        return (None, Arrival::At(received));
    }
    let (tx, rx) = oneshot::channel();
    (
        Some(ProxyBody::Stream(ClientBody::new(prefix, body, Some(tx)))),
        Arrival::Pending(rx),
    )
}

/// The request as attempt number `n` sends it: a copy of the head when hooks after
/// the exchange read it (`keep_head`), numbered when retries are possible
/// (`numbered`), and the body in memory again or the stream, once.
pub(crate) fn request(
    ex: &mut Exchange,
    n: u32,
    keep_head: bool,
    numbered: bool,
    stream: &mut Option<ProxyBody>,
) -> (http::request::Parts, ProxyBody) {
    let mut parts = if keep_head {
        clone_parts(&ex.request.parts)
    } else {
        std::mem::replace(&mut ex.request.parts, Request::new(()).into_parts().0)
    };
    if numbered {
        // A static value: no allocation per request.
        let n = ATTEMPTS[(n as usize - 1).min(ATTEMPTS.len() - 1)];
        parts
            .headers
            .insert(ATTEMPT_HEADER, HeaderValue::from_static(n));
    }
    let body = match (&ex.request.body, stream.take()) {
        (Some(b), _) => ProxyBody::full(b.clone()),
        (None, Some(s)) => s,
        (None, None) => ProxyBody::empty(),
    };
    (parts, body)
}

/// A copy of a request head to send, keeping the original for the next attempt and
/// for hooks that read it.
fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

/// What an attempt brought back: the response head, its body, and its trailers when
/// the response hooks read them and the answer was short enough to show them.
pub(crate) type Answer = (http::response::Parts, ProxyBody, Option<HeaderMap>);

/// Make one attempt, bounded by its own timeout and by the request's (`expire`, the
/// request's deadline shared by its attempts, and the `timeout` it counts). A timed-out
/// attempt counts as a slow sample and a failure of its endpoint.
pub(crate) async fn run(
    cluster: &Cluster,
    (parts, body): (http::request::Parts, ProxyBody),
    upgrade: &mut Option<Upgrade>,
    trailers: bool,
    per_try: Option<Duration>,
    (expire, timeout): (Pin<&mut impl Future<Output = ()>>, Duration),
    info: &mut Attempt,
) -> Result<Answer, ProxyError> {
    let sent_at = Instant::now();
    let exchange = send(cluster, parts, body, upgrade, trailers, info);
    let outcome = tokio::select! {
        biased;
        r = exchange => r,
        () = sleep_for(per_try) => Err(ProxyError::timed_out(
            cluster.name(),
            per_try.unwrap_or_default(),
            ExchangeError::PerTryTimeout,
        )),
        () = expire => Err(ProxyError::timed_out(cluster.name(), timeout, ExchangeError::Timeout)),
    };
    if let (Err(e), Some(endpoint)) = (&outcome, &info.endpoint)
        && matches!(
            e.exchange,
            Some(ExchangeError::PerTryTimeout | ExchangeError::Timeout)
        )
    {
        cluster.timed_out(endpoint, sent_at.elapsed());
    }
    outcome
}

/// The exchange itself: a tunnel for CONNECT, else the request and its response
/// head (and, for the response hooks, a short answer's trailers).
async fn send(
    cluster: &Cluster,
    parts: http::request::Parts,
    body: ProxyBody,
    upgrade: &mut Option<Upgrade>,
    trailers: bool,
    info: &mut Attempt,
) -> Result<Answer, ProxyError> {
    if let Some(u) = upgrade.as_mut().filter(|u| u.is_connect()) {
        let parts = u.tunnel(cluster, info).await?;
        return Ok((parts, ProxyBody::empty(), None));
    }
    let mut resp = cluster
        .send(parts, body, info)
        .await
        .map_err(|e| ProxyError::upstream(cluster.name(), &e))?;
    match upgrade.as_mut() {
        Some(u) => u.answered(&mut resp, cluster)?,
        None => switched_unasked(&resp, cluster)?,
    }
    let (parts, rbody) = resp.into_parts();
    if !trailers {
        return Ok((parts, ProxyBody::Upstream(rbody), None));
    }
    let (rbody, trailers) = Peeked::read(rbody)
        .await
        .map_err(|e| ProxyError::upstream_body(cluster.name(), &e))?;
    Ok((parts, rbody, trailers))
}

/// Sleep for a per-attempt timeout, or forever without one.
async fn sleep_for(timeout: Option<Duration>) {
    match timeout {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
}
