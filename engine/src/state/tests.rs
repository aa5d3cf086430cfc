//! The state map under a clock the tests set: versions, limits, time to live, listing
//! by page, and expired keys giving their room back.

use std::cell::Cell;

use super::*;
use crate::limits::{MAX_STATE_KEY, MAX_STATE_PAGE, MAX_STATE_VALUE};

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(1_000) };
}

fn test_clock() -> u64 {
    NOW.with(Cell::get)
}

fn at(ms: u64) {
    NOW.with(|n| n.set(ms));
}

/// A state on the test clock, holding at most `max_keys` keys.
fn state(max_keys: usize) -> SharedState {
    at(1_000);
    SharedState::with_clock(StateMap::with_max_keys(max_keys), test_clock)
}

fn no_clock() -> u64 {
    panic!("the clock was read for state without a time to live")
}

#[test]
fn compare_and_swap_checks_versions() {
    let s = SharedState::default();
    let v1 = s.compare_and_swap("k".into(), None, b"a".to_vec(), None);
    let v1 = v1.unwrap();
    assert!(v1.is_some());
    let again = s.compare_and_swap("k".into(), None, b"b".to_vec(), None);
    assert_eq!(again.unwrap(), None);
    let v2 = s
        .compare_and_swap("k".into(), v1, b"c".to_vec(), None)
        .unwrap();
    assert!(v2 > v1);
    assert_eq!(s.get("k").unwrap().value, b"c");
}

#[test]
fn increment_is_numeric() {
    let s = SharedState::default();
    assert_eq!(s.increment("n".into(), 5).unwrap(), 5);
    assert_eq!(s.increment("n".into(), -2).unwrap(), 3);
    s.set("t".into(), b"text".to_vec(), None).unwrap();
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
        s.set("k".repeat(MAX_STATE_KEY + 1), vec![], None),
        Err(StateError::TooLarge)
    ));
    assert!(matches!(
        s.set("k".into(), vec![0; MAX_STATE_VALUE + 1], Some(5)),
        Err(StateError::TooLarge)
    ));
    let s = state(2);
    s.set("a".into(), vec![], None).unwrap();
    s.set("b".into(), vec![], None).unwrap();
    assert!(matches!(
        s.set("c".into(), vec![], None),
        Err(StateError::Full)
    ));
    // A key that is there may still be written.
    s.set("a".into(), b"again".to_vec(), None).unwrap();
}

#[test]
fn state_without_ttl_never_reads_the_clock() {
    let s = SharedState::with_clock(StateMap::default(), no_clock);
    s.set("a".into(), b"1".to_vec(), None).unwrap();
    s.compare_and_swap("b".into(), None, b"2".to_vec(), None)
        .unwrap();
    s.increment("n".into(), 1).unwrap();
    assert!(s.get("a").is_some());
    assert_eq!(s.keys("", None, 10), ["a", "b", "n"]);
    assert!(s.delete("a"));
}

#[test]
fn a_key_expires_at_its_time() {
    let s = state(100);
    s.set("k".into(), b"v".to_vec(), Some(100)).unwrap();
    at(1_099);
    assert_eq!(s.get("k").unwrap().value, b"v");
    at(1_100);
    assert!(s.get("k").is_none(), "expired keys are invisible at once");
    assert!(s.keys("", None, 10).is_empty());
    // Absent for compare-and-swap and increment too, and not there to delete.
    let v = s.compare_and_swap("k".into(), None, b"w".to_vec(), None);
    assert!(v.unwrap().is_some());
    at(1_000_000);
    assert_eq!(s.get("k").unwrap().value, b"w", "a plain write has no ttl");
    s.set("gone".into(), b"1".to_vec(), Some(0)).unwrap();
    assert!(s.get("gone").is_none(), "a ttl of 0 expires at once");
    assert!(!s.delete("gone"));
}

