//! Builders and shorthands on the WIT types a hook returns.

use std::time::Duration;

use crate::__weft_bindings::weft::filter::types as raw;
use crate::{
    Action, BodyMode, Context, ExchangeError, ExchangeSetting, Header, Interest, LocalResponse,
    Request, Response, ResponseAction, SettingError,
};

/// The head of a request: what [`Request::head`] and [`Context::request_head`] read
/// in one host call.
#[derive(Clone, Debug, Default)]
pub struct RequestHead {
    /// The method, e.g. `GET`.
    pub method: String,
    /// Path and query, e.g. `/api/users?id=7`.
    pub path: String,
    /// Target authority: the `:authority` of HTTP/2 or the `host` header of HTTP/1.
    pub authority: Option<String>,
    /// The values of the headers named in the filter's interest
    /// ([`Interest::with_request_headers`]), in the order of that list and then of the
    /// request.
    pub headers: Vec<Header>,
}

/// The head of a response: what [`Response::head`] reads in one host call.
#[derive(Clone, Debug, Default)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// The attempt this response answers: 1 for the first; 0 for a filter's local
    /// response.
    pub attempt: u32,
    /// The values of the headers named in [`Interest::with_response_headers`].
    pub headers: Vec<Header>,
    /// The trailers so named, when the body had ended; `None` while it is still coming.
    pub trailers: Option<Vec<Header>>,
    /// Set when the proxy made this response because the exchange failed.
    pub error: Option<ExchangeError>,
}

/// The bytes a span names in a head's text; empty if it does not fit (it always
/// does when the proxy made it).
fn bytes(text: &[u8], span: raw::Span) -> &[u8] {
    let (start, len) = (span.start as usize, span.len as usize);
    text.get(start..start.saturating_add(len))
        .unwrap_or_default()
}

fn string(text: &[u8], span: raw::Span) -> String {
    String::from_utf8_lossy(bytes(text, span)).into_owned()
}

fn headers(text: &[u8], spans: Option<Vec<raw::HeaderSpan>>) -> Vec<Header> {
    spans
        .unwrap_or_default()
        .into_iter()
        .map(|h| Header {
            name: string(text, h.name),
            value: bytes(text, h.value).to_vec(),
        })
        .collect()
}

impl From<raw::RequestHead> for RequestHead {
    fn from(head: raw::RequestHead) -> Self {
        let text = &head.text;
        RequestHead {
            method: string(text, head.method),
            path: string(text, head.path),
            authority: head.authority.map(|a| string(text, a)),
            headers: headers(text, head.headers),
        }
    }
}

impl From<raw::ResponseHead> for ResponseHead {
    fn from(head: raw::ResponseHead) -> Self {
        let text = head.text.unwrap_or_default();
        ResponseHead {
            status: head.status,
            attempt: head.attempt,
            headers: headers(&text, head.headers),
            trailers: head.trailers.map(|t| headers(&text, Some(t))),
            error: head.error,
        }
    }
}

impl Request {
    /// Method, path, authority and the headers named in the filter's interest, in
    /// one host call.
    pub fn head(&self) -> RequestHead {
        self.read_head().into()
    }
}

impl Response {
    /// Status, the headers named in the filter's interest, the trailers when known,
    /// and the exchange error, in one host call.
    pub fn head(&self) -> ResponseHead {
        self.read_head().into()
    }
}

impl Action {
    /// Answer the client with this status and a `text/plain` body.
    pub fn respond(status: u16, body: impl AsRef<[u8]>) -> Self {
        Action::Respond(LocalResponse::new(status).text(body))
    }

    /// Send the request to this upstream cluster, then go on with the next filter.
    pub fn route(cluster: impl Into<String>) -> Self {
        Action::Route(cluster.into())
    }

