//! The request path of one listener, as a chain of steps. Each step says why it is
//! there; together they are everything a request goes through.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use weft_engine::{
    Action, ConnectionInfo, Exchange, ExchangeError, Filter, LocalResponse, Outcome,
    RequestContext, RequestHead, Responder, ResponseAction, ResponseHead,
};

use crate::body::{self, BufferError, ClientBody, Kept, Peeked, ProxyBody};
use crate::cluster::{Attempt, Cluster, UpstreamError};
use crate::conn::{ConnWatch, Watched};
use crate::done;
use crate::error::{ProxyError, Side};
use crate::normalize;
use crate::state::ListenerState;
use crate::upstream::{HeldConnection, Io};

/// The longest delay a filter may ask for; longer asks are cut to it.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// The most attempts one request makes, whatever its filters ask.
const MAX_ATTEMPTS: u32 = 10;
/// Tells the upstream which attempt of a request it sees, when retries are possible.
const ATTEMPT_HEADER: HeaderName = HeaderName::from_static("x-weft-attempt");
const ATTEMPTS: [&str; MAX_ATTEMPTS as usize] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// Serve one request. Never fails: every error becomes a response that says who
/// failed, with an error id the log shares.
pub(crate) async fn serve(
    state: Arc<ListenerState>,
    conn: Arc<ConnectionInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    // A gRPC client reads errors from `grpc-status`, not from an HTTP status.
    let grpc = is_grpc(req.headers());
    let mut req = req;
    let mut upgrade = Upgrade::of(&mut req, &state);
    let version = req.version();
    let logged = state.access.as_ref().filter(|a| a.sampled());
    // A chain without hooks (or no chain) costs nothing: no context, no exchange,
    // unless the request is logged.
    if !state.chain.has_hooks() && logged.is_none() {
        let mut resp = match forward(&state, req, &mut upgrade).await {
            Ok(resp) => resp,
            Err(e) => fail(&state.name, e, id, grpc),
        };
        if let Some(u) = upgrade {
            u.finish(&mut resp, state.conn.limits.idle_timeout);
        }
        answer_as(&state, &mut resp, version);
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let mut ctx = RequestContext::new(id, conn);
    if logged.is_some() {
        ctx.decisions = Some(Vec::new());
    }
    let mut lent = Lent(Some(Box::new(Exchange {
        request: RequestHead { parts, body: None },
        response: None,
        ctx,
    })));
    let (mut resp, responder) = match filtered(&state, &mut lent, body, grpc, &mut upgrade).await {
        Ok(done) => done,
        Err(e) => {
            let kind = e.exchange;
            (fail(&state.name, e, id, grpc), Responder::Proxy(kind))
        }
    };
    if let Some(u) = upgrade {
        u.finish(&mut resp, state.conn.limits.idle_timeout);
    }
    answer_as(&state, &mut resp, version);
    // The end phase: `on-done` runs once the response body has gone, whatever happened.
    Ok(match lent.0 {
        Some(ex) if state.chain.done || logged.is_some() => {
            done::wrap(resp, &state.chain, ex, responder, logged.cloned())
                .map(|d| ProxyBody::Done(Box::new(d)))
        }
        _ => resp,
    })
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

/// An HTTP/1.1 upgrade (WebSocket and the like) or a CONNECT tunnel on its way: the
/// request goes through the chain as any other. An upgrade asks the upstream to
/// switch too, and a 101 answer joins the two connections; a CONNECT opens a
/// connection to an endpoint of the routed cluster, and the proxy's 200 joins it to
/// the client's.
struct Upgrade {
    /// The protocol the client asked to switch to; none for CONNECT.
    protocol: Option<HeaderValue>,
    client: hyper::upgrade::OnUpgrade,
    upstream: Option<Far>,
}

/// The upstream side of an upgrade.
enum Far {
    /// An upstream that answered 101, the protocol it switched to, and the
    /// connection's place in its cluster's count.
    Switched(hyper::upgrade::OnUpgrade, HeaderValue, HeldConnection),
    /// A tunnel's connection, counted in its cluster's connections while it lasts.
    Tunnel(Box<dyn Io>, HeldConnection),
}

impl Upgrade {
    /// The upgrade a request asks for: HTTP/1.1, `Connection: upgrade` and an
    /// `Upgrade` naming protocols the listener passes (only those are asked of the
    /// upstream; a request naming none is served as a plain one, its `Upgrade`
    /// removed with the other hop-by-hop headers); or CONNECT, when the listener
    /// allows it.
    fn of(req: &mut Request<Incoming>, state: &ListenerState) -> Option<Self> {
        if req.method() == http::Method::CONNECT {
            return state.allow_connect.then(|| Self {
                protocol: None,
                client: hyper::upgrade::on(req),
                upstream: None,
            });
        }
        if req.version() != http::Version::HTTP_11 {
            return None;
        }
        // One lookup for the common case, a request without `Upgrade`.
        let headers = req.headers();
        let asked = headers.get(UPGRADE)?;
        let asks = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        if !asks {
            return None;
        }
        let protocol = allowed_upgrades(asked, &state.upgrades)?;
        Some(Self {
            protocol: Some(protocol),
            client: hyper::upgrade::on(req),
            upstream: None,
        })
    }

    /// Whether this is a CONNECT tunnel.
    fn is_connect(&self) -> bool {
        self.protocol.is_none()
    }

    /// Ask the upstream to switch as the client asked.
    fn ask(&self, headers: &mut HeaderMap) {
        if let Some(protocol) = &self.protocol {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(UPGRADE, protocol.clone());
        }
    }

    /// Keep the upstream's side of a 101, which must switch to a protocol the
    /// client asked for.
    fn answered<B>(
        &mut self,
        resp: &mut http::Response<B>,
        cluster: &Cluster,
    ) -> Result<(), ProxyError> {
        let Some(asked) = &self.protocol else {
            return switched_unasked(resp, cluster);
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(());
        }
        let protocol = match resp.headers().get(UPGRADE) {
            None => asked.clone(),
            Some(to) => {
                let chosen = to.to_str().ok().map(|t| protocol_name(t.trim()));
                let offered = asked
                    .to_str()
                    .ok()
                    .into_iter()
                    .flat_map(|a| a.split(','))
                    .any(|a| {
                        chosen.is_some_and(|c| protocol_name(a.trim()).eq_ignore_ascii_case(c))
                    });
                if !offered {
                    return Err(upstream_protocol(
                        cluster,
                        format!("switched to {to:?}, which the client did not ask for"),
                    ));
                }
                to.clone()
            }
        };
        let on = hyper::upgrade::on(resp);
        self.upstream = Some(Far::Switched(on, protocol, cluster.hold_connection()));
        Ok(())
    }

    /// Open the tunnel of a CONNECT to an endpoint of `cluster`: the proxy's own 200,
    /// as the response hooks see it.
    async fn tunnel(
        &mut self,
        cluster: &Cluster,
        attempt: &mut Attempt,
    ) -> Result<http::response::Parts, ProxyError> {
        let (io, held) = cluster
            .tunnel(attempt)
            .await
            .map_err(|e| upstream_error(cluster, e))?;
        self.upstream = Some(Far::Tunnel(io, held));
        Ok(Response::new(()).into_parts().0)
    }

    /// If the client gets its 101 (an upgrade) or a 2xx (CONNECT), join the two
    /// sides until either closes or no byte moves either way for `idle_timeout`; one
    /// with no upstream behind it (a filter's own answer) cannot be honoured and
    /// becomes a 502.
    fn finish(self, resp: &mut Response<ProxyBody>, idle_timeout: Duration) {
        let joined = match &self.protocol {
            Some(_) => resp.status() == StatusCode::SWITCHING_PROTOCOLS,
            None => resp.status().is_success(),
        };
        if !joined {
            return;
        }
        let (upstream, held) = match (self.upstream, &self.protocol) {
            (Some(Far::Switched(upstream, protocol, held)), Some(_)) => {
                let headers = resp.headers_mut();
                headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(UPGRADE, protocol);
                (Either::Left(upstream), held)
            }
            (Some(Far::Tunnel(io, held)), None) => {
                // A 2xx answer to CONNECT has no body: the tunnel follows the head.
                *resp.body_mut() = ProxyBody::empty();
                resp.headers_mut().remove(http::header::CONTENT_LENGTH);
                (Either::Right(io), held)
            }
            _ => {
                *resp.status_mut() = StatusCode::BAD_GATEWAY;
                *resp.body_mut() = ProxyBody::full("upgrade failed\n");
                return;
            }
        };
        let client = self.client;
        tokio::spawn(async move {
            let _held = held;
            let Ok(client) = client.await else {
                return;
            };
            let upstream: Box<dyn Io> = match upstream {
                Either::Left(switched) => match switched.await {
                    Ok(io) => Box::new(hyper_util::rt::TokioIo::new(io)),
                    Err(_) => return,
                },
                Either::Right(io) => io,
            };
            // Every byte either way passes the upstream side: watching it is enough.
            let watch = Arc::new(ConnWatch::new(u32::MAX));
            let mut upstream = Watched::new(upstream, watch.clone());
            let mut client = hyper_util::rt::TokioIo::new(client);
            tokio::select! {
                ended = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(e) = ended {
                        tracing::debug!("upgraded connection ended: {e}");
                    }
                }
                () = watch.idle(idle_timeout) => {
                    tracing::debug!("upgraded connection closed: idle for {idle_timeout:?}");
                }
            }
        });
    }
}

/// The name of an upgrade protocol without its version: `websocket` of `WebSocket/13`.
fn protocol_name(p: &str) -> &str {
    p.split('/').next().unwrap_or(p).trim()
}

/// The protocols of a client's `Upgrade` that the listener passes, as the value to
/// ask the upstream for; none when it names none of them.
fn allowed_upgrades(asked: &HeaderValue, allowed: &[Box<str>]) -> Option<HeaderValue> {
    let text = asked.to_str().ok()?;
    let passes = |p: &&str| {
        let name = protocol_name(p);
        // Validation refuses `h2c` in the list; refused here as well, whatever it says.
        !name.eq_ignore_ascii_case("h2c") && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    };
    let (mut total, mut kept) = (0, 0);
    for p in text.split(',').map(str::trim) {
        total += 1;
        kept += usize::from(passes(&p));
    }
    match kept {
        0 => None,
        // The usual case, one protocol that passes: sent on as it is.
        k if k == total => Some(asked.clone()),
        _ => {
            let list: Vec<&str> = text.split(',').map(str::trim).filter(passes).collect();
            HeaderValue::from_str(&list.join(", ")).ok()
        }
    }
}

/// A 101 to a request that asked for no switch (or for a CONNECT tunnel) is not
/// HTTP: an upstream error, never a tunnel.
fn switched_unasked<B>(resp: &http::Response<B>, cluster: &Cluster) -> Result<(), ProxyError> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Err(upstream_protocol(
            cluster,
            "answered 101 Switching Protocols to a request that asked for no upgrade".into(),
        ));
    }
    Ok(())
}

