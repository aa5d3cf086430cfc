//! The request path of one listener, in phases. Each phase says why it is there;
//! together they are everything a request goes through:
//!
//! 1. **prepare**: the checks every request passes before anything else sees it;
//! 2. **request body**: streamed through, or kept in memory when a filter asked to
//!    see it or a retry may need it again;
//! 3. **request phase**: the chain's request hooks, first filter first, which route,
//!    delay or answer the request (`hooks.rs`);
//! 4. **attempts**: one upstream attempt at a time (`attempt.rs`), under the request's
//!    timeout and the attempt's own;
//! 5. **response phase**: the response hooks, last filter first, which see the
//!    upstream's answer or the proxy's error and may ask for another attempt;
//! 6. **done**: `on-done` hooks and the access log, once the response body has gone
//!    (`done.rs`).
//!
//! A listener whose chain has no hooks takes the plain path: prepare, then the
//! default cluster. Upgrades and CONNECT tunnels go through the same phases and are
//! joined at the end (`upgrade.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::CONNECTION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use weft_engine::{ConnectionInfo, Exchange, RequestContext, RequestHead, Responder, ResponseHead};

use crate::attempt::{self, Answer, Arrival, MAX_ATTEMPTS, stream_body};
use crate::body::{self, Kept, ProxyBody};
use crate::cluster::{Attempt, Cluster};
use crate::done;
use crate::error::{ProxyError, Side};
use crate::hooks::{Forward, Lent, Verdict};
use crate::normalize::{self, strip_hop_by_hop, strip_owned};
use crate::state::ListenerState;
use crate::upgrade::{Upgrade, switched_unasked};

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// Serve one request. Never fails: every error becomes a response that says who
/// failed, with an error id the log shares.
pub(crate) async fn serve(
    state: Arc<ListenerState>,
    conn: Arc<ConnectionInfo>,
    captured: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    // A gRPC client reads errors from `grpc-status`, not from an HTTP status.
    let grpc = is_grpc(req.headers());
    let mut req = req;
    let mut upgrade = Upgrade::of(&mut req, &state);
    let version = req.version();
    let head = req.method() == http::Method::HEAD;
    let logged = state.access.as_ref().filter(|a| a.sampled());
    // A chain without hooks (or no chain) costs nothing: no context, no exchange,
    // unless the request is logged.
    if !state.chain.has_hooks() && logged.is_none() {
        let resp = match forward(&state, captured, req, &mut upgrade).await {
            Ok(resp) => resp,
            Err(e) => fail(&state.name, e, id, grpc),
        };
        return Ok(respond(&state, headless(head, resp), upgrade, version));
    }
    let (parts, body) = req.into_parts();
    let mut ctx = RequestContext::new(id, conn);
    if logged.is_some() {
        ctx.decisions = Some(Vec::new());
    }
    let mut lent = Lent::new(Box::new(Exchange {
        request: RequestHead { parts, body: None },
        response: None,
        ctx,
    }));
    let (resp, responder) =
        match filtered(&state, &mut lent, body, grpc, captured, &mut upgrade).await {
            Ok(done) => done,
            Err(e) => {
                let kind = e.exchange;
                (fail(&state.name, e, id, grpc), Responder::Proxy(kind))
            }
        };
    let resp = respond(&state, headless(head, resp), upgrade, version);
    // The end phase: `on-done` runs once the response body has gone, whatever happened.
    Ok(match lent.into_inner() {
        Some(ex) if state.chain.done || logged.is_some() => {
            done::wrap(resp, &state.chain, ex, responder, logged.cloned())
                .map(|d| ProxyBody::Done(Box::new(d)))
        }
        _ => resp,
    })
}

/// The path of a listener with filters, phase by phase.
async fn filtered(
    state: &ListenerState,
    lent: &mut Lent,
    body: Incoming,
    grpc: bool,
    captured: Option<SocketAddr>,
    upgrade: &mut Option<Upgrade>,
) -> Result<(Response<ProxyBody>, Responder), ProxyError> {
    prepare(state, &mut lent.get_mut().request.parts)?;
    let (stream, arrival) = request_body(state, lent, body).await?;
    let route = match state
        .chain
        .request_phase(lent, &state.clusters, state.request_timeout)
        .await?
    {
        Forward::Answered(responder) => return Ok((finish(lent, None), responder)),
        Forward::To(route) => route,
    };
    // The upstream cluster: the last route a filter chose, else the one owning where
    // a captured connection was going, else the listener's default.
    let owner = captured_route(state, route, captured);
    let Some(cluster) = route.or(owner.as_ref()).or(state.default_cluster.as_ref()) else {
        return Err(ProxyError::no_route(&state.name, &lent.get().request.parts));
    };
    let upstream = Upstream {
        cluster,
        stream,
        arrival,
        grpc,
    };
    attempts(state, lent, upstream, upgrade).await
}

