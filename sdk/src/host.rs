//! Services the proxy offers to filters. Every call is cheap and never blocks; the
//! ones that can fail return `Result`, and nothing here panics on the proxy's answer.

use crate::__weft_bindings::weft::filter::host as raw;
// In a filter component the proxy answers; natively (a filter crate's own tests) the
// SDK does, so a call never reaches an import that exists only in wasm.
#[cfg(not(target_arch = "wasm32"))]
use crate::native as imp;
#[cfg(target_arch = "wasm32")]
use raw as imp;

/// Tell the proxy a cluster the filter's configuration names; the glue calls it
/// during `init` for every [`crate::Filter::clusters`] entry.
pub(crate) fn declare_cluster(cluster: &crate::ClusterRef) {
    imp::declare_cluster(&cluster.name, &cluster.key);
}

/// Log records through the proxy's logger, tagged with the filter's name.
///
/// ```no_run
/// weft_sdk::log::info("config loaded");
/// weft_sdk::log::warn(&format!("unknown tenant {:?}", "acme"));
/// ```
pub mod log {
    use super::{imp, raw};
    pub use raw::Level;

    /// Log at this level.
    pub fn log(level: Level, message: &str) {
        imp::log(level, message);
    }
    /// Log at trace level.
    pub fn trace(message: &str) {
        imp::log(Level::Trace, message);
    }
    /// Log at debug level.
    pub fn debug(message: &str) {
        imp::log(Level::Debug, message);
    }
    /// Log at info level.
    pub fn info(message: &str) {
        imp::log(Level::Info, message);
    }
    /// Log at warn level.
    pub fn warn(message: &str) {
        imp::log(Level::Warn, message);
    }
    /// Log at error level.
    pub fn error(message: &str) {
        imp::log(Level::Error, message);
    }
}

/// Metrics on the proxy's admin `/metrics`. Define them in [`crate::Filter::init`]
/// and keep the handles in the filter value.
///
/// # Exported names
///
/// Every series carries a `filter` label first, naming the filter as its listener's
/// chain does, then the metric's own labels. With the default prefix `weft_filter_`
/// (a filter's `metrics.prefix` in the configuration replaces it):
///
/// | defined as | on `/metrics` |
/// |---|---|
/// | `Counter::define("hits", ..)` | `weft_filter_hits_total{filter="..",..}` |
/// | `Counter::define("hits_total", ..)` | the same: `_total` is not doubled |
/// | `Gauge::define("open", ..)` | `weft_filter_open{filter="..",..}` |
/// | `Histogram::define("latency", ..)` | `weft_filter_latency_bucket{filter="..",..,le=".."}`, `weft_filter_latency_sum`, `weft_filter_latency_count` |
///
/// A metric holds at most `metrics.max_series` label sets; an update of a new one past
/// that is counted in the metric's overflow series (every label value `overflow`) and
/// in `weft_engine_filter_metric_dropped{filter="..",metric="<name>"}`.
///
/// In a native test the values are kept for `weft_sdk::testing::metric_value`, and
/// `weft_sdk::testing::exported_name` gives the exported name.
///
/// ```
/// use weft_sdk::metrics::Counter;
/// let hits = Counter::define("hits", "Requests seen.", &["kind"])?;
/// hits.inc(&["api"])?;
/// // On the proxy: weft_filter_hits_total{filter="<its name>",kind="api"} 1
/// # #[cfg(not(target_arch = "wasm32"))]
/// assert_eq!(weft_sdk::testing::metric_value("hits", &["api"]), Some(1.0));
/// # Ok::<(), weft_sdk::metrics::MetricError>(())
/// ```
pub mod metrics {
    use super::{imp, raw};
    pub use raw::MetricError;

