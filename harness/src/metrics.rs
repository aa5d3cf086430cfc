//! The metrics the filter defined and recorded, read from its engine as a proxy's
//! `/metrics` would show them: as values, or as Prometheus text.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use weft_engine::SeriesValue;

use crate::Harness;

/// One series of a metric the filter defined.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The metric's full name as `/metrics` shows it, prefix included, `_total`
    /// ending a counter's (`weft_filter_hits_total`).
    pub name: String,
    /// The filter's label values by name, in the metric's order (without the
    /// `filter` label the proxy adds).
    pub labels: Vec<(String, String)>,
    /// What it counted.
    pub value: Value,
}

/// What a series counted.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter's total.
    Counter(u64),
    /// A gauge's value.
    Gauge(i64),
    /// A histogram's observations.
    Histogram {
        /// Upper bounds of the buckets (`+Inf` left out).
        bounds: Vec<f64>,
        /// Observations per bucket (not cumulative; the last is past every bound).
        buckets: Vec<u64>,
        /// Sum of the observed values.
        sum: f64,
    },
}

impl Value {
    /// One number: a counter's total, a gauge's value, a histogram's count.
    pub fn as_f64(&self) -> f64 {
        match self {
            // Counters past 2^53 lose precision; tests count far less.
            Value::Counter(n) => *n as f64,
            Value::Gauge(n) => *n as f64,
            Value::Histogram { buckets, .. } => buckets.iter().sum::<u64>() as f64,
        }
    }
}

impl Harness {
    /// Every series the filter recorded so far, across the requests it ran.
    pub fn metrics(&self) -> Vec<Series> {
        let mut out = Vec::new();
        self.engine.metrics().read_defined(|s| {
            let labels = (s.labels.iter().zip(s.values))
                .filter(|(name, _)| name.as_str() != "filter")
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            let value = match s.value {
                SeriesValue::Counter(n) => Value::Counter(n),
                SeriesValue::Gauge(n) => Value::Gauge(n),
                SeriesValue::Histogram {
                    bounds,
                    buckets,
                    sum,
                } => Value::Histogram {
                    bounds: bounds.to_vec(),
                    buckets: buckets.to_vec(),
                    sum,
                },
            };
            // As `/metrics` names it: the text format ends a counter's in `_total`.
            let name = match s.value {
                SeriesValue::Counter(_) if !s.name.ends_with("_total") => {
                    format!("{}_total", s.name)
                }
                _ => s.name.to_owned(),
            };
            out.push(Series {
                name,
                labels,
                value,
            });
        });
        out.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        out
    }

    /// The value of the series of metric `name` (full name, as in
    /// [`Series::name`]) whose labels include these, as [`Value::as_f64`] reads it;
    /// none when the filter recorded no such series.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let has =
            |s: &Series, (k, v): &(&str, &str)| s.labels.iter().any(|(n, x)| n == k && x == v);
        (self.metrics().iter())
            .find(|s| s.name == name && labels.iter().all(|l| has(s, l)))
            .map(|s| s.value.as_f64())
    }

    /// The filter's metrics in the Prometheus text format, as the proxy's `/metrics`
    /// shows them (the engine's own figures about its hooks left out).
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.engine.metrics()));
        let mut text = String::new();
        if encode(&mut text, &registry).is_err() {
            return String::new();
        }
        // Families come as blocks that open with their `# HELP` line; drop the
        // engine's (timings that differ on every run).
        let mut out = String::new();
        let mut keep = true;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                keep = !rest.starts_with("weft_engine_");
            } else if line == "# EOF" {
                keep = true;
            }
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}
