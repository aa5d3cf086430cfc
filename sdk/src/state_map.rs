//! One filter's key-value state as a data structure: versioned writes, the limits,
//! keys with a time to live, and listing by page. The engine keeps one behind a lock
//! per filter; the SDK's native host (a filter's `cargo test`) keeps one per thread.
//! Both include this same file, so a filter's tests see what the proxy does.
//!
//! It names nothing of either crate but `crate::limits`, which both have. Time comes
//! in as a function returning milliseconds on a monotonic clock, read only when a key
//! with a time to live is involved, so state without TTLs never reads a clock.
//!
//! Expired keys are invisible at once and reclaimed lazily, a bounded number at a
//! time: a few on every write, more when the key limit is met, and those a listing
//! steps over. Nothing runs in the background.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::limits::{MAX_STATE_KEY, MAX_STATE_KEYS, MAX_STATE_PAGE, MAX_STATE_VALUE};

/// Expired keys reclaimed by each write, so that reclaiming keeps pace with writing.
const RECLAIM_PER_WRITE: usize = 2;
/// Expired keys reclaimed at most when a write finds the key limit met: enough for
/// many writes to come, few enough to keep the lock short.
const RECLAIM_WHEN_FULL: usize = 64;

/// Why a write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The key or the value is larger than allowed.
    TooLarge,
    /// As many live keys as allowed are held.
    Full,
    /// `increment` found a value that is not an 8-byte integer.
    NotANumber,
}

struct Slot {
    value: Vec<u8>,
    version: u64,
    /// When it expires, in the clock's milliseconds; it is live strictly before.
    expires: Option<u64>,
}

/// The clock, read at most once per operation and only when needed.
struct Now<F: Fn() -> u64> {
    read: F,
    at: Cell<Option<u64>>,
}

impl<F: Fn() -> u64> Now<F> {
    fn new(read: F) -> Self {
        Self {
            read,
            at: Cell::new(None),
        }
    }

    fn get(&self) -> u64 {
        *self.at.get().get_or_insert_with(|| (self.read)())
    }

    fn live(&self, slot: &Slot) -> bool {
        slot.expires.is_none_or(|e| self.get() < e)
    }
}

/// One filter's state.
pub(crate) struct StateMap {
    map: BTreeMap<String, Slot>,
    /// The keys with a time to live, soonest to expire first.
    expiring: BTreeSet<(u64, String)>,
    /// The last version handed out; versions only grow.
    version: u64,
    max_keys: usize,
}

impl Default for StateMap {
    fn default() -> Self {
        Self::with_max_keys(MAX_STATE_KEYS)
    }
}