#[test]
fn increment_keeps_the_ttl_and_set_clears_it() {
    let s = state(100);
    let made = s.compare_and_swap("window".into(), None, 0i64.to_le_bytes().to_vec(), Some(50));
    assert!(made.unwrap().is_some());
    at(1_040);
    assert_eq!(s.increment("window".into(), 3).unwrap(), 3);
    at(1_050);
    assert!(s.get("window").is_none(), "the counter expires as made");
    assert_eq!(s.increment("window".into(), 1).unwrap(), 1, "a fresh count");
    at(5_000);
    assert_eq!(
        s.increment("window".into(), 1).unwrap(),
        2,
        "now without ttl"
    );

    s.set("k".into(), b"a".to_vec(), Some(10)).unwrap();
    s.set("k".into(), b"b".to_vec(), None).unwrap();
    at(9_000);
    assert_eq!(s.get("k").unwrap().value, b"b");
    // And a new ttl replaces the old one.
    s.set("k".into(), b"c".to_vec(), Some(10)).unwrap();
    s.set("k".into(), b"d".to_vec(), Some(1_000)).unwrap();
    at(9_500);
    assert_eq!(s.get("k").unwrap().value, b"d");
}

#[test]
fn keys_come_by_page_in_order() {
    let s = state(1_000);
    for i in (0..25).rev() {
        s.set(format!("client/{i:02}"), vec![], None).unwrap();
    }
    s.set("other".into(), vec![], None).unwrap();
    s.set("client".into(), vec![], None).unwrap();
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.keys("client/", after.as_deref(), 10);
        assert!(page.len() <= 10);
        all.extend(page.iter().cloned());
        if page.len() < 10 {
            break;
        }
        after = page.last().cloned();
    }
    let expected: Vec<String> = (0..25).map(|i| format!("client/{i:02}")).collect();
    assert_eq!(all, expected);
    // `after` before the prefix starts at the prefix; a limit of 0 is an empty page.
    assert_eq!(s.keys("client/", Some("a"), 2), ["client/00", "client/01"]);
    assert!(s.keys("client/", None, 0).is_empty());
    assert_eq!(s.keys("", Some("client/24"), 10), ["other"]);
}

#[test]
fn a_page_is_bounded() {
    let s = state(MAX_STATE_PAGE + 10);
    for i in 0..MAX_STATE_PAGE + 5 {
        s.set(format!("{i:05}"), vec![], None).unwrap();
    }
    assert_eq!(s.keys("", None, u32::MAX).len(), MAX_STATE_PAGE);
}

#[test]
fn listing_skips_and_reclaims_expired_keys() {
    let s = state(100);
    for i in 0..6 {
        let ttl = if i % 2 == 0 { Some(10) } else { None };
        s.set(format!("k{i}"), vec![], ttl).unwrap();
    }
    at(1_010);
    assert_eq!(s.keys("k", None, 10), ["k1", "k3", "k5"]);
    assert_eq!(s.lock().held(), 3, "what the listing stepped over is gone");
}

#[test]
fn a_full_map_makes_room_from_expired_keys() {
    let s = state(4);
    for i in 0..4 {
        s.set(format!("k{i}"), vec![], Some(10 + i)).unwrap();
    }
    at(1_005);
    assert!(matches!(
        s.set("new".into(), vec![], None),
        Err(StateError::Full)
    ));
    at(1_011);
    // Two keys have expired: their room takes two new ones, and no more.
    s.set("new".into(), vec![], None).unwrap();
    s.increment("count".into(), 1).unwrap();
    assert!(matches!(
        s.set("more".into(), vec![], None),
        Err(StateError::Full)
    ));
    assert_eq!(s.keys("", None, 10), ["count", "k2", "k3", "new"]);
}

#[test]
fn writes_reclaim_expired_keys_as_they_go() {
    let s = state(100);
    for i in 0..10 {
        s.set(format!("k{i}"), vec![], Some(10)).unwrap();
    }
    at(2_000);
    for _ in 0..5 {
        s.increment("n".into(), 1).unwrap();
    }
    assert_eq!(
        s.lock().held(),
        1,
        "ten expired keys, two reclaimed per write"
    );
}

#[test]
fn clones_are_the_same_state() {
    let s = SharedState::default();
    let kept = s.clone();
    s.set("k".into(), b"v".to_vec(), None).unwrap();
    assert_eq!(kept.get("k").unwrap().value, b"v");
    assert!(kept.same(&s));
    assert!(!kept.same(&SharedState::default()));
}
