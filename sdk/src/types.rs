//! Builders and shorthands on the WIT types a hook returns.

use std::time::Duration;

use crate::__weft_bindings::weft::filter::types as raw;
use crate::{
    Action, BodyMode, Context, ExchangeError, ExchangeSetting, Header, Interest, LocalResponse,
    Request, Response, ResponseAction, SettingError,
};

/// The head of a request: what [`Request::head`] and [`Context::request_head`] read
/// in one host call.
///
/// It keeps the one buffer the proxy copied in and lends its strings out of it, so
/// reading a head costs no further allocation.
#[derive(Clone, Debug)]
pub struct RequestHead {
    text: Vec<u8>,
    method: raw::Span,
    path: raw::Span,
    authority: Option<raw::Span>,
    headers: Vec<raw::HeaderSpan>,
}

/// The head of a response: what [`Response::head`] reads in one host call.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// The attempt this response answers: 1 for the first; 0 for a filter's local
    /// response.
    pub attempt: u32,
    /// Set when the proxy made this response because the exchange failed.
    pub error: Option<ExchangeError>,
    text: Vec<u8>,
    headers: Vec<raw::HeaderSpan>,
    trailers: Option<Vec<raw::HeaderSpan>>,
}

/// The bytes a span names in a head's text; empty if it does not fit (it always
/// does when the proxy made it).
fn bytes(text: &[u8], span: raw::Span) -> &[u8] {
    let (start, len) = (span.start as usize, span.len as usize);
    text.get(start..start.saturating_add(len))
        .unwrap_or_default()
}

/// A string of the head. The proxy passes method, path, authority and header names
/// as they are in its own `str`s, so they are always UTF-8; anything else reads as
/// empty rather than panic.
fn text(text: &[u8], span: raw::Span) -> &str {
    std::str::from_utf8(bytes(text, span)).unwrap_or_default()
}

/// Append `bytes` to a head's text and name where they lie.
fn push(text: &mut Vec<u8>, bytes: &[u8]) -> raw::Span {
    let span = raw::Span {
        start: u32::try_from(text.len()).unwrap_or(u32::MAX),
        len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
    };
    text.extend_from_slice(bytes);
    span
}

fn push_header(text: &mut Vec<u8>, name: &str, value: &[u8]) -> raw::HeaderSpan {
    raw::HeaderSpan {
        name: push(text, name.to_ascii_lowercase().as_bytes()),
        value: push(text, value),
    }
}

/// The first value of the named header among `spans`, as bytes.
fn find<'a>(text: &'a [u8], spans: &[raw::HeaderSpan], name: &str) -> Option<&'a [u8]> {
    spans
        .iter()
        .find(|h| bytes(text, h.name).eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| bytes(text, h.value))
}

fn iter<'a>(
    text: &'a [u8],
    spans: &'a [raw::HeaderSpan],
) -> impl Iterator<Item = (&'a str, &'a [u8])> {
    spans
        .iter()
        .map(move |h| (self::text(text, h.name), bytes(text, h.value)))
}

impl From<raw::RequestHead> for RequestHead {
    fn from(head: raw::RequestHead) -> Self {
        RequestHead {
            text: head.text,
            method: head.method,
            path: head.path,
            authority: head.authority,
            headers: head.headers.unwrap_or_default(),
        }
    }
}

impl From<raw::ResponseHead> for ResponseHead {
    fn from(head: raw::ResponseHead) -> Self {
        ResponseHead {
            status: head.status,
            attempt: head.attempt,
            error: head.error,
            text: head.text.unwrap_or_default(),
            headers: head.headers.unwrap_or_default(),
            trailers: head.trailers,
        }
    }
}

