//! The built-in retry filter: decides when a failed exchange goes again, and how
//! soon; the proxy replays the request.
//!
//! 1. A response hook looks at each attempt's outcome: its status, the gRPC status
//!    (headers or trailers), or why the proxy got no response (connect failure, reset,
//!    per-try timeout).
//! 2. A retryable outcome of a request whose method may be repeated is retried after
//!    an exponential backoff with full jitter, up to `max_retries` times.
//! 3. A **budget** bounds retries across every instance of the filter in the proxy,
//!    as Linkerd's does: over the last `window`, retries may add at most `ratio` of
//!    the requests plus `min_per_second`. A dead backend gets at most that much extra
//!    load, and clients get fast errors. Each failure the budget kept from a retry
//!    counts in `weft_filter_retry_budget_exhausted_total{filter, cluster}`.
//!
//! ```yaml
//! config:
//!   max_retries: 2                        # attempts after the first
//!   retry_on: [connect-failure, reset, gateway-error]   # the default
//!   statuses: [409]                       # more status codes to retry
//!   grpc: [unavailable]                   # gRPC codes to retry (names or numbers)
//!   methods: [GET, HEAD, OPTIONS, TRACE, PUT, DELETE]    # the default: idempotent
//!   per_try_timeout: 2s                   # each attempt's time for a response head
//!   backoff: { base: 25ms, max: 250ms }
//!   max_body: 64KiB                       # request bodies kept for a replay
//!   budget: { ratio: 0.2, min_per_second: 10, window: 10s }
//! ```
//!
//! `retry_on` takes `5xx`, `gateway-error` (502, 503, 504), `connect-failure`,
//! `reset`, `per-try-timeout` and `retriable-status` (the `statuses` list, also
//! implied when `statuses` is given). A connect failure is retried for every method:
//! the upstream never saw the request. gRPC codes apply to every gRPC call, since
//! gRPC calls are all POSTs: list only codes the services answer before doing
//! anything (UNAVAILABLE is that by definition).
//!
//! ```no_run
//! let retry: weft_filter_retry::Retry = weft_sdk::from_config("{}")?;
//! # Ok::<(), String>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::time::Duration;

use weft_sdk::metrics::Counter;
use weft_sdk::prelude::*;
use weft_sdk::serde::de::{self, Deserializer};
use weft_sdk::{ExchangeError, ResponseHead, log, random, state, time, units};

mod budget;

use budget::{Batched, Window};

/// The retry filter's configuration and, once initialised, its compiled policy.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
pub struct Retry {
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_retry_on")]
    retry_on: Vec<Condition>,
    #[serde(default)]
    statuses: Vec<u16>,
    #[serde(default)]
    grpc: Vec<GrpcCode>,
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    #[serde(default, deserialize_with = "units::deserialize_optional_duration")]
    per_try_timeout: Option<Duration>,
    #[serde(default)]
    backoff: Backoff,
    #[serde(
        default = "default_max_body",
        deserialize_with = "units::deserialize_size"
    )]
    max_body: u64,
    #[serde(default)]
    budget: Budget,
    #[serde(skip)]
    when: When,
}

/// What makes an attempt worth another.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(crate = "weft_sdk::serde", rename_all = "kebab-case")]
enum Condition {
    #[serde(rename = "5xx")]
    FiveXx,
    GatewayError,
    ConnectFailure,
    Reset,
    PerTryTimeout,
    RetriableStatus,
}

/// A gRPC status code, by name (`unavailable`, `RESOURCE_EXHAUSTED`) or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GrpcCode(u32);

const GRPC_CODES: &[&str] = &[
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

impl<'de> Deserialize<'de> for GrpcCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(crate = "weft_sdk::serde", untagged)]
        enum Raw {
            Number(u32),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) if (n as usize) < GRPC_CODES.len() => Ok(GrpcCode(n)),
            Raw::Number(n) => Err(de::Error::custom(format!(
                "{n} is not a gRPC status code (0 to 16)"
            ))),
            Raw::Name(name) => {
                let key = name.to_ascii_lowercase().replace('-', "_");
                GRPC_CODES
                    .iter()
                    .position(|c| *c == key)
                    .map(|i| GrpcCode(i as u32))
                    .ok_or_else(|| {
                        de::Error::custom(format!(
                            "{name:?} is not a gRPC status (unavailable, resource_exhausted, ...)"
                        ))
                    })
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Backoff {
    #[serde(
        default = "default_base",
        deserialize_with = "units::deserialize_duration"
    )]
    base: Duration,
    #[serde(
        default = "default_max_backoff",
        deserialize_with = "units::deserialize_duration"
    )]
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: default_base(),
            max: default_max_backoff(),
        }
    }
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Budget {
    #[serde(default = "default_ratio")]
    ratio: f64,
    #[serde(default = "default_min_per_second")]
    min_per_second: u32,
    #[serde(
        default = "default_window",
        deserialize_with = "units::deserialize_duration"
    )]
    window: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            ratio: default_ratio(),
            min_per_second: default_min_per_second(),
            window: default_window(),
        }
    }
}

