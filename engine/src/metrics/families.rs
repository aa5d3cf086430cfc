//! Metrics that filters define at run time, exported with the proxy's own on `/metrics`.
//!
//! A filter's metrics belong to the filter as loaded: a name and a module digest. A
//! reload of the same module keeps counting into the same series; a replaced or removed
//! filter's series leave `/metrics` once its last request is done. Each metric is named
//! `<prefix><name>` (`weft_filter_` unless the filter's configuration says otherwise)
//! and labelled `filter` plus the filter's own labels.
//!
//! Label sets are bounded: a metric holds at most `max_series` of them, and a series
//! not touched for `expire_after` leaves. A full metric still counts: an update of a
//! new label set goes to the metric's overflow series (one more, every label value
//! `overflow`) and is counted in `weft_engine_filter_metric_dropped` (its label set was
//! dropped, not the update). Totals stay right, so a client that floods a label
//! cannot make errors go uncounted.
//!
//! The hot path is a read lock, one hash of the label values the guest passed, and
//! relaxed atomics: a series that exists takes no allocation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::bindings::host_api::{MetricError, MetricKind};
use crate::limits::{valid_bounds, valid_metric};

/// Most metrics one filter may define.
const MAX_METRICS: usize = 64;

/// How a filter's metrics are named and bounded.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSpec {
    /// Put before each metric's name: `weft_filter_` by default; `istio_` makes the
    /// telemetry filter's names Istio's.
    pub prefix: String,
    /// Most label sets (series) one metric holds.
    pub max_series: usize,
    /// A series not updated for this long leaves `/metrics`.
    pub expire_after: Duration,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            prefix: "weft_filter_".to_owned(),
            max_series: 2_000,
            expire_after: Duration::from_secs(600),
        }
    }
}

/// 1 µs .. ~17 s when values are seconds; filters that observe other units pick their
/// own bounds with `define-histogram`.
fn default_bounds() -> Arc<[f64]> {
    (0..13).map(|i| 0.000_001 * 4f64.powi(i)).collect()
}

enum Value {
    Counter(AtomicU64),
    Gauge(AtomicI64),
    Histogram {
        /// The family's bucket bounds.
        bounds: Arc<[f64]>,
        /// One per bound, plus the rest; not cumulative.
        buckets: Box<[AtomicU64]>,
        /// The sum's `f64` bits.
        sum: AtomicU64,
    },
}

/// One label set of a metric.
struct Series {
    /// Milliseconds since the hub's epoch at the last update.
    touched: AtomicU64,
    value: Value,
    /// Its handle once a filter asked for one; 0 before.
    handle: AtomicU64,
    /// Set when it expired: updates by handle then fail, and the filter resolves its
    /// labels again (to a new series).
    dead: AtomicBool,
}

impl Series {
    fn add(&self, delta: i64) -> Result<(), MetricError> {
        match &self.value {
            Value::Counter(c) => {
                let delta = u64::try_from(delta).map_err(|_| MetricError::Conflict)?;
                c.fetch_add(delta, Relaxed);
                Ok(())
            }
            Value::Gauge(g) => {
                g.fetch_add(delta, Relaxed);
                Ok(())
            }
            Value::Histogram { .. } => Err(MetricError::Conflict),
        }
    }

    fn set(&self, value: i64) -> Result<(), MetricError> {
        match &self.value {
            Value::Gauge(g) => {
                g.store(value, Relaxed);
                Ok(())
            }
            _ => Err(MetricError::Conflict),
        }
    }

    fn observe(&self, value: f64) -> Result<(), MetricError> {
        match &self.value {
            Value::Histogram {
                bounds,
                buckets,
                sum,
            } if !value.is_nan() => {
                let i = bounds.partition_point(|b| *b < value);
                buckets[i].fetch_add(1, Relaxed);
                let _ = sum.fetch_update(Relaxed, Relaxed, |s| {
                    Some((f64::from_bits(s) + value).to_bits())
                });
                Ok(())
            }
            _ => Err(MetricError::Conflict),
        }
    }
}

/// A place in a filter's handle table: the series a handle names, and how often the
/// place was given out, so an old handle never names a newer series.
#[derive(Default)]
struct Slot {
    generation: u32,
    series: Option<Arc<Series>>,
}

