//! The traffic proxies report on their stream ([`weft_api::Report`]), kept per
//! reporter, service and route in one-second slots for the last [`MAX_WINDOW`], and
//! summed over a window for `GET /v1/stats` (what `weft stat` shows).
//!
//! Memory is bounded: at most [`MAX_ROWS`] rows (reporter, service, route), each with
//! at most one slot per second of the window; a report row past the limit is
//! counted and dropped, and rows with nothing in the window leave.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_api::{MAX_REPORT_BUCKETS, MAX_REPORT_ROWS, Report, Traffic};

/// The longest window a query may ask for, and how long traffic is kept.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(120);
/// Most rows (reporter, service, route) kept.
pub(crate) const MAX_ROWS: usize = 1000;
/// Longest service or route name.
const MAX_NAME: usize = 253;

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

/// Why a report is refused: it ends the proxy's stream, as a bad ACK does.
pub(crate) fn check_report(report: &Report) -> Result<(), String> {
    if report.rows.len() > MAX_REPORT_ROWS {
        return Err(format!(
            "Report.rows: {} rows; at most {MAX_REPORT_ROWS}",
            report.rows.len()
        ));
    }
    for row in &report.rows {
        check_row(row).map_err(|e| format!("Report.rows: {e}"))?;
    }
    Ok(())
}

fn check_row(row: &Traffic) -> Result<(), String> {
    if Reporter::parse(&row.reporter).is_none() {
        return Err(format!(
            "reporter {:?} is neither destination nor source",
            crate::stream::short(&row.reporter)
        ));
    }
    for (what, value) in [("service", &row.service), ("route", &row.route)] {
        if value.len() > MAX_NAME || value.chars().any(char::is_control) {
            return Err(format!(
                "{what} {:?} is longer than {MAX_NAME} bytes or holds control characters",
                crate::stream::short(value)
            ));
        }
    }
    if row.service.is_empty() {
        return Err("a row has no service".into());
    }
    if row.errors > row.requests {
        return Err(format!(
            "{}: {} errors out of {} requests",
            row.service, row.errors, row.requests
        ));
    }
    let histogram = !row.buckets.is_empty();
    if histogram
        && (row.buckets.len() > MAX_REPORT_BUCKETS || row.buckets.len() != row.bounds_ms.len() + 1)
    {
        return Err(format!(
            "{}: a histogram needs one bucket more than its bounds, and at most {MAX_REPORT_BUCKETS}",
            row.service
        ));
    }
    let increasing = row
        .bounds_ms
        .windows(2)
        .all(|w| w[0] < w[1] && w[1].is_finite());
    let first_ok = row.bounds_ms.first().is_none_or(|b| *b >= 0.0);
    let sum_ok = row.sum_ms.is_finite() && row.sum_ms >= 0.0;
    if !(increasing && first_ok && sum_ok) {
        return Err(format!(
            "{}: histogram bounds must be finite, not negative and increasing, and the sum finite",
            row.service
        ));
    }
    Ok(())
}

/// A bucket's upper bound in nanoseconds; `u64::MAX` is `+Inf`.
fn bound_ns(ms: f64) -> u64 {
    // Saturates for bounds past ~584 years, which is as good as +Inf.
    (ms * 1e6).round() as u64
}

#[derive(Default)]
struct Counts {
    requests: u64,
    errors: u64,
    sum_ms: f64,
    /// (upper bound in ns, count), sorted by bound.
    buckets: Vec<(u64, u64)>,
}

impl Counts {
    fn add_row(&mut self, row: &Traffic) {
        self.requests += row.requests;
        self.errors += row.errors;
        self.sum_ms += row.sum_ms;
        let bounds = (row.bounds_ms.iter().map(|b| bound_ns(*b))).chain([u64::MAX]);
        for (bound, n) in bounds.zip(row.buckets.iter().copied()) {
            self.add_bucket(bound, n);
        }
    }

    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.sum_ms += other.sum_ms;
        for (bound, n) in &other.buckets {
            self.add_bucket(*bound, *n);
        }
    }

    fn add_bucket(&mut self, bound: u64, n: u64) {
        match self.buckets.binary_search_by_key(&bound, |b| b.0) {
            Ok(i) => self.buckets[i].1 += n,
            Err(i) => self.buckets.insert(i, (bound, n)),
        }
    }

    /// The `q` quantile in milliseconds, interpolated within its bucket the way
    /// Prometheus' `histogram_quantile` does; none without latency counts.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().map(|b| b.1).sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        let mut lower = 0u64;
        for &(upper, n) in &self.buckets {
            if n > 0 && (below + n) as f64 >= rank {
                if upper == u64::MAX {
                    // Past every bound: the highest bound is all that is known.
                    return Some(lower as f64 / 1e6);
                }
                let within = (rank - below as f64) / n as f64;
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1e6);
            }
            below += n;
            if upper != u64::MAX {
                lower = upper;
            }
        }
        Some(lower as f64 / 1e6)
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
    /// Node id to the last second it reported this row.
    nodes: HashMap<String, u64>,
}

