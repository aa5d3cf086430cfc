//! The traffic proxies report on their stream ([`weft_api::Report`]): checked row by
//! row, kept per reporter, service and route in one-second slots for the last
//! [`MAX_WINDOW`], and summed over a window for `GET /v1/stats` (what `weft stat`
//! shows).
//!
//! A proxy speaks only for itself, and what it says is bounded:
//!
//! - A row the server cannot use (an unknown reporter, more errors than requests,
//!   histogram counts that do not add up, bounds out of order, control characters) is
//!   dropped and counted; the rest of its report is kept. The stream is never ended
//!   for what a report holds: a report of more than [`MAX_REPORT_ROWS`] rows is
//!   dropped whole, and counted too.
//! - A `destination` row is what the proxy itself served, so it counts under the
//!   service the proxy registered as (`Hello.service`), whatever service it names.
//!   The name it gives comes from the request's `Host` unless the telemetry filter
//!   names the service, and any client chooses its `Host`. A `source` row names the
//!   callee as the caller saw it, which the server cannot check: `auto` shows it only
//!   for services that no destination proxy reports.
//! - Every reported histogram is folded into one layout, [`BOUNDS_US`] (Istio's
//!   buckets, which `builtin:telemetry` records, so its quantiles come out as its own
//!   `/metrics` gives them): a bucket's count goes to the server bucket that holds the
//!   bucket's upper bound, and the count past every reported bound to the server
//!   bucket just above the highest one. A slot has the same size however many bounds
//!   a proxy sends.
//! - Sums saturate instead of wrapping.
//!
//! Memory stays under 32 MiB (the `kept_traffic_fits_its_memory_bound` test holds
//! it): at most [`MAX_ROWS`] rows (reporter,
//! service, route), each with at most one fixed-size slot per second of the window,
//! and at most [`MAX_SIGHTINGS`] (row, proxy) pairs to count the proxies of a row
//! by. A row past the limit is counted and dropped; rows with nothing in the window
//! make room; proxies past the limit are not counted.
//!
//! Reports and views do not wait on each other for long: each row has its own lock,
//! the table of rows is locked only to find or add rows, and a view copies the list
//! of rows before it sums them one at a time.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_api::{MAX_REPORT_BUCKETS, MAX_REPORT_ROWS, Report, Traffic};

use crate::error::short;

/// The longest window a query may ask for, and how long traffic is kept.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(120);
/// Slots a row keeps: one per second of the window, and the current one.
const MAX_SLOTS: usize = MAX_WINDOW.as_secs() as usize + 1;
/// Most rows (reporter, service, route) kept.
pub(crate) const MAX_ROWS: usize = 1000;
/// Most (row, proxy) pairs kept to count the proxies of each row: 1000 proxies with
/// 100 rows each.
pub(crate) const MAX_SIGHTINGS: usize = 100_000;
/// Longest route or source row's service name.
const MAX_NAME: usize = 253;
/// A proxy whose rows are dropped is named in the log at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The upper bounds of the server's latency buckets, in microseconds: Istio's
/// `request_duration_milliseconds` buckets, those `builtin:telemetry` records
/// (`DURATION_BUCKETS_MS`). A last bucket counts what passed them all.
pub(crate) const BOUNDS_US: [u64; 19] = [
    500,
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    600_000_000,
    1_800_000_000,
    3_600_000_000,
];
const BUCKETS: usize = BOUNDS_US.len() + 1;

/// Where a row was counted: beside the callee or beside the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Reporter {
    Destination,
    Source,
}

impl Reporter {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "destination" => Some(Self::Destination),
            "source" => Some(Self::Source),
            _ => None,
        }
    }
}

/// Which reporter's counts a query shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Per service: the callee side's when a proxy beside it reported, else the
    /// caller side's. A request seen by both sides counts once.
    #[default]
    Auto,
    Only(Reporter),
}

impl Choice {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            other => Reporter::parse(other).map(Self::Only),
        }
    }
}

/// The proxy a report came from, as it registered.
pub(crate) struct Sender<'a> {
    pub node: &'a str,
    pub service: &'a str,
}

