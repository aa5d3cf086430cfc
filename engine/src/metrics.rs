//! Metrics that filters define at run time, exported with the proxy's own on `/metrics`.
//!
//! Each metric is a prometheus-client family named `weft_filter_<name>`, keyed by a
//! `filter` label plus the filter's own labels. A filter gets a small integer handle
//! when it defines a metric, so a hot-path increment is an index and a family lookup.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::bindings::host_api::{MetricError, MetricKind};
use crate::host::FilterShared;
use crate::stats::HOOKS;

type Labels = Vec<(String, String)>;

/// Most metrics one filter may define.
const MAX_METRICS: usize = 64;
/// Most label sets one metric may hold, so a filter cannot blow up `/metrics`.
const MAX_SERIES: usize = 2_000;

fn new_histogram() -> Histogram {
    // 1 µs .. ~17 s when values are seconds; filters that observe other units still
    // get a usable spread.
    Histogram::new(exponential_buckets(0.000_001, 4.0, 13))
}

enum Metric {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge>),
    Histogram(Family<Labels, Histogram, fn() -> Histogram>),
}

struct MetricFamily {
    name: String,
    help: String,
    kind: MetricKind,
    labels: Vec<String>,
    metric: Metric,
    series: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for MetricFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricFamily")
            .field("name", &self.name)
            .finish()
    }
}

/// Holds one in a gauge of live things for as long as the thing it belongs to lives.
pub(crate) struct Live(Gauge);

impl Live {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every filter-defined metric of the process, and the engine's own gauges; register
/// it once as a collector.
#[derive(Debug, Default)]
pub struct MetricsHub {
    families: Mutex<Vec<Arc<MetricFamily>>>,
    /// Filter instances alive (warm in a pool or running a hook).
    pub(crate) instances: Gauge,
    /// Compiled components alive (used by at least one loaded filter).
    pub(crate) components: Gauge,
    /// Every loaded filter, for its hook figures; unloaded ones drop out.
    filters: Mutex<Vec<Weak<FilterShared>>>,
}

/// The hook figures of the filters loaded under one name and module, summed: the same
/// filter on two listeners is one series, and a replaced module's series leave with
/// it.
struct FilterSeries {
    name: Arc<str>,
    digest: Arc<str>,
    /// Per hook: buckets (count per bucket, upper bound in seconds), sum in seconds.
    time: [(Vec<(f64, u64)>, f64); 3],
    failures: [u64; 3],
    instances: i64,
}

impl FilterSeries {
    fn add(&mut self, f: &FilterShared) {
        for (hook, (buckets, sum)) in self.time.iter_mut().enumerate() {
            for (mine, (_, n)) in buckets.iter_mut().zip(f.stats.time[hook].buckets()) {
                mine.1 += n;
            }
            *sum += f.stats.time[hook].sum_seconds();
            self.failures[hook] += f.stats.failures[hook].load(Ordering::Relaxed);
        }
        self.instances += f.stats.instances.load(Ordering::Relaxed).max(0);
    }
}

impl MetricsHub {
    /// Show a newly loaded filter's hook figures for as long as it is loaded.
    pub(crate) fn watch(&self, filter: &Arc<FilterShared>) {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        filters.retain(|f| f.strong_count() > 0);
        filters.push(Arc::downgrade(filter));
    }

    fn filter_series(&self) -> Vec<FilterSeries> {
        let live: Vec<Arc<FilterShared>> = {
            let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
            filters.retain(|f| f.strong_count() > 0);
            filters.iter().filter_map(Weak::upgrade).collect()
        };
        let mut series: Vec<FilterSeries> = Vec::new();
        for f in &live {
            let i = match (series.iter()).position(|s| s.name == f.name && s.digest == f.digest) {
                Some(i) => i,
                None => {
                    let empty = |h: usize| {
                        let buckets = f.stats.time[h].buckets().iter().map(|b| (b.0, 0)).collect();
                        (buckets, 0.0)
                    };
                    series.push(FilterSeries {
                        name: f.name.clone(),
                        digest: f.digest.clone(),
                        time: [empty(0), empty(1), empty(2)],
                        failures: [0; 3],
                        instances: 0,
                    });
                    series.len() - 1
                }
            };
            series[i].add(f);
        }
        series
    }

