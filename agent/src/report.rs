//! Traffic reports: what the proxy's RED metrics counted since the last report, for
//! the config server's `weft stat`.
//!
//! The rows come from the metrics filters define, read the way a Prometheus scrape
//! would read them, so any filter that follows Istio's conventions feeds them
//! (`builtin:telemetry` does):
//!
//! - a counter named `…requests_total` counts requests,
//! - a counter named `…request_errors_total` counts the failed ones,
//! - a histogram named `…request_duration_milliseconds` (or `…_seconds`) their
//!   latency,
//!
//! each labelled `destination_service`, and optionally `reporter` (`destination`
//! when absent) and `route`. Other labels (response code, method, workloads) are
//! summed over. A series' increase is taken from its own last value, so a series that
//! expired, or a filter that was replaced, starts again from zero instead of showing
//! as a drop.

use std::collections::{BTreeMap, HashMap};

use prost::Message;
use weft_api::{MAX_REPORT_BUCKETS, MAX_REPORT_ROWS, Report, Traffic};
use weft_engine::{DefinedSeries, MetricsHub, SeriesValue};

/// Reports stay well below what the server accepts from a proxy.
const MAX_REPORT_BYTES: usize = weft_api::MAX_PROXY_MESSAGE_SIZE - 4096;
/// Longest service or route name reported; longer ones are cut.
const MAX_NAME: usize = 253;

/// What a series measures.
#[derive(Clone, Copy)]
enum Measure {
    Requests,
    Errors,
    /// Latency, with the factor that makes its unit milliseconds.
    Latency(f64),
}

fn measure(name: &str) -> Option<Measure> {
    if name.ends_with("request_errors_total") {
        Some(Measure::Errors)
    } else if name.ends_with("requests_total") {
        Some(Measure::Requests)
    } else if name.ends_with("request_duration_milliseconds") {
        Some(Measure::Latency(1.0))
    } else if name.ends_with("request_duration_seconds") {
        Some(Measure::Latency(1000.0))
    } else {
        None
    }
}

/// A series' value when last read.
enum Last {
    Count(u64),
    Histogram(Vec<u64>, f64),
}

/// Turns the metrics' totals into increases since the previous [`Reporter::collect`].
#[derive(Default)]
pub(crate) struct Reporter {
    /// By series: filter, metric name and label values, joined.
    last: HashMap<String, Last>,
    /// Reused between calls.
    key: String,
}

#[derive(Default)]
struct Row {
    requests: u64,
    errors: u64,
    /// Upper bounds in milliseconds, with their counts.
    buckets: Vec<(f64, u64)>,
    rest: u64,
    sum_ms: f64,
}

impl Reporter {
    /// The increases since the last call (everything counted so far on the first),
    /// as reports of at most [`MAX_REPORT_ROWS`] rows and well under the largest
    /// message a proxy may send.
    pub(crate) fn collect(&mut self, hub: &MetricsHub) -> Vec<Report> {
        let mut rows: BTreeMap<(String, String, String), Row> = BTreeMap::new();
        let mut seen: HashMap<String, Last> = HashMap::with_capacity(self.last.len());
        hub.read_defined(|s| self.read(s, &mut rows, &mut seen));
        // Series that are gone (expired, or their filter was replaced) are forgotten.
        self.last = seen;
        let mut reports = Vec::new();
        let mut report = Report::default();
        let mut size = 0;
        for ((reporter, service, route), row) in rows {
            if row.requests == 0 {
                continue;
            }
            let (bounds_ms, mut buckets): (Vec<f64>, Vec<u64>) = row.buckets.into_iter().unzip();
            buckets.push(row.rest);
            trim(&mut buckets, row.requests);
            let traffic = Traffic {
                reporter,
                service,
                route,
                requests: row.requests,
                errors: row.errors.min(row.requests),
                bounds_ms,
                buckets,
                sum_ms: row.sum_ms,
            };
            let len = traffic.encoded_len() + 8;
            if !report.rows.is_empty()
                && (report.rows.len() == MAX_REPORT_ROWS || size + len > MAX_REPORT_BYTES)
            {
                reports.push(std::mem::take(&mut report));
                size = 0;
            }
            size += len;
            report.rows.push(traffic);
        }
        if !report.rows.is_empty() {
            reports.push(report);
        }
        reports
    }

