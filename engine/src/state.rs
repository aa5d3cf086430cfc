//! State shared by every instance of one filter: counters, rate-limit buckets, caches.
//! The map itself (versions, limits, time to live, listing) is the SDK's
//! `state_map.rs`, which the SDK's native host runs too; this file gives it a lock, a
//! clock, and a handle that a reload passes from a filter to its successor.
//!
//! A plain mutex is right here: each operation is a B-tree access of a few hundred
//! nanoseconds (a listing, at most a page of keys plus the expired ones it reclaims)
//! and the lock is never held across an await or a guest call.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::time::{ClockId, clock_gettime};

use crate::bindings::host_api::{Entry, StateError};

#[path = "../../sdk/src/state_map.rs"]
mod map;

use map::{Refusal, StateMap};

/// One filter's key-value state, cheap to clone: clones are the same state. A reload
/// hands it from a filter to the filter that replaces it ([`crate::FilterSpec::state`]),
/// so counters and buckets outlive a change of configuration or module.
#[derive(Clone)]
pub struct SharedState {
    inner: Arc<Mutex<StateMap>>,
    /// Milliseconds on a monotonic clock, for time to live.
    clock: fn() -> u64,
}

impl Default for SharedState {
    fn default() -> Self {
        Self::with_clock(StateMap::default(), coarse_millis)
    }
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState").finish_non_exhaustive()
    }
}

/// The coarse monotonic clock, in milliseconds: a read of a page the kernel updates
/// every tick, with no system call and no fence, a few nanoseconds. Its few
/// milliseconds of resolution are plenty for a time to live.
fn coarse_millis() -> u64 {
    let t = clock_gettime(ClockId::MonotonicCoarse);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

fn refused(r: Refusal) -> StateError {
    match r {
        Refusal::TooLarge => StateError::TooLarge,
        Refusal::Full => StateError::Full,
        Refusal::NotANumber => StateError::NotANumber,
    }
}

impl SharedState {
    fn with_clock(map: StateMap, clock: fn() -> u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(map)),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, StateMap> {
        // The map stays consistent even if a holder panicked: no operation panics
        // between its changes to the map and to its expiry order.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        let (value, version) = self.lock().get(key, self.clock)?;
        Some(Entry { value, version })
    }

    /// Write a key, with a time to live in milliseconds when given.
    pub(crate) fn set(
        &self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<u64, StateError> {
        (self.lock().set(key, value, ttl_ms, self.clock)).map_err(refused)
    }

    pub(crate) fn compare_and_swap(
        &self,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, StateError> {
        let mut map = self.lock();
        (map.compare_and_swap(key, expected, value, ttl_ms, self.clock)).map_err(refused)
    }

    pub(crate) fn increment(&self, key: String, delta: i64) -> Result<i64, StateError> {
        (self.lock().increment(key, delta, self.clock)).map_err(refused)
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        self.lock().delete(key, self.clock)
    }

    pub(crate) fn keys(&self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
        self.lock().keys(prefix, after, limit, self.clock)
    }

    /// Whether two handles are the same state.
    pub fn same(&self, other: &SharedState) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

#[cfg(test)]
mod tests;
