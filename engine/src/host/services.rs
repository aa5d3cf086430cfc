//! The host services of `weft:filter/host`: logs, metrics, shared state, clocks,
//! declared clusters, spans and random numbers.

use super::{HostState, nanos, wall_now};
use crate::bindings::host_api;
use crate::shared::ClusterRef;

/// The most clusters one filter may declare; names and keys are bounded as well.
const MAX_DECLARED: usize = 1024;
const MAX_DECLARED_TEXT: usize = 512;

impl host_api::Host for HostState {
    fn log(&mut self, level: host_api::Level, message: String) {
        let filter = &*self.shared.name;
        match level {
            host_api::Level::Trace => tracing::trace!(target: "weft::filter", filter, "{message}"),
            host_api::Level::Debug => tracing::debug!(target: "weft::filter", filter, "{message}"),
            host_api::Level::Info => tracing::info!(target: "weft::filter", filter, "{message}"),
            host_api::Level::Warn => tracing::warn!(target: "weft::filter", filter, "{message}"),
            host_api::Level::Error => tracing::error!(target: "weft::filter", filter, "{message}"),
        }
    }

    fn define_metric(
        &mut self,
        kind: host_api::MetricKind,
        name: String,
        help: String,
        labels: Vec<String>,
    ) -> Result<u32, host_api::MetricError> {
        self.shared.metrics.define(kind, &name, &help, labels, None)
    }

    fn metric_series(
        &mut self,
        metric: u32,
        labels: Vec<String>,
    ) -> Result<u64, host_api::MetricError> {
        self.shared.metrics.series(metric, labels)
    }

    fn series_add(&mut self, series: u64, delta: i64) -> Result<(), host_api::MetricError> {
        self.shared.metrics.series_add(series, delta)
    }

    fn series_set(&mut self, series: u64, value: i64) -> Result<(), host_api::MetricError> {
        self.shared.metrics.series_set(series, value)
    }

    fn series_observe(&mut self, series: u64, value: f64) -> Result<(), host_api::MetricError> {
        self.shared.metrics.series_observe(series, value)
    }

    fn define_histogram(
        &mut self,
        name: String,
        help: String,
        labels: Vec<String>,
        bounds: Vec<f64>,
    ) -> Result<u32, host_api::MetricError> {
        let kind = host_api::MetricKind::Histogram;
        self.shared
            .metrics
            .define(kind, &name, &help, labels, Some(bounds))
    }

    fn metric_add(
        &mut self,
        metric: u32,
        labels: Vec<String>,
        delta: i64,
    ) -> Result<(), host_api::MetricError> {
        self.shared.metrics.add(metric, labels, delta)
    }

    fn metric_set(
        &mut self,
        metric: u32,
        labels: Vec<String>,
        value: i64,
    ) -> Result<(), host_api::MetricError> {
        self.shared.metrics.set(metric, labels, value)
    }

    fn metric_observe(
        &mut self,
        metric: u32,
        labels: Vec<String>,
        value: f64,
    ) -> Result<(), host_api::MetricError> {
        self.shared.metrics.observe(metric, labels, value)
    }

    fn state_get(&mut self, key: String) -> Option<host_api::Entry> {
        self.shared.state.get(&key)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<u64, host_api::StateError> {
        self.shared.state.set(key, value, None)
    }

    fn state_compare_and_swap(
        &mut self,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<Option<u64>, host_api::StateError> {
        self.shared
            .state
            .compare_and_swap(key, expected, value, None)
    }

    fn state_increment(&mut self, key: String, delta: i64) -> Result<i64, host_api::StateError> {
        self.shared.state.increment(key, delta)
    }

    fn state_delete(&mut self, key: String) -> bool {
        self.shared.state.delete(&key)
    }

    fn state_set_with_ttl(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<u64, host_api::StateError> {
        self.shared.state.set(key, value, Some(ttl_ms))
    }

    fn state_compare_and_swap_with_ttl(
        &mut self,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<Option<u64>, host_api::StateError> {
        (self.shared.state).compare_and_swap(key, expected, value, Some(ttl_ms))
    }

    fn state_keys(&mut self, prefix: String, after: Option<String>, limit: u32) -> Vec<String> {
        self.shared.state.keys(&prefix, after.as_deref(), limit)
    }

    fn monotonic_now(&mut self) -> u64 {
        nanos(self.epoch.elapsed())
    }

    fn wall_now(&mut self) -> u64 {
        wall_now()
    }

    fn declare_cluster(&mut self, name: String, key: String) {
        let Some(declared) = self.declared.as_mut() else {
            return;
        };
        if declared.len() < MAX_DECLARED
            && name.len() <= MAX_DECLARED_TEXT
            && key.len() <= MAX_DECLARED_TEXT
            && !declared.iter().any(|d| d.name == name && d.key == key)
        {
            declared.push(ClusterRef { name, key });
        }
    }

    fn spans_exported(&mut self) -> bool {
        self.shared.spans.enabled()
    }

    fn export_span(&mut self, span: host_api::Span) -> bool {
        let valid = span.trace_id != (0, 0) && span.span_id != 0 && span.parent_span_id != Some(0);
        valid && self.shared.spans.push(span)
    }

    fn random_u64(&mut self) -> u64 {
        self.rng.u64(..)
    }
}