/// The cluster owning a captured connection's original destination, when no filter
/// routed its request: a lookup in the listener's state, no lock taken.
fn captured_route(
    state: &ListenerState,
    routed: Option<&Arc<Cluster>>,
    captured: Option<SocketAddr>,
) -> Option<Arc<Cluster>> {
    match (routed, captured, &state.capture) {
        (None, Some(destination), Some(capture)) => capture.route(destination),
        _ => None,
    }
}

/// The checks every request passes before anything else sees it.
fn prepare(state: &ListenerState, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
    // CONNECT asks for a tunnel, which only a listener with `allow_connect` opens:
    // say so, rather than pass it on as a request the upstream cannot make sense of.
    if parts.method == http::Method::CONNECT && !state.allow_connect {
        return Err(ProxyError::connect_disabled(&parts.uri));
    }
    // One authority for filters and the upstream: an absolute-form target wins over
    // Host, ambiguous ones are refused, and the URI goes on in origin form. Settled
    // before hop-by-hop headers go, so `Connection: host` cannot take it away.
    normalize::authority(parts)?;

    // Hop-by-hop headers describe the client's connection, not the request; they
    // must not reach filters or the upstream.
    strip_hop_by_hop(&mut parts.headers);

    // Headers the proxy sets on requests are its own: a client's would pass for the
    // proxy's word (an attempt number, a caller's workload). A mesh listener's peers
    // are proxies, whose word on their caller stands.
    strip_owned(&mut parts.headers, state.mesh_internal);

    // Filters route on the path the upstream will see: `/public/../admin` is
    // `/admin` for both.
    if state.normalize_path {
        normalize::path(parts)?;
    }
    Ok(())
}

/// The request body: streamed through untouched unless a filter asked to see it
/// whole, or one may retry and the body is small enough to keep for that. Returns the
/// body still to stream, if any, and when the request will have arrived.
async fn request_body(
    state: &ListenerState,
    lent: &mut Lent,
    body: Incoming,
) -> Result<(Option<ProxyBody>, Arrival), ProxyError> {
    let chain = &state.chain;
    let received = lent.get().ctx.received;
    if chain.request_body {
        let whole = buffered(body, state.max_body, Side::Downstream).await?;
        lent.get_mut().request.body = Some(whole);
        return Ok((None, Arrival::At(Instant::now())));
    }
    if chain.keep_request_body == 0 || body.is_end_stream() {
        return Ok(stream_body(body, None, received));
    }
    match Box::pin(body::keep(body, chain.keep_request_body)).await {
        Ok(Kept::Whole(kept)) => {
            lent.get_mut().request.body = Some(kept);
            Ok((None, Arrival::At(Instant::now())))
        }
        Ok(Kept::Partial(prefix, rest)) => Ok(stream_body(rest, Some(prefix), received)),
        Err(e) => Err(ProxyError::client_body(format!(
            "client failed while sending the body: {e}"
        ))),
    }
}

/// Where the attempts of a routed request go, with what.
struct Upstream<'s> {
    cluster: &'s Arc<Cluster>,
    /// The client's body still to stream; none when it is in memory (or empty).
    stream: Option<ProxyBody>,
    arrival: Arrival,
    grpc: bool,
}

