//! Services the proxy offers to filters. Calls are cheap and never block; the ones
//! that can fail return `Result`.

use crate::__weft_bindings::weft::filter::host as raw;

/// Structured logs through the proxy's logger, tagged with the filter's name.
pub mod log {
    use super::raw;

    /// Log at trace level.
    pub fn trace(message: &str) {
        raw::log(raw::Level::Trace, message);
    }
    /// Log at debug level.
    pub fn debug(message: &str) {
        raw::log(raw::Level::Debug, message);
    }
    /// Log at info level.
    pub fn info(message: &str) {
        raw::log(raw::Level::Info, message);
    }
    /// Log at warn level.
    pub fn warn(message: &str) {
        raw::log(raw::Level::Warn, message);
    }
    /// Log at error level.
    pub fn error(message: &str) {
        raw::log(raw::Level::Error, message);
    }
}

/// Metrics exported on the proxy's `/metrics` as `weft_filter_<name>`, with a
/// `filter` label naming the filter. Define them in [`crate::Filter::init`].
pub mod metrics {
    use super::raw;
    pub use raw::MetricError;

    fn labels(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn define(
        kind: raw::MetricKind,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<u32, MetricError> {
        raw::define_metric(kind, name, help, &labels(label_names))
    }

    /// A counter: only goes up.
    #[derive(Clone, Copy, Debug)]
    pub struct Counter(u32);

    impl Counter {
        /// Define (or find) a counter with these label names.
        pub fn define(name: &str, help: &str, label_names: &[&str]) -> Result<Self, MetricError> {
            define(raw::MetricKind::Counter, name, help, label_names).map(Self)
        }
        /// Add to the series with these label values.
        pub fn add(&self, label_values: &[&str], delta: u64) -> Result<(), MetricError> {
            let delta = i64::try_from(delta).unwrap_or(i64::MAX);
            raw::metric_add(self.0, &labels(label_values), delta)
        }
    }

    /// A gauge: goes up and down.
    #[derive(Clone, Copy, Debug)]
    pub struct Gauge(u32);

    impl Gauge {
        /// Define (or find) a gauge with these label names.
        pub fn define(name: &str, help: &str, label_names: &[&str]) -> Result<Self, MetricError> {
            define(raw::MetricKind::Gauge, name, help, label_names).map(Self)
        }
        /// Add (or, negative, subtract).
        pub fn add(&self, label_values: &[&str], delta: i64) -> Result<(), MetricError> {
            raw::metric_add(self.0, &labels(label_values), delta)
        }
        /// Set.
        pub fn set(&self, label_values: &[&str], value: i64) -> Result<(), MetricError> {
            raw::metric_set(self.0, &labels(label_values), value)
        }
    }

    /// A histogram of observations.
    #[derive(Clone, Copy, Debug)]
    pub struct Histogram(u32);

    impl Histogram {
        /// Define (or find) a histogram with these label names.
        pub fn define(name: &str, help: &str, label_names: &[&str]) -> Result<Self, MetricError> {
            define(raw::MetricKind::Histogram, name, help, label_names).map(Self)
        }
        /// Record one observation.
        pub fn observe(&self, label_values: &[&str], value: f64) -> Result<(), MetricError> {
            raw::metric_observe(self.0, &labels(label_values), value)
        }
    }
}

/// Key-value state shared by every instance of this filter in this proxy.
pub mod state {
    use super::raw;
    pub use raw::{Entry, StateError};

    /// Read a key.
    pub fn get(key: &str) -> Option<Entry> {
        raw::state_get(key)
    }
    /// Write a key; returns its new version.
    pub fn set(key: &str, value: &[u8]) -> Result<u64, StateError> {
        raw::state_set(key, value)
    }
    /// Write only if the key's version is `expected` (`None`: only if absent).
    /// `Ok(None)` when the version did not match.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<u64>,
        value: &[u8],
    ) -> Result<Option<u64>, StateError> {
        raw::state_compare_and_swap(key, expected, value)
    }
    /// Add to an integer key atomically; returns the new value.
    pub fn increment(key: &str, delta: i64) -> Result<i64, StateError> {
        raw::state_increment(key, delta)
    }
    /// Remove a key; true if it was there.
    pub fn delete(key: &str) -> bool {
        raw::state_delete(key)
    }
}

/// Clocks.
pub mod time {
    use super::raw;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// A monotonic instant; only differences mean anything.
    pub fn monotonic() -> Duration {
        Duration::from_nanos(raw::monotonic_now())
    }
    /// The wall clock.
    pub fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(raw::wall_now())
    }
}

/// Randomness from the proxy (not for cryptography).
pub mod random {
    use super::raw;

    /// A random u64.
    pub fn u64() -> u64 {
        raw::random_u64()
    }

    /// True with the given probability in percent (0 to 100).
    pub fn chance(percent: f64) -> bool {
        if percent >= 100.0 {
            return true;
        }
        if percent <= 0.0 {
            return false;
        }
        // 53 random bits make an evenly spread f64 in [0, 1).
        let unit = (raw::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit * 100.0 < percent
    }
}