    fn encode_filter_series(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let series = self.filter_series();
        if series.is_empty() {
            return Ok(());
        }
        let mut time = encoder.encode_descriptor(
            "weft_engine_filter_hook_duration_seconds",
            "Time of a filter's hook calls, getting an instance included.",
            None,
            MetricType::Histogram,
        )?;
        for s in &series {
            for (hook, (buckets, sum)) in s.time.iter().enumerate() {
                let count = buckets.iter().map(|b| b.1).sum();
                if count == 0 {
                    continue;
                }
                let labels = [
                    ("filter", &*s.name),
                    ("sha256", &*s.digest),
                    ("hook", HOOKS[hook]),
                ];
                (time.encode_family(&labels)?)
                    .encode_histogram::<NoLabelSet>(*sum, count, buckets, None)?;
            }
        }
        let mut failures = encoder.encode_descriptor(
            "weft_engine_filter_hook_failures",
            "Hook calls that trapped, panicked, ran past their deadline or out of memory.",
            None,
            MetricType::Counter,
        )?;
        for s in &series {
            for (hook, n) in s.failures.iter().enumerate() {
                if *n == 0 && s.time[hook].0.iter().all(|b| b.1 == 0) {
                    // A hook it does not have, or that never ran.
                    continue;
                }
                let labels = [
                    ("filter", &*s.name),
                    ("sha256", &*s.digest),
                    ("hook", HOOKS[hook]),
                ];
                (failures.encode_family(&labels)?).encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        let mut instances = encoder.encode_descriptor(
            "weft_engine_filter_instances",
            "A filter's instances alive, warm or running a hook.",
            None,
            MetricType::Gauge,
        )?;
        for s in &series {
            let labels = [("filter", &*s.name), ("sha256", &*s.digest)];
            (instances.encode_family(&labels)?).encode_gauge(&s.instances)?;
        }
        Ok(())
    }

    fn define(
        &self,
        kind: MetricKind,
        name: &str,
        help: &str,
        labels: Vec<String>,
    ) -> Result<Arc<MetricFamily>, MetricError> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.bytes().enumerate().all(|(i, b)| {
                    b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit())
                })
        };
        if !valid(name) || !labels.iter().all(|l| valid(l) && l != "filter") {
            return Err(MetricError::InvalidName);
        }
        let full = format!("weft_filter_{name}");
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = families.iter().find(|f| f.name == full) {
            if existing.kind != kind || existing.labels != labels {
                return Err(MetricError::Conflict);
            }
            return Ok(existing.clone());
        }
        let metric = match kind {
            MetricKind::Counter => Metric::Counter(Family::default()),
            MetricKind::Gauge => Metric::Gauge(Family::default()),
            MetricKind::Histogram => Metric::Histogram(Family::new_with_constructor(
                new_histogram as fn() -> Histogram,
            )),
        };
        let family = Arc::new(MetricFamily {
            name: full,
            help: help.to_owned(),
            kind,
            labels,
            metric,
            series: Default::default(),
        });
        families.push(family.clone());
        Ok(family)
    }
}

impl Collector for MetricsHub {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, gauge) in [
            (
                "weft_engine_instances",
                "Filter instances alive, warm or running a hook.",
                &self.instances,
            ),
            (
                "weft_engine_components",
                "Compiled filter components in use.",
                &self.components,
            ),
        ] {
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        self.encode_filter_series(&mut encoder)?;
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        for f in families.iter() {
            let (ty, metric): (_, &dyn EncodeMetric) = match &f.metric {
                Metric::Counter(m) => (m.metric_type(), m),
                Metric::Gauge(m) => (m.metric_type(), m),
                Metric::Histogram(m) => (m.metric_type(), m),
            };
            let mut name = f.name.as_str();
            // The text encoder appends `_total` to counters itself.
            if matches!(f.metric, Metric::Counter(_)) {
                name = name.strip_suffix("_total").unwrap_or(name);
            }
            metric.encode(encoder.encode_descriptor(name, &f.help, None, ty)?)?;
        }
        Ok(())
    }
}

/// One filter's view of the hub: the handles it defined.
pub(crate) struct FilterMetrics {
    filter: String,
    hub: Arc<MetricsHub>,
    handles: RwLock<Vec<Arc<MetricFamily>>>,
    by_name: Mutex<HashMap<String, u32>>,
}

impl FilterMetrics {
    pub(crate) fn new(filter: &str, hub: Arc<MetricsHub>) -> Self {
        Self {
            filter: filter.to_owned(),
            hub,
            handles: RwLock::default(),
            by_name: Mutex::default(),
        }
    }

