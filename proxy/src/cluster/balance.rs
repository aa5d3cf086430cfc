//! Choosing an endpoint for an attempt, and what the choice learns from each one.
//!
//! - **Round robin** takes each endpoint in turn, as often as its weight says.
//! - **Least request** and **peak-EWMA** draw two endpoints at random (in proportion
//!   to their weights) and take the cheaper: fewer requests in flight, or a lower
//!   latency estimate times requests in flight. Peak-EWMA's estimate is a moving
//!   average that jumps to a slower sample at once and forgets it over about ten
//!   seconds, as Finagle's and Linkerd's do: a slow endpoint loses traffic at once and
//!   wins it back gradually.
//!
//! Only endpoints that are healthy (active checks) and not ejected (outlier
//! detection) are chosen. Every counter is an atomic: choosing takes no lock.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use weft_config::{Balancer, OutlierConfig};

/// The latency an endpoint is assumed to have before it answered anything.
const DEFAULT_RTT: Duration = Duration::from_millis(10);
/// How fast the latency estimate forgets, in nanoseconds.
const DECAY_NS: f64 = 10e9;

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One endpoint as `/clusters` shows it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct EndpointReport {
    /// `ip:port`.
    pub address: String,
    /// Its share of traffic against the others'.
    pub weight: u32,
    /// What the active health checks say (true without checks).
    pub healthy: bool,
    /// Set while outlier detection keeps it out: milliseconds left.
    pub ejected_for_ms: Option<u64>,
    /// Times it was ejected (each ejection lasts longer).
    pub ejections: u32,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// Requests in flight to it now.
    pub in_flight: u32,
    /// Its latency estimate (peak EWMA), in milliseconds.
    pub ewma_ms: f64,
    /// Idle HTTP/1.1 connections pooled to it.
    pub idle_connections: usize,
}

/// Load, latency and health of one endpoint.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) weight: u32,
    in_flight: AtomicU32,
    /// The peak-EWMA estimate in nanoseconds, as f64 bits.
    ewma: AtomicU64,
    /// When the estimate last changed, on [`clock`].
    stamp: AtomicU64,
    /// Failures in a row.
    failures: AtomicU32,
    /// Ejected until this time on [`clock`]; 0 when not.
    ejected_until: AtomicU64,
    /// How many times it was ejected (each ejection lasts longer).
    ejections: AtomicU32,
    /// What the active health checks say; true without checks.
    healthy: AtomicBool,
    /// Checks in a row that passed (positive) or failed (negative).
    streak: AtomicI32,
}

impl Stats {
    pub(crate) fn new(weight: u32) -> Self {
        Self {
            weight: weight.max(1),
            in_flight: AtomicU32::new(0),
            ewma: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(clock()),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            streak: AtomicI32::new(0),
        }
    }

    fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Whether the balancer may choose it now.
    pub(crate) fn eligible(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected(now)
    }

    /// What `/clusters` shows of this endpoint.
    pub(crate) fn report(&self, address: String) -> EndpointReport {
        let left = self
            .ejected_until
            .load(Ordering::Relaxed)
            .saturating_sub(clock());
        EndpointReport {
            address,
            weight: self.weight,
            healthy: self.healthy(),
            ejected_for_ms: (left > 0).then_some(left / 1_000_000),
            ejections: self.ejections.load(Ordering::Relaxed),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            ewma_ms: self.ewma().as_secs_f64() * 1e3,
            idle_connections: 0,
        }
    }