/// A family and the filter that defined it.
type FamilyOf = (Arc<str>, Arc<MetricFamily>);

/// One metric a filter defined.
struct MetricFamily {
    /// The full name, prefix included.
    name: String,
    /// The name the filter gave.
    short: String,
    help: String,
    kind: MetricKind,
    labels: Box<[String]>,
    /// Histogram bucket bounds, increasing; empty for counters and gauges.
    bounds: Arc<[f64]>,
    series: RwLock<HashMap<Box<[String]>, Arc<Series>>>,
    /// The label values of the overflow series: `overflow` for every label.
    overflow: Box<[String]>,
    /// Updates of a new label set at the series limit, counted in the overflow series.
    dropped: AtomicU64,
}

impl MetricFamily {
    fn new_series(&self, now: u64) -> Series {
        let value = match self.kind {
            MetricKind::Counter => Value::Counter(AtomicU64::new(0)),
            MetricKind::Gauge => Value::Gauge(AtomicI64::new(0)),
            MetricKind::Histogram => Value::Histogram {
                bounds: self.bounds.clone(),
                buckets: (0..=self.bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum: AtomicU64::new(0f64.to_bits()),
            },
        };
        Series {
            touched: AtomicU64::new(now),
            value,
            handle: AtomicU64::new(0),
            dead: AtomicBool::new(false),
        }
    }

    /// Drop the series idle since before `oldest` (ms since the epoch).
    fn expire(&self, series: &mut HashMap<Box<[String]>, Arc<Series>>, oldest: u64) {
        series.retain(|_, s| {
            let keep = s.touched.load(Relaxed) >= oldest;
            if !keep {
                s.dead.store(true, Relaxed);
            }
            keep
        });
    }
}

/// One series of a metric a filter defined, as
/// [`MetricsHub::read_defined`](crate::MetricsHub::read_defined) reads it.
#[derive(Debug)]
pub struct DefinedSeries<'a> {
    /// The filter's name in the chain.
    pub filter: &'a str,
    /// The metric's full name, prefix included (`_total` included for counters).
    pub name: &'a str,
    /// The metric's label names, in order.
    pub labels: &'a [String],
    /// This series' label values, in the same order.
    pub values: &'a [String],
    /// What it counted.
    pub value: SeriesValue<'a>,
}

impl DefinedSeries<'_> {
    /// The value of label `name`, if the metric has that label.
    pub fn label(&self, name: &str) -> Option<&str> {
        let i = self.labels.iter().position(|l| l == name)?;
        self.values.get(i).map(String::as_str)
    }
}

