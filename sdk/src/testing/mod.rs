//! Test a filter's hooks on the host, with `cargo test` of its own crate.
//!
//! In a native build, [`Request`](crate::Request), [`Response`](crate::Response) and
//! [`Context`](crate::Context) are test doubles with the methods of the WIT resources
//! (so the filter compiles unchanged) plus constructors and inspection, and the
//! proxy's services ([`log`](crate::log), [`metrics`](crate::metrics),
//! [`state`](crate::state), [`time`](crate::time)) are answered within the test's
//! thread, where this module reads them back. Every test thread starts clean.
//!
//! 1. Build the filter from its JSON configuration as the proxy does, with
//!    [`Exchange::init`] (or [`from_config`](crate::from_config) to call hooks
//!    yourself).
//! 2. Run a request through it with [`Exchange::run`]: `on_request`, then, when the
//!    request goes on and the filter's interest asks, `on_response` with the upstream
//!    response you give, then `on_done`, in the proxy's order and with its rules.
//! 3. Look at the [`Outcome`]: the request's [edits](crate::Request::edits), the
//!    response the client got, the route and settings on the context, and what the
//!    filter logged ([`logs`]) and counted ([`metric_value`]). Move the
//!    [`clock`] to test what expires.
//!
//! ```
//! use weft_sdk::prelude::*;
//! use weft_sdk::testing::{self, Exchange};
//! use weft_sdk::{RequestHead, ResponseHead};
//!
//! #[derive(Deserialize)]
//! #[serde(crate = "weft_sdk::serde")]
//! struct Tag { name: String }
//!
//! impl Filter for Tag {
//!     fn interest(&self) -> Interest { Interest::REQUEST.with_response() }
//!     fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
//!         if req.head().path() == "/private" { return Action::respond(403, "no\n"); }
//!         let _ = req.set_header("x-tag", &self.name);
//!         let _ = ctx.set("tagged", b"1");
//!         Action::Continue
//!     }
//!     fn on_response(&mut self, resp: &Response, ctx: &Context) -> ResponseAction {
//!         if ctx.get("tagged").is_some() { let _ = resp.set_header("x-tagged", "1"); }
//!         ResponseAction::Continue
//!     }
//! }
//!
//! let mut tag = Exchange::<Tag>::init(r#"{"name":"blue"}"#)?;
//! let out = tag.run(Request::new(RequestHead::new("GET", "/")), Response::new(ResponseHead::new(200)));
//! assert_eq!(out.request.header("x-tag").as_deref(), Some("blue"));
//! assert_eq!(out.response.header("x-tagged").as_deref(), Some("1"));
//!
//! // Its own local response skips its own `on_response`, as in the proxy.
//! let out = tag.run(Request::new(RequestHead::new("GET", "/private")), Response::new(ResponseHead::new(200)));
//! assert_eq!(out.status(), 403);
//! assert!(out.response_actions.is_empty());
//! # Ok::<(), String>(())
//! ```

mod exchange;
pub(crate) mod record;

use std::time::{Duration, SystemTime};

pub use crate::__weft_bindings::weft::filter::host::MetricKind;
pub use crate::double::Edit;
pub use exchange::{Exchange, Outcome};
pub use record::{LogLine, MetricValue};

use crate::ClusterRef;

/// Load filter `F` from its JSON configuration and run one request through it, the
/// upstream answering `upstream`: [`Exchange::init`] then [`Exchange::run`].
///
/// ```
/// # use weft_sdk::prelude::*;
/// # use weft_sdk::{RequestHead, ResponseHead, testing};
/// # #[derive(Deserialize)] #[serde(crate = "weft_sdk::serde")] struct Pass {}
/// # impl Filter for Pass { fn on_request(&mut self, _: &Request, _: &Context) -> Action { Action::Continue } }
/// let out = testing::run::<Pass>("null", Request::new(RequestHead::new("GET", "/")), Response::new(ResponseHead::new(204)))?;
/// assert_eq!(out.status(), 204);
/// # Ok::<(), String>(())
/// ```
pub fn run<F: crate::Filter>(
    config_json: &str,
    request: crate::Request,
    upstream: crate::Response,
) -> Result<Outcome, String> {
    Ok(Exchange::<F>::init(config_json)?.run(request, upstream))
}

/// Forget what this thread recorded: logs, metrics, declared clusters, state, and the
/// test clock (back to the system's). Each test runs on a thread of its own, so a test
/// needs it only to start over within itself.
pub fn reset() {
    record::reset();
    crate::native::reset();
}

