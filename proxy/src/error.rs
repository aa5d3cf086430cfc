//! Errors on the request path say who failed and whether a retry is safe, and become
//! the local response the client sees.
//!
//! What a client is told and what the log is told differ on purpose: the client gets
//! a status, a short fixed reason and an error id; the log gets the same id with the
//! whole story (cluster, endpoint address, filter name, a guest's panic message), which
//! is nobody's business outside the operator's.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use weft_engine::ExchangeError;

use crate::body::{BufferError, ProxyBody};
use crate::cluster::UpstreamError;

/// Who is at fault for a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong.
    Downstream,
    /// The upstream could not be reached or misbehaved.
    Upstream,
    /// A filter failed or decided to fail the request.
    Filter,
    /// The proxy itself (configuration, a bug).
    Internal,
}

impl Side {
    /// The side as a lower-case word, as the `x-weft-error` header gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Filter => "filter",
            Side::Internal => "internal",
        }
    }
}

/// A request that ends with an error response made by the proxy.
#[derive(Debug, thiserror::Error)]
#[error("{} error: {reason}: {detail}", side.as_str())]
pub struct ProxyError {
    /// Who failed.
    pub side: Side,
    /// The status the client gets.
    pub status: StatusCode,
    /// What the client is told, short and fixed, e.g. `upstream unavailable`.
    pub reason: &'static str,
    /// Why the upstream exchange ended, when it did without a response: what response
    /// hooks (a retry filter) see. A connect failure is safe to retry for any request,
    /// since the upstream never saw it.
    pub exchange: Option<ExchangeError>,
    /// The circuit-breaking limit that refused the request, told to the client in
    /// `x-weft-overflow`.
    pub overflow: Option<&'static str>,
    /// What happened, in full, for the log only.
    pub detail: String,
}

impl ProxyError {
    /// A new error: `reason` for the client, `detail` for the log.
    pub fn new(side: Side, status: StatusCode, reason: &'static str, detail: String) -> Self {
        Self {
            side,
            status,
            reason,
            exchange: None,
            overflow: None,
            detail,
        }
    }

    /// Say why the upstream exchange ended.
    pub fn exchange(mut self, kind: ExchangeError) -> Self {
        self.exchange = Some(kind);
        self
    }

    /// Log the whole error under `error_id`, at a level that fits who failed: a
    /// client's own mistake is routine, the rest is the operator's business.
    pub fn log(&self, listener: &str, error_id: u64) {
        let error_id = ErrorId(error_id);
        let (side, status) = (self.side.as_str(), self.status.as_u16());
        match self.side {
            Side::Downstream => {
                tracing::debug!(listener, %error_id, side, status, "{}: {}", self.reason, self.detail);
            }
            _ => {
                tracing::warn!(listener, %error_id, side, status, "{}: {}", self.reason, self.detail);
            }
        }
    }

    /// The response the client gets: a plain-text body with the short reason and the
    /// error id, an `x-weft-error` header naming the side and `x-weft-error-id` for
    /// finding the log line.
    pub fn into_response(self, error_id: u64) -> Response<ProxyBody> {
        let error_id = ErrorId(error_id);
        let body = Bytes::from(format!("{} (error id {error_id})\n", self.reason));
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert("x-weft-error", HeaderValue::from_static(self.side.as_str()));
        if let Ok(v) = HeaderValue::from_str(&error_id.to_string()) {
            headers.insert("x-weft-error-id", v);
        }
        if let Some(limit) = self.overflow {
            headers.insert("x-weft-overflow", HeaderValue::from_static(limit));
        }
        resp
    }

    /// The same error as a gRPC client reads it: a trailers-only response (HTTP 200,
    /// no body) whose `grpc-status` says what happened and whose `grpc-message` is the
    /// short reason with the error id.
    pub fn into_grpc_response(self, error_id: u64) -> Response<ProxyBody> {
        let error_id = ErrorId(error_id);
        let mut resp = Response::new(ProxyBody::full(Bytes::new()));
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(grpc_status(self.status))),
        );
        // Reasons are printable ASCII without `%`, which grpc-message carries as is.
        if let Ok(v) = HeaderValue::from_str(&format!("{} (error id {error_id})", self.reason)) {
            headers.insert("grpc-message", v);
        }
        headers.insert("x-weft-error", HeaderValue::from_static(self.side.as_str()));
        if let Ok(v) = HeaderValue::from_str(&error_id.to_string()) {
            headers.insert("x-weft-error-id", v);
        }
        if let Some(limit) = self.overflow {
            headers.insert("x-weft-overflow", HeaderValue::from_static(limit));
        }
        resp
    }
}

/// Every error the request path makes, each built here: what the client is told
/// (status, short reason), who failed, what the log gets and, for an upstream
/// exchange that ended without a response, the kind a retry filter judges.
impl ProxyError {
    /// A request the proxy cannot make sense of (the client's fault).
    pub(crate) fn bad_request(reason: &'static str, detail: String) -> Self {
        Self::new(Side::Downstream, StatusCode::BAD_REQUEST, reason, detail)
    }

    /// A CONNECT on a listener that does not tunnel.
    pub(crate) fn connect_disabled(uri: &http::Uri) -> Self {
        Self::new(
            Side::Downstream,
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT is not enabled",
            format!("CONNECT {uri} refused: this listener does not tunnel"),
        )
    }

    /// The client's body broke off (while buffered, kept or forwarded).
    pub(crate) fn client_body(detail: String) -> Self {
        Self::new(
            Side::Downstream,
            StatusCode::BAD_REQUEST,
            "request body incomplete",
            detail,
        )
    }