type Key = (String, String, Reporter);

/// A report row the server can use: where it counts, and its counts.
struct Sample {
    key: Key,
    counts: Counts,
    /// A destination row that named another service than its proxy's.
    relabelled: bool,
}

/// The row as the server keeps it, or why it cannot.
fn sample(from: &Sender<'_>, row: &Traffic) -> Result<Sample, String> {
    let reporter = Reporter::parse(&row.reporter).ok_or_else(|| {
        format!(
            "reporter {:?} is neither destination nor source",
            short(&row.reporter)
        )
    })?;
    check_name("route", &row.route)?;
    let service = match reporter {
        Reporter::Destination => from.service,
        Reporter::Source if row.service.is_empty() => {
            return Err("a source row names no service".into());
        }
        Reporter::Source => {
            check_name("service", &row.service)?;
            &row.service
        }
    };
    if row.errors > row.requests {
        return Err(format!(
            "{}: {} errors out of {} requests",
            short(service),
            row.errors,
            row.requests
        ));
    }
    let counts = Counts::fold(row).map_err(|why| format!("{}: {why}", short(service)))?;
    Ok(Sample {
        key: (service.to_owned(), row.route.clone(), reporter),
        counts,
        relabelled: reporter == Reporter::Destination && row.service != from.service,
    })
}

/// Names are shown on operators' terminals and kept as keys.
fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_NAME || value.chars().any(char::is_control) {
        return Err(format!(
            "{what} {:?} is longer than {MAX_NAME} bytes or holds control characters",
            short(value)
        ));
    }
    Ok(())
}

/// A reported bound (in milliseconds) in nanoseconds, rounded: bounds reported in
/// seconds and scaled to milliseconds (0.0005 s * 1000) land on the server's bound,
/// not a float's width past it. The cast saturates, which past every bound is where
/// such a bound belongs.
fn ns(ms: f64) -> u64 {
    (ms * 1e6).round() as u64
}

/// The server bucket that holds a reported upper bound.
fn bucket_of(ms: f64) -> usize {
    let ns = ns(ms);
    BOUNDS_US.partition_point(|us| us * 1000 < ns)
}

/// The server bucket that holds what is just above a reported bound.
fn bucket_above(ms: f64) -> usize {
    let ns = ns(ms);
    BOUNDS_US.partition_point(|us| us * 1000 <= ns)
}

/// Requests, errors and a latency histogram in [`BOUNDS_US`].
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    requests: u64,
    errors: u64,
    buckets: [u64; BUCKETS],
}

impl Counts {
    /// A row's counts, its histogram folded into the server's buckets, if it is one
    /// the server can use.
    fn fold(row: &Traffic) -> Result<Self, String> {
        let mut counts = Counts {
            requests: row.requests,
            errors: row.errors,
            buckets: [0; BUCKETS],
        };
        let increasing = row
            .bounds_ms
            .windows(2)
            .all(|w| w[0] < w[1] && w[1].is_finite());
        let first_ok = row.bounds_ms.first().is_none_or(|b| *b >= 0.0);
        let sum_ok = row.sum_ms.is_finite() && row.sum_ms >= 0.0;
        if !(increasing && first_ok && sum_ok) {
            return Err(
                "histogram bounds must be finite, not negative and increasing, and the sum \
                 finite"
                    .into(),
            );
        }
        if row.buckets.is_empty() {
            return Ok(counts);
        }
        if row.buckets.len() > MAX_REPORT_BUCKETS || row.buckets.len() != row.bounds_ms.len() + 1 {
            return Err(format!(
                "a histogram needs one bucket more than its bounds, and at most \
                 {MAX_REPORT_BUCKETS}"
            ));
        }
        let total: u128 = row.buckets.iter().map(|n| u128::from(*n)).sum();
        // Each observation is a request that ended: a histogram of more is made up.
        if total > u128::from(row.requests) {
            return Err(format!(
                "the histogram counts {total} requests of {}",
                row.requests
            ));
        }
        // Without a bound, a histogram says nothing about latency.
        let Some(top) = row.bounds_ms.last() else {
            return Ok(counts);
        };
        for (i, &n) in row.buckets.iter().enumerate() {
            let to = (row.bounds_ms.get(i)).map_or(bucket_above(*top), |ms| bucket_of(*ms));
            counts.buckets[to] = counts.buckets[to].saturating_add(n);
        }
        Ok(counts)
    }

    fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        for (b, n) in self.buckets.iter_mut().zip(other.buckets) {
            *b = b.saturating_add(n);
        }
    }

    /// Share of requests that did not fail, from 0 to 1; none without requests.
    fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| {
            let ok = self.requests.saturating_sub(self.errors);
            (ok as f64 / self.requests as f64).clamp(0.0, 1.0)
        })
    }

    /// The `q` quantile in milliseconds, interpolated within its bucket the way
    /// Prometheus' `histogram_quantile` does; none without latency counts.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.iter().fold(0u64, |t, n| t.saturating_add(*n));
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            let lower = i.checked_sub(1).map_or(0, |i| BOUNDS_US[i]);
            if n > 0 && below.saturating_add(n) as f64 >= rank {
                let Some(&upper) = BOUNDS_US.get(i) else {
                    // Past every bound: the highest bound is all that is known.
                    return Some(lower as f64 / 1e3);
                };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1e3);
            }
            below = below.saturating_add(n);
        }
        Some(BOUNDS_US[BOUNDS_US.len() - 1] as f64 / 1e3)
    }
}

struct Slot {
    /// Seconds since the store's epoch.
    second: u64,
    counts: Counts,
}

#[derive(Default)]
struct Row {
    slots: VecDeque<Slot>,
    /// Proxy (a hash of its node id) to the last second it reported this row.
    nodes: HashMap<u64, u64>,
    /// Taken out of the table to make room: whatever still holds it must not add.
    gone: bool,
}

impl Row {
    /// Forget what is older than `oldest`; returns how many sightings went.
    fn prune(&mut self, oldest: u64) -> usize {
        while self.slots.front().is_some_and(|s| s.second < oldest) {
            self.slots.pop_front();
        }
        let before = self.nodes.len();
        self.nodes.retain(|_, s| *s >= oldest);
        before - self.nodes.len()
    }
}

struct Entry {
    key: Key,
    row: Mutex<Row>,
}

/// Report rows dropped since start, by why.
#[derive(Default)]
struct Dropped {
    full: AtomicU64,
    invalid: AtomicU64,
    report_too_long: AtomicU64,
}

/// Every proxy's reported traffic.
pub(crate) struct Stats {
    rows: RwLock<HashMap<Key, Arc<Entry>>>,
    /// (row, proxy) pairs kept, across rows.
    sightings: AtomicUsize,
    /// One more than the second rows were last swept out to make room.
    swept: AtomicU64,
    dropped: Dropped,
    relabelled: AtomicU64,
    /// Proxies are counted by a hash of their node id, keyed per server.
    ids: RandomState,
    epoch: Instant,
}

/// What became of a report's rows.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Rows dropped.
    pub dropped: u64,
    /// Why the first was.
    pub why: Option<String>,
}

impl Outcome {
    fn drop(&mut self, rows: u64, why: impl FnOnce() -> String) {
        self.dropped += rows;
        if self.why.is_none() {
            self.why = Some(why());
        }
    }
}

