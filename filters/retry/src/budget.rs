//! A count of events over a sliding window of seconds, shared by every instance of
//! the filter through the proxy's state.
//!
//! Each second has a slot (`<name>.<second mod window>`) holding the second and its
//! count packed in one integer, so that counting an event is one atomic increment.
//! The first event of a new second finds its slot holding an old second and resets
//! it with a compare-and-swap; an event that races with that reset may be lost,
//! which a budget can afford.

use std::time::Duration;

use crate::state;

/// Bits of a slot that hold its count; the rest hold the second.
const COUNT_BITS: u32 = 24;
const COUNT_MASK: i64 = (1 << COUNT_BITS) - 1;

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

    fn slot(&self, second: u64) -> &str {
        &self.keys[(second % self.len_secs()) as usize]
    }

    /// Count one event now.
    pub(crate) fn add(&self, now: Duration) {
        if self.keys.is_empty() {
            return;
        }
        let second = now.as_secs();
        let key = self.slot(second);
        let Ok(packed) = state::increment(key, 1) else {
            return;
        };
        if packed >> COUNT_BITS == second as i64 {
            return;
        }
        // The slot still holds an older second: start it afresh with this event.
        let fresh = ((second as i64) << COUNT_BITS) | 1;
        for _ in 0..4 {
            let Some(entry) = state::get(key) else {
                return;
            };
            let Ok(bytes) = <[u8; 8]>::try_from(entry.value.as_slice()) else {
                return;
            };
            let current = i64::from_le_bytes(bytes);
            if current >> COUNT_BITS == second as i64 {
                // Another instance reset it first; count this event there.
                let _ = state::increment(key, 1);
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
