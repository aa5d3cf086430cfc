//! The access log: one JSON line per request through the `weft::access` log target,
//! written when the request is over (after its last response byte), so it costs the
//! request path nothing while the response streams. Which requests are logged is
//! decided when each arrives; a request not logged costs one comparison.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use weft_engine::{Exchange, Responder, Summary};

/// The log target a subscriber picks the access log's lines up from: each event's
/// message is one JSON object.
pub const TARGET: &str = "weft::access";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Time,
    RequestId,
    TraceId,
    SpanId,
    Listener,
    Peer,
    Method,
    Authority,
    Path,
    Route,
    Cluster,
    Endpoint,
    Attempts,
    Status,
    GrpcStatus,
    Responder,
    Error,
    Decisions,
    ResponseBytes,
    DurationMs,
    Complete,
}

impl Field {
    const ALL: [Field; 21] = [
        Field::Time,
        Field::RequestId,
        Field::TraceId,
        Field::SpanId,
        Field::Listener,
        Field::Peer,
        Field::Method,
        Field::Authority,
        Field::Path,
        Field::Route,
        Field::Cluster,
        Field::Endpoint,
        Field::Attempts,
        Field::Status,
        Field::GrpcStatus,
        Field::Responder,
        Field::Error,
        Field::Decisions,
        Field::ResponseBytes,
        Field::DurationMs,
        Field::Complete,
    ];

    fn name(self) -> &'static str {
        // The config's list is in declaration order (a test holds them together).
        weft_config::ACCESS_LOG_FIELDS[self as usize]
    }

    fn parse(name: &str) -> Option<Field> {
        let i = weft_config::ACCESS_LOG_FIELDS
            .iter()
            .position(|f| *f == name)?;
        Field::ALL.get(i).copied()
    }
}

/// One listener's access log settings.
#[derive(Debug)]
pub(crate) struct AccessLog {
    listener: std::sync::Arc<str>,
    fields: Vec<Field>,
    sample: f64,
}

impl AccessLog {
    pub(crate) fn new(
        listener: std::sync::Arc<str>,
        config: &weft_config::AccessLogConfig,
    ) -> Self {
        let fields = match &config.fields {
            Some(f) => f.value.iter().filter_map(|n| Field::parse(n)).collect(),
            None => Field::ALL.to_vec(),
        };
        Self {
            listener,
            fields,
            sample: config.sample.value,
        }
    }

    /// Whether a request that just arrived is logged.
    pub(crate) fn sampled(&self) -> bool {
        self.sample >= 1.0 || (self.sample > 0.0 && fastrand::f64() < self.sample)
    }

    /// Log a request that is over.
    pub(crate) fn write(&self, ex: &Exchange, summary: &Summary) {
        let line = self.line(ex, summary);
        tracing::info!(target: TARGET, "{line}");
    }

    fn line(&self, ex: &Exchange, summary: &Summary) -> String {
        let mut out = String::with_capacity(64 + 24 * self.fields.len());
        out.push('{');
        let trace = sent_trace(ex);
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            string(&mut out, field.name());
            out.push(':');
            self.value(&mut out, *field, ex, summary, trace);
        }
        out.push('}');
        out
    }

    /// One field's JSON value.
    fn value(
        &self,
        out: &mut String,
        field: Field,
        ex: &Exchange,
        summary: &Summary,
        trace: Option<(&str, &str)>,
    ) {
        let parts = &ex.request.parts;
        let ctx = &ex.ctx;
        match field {
            Field::Time => time(out, ex),
            Field::RequestId => number(out, ctx.id),
            Field::TraceId => optional(out, trace.map(|t| t.0)),
            Field::SpanId => optional(out, trace.map(|t| t.1)),
            Field::Listener => string(out, &self.listener),
            Field::Peer => string(out, &ctx.conn.peer.to_string()),
            Field::Method => string(out, parts.method.as_str()),
            Field::Authority => optional(out, authority(ex)),
            // The path without its query, which may hold what must not be logged.
            Field::Path => string(out, parts.uri.path()),
            Field::Route => optional(out, ctx.route.as_deref()),
            Field::Cluster => optional(out, ctx.cluster.as_deref()),
            Field::Endpoint => optional(out, ctx.endpoint.as_ref().map(|e| e.as_str())),
            Field::Attempts => number(out, u64::from(ctx.attempt)),
            Field::Status => number(out, u64::from(summary.status)),
            Field::GrpcStatus => match ctx.grpc_status {
                Some(g) => number(out, u64::from(g)),
                None => out.push_str("null"),
            },
            Field::Responder => responder(out, &summary.responder),
            Field::Error => match &summary.responder {
                Responder::Proxy(Some(kind)) => string(out, kind.name()),
                _ => out.push_str("null"),
            },
            Field::Decisions => decisions(out, ex),
            Field::ResponseBytes => number(out, summary.response_bytes),
            Field::DurationMs => {
                let _ = write!(out, "{:.3}", summary.duration as f64 / 1e6);
            }
            Field::Complete => out.push_str(if summary.complete { "true" } else { "false" }),
        }
    }
}

