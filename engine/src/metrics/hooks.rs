//! The engine's own figures about each loaded filter's hooks: how long its calls took,
//! how many failed, and its instances alive, on `/metrics` for as long as it is loaded.
//!
//! The figures are counted in [`HookStats`](crate::stats) on the request path; this
//! file only reads them when `/metrics` is scraped.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::stats::{HOOKS, HookStats};

/// What the hook figures read of a loaded filter.
pub(crate) trait Figures: Send + Sync {
    /// Its name in its chain.
    fn name(&self) -> &Arc<str>;
    /// The hex sha256 of its module.
    fn digest(&self) -> &Arc<str>;
    /// What its hooks cost and how they fail.
    fn stats(&self) -> &HookStats;
}

/// Every loaded filter, held weakly: an unloaded filter's series leave `/metrics`.
#[derive(Default)]
pub(crate) struct HookFigures {
    filters: Mutex<Vec<Weak<dyn Figures>>>,
}

impl std::fmt::Debug for HookFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookFigures").finish_non_exhaustive()
    }
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
    fn add(&mut self, f: &dyn Figures) {
        for (hook, (buckets, sum)) in self.time.iter_mut().enumerate() {
            for (mine, (_, n)) in buckets.iter_mut().zip(f.stats().time[hook].buckets()) {
                mine.1 += n;
            }
            *sum += f.stats().time[hook].sum_seconds();
            self.failures[hook] += f.stats().failures[hook].load(Relaxed);
        }
        self.instances += f.stats().instances.load(Relaxed).max(0);
    }
}

impl HookFigures {
    /// Show a newly loaded filter's hook figures for as long as it is loaded.
    pub(crate) fn watch(&self, filter: &Arc<dyn Figures>) {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        filters.retain(|f| f.strong_count() > 0);
        filters.push(Arc::downgrade(filter));
    }

    fn series(&self) -> Vec<FilterSeries> {
        let live: Vec<Arc<dyn Figures>> = {
            let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
            filters.retain(|f| f.strong_count() > 0);
            filters.iter().filter_map(Weak::upgrade).collect()
        };
        let mut series: Vec<FilterSeries> = Vec::new();
        for f in &live {
            let i = match (series.iter())
                .position(|s| s.name == *f.name() && s.digest == *f.digest())
            {
                Some(i) => i,
                None => {
                    let empty = |h: usize| {
                        let buckets = f.stats().time[h]
                            .buckets()
                            .iter()
                            .map(|b| (b.0, 0))
                            .collect();
                        (buckets, 0.0)
                    };
                    series.push(FilterSeries {
                        name: f.name().clone(),
                        digest: f.digest().clone(),
                        time: [empty(0), empty(1), empty(2)],
                        failures: [0; 3],
                        instances: 0,
                    });
                    series.len() - 1
                }
            };
            series[i].add(&**f);
        }
        series
    }

    pub(crate) fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let series = self.series();
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
}
