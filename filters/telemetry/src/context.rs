//! Trace context on the wire: W3C `traceparent` (what Weft sends) and `tracestate`,
//! and B3 (accepted on input), parsed without allocating.
//!
//! Every parser reads bytes: a header value is whatever a client sent, and a `str`
//! cut at a computed offset could split a multi-byte character. A value that is not
//! exactly what the format allows is refused, and the request starts a trace.

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

/// Most list members a `tracestate` may have (W3C).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest `tracestate` carried on, in bytes (W3C's 512, as Envoy keeps).
pub const MAX_TRACESTATE: usize = 512;

/// Optional whitespace around list separators (RFC 9110's OWS).
fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = s.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(start), Some(end)) => &s[start..=end],
        _ => &[],
    }
}

fn hex_u64(s: &[u8]) -> Option<u64> {
    // Lower-case hex only, as W3C asks (B3 ids are lower-case hex too).
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |n, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(digit))
    })
}

fn trace_id(s: &[u8]) -> Option<(u64, u64)> {
    let id = match s.len() {
        32 => {
            let (high, low) = s.split_at(16);
            (hex_u64(high)?, hex_u64(low)?)
        }
        // B3 allows 64-bit trace ids; W3C pads them with zeros on the left.
        16 => (0, hex_u64(s)?),
        _ => return None,
    };
    (id != (0, 0)).then_some(id)
}

fn span_id(s: &[u8]) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    hex_u64(s).filter(|id| *id != 0)
}

/// Parse a W3C `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
/// A later version is read by its first four fields, as the spec says; version `ff`,
/// all-zero ids and malformed values are refused (the request then starts a trace).
pub fn traceparent(value: &[u8]) -> Option<Parent> {
    let mut parts = trim_ows(value).split(|b| *b == b'-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if version.len() != 2 || version == b"ff" || hex_u64(version).is_none() {
        return None;
    }
    // Version 00 has exactly four fields; later ones may add more.
    if version == b"00" && rest.is_some() {
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
pub fn b3_single(value: &[u8]) -> Option<Parent> {
    let mut parts = trim_ows(value).split(|b| *b == b'-');
    let trace = trace_id(parts.next()?)?;
    let span = span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None | Some(b"1" | b"d") => true,
        Some(b"0") => false,
        Some(_) => return None,
    };
    // The parent id, when there is one, is 16 hex digits; nothing may follow it.
    if let Some(parent) = parts.next() {
        if parent.len() != 16 {
            return None;
        }
        hex_u64(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
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
    trace: &[u8],
    span: &[u8],
    sampled: Option<&[u8]>,
    flags: Option<&[u8]>,
) -> Option<Parent> {
    let sampled = match (sampled.map(trim_ows), flags.map(trim_ows)) {
        (_, Some(b"1")) => true,
        (Some(b"1" | b"true"), _) => true,
        (Some(b"0" | b"false"), _) => false,
        (None, _) => true,
        (Some(_), _) => return None,
    };
    Some(Parent {
        trace_id: trace_id(trim_ows(trace))?,
        span_id: span_id(trim_ows(span))?,
        sampled,
    })
}

/// `lcalpha / DIGIT / "_" / "-" / "*" / "/"`: what a `tracestate` key is made of.
fn key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// A `tracestate` key: `simple-key` (a lower-case letter, then up to 255 key
/// characters) or `tenant@system` (up to 241 then up to 14).
fn tracestate_key(key: &[u8]) -> bool {
    let part = |s: &[u8], max: usize, first: fn(&u8) -> bool| {
        matches!(s.first(), Some(b) if first(b)) && s.len() <= max && s.iter().all(|b| key_char(*b))
    };
    match key.iter().position(|b| *b == b'@') {
        None => part(key, 256, u8::is_ascii_lowercase),
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            part(tenant, 241, |b| {
                b.is_ascii_lowercase() || b.is_ascii_digit()
            }) && part(system, 14, u8::is_ascii_lowercase)
        }
    }
}

/// A `tracestate` value: up to 256 printable ASCII characters but `,` and `=`,
/// spaces allowed inside, not at the end.
fn tracestate_value(value: &[u8]) -> bool {
    let nblk = |b: u8| (0x21..=0x7e).contains(&b) && b != b',' && b != b'=';
    matches!(value.last(), Some(b) if nblk(*b))
        && value.len() <= 256
        && value.iter().all(|b| *b == b' ' || nblk(*b))
}

/// Whether `value` is a `tracestate` to carry on: well-formed list members (empty
/// ones allowed, as W3C says), at most [`MAX_TRACESTATE_MEMBERS`] of them, and at
/// most [`MAX_TRACESTATE`] bytes. Anything else is dropped whole: cutting a list
/// would forward a member no vendor wrote.
pub fn tracestate(value: &[u8]) -> bool {
    if value.len() > MAX_TRACESTATE {
        return false;
    }
    let mut members = 0;
    for member in value.split(|b| *b == b',') {
        let member = trim_ows(member);
        if member.is_empty() {
            continue;
        }
        members += 1;
        let Some(eq) = member.iter().position(|b| *b == b'=') else {
            return false;
        };
        if members > MAX_TRACESTATE_MEMBERS
            || !tracestate_key(&member[..eq])
            || !tracestate_value(&member[eq + 1..])
        {
            return false;
        }
    }
    true
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

    /// The value as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
pub(crate) mod tests;