/// One service, or one of its routes, over a window.
#[derive(Debug, Serialize)]
pub(crate) struct Line {
    requests: u64,
    errors: u64,
    /// Share of requests that did not fail, from 0 to 1; none without requests.
    success_rate: Option<f64>,
    /// Requests per second over the window.
    rps: f64,
    latency_ms: Latency,
    /// Proxies that reported it in the window.
    proxies: usize,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ServiceLine {
    service: String,
    reporter: Reporter,
    #[serde(flatten)]
    line: Line,
    routes: Vec<RouteLine>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RouteLine {
    /// Empty when no route was chosen.
    route: String,
    #[serde(flatten)]
    line: Line,
}

/// Report rows dropped since start, by why.
#[derive(Debug, Serialize)]
pub(crate) struct DroppedView {
    /// The server kept [`MAX_ROWS`] rows already.
    full: u64,
    /// Rows the server cannot use.
    invalid: u64,
    /// Rows of reports longer than [`MAX_REPORT_ROWS`].
    report_too_long: u64,
}

/// What `GET /v1/stats` answers.
#[derive(Debug, Serialize)]
pub(crate) struct View {
    /// The window asked for.
    window_seconds: u64,
    /// The part of it this server has been collecting for: rates divide by it.
    covered_seconds: f64,
    /// How often proxies report: the newest requests show this much later.
    report_interval_seconds: f64,
    /// Report rows dropped since start, for any reason.
    dropped_rows: u64,
    dropped: DroppedView,
    /// Destination rows since start that named another service than their proxy's,
    /// counted under the proxy's.
    relabelled_rows: u64,
    services: Vec<ServiceLine>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            rows: RwLock::default(),
            sightings: AtomicUsize::new(0),
            swept: AtomicU64::new(0),
            dropped: Dropped::default(),
            relabelled: AtomicU64::new(0),
            ids: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn forget(&self, sightings: usize) {
        if sightings > 0 {
            self.sightings.fetch_sub(sightings, Relaxed);
        }
    }

    /// Add a report from `from` at the current second: the rows the server can use,
    /// as many as it has room for. Returns what was dropped, and why.
    pub(crate) fn record(&self, from: &Sender<'_>, report: &Report) -> Outcome {
        let mut outcome = Outcome::default();
        let Some(samples) = self.samples(from, report, &mut outcome) else {
            return outcome;
        };
        let now = self.now();
        let oldest = now.saturating_sub(MAX_WINDOW.as_secs());
        let node = self.ids.hash_one(from.node);
        let entries = self.entries(&samples, now, oldest, &mut outcome);
        for (s, entry) in samples.iter().zip(entries) {
            if let Some(entry) = entry {
                self.add(&entry, &s.counts, node, now, oldest);
            }
        }
        outcome
    }

    /// The report's rows the server can use; none when the report is too long to
    /// look at. Dropped rows are counted.
    fn samples(
        &self,
        from: &Sender<'_>,
        report: &Report,
        outcome: &mut Outcome,
    ) -> Option<Vec<Sample>> {
        let len = report.rows.len();
        if len > MAX_REPORT_ROWS {
            self.dropped.report_too_long.fetch_add(len as u64, Relaxed);
            outcome.drop(len as u64, || {
                format!("a report of {len} rows; at most {MAX_REPORT_ROWS}")
            });
            return None;
        }
        let mut samples = Vec::with_capacity(len);
        for row in &report.rows {
            match sample(from, row) {
                Ok(s) => samples.push(s),
                Err(why) => {
                    self.dropped.invalid.fetch_add(1, Relaxed);
                    outcome.drop(1, || why);
                }
            }
        }
        let relabelled = samples.iter().filter(|s| s.relabelled).count();
        if relabelled > 0 {
            self.relabelled.fetch_add(relabelled as u64, Relaxed);
        }
        Some(samples)
    }

    /// The row of each sample, none for a sample with no room. Found under one read
    /// lock; the missing ones are added under one write lock.
    fn entries(
        &self,
        samples: &[Sample],
        now: u64,
        oldest: u64,
        outcome: &mut Outcome,
    ) -> Vec<Option<Arc<Entry>>> {
        let mut entries: Vec<Option<Arc<Entry>>> = {
            let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
            samples.iter().map(|s| rows.get(&s.key).cloned()).collect()
        };
        if entries.iter().any(Option::is_none) {
            let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
            for (s, entry) in samples.iter().zip(&mut entries) {
                if entry.is_none() {
                    *entry = self.find_or_add(&mut rows, &s.key, now, oldest, outcome);
                }
            }
        }
        entries
    }

    /// The row of `key`, added if there is room (after a sweep if need be).
    fn find_or_add(
        &self,
        rows: &mut HashMap<Key, Arc<Entry>>,
        key: &Key,
        now: u64,
        oldest: u64,
        outcome: &mut Outcome,
    ) -> Option<Arc<Entry>> {
        // Another report may have added it between the two locks.
        if let Some(found) = rows.get(key) {
            return Some(found.clone());
        }
        if rows.len() >= MAX_ROWS {
            self.sweep(rows, now, oldest);
        }
        if rows.len() >= MAX_ROWS {
            self.dropped.full.fetch_add(1, Relaxed);
            outcome.drop(1, || {
                format!("the server keeps the traffic of {MAX_ROWS} services and routes already")
            });
            return None;
        }
        let new = Arc::new(Entry {
            key: key.clone(),
            row: Mutex::default(),
        });
        rows.insert(key.clone(), new.clone());
        Some(new)
    }

    /// Add `counts` to the row's slot for `now`, and note that `node` reported it.
    fn add(&self, entry: &Entry, counts: &Counts, node: u64, now: u64, oldest: u64) {
        let mut row = lock(&entry.row);
        if row.gone {
            // Swept out between the lookup and now, for lack of room.
            self.dropped.full.fetch_add(1, Relaxed);
            return;
        }
        self.forget(row.prune(oldest));
        match row.slots.back_mut() {
            Some(slot) if slot.second == now => slot.counts.add(counts),
            _ => {
                row.slots.push_back(Slot {
                    second: now,
                    counts: *counts,
                });
                // Pruning already keeps a row to the window; the memory bound rests
                // on this bound, so it holds here too.
                if row.slots.len() > MAX_SLOTS {
                    row.slots.pop_front();
                }
            }
        }
        if let Some(seen) = row.nodes.get_mut(&node) {
            *seen = now;
        } else if (self.sightings)
            .fetch_update(Relaxed, Relaxed, |n| (n < MAX_SIGHTINGS).then_some(n + 1))
            .is_ok()
        {
            row.nodes.insert(node, now);
        }
    }

    /// Take out the rows with nothing in the window, at most once a second: a table
    /// full of live rows is not walked for every report.
    fn sweep(&self, rows: &mut HashMap<Key, Arc<Entry>>, now: u64, oldest: u64) {
        if self.swept.swap(now + 1, Relaxed) == now + 1 {
            return;
        }
        rows.retain(|_, entry| {
            let mut row = lock(&entry.row);
            self.forget(row.prune(oldest));
            if !row.slots.is_empty() {
                return true;
            }
            self.forget(row.nodes.len());
            row.nodes.clear();
            row.gone = true;
            false
        });
    }

    /// The traffic of the last `window` (at most [`MAX_WINDOW`]), per service and
    /// route.
    pub(crate) fn view(&self, window: Duration, choice: Choice, interval: Duration) -> View {
        let window = window.clamp(Duration::from_secs(1), MAX_WINDOW);
        let elapsed = self.epoch.elapsed();
        let now = elapsed.as_secs();
        // The current second counts as one of the window's.
        let from = (now + 1).saturating_sub(window.as_secs());
        let covered = window
            .min(elapsed)
            .max(Duration::from_secs(1))
            .as_secs_f64();
        let oldest = now.saturating_sub(MAX_WINDOW.as_secs());
        let entries: Vec<Arc<Entry>> = (self.rows.read())
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let services = self.sum(&entries, from, oldest);
        let lines = services
            .into_iter()
            .filter_map(|(service, by_reporter)| {
                service_line(service, by_reporter, choice, covered)
            })
            .collect();
        let dropped = self.dropped_view();
        View {
            window_seconds: window.as_secs(),
            covered_seconds: covered,
            report_interval_seconds: interval.as_secs_f64(),
            dropped_rows: (dropped.full)
                .saturating_add(dropped.invalid)
                .saturating_add(dropped.report_too_long),
            dropped,
            relabelled_rows: self.relabelled.load(Relaxed),
            services: lines,
        }
    }

    /// Each row's counts and proxies since second `from`, per service and reporter;
    /// rows with no requests in the window are left out.
    fn sum<'a>(&self, entries: &'a [Arc<Entry>], from: u64, oldest: u64) -> Services<'a> {
        let mut services = Services::new();
        for entry in entries {
            let (service, route, reporter) = &entry.key;
            let mut counts = Counts::default();
            let nodes = {
                let mut row = lock(&entry.row);
                self.forget(row.prune(oldest));
                for slot in row.slots.iter().filter(|s| s.second >= from) {
                    counts.add(&slot.counts);
                }
                (row.nodes.iter())
                    .filter(|(_, s)| **s >= from)
                    .map(|(n, _)| *n)
                    .collect()
            };
            if counts.requests == 0 {
                continue;
            }
            (services
                .entry(service)
                .or_default()
                .entry(*reporter)
                .or_default())
            .insert(route, (counts, nodes));
        }
        services
    }

