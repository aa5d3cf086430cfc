//! The proxy's services when a filter runs natively, as in `cargo test` of its crate:
//! no proxy is there to answer, so each call is answered here, the way the proxy
//! answers it, within this thread.
//!
//! - logs go to standard error;
//! - metrics are checked as the proxy checks them (names, kinds, label counts) and
//!   otherwise dropped;
//! - state is a map private to the thread, with the proxy's versions and limits;
//! - clocks are the system's, and random numbers come from the standard library's
//!   per-process random keys.
//!
//! Without this, the generated imports would abort the test binary on their first
//! call (they exist only in wasm).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::__weft_bindings::weft::filter::host::{
    Entry, Level, MetricError, MetricKind, StateError,
};

use crate::limits::{
    MAX_STATE_KEY, MAX_STATE_KEYS, MAX_STATE_VALUE, valid_bounds, valid_label, valid_name,
};

#[derive(Default)]
struct Host {
    metrics: Vec<(String, MetricKind, usize)>,
    state: HashMap<String, (Vec<u8>, u64)>,
    version: u64,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::default();
}

fn with<R>(f: impl FnOnce(&mut Host) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    eprintln!("{level} filter: {message}");
}

pub(crate) fn define_metric(
    kind: MetricKind,
    name: &str,
    _help: &str,
    labels: &[String],
) -> Result<u32, MetricError> {
    if !valid_name(name) || !labels.iter().all(|l| valid_label(l)) {
        return Err(MetricError::InvalidName);
    }
    with(|h| {
        if let Some(i) = h.metrics.iter().position(|(n, _, _)| n == name) {
            let (_, k, n) = &h.metrics[i];
            if *k != kind || *n != labels.len() {
                return Err(MetricError::Conflict);
            }
            return Ok(i as u32);
        }
        h.metrics.push((name.to_owned(), kind, labels.len()));
        Ok((h.metrics.len() - 1) as u32)
    })
}

pub(crate) fn define_histogram(
    name: &str,
    help: &str,
    labels: &[String],
    bounds: &[f64],
) -> Result<u32, MetricError> {
    if !valid_bounds(bounds) {
        return Err(MetricError::InvalidName);
    }
    define_metric(MetricKind::Histogram, name, help, labels)
}

/// A series handle natively: the metric's id, plus one.
pub(crate) fn metric_series(id: u32, labels: &[String]) -> Result<u64, MetricError> {
    let kinds = [
        MetricKind::Counter,
        MetricKind::Gauge,
        MetricKind::Histogram,
    ];
    use_metric(id, labels, &kinds).map(|()| u64::from(id) + 1)
}

/// Check an update of series `handle` of one of these kinds.
fn use_series(handle: u64, allowed: &[MetricKind]) -> Result<(), MetricError> {
    let id = handle.checked_sub(1).and_then(|i| usize::try_from(i).ok());
    with(|h| match id.and_then(|i| h.metrics.get(i)) {
        None => Err(MetricError::UnknownMetric),
        Some((_, kind, _)) if !allowed.contains(kind) => Err(MetricError::Conflict),
        Some(_) => Ok(()),
    })
}

pub(crate) fn series_add(handle: u64, _delta: i64) -> Result<(), MetricError> {
    use_series(handle, &[MetricKind::Counter, MetricKind::Gauge])
}

pub(crate) fn series_set(handle: u64, _value: i64) -> Result<(), MetricError> {
    use_series(handle, &[MetricKind::Gauge])
}

pub(crate) fn series_observe(handle: u64, _value: f64) -> Result<(), MetricError> {
    use_series(handle, &[MetricKind::Histogram])
}

/// Natively no proxy loads the filter: the clusters a filter names are what
/// [`crate::Filter::clusters`] returns, for its tests to check.
pub(crate) fn declare_cluster(_name: &str, _key: &str) {}

/// No proxy exports spans natively.
pub(crate) fn spans_exported() -> bool {
    false
}

/// Checks a span as the proxy does; natively no exporter takes it.
pub(crate) fn export_span(_span: &crate::trace::Span) -> bool {
    false
}

/// Check a use of metric `id` with these labels and this operation.
fn use_metric(id: u32, labels: &[String], allowed: &[MetricKind]) -> Result<(), MetricError> {
    with(|h| match h.metrics.get(id as usize) {
        None => Err(MetricError::UnknownMetric),
        Some((_, kind, n)) if !allowed.contains(kind) || *n != labels.len() => {
            Err(MetricError::LabelMismatch)
        }
        Some(_) => Ok(()),
    })
}

pub(crate) fn metric_add(id: u32, labels: &[String], _delta: i64) -> Result<(), MetricError> {
    use_metric(id, labels, &[MetricKind::Counter, MetricKind::Gauge])
}

