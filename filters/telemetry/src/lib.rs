//! The built-in telemetry filter: the RED metrics of every request, under Istio's
//! names and labels, and W3C trace context with one span per hop.
//!
//! With `config: {}` it counts requests and errors, records latency, and propagates
//! trace context (starting a trace when the request has none). Spans go out when the
//! proxy has a `tracing.collector`.
//!
//! ```yaml
//! filters:
//!   - name: telemetry
//!     module: builtin:telemetry          # first in the chain, so it sees every request
//!     metrics: { prefix: istio_ }        # Istio's metric names (default: weft_filter_)
//!     config:
//!       duration: milliseconds           # Istio's latency unit (default: seconds)
//!       reporter: destination            # this proxy fronts the service (or: source)
//!       workload: banking                # this proxy's workload; names its spans' service
//!       service: banking.bank            # destination_service here (default: the request's host)
//!       trace:
//!         sample_ratio: 1.0              # share of new traces sampled
//!         b3: true                       # accept B3 headers when traceparent is absent
//! ```
//!
//! Metrics, labelled `reporter`, `source_workload`, `destination_service`,
//! `destination_workload`, `route`, `request_method`, `response_code` and
//! `grpc_response_status`:
//! - `requests_total`: requests, by how they ended;
//! - `request_errors_total`: those that failed: a 5xx, a gRPC server-side error
//!   (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), or a
//!   response cut short;
//! - `request_duration_seconds` (or, with `duration: milliseconds`, Istio's
//!   `request_duration_milliseconds`): from arrival to the last response byte, in
//!   Istio's buckets.
//!
//! ```no_run
//! let t: weft_filter_telemetry::Telemetry = weft_sdk::from_config("{}")?;
//! # Ok::<(), String>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod context;

use std::cell::RefCell;
use std::collections::HashMap;

use weft_sdk::metrics::{Counter, Histogram, MetricError, Series};
use weft_sdk::prelude::*;
use weft_sdk::trace::{Span, SpanKind};
use weft_sdk::{Responder, random, trace};

use context::Parent;

/// Istio's buckets for `request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The label names of every metric, in order.
pub const LABELS: [&str; 8] = [
    "reporter",
    "source_workload",
    "destination_service",
    "destination_workload",
    "route",
    "request_method",
    "response_code",
    "grpc_response_status",
];

/// The header a `source` reporter names its workload in, for the callee's
/// `source_workload`.
pub const SOURCE_HEADER: &str = "x-weft-source-workload";

/// Where this filter leaves what its request hook learned, for its `on-done`.
const PROPERTY: &str = "weft.telemetry";

/// Longest label value taken from a request (host, caller's workload).
const MAX_LABEL: usize = 128;
/// Longest `tracestate` carried into a span (W3C's limit).
const MAX_TRACESTATE: usize = 512;

/// The unit of the latency histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(crate = "weft_sdk::serde", rename_all = "lowercase")]
pub enum DurationUnit {
    /// `request_duration_seconds`, as Prometheus' conventions and OpenTelemetry have it.
    #[default]
    Seconds,
    /// `request_duration_milliseconds`, Istio's name and unit.
    Milliseconds,
}

/// Which side of a call this proxy reports, as Istio's `reporter` label says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(crate = "weft_sdk::serde", rename_all = "lowercase")]
pub enum Reporter {
    /// This proxy fronts the called service (inbound, a server span).
    #[default]
    Destination,
    /// This proxy sends its workload's calls out (outbound, a client span).
    Source,
}

/// Trace settings.
#[derive(Debug, Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
pub struct TraceConfig {
    /// Share of traces this proxy starts that are sampled, 0 to 1. A trace that
    /// arrives keeps its caller's decision.
    #[serde(default = "one")]
    pub sample_ratio: f64,
    /// Accept B3 (`b3`, `x-b3-*`) when a request has no valid `traceparent`.
    #[serde(default = "yes")]
    pub b3: bool,
    /// Propagate trace context at all.
    #[serde(default = "yes")]
    pub propagate: bool,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            sample_ratio: 1.0,
            b3: true,
            propagate: true,
        }
    }
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