impl Row {
    fn prune(&mut self, oldest: u64) {
        while self.slots.front().is_some_and(|s| s.second < oldest) {
            self.slots.pop_front();
        }
        self.nodes.retain(|_, s| *s >= oldest);
    }
}

type Key = (String, String, Reporter);

#[derive(Default)]
struct Inner {
    rows: HashMap<Key, Row>,
    /// Report rows dropped because [`MAX_ROWS`] rows were kept.
    dropped: u64,
}

/// Every proxy's reported traffic.
pub(crate) struct Stats {
    inner: Mutex<Inner>,
    epoch: Instant,
}

/// One service, or one of its routes, over a window.
#[derive(Debug, Serialize)]
pub(crate) struct Line {
    requests: u64,
    errors: u64,
    /// Share of requests that did not fail; none without requests.
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

/// What `GET /v1/stats` answers.
#[derive(Debug, Serialize)]
pub(crate) struct View {
    /// The window asked for.
    window_seconds: u64,
    /// The part of it this server has been collecting for: rates divide by it.
    covered_seconds: f64,
    /// How often proxies report: the newest requests show this much later.
    report_interval_seconds: f64,
    /// Report rows dropped since start because the server kept as many rows as it
    /// may.
    dropped_rows: u64,
    services: Vec<ServiceLine>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::default(),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Add a checked report from `node`, at the current second.
    pub(crate) fn record(&self, node: &str, report: &Report) {
        let now = self.now();
        let oldest = now.saturating_sub(MAX_WINDOW.as_secs());
        let mut inner = self.lock();
        for traffic in &report.rows {
            let Some(reporter) = Reporter::parse(&traffic.reporter) else {
                continue;
            };
            let key = (traffic.service.clone(), traffic.route.clone(), reporter);
            if !inner.rows.contains_key(&key) && inner.rows.len() >= MAX_ROWS {
                inner.rows.retain(|_, r| {
                    r.prune(oldest);
                    !r.slots.is_empty()
                });
                if inner.rows.len() >= MAX_ROWS {
                    if inner.dropped == 0 {
                        tracing::warn!(
                            "keeping traffic of {MAX_ROWS} services and routes already; \
                             dropping reports of others"
                        );
                    }
                    inner.dropped += 1;
                    continue;
                }
            }
            let row = inner.rows.entry(key).or_default();
            row.prune(oldest);
            match row.slots.back_mut() {
                Some(slot) if slot.second == now => slot.counts.add_row(traffic),
                _ => {
                    let mut counts = Counts::default();
                    counts.add_row(traffic);
                    row.slots.push_back(Slot {
                        second: now,
                        counts,
                    });
                }
            }
            match row.nodes.get_mut(node) {
                Some(second) => *second = now,
                None => {
                    row.nodes.insert(node.to_owned(), now);
                }
            }
        }
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
        let mut inner = self.lock();
        inner.rows.retain(|_, r| {
            r.prune(oldest);
            !r.slots.is_empty()
        });
        // Per service: its routes' counts and proxies, by reporter.
        type Routes<'a> = BTreeMap<&'a str, (Counts, Vec<&'a str>)>;
        let mut services: BTreeMap<&str, BTreeMap<Reporter, Routes<'_>>> = BTreeMap::new();
        for ((service, route, reporter), row) in &inner.rows {
            let mut counts = Counts::default();
            for slot in row.slots.iter().filter(|s| s.second >= from) {
                counts.add(&slot.counts);
            }
            if counts.requests == 0 {
                continue;
            }
            let nodes = (row.nodes.iter())
                .filter(|(_, s)| **s >= from)
                .map(|(n, _)| n.as_str())
                .collect();
            (services
                .entry(service)
                .or_default()
                .entry(*reporter)
                .or_default())
            .insert(route, (counts, nodes));
        }
        let line = |counts: &Counts, proxies: usize| Line {
            requests: counts.requests,
            errors: counts.errors,
            success_rate: (counts.requests > 0)
                .then(|| (counts.requests - counts.errors) as f64 / counts.requests as f64),
            rps: counts.requests as f64 / covered,
            latency_ms: Latency {
                p50: counts.quantile(0.5),
                p95: counts.quantile(0.95),
                p99: counts.quantile(0.99),
            },
            proxies,
        };
        let mut lines = Vec::new();
        for (service, mut by_reporter) in services {
            let reporter = match choice {
                Choice::Only(r) => r,
                Choice::Auto if by_reporter.contains_key(&Reporter::Destination) => {
                    Reporter::Destination
                }
                Choice::Auto => Reporter::Source,
            };
            let Some(routes) = by_reporter.remove(&reporter) else {
                continue;
            };
            let mut total = Counts::default();
            let mut proxies: Vec<&str> = Vec::new();
            let routes = routes
                .into_iter()
                .map(|(route, (counts, nodes))| {
                    total.add(&counts);
                    proxies.extend(&nodes);
                    RouteLine {
                        route: route.to_owned(),
                        line: line(&counts, nodes.len()),
                    }
                })
                .collect();
            proxies.sort_unstable();
            proxies.dedup();
            lines.push(ServiceLine {
                service: service.to_owned(),
                reporter,
                line: line(&total, proxies.len()),
                routes,
            });
        }
        View {
            window_seconds: window.as_secs(),
            covered_seconds: covered,
            report_interval_seconds: interval.as_secs_f64(),
            dropped_rows: inner.dropped,
            services: lines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reporter: &str, service: &str, route: &str, ms: &[f64]) -> Traffic {
        let bounds_ms = vec![1.0, 5.0, 10.0, 50.0];
        let mut buckets = vec![0; bounds_ms.len() + 1];
        for v in ms {
            buckets[bounds_ms.partition_point(|b| b < v)] += 1;
        }
        Traffic {
            reporter: reporter.into(),
            service: service.into(),
            route: route.into(),
            requests: ms.len() as u64,
            errors: 1,
            bounds_ms,
            buckets,
            sum_ms: ms.iter().sum(),
        }
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let mut c = Counts::default();
        c.add_row(&row("source", "s", "", &[0.5, 2.0, 3.0, 4.0]));
        // Ranks: p50 = 2 of 4 lands in (1, 5] holding 3: 1 + 4 * (1/3).
        let p50 = c.quantile(0.5).unwrap();
        assert!((p50 - (1.0 + 4.0 / 3.0)).abs() < 1e-9, "{p50}");
        assert_eq!(c.quantile(0.0), Some(0.0));
        // Past every bound: the highest bound.
        let mut c = Counts::default();
        c.add_row(&row("source", "s", "", &[70.0, 80.0]));
        assert_eq!(c.quantile(0.99), Some(50.0));
        assert_eq!(Counts::default().quantile(0.5), None);
    }

    #[test]
    fn reports_sum_per_service_and_prefer_the_destination_side() {
        let stats = Stats::new();
        let report = |rows| Report { rows };
        stats.record(
            "caller-1",
            &report(vec![row("source", "bank", "api", &[2.0, 3.0])]),
        );
        stats.record(
            "callee-1",
            &report(vec![
                row("destination", "bank", "api", &[1.5, 2.5]),
                row("destination", "bank", "", &[20.0]),
            ]),
        );
        stats.record(
            "callee-2",
            &report(vec![row("destination", "bank", "api", &[4.0, 7.0])]),
        );
        stats.record(
            "caller-1",
            &report(vec![row("source", "other", "x", &[1.0])]),
        );
        let view = stats.view(
            Duration::from_secs(10),
            Choice::Auto,
            Duration::from_secs(1),
        );
        let json = serde_json::to_value(&view).unwrap();
        let services = json["services"].as_array().unwrap();
        assert_eq!(services.len(), 2);
        let bank = &services[0];
        assert_eq!(bank["service"], "bank");
        assert_eq!(bank["reporter"], "destination");
        assert_eq!(bank["requests"], 5);
        assert_eq!(bank["errors"], 3);
        assert_eq!(bank["proxies"], 2);
        let routes = bank["routes"].as_array().unwrap();
        assert_eq!(routes[0]["route"], "");
        assert_eq!(routes[1]["route"], "api");
        assert_eq!(routes[1]["requests"], 4);
        assert_eq!(routes[1]["proxies"], 2);
        assert_eq!(services[1]["reporter"], "source");
        let source = stats.view(
            Duration::from_secs(10),
            Choice::Only(Reporter::Source),
            Duration::from_secs(1),
        );
        let source = serde_json::to_value(&source).unwrap();
        assert_eq!(source["services"][0]["requests"], 2);
        assert_eq!(source["services"][0]["proxies"], 1);
    }

    #[test]
    fn bad_reports_are_named() {
        let mut r = row("inbound", "bank", "", &[1.0]);
        assert!(
            check_row(&r)
                .unwrap_err()
                .contains("neither destination nor source")
        );
        r.reporter = "source".into();
        assert_eq!(check_row(&r), Ok(()));
        r.errors = 5;
        assert!(check_row(&r).unwrap_err().contains("5 errors out of 1"));
        r.errors = 0;
        r.bounds_ms = vec![5.0, 1.0, 2.0, 3.0];
        assert!(check_row(&r).unwrap_err().contains("increasing"));
        r.bounds_ms.pop();
        assert!(check_row(&r).unwrap_err().contains("one bucket more"));
        r.service = "a\x1b[2J".into();
        assert!(check_row(&r).unwrap_err().contains("control characters"));
    }
}