    fn dropped_view(&self) -> DroppedView {
        DroppedView {
            full: self.dropped.full.load(Relaxed),
            invalid: self.dropped.invalid.load(Relaxed),
            report_too_long: self.dropped.report_too_long.load(Relaxed),
        }
    }
}

/// A service's routes: their counts and the proxies that reported them.
type Routes<'a> = BTreeMap<&'a str, (Counts, Vec<u64>)>;
/// Per service, its routes by reporter.
type Services<'a> = BTreeMap<&'a str, BTreeMap<Reporter, Routes<'a>>>;

/// A service's line with its routes, by the reporter `choice` picks for it; none
/// when that reporter saw nothing of it.
fn service_line(
    service: &str,
    mut by_reporter: BTreeMap<Reporter, Routes<'_>>,
    choice: Choice,
    covered: f64,
) -> Option<ServiceLine> {
    let reporter = match choice {
        Choice::Only(r) => r,
        Choice::Auto if by_reporter.contains_key(&Reporter::Destination) => Reporter::Destination,
        Choice::Auto => Reporter::Source,
    };
    let routes = by_reporter.remove(&reporter)?;
    let mut total = Counts::default();
    let mut proxies: Vec<u64> = Vec::new();
    let routes = routes
        .into_iter()
        .map(|(route, (counts, nodes))| {
            total.add(&counts);
            proxies.extend(&nodes);
            RouteLine {
                route: route.to_owned(),
                line: Line::new(&counts, nodes.len(), covered),
            }
        })
        .collect();
    // A proxy that reported several routes counts once for the service.
    proxies.sort_unstable();
    proxies.dedup();
    Some(ServiceLine {
        service: service.to_owned(),
        reporter,
        line: Line::new(&total, proxies.len(), covered),
        routes,
    })
}