/// The telemetry filter and its configuration.
#[derive(Debug, Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
pub struct Telemetry {
    /// Which side this proxy reports.
    #[serde(default)]
    pub reporter: Reporter,
    /// This proxy's workload.
    #[serde(default)]
    pub workload: Option<String>,
    /// The `destination_service` of every request (default: the request's host).
    #[serde(default)]
    pub service: Option<String>,
    /// Trace settings.
    #[serde(default)]
    pub trace: TraceConfig,
    /// The latency histogram's unit (and name).
    #[serde(default)]
    pub duration: DurationUnit,
    #[serde(skip)]
    metrics: Option<Metrics>,
    #[serde(skip)]
    cache: RefCell<Cache>,
}

#[derive(Debug)]
struct Metrics {
    requests: Counter,
    errors: Counter,
    duration: Histogram,
}

/// Label sets seen, to their series: a request whose labels were seen before records
/// with two calls that pass no strings.
#[derive(Debug, Default)]
struct Cache {
    /// The label values joined by U+001F, a byte no label value needs.
    key: String,
    series: HashMap<String, Recorded>,
}

/// Most label sets one instance remembers; past it, it starts over.
const MAX_CACHED: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Recorded {
    requests: Series,
    errors: Option<Series>,
    duration: Series,
}

impl Metrics {
    /// Count one request with these labels.
    fn record(&self, cache: &mut Cache, labels: &[&str; 8], failed: bool, took: f64) {
        let Cache { key, series } = cache;
        key.clear();
        for l in labels {
            key.push_str(l);
            key.push('\u{1f}');
        }
        // Twice at most: a series the proxy expired is resolved again.
        for _ in 0..2 {
            let rec = match series.get_mut(key.as_str()) {
                Some(r) => r,
                None => {
                    let (Ok(requests), Ok(duration)) =
                        (self.requests.series(labels), self.duration.series(labels))
                    else {
                        // Past the series limit: the proxy dropped and counted it.
                        return;
                    };
                    if series.len() >= MAX_CACHED {
                        series.clear();
                    }
                    let rec = Recorded {
                        requests,
                        errors: None,
                        duration,
                    };
                    series.entry(key.clone()).or_insert(rec)
                }
            };
            if failed && rec.errors.is_none() {
                rec.errors = self.errors.series(labels).ok();
            }
            let result = rec.requests.inc().and_then(|()| rec.duration.observe(took));
            let result = match (failed, rec.errors) {
                (true, Some(e)) => result.and_then(|()| e.inc()),
                _ => result,
            };
            if !matches!(result, Err(MetricError::UnknownMetric)) {
                return;
            }
            series.remove(key.as_str());
        }
    }
}

/// What the request hook hands to `on-done`, in a property.
#[derive(Debug, Default, PartialEq)]
struct Noted<'a> {
    trace_id: (u64, u64),
    span_id: u64,
    parent: u64,
    sampled: bool,
    method: &'a str,
    destination_service: &'a str,
    source_workload: &'a str,
    trace_state: &'a str,
}