fn upstream_protocol(cluster: &Cluster, detail: String) -> ProxyError {
    ProxyError::new(
        Side::Upstream,
        StatusCode::BAD_GATEWAY,
        "upstream protocol error",
        format!("cluster {:?}: {detail}", cluster.name()),
    )
    .exchange(ExchangeError::ProtocolError)
}

/// The request's exchange, lent to each hook and given back after it.
struct Lent(Option<Box<Exchange>>);

impl Lent {
    const BACK: &str = "the exchange comes back from every hook";

    fn get(&self) -> &Exchange {
        self.0.as_deref().expect(Self::BACK)
    }

    fn get_mut(&mut self) -> &mut Exchange {
        self.0.as_deref_mut().expect(Self::BACK)
    }

    fn on_request(&mut self, filter: &Filter) -> Outcome<Action> {
        let (ex, outcome) = filter.on_request(self.0.take().expect(Self::BACK));
        self.0 = Some(ex);
        outcome
    }

    /// Note what a filter decided, when the request is logged.
    fn decided(&mut self, filter: &Filter, what: &str) {
        if let Some(d) = self.get_mut().ctx.decisions.as_mut() {
            d.push(format!("{}:{what}", filter.name()));
        }
    }

    fn on_response(&mut self, filter: &Filter) -> Outcome<ResponseAction> {
        let (ex, outcome) = filter.on_response(self.0.take().expect(Self::BACK));
        self.0 = Some(ex);
        outcome
    }
}

