//! What the native host remembers for a filter's tests, per thread: the log lines, the
//! metrics with their values, the clusters declared, and the test's clock. The native
//! host (`crate::native`) writes here; [`crate::testing`] reads it back.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::__weft_bindings::weft::filter::host::{Level, MetricError, MetricKind};
use crate::limits::{valid_bounds, valid_metric};

/// One line a filter logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its message.
    pub message: String,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        write!(f, "{level} {}", self.message)
    }
}

/// The value of one series of a metric a filter defined.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    /// A counter's total.
    Counter(u64),
    /// A gauge's value.
    Gauge(i64),
    /// A histogram's observations: how many, and their sum.
    Histogram {
        /// Number of observations.
        count: u64,
        /// Sum of the observed values.
        sum: f64,
    },
}

impl MetricValue {
    /// The value as a number: a counter's total, a gauge's value, a histogram's count.
    pub fn as_f64(&self) -> f64 {
        match *self {
            MetricValue::Counter(n) => n as f64,
            MetricValue::Gauge(n) => n as f64,
            MetricValue::Histogram { count, .. } => count as f64,
        }
    }
}

/// A metric the filter defined.
pub(crate) struct Family {
    pub(crate) name: String,
    pub(crate) kind: MetricKind,
    pub(crate) labels: Vec<String>,
    bounds: Option<Vec<f64>>,
    /// Label values and value, in the order the series were first used.
    pub(crate) series: Vec<(Vec<String>, MetricValue)>,
}

impl Family {
    fn value_mut(&mut self, values: &[String]) -> Result<&mut MetricValue, MetricError> {
        if values.len() != self.labels.len() {
            return Err(MetricError::LabelMismatch);
        }
        let i = match self.series.iter().position(|(v, _)| v == values) {
            Some(i) => i,
            None => {
                let zero = match self.kind {
                    MetricKind::Counter => MetricValue::Counter(0),
                    MetricKind::Gauge => MetricValue::Gauge(0),
                    MetricKind::Histogram => MetricValue::Histogram { count: 0, sum: 0.0 },
                };
                self.series.push((values.to_vec(), zero));
                self.series.len() - 1
            }
        };
        Ok(&mut self.series[i].1)
    }
}

/// The clock a test set: readings stay where the test put them until it moves them.
#[derive(Clone, Copy)]
struct Frozen {
    wall: SystemTime,
    monotonic: Duration,
}

#[derive(Default)]
struct Record {
    logs: Vec<LogLine>,
    families: Vec<Family>,
    /// Series handles: the metric and the label values; a handle is the place + 1.
    handles: Vec<(u32, Vec<String>)>,
    clusters: Vec<(String, String)>,
    clock: Option<Frozen>,
}

thread_local! {
    static RECORD: RefCell<Record> = RefCell::default();
}

fn with<R>(f: impl FnOnce(&mut Record) -> R) -> R {
    RECORD.with(|r| f(&mut r.borrow_mut()))
}

/// Forget everything this thread recorded, and go back to the system's clocks.
pub(crate) fn reset() {
    with(|r| *r = Record::default());
}

pub(crate) fn log(level: Level, message: &str) {
    with(|r| {
        r.logs.push(LogLine {
            level,
            message: message.to_owned(),
        });
    });
}

pub(crate) fn logs() -> Vec<LogLine> {
    with(|r| r.logs.clone())
}

pub(crate) fn declare_cluster(name: &str, key: &str) {
    with(|r| r.clusters.push((name.to_owned(), key.to_owned())));
}

pub(crate) fn clusters() -> Vec<(String, String)> {
    with(|r| r.clusters.clone())
}