    fn read(
        &mut self,
        s: &DefinedSeries<'_>,
        rows: &mut BTreeMap<(String, String, String), Row>,
        seen: &mut HashMap<String, Last>,
    ) {
        let Some(measure) = measure(s.name) else {
            return;
        };
        let Some(service) = s.label("destination_service") else {
            return;
        };
        self.key_of(s);
        let last = self.last.remove(&self.key);
        let row = || {
            let reporter = s.label("reporter").unwrap_or("destination");
            let route = s.label("route").unwrap_or("");
            (cut(reporter), cut(service), cut(route))
        };
        match (measure, &s.value) {
            (Measure::Requests | Measure::Errors, SeriesValue::Counter(now)) => {
                let delta = count_increase(last, *now);
                seen.insert(self.key.clone(), Last::Count(*now));
                if delta > 0 {
                    rows.entry(row()).or_default().count(measure, delta);
                }
            }
            (
                Measure::Latency(scale),
                SeriesValue::Histogram {
                    bounds,
                    buckets,
                    sum,
                },
            ) if buckets.len() <= MAX_REPORT_BUCKETS => {
                let (increase, sum_increase) = histogram_increase(last, buckets, *sum);
                if increase.iter().any(|n| *n > 0) {
                    let row = rows.entry(row()).or_default();
                    row.latency(bounds, scale, &increase, sum_increase);
                }
                seen.insert(self.key.clone(), Last::Histogram(buckets.to_vec(), *sum));
            }
            _ => {}
        }
    }

    /// Set `key` to the series' own: its filter, metric name and label values.
    fn key_of(&mut self, s: &DefinedSeries<'_>) {
        self.key.clear();
        for part in [s.filter, s.name]
            .into_iter()
            .chain(s.values.iter().map(String::as_str))
        {
            self.key.push_str(part);
            self.key.push('\0');
        }
    }
}

impl Row {
    /// Add `delta` requests, or failed ones.
    fn count(&mut self, measure: Measure, delta: u64) {
        match measure {
            Measure::Requests => self.requests += delta,
            _ => self.errors += delta,
        }
    }

    /// Add a histogram's increase, its bounds and sum scaled to milliseconds by
    /// `scale`. The row takes the layout of its first histogram.
    fn latency(&mut self, bounds: &[f64], scale: f64, increase: &[u64], sum: f64) {
        if self.buckets.is_empty() && self.rest == 0 {
            self.buckets = bounds.iter().map(|b| (b * scale, 0)).collect();
        }
        let same = self.buckets.len() == bounds.len()
            && (self.buckets.iter().zip(bounds.iter())).all(|(r, b)| r.0 == b * scale);
        // Histograms of another shape for the same row count in its requests, not in
        // its latency.
        if !same {
            return;
        }
        for (b, n) in self.buckets.iter_mut().zip(increase) {
            b.1 += n;
        }
        self.rest += increase[bounds.len()];
        self.sum_ms += (sum * scale).max(0.0);
    }
}

/// A counter's increase since `last`. A counter below its last value started again
/// (a reload with other settings): all of it is new.
fn count_increase(last: Option<Last>, now: u64) -> u64 {
    match last {
        Some(Last::Count(before)) if before <= now => now - before,
        _ => now,
    }
}

/// A histogram's increase since `last`, per bucket, and of its sum. A histogram
/// whose shape changed or that shrank started again: all of it is new.
fn histogram_increase(last: Option<Last>, buckets: &[u64], sum: f64) -> (Vec<u64>, f64) {
    let before = match last {
        Some(Last::Histogram(b, sum)) if b.len() == buckets.len() => {
            let grew = b.iter().zip(buckets.iter()).all(|(b, n)| b <= n);
            grew.then_some((b, sum))
        }
        _ => None,
    };
    match before {
        Some((b, base)) => {
            let increase = buckets.iter().zip(&b).map(|(n, b)| n - b).collect();
            (increase, sum - base)
        }
        None => (buckets.to_vec(), sum),
    }
}

/// Keep a histogram to at most `requests` observations, as the server requires. A
/// request that ends between the read of its counter and of its histogram is in the
/// histogram one report early; the surplus comes off the fullest buckets, where it
/// moves a quantile least.
fn trim(buckets: &mut [u64], requests: u64) {
    let total = buckets.iter().fold(0u64, |t, n| t.saturating_add(*n));
    let mut surplus = total.saturating_sub(requests);
    // Each pass empties a bucket or ends the surplus.
    while surplus > 0 {
        let Some(fullest) = buckets.iter_mut().max() else {
            return;
        };
        let take = surplus.min(*fullest);
        *fullest -= take;
        surplus -= take;
    }
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_NAME {
        return s.to_owned();
    }
    let mut end = MAX_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_by_name() {
        assert!(matches!(
            measure("istio_requests_total"),
            Some(Measure::Requests)
        ));
        assert!(matches!(
            measure("weft_filter_request_errors_total"),
            Some(Measure::Errors)
        ));
        assert!(matches!(
            measure("weft_filter_request_duration_seconds"),
            Some(Measure::Latency(s)) if s == 1000.0
        ));
        assert!(measure("weft_filter_request_bytes").is_none());
        assert_eq!(cut(&"é".repeat(200)).len(), 252);
    }

    #[test]
    fn histograms_count_no_more_than_their_requests() {
        let mut buckets = vec![1, 5, 2, 0];
        trim(&mut buckets, 6);
        assert_eq!(buckets, [1, 3, 2, 0]);
        trim(&mut buckets, 6);
        assert_eq!(
            buckets,
            [1, 3, 2, 0],
            "a histogram within its requests stays"
        );
        trim(&mut buckets, 0);
        assert_eq!(buckets, [0, 0, 0, 0]);
    }
}