/// The checks every request passes before anything else sees it.
fn prepare(state: &ListenerState, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
    // CONNECT asks for a tunnel, which only a listener with `allow_connect` opens:
    // say so, rather than pass it on as a request the upstream cannot make sense of.
    if parts.method == http::Method::CONNECT && !state.allow_connect {
        return Err(ProxyError::new(
            Side::Downstream,
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT is not enabled",
            format!(
                "CONNECT {} refused: this listener does not tunnel",
                parts.uri
            ),
        ));
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

/// The header in which a proxy names its caller's workload to the next hop.
const SOURCE_WORKLOAD: HeaderName = HeaderName::from_static("x-weft-source-workload");

/// Remove from a client's request the headers the proxy sets on requests: the
/// attempt number, and the caller's workload unless the peer is a mesh proxy.
/// (`x-weft-fault` and the like are the client's to send: filters match on them.)
fn strip_owned(headers: &mut HeaderMap, mesh_internal: bool) {
    headers.remove(ATTEMPT_HEADER);
    if !mesh_internal {
        headers.remove(SOURCE_WORKLOAD);
    }
}

/// When a request has arrived, from which its timeout counts: at once for a request
/// without a body or with its body in memory, else when its streamed body ends, so a
/// slow upload is not cut short by a timeout meant for the upstream.
enum Arrival {
    At(Instant),
    Pending(oneshot::Receiver<Instant>),
}

impl Arrival {
    /// The request's deadline, once known.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        match self {
            Arrival::At(at) => Some(*at + timeout),
            Arrival::Pending(_) => None,
        }
    }

    /// Wait for the request's deadline.
    async fn expire(self, timeout: Duration) {
        let at = match self {
            Arrival::At(at) => at,
            // A body that failed or was dropped has arrived as much as it ever will.
            Arrival::Pending(rx) => rx.await.unwrap_or_else(|_| Instant::now()),
        };
        tokio::time::sleep_until((at + timeout).into()).await;
    }
}

