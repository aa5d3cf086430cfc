//! State shared by every instance of one filter: counters, rate-limit buckets, caches.
//!
//! A plain mutex is right here: each operation is a hash-map access of a few hundred
//! nanoseconds and the lock is never held across an await or a guest call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::bindings::host_api::{Entry, StateError};
use crate::limits::{MAX_STATE_KEY, MAX_STATE_KEYS, MAX_STATE_VALUE};

#[derive(Default)]
struct Inner {
    map: HashMap<String, (Vec<u8>, u64)>,
    version: u64,
}

/// One filter's key-value state, cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct SharedState {
    inner: Arc<Mutex<Inner>>,
}

impl SharedState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked: every write is one insert.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        self.lock().map.get(key).map(|(value, version)| Entry {
            value: value.clone(),
            version: *version,
        })
    }

    fn check(inner: &Inner, key: &str, value: &[u8]) -> Result<(), StateError> {
        if key.len() > MAX_STATE_KEY || value.len() > MAX_STATE_VALUE {
            return Err(StateError::TooLarge);
        }
        if inner.map.len() >= MAX_STATE_KEYS && !inner.map.contains_key(key) {
            return Err(StateError::Full);
        }
        Ok(())
    }

    fn write(inner: &mut Inner, key: String, value: Vec<u8>) -> u64 {
        inner.version += 1;
        let version = inner.version;
        inner.map.insert(key, (value, version));
        version
    }

    pub(crate) fn set(&self, key: String, value: Vec<u8>) -> Result<u64, StateError> {
        let mut inner = self.lock();
        Self::check(&inner, &key, &value)?;
        Ok(Self::write(&mut inner, key, value))
    }

    pub(crate) fn compare_and_swap(
        &self,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<Option<u64>, StateError> {
        let mut inner = self.lock();
        Self::check(&inner, &key, &value)?;
        let current = inner.map.get(&key).map(|(_, v)| *v);
        if current != expected {
            return Ok(None);
        }
        Ok(Some(Self::write(&mut inner, key, value)))
    }

    pub(crate) fn increment(&self, key: String, delta: i64) -> Result<i64, StateError> {
        let mut inner = self.lock();
        let current = match inner.map.get(&key) {
            None => 0,
            Some((bytes, _)) => {
                let bytes: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StateError::NotANumber)?;
                i64::from_le_bytes(bytes)
            }
        };
        let next = current.wrapping_add(delta);
        let value = next.to_le_bytes().to_vec();
        Self::check(&inner, &key, &value)?;
        Self::write(&mut inner, key, value);
        Ok(next)
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        self.lock().map.remove(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_checks_versions() {
        let s = SharedState::default();
        let v1 = s.compare_and_swap("k".into(), None, b"a".to_vec()).unwrap();
        assert!(v1.is_some());
        assert_eq!(
            s.compare_and_swap("k".into(), None, b"b".to_vec()).unwrap(),
            None
        );
        let v2 = s.compare_and_swap("k".into(), v1, b"c".to_vec()).unwrap();
        assert!(v2 > v1);
        assert_eq!(s.get("k").unwrap().value, b"c");
    }

    #[test]
    fn increment_is_numeric() {
        let s = SharedState::default();
        assert_eq!(s.increment("n".into(), 5).unwrap(), 5);
        assert_eq!(s.increment("n".into(), -2).unwrap(), 3);
        s.set("t".into(), b"text".to_vec()).unwrap();
        assert!(matches!(
            s.increment("t".into(), 1),
            Err(StateError::NotANumber)
        ));
        assert!(s.delete("n"));
        assert!(!s.delete("n"));
    }

    #[test]
    fn limits_hold() {
        let s = SharedState::default();
        assert!(matches!(
            s.set("k".repeat(MAX_STATE_KEY + 1), vec![]),
            Err(StateError::TooLarge)
        ));
        assert!(matches!(
            s.set("k".into(), vec![0; MAX_STATE_VALUE + 1]),
            Err(StateError::TooLarge)
        ));
    }
}
