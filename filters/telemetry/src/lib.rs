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
//!       namespace: bank                  # the workload's namespace
//!       canonical_service: banking       # default: workload
//!       canonical_revision: v1           # default: latest
//!       service: banking                 # destination_service here (default: the request's host)
//!       qualify_service: true            # ... as banking.bank.svc.cluster.local
//!       cluster_domain: cluster.local    # the default
//!       max_label_values: 100            # distinct values of a label a client names
//!       trace:
//!         sample_ratio: 1.0              # share of new traces sampled
//!         b3: true                       # accept B3 headers when traceparent is absent
//! ```
//!
//! Metrics, labelled with Istio's standard labels ([`LABELS`]):
//! - `requests_total`: requests, by how they ended;
//! - `request_errors_total`: those that failed: a 5xx, a gRPC server-side error
//!   (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), or a
//!   response cut short;
//! - `request_duration_seconds` (or, with `duration: milliseconds`, Istio's
//!   `request_duration_milliseconds`): from arrival to the last response byte, in
//!   Istio's buckets.
//!
//! A `source` reporter names its workload to the callee in `x-weft-source-workload`
//! (with its namespace and canonical name: [`labels::Caller`]); the callee's filter
//! labels the `source_*` labels with it and removes it.
//!
//! Identities, from mutual TLS: `source_principal` is the SPIFFE ID (or DNS name) the
//! downstream client proved with its certificate; `destination_principal` the one the
//! upstream proved (`context.upstream-identity`), or else, on a destination
//! reporter, the one this proxy presented to its client (`context.local-identity`);
//! `connection_security_policy` is `mutual_tls` when the client proved one, else
//! `none` (`unknown` on a source reporter, as Istio's says). Each is `unknown` when
//! nothing was proved.
//!
//! Labels that take values a client names: `destination_service` when it is the
//! request's host (no `service` configured), the caller's workload, namespace and
//! canonical name and revision from `x-weft-source-workload`, the identity of the
//! client's certificate and that of the upstream's. Each admits its first `max_label_values` distinct values,
//! shared by the filter's instances; later ones count as `unknown`, as Istio's and
//! Linkerd's proxies fold names a client made up. A metric full anyway (the entry's
//! `metrics.max_series`) counts new label sets in its `overflow` series.
//!
//! Trace context: the upstream gets this hop's `traceparent` and nothing that names
//! another trace. A request's B3 headers are removed, two `traceparent` headers start
//! a new trace (W3C), and `tracestate` goes on only with the `traceparent` it came with
//! and only when well-formed and within W3C's bounds (32 members, 512 bytes); else it
//! is dropped whole.
//!
//! ```no_run
//! let t: weft_filter_telemetry::Telemetry = weft_sdk::from_config("{}")?;
//! # Ok::<(), String>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod context;
pub mod labels;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use weft_sdk::metrics::{Counter, Histogram, MetricError, Series};
use weft_sdk::prelude::*;
use weft_sdk::trace::{Span, SpanKind};
use weft_sdk::{Connection, Facts, RequestHead, Responder, random, state, trace};

use context::Parent;
pub use labels::LABELS;
use labels::{Caller, Decimal, FIXED, LATEST, UNKNOWN};

/// Istio's buckets for `request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The header a `source` reporter names its workload in (with its namespace and
/// canonical name, as [`labels::Caller`] writes them), for the callee's `source_*`
/// labels. The proxy lets a client's through only on a `mesh_internal` listener.
pub const SOURCE_HEADER: &str = "x-weft-source-workload";

/// Read for `request_protocol`.
const CONTENT_TYPE: &str = "content-type";

/// Where this filter leaves what its request hook learned, for its `on-done`.
const PROPERTY: &str = "weft.telemetry";

/// Longest label value taken from a request (host, caller's workload, client's
/// identity), and longest configured workload.
const MAX_LABEL: usize = 128;
/// Longest namespace, canonical service and canonical revision, taken from a request
/// or configured: Kubernetes' bound on a namespace and on a label value. Shorter than
/// [`MAX_LABEL`] so that the note a request hook leaves fits a property.
const MAX_NAME: usize = 63;
/// Most `max_label_values`: each admitted value is a key of the filter's state.
const MAX_LABEL_VALUES: usize = 1000;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// B3's headers: read when `trace.b3` allows, and removed whenever this filter sends
/// its own `traceparent`, so that the upstream sees one trace context.
const B3_HEADERS: [&str; 6] = [
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-b3-parentspanid",
];

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
    /// Accept B3 (`b3`, `x-b3-*`) when a request has no `traceparent`.
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
    /// The workload's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The workload's canonical service (default: `workload`).
    #[serde(default)]
    pub canonical_service: Option<String>,
    /// The workload's canonical revision (default: `latest`).
    #[serde(default)]
    pub canonical_revision: Option<String>,
    /// The `destination_service` of every request (default: the request's host).
    #[serde(default)]
    pub service: Option<String>,
    /// Report `service` fully qualified, as Istio does:
    /// `service.namespace.svc.cluster_domain`.
    #[serde(default)]
    pub qualify_service: bool,
    /// The cluster's DNS domain, for `qualify_service`.
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
    /// Trace settings.
    #[serde(default)]
    pub trace: TraceConfig,
    /// The latency histogram's unit (and name).
    #[serde(default)]
    pub duration: DurationUnit,
    /// Distinct values each label a client names may take (host, caller's workload);
    /// later ones count as `unknown`.
    #[serde(default = "default_label_values")]
    pub max_label_values: usize,
    #[serde(skip)]
    me: Me,
    #[serde(skip)]
    metrics: Option<Metrics>,
    #[serde(skip)]
    cache: RefCell<Cache>,
    #[serde(skip)]
    admitted: RefCell<Admitted>,
}

fn default_label_values() -> usize {
    100
}

fn default_cluster_domain() -> String {
    "cluster.local".to_owned()
}