/// A series' value at the time it was read.
#[derive(Debug)]
pub enum SeriesValue<'a> {
    /// A counter's total.
    Counter(u64),
    /// A gauge's value.
    Gauge(i64),
    /// A histogram's upper bounds (increasing, `+Inf` left out), its count per bucket
    /// (not cumulative, one more than the bounds: the last is past every bound) and the
    /// sum of what it observed.
    Histogram {
        /// Upper bounds.
        bounds: &'a [f64],
        /// Count per bucket.
        buckets: &'a [u64],
        /// Sum of the observed values.
        sum: f64,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// Every loaded filter's own metrics, held weakly: an unloaded filter's series leave
/// `/metrics`.
#[derive(Debug)]
pub(crate) struct Families {
    defined: Mutex<Vec<Weak<FilterMetrics>>>,
    epoch: Instant,
}

impl Default for Families {
    fn default() -> Self {
        Self {
            defined: Mutex::default(),
            epoch: Instant::now(),
        }
    }
}

impl Families {
    /// The metrics of a filter being loaded: those of the same filter already loaded
    /// (same name, module and metric settings), so a reload keeps counting, or new ones.
    pub(crate) fn filter_metrics(
        self: &Arc<Self>,
        filter: &str,
        digest: &str,
        spec: &MetricsSpec,
    ) -> Arc<FilterMetrics> {
        let mut defined = lock(&self.defined);
        defined.retain(|m| m.strong_count() > 0);
        let same =
            |m: &FilterMetrics| &*m.filter == filter && &*m.digest == digest && m.spec == *spec;
        if let Some(m) = defined.iter().filter_map(Weak::upgrade).find(|m| same(m)) {
            return m;
        }
        let m = Arc::new(FilterMetrics {
            filter: Arc::from(filter),
            digest: Arc::from(digest),
            spec: spec.clone(),
            hub: Arc::downgrade(self),
            epoch: self.epoch,
            families: RwLock::default(),
            slots: RwLock::default(),
        });
        defined.push(Arc::downgrade(&m));
        m
    }

    fn live_metrics(&self) -> Vec<Arc<FilterMetrics>> {
        let mut defined = lock(&self.defined);
        defined.retain(|m| m.strong_count() > 0);
        defined.iter().filter_map(Weak::upgrade).collect()
    }

    /// Every live filter's families, after dropping their idle series.
    fn live_families(&self) -> Vec<FamilyOf> {
        let now = self.now_ms();
        let mut families = Vec::new();
        for m in &self.live_metrics() {
            let oldest = now.saturating_sub(millis(m.spec.expire_after));
            for f in read(&m.families).iter() {
                f.expire(&mut write(&f.series), oldest);
                families.push((m.filter.clone(), f.clone()));
            }
        }
        families
    }

    /// Read every series of the metrics filters defined, as `/metrics` would show
    /// them (idle series dropped first). For readers off the request path, such as
    /// the report a proxy sends its config server; updates go on meanwhile.
    pub(crate) fn read_defined(&self, mut f: impl FnMut(&DefinedSeries<'_>)) {
        let mut counts = Vec::new();
        for (filter, family) in self.live_families() {
            for (values, s) in read(&family.series).iter() {
                let value = match &s.value {
                    Value::Counter(n) => SeriesValue::Counter(n.load(Relaxed)),
                    Value::Gauge(n) => SeriesValue::Gauge(n.load(Relaxed)),
                    Value::Histogram { buckets, sum, .. } => {
                        counts.clear();
                        counts.extend(buckets.iter().map(|b| b.load(Relaxed)));
                        SeriesValue::Histogram {
                            bounds: &family.bounds,
                            buckets: &counts,
                            sum: f64::from_bits(sum.load(Relaxed)),
                        }
                    }
                };
                f(&DefinedSeries {
                    filter: &filter,
                    name: &family.name,
                    labels: &family.labels,
                    values,
                    value,
                });
            }
        }
    }

    /// Filters' own metrics, grouped by full name: one family may hold the series of
    /// several filters that use the same name (with the same kind and labels).
    pub(crate) fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut by_name: BTreeMap<String, Vec<FamilyOf>> = BTreeMap::new();
        for (filter, f) in self.live_families() {
            by_name.entry(f.name.clone()).or_default().push((filter, f));
        }
        for (name, fams) in &by_name {
            let first = &fams[0].1;
            let (ty, name) = match first.kind {
                // The text encoder appends `_total` to counters itself.
                MetricKind::Counter => (
                    MetricType::Counter,
                    name.strip_suffix("_total").unwrap_or(name),
                ),
                MetricKind::Gauge => (MetricType::Gauge, name.as_str()),
                MetricKind::Histogram => (MetricType::Histogram, name.as_str()),
            };
            let mut family = encoder.encode_descriptor(name, &first.help, None, ty)?;
            for (filter, f) in fams {
                let series = read(&f.series);
                for (values, s) in series.iter() {
                    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(values.len() + 1);
                    labels.push(("filter", filter));
                    labels.extend(
                        f.labels
                            .iter()
                            .map(String::as_str)
                            .zip(values.iter().map(String::as_str)),
                    );
                    let mut metric = family.encode_family(&labels)?;
                    match &s.value {
                        Value::Counter(n) => {
                            metric.encode_counter::<NoLabelSet, _, u64>(&n.load(Relaxed), None)?
                        }
                        Value::Gauge(n) => metric.encode_gauge(&n.load(Relaxed))?,
                        Value::Histogram { buckets, sum, .. } => {
                            let buckets: Vec<(f64, u64)> = (f.bounds.iter().copied())
                                .chain([f64::INFINITY])
                                .zip(buckets.iter().map(|b| b.load(Relaxed)))
                                .collect();
                            let count = buckets.iter().map(|b| b.1).sum();
                            let sum = f64::from_bits(sum.load(Relaxed));
                            metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?
                        }
                    }
                }
            }
        }
        if by_name.is_empty() {
            return Ok(());
        }
        let mut dropped = encoder.encode_descriptor(
            "weft_engine_filter_metric_dropped",
            "Updates of a filter's metric whose label set was new when the metric held as many as its filter's max_series allows: counted in its overflow series instead.",
            None,
            MetricType::Counter,
        )?;
        for fams in by_name.values() {
            for (filter, f) in fams {
                let labels = [("filter", &**filter), ("metric", f.short.as_str())];
                (dropped.encode_family(&labels)?)
                    .encode_counter::<NoLabelSet, _, u64>(&f.dropped.load(Relaxed), None)?;
            }
        }
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One loaded filter's metrics: the families it defined, by handle.
pub(crate) struct FilterMetrics {
    filter: Arc<str>,
    digest: Arc<str>,
    spec: MetricsSpec,
    hub: Weak<Families>,
    epoch: Instant,
    families: RwLock<Vec<Arc<MetricFamily>>>,
    /// The series filters hold handles to, by place.
    slots: RwLock<Vec<Slot>>,
}

impl std::fmt::Debug for FilterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterMetrics")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl FilterMetrics {
    /// Define a metric, or return the handle of the one this filter defined the same
    /// way. `bounds` are a histogram's bucket bounds; none takes the default ones.
    pub(crate) fn define(
        &self,
        kind: MetricKind,
        name: &str,
        help: &str,
        labels: Vec<String>,
        bounds: Option<Vec<f64>>,
    ) -> Result<u32, MetricError> {
        if !valid_metric(name, &labels) {
            return Err(MetricError::InvalidName);
        }
        let bounds: Arc<[f64]> = match (kind, bounds) {
            (MetricKind::Histogram, None) => default_bounds(),
            (MetricKind::Histogram, Some(b)) if valid_bounds(&b) => b.into(),
            (MetricKind::Histogram, Some(_)) => return Err(MetricError::InvalidName),
            (_, None) => Arc::new([]),
            (_, Some(_)) => return Err(MetricError::Conflict),
        };
        let full = format!("{}{name}", self.spec.prefix);
        let same = |f: &MetricFamily| f.kind == kind && *f.labels == *labels && f.bounds == bounds;
        let mut families = write(&self.families);
        if let Some(i) = families.iter().position(|f| f.short == name) {
            return if same(&families[i]) {
                u32::try_from(i).map_err(|_| MetricError::LimitExceeded)
            } else {
                Err(MetricError::Conflict)
            };
        }
        // Another filter may export the same name, but only the same way.
        if let Some(hub) = self.hub.upgrade() {
            for other in hub.live_metrics() {
                if std::ptr::eq(&*other, self) {
                    continue;
                }
                if read(&other.families)
                    .iter()
                    .any(|f| f.name == full && !same(f))
                {
                    return Err(MetricError::Conflict);
                }
            }
        }
        if families.len() >= MAX_METRICS {
            return Err(MetricError::LimitExceeded);
        }
        families.push(Arc::new(MetricFamily {
            name: full,
            short: name.to_owned(),
            help: help.to_owned(),
            kind,
            overflow: labels.iter().map(|_| "overflow".to_owned()).collect(),
            labels: labels.into(),
            bounds,
            series: RwLock::default(),
            dropped: AtomicU64::new(0),
        }));
        u32::try_from(families.len() - 1).map_err(|_| MetricError::LimitExceeded)
    }

    /// Run `f` on the series of `values`, made if it is new; touched. A series that
    /// exists is used under the read lock, without a clone. Past the limit, a new label
    /// set is the overflow series.
    fn with_series<R>(
        &self,
        handle: u32,
        values: Vec<String>,
        f: impl FnOnce(&Arc<Series>) -> Result<R, MetricError>,
    ) -> Result<R, MetricError> {
        let families = read(&self.families);
        let family = families
            .get(handle as usize)
            .ok_or(MetricError::UnknownMetric)?;
        if values.len() != family.labels.len() {
            return Err(MetricError::LabelMismatch);
        }
        let now = millis(self.epoch.elapsed());
        if let Some(s) = read(&family.series).get(&values[..]) {
            s.touched.store(now, Relaxed);
            return f(s);
        }
        let mut series = write(&family.series);
        if let Some(s) = series.get(&values[..]) {
            s.touched.store(now, Relaxed);
            return f(s);
        }
        if series.len() >= self.spec.max_series {
            let oldest = now.saturating_sub(millis(self.spec.expire_after));
            family.expire(&mut series, oldest);
            if series.len() >= self.spec.max_series {
                family.dropped.fetch_add(1, Relaxed);
                if let Some(s) = series.get(&family.overflow) {
                    s.touched.store(now, Relaxed);
                    return f(s);
                }
                // One past the limit, made once (and again after it expired).
                let s = Arc::new(family.new_series(now));
                let r = f(&s);
                series.insert(family.overflow.clone(), s);
                return r;
            }
        }
        let s = Arc::new(family.new_series(now));
        let r = f(&s);
        series.insert(values.into_boxed_slice(), s);
        r
    }

    pub(crate) fn add(
        &self,
        handle: u32,
        labels: Vec<String>,
        delta: i64,
    ) -> Result<(), MetricError> {
        self.with_series(handle, labels, |s| s.add(delta))
    }

    pub(crate) fn set(
        &self,
        handle: u32,
        labels: Vec<String>,
        value: i64,
    ) -> Result<(), MetricError> {
        self.with_series(handle, labels, |s| s.set(value))
    }

    pub(crate) fn observe(
        &self,
        handle: u32,
        labels: Vec<String>,
        value: f64,
    ) -> Result<(), MetricError> {
        self.with_series(handle, labels, |s| s.observe(value))
    }

    /// A handle to the series of `values`: `generation << 32 | place + 1`.
    pub(crate) fn series(&self, metric: u32, values: Vec<String>) -> Result<u64, MetricError> {
        let s = self.with_series(metric, values, |s| Ok(s.clone()))?;
        let known = s.handle.load(Relaxed);
        if known != 0 {
            return Ok(known);
        }
        let mut slots = write(&self.slots);
        let known = s.handle.load(Relaxed);
        if known != 0 {
            return Ok(known);
        }
        // A place whose series expired is given out again, under a new generation.
        let free = slots
            .iter()
            .position(|p| p.series.as_ref().is_none_or(|s| s.dead.load(Relaxed)));
        let place = match free {
            Some(i) => i,
            None => {
                slots.push(Slot::default());
                slots.len() - 1
            }
        };
        let slot = &mut slots[place];
        slot.generation = slot.generation.wrapping_add(1);
        slot.series = Some(s.clone());
        let handle = (u64::from(slot.generation) << 32) | (place as u64 + 1);
        s.handle.store(handle, Relaxed);
        Ok(handle)
    }

    /// Run `f` on the live series `handle` names.
    fn by_handle<R>(
        &self,
        handle: u64,
        f: impl FnOnce(&Series) -> Result<R, MetricError>,
    ) -> Result<R, MetricError> {
        let place = (handle & 0xffff_ffff)
            .checked_sub(1)
            .ok_or(MetricError::UnknownMetric)?;
        let slots = read(&self.slots);
        let slot = slots
            .get(place as usize)
            .ok_or(MetricError::UnknownMetric)?;
        match &slot.series {
            Some(s) if u64::from(slot.generation) == handle >> 32 && !s.dead.load(Relaxed) => {
                s.touched.store(millis(self.epoch.elapsed()), Relaxed);
                f(s)
            }
            _ => Err(MetricError::UnknownMetric),
        }
    }

    pub(crate) fn series_add(&self, handle: u64, delta: i64) -> Result<(), MetricError> {
        self.by_handle(handle, |s| s.add(delta))
    }

    pub(crate) fn series_set(&self, handle: u64, value: i64) -> Result<(), MetricError> {
        self.by_handle(handle, |s| s.set(value))
    }

    pub(crate) fn series_observe(&self, handle: u64, value: f64) -> Result<(), MetricError> {
        self.by_handle(handle, |s| s.observe(value))
    }
}