/// A client's body to stream upstream (none when it is empty), and its arrival.
fn stream_body(
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

/// The plain path, for a listener whose chain has no hooks: checks, then the default
/// cluster, bounded in time.
async fn forward(
    state: &ListenerState,
    req: Request<Incoming>,
    upgrade: &mut Option<Upgrade>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let received = Instant::now();
    let (mut parts, body) = req.into_parts();
    prepare(state, &mut parts)?;
    if let Some(u) = upgrade {
        u.ask(&mut parts.headers);
    }
    let Some(cluster) = state.default_cluster.as_ref() else {
        return Err(no_route(state, &parts));
    };
    let (body, arrival) = stream_body(body, None, received);
    let mut attempt = Attempt::default();
    if let Some(u) = upgrade.as_mut().filter(|u| u.is_connect()) {
        let parts = u.tunnel(cluster, &mut attempt).await?;
        return Ok(Response::from_parts(parts, ProxyBody::empty()));
    }
    let mut resp = tokio::select! {
        biased;
        r = cluster.send(parts, body.unwrap_or_else(ProxyBody::empty), &mut attempt) => {
            r.map_err(|e| upstream_error(cluster, e))?
        }
        () = arrival.expire(state.request_timeout) => {
            if let Some(endpoint) = &attempt.endpoint {
                cluster.timed_out(endpoint, state.request_timeout);
            }
            return Err(timed_out(cluster, state.request_timeout, ExchangeError::Timeout));
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

fn no_route(state: &ListenerState, parts: &http::request::Parts) -> ProxyError {
    ProxyError::new(
        Side::Internal,
        StatusCode::NOT_FOUND,
        "no route",
        format!(
            "no filter routed {} {} and listener {:?} has no default_cluster",
            parts.method,
            parts.uri.path(),
            state.name
        ),
    )
}

fn timed_out(cluster: &Cluster, after: Duration, kind: ExchangeError) -> ProxyError {
    let what = if kind == ExchangeError::PerTryTimeout {
        "attempt"
    } else {
        "request"
    };
    ProxyError::new(
        Side::Upstream,
        StatusCode::GATEWAY_TIMEOUT,
        "upstream timed out",
        format!(
            "cluster {:?} did not answer the {what} within {after:?}",
            cluster.name()
        ),
    )
    .exchange(kind)
}

fn filter_failed(f: &weft_engine::FilterFailure) -> ProxyError {
    ProxyError::new(
        Side::Filter,
        StatusCode::SERVICE_UNAVAILABLE,
        "filter failed",
        f.to_string(),
    )
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

/// The path of a listener with filters: checks, request hooks, then the upstream
/// exchange as a loop of attempts whose responses (and failures) pass through the
/// response hooks, any of which may ask for another attempt.
async fn filtered(
    state: &ListenerState,
    lent: &mut Lent,
    body: Incoming,
    grpc: bool,
    upgrade: &mut Option<Upgrade>,
) -> Result<(Response<ProxyBody>, Responder), ProxyError> {
    let chain = &state.chain;
    let id = lent.get().ctx.id;
    let received = lent.get().ctx.received;
    prepare(state, &mut lent.get_mut().request.parts)?;

    // Bodies stream through untouched unless a filter asked to see them whole, or
    // one may retry and the body is small enough to keep for that.
    let (mut stream, arrival) = if chain.request_body {
        let whole = Box::pin(whole(body, state.max_body, Side::Downstream)).await?;
        lent.get_mut().request.body = Some(whole);
        (None, Arrival::At(Instant::now()))
    } else if chain.keep_request_body > 0 && !body.is_end_stream() {
        match Box::pin(body::keep(body, chain.keep_request_body)).await {
            Ok(Kept::Whole(kept)) => {
                lent.get_mut().request.body = Some(kept);
                (None, Arrival::At(Instant::now()))
            }
            Ok(Kept::Partial(prefix, rest)) => stream_body(rest, Some(prefix), received),
            Err(e) => {
                return Err(ProxyError::new(
                    Side::Downstream,
                    StatusCode::BAD_REQUEST,
                    "request body incomplete",
                    format!("client failed while sending the body: {e}"),
                ));
            }
        }
    } else {
        stream_body(body, None, received)
    };
    // Only a body in memory (or none) can be sent again.
    let replayable = stream.is_none();

    // The filter chain, in order: each filter may change the request, route it,
    // delay it, or answer it.
    let mut route: Option<&Arc<Cluster>> = None;
    for &i in chain.request_filters() {
        let filter = &chain.filters()[i];
        match lent.on_request(filter) {
            Outcome::Done(Action::Continue) => {}
            Outcome::Skipped(_) => lent.decided(filter, "failed-open"),
            Outcome::Done(Action::Route(name)) => {
                route = Some(routed_to(state, filter, &name)?);
                lent.decided(filter, "route");
            }
            Outcome::Done(Action::Delay(ns)) => {
                lent.decided(filter, "delay");
                tokio::time::sleep(Duration::from_nanos(ns).min(MAX_DELAY)).await;
            }
            Outcome::Done(Action::Respond(local)) => {
                lent.decided(filter, "respond");
                // Filters before this one see the local response like an upstream one.
                lent.get_mut().response = Some(local_response(filter.name(), local)?);
                let mut responder = Responder::Filter(filter.name().to_owned());
                let mut body = None;
                response_hooks(state, lent, i, &mut body, &mut responder, |_| false)?;
                return Ok((finish(lent, body), responder));
            }
            Outcome::Failed(f) => {
                lent.decided(filter, "failed");
                return Err(filter_failed(&f));
            }
        }
    }

    // The upstream cluster: the last route a filter chose, or the listener's default.
    let Some(cluster) = route.or(state.default_cluster.as_ref()) else {
        return Err(no_route(state, &lent.get().request.parts));
    };

    // The exchange loop. The request's timeout counts from its arrival across every
    // attempt and delay; a filter may have set it, and a per-attempt one.
    let timeout = lent.get().ctx.timeout.unwrap_or(state.request_timeout);
    let deadline = arrival.deadline(timeout);
    let expire = arrival.expire(timeout);
    tokio::pin!(expire);
    // Hooks after the exchange read the request head: keep it, send a copy.
    let keep_head = chain.response || chain.done || lent.get().ctx.decisions.is_some();
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        if attempt > 1 {
            cluster.count_retry();
        }
        let ex = lent.get_mut();
        ex.ctx.attempt = attempt;
        ex.ctx.cluster = Some(cluster.name_arc());
        ex.ctx.connect_time = None;
        ex.ctx.first_byte_time = None;
        let mut parts = if keep_head {
            clone_parts(&ex.request.parts)
        } else {
            std::mem::replace(&mut ex.request.parts, Request::new(()).into_parts().0)
        };
        if chain.response {
            // A static value: no allocation per request.
            let n = ATTEMPTS[(attempt as usize - 1).min(ATTEMPTS.len() - 1)];
            parts
                .headers
                .insert(ATTEMPT_HEADER, HeaderValue::from_static(n));
        }
        if let Some(u) = upgrade.as_ref() {
            u.ask(&mut parts.headers);
        }
        let body = match (&ex.request.body, stream.take()) {
            (Some(b), _) => ProxyBody::full(b.clone()),
            (None, Some(s)) => s,
            (None, None) => ProxyBody::empty(),
        };
        let per_try = ex.ctx.per_try_timeout;
        let sent_at = Instant::now();
        let mut info = Attempt::default();
        let exchange = async {
            if let Some(u) = upgrade.as_mut().filter(|u| u.is_connect()) {
                let parts = u.tunnel(cluster, &mut info).await?;
                return Ok((parts, ProxyBody::empty(), None));
            }
            let mut resp = cluster
                .send(parts, body, &mut info)
                .await
                .map_err(|e| upstream_error(cluster, e))?;
            match upgrade.as_mut() {
                Some(u) => u.answered(&mut resp, cluster)?,
                None => switched_unasked(&resp, cluster)?,
            }
            let (parts, rbody) = resp.into_parts();
            if !chain.response_trailers {
                return Ok((parts, ProxyBody::Upstream(rbody), None));
            }
            // A short answer's trailers (a gRPC status) for the response hooks.
            let (rbody, trailers) = Peeked::read(rbody).await.map_err(|e| {
                ProxyError::new(
                    Side::Upstream,
                    StatusCode::BAD_GATEWAY,
                    "upstream failed",
                    format!("cluster {:?}: response body failed: {e}", cluster.name()),
                )
                .exchange(ExchangeError::Reset)
            })?;
            Ok((parts, rbody, trailers))
        };
        let outcome = tokio::select! {
            biased;
            r = exchange => r,
            () = sleep_for(per_try) => {
                Err(timed_out(cluster, per_try.unwrap_or_default(), ExchangeError::PerTryTimeout))
            }
            () = &mut expire => Err(timed_out(cluster, timeout, ExchangeError::Timeout)),
        };
        // A timed-out attempt is a slow sample and a failure of its endpoint.
        if let (Err(e), Some(endpoint)) = (&outcome, &info.endpoint)
            && matches!(
                e.exchange,
                Some(ExchangeError::PerTryTimeout | ExchangeError::Timeout)
            )
        {
            cluster.timed_out(endpoint, sent_at.elapsed());
        }
        let ex = lent.get_mut();
        ex.ctx.endpoint = info.endpoint.map(|e| e.authority.clone());
        ex.ctx.connect_time = info.connect_time;
        let (mut head, mut rbody, mut responder) = match outcome {
            Ok((parts, rbody, trailers)) => {
                ex.ctx.first_byte_time = Some(sent_at.elapsed());
                let head = ResponseHead {
                    parts,
                    body: None,
                    trailers,
                    error: None,
                };
                (head, Some(rbody), Responder::Upstream)
            }
            // The client's own body broke off, or no hook could look at the failure.
            Err(e) if e.side == Side::Downstream || !chain.response => return Err(e),
            Err(e) => {
                // The proxy's answer goes through the response hooks like an
                // upstream's, so filters can retry, count and log it.
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
        if !chain.response {
            ex.response = Some(head);
            return Ok((finish(lent, rbody), responder));
        }
        // Response hooks, buffering the body only when a filter asked to see it.
        if chain.response_body
            && let Some(b) = rbody.take()
        {
            head.body = Some(Box::pin(whole(b, state.max_body, Side::Upstream)).await?);
        }
        ex.response = Some(head);
        let may_retry = |delay: Duration| {
            replayable
                && attempt < MAX_ATTEMPTS
                && deadline.is_some_and(|d| Instant::now() + delay < d)
        };
        let upto = chain.filters().len();
        match response_hooks(state, lent, upto, &mut rbody, &mut responder, may_retry)? {
            None => return Ok((finish(lent, rbody), responder)),
            Some(delay) => {
                // This response is dropped (its connection finishes in the
                // background or closes); the next attempt goes after the delay.
                lent.get_mut().response = None;
                drop(rbody);
                tracing::debug!(
                    listener = &*state.name,
                    request = id,
                    attempt,
                    "retrying in {delay:?}"
                );
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// The cluster a filter routed to: one the configuration has and, when the filter
/// declared its clusters, one of those.
fn routed_to<'s>(
    state: &'s ListenerState,
    filter: &Filter,
    name: &str,
) -> Result<&'s Arc<Cluster>, ProxyError> {
    let why = match state.clusters.get(name) {
        Some(c) if filter.may_route(name) => return Ok(c),
        Some(_) => "which it did not declare",
        None => "which does not exist",
    };
    Err(ProxyError::new(
        Side::Filter,
        StatusCode::BAD_GATEWAY,
        "no such upstream",
        format!(
            "filter {:?} routed to cluster {name:?}, {why}",
            filter.name()
        ),
    ))
}

/// Sleep for a per-attempt timeout, or forever without one.
async fn sleep_for(timeout: Option<Duration>) {
    match timeout {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
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

/// Run the response hooks of the filters before position `upto`, last first. Returns
/// the delay of a retry a hook asked for and `may_retry` allowed; a retry that is not
/// allowed goes on as if the hook continued.
fn response_hooks(
    state: &ListenerState,
    lent: &mut Lent,
    upto: usize,
    stream: &mut Option<ProxyBody>,
    responder: &mut Responder,
    may_retry: impl Fn(Duration) -> bool,
) -> Result<Option<Duration>, ProxyError> {
    for filter in state.chain.filters()[..upto]
        .iter()
        .rev()
        .filter(|f| f.interest().response)
    {
        match lent.on_response(filter) {
            Outcome::Done(ResponseAction::Continue) => {}
            Outcome::Skipped(_) => lent.decided(filter, "failed-open"),
            Outcome::Done(ResponseAction::Respond(local)) => {
                lent.decided(filter, "respond");
                lent.get_mut().response = Some(local_response(filter.name(), local)?);
                *stream = None;
                *responder = Responder::Filter(filter.name().to_owned());
            }
            Outcome::Done(ResponseAction::Retry(ns)) => {
                let delay = Duration::from_nanos(ns).min(MAX_DELAY);
                if may_retry(delay) {
                    lent.decided(filter, "retry");
                    return Ok(Some(delay));
                }
                lent.decided(filter, "retry-refused");
                tracing::debug!(
                    listener = &*state.name,
                    request = lent.get().ctx.id,
                    filter = filter.name(),
                    "retry not possible (body not kept, attempts or time used up)"
                );
            }
            Outcome::Failed(f) => {
                lent.decided(filter, "failed");
                return Err(filter_failed(&f));
            }
        }
    }
    Ok(None)
}

/// Who failed when an upstream exchange did: the upstream, or the client whose
/// request body broke off while it was being forwarded.
fn upstream_error(cluster: &Cluster, e: UpstreamError) -> ProxyError {
    if e.client_body {
        return ProxyError::new(
            Side::Downstream,
            StatusCode::BAD_REQUEST,
            "request body incomplete",
            format!(
                "the client's body failed while going to cluster {:?}: {e}",
                cluster.name()
            ),
        );
    }
    let detail = format!("cluster {:?}: {e}", cluster.name());
    let kind = e.kind();
    if let Some(limit) = e.limit {
        let mut error = ProxyError::new(
            Side::Upstream,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream overloaded",
            detail,
        )
        .exchange(kind);
        error.overflow = Some(limit);
        return error;
    }
    if e.endpoint.is_none() {
        return ProxyError::new(
            Side::Upstream,
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
            detail,
        )
        .exchange(kind);
    }
    if e.connect {
        ProxyError::new(
            Side::Upstream,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream unavailable",
            detail,
        )
        .exchange(kind)
    } else {
        ProxyError::new(
            Side::Upstream,
            StatusCode::BAD_GATEWAY,
            "upstream failed",
            detail,
        )
        .exchange(kind)
    }
}

/// Buffer a whole body for the filters that asked to see it. `side` is who sends it:
/// too large from the client is 413, from the upstream 502.
async fn whole<B>(body: B, limit: usize, side: Side) -> Result<bytes::Bytes, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes, Error = hyper::Error>,
{
    let (who, too_large, failed) = match side {
        Side::Downstream => (
            "client",
            (StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            (StatusCode::BAD_REQUEST, "request body incomplete"),
        ),
        _ => (
            "upstream",
            (StatusCode::BAD_GATEWAY, "upstream response too large"),
            (StatusCode::BAD_GATEWAY, "upstream response incomplete"),
        ),
    };
    body::buffer(body, limit).await.map_err(|e| match e {
        BufferError::TooLarge => ProxyError::new(
            side,
            too_large.0,
            too_large.1,
            format!("{who} body larger than {limit} bytes"),
        ),
        BufferError::Peer(e) => ProxyError::new(
            side,
            failed.0,
            failed.1,
            format!("{who} failed while sending the body: {e}"),
        ),
    })
}

/// A filter's local response as a response head, checked.
fn local_response(filter: &str, local: LocalResponse) -> Result<ResponseHead, ProxyError> {
    let bad = |what: String| {
        ProxyError::new(
            Side::Filter,
            StatusCode::INTERNAL_SERVER_ERROR,
            "filter sent an invalid response",
            format!("filter {filter:?} sent an invalid local response: {what}"),
        )
    };
    let status =
        StatusCode::from_u16(local.status).map_err(|_| bad(format!("status {}", local.status)))?;
    let mut builder = Response::builder().status(status);
    for h in local.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad(format!("header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(&h.value)
            .map_err(|_| bad(format!("value of header {:?}", h.name)))?;
        builder = builder.header(name, value);
    }
    let (mut parts, ()) = builder
        .body(())
        .map_err(|e| bad(e.to_string()))?
        .into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(ResponseHead {
        parts,
        body: Some(local.body.into()),
        trailers: None,
        error: None,
    })
}

/// Remove the headers that only mean something on one connection (RFC 9110 §7.6.1),
/// including those the `connection` header names. `te: trailers` stays: gRPC needs it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            // `te: trailers` is for gRPC; `host` is the request's target, not a
            // property of the connection, whatever a client says.
            if name != TE && name != HOST {
                headers.remove(name);
            }
        }
        headers.remove(CONNECTION);
    }
    for name in [TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    if let Some(te) = headers.get(TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(TE);
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

    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));

        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("te"));
    }
}