/// What the configuration says of this proxy, as label values, resolved by `init`.
#[derive(Debug, Default)]
struct Me {
    /// The labels every request of this filter entry has, [`labels::FIXED`] of them.
    fixed: [String; FIXED],
    /// The workload, its namespace, canonical service and revision: a source
    /// reporter's `source_*`, a destination's `destination_*`.
    workload: String,
    namespace: String,
    canonical_service: String,
    canonical_revision: String,
    /// `service`, qualified when asked.
    service: Option<String>,
    /// What a source reporter sends in [`SOURCE_HEADER`].
    caller: String,
}

/// A label whose values a client names.
#[derive(Clone, Copy, Debug)]
enum ClientLabel {
    DestinationService,
    SourceWorkload,
    SourceNamespace,
    SourceCanonicalService,
    SourceCanonicalRevision,
    SourcePrincipal,
    DestinationPrincipal,
}

/// How many [`ClientLabel`]s there are.
const CLIENT_LABELS: usize = 7;

impl ClientLabel {
    /// Where the filter's state counts the values admitted, and the prefix of the key
    /// that marks one admitted.
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Self::DestinationService => ("labels.destination_service", "label.ds."),
            Self::SourceWorkload => ("labels.source_workload", "label.sw."),
            Self::SourceNamespace => ("labels.source_workload_namespace", "label.sn."),
            Self::SourceCanonicalService => ("labels.source_canonical_service", "label.sc."),
            Self::SourceCanonicalRevision => ("labels.source_canonical_revision", "label.sr."),
            Self::SourcePrincipal => ("labels.source_principal", "label.sp."),
            Self::DestinationPrincipal => ("labels.destination_principal", "label.dp."),
        }
    }
}

/// The client-named values this instance knows were admitted, per label, so that one
/// seen before costs a hash lookup and no host call. At most `max_label_values` each.
#[derive(Debug, Default)]
struct Admitted {
    known: [HashSet<Box<str>>; CLIENT_LABELS],
    /// Whether the filter's count for the label reached the limit: then a value this
    /// instance does not know is only looked up, as another instance may have admitted
    /// it.
    full: [bool; CLIENT_LABELS],
}

#[derive(Debug)]
struct Metrics {
    requests: Counter,
    errors: Counter,
    duration: Histogram,
}

/// Label sets seen, to their series: a request whose labels were seen before records
/// with two calls that pass no strings. One cache serves one filter entry, whose
/// configuration fixes the first [`labels::FIXED`] labels: only the others make the
/// key.
#[derive(Debug, Default)]
struct Cache {
    /// The label values a request sets, joined by U+001F: a byte no label value holds
    /// (header values and authorities cannot, and [`Telemetry::admit`] refuses a
    /// client's value with a control character). Reused, so a key costs no allocation.
    key: String,
    series: HashMap<String, Recorded>,
}

/// Most label sets one instance remembers; past it, it starts over.
const MAX_CACHED: usize = 4096;

/// The series of one label set, each resolved when first needed.
#[derive(Clone, Copy, Debug, Default)]
struct Recorded {
    requests: Option<Series>,
    errors: Option<Series>,
    duration: Option<Series>,
}

/// Update a cached series, resolving it first when it is not yet known or the proxy
/// expired it (twice at most). A failure is the proxy's to count; the caller goes on.
fn update(
    series: &mut Option<Series>,
    resolve: impl Fn() -> Result<Series, MetricError>,
    apply: impl Fn(Series) -> Result<(), MetricError>,
) {
    for _ in 0..2 {
        let s = match *series {
            Some(s) => s,
            None => match resolve() {
                Ok(s) => *series.insert(s),
                Err(_) => return,
            },
        };
        match apply(s) {
            Err(MetricError::UnknownMetric) => *series = None,
            _ => return,
        }
    }
}

