use super::*;

#[test]
fn w3c_examples() {
    // The W3C spec's own example.
    let p = traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    assert_eq!(p.trace_id, (0x4bf92f3577b34da6, 0xa3ce929d0e0e4736));
    assert_eq!(p.span_id, 0x00f067aa0ba902b7);
    assert!(p.sampled);
    let p = traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    assert!(!p.sampled);
    // A future version with more fields is read by its first four.
    assert!(traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9z2b7-01",
    ] {
        assert_eq!(traceparent(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn round_trip() {
    let t = format_traceparent((1, 2), 3, true);
    let s = t.as_str();
    assert_eq!(s, "00-00000000000000010000000000000002-0000000000000003-01");
    assert_eq!(t.as_bytes(), s.as_bytes());
    let t = format_traceparent((u64::MAX, 0xabc), 0x00f0_67aa_0ba9_02b7, false);
    assert_eq!(
        t.as_str(),
        "00-ffffffffffffffff0000000000000abc-00f067aa0ba902b7-00"
    );
    assert_eq!(
        traceparent(s.as_bytes()),
        Some(Parent {
            trace_id: (1, 2),
            span_id: 3,
            sampled: true
        })
    );
}

#[test]
fn b3_forms() {
    let p =
        b3_single(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90").unwrap();
    assert_eq!(p.trace_id, (0x80f198ee56343ba8, 0x64fe8b2a57d3eff7));
    assert_eq!(p.span_id, 0xe457b5a2e4d86bd1);
    assert!(p.sampled);
    let p = b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-0").unwrap();
    assert_eq!(p.trace_id, (0, 0x64fe8b2a57d3eff7));
    assert!(!p.sampled);
    assert_eq!(b3_single(b"0"), None);
    assert_eq!(b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-x"), None);
    // A parent id that is not one, or anything after it, makes the header malformed.
    assert_eq!(b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3"), None);
    assert_eq!(
        b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-"),
        None
    );
    let p = b3_multi(
        b"463ac35c9f6413ad48485a3953bb6124",
        b"a2fb4a1d1a96d312",
        Some(b"1"),
        None,
    )
    .unwrap();
    assert_eq!(p.trace_id, (0x463ac35c9f6413ad, 0x48485a3953bb6124));
    assert!(p.sampled);
    assert!(
        !b3_multi(b"463ac35c9f6413ad", b"a2fb4a1d1a96d312", Some(b"0"), None)
            .unwrap()
            .sampled
    );
    assert!(
        b3_multi(
            b"463ac35c9f6413ad",
            b"a2fb4a1d1a96d312",
            Some(b"0"),
            Some(b"1")
        )
        .unwrap()
        .sampled
    );
    assert_eq!(
        b3_multi(b"463ac35c9f6413ad", b"0000000000000000", None, None),
        None
    );
}

/// xorshift64 with a fixed seed: the same inputs on every run, so a failure replays.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        Self(0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid values of the trace headers, for the fuzz inputs to start from.
pub(crate) const VALID: [&str; 6] = [
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
    "463ac35c9f6413ad48485a3953bb6124",
    "a2fb4a1d1a96d312",
    "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
];

/// Hand-picked edge cases, then `n` pseudo-random byte strings: random bytes, strings
/// of the characters trace headers are made of (and `é`), and valid values with bytes
/// replaced, put in or cut out, or a multi-byte character put over two bytes so the
/// length still fits.
pub(crate) fn inputs(n: usize) -> Vec<Vec<u8>> {
    let zeros = |n| "0".repeat(n);
    let mut out: Vec<Vec<u8>> = [
        // A two-byte character across byte 16 of a 32-byte trace id, in each header.
        format!("00-{}é{}-00f067aa0ba902b7-01", zeros(15), zeros(15)),
        format!("{}é{}-e457b5a2e4d86bd1-1", zeros(15), zeros(15)),
        format!("{}é{}", "a".repeat(15), "b".repeat(15)),
        // A three-byte one across byte 16, and one across byte 8 of a 64-bit id.
        format!("00-{}€{}-00f067aa0ba902b7-01", zeros(15), zeros(14)),
        format!("{}é{}-e457b5a2e4d86bd1", zeros(7), zeros(7)),
        // Fields of the right length made of `é`.
        format!("00-{}-00f067aa0ba902b7-01", "é".repeat(16)),
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", "é".repeat(8)),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é".to_owned(),
        "é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        "é".repeat(16),
        "é".repeat(8),
        // Empty fields and extra dashes.
        String::new(),
        "-".to_owned(),
        "---".to_owned(),
        "00---".to_owned(),
        "00-".to_owned(),
        "-".repeat(55),
        "00--4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736--00f067aa0ba902b7-01".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-".to_owned(),
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-".to_owned(),
        "80f198ee56343ba864fe8b2a57d3eff7--e457b5a2e4d86bd1".to_owned(),
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-".to_owned(),
        " \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t ".to_owned(),
        ",,, ,".to_owned(),
        "a=,b=c".to_owned(),
        "a=b ".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    out.push(vec![0xff; 32]);
    out.push(b"00-\xc3-00f067aa0ba902b7-01".to_vec());
    let alphabet: &[u8] = b"0123456789abcdef-01=,@ \t\xc3\xa9";
    let mut rng = Rng::new();
    for _ in 0..n {
        let case = match rng.below(3) {
            0 => (0..rng.below(80)).map(|_| rng.next() as u8).collect(),
            1 => {
                let len = [16, 32, 55, rng.below(80)][rng.below(4)];
                (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            }
            _ => {
                let mut v = VALID[rng.below(VALID.len())].as_bytes().to_vec();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(v.len() + 1);
                    match rng.below(4) {
                        0 if at < v.len() => v[at] = alphabet[rng.below(alphabet.len())],
                        1 => v.insert(at, rng.next() as u8),
                        2 if at < v.len() => {
                            v.remove(at);
                        }
                        _ if at + 1 < v.len() => v.splice(at..at + 2, *b"\xc3\xa9").for_each(drop),
                        _ => {}
                    }
                }
                v
            }
        };
        out.push(case);
    }
    out
}

/// What this hop would send on for `p`, read back.
fn resent(p: Parent) -> Option<Parent> {
    traceparent(format_traceparent(p.trace_id, p.span_id, p.sampled).as_bytes())
}

#[test]
fn trace_headers_of_any_bytes_are_refused_or_round_trip() {
    let inputs = inputs(20_000);
    let (trace, span) = (VALID[3].as_bytes(), VALID[4].as_bytes());
    let mut accepted = [0; 4];
    for x in &inputs {
        let parsed = [
            traceparent(x),
            b3_single(x),
            b3_multi(x, span, None, Some(x)),
            b3_multi(trace, x, (x.len() < 6).then_some(x.as_slice()), None),
        ];
        for (n, p) in parsed.into_iter().enumerate() {
            let Some(p) = p else { continue };
            accepted[n] += 1;
            assert!(x.is_ascii(), "accepted non-ASCII {x:?}");
            assert!(p.trace_id != (0, 0) && p.span_id != 0, "{x:?}");
            assert_eq!(resent(p), Some(p), "{x:?}");
        }
        if tracestate(x) {
            assert!(x.len() <= MAX_TRACESTATE && x.is_ascii(), "{x:?}");
            assert!(std::str::from_utf8(x).is_ok());
        }
    }
    // The inputs reach the accepting paths too, so the round trip is checked.
    assert!(accepted.iter().all(|n| *n > 10), "{accepted:?}");
    // What the W3C form accepts is, trimmed, what this hop would write for it.
    let p = traceparent(VALID[0].as_bytes()).unwrap();
    assert_eq!(
        format_traceparent(p.trace_id, p.span_id, p.sampled).as_str(),
        VALID[0]
    );
}

#[test]
fn tracestate_within_w3c_limits_is_kept_and_the_rest_refused() {
    let member = |i: usize| format!("k{i}=v{i}");
    let list = |n: usize| (0..n).map(member).collect::<Vec<_>>().join(",");
    for good in [
        String::new(),
        "vendor=x".to_owned(),
        "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7".to_owned(),
        "a=1,,b=2, ,".to_owned(),
        "tenant1@sys=with spaces inside".to_owned(),
        "k/*_-9=!~".to_owned(),
        list(32),
        format!("a={}", "x".repeat(256)),
        // Exactly 512 bytes.
        format!("a={},b={}", "x".repeat(255), "y".repeat(252)),
    ] {
        assert!(tracestate(good.as_bytes()), "{good:?}");
    }
    for bad in [
        list(33),
        format!("a={},b={}", "x".repeat(255), "y".repeat(253)),
        format!("a={}", "x".repeat(257)),
        format!("{}=v", "k".repeat(257)),
        format!("{}@s=v", "t".repeat(242)),
        format!("t@{}=v", "s".repeat(15)),
        "novalue".to_owned(),
        "a=".to_owned(),
        "a=b=c".to_owned(),
        "A=b".to_owned(),
        "1a=b".to_owned(),
        "@s=v".to_owned(),
        "t@=v".to_owned(),
        "t@1s=v".to_owned(),
        "a=é".to_owned(),
        "a=\u{7f}".to_owned(),
        "a=b;c\td".to_owned(),
    ] {
        assert!(!tracestate(bad.as_bytes()), "{bad:?}");
    }
}
