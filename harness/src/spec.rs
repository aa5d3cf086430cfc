//! What a test describes: the request a client sends, and what the upstream answers
//! to each attempt.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use weft_engine::{ExchangeError, TlsInfo};

use crate::HarnessError;

/// A request as a client sends it, and the upstream's answers to its attempts.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    /// The method, e.g. `GET`.
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The target authority, sent as the `host` header: `localhost` unless said.
    pub authority: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty: none).
    pub body: Vec<u8>,
    /// The upstream's answer to each attempt, in order; the last answers every
    /// attempt past it. None: 200 with no body.
    pub responses: Vec<ResponseSpec>,
    /// Properties set before the filter runs, as earlier filters of a chain would.
    pub properties: Vec<(String, Vec<u8>)>,
    /// The client's address: `127.0.0.1:40000` unless said.
    pub peer: SocketAddr,
    /// TLS facts of the client's connection (its proved identity): none is clear text.
    pub tls: Option<TlsInfo>,
}

impl RequestSpec {
    /// A request with this method and path, no headers and no body.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            authority: "localhost".to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            responses: Vec::new(),
            properties: Vec::new(),
            peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
            tls: None,
        }
    }

    /// A `GET` of this path.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A `POST` of this path with this body.
    pub fn post(path: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", path).body(body)
    }

    /// Add a header (`host` sets the authority).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if name.eq_ignore_ascii_case("host") {
            self.authority = value.to_owned();
        } else {
            self.headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// Set the target authority.
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_owned();
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Add the upstream's answer to the next attempt.
    pub fn response(mut self, response: ResponseSpec) -> Self {
        self.responses.push(response);
        self
    }

    /// Set a property before the filter runs.
    pub fn property(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((key.to_owned(), value.into()));
        self
    }

    /// Set the client's TLS facts, e.g. the identity its certificate proved.
    pub fn tls(mut self, tls: TlsInfo) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The head a proxy would hand its filters: origin-form URI, one `host`.
    pub(crate) fn head(&self) -> Result<http::request::Parts, HarnessError> {
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|e| spec_error("method", &self.method, e))?;
        if !self.path.starts_with('/') {
            return Err(spec_error("path", &self.path, "it must start with '/'"));
        }
        let uri: Uri = (self.path.parse()).map_err(|e| spec_error("path", &self.path, e))?;
        let host = HeaderValue::from_str(&self.authority)
            .ok()
            .filter(|_| self.authority.parse::<http::uri::Authority>().is_ok())
            .ok_or_else(|| spec_error("authority", &self.authority, "not host[:port]"))?;
        let (mut parts, ()) = Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .map_err(|e| spec_error("request", &self.path, e))?
            .into_parts();
        parts.headers = header_map(&self.headers)?;
        parts.headers.insert(http::header::HOST, host);
        Ok(parts)
    }
}

/// The upstream's answer to one attempt, or the proxy's own when the attempt failed.
#[derive(Clone, Debug)]
pub struct ResponseSpec {
    /// The status.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Trailers after the body; shown to a response hook that asked for them.
    pub trailers: Vec<(String, String)>,
    /// Set when the attempt failed and this is the proxy's answer to it (give the
    /// proxy's status, as [`ResponseSpec::failed`] does).
    pub error: Option<ExchangeError>,
}

impl Default for ResponseSpec {
    fn default() -> Self {
        Self::new(200)
    }
}

impl ResponseSpec {
    /// An answer with this status, no headers and no body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            error: None,
        }
    }

    /// The proxy's answer to an attempt that failed this way, with the proxy's
    /// status: 502 for a reset or a protocol error, 503 for a connect failure, no
    /// healthy endpoint or an overflow, 504 for a timeout.
    pub fn failed(error: ExchangeError) -> Self {
        let status = match error {
            ExchangeError::Reset | ExchangeError::ProtocolError => 502,
            ExchangeError::ConnectFailure
            | ExchangeError::Overflow
            | ExchangeError::NoHealthyEndpoint => 503,
            ExchangeError::PerTryTimeout | ExchangeError::Timeout => 504,
        };
        Self {
            error: Some(error),
            ..Self::new(status)
        }
        .header("x-weft-error", "upstream")
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Add a trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Its head, and its trailers when it has any.
    pub(crate) fn head(&self) -> Result<(http::response::Parts, Option<HeaderMap>), HarnessError> {
        let status = StatusCode::from_u16(self.status)
            .map_err(|e| spec_error("response status", &self.status.to_string(), e))?;
        let (mut parts, ()) = Response::builder()
            .status(status)
            .body(())
            .map_err(|e| spec_error("response", &self.status.to_string(), e))?
            .into_parts();
        parts.headers = header_map(&self.headers)?;
        let trailers = match self.trailers.is_empty() {
            true => None,
            false => Some(header_map(&self.trailers)?),
        };
        Ok((parts, trailers))
    }
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, HarnessError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| spec_error("header name", name, e))?;
        let v = HeaderValue::from_str(value)
            .map_err(|e| spec_error(&format!("value of header {name:?}"), value, e))?;
        map.append(n, v);
    }
    Ok(map)
}

fn spec_error(what: &str, value: &str, why: impl std::fmt::Display) -> HarnessError {
    HarnessError::Spec {
        what: what.to_owned(),
        message: format!("{value:?}: {why}"),
    }
}