/// The raw head a host call returns, as the native doubles answer it.
#[cfg(not(target_arch = "wasm32"))]
impl RequestHead {
    pub(crate) fn into_raw(self) -> raw::RequestHead {
        raw::RequestHead {
            text: self.text,
            method: self.method,
            path: self.path,
            authority: self.authority,
            headers: (!self.headers.is_empty()).then_some(self.headers),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ResponseHead {
    pub(crate) fn into_raw(self) -> raw::ResponseHead {
        raw::ResponseHead {
            status: self.status,
            attempt: self.attempt,
            text: (!self.text.is_empty()).then_some(self.text),
            headers: (!self.headers.is_empty()).then_some(self.headers),
            trailers: self.trailers,
            error: self.error,
        }
    }
}

impl RequestHead {
    /// A head as the proxy would give it, for a filter's unit tests: `method` and
    /// `path` (with its query), no authority and no headers.
    pub fn new(method: &str, path: &str) -> Self {
        let mut text = Vec::with_capacity(method.len() + path.len());
        let method = push(&mut text, method.as_bytes());
        let path = push(&mut text, path.as_bytes());
        RequestHead {
            text,
            method,
            path,
            authority: None,
            headers: Vec::new(),
        }
    }

    /// This head with an authority.
    pub fn with_authority(mut self, authority: &str) -> Self {
        self.authority = Some(push(&mut self.text, authority.as_bytes()));
        self
    }

    /// This head with one more header (its name lower-cased, as the proxy's are).
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let span = push_header(&mut self.text, name, value.as_ref());
        self.headers.push(span);
        self
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        text(&self.text, self.method)
    }

    /// Path and query, e.g. `/api/users?id=7`.
    pub fn path(&self) -> &str {
        text(&self.text, self.path)
    }

    /// The path without its query.
    pub fn path_only(&self) -> &str {
        let path = self.path();
        path.split_once('?').map_or(path, |(p, _)| p)
    }

    /// The query, without its `?`, when there is one.
    pub fn query(&self) -> Option<&str> {
        self.path().split_once('?').map(|(_, q)| q)
    }

    /// Target authority: the `:authority` of HTTP/2 or the `host` header of HTTP/1.
    pub fn authority(&self) -> Option<&str> {
        self.authority.map(|a| text(&self.text, a))
    }

    /// The first value of a header the filter named in its interest
    /// ([`Interest::with_request_headers`]), if valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of a header the filter named in its interest, as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        find(&self.text, &self.headers, name)
    }

    /// The named headers the request has, name and value, in the order of the
    /// interest's list and then of the request.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        iter(&self.text, &self.headers)
    }
}

impl ResponseHead {
    /// A head as the proxy would give it, for a filter's unit tests: `status`, for
    /// the first attempt, with no headers, trailers not yet known and no error.
    pub fn new(status: u16) -> Self {
        ResponseHead {
            status,
            attempt: 1,
            error: None,
            text: Vec::new(),
            headers: Vec::new(),
            trailers: None,
        }
    }

    /// This head for another attempt (0: a filter's local response).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// This head as the proxy makes it when an exchange failed.
    pub fn with_error(mut self, error: ExchangeError) -> Self {
        self.error = Some(error);
        self
    }