fn default_max_retries() -> u32 {
    2
}
fn default_retry_on() -> Vec<Condition> {
    vec![
        Condition::ConnectFailure,
        Condition::Reset,
        Condition::GatewayError,
    ]
}
fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        .map(str::to_owned)
        .to_vec()
}
fn default_base() -> Duration {
    Duration::from_millis(25)
}
fn default_max_backoff() -> Duration {
    Duration::from_millis(250)
}
fn default_max_body() -> u64 {
    64 * 1024
}
fn default_ratio() -> f64 {
    0.2
}
fn default_min_per_second() -> u32 {
    10
}
fn default_window() -> Duration {
    Duration::from_secs(10)
}

/// The policy as the hooks use it.
#[derive(Default)]
struct When {
    five_xx: bool,
    gateway: bool,
    connect: bool,
    reset: bool,
    per_try_timeout: bool,
    statuses: Vec<u16>,
    grpc: Vec<u32>,
    methods: Vec<String>,
    requests: Batched,
    retries: Window,
    /// Retries the budget refused, by cluster; none when the proxy would not define it.
    refused: Option<Counter>,
}

/// Why an attempt is retried, which decides whether its method matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// The upstream never saw the request.
    Unsent,
    /// A listed gRPC status.
    Grpc,
    /// The upstream failed it: only methods that may be repeated go again.
    Failed,
}

/// The most retries a filter may be configured for.
const MAX_RETRIES: u32 = 9;

/// The counter of retries the budget refused (`weft_filter_` + this on `/metrics`).
const REFUSED: &str = "retry_budget_exhausted_total";

impl Retry {
    /// Whether this outcome is worth another attempt, before method and budget.
    #[cfg(test)]
    fn retryable(&self, head: &ResponseHead) -> bool {
        self.why(head).is_some()
    }

    /// Why this outcome is worth another attempt, if it is.
    fn why(&self, head: &ResponseHead) -> Option<Why> {
        let w = &self.when;
        if let Some(error) = head.error {
            let retry = match error {
                ExchangeError::ConnectFailure => w.connect,
                ExchangeError::Reset => w.reset,
                ExchangeError::PerTryTimeout => w.per_try_timeout,
                // The request's own time is up, or the cluster refused it on purpose:
                // another attempt would not help.
                ExchangeError::Timeout
                | ExchangeError::Overflow
                | ExchangeError::NoHealthyEndpoint
                | ExchangeError::ProtocolError => false,
            };
            let why = if error == ExchangeError::ConnectFailure {
                Why::Unsent
            } else {
                Why::Failed
            };
            return retry.then_some(why);
        }
        let status = head.status;
        if (w.five_xx && (500..600).contains(&status))
            || (w.gateway && matches!(status, 502..=504))
            || w.statuses.contains(&status)
        {
            return Some(Why::Failed);
        }
        (!w.grpc.is_empty() && head.grpc_status().is_some_and(|c| w.grpc.contains(&c)))
            .then_some(Why::Grpc)
    }

    /// Exponential backoff with full jitter: a random delay up to base × 2^(n-1),
    /// capped at max.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .backoff
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.backoff.max);
        let ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if ns == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random::u64() % (ns + 1))
    }

    /// Whether the budget allows one more retry now; counts it when it does.
    fn spend(&self) -> bool {
        let now = time::monotonic();
        let w = &self.when;
        let window = w.requests.len_secs();
        let allowed = f64::from(self.budget.min_per_second) * window as f64
            + self.budget.ratio * w.requests.sum(now) as f64;
        if (w.retries.sum(now) as f64) < allowed {
            w.retries.add(now);
            return true;
        }
        false
    }
}