/// The trace and span ids this hop sent on, when a filter (telemetry) set its
/// context: a client's own `traceparent` is not a context the chain validated.
fn sent_trace(ex: &Exchange) -> Option<(&str, &str)> {
    ex.request
        .parts
        .headers
        .get("traceparent")
        .filter(|_| ex.ctx.trace_set)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut p = v.split('-').skip(1);
            Some((p.next()?, p.next()?))
        })
        .filter(|(t, s)| hex_id(t, 32) && hex_id(s, 16))
}

/// When the request arrived: the line is written when it is over.
fn time(out: &mut String, ex: &Exchange) {
    let at = SystemTime::now()
        .checked_sub(ex.ctx.received.elapsed())
        .unwrap_or(UNIX_EPOCH);
    string(out, &rfc3339(at));
}

/// The URI's authority, or the `Host` header for origin-form requests.
fn authority(ex: &Exchange) -> Option<&str> {
    let parts = &ex.request.parts;
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get("host").and_then(|h| h.to_str().ok()))
}

fn responder(out: &mut String, responder: &Responder) {
    match responder {
        Responder::Upstream => string(out, "upstream"),
        Responder::Filter(name) => string(out, &format!("filter:{name}")),
        Responder::Proxy(_) => string(out, "proxy"),
    }
}

fn decisions(out: &mut String, ex: &Exchange) {
    out.push('[');
    for (j, d) in ex.ctx.decisions.iter().flatten().enumerate() {
        if j > 0 {
            out.push(',');
        }
        string(out, d);
    }
    out.push(']');
}

/// `s` as a JSON string. Beyond what JSON needs escaped, every control character
/// (C0, DEL, C1) and the invisible format characters that reorder or hide text
/// (bidirectional overrides such as U+202E, zero-width characters, line separators)
/// are written as `\uXXXX`, so a client's path cannot make a log line read other
/// than it is.
fn string(out: &mut String, s: &str) {
    out.push('"');
    let mut from = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if c.is_control() || invisible(c) => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push_str(escaped);
        }
        from = i + c.len_utf8();
    }
    out.push_str(&s[from..]);
    out.push('"');
}

/// Format characters that change how text around them shows (all below U+FFFF).
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}'
    )
}

fn hex_id(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn optional(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.push_str("null"),
    }
}

fn number(out: &mut String, n: u64) {
    let _ = write!(out, "{n}");
}

/// `2026-12-01T06:40:12.345Z`, in UTC.
fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_the_config() {
        assert_eq!(Field::ALL.len(), weft_config::ACCESS_LOG_FIELDS.len());
        for f in Field::ALL {
            assert_eq!(Field::parse(f.name()), Some(f));
        }
    }

    #[test]
    fn times_are_rfc3339() {
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_764_571_212_345);
        assert_eq!(rfc3339(at), "2025-12-01T06:40:12.345Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