impl Line {
    /// The line of `counts` reported by `proxies` proxies over `covered` seconds.
    fn new(counts: &Counts, proxies: usize, covered: f64) -> Self {
        Self {
            requests: counts.requests,
            errors: counts.errors,
            success_rate: counts.success_rate(),
            rps: counts.requests as f64 / covered,
            latency_ms: Latency {
                p50: counts.quantile(0.5),
                p95: counts.quantile(0.95),
                p99: counts.quantile(0.99),
            },
            proxies,
        }
    }
}

/// Names a proxy whose report rows are dropped in the log, at most once per
/// [`WARN_EVERY`], with how many were dropped since and why the first was: a proxy
/// that keeps sending them does not flood the log.
#[derive(Default)]
pub(crate) struct DropLog {
    last: Option<Instant>,
    rows: u64,
    why: Option<String>,
}

impl DropLog {
    pub(crate) fn note(&mut self, node: &str, outcome: Outcome) {
        if outcome.dropped == 0 {
            return;
        }
        self.rows = self.rows.saturating_add(outcome.dropped);
        if self.why.is_none() {
            self.why = outcome.why;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            return;
        }
        self.last = Some(now);
        let why = self.why.take().unwrap_or_default();
        tracing::warn!(
            node,
            rows = self.rows,
            "dropped report rows the server cannot keep (counted in GET /v1/stats): {why}"
        );
        self.rows = 0;
    }
}

#[cfg(test)]
mod tests;