impl Filter for Retry {
    fn init(&mut self) -> Result<(), String> {
        if self.max_retries > MAX_RETRIES {
            return Err(format!(
                "max_retries: {} is more than {MAX_RETRIES}",
                self.max_retries
            ));
        }
        if !(0.0..=10.0).contains(&self.budget.ratio) {
            return Err(format!(
                "budget.ratio: {} is not within 0 to 10",
                self.budget.ratio
            ));
        }
        let window = self.budget.window.as_secs();
        if !(1..=300).contains(&window) {
            return Err("budget.window: give 1s to 300s".into());
        }
        if self.backoff.max < self.backoff.base {
            return Err("backoff.max: less than backoff.base".into());
        }
        if self.per_try_timeout.is_some_and(|t| t.is_zero()) {
            return Err("per_try_timeout: give a duration above 0".into());
        }
        for (i, s) in self.statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                return Err(format!("statuses[{i}]: {s} is not an HTTP status"));
            }
        }
        for (i, m) in self.methods.iter_mut().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!("methods[{i}]: {m:?} is not a method"));
            }
            m.make_ascii_uppercase();
        }
        let on = |c| self.retry_on.contains(&c);
        self.when = When {
            five_xx: on(Condition::FiveXx),
            gateway: on(Condition::GatewayError),
            connect: on(Condition::ConnectFailure),
            reset: on(Condition::Reset),
            per_try_timeout: on(Condition::PerTryTimeout) || self.per_try_timeout.is_some(),
            statuses: if on(Condition::RetriableStatus) || !self.statuses.is_empty() {
                self.statuses.clone()
            } else {
                Vec::new()
            },
            grpc: self.grpc.iter().map(|c| c.0).collect(),
            methods: self.methods.clone(),
            requests: Batched::new(Window::new("requests", window)),
            retries: Window::new("retries", window),
            refused: Counter::define(
                REFUSED,
                "Failed attempts that were worth a retry but went to the client: the retry budget was spent.",
                &["cluster"],
            )
            .inspect_err(|e| log::warn(&format!("retry: cannot define {REFUSED}: {e:?}")))
            .ok(),
        };
        Ok(())
    }

    fn interest(&self) -> Interest {
        let mut interest = Interest::RESPONSE.keep_request_body(self.max_body);
        if self.per_try_timeout.is_some() {
            interest = interest.with_request();
        }
        if !self.when.grpc.is_empty() {
            interest = interest
                .with_response_headers(["grpc-status"])
                .with_trailers();
        }
        interest
    }

    fn on_request(&mut self, _: &Request, ctx: &Context) -> Action {
        if let Some(t) = self.per_try_timeout
            && let Err(e) = ctx.set_per_try_timeout(t)
        {
            log::warn(&format!("retry: the proxy refused per_try_timeout: {e:?}"));
        }
        Action::Continue
    }

    fn on_response(&mut self, resp: &Response, ctx: &Context) -> ResponseAction {
        let head = resp.head();
        // A local answer (attempt 0) never went upstream: nothing to retry or count.
        if head.attempt == 0 {
            return ResponseAction::Continue;
        }
        let now = time::monotonic();
        if head.attempt == 1 {
            self.when.requests.add(now);
        }
        if head.attempt > self.max_retries {
            return ResponseAction::Continue;
        }
        let Some(why) = self.why(&head) else {
            return ResponseAction::Continue;
        };
        // Connect failures are safe for every method (the upstream never saw them),
        // and listed gRPC codes for every call (gRPC calls are all POSTs).
        if why == Why::Failed {
            let head = ctx.request_head();
            if !self.when.methods.iter().any(|m| m == head.method()) {
                return ResponseAction::Continue;
            }
        }
        if !self.spend() {
            log::debug("retry: budget exhausted; the failure goes to the client");
            if let Some(refused) = self.when.refused {
                let cluster = ctx.facts().cluster.unwrap_or_default();
                // Past the filter's series limit the proxy counts the drop itself.
                let _ = refused.inc(&[&cluster]);
            }
            return ResponseAction::Continue;
        }
        ResponseAction::retry(self.backoff(head.attempt))
    }
}

weft_sdk::export!(Retry);

#[cfg(test)]
mod tests;
