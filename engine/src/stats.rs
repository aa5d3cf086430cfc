//! What each filter's hooks cost and how they fail: counted with relaxed atomics, so a
//! hook call pays two clock reads and three increments, and takes no lock.
//!
//! The hub lists every loaded filter's stats weakly: once a filter is unloaded (its
//! last request done), its series leave `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// The hooks, as labels and as indices into [`HookStats`].
pub(crate) const HOOKS: [&str; 3] = ["on-request", "on-response", "on-done"];

/// Upper bounds of the hook time buckets, in nanoseconds: 250 ns doubling to about
/// 33 ms (a hook's default deadline is 20 ms); the last bucket holds the rest.
const BOUNDS_NS: [u64; 18] = [
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
    1_024_000, 2_048_000, 4_096_000, 8_192_000, 16_384_000, 32_768_000,
];

/// Hook times in fixed buckets.
#[derive(Debug, Default)]
pub(crate) struct TimeHistogram {
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl TimeHistogram {
    pub(crate) fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Bucket i holds (250·2^(i-1), 250·2^i] ns.
        let q = ns.saturating_sub(1) / BOUNDS_NS[0];
        let i = if q == 0 {
            0
        } else {
            (u64::BITS - q.leading_zeros()) as usize
        };
        self.buckets[i.min(BOUNDS_NS.len())].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Each bucket's count (not cumulative), with its upper bound in seconds.
    pub(crate) fn buckets(&self) -> Vec<(f64, u64)> {
        let bound = |i: usize| BOUNDS_NS.get(i).map_or(f64::INFINITY, |b| *b as f64 / 1e9);
        (self.buckets.iter().enumerate())
            .map(|(i, b)| (bound(i), b.load(Ordering::Relaxed)))
            .collect()
    }

    pub(crate) fn sum_seconds(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// The `q` quantile (0..=1) in microseconds, interpolated within its bucket as
    /// Prometheus' `histogram_quantile` does; `None` before the first call.
    pub(crate) fn quantile_us(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { BOUNDS_NS[i - 1] } as f64;
                let Some(&upper) = BOUNDS_NS.get(i) else {
                    // Beyond the last bound: all that can be said is "more than".
                    return Some(lower / 1e3);
                };
                let within = (rank - below as f64) / n as f64;
                return Some((lower + (upper as f64 - lower) * within) / 1e3);
            }
            below += n;
        }
        None
    }
}

/// One filter's hook figures.
#[derive(Debug, Default)]
pub(crate) struct HookStats {
    pub(crate) time: [TimeHistogram; 3],
    pub(crate) failures: [AtomicU64; 3],
    /// Its instances alive, warm or running a hook.
    pub(crate) instances: AtomicI64,
}

impl HookStats {
    pub(crate) fn record(&self, hook: usize, took: Duration, failed: bool) {
        self.time[hook].observe(took);
        if failed {
            self.failures[hook].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What `/filters` shows of one filter.
    pub(crate) fn report(&self) -> StatsReport {
        let hooks = HOOKS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let calls = self.time[i]
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .sum();
                HookReport {
                    hook: name,
                    calls,
                    failures: self.failures[i].load(Ordering::Relaxed),
                    p50_us: self.time[i].quantile_us(0.5),
                    p99_us: self.time[i].quantile_us(0.99),
                }
            })
            .filter(|h| h.calls > 0)
            .collect();
        StatsReport {
            instances: self.instances.load(Ordering::Relaxed).max(0),
            hooks,
        }
    }
}

/// A filter's figures, as `/filters` shows them.
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    /// Instances alive, warm or running a hook.
    pub instances: i64,
    /// Each hook that ran at least once.
    pub hooks: Vec<HookReport>,
}

/// One hook's figures.
#[derive(Clone, Debug, Serialize)]
pub struct HookReport {
    /// `on-request`, `on-response` or `on-done`.
    pub hook: &'static str,
    /// Calls, failed ones included.
    pub calls: u64,
    /// Calls that trapped, panicked, ran past their deadline or out of memory.
    pub failures: u64,
    /// Median time of a call, in microseconds (interpolated within its bucket).
    pub p50_us: Option<f64>,
    /// 99th percentile, in microseconds.
    pub p99_us: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_from_250_ns() {
        let h = TimeHistogram::default();
        for ns in [1, 250, 251, 500, 501, 1_000, 40_000_000] {
            h.observe(Duration::from_nanos(ns));
        }
        let counts: Vec<u64> = h.buckets().iter().map(|b| b.1).collect();
        assert_eq!(&counts[..3], &[2, 2, 2]);
        assert_eq!(counts[BOUNDS_NS.len()], 1, "past the last bound");
        assert_eq!(counts.iter().sum::<u64>(), 7);
        assert_eq!(h.buckets()[2].0, 1e-6);
        assert!(h.buckets()[BOUNDS_NS.len()].0.is_infinite());
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let h = TimeHistogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        // 100 calls in (500 ns, 1 µs], one in (16, 32] µs.
        for _ in 0..100 {
            h.observe(Duration::from_nanos(800));
        }
        h.observe(Duration::from_micros(20));
        let p50 = h.quantile_us(0.5).unwrap();
        assert!((0.5..=1.0).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99).unwrap();
        assert!((0.5..=1.0).contains(&p99), "{p99}");
        let max = h.quantile_us(1.0).unwrap();
        assert!((16.0..=32.0).contains(&max), "{max}");
    }
}