    /// This head with one more header (its name lower-cased, as the proxy's are).
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let span = push_header(&mut self.text, name, value.as_ref());
        self.headers.push(span);
        self
    }

    /// This head with one more trailer; the trailers are then known.
    pub fn with_trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let span = push_header(&mut self.text, name, value.as_ref());
        self.trailers.get_or_insert_with(Vec::new).push(span);
        self
    }

    /// The first value of a header the filter named in its interest, if valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of a header the filter named in its interest, as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        find(&self.text, &self.headers, name)
    }

    /// The named headers the response has, name and value.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        iter(&self.text, &self.headers)
    }

    /// Whether the trailers were known: the body had ended when the head was read
    /// (see [`Interest::with_trailers`]).
    pub fn trailers_known(&self) -> bool {
        self.trailers.is_some()
    }

    /// The first value of a trailer the filter named in its interest, when the
    /// trailers were known.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        let spans = self.trailers.as_deref()?;
        find(&self.text, spans, name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The named trailers, name and value, when they were known.
    pub fn trailers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        iter(&self.text, self.trailers.as_deref().unwrap_or_default())
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
    /// Answer the client with this status and a `text/plain` body, instead of the
    /// upstream. Later filters and the upstream never see the request. On its way
    /// back only the filters *before* this one in the chain see the response (their
    /// `on_response`, with attempt 0); this filter's own
    /// [`on_response`](crate::Filter::on_response) is not called for it, and
    /// `on_done` runs as for any request. For other headers or a body that is not
    /// text, build a [`LocalResponse`].
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

impl Action {
    /// The local response, when the hook answered with one.
    pub fn local_response(&self) -> Option<&LocalResponse> {
        match self {
            Action::Respond(r) => Some(r),
            _ => None,
        }
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

impl ResponseAction {
    /// The replacement response, when the hook answered with one.
    pub fn local_response(&self) -> Option<&LocalResponse> {
        match self {
            ResponseAction::Respond(r) => Some(r),
            _ => None,
        }
    }
}

impl From<LocalResponse> for ResponseAction {
    fn from(response: LocalResponse) -> Self {
        ResponseAction::Respond(response)
    }
}

/// A filter's own response: from `on_request` ([`Action::Respond`]) it answers
/// the client instead of the upstream, and skips the answering filter's own
/// `on_response` (only filters before it in the chain see it); from `on_response`
/// ([`ResponseAction::Respond`]) it replaces the response the filters before it see.
/// The proxy refuses (500) a status outside 200 to 599 or an invalid header, and
/// sets `content-length` itself.
impl LocalResponse {
    /// A response with this status, no headers and an empty body.
    ///
    /// ```
    /// # use weft_sdk::prelude::*;
    /// let r = LocalResponse::new(404).header("content-type", "text/plain").body("gone\n");
    /// let action = Action::from(r);
    /// assert_eq!(action.local_response().map(|r| r.status), Some(404));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_lend_their_strings_from_one_buffer() {
        let head = RequestHead::new("GET", "/api/users?id=7")
            .with_authority("shop.local:8080")
            .with_header("X-User", "alice")
            .with_header("x-raw", [0xff, b'a']);
        assert_eq!(head.method(), "GET");
        assert_eq!(head.path(), "/api/users?id=7");
        assert_eq!(head.path_only(), "/api/users");
        assert_eq!(head.query(), Some("id=7"));
        assert_eq!(head.authority(), Some("shop.local:8080"));
        assert_eq!(head.header("x-user"), Some("alice"));
        assert_eq!(
            head.header("X-USER"),
            Some("alice"),
            "names match in any case"
        );
        assert_eq!(head.header("x-raw"), None, "not UTF-8");
        assert_eq!(head.header_bytes("x-raw"), Some(&[0xff, b'a'][..]));
        assert_eq!(head.header("x-none"), None);
        let names: Vec<_> = head.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["x-user", "x-raw"]);
        assert_eq!(RequestHead::new("GET", "/").query(), None);

        let resp = ResponseHead::new(200)
            .with_attempt(2)
            .with_header("grpc-status", "0");
        assert!(!resp.trailers_known());
        assert_eq!(resp.grpc_status(), Some(0));
        let resp = resp.with_trailer("grpc-status", "14");
        assert!(resp.trailers_known());
        assert_eq!(resp.grpc_status(), Some(14), "trailers win over headers");
        assert_eq!(resp.trailers().count(), 1);
        assert_eq!((resp.status, resp.attempt, resp.failed()), (200, 2, None));
    }

    #[test]
    fn a_span_outside_the_text_reads_empty() {
        let head = RequestHead::from(raw::RequestHead {
            text: b"GET".to_vec(),
            method: raw::Span { start: 0, len: 3 },
            path: raw::Span { start: 2, len: 90 },
            authority: Some(raw::Span {
                start: u32::MAX,
                len: u32::MAX,
            }),
            headers: None,
        });
        assert_eq!(head.method(), "GET");
        assert_eq!(head.path(), "");
        assert_eq!(head.authority(), Some(""));
    }
}
