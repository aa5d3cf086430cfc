//! Errors on the request path say who failed and whether a retry is safe, and become
//! the local response the client sees.
//!
//! What a client is told and what the log is told differ on purpose: the client gets
//! a status, a short fixed reason and an error id; the log gets the same id with the
//! whole story (cluster, endpoint address, filter name, a guest's panic message), which
//! is nobody's business outside the operator's.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

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
    pub exchange: Option<weft_engine::ExchangeError>,
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
    pub fn exchange(mut self, kind: weft_engine::ExchangeError) -> Self {
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