impl Metrics {
    /// Count one request with these labels. Each metric is updated on its own, so
    /// that one the proxy refused does not keep the others, an error above all, from
    /// being counted.
    fn record(&self, cache: &mut Cache, labels: &[&str; LABELS.len()], failed: bool, took: f64) {
        let Cache { key, series } = cache;
        key.clear();
        for l in &labels[FIXED..] {
            key.push_str(l);
            key.push('\u{1f}');
        }
        let rec = match series.get_mut(key.as_str()) {
            Some(r) => r,
            None => {
                if series.len() >= MAX_CACHED {
                    series.clear();
                }
                series.entry(key.clone()).or_default()
            }
        };
        update(
            &mut rec.requests,
            || self.requests.series(labels),
            |s| s.inc(),
        );
        update(
            &mut rec.duration,
            || self.duration.series(labels),
            |s| s.observe(took),
        );
        if failed {
            update(&mut rec.errors, || self.errors.series(labels), |s| s.inc());
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
    /// Whether the request is gRPC (`request_protocol`).
    grpc: bool,
    method: &'a str,
    destination_service: &'a str,
    source_workload: &'a str,
    source_namespace: &'a str,
    source_canonical_service: &'a str,
    source_canonical_revision: &'a str,
    /// The `tracestate` that goes on: the request's, checked (several headers joined
    /// into one list), or empty.
    trace_state: Cow<'a, str>,
}

impl Noted<'_> {
    fn encode(&self) -> Vec<u8> {
        let strings = [
            self.method,
            self.destination_service,
            self.source_workload,
            self.source_namespace,
            self.source_canonical_service,
            self.source_canonical_revision,
            &self.trace_state,
        ];
        let mut out = Vec::with_capacity(34 + strings.iter().map(|s| s.len() + 2).sum::<usize>());
        for n in [self.trace_id.0, self.trace_id.1, self.span_id, self.parent] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(u8::from(self.sampled));
        out.push(u8::from(self.grpc));
        for s in strings {
            // Each is at most context::MAX_TRACESTATE bytes: labels are cut shorter.
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
        let mut at = 34;
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
            grpc: *bytes.get(33)? == 1,
            method: text()?,
            destination_service: text()?,
            source_workload: text()?,
            source_namespace: text()?,
            source_canonical_service: text()?,
            source_canonical_revision: text()?,
            trace_state: Cow::Borrowed(text()?),
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

/// The values of one header, in the request's order.
fn values<'h>(head: &'h RequestHead, name: &'h str) -> impl Iterator<Item = &'h [u8]> {
    head.headers()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The value of a header the request has once; none when absent or repeated (a
/// header that holds one value means nothing twice).
fn single<'h>(head: &'h RequestHead, name: &'h str) -> Option<&'h [u8]> {
    let mut all = values(head, name);
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

/// The request's `tracestate`, to go on with its `traceparent`: several headers are
/// one list (W3C), joined; empty when it is malformed or past W3C's bounds.
fn trace_state(head: &RequestHead) -> Cow<'_, str> {
    let mut all = values(head, TRACESTATE);
    let Some(first) = all.next() else {
        return Cow::Borrowed("");
    };
    let Some(second) = all.next() else {
        return match std::str::from_utf8(first) {
            Ok(s) if context::tracestate(first) => Cow::Borrowed(s),
            _ => Cow::Borrowed(""),
        };
    };
    let mut joined = first.to_vec();
    for v in std::iter::once(second).chain(all) {
        // Past the bound it is refused anyway; joining on would only cost memory.
        if joined.len() > context::MAX_TRACESTATE {
            break;
        }
        joined.push(b',');
        joined.extend_from_slice(v);
    }
    match String::from_utf8(joined) {
        Ok(s) if context::tracestate(s.as_bytes()) => Cow::Owned(s),
        _ => Cow::Borrowed(""),
    }
}

/// What becomes of the request's `tracestate` when this hop sends its `traceparent`.
#[derive(Debug, PartialEq)]
enum StateChange<'a> {
    /// Absent, or the one header, as checked.
    Keep,
    /// Several headers, replaced by their checked join.
    Set(&'a str),
    /// Refused, or with a trace this hop did not continue from `traceparent`.
    Remove,
}

fn state_change<'a>(head: &RequestHead, kept: &'a str) -> StateChange<'a> {
    match (values(head, TRACESTATE).take(2).count(), kept.is_empty()) {
        (0, _) => StateChange::Keep,
        (_, true) => StateChange::Remove,
        (1, false) => StateChange::Keep,
        (_, false) => StateChange::Set(kept),
    }
}

impl Telemetry {
    /// The caller's trace, and whether it came as W3C's `traceparent` (whose
    /// `tracestate` then goes on with it). Any `traceparent` decides: one valid
    /// continues its trace; an invalid one, or several, start a new trace (W3C), and
    /// B3 is then not read. Without one, B3 when allowed.
    fn parent(&self, head: &RequestHead) -> Option<(Parent, bool)> {
        if head.header_bytes(TRACEPARENT).is_some() {
            let p = single(head, TRACEPARENT).and_then(context::traceparent)?;
            return Some((p, true));
        }
        if !self.trace.b3 {
            return None;
        }
        let p = if head.header_bytes("b3").is_some() {
            single(head, "b3").and_then(context::b3_single)?
        } else {
            context::b3_multi(
                single(head, "x-b3-traceid")?,
                single(head, "x-b3-spanid")?,
                head.header_bytes("x-b3-sampled"),
                head.header_bytes("x-b3-flags"),
            )?
        };
        Some((p, false))
    }

    /// `value` when the label may take it, else `unknown`. The first
    /// `max_label_values` distinct values win, counted in the filter's state so the
    /// bound holds across its instances; a value this instance already knows costs
    /// one hash lookup.
    fn admit<'v>(&self, label: ClientLabel, value: &'v str) -> &'v str {
        let mut admitted = self.admitted.borrow_mut();
        let Admitted { known, full } = &mut *admitted;
        let (known, full) = (&mut known[label as usize], &mut full[label as usize]);
        if known.contains(value) {
            return value;
        }
        // A control character could make two label sets one cache key.
        if value.chars().any(char::is_control) {
            return UNKNOWN;
        }
        let (count, prefix) = label.keys();
        let key = format!("{prefix}{value}");
        let ok = state::get(&key).is_some()
            || (!*full
                && match state::increment(count, 1) {
                    Ok(n) if usize::try_from(n).is_ok_and(|n| n <= self.max_label_values) => {
                        state::set(&key, b"").is_ok()
                    }
                    _ => {
                        *full = true;
                        false
                    }
                });
        if !ok {
            return UNKNOWN;
        }
        if known.len() < self.max_label_values {
            known.insert(value.into());
        }
        value
    }

    /// A client-named field of the caller header: admitted, or none when absent.
    fn field<'v>(&self, label: ClientLabel, value: Option<&'v str>) -> Option<&'v str> {
        value.map(|v| self.admit(label, cut(v, MAX_NAME)))
    }

