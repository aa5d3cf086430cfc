//! The request path of one listener, as a chain of steps. Each step says why it is
//! there; together they are everything a request goes through.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use weft_engine::{
    Action, ConnectionInfo, LocalResponse, Outcome, RequestHead, ResponseAction, ResponseHead,
};

use crate::body::{self, BufferError, ProxyBody};
use crate::chain::FilterChain;
use crate::cluster::{Cluster, UpstreamError};
use crate::error::{ProxyError, Side};
use crate::normalize;
use crate::upstream::UpstreamBody;

/// The longest delay a filter may ask for; longer asks are cut to it.
const MAX_DELAY: Duration = Duration::from_secs(60);

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// What a listener's requests need, swapped as a whole when configuration changes.
#[derive(Debug)]
pub struct ListenerState {
    /// The listener's name.
    pub name: Arc<str>,
    /// Its filter chain.
    pub chain: FilterChain,
    /// Every cluster, by name.
    pub clusters: Arc<HashMap<String, Arc<Cluster>>>,
    /// Where requests go when no filter routes them.
    pub default_cluster: Option<Arc<Cluster>>,
    /// The upstream must answer within this time.
    pub request_timeout: Duration,
    /// The largest body a filter may have buffered.
    pub max_body: usize,
    /// Normalise request paths before filters see them.
    pub normalize_path: bool,
    /// TLS and HTTP settings for new connections.
    pub(crate) conn: Arc<crate::listener::ConnParts>,
}

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
    match proxy(&state, conn, req, id, grpc).await {
        Ok(resp) => Ok(resp),
        Err(e) => Ok(fail(&state.name, e, id, grpc)),
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

async fn proxy(
    state: &ListenerState,
    conn: Arc<ConnectionInfo>,
    req: Request<Incoming>,
    id: u64,
    grpc: bool,
) -> Result<Response<ProxyBody>, ProxyError> {
    let chain = &state.chain;
    let (mut parts, body) = req.into_parts();

    // One authority for filters and the upstream: an absolute-form target wins over
    // Host, ambiguous ones are refused, and the URI goes on in origin form. Settled
    // before hop-by-hop headers go, so `Connection: host` cannot take it away.
    // CONNECT asks for a tunnel, which no listener offers yet: say so, rather than
    // pass it on as a request the upstream cannot make sense of.
    if parts.method == http::Method::CONNECT {
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
    normalize::authority(&mut parts)?;

    // Hop-by-hop headers describe the client's connection, not the request; they
    // must not reach filters or the upstream.
    strip_hop_by_hop(&mut parts.headers);

    // Filters route on the path the upstream will see: `/public/../admin` is
    // `/admin` for both.
    if state.normalize_path {
        normalize::path(&mut parts)?;
    }

    // Bodies stream through untouched unless a filter asked to see them whole.
    let (buffered, stream) = if chain.request_body {
        (
            Some(Box::pin(whole(body, state.max_body, Side::Downstream)).await?),
            None,
        )
    } else {
        (None, Some(body))
    };

    let mut head = RequestHead {
        parts,
        body: buffered,
        id,
        conn,
    };

    // The filter chain, in order: each filter may change the request, route it,
    // delay it, or answer it. The head is boxed only while it moves through hooks,
    // where a pointer moves for free; a chain without request hooks costs nothing.
    let mut route: Option<&Arc<Cluster>> = None;
    if !chain.request_filters().is_empty() {
        let mut boxed = Box::new(head);
        for &i in chain.request_filters() {
            let filter = &chain.filters()[i];
            let (h, outcome) = filter.on_request(boxed);
            boxed = h;
            match outcome {
                Outcome::Done(Action::Continue) | Outcome::Skipped(_) => {}
                Outcome::Done(Action::Route(name)) => match state.clusters.get(&name) {
                    Some(c) => route = Some(c),
                    None => {
                        return Err(ProxyError::new(
                            Side::Filter,
                            StatusCode::BAD_GATEWAY,
                            "no such upstream",
                            format!(
                                "filter {:?} routed to unknown cluster {name:?}",
                                filter.name()
                            ),
                        ));
                    }
                },
                Outcome::Done(Action::Delay(ns)) => {
                    tokio::time::sleep(Duration::from_nanos(ns).min(MAX_DELAY)).await;
                }
                Outcome::Done(Action::Respond(local)) => {
                    // Filters before this one see the local response like an upstream one.
                    let head = local_response(filter.name(), local, boxed.id)?;
                    return Ok(respond(state, i, head, None, grpc));
                }
                Outcome::Failed(f) => {
                    return Err(ProxyError::new(
                        Side::Filter,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "filter failed",
                        f.to_string(),
                    ));
                }
            }
        }
        head = *boxed;
    }

    // The upstream cluster: the last route a filter chose, or the listener's default.
    let Some(cluster) = route.or(state.default_cluster.as_ref()) else {
        return Err(ProxyError::new(
            Side::Internal,
            StatusCode::NOT_FOUND,
            "no route",
            format!(
                "no filter routed {} {} and listener {:?} has no default_cluster",
                head.parts.method,
                head.parts.uri.path(),
                state.name
            ),
        ));
    };

    // The upstream exchange, bounded in time; a connect failure is safe to retry
    // because the upstream never saw the request.
    let RequestHead { parts, body, .. } = head;
    let body = match (body, stream) {
        (Some(b), _) => ProxyBody::full(b),
        (None, Some(s)) => ProxyBody::Stream(s),
        (None, None) => ProxyBody::empty(),
    };
    let resp = match tokio::time::timeout(state.request_timeout, cluster.send(parts, body)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(upstream_error(cluster, e)),
        Err(_) => {
            return Err(ProxyError::new(
                Side::Upstream,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream timed out",
                format!(
                    "cluster {:?} did not answer within {:?}",
                    cluster.name(),
                    state.request_timeout
                ),
            ));
        }
    };

    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    if !chain.response {
        return Ok(Response::from_parts(rparts, ProxyBody::Upstream(rbody)));
    }
    // Response hooks, buffering the body only when a filter asked to see it.
    let (body, stream) = if chain.response_body {
        (
            Some(Box::pin(whole(rbody, state.max_body, Side::Upstream)).await?),
            None,
        )
    } else {
        (None, Some(rbody))
    };
    let head = Box::new(ResponseHead {
        parts: rparts,
        body,
        request_id: id,
    });
    Ok(respond(state, chain.filters().len(), head, stream, grpc))
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
    if e.connect {
        ProxyError::new(
            Side::Upstream,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream unavailable",
            detail,
        )
        .retry_safe()
    } else {
        ProxyError::new(
            Side::Upstream,
            StatusCode::BAD_GATEWAY,
            "upstream failed",
            detail,
        )
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

/// Run the response hooks of the filters before position `upto`, last first, and
/// build the response.
fn respond(
    state: &ListenerState,
    upto: usize,
    mut head: Box<ResponseHead>,
    mut stream: Option<UpstreamBody>,
    grpc: bool,
) -> Response<ProxyBody> {
    let chain = &state.chain;
    if chain.response {
        for filter in chain.filters()[..upto]
            .iter()
            .rev()
            .filter(|f| f.interest().response)
        {
            let (h, outcome) = filter.on_response(head);
            head = h;
            match outcome {
                Outcome::Done(ResponseAction::Continue) | Outcome::Skipped(_) => {}
                Outcome::Done(ResponseAction::Respond(local)) => {
                    match local_response(filter.name(), local, head.request_id) {
                        Ok(h) => {
                            head = h;
                            stream = None;
                        }
                        Err(e) => return fail(&state.name, e, head.request_id, grpc),
                    }
                }
                Outcome::Failed(f) => {
                    let e = ProxyError::new(
                        Side::Filter,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "filter failed",
                        f.to_string(),
                    );
                    return fail(&state.name, e, head.request_id, grpc);
                }
            }
        }
    }
    let ResponseHead { parts, body, .. } = *head;
    let body = match (body, stream) {
        (Some(b), _) => ProxyBody::full(b),
        (None, Some(s)) => ProxyBody::Upstream(s),
        (None, None) => ProxyBody::empty(),
    };
    Response::from_parts(parts, body)
}

/// A filter's local response as a response head, checked.
fn local_response(
    filter: &str,
    local: LocalResponse,
    request_id: u64,
) -> Result<Box<ResponseHead>, ProxyError> {
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
    Ok(Box::new(ResponseHead {
        parts,
        body: Some(local.body.into()),
        request_id,
    }))
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