    /// Hold the request this long, then go on with the next filter.
    pub fn delay(duration: Duration) -> Self {
        // u64 nanoseconds reach 584 years; saturating is as good as exact.
        Action::Delay(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl From<LocalResponse> for Action {
    fn from(response: LocalResponse) -> Self {
        Action::Respond(response)
    }
}

impl ResponseAction {
    /// Replace the response with this status and a `text/plain` body.
    pub fn respond(status: u16, body: impl AsRef<[u8]>) -> Self {
        ResponseAction::Respond(LocalResponse::new(status).text(body))
    }

    /// Drop this response and send the request again after `delay`.
    pub fn retry(delay: Duration) -> Self {
        ResponseAction::Retry(nanos(delay))
    }
}

fn nanos(d: Duration) -> u64 {
    // u64 nanoseconds reach 584 years; saturating is as good as exact.
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn first<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(&h.value).ok())
}

impl RequestHead {
    /// The first value of a header the filter named in its interest, if valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// The path without its query.
    pub fn path_only(&self) -> &str {
        self.path.split_once('?').map_or(&self.path, |(p, _)| p)
    }
}

impl ResponseHead {
    /// The first value of a header the filter named in its interest, if valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// The first value of a trailer the filter named in its interest, when the
    /// trailers were known.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.as_deref().and_then(|t| first(t, name))
    }

    /// The gRPC status code, from the trailers or from the headers (a trailers-only
    /// answer); the filter must name `grpc-status` in its interest.
    pub fn grpc_status(&self) -> Option<u32> {
        self.trailer("grpc-status")
            .or_else(|| self.header("grpc-status"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Whether the proxy made this response because the exchange failed.
    pub fn failed(&self) -> Option<ExchangeError> {
        self.error
    }
}

impl Context {
    /// The request's head, from any hook (the headers named in the filter's
    /// interest), in one host call.
    pub fn request_head(&self) -> RequestHead {
        self.read_request_head().into()
    }

    /// Set the request's overall timeout, from its arrival to the response head across
    /// every attempt.
    pub fn set_timeout(&self, timeout: Duration) -> Result<(), SettingError> {
        self.configure(ExchangeSetting::Timeout(nanos(timeout)))
    }

    /// Set the time each attempt has for its response head.
    pub fn set_per_try_timeout(&self, timeout: Duration) -> Result<(), SettingError> {
        self.configure(ExchangeSetting::PerTryTimeout(nanos(timeout)))
    }
}

impl From<LocalResponse> for ResponseAction {
    fn from(response: LocalResponse) -> Self {
        ResponseAction::Respond(response)
    }
}

impl LocalResponse {
    /// A response with this status, no headers and an empty body.
    ///
    /// ```no_run
    /// # use weft_sdk::prelude::*;
    /// let r = LocalResponse::new(404).header("content-type", "text/plain").body("gone\n");
    /// let action = Action::Respond(r);
    /// ```
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Add a header (after those already added).
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: value.as_ref().to_vec(),
        });
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// Set a plain-text body and its `content-type`.
    pub fn text(self, body: impl AsRef<[u8]>) -> Self {
        self.header("content-type", "text/plain; charset=utf-8")
            .body(body)
    }
}

impl Interest {
    /// The request hook only, without bodies. This is what [`crate::Filter::interest`]
    /// returns unless a filter overrides it.
    pub const REQUEST: Interest = Interest::NONE.with_request();

    /// The response hook only, without bodies; `on_request` is then never called.
    pub const RESPONSE: Interest = Interest::NONE.with_response();

    /// No hook at all; add the ones wanted with the `with_*` methods.
    pub const NONE: Interest = Interest {
        request: false,
        request_body: BodyMode::None,
        response: false,
        response_body: BodyMode::None,
        done: false,
        request_headers: Vec::new(),
        response_headers: Vec::new(),
        response_trailers: false,
        keep_request_body: 0,
    };

    /// Also call `on_response`.
    pub const fn with_response(mut self) -> Self {
        self.response = true;
        self
    }

    /// Also call `on_request`.
    pub const fn with_request(mut self) -> Self {
        self.request = true;
        self
    }

    /// Also call `on_done` once per request.
    pub const fn with_done(mut self) -> Self {
        self.done = true;
        self
    }

    /// Carry these request headers in every [`RequestHead`] the filter reads.
    pub fn with_request_headers<S: AsRef<str>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        self.request_headers
            .extend(names.into_iter().map(|n| n.as_ref().to_ascii_lowercase()));
        self
    }

    /// Carry these response headers (and trailers) in every [`ResponseHead`].
    pub fn with_response_headers<S: AsRef<str>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        self.response_headers
            .extend(names.into_iter().map(|n| n.as_ref().to_ascii_lowercase()));
        self
    }

    /// Show the response's trailers to `on_response` when they follow its head at
    /// once (a gRPC status in trailers).
    pub const fn with_trailers(mut self) -> Self {
        self.response_trailers = true;
        self
    }

    /// Keep request bodies up to `limit` bytes so a retry can send them again.
    pub const fn keep_request_body(mut self, limit: u64) -> Self {
        self.keep_request_body = limit;
        self
    }

    /// Call `on_request` with the request body buffered (readable and replaceable).
    pub const fn with_request_body(mut self) -> Self {
        self.request = true;
        self.request_body = BodyMode::Buffered;
        self
    }

    /// Call `on_response` with the response body buffered (readable and replaceable).
    pub const fn with_response_body(mut self) -> Self {
        self.response = true;
        self.response_body = BodyMode::Buffered;
        self
    }
}

impl Default for Interest {
    fn default() -> Self {
        Interest::REQUEST
    }
}