/// Every line logged on this thread since it started or [`reset`], in order.
pub fn logs() -> Vec<LogLine> {
    record::logs()
}

/// Whether some line logged on this thread contains `text`.
pub fn logged(text: &str) -> bool {
    record::logs().iter().any(|l| l.message.contains(text))
}

/// The clusters the filter declared in `init` (from [`Filter::clusters`](crate::Filter::clusters)),
/// as the proxy was told them.
pub fn declared_clusters() -> Vec<ClusterRef> {
    (record::clusters().into_iter())
        .map(|(name, key)| ClusterRef { name, key })
        .collect()
}

/// One series of a metric the filter defined, as [`metrics`] lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSeries {
    /// The name the filter gave, e.g. `hits_total`.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The name on the proxy's `/metrics` with the default prefix, e.g.
    /// `weft_filter_hits_total` (see [`exported_name`]).
    pub exported: String,
    /// The filter's labels and this series' values, in order. The proxy puts
    /// `filter="<the filter's name>"` before them.
    pub labels: Vec<(String, String)>,
    /// What it holds now.
    pub value: MetricValue,
}

/// The name a metric the filter defines has on the proxy's `/metrics`, with the
/// default prefix `weft_filter_` (a filter's `metrics.prefix` replaces it): a counter
/// named `hits` or `hits_total` is `weft_filter_hits_total`, a gauge `open` is
/// `weft_filter_open`, and a histogram `latency` is the series
/// `weft_filter_latency_bucket`, `_sum` and `_count`, here `weft_filter_latency`.
pub fn exported_name(name: &str, kind: MetricKind) -> String {
    match kind {
        MetricKind::Counter => {
            format!(
                "weft_filter_{}_total",
                name.strip_suffix("_total").unwrap_or(name)
            )
        }
        MetricKind::Gauge | MetricKind::Histogram => format!("weft_filter_{name}"),
    }
}

/// Every series of every metric defined on this thread, in the order of definition
/// and then of first use.
pub fn metrics() -> Vec<MetricSeries> {
    record::with_families(|families| {
        let mut all = Vec::new();
        for f in families {
            for (values, value) in &f.series {
                all.push(MetricSeries {
                    name: f.name.clone(),
                    kind: f.kind,
                    exported: exported_name(&f.name, f.kind),
                    labels: f
                        .labels
                        .iter()
                        .cloned()
                        .zip(values.iter().cloned())
                        .collect(),
                    value: value.clone(),
                });
            }
        }
        all
    })
}

/// The value of the series of metric `name` (as the filter named it) with these label
/// values, once it was updated or resolved.
pub fn metric(name: &str, label_values: &[&str]) -> Option<MetricValue> {
    record::with_families(|families| {
        let family = families.iter().find(|f| f.name == name)?;
        let series = family
            .series
            .iter()
            .find(|(v, _)| v.iter().eq(label_values.iter()));
        series.map(|(_, value)| value.clone())
    })
}

/// The value of that series as a number: a counter's total, a gauge's value, a
/// histogram's count of observations; 0 when the series was never touched, `None`
/// when no metric has that name.
pub fn metric_value(name: &str, label_values: &[&str]) -> Option<f64> {
    let defined = record::with_families(|fs| fs.iter().any(|f| f.name == name));
    if !defined {
        return None;
    }
    Some(metric(name, label_values).map_or(0.0, |v| v.as_f64()))
}

/// The clock the filter reads through [`time`](crate::time), the state's time to
/// live, and [`Context::facts`](crate::Context::facts)' `elapsed`: the system's until
/// a test sets or advances it, then only where the test puts it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use weft_sdk::{testing::clock, time};
/// clock::set(UNIX_EPOCH + Duration::from_secs(1_000));
/// let before = time::monotonic();
/// clock::advance(Duration::from_secs(30));
/// assert_eq!(time::monotonic() - before, Duration::from_secs(30));
/// assert_eq!(time::wall(), UNIX_EPOCH + Duration::from_secs(1_030));
/// ```
pub mod clock {
    use super::{Duration, SystemTime, record};

    /// Stop the clock at this wall time; the monotonic clock stops where it is.
    pub fn set(wall: SystemTime) {
        record::set_clock(wall);
    }

    /// Move both clocks forward (stopping them first, at now, if they run).
    pub fn advance(by: Duration) {
        record::advance_clock(by);
    }

    /// Whether the test stopped the clock.
    pub fn is_set() -> bool {
        record::clock_is_set()
    }
}
