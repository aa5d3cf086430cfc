//! Errors on the request path say who failed and whether a retry is safe, and become
//! the local response the client sees.

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
    fn as_str(self) -> &'static str {
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
#[error("{} error: {message}", side.as_str())]
pub struct ProxyError {
    /// Who failed.
    pub side: Side,
    /// The status the client gets.
    pub status: StatusCode,
    /// Whether sending the request again could succeed without side effects (the
    /// upstream never saw it).
    pub retry_safe: bool,
    /// What happened, shown to the client and in the log.
    pub message: String,
}

impl ProxyError {
    /// A new error.
    pub fn new(side: Side, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            side,
            status,
            retry_safe: false,
            message: message.into(),
        }
    }

    /// Mark it safe to retry.
    pub fn retry_safe(mut self) -> Self {
        self.retry_safe = true;
        self
    }

    /// The response the client gets: a plain-text body that says who failed and why,
    /// and an `x-weft-error` header naming the side, for machines.
    pub fn into_response(self) -> Response<ProxyBody> {
        let body = Bytes::from(format!("{}\n", self));
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert("x-weft-error", HeaderValue::from_static(self.side.as_str()));
        resp
    }
}