pub(crate) fn define(
    kind: MetricKind,
    name: &str,
    labels: &[String],
    bounds: Option<&[f64]>,
) -> Result<u32, MetricError> {
    // As the proxy checks them: names, distinct labels, bucket bounds.
    if !valid_metric(name, labels) {
        return Err(MetricError::InvalidName);
    }
    if bounds.is_some_and(|b| !valid_bounds(b)) {
        return Err(MetricError::InvalidName);
    }
    let bounds = bounds.map(<[f64]>::to_vec);
    with(|r| {
        if let Some(i) = r.families.iter().position(|f| f.name == name) {
            let f = &r.families[i];
            if f.kind != kind || f.labels != labels || f.bounds != bounds {
                return Err(MetricError::Conflict);
            }
            return u32::try_from(i).map_err(|_| MetricError::LimitExceeded);
        }
        r.families.push(Family {
            name: name.to_owned(),
            kind,
            labels: labels.to_vec(),
            bounds,
            series: Vec::new(),
        });
        u32::try_from(r.families.len() - 1).map_err(|_| MetricError::LimitExceeded)
    })
}

/// Apply one update to a series' value, as the proxy does: a counter only goes up, a
/// gauge is added to or set, a histogram observes numbers.
#[derive(Clone, Copy)]
pub(crate) enum Update {
    Add(i64),
    Set(i64),
    Observe(f64),
}

fn apply(value: &mut MetricValue, update: Update) -> Result<(), MetricError> {
    match (value, update) {
        (MetricValue::Counter(n), Update::Add(d)) => {
            let d = u64::try_from(d).map_err(|_| MetricError::Conflict)?;
            *n = n.saturating_add(d);
        }
        (MetricValue::Gauge(n), Update::Add(d)) => *n = n.wrapping_add(d),
        (MetricValue::Gauge(n), Update::Set(v)) => *n = v,
        (MetricValue::Histogram { count, sum }, Update::Observe(v)) if !v.is_nan() => {
            *count += 1;
            *sum += v;
        }
        _ => return Err(MetricError::Conflict),
    }
    Ok(())
}

pub(crate) fn update(metric: u32, labels: &[String], update: Update) -> Result<(), MetricError> {
    with(|r| {
        let family = (r.families.get_mut(metric as usize)).ok_or(MetricError::UnknownMetric)?;
        apply(family.value_mut(labels)?, update)
    })
}

pub(crate) fn series(metric: u32, labels: &[String]) -> Result<u64, MetricError> {
    with(|r| {
        let family = (r.families.get_mut(metric as usize)).ok_or(MetricError::UnknownMetric)?;
        family.value_mut(labels)?;
        let key = (metric, labels.to_vec());
        let place = match r.handles.iter().position(|h| *h == key) {
            Some(i) => i,
            None => {
                r.handles.push(key);
                r.handles.len() - 1
            }
        };
        Ok(place as u64 + 1)
    })
}

pub(crate) fn update_series(handle: u64, update: Update) -> Result<(), MetricError> {
    let place = handle.checked_sub(1).and_then(|p| usize::try_from(p).ok());
    let found = with(|r| place.and_then(|p| r.handles.get(p).cloned()));
    let (metric, labels) = found.ok_or(MetricError::UnknownMetric)?;
    self::update(metric, &labels, update)
}

/// Run `f` over the metrics defined on this thread.
pub(crate) fn with_families<R>(f: impl FnOnce(&[Family]) -> R) -> R {
    with(|r| f(&r.families))
}

fn real_monotonic() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

pub(crate) fn set_clock(wall: SystemTime) {
    with(|r| {
        let monotonic = r.clock.map_or_else(real_monotonic, |c| c.monotonic);
        r.clock = Some(Frozen { wall, monotonic });
    });
}

pub(crate) fn advance_clock(by: Duration) {
    with(|r| {
        let c = r.clock.get_or_insert_with(|| Frozen {
            wall: SystemTime::now(),
            monotonic: real_monotonic(),
        });
        c.wall += by;
        c.monotonic += by;
    });
}

pub(crate) fn clock_is_set() -> bool {
    with(|r| r.clock.is_some())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn monotonic_now() -> u64 {
    nanos(with(|r| r.clock.map(|c| c.monotonic)).unwrap_or_else(real_monotonic))
}

pub(crate) fn wall_now() -> u64 {
    let wall = with(|r| r.clock.map(|c| c.wall)).unwrap_or_else(SystemTime::now);
    wall.duration_since(UNIX_EPOCH).map_or(0, nanos)
}
