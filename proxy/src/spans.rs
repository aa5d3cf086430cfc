//! The span exporter: drains the spans filters finished and sends them in batches to
//! an OpenTelemetry collector over OTLP/gRPC, on its own task.
//!
//! The request path only pushes onto the engine's bounded queue; this task is the
//! only one that waits on the network. A collector that is down or slow costs
//! requests nothing: its batches fail or time out here and are counted as dropped,
//! and while an export waits, spans past the queue's room are dropped at the push.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use weft_engine::{SpanKind, SpanQueue};

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExportSettings {
    pub(crate) collector: String,
    pub(crate) service_name: String,
    pub(crate) batch: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) timeout: Duration,
}

impl ExportSettings {
    pub(crate) fn from_config(t: &weft_config::TracingConfig) -> Self {
        Self {
            collector: t.collector.value.clone(),
            service_name: t.service_name.clone(),
            batch: t.batch,
            flush_interval: t.flush_interval.0,
            timeout: t.timeout.0,
        }
    }
}

/// What the exporter did, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ExportStats {
    pub(crate) exported: AtomicU64,
    /// Spans of batches the collector did not take (down, slow, or refusing).
    pub(crate) failed: AtomicU64,
}

/// Export spans while `settings` names a collector, until `stop` turns true; then
/// send what is queued once more and return.
pub(crate) async fn run(
    spans: Arc<SpanQueue>,
    mut settings: watch::Receiver<Option<ExportSettings>>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<ExportStats>,
) {
    let mut client: Option<(String, TraceServiceClient<Channel>)> = None;
    let mut last_round = false;
    while !last_round {
        let current = settings.borrow_and_update().clone();
        let Some(s) = current else {
            client = None;
            tokio::select! {
                _ = settings.changed() => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(s.flush_interval) => {}
            _ = settings.changed() => continue,
            _ = stop.wait_for(|s| *s) => last_round = true,
        }
        if client.as_ref().is_none_or(|(c, _)| *c != s.collector) {
            client = channel(&s).map(|ch| (s.collector.clone(), TraceServiceClient::new(ch)));
        }
        let Some((_, c)) = client.as_mut() else {
            // An address tonic cannot use (checked in the config, so rare): drop.
            let mut n = 0;
            while spans.pop().is_some() {
                n += 1;
            }
            stats.failed.fetch_add(n, Relaxed);
            continue;
        };
        // Send what is queued now, a batch at a time; what comes meanwhile waits
        // for the next tick.
        let mut left = spans.len();
        while left > 0 {
            let batch: Vec<weft_engine::Span> = std::iter::from_fn(|| spans.pop())
                .take(s.batch.min(left))
                .collect();
            if batch.is_empty() {
                break;
            }
            left = left.saturating_sub(batch.len());
            let n = batch.len() as u64;
            let request = tonic::Request::new(to_otlp(batch, &s.service_name));
            match tokio::time::timeout(s.timeout, c.export(request)).await {
                Ok(Ok(_)) => {
                    stats.exported.fetch_add(n, Relaxed);
                }
                Ok(Err(status)) => {
                    stats.failed.fetch_add(n, Relaxed);
                    tracing::debug!(collector = %s.collector, %status, spans = n, "span export failed");
                }
                Err(_) => {
                    stats.failed.fetch_add(n, Relaxed);
                    tracing::debug!(collector = %s.collector, spans = n, "span export timed out");
                }
            }
        }
    }
}

fn channel(s: &ExportSettings) -> Option<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{}", s.collector)).ok()?;
    Some(
        endpoint
            .connect_timeout(Duration::from_secs(1))
            .timeout(s.timeout)
            .connect_lazy(),
    )
}

fn text(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Group spans by the service they name (`service.name` attribute, else the
/// configured one) into one OTLP request.
fn to_otlp(batch: Vec<weft_engine::Span>, default_service: &str) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for s in batch {
        let mut service = None;
        let mut attributes = Vec::with_capacity(s.attributes.len());
        for (k, v) in s.attributes {
            if k == "service.name" {
                service = Some(v);
            } else {
                attributes.push(text(k, v));
            }
        }
        let mut trace_id = Vec::with_capacity(16);
        trace_id.extend_from_slice(&s.trace_id.0.to_be_bytes());
        trace_id.extend_from_slice(&s.trace_id.1.to_be_bytes());
        let kind = match s.kind {
            SpanKind::Server => span::SpanKind::Server,
            SpanKind::Client => span::SpanKind::Client,
            SpanKind::Internal => span::SpanKind::Internal,
        };
        let otlp = Span {
            trace_id,
            span_id: s.span_id.to_be_bytes().to_vec(),
            trace_state: s.trace_state.unwrap_or_default(),
            parent_span_id: s
                .parent_span_id
                .map(|p| p.to_be_bytes().to_vec())
                .unwrap_or_default(),
            // Sampled (W3C flag 01), and whether the parent came from another process
            // is not known here.
            flags: 1,
            name: s.name,
            kind: kind as i32,
            start_time_unix_nano: s.start,
            end_time_unix_nano: s.end.max(s.start),
            attributes,
            status: s.error.then(|| Status {
                code: status::StatusCode::Error as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        (by_service.entry(service.unwrap_or_else(|| default_service.to_owned())))
            .or_default()
            .push(otlp);
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weft".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}
