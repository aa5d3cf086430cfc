//! Builders and shorthands on the WIT types a hook returns.

use std::time::Duration;

use crate::{
    Action, BodyMode, Context, ExchangeError, ExchangeSetting, Header, Interest, LocalResponse,
    RequestHead, ResponseAction, ResponseHead, SettingError,
};

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