    // The WIT list<string> lowers from owned strings only.
    fn owned(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn define(
        kind: raw::MetricKind,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<u32, MetricError> {
        imp::define_metric(kind, name, help, &owned(label_names))
    }

    /// One label set of a metric, resolved once with `series` on the metric: updates
    /// by it pass no strings, so a filter that records the same label sets over and
    /// over keeps these (in a map of its own) and saves most of each update's cost.
    ///
    /// A series the proxy expired for being idle (the filter's `metrics.expire_after`)
    /// answers [`MetricError::UnknownMetric`]: resolve its labels again.
    ///
    /// ```no_run
    /// use weft_sdk::metrics::Counter;
    /// let hits = Counter::define("hits_total", "Hits.", &["route"])?;
    /// let api = hits.series(&["api"])?;
    /// api.inc()?;
    /// # Ok::<(), weft_sdk::metrics::MetricError>(())
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Series(u64);

    impl Series {
        /// Add one (counter or gauge).
        pub fn inc(&self) -> Result<(), MetricError> {
            self.add(1)
        }
        /// Add to a counter (not below zero) or a gauge.
        pub fn add(&self, delta: i64) -> Result<(), MetricError> {
            imp::series_add(self.0, delta)
        }
        /// Set a gauge.
        pub fn set(&self, value: i64) -> Result<(), MetricError> {
            imp::series_set(self.0, value)
        }
        /// Record one observation in a histogram.
        pub fn observe(&self, value: f64) -> Result<(), MetricError> {
            imp::series_observe(self.0, value)
        }
    }

    fn series(metric: u32, label_values: &[&str]) -> Result<Series, MetricError> {
        imp::metric_series(metric, &owned(label_values)).map(Series)
    }

    /// A counter: only goes up.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Counter(u32);

    impl Counter {
        /// Define (or find, with the same label names) a counter.
        pub fn define(name: &str, help: &str, label_names: &[&str]) -> Result<Self, MetricError> {
            define(raw::MetricKind::Counter, name, help, label_names).map(Self)
        }
        /// The series of these label values, to update without passing them again.
        pub fn series(&self, label_values: &[&str]) -> Result<Series, MetricError> {
            series(self.0, label_values)
        }
        /// Add one to the series with these label values.
        pub fn inc(&self, label_values: &[&str]) -> Result<(), MetricError> {
            self.add(label_values, 1)
        }
        /// Add to the series with these label values.
        pub fn add(&self, label_values: &[&str], delta: u64) -> Result<(), MetricError> {
            let delta = i64::try_from(delta).unwrap_or(i64::MAX);
            imp::metric_add(self.0, &owned(label_values), delta)
        }
    }

    /// A gauge: goes up and down.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Gauge(u32);

    impl Gauge {
        /// Define (or find, with the same label names) a gauge.
        pub fn define(name: &str, help: &str, label_names: &[&str]) -> Result<Self, MetricError> {
            define(raw::MetricKind::Gauge, name, help, label_names).map(Self)
        }
        /// The series of these label values, to update without passing them again.
        pub fn series(&self, label_values: &[&str]) -> Result<Series, MetricError> {
            series(self.0, label_values)
        }
        /// Add to the series with these label values (negative: subtract).
        pub fn add(&self, label_values: &[&str], delta: i64) -> Result<(), MetricError> {
            imp::metric_add(self.0, &owned(label_values), delta)
        }
        /// Set the series with these label values.
        pub fn set(&self, label_values: &[&str], value: i64) -> Result<(), MetricError> {
            imp::metric_set(self.0, &owned(label_values), value)
        }
    }

    /// A histogram: observations counted in buckets.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Histogram(u32);

    impl Histogram {
        /// Define (or find, with the same label names) a histogram.
        pub fn define(name: &str, help: &str, label_names: &[&str]) -> Result<Self, MetricError> {
            define(raw::MetricKind::Histogram, name, help, label_names).map(Self)
        }
        /// Define (or find, the same way) a histogram with these bucket upper bounds:
        /// finite, strictly increasing, at most 64 (`+Inf` is added).
        ///
        /// ```no_run
        /// use weft_sdk::metrics::Histogram;
        /// let ms = Histogram::define_with_bounds("latency_ms", "Latency.", &["route"], &[1.0, 10.0, 100.0])?;
        /// # Ok::<(), weft_sdk::metrics::MetricError>(())
        /// ```
        pub fn define_with_bounds(
            name: &str,
            help: &str,
            label_names: &[&str],
            bounds: &[f64],
        ) -> Result<Self, MetricError> {
            imp::define_histogram(name, help, &owned(label_names), bounds).map(Self)
        }
        /// The series of these label values, to update without passing them again.
        pub fn series(&self, label_values: &[&str]) -> Result<Series, MetricError> {
            series(self.0, label_values)
        }
        /// Record one observation in the series with these label values.
        pub fn observe(&self, label_values: &[&str], value: f64) -> Result<(), MetricError> {
            imp::metric_observe(self.0, &owned(label_values), value)
        }
    }
}

/// Key-value state shared by every instance of this filter in this proxy process
/// (one filter's state is not another's). Writes are versioned, so instances can
/// update a value without losing each other's writes.
///
/// The state outlives a reload that changes the filter's configuration or its
/// module: the filter that replaces this one (same name, same listener) goes on with
/// these keys, unless its entry says `state: reset`. Keys may be given a time to live
/// ([`set_with_ttl`](state::set_with_ttl),
/// [`compare_and_swap_with_ttl`](state::compare_and_swap_with_ttl)), and
/// [`keys`](state::keys) lists them by page.
/// At most 10,000 keys of 256 bytes with values of 64 KiB; an expired key does not
/// count once reclaimed, which happens soon after it expires.
///
/// ```no_run
/// use std::time::Duration;
/// use weft_sdk::state;
/// let seen = state::increment("requests", 1)?;
/// // A one-minute window per client: made with a time to live, counted up in it.
/// let key = "window/203.0.113.7";
/// let zero = 0i64.to_le_bytes();
/// state::compare_and_swap_with_ttl(key, None, &zero, Duration::from_secs(60))?;
/// let in_window = state::increment(key, 1)?;
/// for client in state::keys("window/", None, 100) {
///     weft_sdk::log::debug(&client);
/// }
/// # Ok::<(), weft_sdk::state::StateError>(())
/// ```
pub mod state {
    use std::time::Duration;

    use super::{imp, raw};
    pub use raw::{Entry, StateError};

    /// Whole milliseconds, rounded up so that a time to live never falls short.
    fn millis(ttl: Duration) -> u64 {
        let ms = ttl.as_nanos().div_ceil(1_000_000);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Read a key.
    pub fn get(key: &str) -> Option<Entry> {
        imp::state_get(key)
    }
    /// Write a key; returns its new version. The key has no time to live, even if it
    /// had one.
    pub fn set(key: &str, value: &[u8]) -> Result<u64, StateError> {
        imp::state_set(key, value)
    }
    /// Write a key that expires `ttl` from now (zero: at once); returns its new
    /// version. Expired keys are gone for every call at once; the clock is coarse,
    /// so a key may outlive its time by a few milliseconds, never fall short of it.
    pub fn set_with_ttl(key: &str, value: &[u8], ttl: Duration) -> Result<u64, StateError> {
        imp::state_set_with_ttl(key, value, millis(ttl))
    }
    /// Write a key only if its version is `expected` (`None`: only if it is absent).
    /// Returns the new version, or `Ok(None)` when the version did not match.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<u64>,
        value: &[u8],
    ) -> Result<Option<u64>, StateError> {
        imp::state_compare_and_swap(key, expected, value)
    }
    /// [`compare_and_swap`], and on success the key expires `ttl` from now, as
    /// [`set_with_ttl`] says.
    pub fn compare_and_swap_with_ttl(
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<u64>, StateError> {
        imp::state_compare_and_swap_with_ttl(key, expected, value, millis(ttl))
    }
    /// Add `delta` to a key holding an integer (absent counts as 0), atomically;
    /// returns the new value. A key keeps its time to live.
    pub fn increment(key: &str, delta: i64) -> Result<i64, StateError> {
        imp::state_increment(key, delta)
    }
    /// Remove a key; true if it was there.
    pub fn delete(key: &str) -> bool {
        imp::state_delete(key)
    }
    /// A page of the keys that start with `prefix`, in byte order, after `after`
    /// when given: at most `limit`, never more than 1,000. Pass a page's last key as
    /// `after` for the next; a page shorter than `limit` is the last.
    pub fn keys(prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
        imp::state_keys(prefix, after, limit)
    }
}

/// Distributed tracing: finished spans go to the proxy, which exports them in
/// batches to the configured collector (OTLP), never blocking the request.
///
/// ```no_run
/// use weft_sdk::trace::{self, Span, SpanKind};
/// if trace::exported() {
///     let span = Span {
///         trace_id: (1, 2), span_id: 3, parent_span_id: None, name: "GET".into(),
///         kind: SpanKind::Server, start: 0, end: 1, error: false,
///         attributes: vec![("http.request.method".into(), "GET".into())], trace_state: None,
///     };
///     trace::export(&span);
/// }
/// ```
pub mod trace {
    use super::{imp, raw};
    pub use raw::{Span, SpanKind};

    /// Whether the proxy exports spans (a collector is configured), so a filter may
    /// skip building spans that would be dropped.
    pub fn exported() -> bool {
        imp::spans_exported()
    }

    /// Hand a finished span to the proxy's exporter. False when it was dropped: no
    /// collector configured, the export queue full, or a zero id.
    pub fn export(span: &Span) -> bool {
        imp::export_span(span)
    }
}

/// The proxy's clocks.
pub mod time {
    use super::imp;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Time on a monotonic clock; only differences between two readings mean
    /// anything.
    pub fn monotonic() -> Duration {
        Duration::from_nanos(imp::monotonic_now())
    }
    /// The wall clock.
    pub fn wall() -> SystemTime {
        let since_epoch = Duration::from_nanos(imp::wall_now());
        UNIX_EPOCH.checked_add(since_epoch).unwrap_or(UNIX_EPOCH)
    }
}

/// Randomness (not for cryptography): a generator inside the filter instance, seeded
/// once from the proxy's, so that drawing a number costs no call out of the sandbox.
pub mod random {
    use std::cell::Cell;

    use super::imp;

    thread_local! {
        // wyrand's state; 0 means not seeded yet (a seed of 0 is replaced by 1).
        static STATE: Cell<u64> = const { Cell::new(0) };
    }

    /// A random u64.
    pub fn u64() -> u64 {
        STATE.with(|state| {
            let mut s = state.get();
            if s == 0 {
                s = imp::random_u64().max(1);
            }
            // wyrand: one add and one 128-bit multiply per number, and it passes
            // BigCrush and PractRand.
            s = s.wrapping_add(0xa076_1d64_78bd_642f);
            state.set(s);
            let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
            ((t >> 64) as u64) ^ (t as u64)
        })
    }

    /// True with the given probability in percent: `chance(25.0)` is true about one
    /// time in four. 0 or less (or NaN) is never, 100 or more is always.
    pub fn chance(percent: f64) -> bool {
        if percent >= 100.0 {
            return true;
        }
        if percent.is_nan() || percent <= 0.0 {
            return false;
        }
        // The top 53 bits make an evenly spread f64 in [0, 1).
        let unit = (u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit * 100.0 < percent
    }
}
