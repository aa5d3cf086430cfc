//! What one request through the filter came to: the types a test asserts on.

use std::time::Duration;

use weft_engine::ExchangeError;

/// What the filter's `on-request` decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on (also when the filter has no request hook, or failed open).
    Continue,
    /// Answer the client with this response.
    Respond(Local),
    /// Send the request to this cluster.
    Route(String),
    /// Hold the request this long, then go on.
    Delay(Duration),
}

/// A response a filter made itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    /// Its status.
    pub status: u16,
    /// Its headers, in order (values that are not UTF-8 shown lossily).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Local {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }
}

/// A hook of the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `on-request`.
    Request,
    /// `on-response`.
    Response,
    /// `on-done`.
    Done,
}

impl Hook {
    /// The hook's name in the WIT: `on-request`, `on-response`, `on-done`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Request => "on-request",
            Hook::Response => "on-response",
            Hook::Done => "on-done",
        }
    }
}

/// One hook call and what came of it, in the order they ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Which hook.
    pub hook: Hook,
    /// The upstream attempt it saw: 0 before the request went upstream.
    pub attempt: u32,
    /// What it decided, and what the proxy made of it, in words: `continue`,
    /// `route web`, `respond 404`, `retry in 25ms`, `retry refused: ...`, `failed:
    /// ...`.
    pub decision: String,
}

/// A hook that failed (trapped, panicked, ran past its deadline or its memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Which hook.
    pub hook: Hook,
    /// What happened, as the proxy logs it.
    pub reason: String,
    /// The failure policy let the request go on as if the hook continued
    /// (fail-open); otherwise the proxy answered 503, or for `on-done` nothing
    /// changed.
    pub failed_open: bool,
}

/// Who made the response the client got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Responder {
    /// The upstream (the [`ResponseSpec`](crate::ResponseSpec) of the last attempt).
    Upstream,
    /// The filter, with a local response.
    Filter,
    /// The proxy: the attempt failed (why, when it was the exchange), or the filter
    /// failed, or its answer was refused.
    Proxy(Option<ExchangeError>),
}

/// The request as the filter left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestView {
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The target authority (the `host` header).
    pub authority: Option<String>,
    /// Every header, `host` included, in order (values that are not UTF-8 shown
    /// lossily).
    pub headers: Vec<(String, String)>,
    /// The body sent upstream.
    pub body: Vec<u8>,
}

impl RequestView {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }
}

/// The response the client got, as the filter left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseView {
    /// The status.
    pub status: u16,
    /// Its headers, in order (values that are not UTF-8 shown lossily).
    pub headers: Vec<(String, String)>,
    /// Its body (none for `HEAD`).
    pub body: Vec<u8>,
    /// Who made it.
    pub responder: Responder,
}

impl ResponseView {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }
}

/// The settings of the upstream exchange the filter made for its request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The request's overall timeout (`exchange-setting::timeout`).
    pub timeout: Option<Duration>,
    /// Each attempt's timeout (`exchange-setting::per-try-timeout`).
    pub per_try_timeout: Option<Duration>,
    /// The route name it gave for logs and telemetry (`context.set-route`).
    pub route: Option<String>,
    /// The upstream identity it required (`context.require-upstream-identity`).
    pub upstream_identity: Option<String>,
    /// Whether it set the request's `traceparent`.
    pub trace_set: bool,
}

/// A line the filter logged through `weft:filter/host.log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: tracing::Level,
    /// Its message.
    pub message: String,
}

/// What one request through the filter came to.
#[derive(Clone, Debug)]
pub struct Run {
    /// What `on-request` decided.
    pub action: Action,
    /// Every hook call, in order.
    pub steps: Vec<Step>,
    /// The first hook that failed, if one did.
    pub failure: Option<Failure>,
    /// The request as the filter left it.
    pub request: RequestView,
    /// The response the client got.
    pub response: ResponseView,
    /// Upstream attempts made: 0 when the request never went upstream.
    pub attempts: u32,
    /// The cluster the attempts went to.
    pub cluster: Option<String>,
    /// The request's properties at its end, in the order they were set.
    pub properties: Vec<(String, Vec<u8>)>,
    /// The exchange settings the filter made.
    pub settings: Settings,
    /// What the filter logged while the request ran.
    pub logs: Vec<LogLine>,
}

impl Run {
    /// A property at the request's end.
    pub fn property(&self, key: &str) -> Option<&[u8]> {
        (self.properties.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether the filter failed in any hook (whatever its policy made of it).
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }
}

fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    (headers.iter())
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
