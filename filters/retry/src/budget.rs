//! A count of events over a sliding window of seconds, shared by every instance of
//! the filter through the proxy's state.
//!
//! Each second has a slot (`<name>.<second mod window>`) holding the second and its
//! count packed in one integer, so that counting events is one atomic increment.
//! The first count of a new second finds its slot holding an old second and resets
//! it with a compare-and-swap; a count that races with that reset may be lost, which
//! a budget can afford.
//!
//! Requests are many and each costs a call into the proxy to count, so an instance
//! gathers them ([`Batched`]) and adds them to the shared window every
//! [`BATCH`] requests or when the second turns. The window then lags by at most
//! `BATCH - 1` requests per warm instance: noise beside the requests of a window,
//! and the side it errs on is fewer retries.

use std::time::Duration;

use crate::state;

/// Bits of a slot that hold its count; the rest hold the second.
const COUNT_BITS: u32 = 24;
const COUNT_MASK: i64 = (1 << COUNT_BITS) - 1;

/// Requests an instance gathers before it adds them to the shared window.
pub(crate) const BATCH: u32 = 8;

/// A window of `secs` one-second slots under the state keys `<name>.<i>`.
#[derive(Default)]
pub(crate) struct Window {
    keys: Vec<String>,
}

impl Window {
    pub(crate) fn new(name: &str, secs: u64) -> Self {
        Self {
            keys: (0..secs).map(|i| format!("{name}.{i}")).collect(),
        }
    }

    pub(crate) fn len_secs(&self) -> u64 {
        self.keys.len() as u64
    }

    /// Count one event now.
    pub(crate) fn add(&self, now: Duration) {
        self.add_at(now.as_secs(), 1);
    }

    /// Count `n` events in `second`, unless that second has left the window.
    fn add_at(&self, second: u64, n: u32) {
        if self.keys.is_empty() || n == 0 {
            return;
        }
        let key = &self.keys[(second % self.len_secs()) as usize];
        let Ok(packed) = state::increment(key, i64::from(n)) else {
            return;
        };
        let held = packed >> COUNT_BITS;
        if held >= second as i64 {
            // Its second, or (counting late) a newer one that reused the slot: those
            // events left the window already; the newer second keeps `n` too many,
            // which a budget can afford.
            return;
        }
        // The slot still holds an older second: start it afresh with these events.
        let fresh = ((second as i64) << COUNT_BITS) | i64::from(n);
        for _ in 0..4 {
            let Some(entry) = state::get(key) else {
                return;
            };
            let Ok(bytes) = <[u8; 8]>::try_from(entry.value.as_slice()) else {
                return;
            };
            let current = i64::from_le_bytes(bytes);
            if current >> COUNT_BITS >= second as i64 {
                // Another instance reset it first; count these events there.
                let _ = state::increment(key, i64::from(n));
                return;
            }
            if let Ok(Some(_)) =
                state::compare_and_swap(key, Some(entry.version), &fresh.to_le_bytes())
            {
                return;
            }
        }
    }

    /// The events of the last `secs` seconds, this one included.
    pub(crate) fn sum(&self, now: Duration) -> u64 {
        let second = now.as_secs() as i64;
        let secs = self.len_secs() as i64;
        self.keys
            .iter()
            .filter_map(|k| state::get(k))
            .filter_map(|e| <[u8; 8]>::try_from(e.value.as_slice()).ok())
            .map(i64::from_le_bytes)
            .filter(|packed| second - (packed >> COUNT_BITS) < secs)
            .map(|packed| (packed & COUNT_MASK) as u64)
            .sum()
    }
}

/// A [`Window`] this instance adds to in batches.
#[derive(Default)]
pub(crate) struct Batched {
    window: Window,
    /// The second of the gathered events, and how many.
    second: u64,
    gathered: u32,
}

impl Batched {
    pub(crate) fn new(window: Window) -> Self {
        Self {
            window,
            second: 0,
            gathered: 0,
        }
    }

    pub(crate) fn len_secs(&self) -> u64 {
        self.window.len_secs()
    }

    /// Count one event now: gathered here, added to the window every [`BATCH`]
    /// events or when the second turns.
    pub(crate) fn add(&mut self, now: Duration) {
        let second = now.as_secs();
        if second != self.second {
            self.window.add_at(self.second, self.gathered);
            (self.second, self.gathered) = (second, 0);
        }
        self.gathered += 1;
        if self.gathered >= BATCH {
            self.window.add_at(second, self.gathered);
            self.gathered = 0;
        }
    }

    /// The events of the window, with those this instance still holds.
    pub(crate) fn sum(&self, now: Duration) -> u64 {
        let mine = if now.as_secs().saturating_sub(self.second) < self.len_secs() {
            u64::from(self.gathered)
        } else {
            0
        };
        self.window.sum(now) + mine
    }
}
