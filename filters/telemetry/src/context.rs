//! Trace context on the wire: W3C `traceparent` (what Weft sends) and B3 (accepted on
//! input), parsed without allocating.

/// The trace a request belongs to, as its caller sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    /// High and low halves of the 128-bit trace id; never both zero.
    pub trace_id: (u64, u64),
    /// The caller's span; never zero.
    pub span_id: u64,
    /// Whether the caller sampled the trace.
    pub sampled: bool,
}

fn hex_u64(s: &str) -> Option<u64> {
    // Lower-case hex only, as W3C asks (B3 ids are lower-case hex too).
    if s.is_empty()
        || s.len() > 16
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn trace_id(s: &str) -> Option<(u64, u64)> {
    let id = match s.len() {
        32 => (hex_u64(&s[..16])?, hex_u64(&s[16..])?),
        // B3 allows 64-bit trace ids; W3C pads them with zeros on the left.
        16 => (0, hex_u64(s)?),
        _ => return None,
    };
    (id != (0, 0)).then_some(id)
}

fn span_id(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    hex_u64(s).filter(|id| *id != 0)
}

/// Parse a W3C `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
/// A later version is read by its first four fields, as the spec says; version `ff`,
/// all-zero ids and malformed values are refused (the request then starts a trace).
pub fn traceparent(value: &str) -> Option<Parent> {
    let value = value.trim();
    let mut parts = value.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if version.len() != 2 || version == "ff" || hex_u64(version).is_none() {
        return None;
    }
    // Version 00 has exactly four fields; later ones may add more.
    if version == "00" && rest.is_some() {
        return None;
    }
    if trace.len() != 32 || flags.len() != 2 {
        return None;
    }
    let flags = hex_u64(flags)?;
    Some(Parent {
        trace_id: trace_id(trace)?,
        span_id: span_id(span)?,
        sampled: flags & 1 == 1,
    })
}

/// Parse the single `b3` header: `<trace id>-<span id>[-<sampled>[-<parent id>]]`, where
/// sampled is `1`, `0` or `d` (debug, sampled). A lone `0` or `1` carries no ids.
pub fn b3_single(value: &str) -> Option<Parent> {
    let mut parts = value.trim().split('-');
    let trace = trace_id(parts.next()?)?;
    let span = span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None | Some("1") | Some("d") => true,
        Some("0") => false,
        Some(_) => return None,
    };
    Some(Parent {
        trace_id: trace,
        span_id: span,
        sampled,
    })
}

/// Parse the multi-header B3 form: `x-b3-traceid`, `x-b3-spanid`, and `x-b3-sampled`
/// (`1`/`true`) or `x-b3-flags: 1` (debug). Without a sampling decision the caller's
/// trace counts as sampled, as Zipkin's defer does when we are the first to decide.
pub fn b3_multi(
    trace: &str,
    span: &str,
    sampled: Option<&str>,
    flags: Option<&str>,
) -> Option<Parent> {
    let sampled = match (sampled.map(str::trim), flags.map(str::trim)) {
        (_, Some("1")) => true,
        (Some("1" | "true"), _) => true,
        (Some("0" | "false"), _) => false,
        (None, _) => true,
        (Some(_), _) => return None,
    };
    Some(Parent {
        trace_id: trace_id(trace.trim())?,
        span_id: span_id(span.trim())?,
        sampled,
    })
}

fn put_hex(out: &mut [u8], n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// The `traceparent` this hop sends on: the same trace, this hop's span as parent.
/// Written by hand into a fixed buffer: the formatting machinery costs more than
/// everything else a request hook does.
pub fn format_traceparent(trace_id: (u64, u64), span_id: u64, sampled: bool) -> TraceParent {
    let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
    put_hex(&mut b[3..19], trace_id.0);
    put_hex(&mut b[19..35], trace_id.1);
    put_hex(&mut b[36..52], span_id);
    b[54] = if sampled { b'1' } else { b'0' };
    TraceParent(b)
}

/// A `traceparent` value, 55 ASCII bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent([u8; 55]);

impl TraceParent {
    /// The value as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, letters and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w3c_examples() {
        // The W3C spec's own example.
        let p = traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(p.trace_id, (0x4bf92f3577b34da6, 0xa3ce929d0e0e4736));
        assert_eq!(p.span_id, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        let p = traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!p.sampled);
        // A future version with more fields is read by its first four.
        assert!(
            traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some()
        );
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
            assert_eq!(traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trip() {
        let t = format_traceparent((1, 2), 3, true);
        let s = t.as_str();
        assert_eq!(s, "00-00000000000000010000000000000002-0000000000000003-01");
        let t = format_traceparent((u64::MAX, 0xabc), 0x00f0_67aa_0ba9_02b7, false);
        assert_eq!(
            t.as_str(),
            "00-ffffffffffffffff0000000000000abc-00f067aa0ba902b7-00"
        );
        assert_eq!(
            traceparent(s),
            Some(Parent {
                trace_id: (1, 2),
                span_id: 3,
                sampled: true
            })
        );
    }

    #[test]
    fn b3_forms() {
        let p = b3_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
            .unwrap();
        assert_eq!(p.trace_id, (0x80f198ee56343ba8, 0x64fe8b2a57d3eff7));
        assert_eq!(p.span_id, 0xe457b5a2e4d86bd1);
        assert!(p.sampled);
        let p = b3_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1-0").unwrap();
        assert_eq!(p.trace_id, (0, 0x64fe8b2a57d3eff7));
        assert!(!p.sampled);
        assert_eq!(b3_single("0"), None);
        assert_eq!(b3_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1-x"), None);
        let p = b3_multi(
            "463ac35c9f6413ad48485a3953bb6124",
            "a2fb4a1d1a96d312",
            Some("1"),
            None,
        )
        .unwrap();
        assert_eq!(p.trace_id, (0x463ac35c9f6413ad, 0x48485a3953bb6124));
        assert!(p.sampled);
        assert!(
            !b3_multi("463ac35c9f6413ad", "a2fb4a1d1a96d312", Some("0"), None)
                .unwrap()
                .sampled
        );
        assert!(
            b3_multi("463ac35c9f6413ad", "a2fb4a1d1a96d312", Some("0"), Some("1"))
                .unwrap()
                .sampled
        );
        assert_eq!(
            b3_multi("463ac35c9f6413ad", "0000000000000000", None, None),
            None
        );
    }
}