pub(crate) fn metric_set(id: u32, labels: &[String], _value: i64) -> Result<(), MetricError> {
    use_metric(id, labels, &[MetricKind::Gauge])
}

pub(crate) fn metric_observe(id: u32, labels: &[String], _value: f64) -> Result<(), MetricError> {
    use_metric(id, labels, &[MetricKind::Histogram])
}

pub(crate) fn state_get(key: &str) -> Option<Entry> {
    with(|h| {
        h.state.get(key).map(|(value, version)| Entry {
            value: value.clone(),
            version: *version,
        })
    })
}

fn check(h: &Host, key: &str, value: &[u8]) -> Result<(), StateError> {
    if key.len() > MAX_STATE_KEY || value.len() > MAX_STATE_VALUE {
        return Err(StateError::TooLarge);
    }
    if h.state.len() >= MAX_STATE_KEYS && !h.state.contains_key(key) {
        return Err(StateError::Full);
    }
    Ok(())
}

fn write(h: &mut Host, key: &str, value: Vec<u8>) -> u64 {
    h.version += 1;
    h.state.insert(key.to_owned(), (value, h.version));
    h.version
}

pub(crate) fn state_set(key: &str, value: &[u8]) -> Result<u64, StateError> {
    with(|h| {
        check(h, key, value)?;
        Ok(write(h, key, value.to_vec()))
    })
}

pub(crate) fn state_compare_and_swap(
    key: &str,
    expected: Option<u64>,
    value: &[u8],
) -> Result<Option<u64>, StateError> {
    with(|h| {
        check(h, key, value)?;
        if h.state.get(key).map(|(_, v)| *v) != expected {
            return Ok(None);
        }
        Ok(Some(write(h, key, value.to_vec())))
    })
}

pub(crate) fn state_increment(key: &str, delta: i64) -> Result<i64, StateError> {
    with(|h| {
        let current = match h.state.get(key) {
            None => 0,
            Some((bytes, _)) => i64::from_le_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StateError::NotANumber)?,
            ),
        };
        let next = current.wrapping_add(delta);
        check(h, key, &next.to_le_bytes())?;
        write(h, key, next.to_le_bytes().to_vec());
        Ok(next)
    })
}

pub(crate) fn state_delete(key: &str) -> bool {
    with(|h| h.state.remove(key).is_some())
}

pub(crate) fn monotonic_now() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    // Each RandomState has fresh keys; hashing the clock mixes them into a number.
    RandomState::new().hash_one(wall_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_checked_as_the_proxy_checks_them() {
        let labels = ["kind".to_owned()];
        let id = define_metric(MetricKind::Counter, "hits_total", "", &labels).unwrap();
        let again = define_metric(MetricKind::Counter, "hits_total", "", &labels);
        assert!(matches!(again, Ok(i) if i == id));
        let gauge = define_metric(MetricKind::Gauge, "hits_total", "", &labels);
        assert!(matches!(gauge, Err(MetricError::Conflict)));
        let bad = define_metric(MetricKind::Counter, "Bad-Name", "", &[]);
        assert!(matches!(bad, Err(MetricError::InvalidName)));
        assert!(metric_add(id, &labels, 1).is_ok());
        assert!(matches!(
            metric_add(id, &[], 1),
            Err(MetricError::LabelMismatch)
        ));
        let set = metric_set(id, &labels, 1);
        assert!(matches!(set, Err(MetricError::LabelMismatch)));
        let unknown = metric_add(99, &labels, 1);
        assert!(matches!(unknown, Err(MetricError::UnknownMetric)));
    }

    #[test]
    fn state_has_versions_and_numbers() {
        let v1 = state_set("k", b"a").unwrap();
        assert!(matches!(
            state_compare_and_swap("k", Some(v1 + 5), b"b"),
            Ok(None)
        ));
        let v2 = state_compare_and_swap("k", Some(v1), b"b")
            .unwrap()
            .unwrap();
        assert!(v2 > v1);
        assert_eq!(state_get("k").unwrap().value, b"b");
        assert!(matches!(
            state_increment("k", 1),
            Err(StateError::NotANumber)
        ));
        assert!(matches!(state_increment("n", 2), Ok(2)));
        assert!(matches!(state_increment("n", -5), Ok(-3)));
        assert!(state_delete("n"));
        assert!(!state_delete("n"));
        let long = "k".repeat(MAX_STATE_KEY + 1);
        assert!(matches!(state_set(&long, b""), Err(StateError::TooLarge)));
        let draws: std::collections::HashSet<u64> = (0..8).map(|_| random_u64()).collect();
        assert!(draws.len() > 1, "random numbers repeat: {draws:?}");
    }
}