/// The upstream exchange as a loop of attempts, each one's response (or failure)
/// passing through the response phase, which may ask for another.
async fn attempts(
    state: &ListenerState,
    lent: &mut Lent,
    up: Upstream<'_>,
    upgrade: &mut Option<Upgrade>,
) -> Result<(Response<ProxyBody>, Responder), ProxyError> {
    let chain = &state.chain;
    let Upstream {
        cluster,
        mut stream,
        arrival,
        grpc,
    } = up;
    // Only a body in memory (or none) can be sent again.
    let replayable = stream.is_none();
    // The request's timeout counts from its arrival across every attempt and delay;
    // a filter may have set it, and a per-attempt one.
    let timeout = lent.get().ctx.timeout.unwrap_or(state.request_timeout);
    let deadline = arrival.deadline(timeout);
    let expire = arrival.expire(timeout);
    tokio::pin!(expire);
    // Hooks after the exchange read the request head: keep it, send a copy.
    let keep_head = chain.response || chain.done || lent.get().ctx.decisions.is_some();
    let mut n: u32 = 0;
    loop {
        n += 1;
        let ex = begin(lent.get_mut(), cluster, n);
        let mut req = attempt::request(ex, n, keep_head, chain.response, &mut stream);
        if let Some(u) = upgrade.as_ref() {
            u.ask(&mut req.0.headers);
        }
        let per_try = ex.ctx.per_try_timeout;
        let sent_at = Instant::now();
        let mut info = Attempt::requiring(ex.ctx.upstream_identity_required.clone());
        let trailers = chain.response_trailers;
        let limits = (expire.as_mut(), timeout);
        let outcome =
            attempt::run(cluster, req, upgrade, trailers, per_try, limits, &mut info).await;
        let ex = learned(
            lent.get_mut(),
            info,
            outcome.is_ok().then(|| sent_at.elapsed()),
        );
        let (mut head, mut rbody, responder) = shown(state, outcome, ex.ctx.id, grpc)?;
        if !chain.response {
            ex.response = Some(head);
            return Ok((finish(lent, rbody), responder));
        }
        // Response hooks, buffering the body only when a filter asked to see it.
        if chain.response_body
            && let Some(b) = rbody.take()
        {
            head.body = Some(buffered(b, state.max_body, Side::Upstream).await?);
        }
        ex.response = Some(head);
        let may_retry = |delay: Duration| {
            replayable && n < MAX_ATTEMPTS && deadline.is_some_and(|d| Instant::now() + delay < d)
        };
        let delay = match chain.response_phase(lent, chain.filters().len(), may_retry)? {
            Verdict::Continue => return Ok((finish(lent, rbody), responder)),
            Verdict::Replaced(by) => return Ok((finish(lent, None), by)),
            Verdict::Retry(delay) => delay,
        };
        // This response is dropped (its connection finishes in the background or
        // closes); the next attempt goes after the delay.
        lent.get_mut().response = None;
        drop(rbody);
        let request = lent.get().ctx.id;
        tracing::debug!(
            listener = &*state.name,
            request,
            attempt = n,
            "retrying in {delay:?}"
        );
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// The context of attempt number `n`, as filters see it.
fn begin<'e>(ex: &'e mut Exchange, cluster: &Cluster, n: u32) -> &'e mut Exchange {
    if n > 1 {
        cluster.count_retry();
    }
    ex.ctx.attempt = n;
    ex.ctx.cluster = Some(cluster.name_arc());
    ex.ctx.connect_time = None;
    ex.ctx.first_byte_time = None;
    ex
}

/// What the attempt learned, in its context: where it went, how long connecting
/// and the first byte took, and what identity the upstream proved.
fn learned(ex: &mut Exchange, info: Attempt, first_byte: Option<Duration>) -> &mut Exchange {
    ex.ctx.endpoint = info.endpoint.map(|e| e.authority.clone());
    ex.ctx.connect_time = info.connect_time;
    ex.ctx.upstream_identity = info.identity;
    ex.ctx.first_byte_time = first_byte;
    ex
}

/// What the response phase is shown of an attempt: the upstream's response, or the
/// proxy's own answer to its failure, which goes through the response hooks like an
/// upstream's so filters can retry, count and log it. A failure of the client's own
/// body, or one no hook could look at, ends the request.
fn shown(
    state: &ListenerState,
    outcome: Result<Answer, ProxyError>,
    id: u64,
    grpc: bool,
) -> Result<(ResponseHead, Option<ProxyBody>, Responder), ProxyError> {
    let (mut head, rbody, responder) = match outcome {
        Ok((parts, rbody, trailers)) => {
            let head = ResponseHead {
                parts,
                body: None,
                trailers,
                error: None,
            };
            (head, Some(rbody), Responder::Upstream)
        }
        Err(e) if e.side == Side::Downstream || !state.chain.response => return Err(e),
        Err(e) => {
            let kind = e.exchange;
            let (parts, body) = fail(&state.name, e, id, grpc).into_parts();
            let body = match body {
                ProxyBody::Full(b) => b,
                _ => None,
            };
            let head = ResponseHead {
                parts,
                body,
                trailers: None,
                error: kind,
            };
            (head, None, Responder::Proxy(kind))
        }
    };
    strip_hop_by_hop(&mut head.parts.headers);
    Ok((head, rbody, responder))
}