    /// A body that could not be buffered for the filters that asked to see it:
    /// `side` sent it. Too large from the client is 413, from the upstream 502.
    pub(crate) fn unbuffered(side: Side, limit: usize, e: BufferError) -> Self {
        let client = side == Side::Downstream;
        let who = if client { "client" } else { "upstream" };
        match e {
            BufferError::TooLarge if client => Self::new(
                side,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                format!("{who} body larger than {limit} bytes"),
            ),
            BufferError::TooLarge => Self::new(
                side,
                StatusCode::BAD_GATEWAY,
                "upstream response too large",
                format!("{who} body larger than {limit} bytes"),
            ),
            BufferError::Peer(e) if client => {
                Self::client_body(format!("{who} failed while sending the body: {e}"))
            }
            BufferError::Peer(e) => Self::new(
                side,
                StatusCode::BAD_GATEWAY,
                "upstream response incomplete",
                format!("{who} failed while sending the body: {e}"),
            ),
        }
    }

    /// No filter routed the request and the listener has no default cluster.
    pub(crate) fn no_route(listener: &str, parts: &http::request::Parts) -> Self {
        Self::new(
            Side::Internal,
            StatusCode::NOT_FOUND,
            "no route",
            format!(
                "no filter routed {} {} and listener {listener:?} has no default_cluster",
                parts.method,
                parts.uri.path(),
            ),
        )
    }

    /// A filter routed to a cluster it may not use: `why` says which way.
    pub(crate) fn no_such_upstream(filter: &str, cluster: &str, why: &str) -> Self {
        Self::new(
            Side::Filter,
            StatusCode::BAD_GATEWAY,
            "no such upstream",
            format!("filter {filter:?} routed to cluster {cluster:?}, {why}"),
        )
    }

    /// A filter trapped, ran out of time or memory, and fails closed.
    pub(crate) fn filter_failed(f: &weft_engine::FilterFailure) -> Self {
        Self::new(
            Side::Filter,
            StatusCode::SERVICE_UNAVAILABLE,
            "filter failed",
            f.to_string(),
        )
    }

    /// A filter's local response that is not HTTP: `what` is wrong with it.
    pub(crate) fn invalid_local_response(filter: &str, what: &str) -> Self {
        Self::new(
            Side::Filter,
            StatusCode::INTERNAL_SERVER_ERROR,
            "filter sent an invalid response",
            format!("filter {filter:?} sent an invalid local response: {what}"),
        )
    }

    /// A filter's delay ran past the request's timeout: no upstream was asked.
    pub(crate) fn delayed_past(timeout: Duration) -> Self {
        Self::new(
            Side::Filter,
            StatusCode::GATEWAY_TIMEOUT,
            "request timed out",
            format!("a filter's delay ran past the request's timeout of {timeout:?}"),
        )
        .exchange(ExchangeError::Timeout)
    }

    /// The request (`ExchangeError::Timeout`) or one attempt
    /// (`ExchangeError::PerTryTimeout`) ran out of time.
    pub(crate) fn timed_out(cluster: &str, after: Duration, kind: ExchangeError) -> Self {
        let what = if kind == ExchangeError::PerTryTimeout {
            "attempt"
        } else {
            "request"
        };
        Self::new(
            Side::Upstream,
            StatusCode::GATEWAY_TIMEOUT,
            "upstream timed out",
            format!("cluster {cluster:?} did not answer the {what} within {after:?}"),
        )
        .exchange(kind)
    }

    /// An upstream exchange that failed: the upstream's fault, or the client's
    /// when its request body broke off while it was being forwarded.
    pub(crate) fn upstream(cluster: &str, e: &UpstreamError) -> Self {
        if e.client_body {
            return Self::client_body(format!(
                "the client's body failed while going to cluster {cluster:?}: {e}"
            ));
        }
        let (status, reason) = if e.unproven {
            (StatusCode::BAD_GATEWAY, "upstream identity not proven")
        } else if e.limit.is_some() {
            (StatusCode::SERVICE_UNAVAILABLE, "upstream overloaded")
        } else if e.endpoint.is_none() {
            (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
        } else if e.connect {
            (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable")
        } else {
            (StatusCode::BAD_GATEWAY, "upstream failed")
        };
        let mut error = Self::new(
            Side::Upstream,
            status,
            reason,
            format!("cluster {cluster:?}: {e}"),
        )
        .exchange(e.kind());
        error.overflow = e.limit;
        error
    }

    /// An upstream's response body broke off while the proxy read it ahead.
    pub(crate) fn upstream_body(cluster: &str, e: &hyper::Error) -> Self {
        Self::new(
            Side::Upstream,
            StatusCode::BAD_GATEWAY,
            "upstream failed",
            format!("cluster {cluster:?}: response body failed: {e}"),
        )
        .exchange(ExchangeError::Reset)
    }

    /// An upstream that spoke outside HTTP's rules (a 101 nobody asked for).
    pub(crate) fn upstream_protocol(cluster: &str, detail: &str) -> Self {
        Self::new(
            Side::Upstream,
            StatusCode::BAD_GATEWAY,
            "upstream protocol error",
            format!("cluster {cluster:?}: {detail}"),
        )
        .exchange(ExchangeError::ProtocolError)
    }
}

/// The gRPC status for an error the proxy answers with `status` (after the gRPC
/// spec's HTTP mapping, with the proxy's own timeout as DEADLINE_EXCEEDED).
fn grpc_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        // INTERNAL: the request itself was malformed, or the proxy failed it.
        400 | 500 => 13,
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 12,            // UNIMPLEMENTED: nothing serves this method
        413 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        504 => 4,             // DEADLINE_EXCEEDED
        _ => 14,              // UNAVAILABLE: 502, 503 and the rest; retryable
    }
}

/// A request id as the client and the log show it: 16 hex digits.
struct ErrorId(u64);

impl std::fmt::Display for ErrorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