    /// The caller's workload, namespace, canonical service and revision, as its
    /// sidecar named them; `unknown` without a caller header. A caller that named its
    /// workload and nothing else has that workload as its canonical service, at
    /// revision `latest`, as Istio defaults them.
    fn caller<'a>(&self, head: &'a RequestHead) -> [&'a str; 4] {
        let Some(value) = head.header(SOURCE_HEADER) else {
            return [UNKNOWN; 4];
        };
        let c = Caller::parse(value);
        let workload = match c.workload {
            Some(w) => self.admit(ClientLabel::SourceWorkload, cut(w, MAX_LABEL)),
            None => UNKNOWN,
        };
        let namespace = self.field(ClientLabel::SourceNamespace, c.namespace);
        let canonical = self.field(ClientLabel::SourceCanonicalService, c.canonical_service);
        let canonical = canonical.unwrap_or(workload);
        let revision = self.field(ClientLabel::SourceCanonicalRevision, c.canonical_revision);
        let revision = revision.unwrap_or(if canonical == UNKNOWN {
            UNKNOWN
        } else {
            LATEST
        });
        [workload, namespace.unwrap_or(UNKNOWN), canonical, revision]
    }

    /// What on-request notes, from the request's head.
    fn note<'a>(&'a self, head: &'a RequestHead) -> Noted<'a> {
        let destination_service = match &self.me.service {
            Some(s) => s.as_str(),
            None => match head.authority() {
                Some(a) => self.admit(ClientLabel::DestinationService, cut(host_of(a), MAX_LABEL)),
                None => UNKNOWN,
            },
        };
        let me = &self.me;
        let [workload, namespace, canonical, revision] = match self.reporter {
            Reporter::Source => [
                me.workload.as_str(),
                me.namespace.as_str(),
                me.canonical_service.as_str(),
                me.canonical_revision.as_str(),
            ],
            Reporter::Destination => self.caller(head),
        };
        let mut noted = Noted {
            grpc: labels::protocol(head.header_bytes(CONTENT_TYPE)) == "grpc",
            method: method_class(head.method()),
            destination_service: cut(destination_service, MAX_LABEL),
            source_workload: workload,
            source_namespace: namespace,
            source_canonical_service: canonical,
            source_canonical_revision: revision,
            ..Noted::default()
        };
        if self.trace.propagate {
            let (trace_id, parent, sampled) = match self.parent(head) {
                Some((p, w3c)) => {
                    if w3c {
                        noted.trace_state = trace_state(head);
                    }
                    (p.trace_id, p.span_id, p.sampled)
                }
                None => {
                    let id = (random::u64(), nonzero_random());
                    (id, 0, random::chance(self.trace.sample_ratio * 100.0))
                }
            };
            noted.trace_id = trace_id;
            noted.parent = parent;
            noted.sampled = sampled;
            noted.span_id = nonzero_random();
        }
        noted
    }

    /// Check the names this proxy gives itself and resolve them to label values.
    fn resolve(&mut self) -> Result<(), String> {
        for (key, value, max) in [
            ("workload", &self.workload, MAX_LABEL),
            ("namespace", &self.namespace, MAX_NAME),
            ("canonical_service", &self.canonical_service, MAX_NAME),
            ("canonical_revision", &self.canonical_revision, MAX_NAME),
        ] {
            if let Some(v) = value
                && !labels::valid_field(v, max)
            {
                return Err(format!(
                    "{key}: {v:?} is not a name of at most {max} visible characters without `;`"
                ));
            }
        }
        let service = match (&self.service, self.qualify_service, &self.namespace) {
            (Some(s), true, Some(ns)) if !s.contains('.') => {
                Some(format!("{s}.{ns}.svc.{}", self.cluster_domain))
            }
            (_, true, _) => {
                return Err(
                    "qualify_service: needs `service`, a bare name, and `namespace`".to_owned(),
                );
            }
            (s, false, _) => s.clone(),
        };
        let known = |v: &Option<String>| v.as_deref().unwrap_or(UNKNOWN).to_owned();
        let workload = known(&self.workload);
        let canonical_service = self
            .canonical_service
            .clone()
            .unwrap_or_else(|| workload.clone());
        let canonical_revision = match &self.canonical_revision {
            Some(r) => r.clone(),
            None if canonical_service == UNKNOWN => UNKNOWN.to_owned(),
            None => LATEST.to_owned(),
        };
        let caller = Caller {
            workload: self.workload.as_deref(),
            namespace: self.namespace.as_deref(),
            canonical_service: Some(&canonical_service),
            canonical_revision: Some(&canonical_revision),
        }
        .encode();
        let u = || UNKNOWN.to_owned();
        // A destination reporter is the destination; a source does not know the
        // callee's workload beyond the cluster it picked.
        let fixed = match self.reporter {
            Reporter::Destination => [
                "destination".to_owned(),
                known(&self.namespace),
                canonical_service.clone(),
                canonical_revision.clone(),
            ],
            Reporter::Source => ["source".to_owned(), u(), u(), u()],
        };
        self.me = Me {
            fixed,
            workload,
            namespace: known(&self.namespace),
            canonical_service,
            canonical_revision,
            service,
            caller,
        };
        Ok(())
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
        if self.max_label_values > MAX_LABEL_VALUES {
            return Err(format!(
                "max_label_values: {} is more than {MAX_LABEL_VALUES}",
                self.max_label_values
            ));
        }
        if self.reporter == Reporter::Source && self.workload.is_none() {
            return Err(
                "workload: a source reporter names its workload (the callee labels \
                        its requests with it)"
                    .to_owned(),
            );
        }
        self.resolve()?;
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
        let mut headers = vec![SOURCE_HEADER, CONTENT_TYPE];
        // Propagating reads W3C's headers, and B3's also to remove them (with
        // `trace.b3` off too): a header the head names costs no host call to find.
        if self.trace.propagate {
            headers.extend([TRACEPARENT, TRACESTATE]);
            headers.extend(B3_HEADERS);
        }
        Interest::REQUEST.with_done().with_request_headers(headers)
    }

    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
        let head = req.head();
        let noted = self.note(&head);
        if self.trace.propagate {
            let parent = context::format_traceparent(noted.trace_id, noted.span_id, noted.sampled);
            // Replaces every value: of two traceparent headers, ours alone goes on.
            let _ = req.set_header(TRACEPARENT, parent.as_str());
            match state_change(&head, &noted.trace_state) {
                StateChange::Keep => {}
                StateChange::Set(joined) => {
                    let _ = req.set_header(TRACESTATE, joined);
                }
                StateChange::Remove => {
                    req.remove_header(TRACESTATE);
                }
            }
            // Beside ours, a client's B3 would name another trace to whoever reads B3.
            for name in B3_HEADERS {
                if head.header_bytes(name).is_some() {
                    req.remove_header(name);
                }
            }
        }
        match self.reporter {
            Reporter::Source => {
                let _ = req.set_header(SOURCE_HEADER, &self.me.caller);
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
        let code = Decimal::new(summary.status.into());
        let grpc_code = grpc.map(Decimal::new);
        let grpc_failed = grpc.is_some_and(grpc_error);
        let flags = labels::response_flags(summary, facts.attempt, grpc_failed);
        let upstream = ctx.upstream_identity();
        // Only a destination's own certificate names the destination, and only a TLS
        // connection has one: most requests ask for it no more than they need it.
        let local = match self.reporter {
            Reporter::Destination if upstream.is_none() && facts.connection.tls.is_some() => {
                ctx.local_identity()
            }
            _ => None,
        };
        let [source_principal, dst_principal, policy] =
            self.principals(&facts.connection, upstream.as_deref(), local.as_deref());
        let destination_workload = match self.reporter {
            Reporter::Destination => self.me.workload.as_str(),
            Reporter::Source => facts.cluster.as_deref().unwrap_or(UNKNOWN),
        };
        let [reporter, dst_namespace, dst_canonical, dst_revision] =
            self.me.fixed.each_ref().map(String::as_str);
        // In the order of LABELS.
        let labels = [
            reporter,
            dst_namespace,
            dst_canonical,
            dst_revision,
            dst_principal,
            noted.source_workload,
            noted.source_namespace,
            source_principal,
            noted.source_canonical_service,
            noted.source_canonical_revision,
            noted.destination_service,
            destination_workload,
            facts.route.as_deref().unwrap_or(UNKNOWN),
            if noted.grpc { "grpc" } else { "http" },
            noted.method,
            code.as_str(),
            grpc_code.as_ref().map_or("", Decimal::as_str),
            &flags,
            policy,
        ];
        let failed = summary.status >= 500 || grpc_failed || !summary.complete;
        let took = match self.duration {
            DurationUnit::Milliseconds => summary.duration as f64 / 1e6,
            DurationUnit::Seconds => summary.duration as f64 / 1e9,
        };
        metrics.record(&mut self.cache.borrow_mut(), &labels, failed, took);

        if noted.sampled && noted.trace_id != (0, 0) && trace::exported() {
            self.export_span(&noted, &facts, summary, grpc, failed);
        }
    }
}