/// The plain path, for a listener whose chain has no hooks: checks, then the default
/// cluster, bounded in time.
async fn forward(
    state: &ListenerState,
    captured: Option<SocketAddr>,
    req: Request<Incoming>,
    upgrade: &mut Option<Upgrade>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let received = Instant::now();
    let (mut parts, body) = req.into_parts();
    prepare(state, &mut parts)?;
    if let Some(u) = upgrade {
        u.ask(&mut parts.headers);
    }
    let owner = captured_route(state, None, captured);
    let Some(cluster) = owner.as_ref().or(state.default_cluster.as_ref()) else {
        return Err(ProxyError::no_route(&state.name, &parts));
    };
    let (body, arrival) = stream_body(body, None, received);
    let mut attempt = Attempt::default();
    if let Some(u) = upgrade.as_mut().filter(|u| u.is_connect()) {
        let parts = u.tunnel(cluster, &mut attempt).await?;
        return Ok(Response::from_parts(parts, ProxyBody::empty()));
    }
    let timeout = state.request_timeout;
    let mut resp = tokio::select! {
        biased;
        r = cluster.send(parts, body.unwrap_or_else(ProxyBody::empty), &mut attempt) => {
            r.map_err(|e| ProxyError::upstream(cluster.name(), &e))?
        }
        () = arrival.expire(timeout) => {
            if let Some(endpoint) = &attempt.endpoint {
                cluster.timed_out(endpoint, timeout);
            }
            let kind = weft_engine::ExchangeError::Timeout;
            return Err(ProxyError::timed_out(cluster.name(), timeout, kind));
        }
    };
    match upgrade {
        Some(u) => u.answered(&mut resp, cluster)?,
        None => switched_unasked(&resp, cluster)?,
    }
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    Ok(Response::from_parts(rparts, ProxyBody::Upstream(rbody)))
}

/// Buffer a whole body for the filters that asked to see it; `side` sends it.
async fn buffered<B>(body: B, limit: usize, side: Side) -> Result<bytes::Bytes, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes, Error = hyper::Error>,
{
    Box::pin(body::buffer(body, limit))
        .await
        .map_err(|e| ProxyError::unbuffered(side, limit, e))
}

/// The answer to a HEAD request has no body: HTTP/1.1 leaves it out by itself, but
/// HTTP/2 would send a body the proxy or a filter made, and the client would reset
/// the stream. An upstream's body is left to hyper, which reads none for HEAD (and
/// so keeps the connection for the next request).
fn headless(head: bool, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if !head || matches!(resp.body(), ProxyBody::Upstream(_)) {
        return resp;
    }
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, ProxyBody::empty())
}

/// The response to send: the exchange's response head with its body.
fn finish(lent: &mut Lent, stream: Option<ProxyBody>) -> Response<ProxyBody> {
    let Some(ResponseHead { parts, body, .. }) = lent.get_mut().response.take() else {
        // Every path sets a response before it finishes.
        return Response::new(ProxyBody::empty());
    };
    let body = match (body, stream) {
        (Some(b), _) => ProxyBody::full(b),
        (None, Some(s)) => s,
        (None, None) => ProxyBody::empty(),
    };
    Response::from_parts(parts, body)
}

/// The response as the client's connection takes it: an upgrade joined or refused,
/// in the client's HTTP version.
fn respond(
    state: &ListenerState,
    mut resp: Response<ProxyBody>,
    upgrade: Option<Upgrade>,
    version: http::Version,
) -> Response<ProxyBody> {
    if let Some(u) = upgrade {
        u.finish(&mut resp, state.conn.limits.idle_timeout);
    }
    answer_as(state, &mut resp, version);
    resp
}

/// The response as this connection speaks: in its own HTTP version, whatever the
/// upstream spoke (RFC 9110 §6.2: an HTTP/1.0 backend must not make a client drop
/// its connection), and, while the proxy drains, telling an HTTP/1 client to
/// reconnect (elsewhere, once balancers noticed `/ready`).
fn answer_as(state: &ListenerState, resp: &mut Response<ProxyBody>, version: http::Version) {
    *resp.version_mut() = version;
    if version <= http::Version::HTTP_11
        && resp.status() != StatusCode::SWITCHING_PROTOCOLS
        && state.draining.load(Ordering::Relaxed)
    {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Whether a request is gRPC: `content-type: application/grpc` or `application/grpc+...`.
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The client's answer for an error the proxy made, logged with its id.
fn fail(listener: &str, e: ProxyError, id: u64, grpc: bool) -> Response<ProxyBody> {
    e.log(listener, id);
    if grpc {
        e.into_grpc_response(id)
    } else {
        e.into_response(id)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_is_told_by_its_content_type() {
        let with = |ct: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            super::is_grpc(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("Application/GRPC; charset=x"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!super::is_grpc(&http::HeaderMap::new()));
    }
}