impl StateMap {
    /// A map that holds at most `max_keys` keys (tests use a small one).
    pub(crate) fn with_max_keys(max_keys: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            expiring: BTreeSet::new(),
            version: 0,
            max_keys,
        }
    }

    /// A live key's value and version.
    pub(crate) fn get(&self, key: &str, now: impl Fn() -> u64) -> Option<(Vec<u8>, u64)> {
        let now = Now::new(now);
        let slot = self.map.get(key).filter(|s| now.live(s))?;
        Some((slot.value.clone(), slot.version))
    }

    /// Write a key; it expires `ttl_ms` from now when given. Returns its version.
    pub(crate) fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        now: impl Fn() -> u64,
    ) -> Result<u64, Refusal> {
        let now = Now::new(now);
        self.admit(&key, &value, &now)?;
        let expires = ttl_ms.map(|t| now.get().saturating_add(t));
        Ok(self.write(key, value, expires))
    }

    /// Write a key only if its live version is `expected` (`None`: only if no live
    /// key is there). Returns the new version, or `None` when the version differed.
    pub(crate) fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        now: impl Fn() -> u64,
    ) -> Result<Option<u64>, Refusal> {
        let now = Now::new(now);
        self.admit(&key, &value, &now)?;
        let current = self
            .map
            .get(&key)
            .filter(|s| now.live(s))
            .map(|s| s.version);
        if current != expected {
            return Ok(None);
        }
        let expires = ttl_ms.map(|t| now.get().saturating_add(t));
        Ok(Some(self.write(key, value, expires)))
    }

    /// Add `delta` to a live key's integer (absent or expired: 0). A live key keeps
    /// its time to live, so a counter made with one expires as made.
    pub(crate) fn increment(
        &mut self,
        key: String,
        delta: i64,
        now: impl Fn() -> u64,
    ) -> Result<i64, Refusal> {
        let now = Now::new(now);
        let (current, expires) = match self.map.get(&key).filter(|s| now.live(s)) {
            None => (0, None),
            Some(slot) => {
                let bytes: [u8; 8] =
                    (slot.value.as_slice().try_into()).map_err(|_| Refusal::NotANumber)?;
                (i64::from_le_bytes(bytes), slot.expires)
            }
        };
        let next = current.wrapping_add(delta);
        let value = next.to_le_bytes().to_vec();
        self.admit(&key, &value, &now)?;
        self.write(key, value, expires);
        Ok(next)
    }

    /// Remove a key; true if a live one was there.
    pub(crate) fn delete(&mut self, key: &str, now: impl Fn() -> u64) -> bool {
        let now = Now::new(now);
        match self.remove(key) {
            Some(slot) => now.live(&slot),
            None => false,
        }
    }

    /// Live keys that start with `prefix` and sort after `after` (byte order), at most
    /// `limit` and [`MAX_STATE_PAGE`]: pass the last key of a page as `after` for the
    /// next; a page shorter than asked is the last.
    pub(crate) fn keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
        now: impl Fn() -> u64,
    ) -> Vec<String> {
        let now = Now::new(now);
        let limit = usize::try_from(limit).map_or(MAX_STATE_PAGE, |l| l.min(MAX_STATE_PAGE));
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut page = Vec::new();
        let mut expired = Vec::new();
        for (key, slot) in self.map.range::<str, _>((start, Bound::Unbounded)) {
            if page.len() >= limit || !key.starts_with(prefix) {
                break;
            }
            if now.live(slot) {
                page.push(key.clone());
            } else {
                expired.push(key.clone());
            }
        }
        // What the listing stepped over, the next one need not.
        for key in expired {
            self.remove(&key);
        }
        page
    }

    /// How many keys are held, expired ones not yet reclaimed included.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.map.len()
    }

    /// Check a write's sizes and make room for a new key: reclaim a few expired keys,
    /// more when the limit is met, and refuse when it still is.
    fn admit<F: Fn() -> u64>(
        &mut self,
        key: &str,
        value: &[u8],
        now: &Now<F>,
    ) -> Result<(), Refusal> {
        if key.len() > MAX_STATE_KEY || value.len() > MAX_STATE_VALUE {
            return Err(Refusal::TooLarge);
        }
        self.reclaim(RECLAIM_PER_WRITE, now);
        if self.map.len() >= self.max_keys && !self.map.contains_key(key) {
            self.reclaim(RECLAIM_WHEN_FULL, now);
            if self.map.len() >= self.max_keys {
                return Err(Refusal::Full);
            }
        }
        Ok(())
    }

    /// Remove up to `most` expired keys, soonest expired first.
    fn reclaim<F: Fn() -> u64>(&mut self, most: usize, now: &Now<F>) {
        for _ in 0..most {
            match self.expiring.first() {
                Some((expires, _)) if *expires <= now.get() => {}
                _ => return,
            }
            if let Some((_, key)) = self.expiring.pop_first() {
                self.map.remove(&key);
            }
        }
    }

    fn write(&mut self, key: String, value: Vec<u8>, expires: Option<u64>) -> u64 {
        self.version += 1;
        let old = self.map.get(&key).and_then(|s| s.expires);
        if old != expires {
            if let Some(e) = old {
                self.expiring.remove(&(e, key.clone()));
            }
            if let Some(e) = expires {
                self.expiring.insert((e, key.clone()));
            }
        }
        let slot = Slot {
            value,
            version: self.version,
            expires,
        };
        self.map.insert(key, slot);
        self.version
    }

    fn remove(&mut self, key: &str) -> Option<Slot> {
        let slot = self.map.remove(key)?;
        if let Some(e) = slot.expires {
            self.expiring.remove(&(e, key.to_owned()));
        }
        Some(slot)
    }
}