    pub(crate) fn define(
        &self,
        kind: MetricKind,
        name: &str,
        help: &str,
        labels: Vec<String>,
    ) -> Result<u32, MetricError> {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        let family = self.hub.define(kind, name, help, labels)?;
        if let Some(handle) = by_name.get(name) {
            return Ok(*handle);
        }
        let mut handles = self.handles.write().unwrap_or_else(PoisonError::into_inner);
        if handles.len() >= MAX_METRICS {
            return Err(MetricError::LimitExceeded);
        }
        handles.push(family);
        let handle = u32::try_from(handles.len() - 1).map_err(|_| MetricError::LimitExceeded)?;
        by_name.insert(name.to_owned(), handle);
        Ok(handle)
    }

    fn with<R>(
        &self,
        handle: u32,
        values: Vec<String>,
        f: impl FnOnce(&Metric, &Labels) -> Result<R, MetricError>,
    ) -> Result<R, MetricError> {
        let handles = self.handles.read().unwrap_or_else(PoisonError::into_inner);
        let family = handles
            .get(handle as usize)
            .ok_or(MetricError::UnknownMetric)?;
        if values.len() != family.labels.len() {
            return Err(MetricError::LabelMismatch);
        }
        let mut labels = Vec::with_capacity(values.len() + 1);
        labels.push(("filter".to_owned(), self.filter.clone()));
        labels.extend(family.labels.iter().cloned().zip(values));
        let exists = match &family.metric {
            Metric::Counter(m) => m.get(&labels).is_some(),
            Metric::Gauge(m) => m.get(&labels).is_some(),
            Metric::Histogram(m) => m.get(&labels).is_some(),
        };
        if !exists {
            use std::sync::atomic::Ordering::Relaxed;
            if family.series.fetch_add(1, Relaxed) >= MAX_SERIES {
                family.series.fetch_sub(1, Relaxed);
                return Err(MetricError::LimitExceeded);
            }
        }
        f(&family.metric, &labels)
    }

    pub(crate) fn add(
        &self,
        handle: u32,
        labels: Vec<String>,
        delta: i64,
    ) -> Result<(), MetricError> {
        self.with(handle, labels, |m, l| match m {
            Metric::Counter(c) => {
                let delta = u64::try_from(delta).map_err(|_| MetricError::Conflict)?;
                c.get_or_create(l).inc_by(delta);
                Ok(())
            }
            Metric::Gauge(g) => {
                g.get_or_create(l).inc_by(delta);
                Ok(())
            }
            Metric::Histogram(_) => Err(MetricError::Conflict),
        })
    }

    pub(crate) fn set(
        &self,
        handle: u32,
        labels: Vec<String>,
        value: i64,
    ) -> Result<(), MetricError> {
        self.with(handle, labels, |m, l| match m {
            Metric::Gauge(g) => {
                g.get_or_create(l).set(value);
                Ok(())
            }
            _ => Err(MetricError::Conflict),
        })
    }

    pub(crate) fn observe(
        &self,
        handle: u32,
        labels: Vec<String>,
        value: f64,
    ) -> Result<(), MetricError> {
        self.with(handle, labels, |m, l| match m {
            Metric::Histogram(h) => {
                h.get_or_create(l).observe(value);
                Ok(())
            }
            _ => Err(MetricError::Conflict),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn define_count_and_encode() {
        let hub = Arc::new(MetricsHub::default());
        let m = FilterMetrics::new("stamp", hub.clone());
        let id = m
            .define(
                MetricKind::Counter,
                "hits_total",
                "Hits.",
                vec!["path".into()],
            )
            .unwrap();
        assert_eq!(
            m.define(
                MetricKind::Counter,
                "hits_total",
                "Hits.",
                vec!["path".into()]
            )
            .unwrap(),
            id
        );
        assert!(matches!(
            m.define(MetricKind::Gauge, "hits_total", "Hits.", vec![]),
            Err(MetricError::Conflict)
        ));
        assert!(matches!(
            m.define(MetricKind::Gauge, "Bad-Name", "", vec![]),
            Err(MetricError::InvalidName)
        ));
        m.add(id, vec!["/a".into()], 3).unwrap();
        assert!(matches!(
            m.add(id, vec![], 1),
            Err(MetricError::LabelMismatch)
        ));
        assert!(matches!(
            m.add(7, vec![], 1),
            Err(MetricError::UnknownMetric)
        ));

        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(hub));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains(r#"weft_filter_hits_total{filter="stamp",path="/a"} 3"#),
            "{out}"
        );
    }
}
