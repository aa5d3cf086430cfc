//! The proxy's services when a filter runs natively, as in `cargo test` of its crate:
//! no proxy is there to answer, so each call is answered here, the way the proxy
//! answers it, within this thread.
//!
//! - logs go to standard error and are kept for [`crate::testing::logs`];
//! - metrics are checked as the proxy checks them (names, kinds, labels, bounds) and
//!   their values kept for [`crate::testing::metric`];
//! - state is a map private to the thread, the proxy's own (`state_map.rs`): its
//!   versions, limits, time to live (on the native monotonic clock) and listing;
//! - clocks are the system's until a test sets its own ([`crate::testing::clock`]),
//!   and random numbers come from the standard library's per-process random keys.
//!
//! Without this, the generated imports would abort the test binary on their first
//! call (they exist only in wasm).

use std::cell::RefCell;

use crate::__weft_bindings::weft::filter::host::{
    Entry, Level, MetricError, MetricKind, StateError,
};

use crate::testing::record::{self, Update};

#[derive(Default)]
struct Host {
    state: StateMap,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::default();
}

fn with<R>(f: impl FnOnce(&mut Host) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

pub(crate) fn log(level: Level, message: &str) {
    record::log(level, message);
    let line = record::LogLine {
        level,
        message: message.to_owned(),
    };
    eprintln!("{line}");
}

pub(crate) fn define_metric(
    kind: MetricKind,
    name: &str,
    _help: &str,
    labels: &[String],
) -> Result<u32, MetricError> {
    record::define(kind, name, labels, None)
}

pub(crate) fn define_histogram(
    name: &str,
    _help: &str,
    labels: &[String],
    bounds: &[f64],
) -> Result<u32, MetricError> {
    record::define(MetricKind::Histogram, name, labels, Some(bounds))
}

pub(crate) fn metric_series(id: u32, labels: &[String]) -> Result<u64, MetricError> {
    record::series(id, labels)
}

pub(crate) fn series_add(handle: u64, delta: i64) -> Result<(), MetricError> {
    record::update_series(handle, Update::Add(delta))
}

pub(crate) fn series_set(handle: u64, value: i64) -> Result<(), MetricError> {
    record::update_series(handle, Update::Set(value))
}

pub(crate) fn series_observe(handle: u64, value: f64) -> Result<(), MetricError> {
    record::update_series(handle, Update::Observe(value))
}

/// Natively no proxy loads the filter: the clusters a filter declares are kept for
/// [`crate::testing::declared_clusters`].
pub(crate) fn declare_cluster(name: &str, key: &str) {
    record::declare_cluster(name, key);
}

/// No proxy exports spans natively.
pub(crate) fn spans_exported() -> bool {
    false
}

/// Checks a span as the proxy does; natively no exporter takes it.
pub(crate) fn export_span(_span: &crate::trace::Span) -> bool {
    false
}

pub(crate) fn metric_add(id: u32, labels: &[String], delta: i64) -> Result<(), MetricError> {
    record::update(id, labels, Update::Add(delta))
}

pub(crate) fn metric_set(id: u32, labels: &[String], value: i64) -> Result<(), MetricError> {
    record::update(id, labels, Update::Set(value))
}

pub(crate) fn metric_observe(id: u32, labels: &[String], value: f64) -> Result<(), MetricError> {
    record::update(id, labels, Update::Observe(value))
}

/// Forget this thread's state, as a new proxy process would have none.
pub(crate) fn reset() {
    with(|h| *h = Host::default());
}

// The SDK's own file of the state map, which the engine includes too: one
// implementation of versions, limits, time to live and listing.
#[path = "state_map.rs"]
mod state_map;

use state_map::{Refusal, StateMap};

/// Time to live runs on the native monotonic clock, as the proxy's runs on its own.
fn millis() -> u64 {
    monotonic_now() / 1_000_000
}

fn refused(r: Refusal) -> StateError {
    match r {
        Refusal::TooLarge => StateError::TooLarge,
        Refusal::Full => StateError::Full,
        Refusal::NotANumber => StateError::NotANumber,
    }
}

pub(crate) fn state_get(key: &str) -> Option<Entry> {
    let (value, version) = with(|h| h.state.get(key, millis))?;
    Some(Entry { value, version })
}

pub(crate) fn state_set(key: &str, value: &[u8]) -> Result<u64, StateError> {
    with(|h| h.state.set(key.to_owned(), value.to_vec(), None, millis)).map_err(refused)
}

pub(crate) fn state_set_with_ttl(key: &str, value: &[u8], ttl_ms: u64) -> Result<u64, StateError> {
    let (key, value) = (key.to_owned(), value.to_vec());
    with(|h| h.state.set(key, value, Some(ttl_ms), millis)).map_err(refused)
}

pub(crate) fn state_compare_and_swap(
    key: &str,
    expected: Option<u64>,
    value: &[u8],
) -> Result<Option<u64>, StateError> {
    let (key, value) = (key.to_owned(), value.to_vec());
    with(|h| h.state.compare_and_swap(key, expected, value, None, millis)).map_err(refused)
}

pub(crate) fn state_compare_and_swap_with_ttl(
    key: &str,
    expected: Option<u64>,
    value: &[u8],
    ttl_ms: u64,
) -> Result<Option<u64>, StateError> {
    let (key, value) = (key.to_owned(), value.to_vec());
    with(|h| (h.state).compare_and_swap(key, expected, value, Some(ttl_ms), millis))
        .map_err(refused)
}

pub(crate) fn state_increment(key: &str, delta: i64) -> Result<i64, StateError> {
    with(|h| h.state.increment(key.to_owned(), delta, millis)).map_err(refused)
}

pub(crate) fn state_delete(key: &str) -> bool {
    with(|h| h.state.delete(key, millis))
}

pub(crate) fn state_keys(prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
    with(|h| h.state.keys(prefix, after, limit, millis))
}

pub(crate) fn monotonic_now() -> u64 {
    record::monotonic_now()
}

pub(crate) fn wall_now() -> u64 {
    record::wall_now()
}

pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    // Each RandomState has fresh keys; hashing the clock mixes them into a number.
    RandomState::new().hash_one(wall_now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_STATE_KEY;

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
        assert!(
            matches!(set, Err(MetricError::Conflict)),
            "a counter is not set"
        );
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
        // Time to live and listing, as the proxy does them: a key of ttl 0 is gone at
        // once, one of an hour is there, and listing pages in byte order.
        state_set_with_ttl("t/gone", b"x", 0).unwrap();
        assert!(state_get("t/gone").is_none());
        state_set_with_ttl("t/hour", b"x", 3_600_000).unwrap();
        assert!(matches!(
            state_compare_and_swap_with_ttl("t/new", None, b"y", 3_600_000),
            Ok(Some(_))
        ));
        state_set("t/plain", b"z").unwrap();
        assert_eq!(state_keys("t/", None, 2), ["t/hour", "t/new"]);
        assert_eq!(state_keys("t/", Some("t/new"), 2), ["t/plain"]);
        let draws: std::collections::HashSet<u64> = (0..8).map(|_| random_u64()).collect();
        assert!(draws.len() > 1, "random numbers repeat: {draws:?}");
    }
    #[test]
    fn state_expires_on_the_test_clock() {
        use crate::testing::clock;
        use std::time::{Duration, UNIX_EPOCH};
        clock::set(UNIX_EPOCH + Duration::from_secs(1_000));
        state_set_with_ttl("ttl/k", b"v", 1_000).unwrap();
        state_set("ttl/plain", b"v").unwrap();
        clock::advance(Duration::from_millis(999));
        assert_eq!(state_keys("ttl/", None, 10), ["ttl/k", "ttl/plain"]);
        clock::advance(Duration::from_millis(1));
        assert!(state_get("ttl/k").is_none(), "expired once its time is up");
        assert_eq!(state_keys("ttl/", None, 10), ["ttl/plain"]);
        assert_eq!(with(|h| h.state.held()), 1, "the listing reclaimed it");
    }
}