    /// Whether the health checks let it serve.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The latency estimate, for the balancer and the admin views.
    pub(crate) fn ewma(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.ewma.load(Ordering::Relaxed)) as u64)
    }

    /// The cost of sending one more request here, lower is better.
    fn cost(&self, balancer: Balancer) -> f64 {
        let load = f64::from(self.in_flight.load(Ordering::Relaxed) + 1);
        let cost = match balancer {
            Balancer::PeakEwma => f64::from_bits(self.ewma.load(Ordering::Relaxed)) * load,
            _ => load,
        };
        cost / f64::from(self.weight)
    }

    /// Fold a latency sample into the estimate: a slower one at once, a faster one
    /// weighted by how long ago the last change was.
    pub(crate) fn observe(&self, rtt: Duration) {
        let now = clock();
        let sample = rtt.as_nanos() as f64;
        let last = self.stamp.swap(now, Ordering::Relaxed);
        let prev = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let next = if sample > prev {
            sample
        } else {
            let w = (-(now.saturating_sub(last) as f64) / DECAY_NS).exp();
            prev * w + sample * (1.0 - w)
        };
        // Two samples at once may race; either result is a fine estimate.
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
    }

    /// A health check's result; true when it changed whether the endpoint serves.
    pub(crate) fn checked(&self, passed: bool, healthy_after: u32, unhealthy_after: u32) -> bool {
        let streak = self.streak.load(Ordering::Relaxed);
        let streak = match (passed, streak) {
            (true, s) if s > 0 => s.saturating_add(1),
            (true, _) => 1,
            (false, s) if s < 0 => s.saturating_sub(1),
            (false, _) => -1,
        };
        self.streak.store(streak, Ordering::Relaxed);
        let healthy = self.healthy.load(Ordering::Relaxed);
        if healthy && !passed && streak.unsigned_abs() >= unhealthy_after {
            self.healthy.store(false, Ordering::Relaxed);
            return true;
        }
        if !healthy && passed && streak.unsigned_abs() >= healthy_after {
            self.healthy.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// What the balancer reads of an endpoint: its load, latency and health.
pub(crate) trait Balanced {
    /// The endpoint's figures.
    fn stats(&self) -> &Stats;
}

/// Count a request in flight to `endpoint` until the guard drops.
pub(crate) fn start(endpoint: &impl Balanced) -> InFlight<'_> {
    let stats = endpoint.stats();
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    InFlight(stats)
}

/// A request in flight to an endpoint.
pub(crate) struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a cluster chooses among its endpoints.
#[derive(Debug)]
pub(crate) struct Picker {
    balancer: Balancer,
    /// Round robin: endpoint indices, each as often as its weight (reduced).
    schedule: Vec<u32>,
    next: AtomicUsize,
    /// Random draws: running sums of the weights.
    cumulative: Vec<u64>,
}

impl Picker {
    pub(crate) fn new<E: Balanced>(balancer: Balancer, endpoints: &[Arc<E>]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.stats().weight).collect();
        let gcd = weights.iter().fold(0, |a, &b| gcd(a, b)).max(1);
        let mut schedule = Vec::new();
        if balancer == Balancer::RoundRobin {
            // Interleaved, so that a heavy endpoint's turns are spread out.
            let reduced: Vec<u32> = weights.iter().map(|w| w / gcd).collect();
            let rounds = reduced.iter().copied().max().unwrap_or(1);
            for round in 0..rounds {
                for (i, w) in reduced.iter().enumerate() {
                    if round < *w {
                        schedule.push(i as u32);
                    }
                }
            }
        }
        let mut sum = 0;
        let cumulative = weights
            .iter()
            .map(|w| {
                sum += u64::from(*w);
                sum
            })
            .collect();
        Self {
            balancer,
            schedule,
            next: AtomicUsize::new(0),
            cumulative,
        }
    }

    /// Choose an endpoint; none when none is eligible.
    pub(crate) fn pick<'a, E: Balanced>(&self, endpoints: &'a [Arc<E>]) -> Option<&'a Arc<E>> {
        let now = clock();
        if endpoints.len() == 1 {
            return endpoints.first().filter(|e| e.stats().eligible(now));
        }
        match self.balancer {
            Balancer::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..self.schedule.len())
                    .map(|k| &endpoints[self.schedule[(start + k) % self.schedule.len()] as usize])
                    .find(|e| e.stats().eligible(now))
            }
            Balancer::LeastRequest | Balancer::PeakEwma => {
                let a = self.draw(endpoints, now)?;
                // A second, different one when there is one to find.
                let b = (0..4)
                    .filter_map(|_| self.draw(endpoints, now))
                    .find(|b| !Arc::ptr_eq(a, b));
                match b {
                    Some(b) if b.stats().cost(self.balancer) < a.stats().cost(self.balancer) => {
                        Some(b)
                    }
                    _ => Some(a),
                }
            }
        }
    }

    /// One eligible endpoint at random, in proportion to weight.
    fn draw<'a, E: Balanced>(&self, endpoints: &'a [Arc<E>], now: u64) -> Option<&'a Arc<E>> {
        let total = *self.cumulative.last()?;
        for _ in 0..8 {
            let r = fastrand::u64(..total);
            let i = self.cumulative.partition_point(|&c| c <= r);
            let e = &endpoints[i];
            if e.stats().eligible(now) {
                return Some(e);
            }
        }
        // Most are out: choose among those that are not.
        let eligible: Vec<&Arc<E>> = endpoints
            .iter()
            .filter(|e| e.stats().eligible(now))
            .collect();
        if eligible.is_empty() {
            return None;
        }
        Some(eligible[fastrand::usize(..eligible.len())])
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Record an attempt's outcome for outlier detection: failures in a row eject an
/// endpoint for a time that grows with each ejection, never more than a share of
/// the cluster at once. Returns the ejection's length when this one ejected it.
pub(crate) fn record<E: Balanced>(
    outlier: &OutlierConfig,
    endpoint: &E,
    endpoints: &[Arc<E>],
    ok: bool,
) -> Option<Duration> {
    let s = endpoint.stats();
    if ok {
        if s.failures.load(Ordering::Relaxed) != 0 {
            s.failures.store(0, Ordering::Relaxed);
        }
        return None;
    }
    if outlier.consecutive_failures == 0 {
        return None;
    }
    let failures = s.failures.fetch_add(1, Ordering::Relaxed) + 1;
    let now = clock();
    if failures < outlier.consecutive_failures || s.ejected(now) {
        return None;
    }
    let ejected = endpoints.iter().filter(|e| e.stats().ejected(now)).count();
    let allowed = endpoints.len() * outlier.max_ejection_percent as usize / 100;
    if ejected >= allowed {
        return None;
    }
    let n = s.ejections.fetch_add(1, Ordering::Relaxed) + 1;
    let length = outlier
        .base_ejection
        .0
        .saturating_mul(n)
        .min(outlier.max_ejection.0);
    s.ejected_until.store(
        now + u64::try_from(length.as_nanos()).unwrap_or(u64::MAX / 2),
        Ordering::Relaxed,
    );
    s.failures.store(0, Ordering::Relaxed);
    Some(length)
}
