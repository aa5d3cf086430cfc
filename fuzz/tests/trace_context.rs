//! The trace-context parsers of the telemetry filter (`filters/telemetry/src/context.rs`,
//! whose library builds natively as every filter's does for its own tests): W3C
//! `traceparent` and `tracestate`, B3 single and multi. Whatever a client sends, they
//! never panic, and a context they accept is written back as a `traceparent` that
//! reads as the same context.
//!
//! The proxy's own reading of `traceparent` (the access log's trace and span ids,
//! `proxy/src/access.rs`) takes a request; the filter-contract target drives it with
//! random headers through a real proxy.
//!
//! Longer runs (`docs/fuzzing.md`):
//! `WEFT_FUZZ_CASES=1000000 cargo test -p weft-fuzz --test trace_context`, or on nightly,
//! coverage-guided: `cargo bolero test -p weft-fuzz --test trace_context traceparent_round_trips`.

use bolero::check;
use weft_filter_telemetry::context::{
    MAX_TRACESTATE, Parent, b3_multi, b3_single, format_traceparent, traceparent, tracestate,
};
use weft_fuzz::{Choices, cases};

/// A context that was accepted is sent on as a `traceparent` that reads the same.
fn assert_round_trips(p: Parent, from: &[u8]) {
    let from = String::from_utf8_lossy(from);
    assert_ne!(p.trace_id, (0, 0), "{from:?}");
    assert_ne!(p.span_id, 0, "{from:?}");
    let sent = format_traceparent(p.trace_id, p.span_id, p.sampled);
    assert_eq!(sent.as_str().len(), 55, "{from:?}");
    assert_eq!(sent.as_str().as_bytes(), sent.as_bytes());
    assert_eq!(
        traceparent(sent.as_bytes()),
        Some(p),
        "{from:?} -> {}",
        sent.as_str()
    );
}

/// Hex of `len` digits, now and then upper-case, all zero or not hex at all.
fn hex(c: &mut Choices<'_>, len: usize) -> String {
    let len = match c.below(8) {
        0 => len.saturating_sub(1),
        1 => len + 1,
        _ => len,
    };
    match c.below(10) {
        0 => "0".repeat(len),
        1 => "ABCDEF0123".chars().cycle().take(len).collect(),
        2 => "xyz-".chars().cycle().take(len).collect(),
        _ => (0..len)
            .map(|_| char::from(b"0123456789abcdef"[c.below(16)]))
            .collect(),
    }
}

fn ows(c: &mut Choices<'_>) -> &'static str {
    c.pick::<&str>(&["", "", "", " ", "\t", " \t "])
}

/// Something shaped like a `traceparent`: the four fields, a wrong version or field,
/// or one field more.
fn made_traceparent(c: &mut Choices<'_>) -> Vec<u8> {
    let version = c.pick(&["00", "01", "fe", "ff", "0g", "000", "", "FF"]);
    let mut s = format!(
        "{}{version}-{}-{}-{}",
        ows(c),
        hex(c, 32),
        hex(c, 16),
        hex(c, 2)
    );
    if c.chance(15) {
        s.push('-');
        s.push_str(&c.text(6));
    }
    s.push_str(ows(c));
    s.into_bytes()
}

#[test]
fn traceparent_round_trips() {
    check!()
        .with_iterations(cases(50_000))
        .with_max_len(128)
        .for_each(|bytes: &[u8]| {
            let made = made_traceparent(&mut Choices::new(bytes));
            for input in [bytes, &made[..]] {
                if let Some(p) = traceparent(input) {
                    assert_round_trips(p, input);
                    // Version 00 with flags 00 or 01 is what Weft writes itself: the
                    // exact same header.
                    let text = String::from_utf8_lossy(input);
                    let text = text.trim_matches([' ', '\t']);
                    if text.starts_with("00-") && (text.ends_with("-00") || text.ends_with("-01")) {
                        let sent = format_traceparent(p.trace_id, p.span_id, p.sampled);
                        assert_eq!(sent.as_str(), text);
                    }
                }
            }
        });
}

/// Something shaped like a `b3` header: ids of 16 or 32 digits, a sampling state, a
/// parent id.
fn made_b3(c: &mut Choices<'_>) -> Vec<u8> {
    let trace_len = *c.pick(&[32, 16]);
    let mut s = format!("{}{}-{}", ows(c), hex(c, trace_len), hex(c, 16));
    if c.chance(60) {
        s.push('-');
        s.push_str(c.pick::<&str>(&["1", "0", "d", "true", "", "2"]));
        if c.chance(50) {
            s.push('-');
            s.push_str(&hex(c, 16));
        }
    }
    if c.chance(10) {
        s.push_str("-1");
    }
    s.into_bytes()
}

#[test]
fn b3_becomes_an_equal_traceparent() {
    check!()
        .with_iterations(cases(50_000))
        .with_max_len(128)
        .for_each(|bytes: &[u8]| {
            let mut c = Choices::new(bytes);
            let made = made_b3(&mut c);
            for input in [bytes, &made[..]] {
                if let Some(p) = b3_single(input) {
                    assert_round_trips(p, input);
                }
            }
            let (trace, span) = (hex(&mut c, 32), hex(&mut c, 16));
            let sampled = c.pick(&[None, Some("1"), Some("0"), Some("true"), Some(" x ")]);
            let flags = c.pick(&[None, Some("1"), Some("0")]);
            let (sampled, flags) = (sampled.map(str::as_bytes), flags.map(str::as_bytes));
            for (t, s) in [(trace.as_bytes(), span.as_bytes()), (bytes, bytes)] {
                if let Some(p) = b3_multi(t, s, sampled, flags) {
                    assert_round_trips(p, t);
                }
            }
        });
}

/// Something shaped like a `tracestate`: members `key=value`, simple and
/// multi-tenant keys, empty members, whitespace, and a few too many.
fn made_tracestate(c: &mut Choices<'_>) -> Vec<u8> {
    let mut members = Vec::new();
    for _ in 0..c.below(40) {
        let key = match c.below(4) {
            0 => format!(
                "{}@{}",
                c.pick(&["t1", "x", "", "A"]),
                c.pick(&["sys", "", "s-1"])
            ),
            1 => c.text(4),
            _ => (*c.pick(&["congo", "rojo", "a", "a*b/c_d-1", "1a", "Ab"])).to_owned(),
        };
        let value = match c.below(3) {
            0 => c.text(5),
            _ => (*c.pick(&["t61rcWkgMzE", "00f067aa0ba902b7", "a b", "a ", "", "a=b"])).to_owned(),
        };
        members.push(format!("{}{key}={value}{}", ows(c), ows(c)));
    }
    members.join(",").into_bytes()
}

#[test]
fn tracestate_is_judged_whole() {
    check!()
        .with_iterations(cases(50_000))
        .with_max_len(600)
        .for_each(|bytes: &[u8]| {
            let made = made_tracestate(&mut Choices::new(bytes));
            for input in [bytes, &made[..]] {
                if !tracestate(input) {
                    continue;
                }
                assert!(input.len() <= MAX_TRACESTATE, "{input:?}");
                // Empty members are allowed, and change nothing.
                let mut padded = input.to_vec();
                padded.extend_from_slice(b", ,");
                if padded.len() <= MAX_TRACESTATE {
                    assert!(
                        tracestate(&padded),
                        "{:?}",
                        String::from_utf8_lossy(&padded)
                    );
                }
            }
        });
}