impl Noted<'_> {
    fn encode(&self) -> Vec<u8> {
        let strings = [
            self.method,
            self.destination_service,
            self.source_workload,
            self.trace_state,
        ];
        let mut out = Vec::with_capacity(33 + strings.iter().map(|s| s.len() + 2).sum::<usize>());
        for n in [self.trace_id.0, self.trace_id.1, self.span_id, self.parent] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(u8::from(self.sampled));
        for s in strings {
            // Each is at most MAX_TRACESTATE bytes, cut at a char boundary before.
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Noted<'_>> {
        let n = |i: usize| {
            Some(u64::from_le_bytes(
                bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let mut at = 33;
        let mut text = || {
            let len = usize::from(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
            let s = std::str::from_utf8(bytes.get(at + 2..at + 2 + len)?).ok()?;
            at += 2 + len;
            Some(s)
        };
        Some(Noted {
            trace_id: (n(0)?, n(1)?),
            span_id: n(2)?,
            parent: n(3)?,
            sampled: *bytes.get(32)? == 1,
            method: text()?,
            destination_service: text()?,
            source_workload: text()?,
            trace_state: text()?,
        })
    }
}

/// `GET`, `POST`, ... as they are; anything else `other`, so methods stay few.
fn method_class(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// The host of an authority, without its port.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// gRPC codes that mean the server failed, as opposed to the caller's mistake.
fn grpc_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

fn nonzero_random() -> u64 {
    loop {
        let n = random::u64();
        if n != 0 {
            return n;
        }
    }
}

impl Telemetry {
    /// The caller's trace, from `traceparent`, else B3 when allowed.
    fn parent(&self, head: &weft_sdk::RequestHead) -> Option<Parent> {
        if let Some(p) = head.header("traceparent").and_then(context::traceparent) {
            return Some(p);
        }
        if !self.trace.b3 {
            return None;
        }
        if let Some(p) = head.header("b3").and_then(context::b3_single) {
            return Some(p);
        }
        context::b3_multi(
            head.header("x-b3-traceid")?,
            head.header("x-b3-spanid")?,
            head.header("x-b3-sampled"),
            head.header("x-b3-flags"),
        )
    }

    fn workload(&self) -> &str {
        self.workload.as_deref().unwrap_or("unknown")
    }

    /// What on-request notes, from the request's head.
    fn note<'a>(&'a self, head: &'a weft_sdk::RequestHead) -> Noted<'a> {
        let destination_service = match &self.service {
            Some(s) => s.as_str(),
            None => head.authority().map_or("unknown", host_of),
        };
        let source_workload = match self.reporter {
            Reporter::Source => self.workload(),
            Reporter::Destination => head.header(SOURCE_HEADER).unwrap_or("unknown"),
        };
        let mut noted = Noted {
            method: method_class(head.method()),
            destination_service: cut(destination_service, MAX_LABEL),
            source_workload: cut(source_workload, MAX_LABEL),
            ..Noted::default()
        };
        if self.trace.propagate {
            let (trace_id, parent, sampled) = match self.parent(head) {
                Some(p) => (p.trace_id, p.span_id, p.sampled),
                None => {
                    let id = (random::u64(), nonzero_random());
                    (id, 0, random::chance(self.trace.sample_ratio * 100.0))
                }
            };
            noted.trace_id = trace_id;
            noted.parent = parent;
            noted.sampled = sampled;
            noted.span_id = nonzero_random();
            noted.trace_state = cut(head.header("tracestate").unwrap_or(""), MAX_TRACESTATE);
        }
        noted
    }
}

impl Filter for Telemetry {
    fn init(&mut self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.trace.sample_ratio) {
            return Err(format!(
                "trace.sample_ratio: {} is not within 0 to 1",
                self.trace.sample_ratio
            ));
        }
        if self.reporter == Reporter::Source && self.workload.is_none() {
            return Err(
                "workload: a source reporter names its workload (the callee labels \
                        its requests with it)"
                    .to_owned(),
            );
        }
        let e = |e| format!("cannot define metrics: {e:?}");
        self.metrics = Some(Metrics {
            requests: Counter::define("requests_total", "Requests, by how they ended.", &LABELS)
                .map_err(e)?,
            errors: Counter::define(
                "request_errors_total",
                "Requests that failed: a 5xx, a server-side gRPC error, or a response cut short.",
                &LABELS,
            )
            .map_err(e)?,
            duration: match self.duration {
                DurationUnit::Milliseconds => Histogram::define_with_bounds(
                    "request_duration_milliseconds",
                    "Time from a request's arrival to its last response byte, in milliseconds.",
                    &LABELS,
                    &DURATION_BUCKETS_MS,
                ),
                DurationUnit::Seconds => Histogram::define_with_bounds(
                    "request_duration_seconds",
                    "Time from a request's arrival to its last response byte.",
                    &LABELS,
                    &DURATION_BUCKETS_MS.map(|ms| ms / 1000.0),
                ),
            }
            .map_err(e)?,
        });
        Ok(())
    }

    fn interest(&self) -> Interest {
        let mut headers = vec!["tracestate", "traceparent", SOURCE_HEADER];
        if self.trace.b3 {
            headers.extend([
                "b3",
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-sampled",
                "x-b3-flags",
            ]);
        }
        Interest::REQUEST.with_done().with_request_headers(headers)
    }

    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
        let head = req.head();
        let noted = self.note(&head);
        if self.trace.propagate {
            let parent = context::format_traceparent(noted.trace_id, noted.span_id, noted.sampled);
            let _ = req.set_header("traceparent", parent.as_str());
        }
        match self.reporter {
            Reporter::Source => {
                let _ = req.set_header(SOURCE_HEADER, self.workload());
            }
            // The caller's claim stops here; it names this hop's caller only.
            Reporter::Destination if head.header_bytes(SOURCE_HEADER).is_some() => {
                req.remove_header(SOURCE_HEADER);
            }
            Reporter::Destination => {}
        }
        let _ = ctx.set(PROPERTY, &noted.encode());
        Action::Continue
    }

    fn on_done(&mut self, ctx: &Context, summary: &Summary) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let stored = ctx.get(PROPERTY);
        // An earlier filter answered before this one's request hook ran: read the
        // head now (no trace context was sent on, so none is recorded).
        let late_head;
        let noted = match stored.as_deref().and_then(Noted::decode) {
            Some(n) => n,
            None => {
                late_head = ctx.request_head();
                Noted {
                    trace_id: (0, 0),
                    ..self.note(&late_head)
                }
            }
        };
        let facts = ctx.facts();
        let grpc = ctx.grpc_status();
        let code = summary.status.to_string();
        let grpc_label = grpc.map(|g| g.to_string()).unwrap_or_default();
        let destination_workload = match self.reporter {
            Reporter::Destination => self.workload(),
            Reporter::Source => facts.cluster.as_deref().unwrap_or("unknown"),
        };
        let reporter = match self.reporter {
            Reporter::Destination => "destination",
            Reporter::Source => "source",
        };
        let labels = [
            reporter,
            noted.source_workload,
            noted.destination_service,
            destination_workload,
            facts.route.as_deref().unwrap_or("unknown"),
            noted.method,
            &code,
            &grpc_label,
        ];
        let failed = summary.status >= 500 || grpc.is_some_and(grpc_error) || !summary.complete;
        let took = match self.duration {
            DurationUnit::Milliseconds => summary.duration as f64 / 1e6,
            DurationUnit::Seconds => summary.duration as f64 / 1e9,
        };
        metrics.record(&mut self.cache.borrow_mut(), &labels, failed, took);

        if noted.sampled && noted.trace_id != (0, 0) && trace::exported() {
            let mut attributes: Vec<(String, String)> = vec![
                ("http.request.method".into(), noted.method.into()),
                ("http.response.status_code".into(), code.clone()),
                ("server.address".into(), noted.destination_service.into()),
                ("weft.attempts".into(), facts.attempt.to_string()),
                ("weft.responder".into(), responder(&summary.responder)),
                ("weft.reporter".into(), reporter.into()),
            ];
            if let Some(w) = &self.workload {
                attributes.push(("service.name".into(), w.clone()));
            }
            if let Some(route) = &facts.route {
                attributes.push(("http.route".into(), route.clone()));
            }
            if let Some(cluster) = facts.cluster {
                attributes.push(("weft.cluster".into(), cluster));
            }
            if let Some(endpoint) = facts.endpoint {
                attributes.push(("server.endpoint".into(), endpoint));
            }
            if let Some(g) = grpc {
                attributes.push(("rpc.grpc.status_code".into(), g.to_string()));
            }
            let name = match &facts.route {
                Some(r) => format!("{} {r}", noted.method),
                None => noted.method.to_owned(),
            };
            let span = Span {
                trace_id: noted.trace_id,
                span_id: noted.span_id,
                parent_span_id: (noted.parent != 0).then_some(noted.parent),
                name,
                kind: match self.reporter {
                    Reporter::Destination => SpanKind::Server,
                    Reporter::Source => SpanKind::Client,
                },
                start: facts.received_at,
                end: facts.received_at.saturating_add(summary.duration),
                error: failed,
                attributes,
                trace_state: (!noted.trace_state.is_empty()).then(|| noted.trace_state.to_owned()),
            };
            trace::export(&span);
        }
    }
}

fn responder(r: &Responder) -> String {
    match r {
        Responder::Upstream => "upstream".into(),
        Responder::Filter(name) => format!("filter:{name}"),
        Responder::Proxy(_) => "proxy".into(),
    }
}

weft_sdk::export!(Telemetry);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_sdk::RequestHead;

    #[test]
    fn config_defaults_and_errors() {
        let t: Telemetry = weft_sdk::from_config("{}").unwrap();
        assert_eq!(t.reporter, Reporter::Destination);
        assert_eq!(t.trace.sample_ratio, 1.0);
        let err =
            weft_sdk::from_config::<Telemetry>(r#"{"trace":{"sample_ratio":2}}"#).unwrap_err();
        assert!(err.contains("sample_ratio"), "{err}");
        let err = weft_sdk::from_config::<Telemetry>(r#"{"reporter":"source"}"#).unwrap_err();
        assert!(err.starts_with("workload:"), "{err}");
        assert!(weft_sdk::from_config::<Telemetry>(r#"{"reporterr":"source"}"#).is_err());
    }

    #[test]
    fn notes_round_trip() {
        let n = Noted {
            trace_id: (1, 2),
            span_id: 3,
            parent: 4,
            sampled: true,
            method: "GET",
            destination_service: "bank",
            source_workload: "trading",
            trace_state: "a=b",
        };
        assert_eq!(Noted::decode(&n.encode()), Some(n));
        assert_eq!(Noted::decode(b"short"), None);
    }

    #[test]
    fn labels_from_the_head() {
        let t: Telemetry = weft_sdk::from_config("{}").unwrap();
        let head = RequestHead::new("BREW", "/pot")
            .with_authority("bank.example:8443")
            .with_header(SOURCE_HEADER, "trading")
            .with_header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            );
        let n = t.note(&head);
        assert_eq!(n.method, "other");
        assert_eq!(n.destination_service, "bank.example");
        assert_eq!(n.source_workload, "trading");
        assert_eq!(n.trace_id, (0x4bf92f3577b34da6, 0xa3ce929d0e0e4736));
        assert_eq!(n.parent, 0x00f067aa0ba902b7);
        assert!(!n.sampled);
        assert_ne!(n.span_id, 0);
        // No context: a new trace, sampled at ratio 1, no parent.
        let fresh = RequestHead::new("GET", "/").with_authority("[::1]:80");
        let n = t.note(&fresh);
        assert_eq!(n.destination_service, "::1");
        assert_eq!(n.source_workload, "unknown");
        assert_eq!(n.parent, 0);
        assert!(n.sampled);
        assert_ne!(n.trace_id, (0, 0));
        // B3 when traceparent is absent, unless turned off.
        let b3 =
            RequestHead::new("GET", "/").with_header("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1");
        assert_eq!(t.note(&b3).trace_id, (0, 0x64fe8b2a57d3eff7));
        let off: Telemetry = weft_sdk::from_config(r#"{"trace":{"b3":false}}"#).unwrap();
        assert_ne!(off.note(&b3).trace_id, (0, 0x64fe8b2a57d3eff7));
    }

    #[test]
    fn classes() {
        assert_eq!(method_class("PATCH"), "PATCH");
        assert_eq!(method_class("get"), "other");
        assert_eq!(host_of("a.b:80"), "a.b");
        assert_eq!(host_of("a.b"), "a.b");
        assert_eq!(cut("héllo", 2), "h");
        assert!(grpc_error(14) && !grpc_error(5));
    }
}