impl Telemetry {
    /// `source_principal`, `destination_principal` and `connection_security_policy`
    /// from the identities mutual TLS proved: the downstream client's (on its
    /// `connection`), the upstream's, and the one this proxy presented downstream
    /// (`local`). Identities a peer's certificate names are admitted like other
    /// client-named values; the proxy's own is not a client's to vary.
    fn principals<'a>(
        &self,
        connection: &'a Connection,
        upstream: Option<&'a str>,
        local: Option<&'a str>,
    ) -> [&'a str; 3] {
        let (secured, peer) = labels::security(connection);
        let source = peer.map_or(UNKNOWN, |id| {
            self.admit(ClientLabel::SourcePrincipal, cut(id, MAX_LABEL))
        });
        let destination = match (upstream, local, self.reporter) {
            (Some(id), _, _) => self.admit(ClientLabel::DestinationPrincipal, cut(id, MAX_LABEL)),
            (None, Some(me), Reporter::Destination) => cut(me, MAX_LABEL),
            _ => UNKNOWN,
        };
        // A source reporter's downstream is its own workload: what secures the call is
        // on the upstream side, and Istio's source reporter says `unknown`.
        let policy = match self.reporter {
            Reporter::Source => UNKNOWN,
            Reporter::Destination => secured,
        };
        [source, destination, policy]
    }

    /// Export this hop's span, with OpenTelemetry's attributes and Weft's.
    fn export_span(
        &self,
        noted: &Noted<'_>,
        facts: &Facts,
        summary: &Summary,
        grpc: Option<u32>,
        failed: bool,
    ) {
        let mut attributes: Vec<(String, String)> = vec![
            ("http.request.method".into(), noted.method.into()),
            (
                "http.response.status_code".into(),
                summary.status.to_string(),
            ),
            ("server.address".into(), noted.destination_service.into()),
            ("weft.attempts".into(), facts.attempt.to_string()),
            ("weft.responder".into(), responder(&summary.responder)),
            ("weft.reporter".into(), self.me.fixed[0].clone()),
        ];
        if let Some(w) = &self.workload {
            attributes.push(("service.name".into(), w.clone()));
        }
        if let Some(route) = &facts.route {
            attributes.push(("http.route".into(), route.clone()));
        }
        if let Some(cluster) = &facts.cluster {
            attributes.push(("weft.cluster".into(), cluster.clone()));
        }
        if let Some(endpoint) = &facts.endpoint {
            attributes.push(("server.endpoint".into(), endpoint.clone()));
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
            trace_state: (!noted.trace_state.is_empty())
                .then(|| noted.trace_state.clone().into_owned()),
        };
        trace::export(&span);
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
            grpc: true,
            method: "GET",
            destination_service: "bank",
            source_workload: "trading",
            source_namespace: "markets",
            source_canonical_service: "trading-app",
            source_canonical_revision: "v2",
            trace_state: "a=b".into(),
        };
        assert_eq!(Noted::decode(&n.encode()), Some(n));
        assert_eq!(Noted::decode(b"short"), None);
    }

    /// Largest property value the proxy keeps.
    const MAX_PROPERTY: usize = 1024;

    #[test]
    fn the_longest_note_fits_a_property() {
        let t: Telemetry = weft_sdk::from_config("{}").unwrap();
        let long = |c: char, n| c.to_string().repeat(n);
        // W3C's most: 32 members in 512 bytes.
        let members = (0..32)
            .map(|i| format!("k{i:02}={}", long('v', 11)))
            .collect::<Vec<_>>();
        let mut state = members.join(",");
        state.push_str(&long('v', context::MAX_TRACESTATE - state.len()));
        let caller = [
            long('w', 300),
            long('n', 300),
            long('c', 300),
            long('r', 300),
        ]
        .join(";");
        let head = RequestHead::new("OPTIONS", "/")
            .with_authority(&format!("{}:80", long('h', 300)))
            .with_header(SOURCE_HEADER, &caller)
            .with_header(
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .with_header(TRACESTATE, &state);
        let n = t.note(&head);
        assert_eq!(n.trace_state.len(), context::MAX_TRACESTATE, "kept whole");
        assert_eq!(n.source_canonical_revision.len(), MAX_NAME);
        let bytes = n.encode();
        assert!(bytes.len() <= MAX_PROPERTY, "{}", bytes.len());
        assert_eq!(Noted::decode(&bytes), Some(n));
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
    fn a_multibyte_char_across_a_trace_id_starts_a_fresh_trace() {
        let t: Telemetry = weft_sdk::from_config("{}").unwrap();
        let id = format!("{}é{}", "0".repeat(15), "a".repeat(15));
        assert_eq!(id.len(), 32);
        for head in [
            RequestHead::new("GET", "/")
                .with_header("traceparent", format!("00-{id}-00f067aa0ba902b7-01")),
            RequestHead::new("GET", "/").with_header("b3", format!("{id}-e457b5a2e4d86bd1-1")),
            RequestHead::new("GET", "/")
                .with_header("x-b3-traceid", &id)
                .with_header("x-b3-spanid", "a2fb4a1d1a96d312"),
        ] {
            let n = t.note(&head);
            assert_eq!(n.parent, 0, "a new trace");
            assert_ne!(n.trace_id, (0, 0));
        }
    }

    #[test]
    fn trace_headers_of_any_bytes_never_panic_and_what_is_kept_round_trips() {
        let t: Telemetry = weft_sdk::from_config("{}").unwrap();
        let span = "a2fb4a1d1a96d312";
        let mut continued = 0;
        for x in context::tests::inputs(5_000) {
            let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            for head in [
                RequestHead::new("GET", "/").with_header(TRACEPARENT, &x),
                RequestHead::new("GET", "/").with_header("b3", &x),
                RequestHead::new("GET", "/")
                    .with_header("x-b3-traceid", &x)
                    .with_header("x-b3-spanid", span)
                    .with_header("x-b3-sampled", &x),
                RequestHead::new("GET", "/")
                    .with_header(TRACEPARENT, w3c)
                    .with_header(TRACESTATE, &x),
            ] {
                let n = t.note(&head);
                assert!(n.trace_id != (0, 0) && n.span_id != 0, "{x:?}");
                if !n.trace_state.is_empty() {
                    assert_eq!(n.trace_state.as_bytes(), x, "kept as it came");
                    assert_eq!(state_change(&head, &n.trace_state), StateChange::Keep);
                }
                if n.parent == 0 {
                    continue;
                }
                continued += 1;
                // What goes on names the same trace, read by the next hop.
                let sent = context::format_traceparent(n.trace_id, n.parent, n.sampled);
                let head = RequestHead::new("GET", "/").with_header(TRACEPARENT, sent.as_str());
                let next = t.note(&head);
                assert_eq!(
                    (next.trace_id, next.parent, next.sampled),
                    (n.trace_id, n.parent, n.sampled)
                );
            }
        }
        assert!(continued > 100, "{continued}");
    }

    #[test]
    fn client_named_labels_fold_into_unknown_past_max_label_values() {
        // Natively the filter's state lives in the thread, which a single-threaded
        // test run shares between tests: start the counts afresh.
        forget_admissions();
        let t: Telemetry = weft_sdk::from_config(r#"{"max_label_values": 3}"#).unwrap();
        let head = |host: &str, caller: &str| {
            RequestHead::new("GET", "/")
                .with_authority(&format!("{host}:80"))
                .with_header(SOURCE_HEADER, caller)
        };
        let seen = |t: &Telemetry, host: &str, caller: &str| {
            let h = head(host, caller);
            let n = t.note(&h);
            (
                n.destination_service.to_owned(),
                n.source_workload.to_owned(),
            )
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        for i in 0..3 {
            let (host, caller) = (format!("h{i}"), format!("w{i}"));
            assert_eq!(seen(&t, &host, &caller), pair(&host, &caller));
        }
        for i in 3..50 {
            let (host, caller) = (format!("h{i}"), format!("w{i}"));
            assert_eq!(seen(&t, &host, &caller), pair("unknown", "unknown"));
        }
        // Admitted values keep their names; the instance remembers only those.
        assert_eq!(seen(&t, "h1", "w2"), pair("h1", "w2"));
        let admitted = t.admitted.borrow();
        let known = |l: ClientLabel| admitted.known[l as usize].len();
        assert_eq!(known(ClientLabel::DestinationService), 3);
        assert_eq!(known(ClientLabel::SourceWorkload), 3);
        drop(admitted);
        // Another instance of the filter shares the admission.
        let other: Telemetry = weft_sdk::from_config(r#"{"max_label_values": 3}"#).unwrap();
        assert_eq!(seen(&other, "h0", "w1"), pair("h0", "w1"));
        assert_eq!(seen(&other, "h99", "w99"), pair("unknown", "unknown"));
        // A configured service is no client's to name.
        let named: Telemetry =
            weft_sdk::from_config(r#"{"max_label_values": 3, "service": "bank"}"#).unwrap();
        assert_eq!(seen(&named, "h77", "w0").0, "bank");
        let err = weft_sdk::from_config::<Telemetry>(r#"{"max_label_values": 5000}"#).unwrap_err();
        assert!(err.starts_with("max_label_values:"), "{err}");
    }

    /// Natively the filter's state lives in the thread, which a single-threaded test
    /// run shares between tests: start the counts of admitted values afresh.
    fn forget_admissions() {
        for label in [
            ClientLabel::DestinationService,
            ClientLabel::SourceWorkload,
            ClientLabel::SourceNamespace,
            ClientLabel::SourceCanonicalService,
            ClientLabel::SourceCanonicalRevision,
            ClientLabel::SourcePrincipal,
            ClientLabel::DestinationPrincipal,
        ] {
            state::delete(label.keys().0);
        }
    }

    #[test]
    fn the_callers_names_come_from_its_header_bounded_like_its_workload() {
        forget_admissions();
        let t: Telemetry = weft_sdk::from_config(r#"{"max_label_values": 2}"#).unwrap();
        let seen = |caller: Option<&str>| {
            let mut head = RequestHead::new("GET", "/");
            if let Some(c) = caller {
                head = head.with_header(SOURCE_HEADER, c);
            }
            let n = t.note(&head);
            [
                n.source_workload,
                n.source_namespace,
                n.source_canonical_service,
                n.source_canonical_revision,
            ]
            .map(str::to_owned)
        };
        assert_eq!(
            seen(Some("trading;markets;trading-app;v2")),
            ["trading", "markets", "trading-app", "v2"]
        );
        // A caller that names only its workload, as before the other fields.
        assert_eq!(
            seen(Some("trading")),
            ["trading", "unknown", "trading", "latest"]
        );
        assert_eq!(seen(None), ["unknown"; 4]);
        assert_eq!(
            seen(Some(";markets")),
            ["unknown", "markets", "unknown", "unknown"]
        );
        // Each field admits its own first values; later ones are unknown.
        assert_eq!(
            seen(Some("w2;n2;c2;r2")),
            ["w2", "n2", "c2", "r2"],
            "the second of each"
        );
        assert_eq!(
            seen(Some("w3;n3;c3;r3")),
            ["unknown", "unknown", "unknown", "unknown"]
        );
        assert_eq!(
            seen(Some("trading;n3;c3;v2")),
            ["trading", "unknown", "unknown", "v2"]
        );
        // Cut at Kubernetes' bound, past which no namespace or label value goes.
        forget_admissions();
        let wide: Telemetry = weft_sdk::from_config("{}").unwrap();
        let head = RequestHead::new("GET", "/")
            .with_header(SOURCE_HEADER, format!("w;{}", "n".repeat(100)));
        assert_eq!(wide.note(&head).source_namespace, "n".repeat(MAX_NAME));
        // A control character could join two label sets in the cache: unknown.
        let head = RequestHead::new("GET", "/").with_header(SOURCE_HEADER, "w\u{1f}x;n");
        assert_eq!(wide.note(&head).source_workload, "unknown");
    }

    fn connection(peer: Option<&str>) -> Connection {
        Connection {
            peer_address: "10.0.0.1:5000".into(),
            local_address: "10.0.0.2:8443".into(),
            tls: peer.map(|id| weft_sdk::TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_128_GCM_SHA256".into(),
                sni: None,
                alpn: None,
                peer_identity: Some(id.into()),
            }),
            version: weft_sdk::HttpVersion::Http2,
        }
    }

    #[test]
    fn principals_name_what_mutual_tls_proved() {
        forget_admissions();
        let desk = "spiffe://bank.example/ns/trading/sa/desk";
        let banking = "spiffe://bank.example/ns/bank/sa/banking";
        let ledger = "spiffe://bank.example/ns/bank/sa/ledger";
        let inbound: Telemetry = weft_sdk::from_config(r#"{"max_label_values": 2}"#).unwrap();
        let mtls = connection(Some(desk));
        let clear = connection(None);
        // The caller proved desk; this proxy presented banking to it.
        assert_eq!(
            inbound.principals(&mtls, None, Some(banking)),
            [desk, banking, "mutual_tls"]
        );
        // The upstream's own proof wins over the proxy's.
        assert_eq!(
            inbound.principals(&mtls, Some(ledger), Some(banking)),
            [desk, ledger, "mutual_tls"]
        );
        assert_eq!(
            inbound.principals(&clear, None, None),
            ["unknown", "unknown", "none"]
        );
        // A source knows its callee only by what the callee proved.
        let outbound: Telemetry =
            weft_sdk::from_config(r#"{"reporter": "source", "workload": "trading"}"#).unwrap();
        assert_eq!(
            outbound.principals(&clear, Some(banking), Some(desk)),
            ["unknown", banking, "unknown"]
        );
        assert_eq!(
            outbound.principals(&clear, None, Some(desk)),
            ["unknown", "unknown", "unknown"]
        );
        // Identities a peer's certificate names are bounded like a client's names
        // (counted afresh: the filter's instances share their admissions).
        forget_admissions();
        let bounded: Telemetry = weft_sdk::from_config(r#"{"max_label_values": 2}"#).unwrap();
        for i in 0..5 {
            let id = format!("spiffe://bank.example/ns/x/sa/s{i}");
            let conn = connection(Some(&id));
            let [source, destination, _] = bounded.principals(&conn, Some(&id), None);
            let want = if i < 2 { id.as_str() } else { "unknown" };
            assert_eq!((source, destination), (want, want), "{i}");
        }
        // The proxy's own identity is not a peer's to vary, and is cut like a label.
        let long = format!("spiffe://bank.example/{}", "a".repeat(300));
        let [_, me, _] = inbound.principals(&mtls, None, Some(&long));
        assert_eq!(me.len(), MAX_LABEL);
    }

    #[test]
    fn the_proxys_own_names_and_a_qualified_service() {
        let t: Telemetry = weft_sdk::from_config(
            r#"{"workload": "reviews-v1", "namespace": "bookinfo", "canonical_service": "reviews",
                "service": "reviews", "qualify_service": true}"#,
        )
        .unwrap();
        assert_eq!(t.me.fixed, ["destination", "bookinfo", "reviews", "latest"]);
        let head = RequestHead::new("GET", "/").with_authority("x:80");
        let n = t.note(&head);
        assert_eq!(n.destination_service, "reviews.bookinfo.svc.cluster.local");
        let t: Telemetry = weft_sdk::from_config(
            r#"{"service": "reviews", "namespace": "bookinfo", "qualify_service": true,
                "cluster_domain": "corp.example"}"#,
        )
        .unwrap();
        assert_eq!(
            t.me.service.as_deref(),
            Some("reviews.bookinfo.svc.corp.example")
        );
        assert_eq!(
            t.me.fixed,
            ["destination", "bookinfo", "unknown", "unknown"]
        );
        // A bare name stays bare unless asked.
        let t: Telemetry =
            weft_sdk::from_config(r#"{"service": "reviews", "namespace": "bookinfo"}"#).unwrap();
        assert_eq!(t.me.service.as_deref(), Some("reviews"));
        for bad in [
            r#"{"service": "reviews", "qualify_service": true}"#,
            r#"{"namespace": "bookinfo", "qualify_service": true}"#,
            r#"{"service": "reviews.bookinfo", "namespace": "bookinfo", "qualify_service": true}"#,
        ] {
            let err = weft_sdk::from_config::<Telemetry>(bad).unwrap_err();
            assert!(err.starts_with("qualify_service:"), "{bad}: {err}");
        }
        let long = format!(r#"{{"namespace": "{}"}}"#, "n".repeat(MAX_NAME + 1));
        for (bad, key) in [
            (r#"{"workload": "a;b"}"#, "workload:"),
            (r#"{"canonical_revision": "v 2"}"#, "canonical_revision:"),
            (&long, "namespace:"),
        ] {
            let err = weft_sdk::from_config::<Telemetry>(bad).unwrap_err();
            assert!(err.starts_with(key), "{bad}: {err}");
        }
    }

    #[test]
    fn a_source_names_itself_to_the_callee_and_in_its_labels() {
        let t: Telemetry = weft_sdk::from_config(
            r#"{"reporter": "source", "workload": "trading", "namespace": "markets",
                "canonical_revision": "v2", "service": "bank"}"#,
        )
        .unwrap();
        assert_eq!(t.me.caller, "trading;markets;;v2");
        assert_eq!(t.me.fixed, ["source", "unknown", "unknown", "unknown"]);
        // A client's claim is no source reporter's business: its own names go.
        let head = RequestHead::new("GET", "/").with_header(SOURCE_HEADER, "mallory;x;y;z");
        let n = t.note(&head);
        assert_eq!(
            [
                n.source_workload,
                n.source_namespace,
                n.source_canonical_service,
                n.source_canonical_revision
            ],
            ["trading", "markets", "trading", "v2"]
        );
        // What the callee reads back.
        let callee: Telemetry = weft_sdk::from_config("{}").unwrap();
        let head = RequestHead::new("GET", "/").with_header(SOURCE_HEADER, &t.me.caller);
        let back = callee.note(&head);
        assert_eq!(
            [
                back.source_workload,
                back.source_namespace,
                back.source_canonical_service,
                back.source_canonical_revision
            ],
            ["trading", "markets", "trading", "v2"]
        );
        let plain: Telemetry =
            weft_sdk::from_config(r#"{"reporter": "source", "workload": "trading"}"#).unwrap();
        assert_eq!(plain.me.caller, "trading", "as before the other fields");
    }

    #[test]
    fn the_cache_keys_a_label_set_by_what_requests_set() {
        let t: Telemetry = weft_sdk::from_config(r#"{"workload": "bank"}"#).unwrap();
        let metrics = t.metrics.as_ref().unwrap();
        let mut labels = ["x"; LABELS.len()];
        for (l, fixed) in labels.iter_mut().zip(&t.me.fixed) {
            *l = fixed;
        }
        let mut cache = t.cache.borrow_mut();
        metrics.record(&mut cache, &labels, false, 0.1);
        metrics.record(&mut cache, &labels, true, 0.1);
        assert_eq!(cache.series.len(), 1);
        let r = cache.series.values().next().unwrap();
        assert!(r.requests.is_some() && r.errors.is_some() && r.duration.is_some());
        // Only the labels a request sets make the key.
        assert_eq!(cache.key, "x\u{1f}".repeat(LABELS.len() - FIXED));
        for i in FIXED..LABELS.len() {
            let mut other = labels;
            other[i] = "y";
            metrics.record(&mut cache, &other, false, 0.1);
        }
        assert_eq!(cache.series.len(), 1 + LABELS.len() - FIXED);
        // The key's buffer is reused: a request records without growing it.
        let capacity = cache.key.capacity();
        metrics.record(&mut cache, &labels, false, 0.1);
        assert_eq!(cache.key.capacity(), capacity);
    }

    #[test]
    fn one_trace_context_goes_upstream() {
        let t: Telemetry = weft_sdk::from_config("{}").unwrap();
        let a = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let b = "00-11111111111111111111111111111111-2222222222222222-01";
        let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
        let get = || RequestHead::new("GET", "/");
        // One traceparent: its tracestate goes on as it came.
        let head = get()
            .with_header(TRACEPARENT, a)
            .with_header(TRACESTATE, "vendor=x");
        let n = t.note(&head);
        assert_eq!(
            (n.trace_id.0, n.trace_state.as_ref()),
            (0x4bf92f3577b34da6, "vendor=x")
        );
        assert_eq!(state_change(&head, &n.trace_state), StateChange::Keep);
        // Two tracestate headers are one list.
        let head = get()
            .with_header(TRACEPARENT, a)
            .with_header(TRACESTATE, "a=1")
            .with_header(TRACESTATE, "b=2");
        let n = t.note(&head);
        assert_eq!(
            state_change(&head, &n.trace_state),
            StateChange::Set("a=1,b=2")
        );
        // Past W3C's bounds, or malformed, it is dropped whole.
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let long = format!("a={}", "x".repeat(300));
        for (first, second) in [(many.as_str(), None), ("a=b=c", None), (&long, Some(&long))] {
            let mut head = get()
                .with_header(TRACEPARENT, a)
                .with_header(TRACESTATE, first);
            if let Some(second) = second {
                head = head.with_header(TRACESTATE, second);
            }
            let n = t.note(&head);
            assert_eq!(n.trace_state, "");
            assert_eq!(state_change(&head, &n.trace_state), StateChange::Remove);
        }
        // Two traceparent headers: a new trace, without the tracestate or B3.
        let head = get()
            .with_header(TRACEPARENT, a)
            .with_header(TRACEPARENT, b)
            .with_header(TRACESTATE, "vendor=x")
            .with_header("b3", b3);
        let n = t.note(&head);
        assert_eq!(n.parent, 0);
        assert!(n.trace_id.0 != 0x4bf92f3577b34da6 && n.trace_id.0 != 0x1111111111111111);
        assert_eq!(state_change(&head, &n.trace_state), StateChange::Remove);
        // B3 continues a trace, but a tracestate has no traceparent to go with.
        let head = get()
            .with_header("b3", b3)
            .with_header(TRACESTATE, "vendor=x");
        let n = t.note(&head);
        assert_eq!(n.trace_id.0, 0x80f198ee56343ba8);
        assert_eq!(state_change(&head, &n.trace_state), StateChange::Remove);
        // Two b3 headers are no context either.
        let head = get().with_header("b3", b3).with_header("b3", b3);
        let n = t.note(&head);
        assert_eq!(n.parent, 0);
        // The filter reads what it removes, and nothing when it does not propagate.
        let names = t.interest().request_headers;
        for name in B3_HEADERS
            .iter()
            .chain(&[TRACEPARENT, TRACESTATE, SOURCE_HEADER])
        {
            assert!(names.iter().any(|n| n == name), "{name}");
        }
        let off: Telemetry = weft_sdk::from_config(r#"{"trace":{"propagate":false}}"#).unwrap();
        assert_eq!(
            off.interest().request_headers,
            [SOURCE_HEADER, CONTENT_TYPE]
        );
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
