//! The proxy's own metrics on `/metrics`. Most are read when Prometheus scrapes, from
//! the state the request path keeps anyway (endpoint load, latency, health, pools):
//! they cost a request nothing. Counting connections costs two relaxed increments per
//! connection, bytes one per read or write on a client connection, and retries one
//! per retry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::cluster::balance::EndpointReport;
use crate::cluster::{Cluster, ClusterReport};
use crate::conn::ConnCounts;
use crate::state::Bound;

/// Everything the proxy itself exports.
pub(crate) struct ProxyMetrics {
    pub(crate) listeners: Arc<Mutex<Vec<Bound>>>,
    /// The config server's snapshot version in force; 0 for a file's config.
    pub(crate) version: Arc<AtomicU64>,
    /// The spans filters finished, waiting for export.
    pub(crate) spans: Arc<weft_engine::SpanQueue>,
    pub(crate) span_stats: Arc<crate::spans::ExportStats>,
}

impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyMetrics").finish_non_exhaustive()
    }
}

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

/// Write one family: `series` gives each label set and value.
fn family<const N: usize, V>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(Labels<'_, N>, V)],
    write: impl Fn(&mut prometheus_client::encoding::MetricEncoder<'_>, &V) -> std::fmt::Result,
) -> std::fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        write(&mut metric.encode_family(labels)?, value)?;
    }
    Ok(())
}

fn counters<const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels<'_, N>, u64)],
) -> std::fmt::Result {
    family(encoder, name, help, MetricType::Counter, series, |m, v| {
        m.encode_counter::<NoLabelSet, _, u64>(v, None)
    })
}

fn gauges<const N: usize, V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels<'_, N>, V)],
) -> std::fmt::Result {
    family(encoder, name, help, MetricType::Gauge, series, |m, v| {
        m.encode_gauge(v)
    })
}

/// Each listener's name with its connection counts.
type ListenerCounts = Vec<(String, Arc<ConnCounts>)>;

/// Each cluster's name, its report and its retries, by name.
type ClusterReports<'a> = [(&'a str, ClusterReport, u64)];

impl Collector for ProxyMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.config_version(&mut encoder)?;
        self.span_export(&mut encoder)?;
        let (listeners, clusters) = self.in_force();
        listener_series(&mut encoder, &listeners)?;
        let reports: Vec<_> = clusters
            .iter()
            .map(|c| (c.name(), c.report(), c.retries()))
            .collect();
        cluster_series(&mut encoder, &reports)?;
        endpoint_series(&mut encoder, &reports)
    }
}

impl ProxyMetrics {
    fn config_version(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let version = self.version.load(Ordering::Acquire);
        encoder
            .encode_descriptor(
                "weft_config_version",
                "The config server's snapshot version in force; 0 for a configuration file.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&version)
    }

    fn span_export(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let exported = self.span_stats.exported.load(Ordering::Relaxed);
        encoder
            .encode_descriptor(
                "weft_trace_spans_exported",
                "Spans the collector took.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&exported, None)?;
        let dropped = [
            ([("reason", "queue")], self.spans.dropped()),
            (
                [("reason", "export")],
                self.span_stats.failed.load(Ordering::Relaxed),
            ),
        ];
        counters(
            encoder,
            "weft_trace_spans_dropped",
            "Spans dropped: at the queue (no collector configured, or the queue was full) or in an export the collector did not take.",
            &dropped,
        )?;
        encoder
            .encode_descriptor(
                "weft_trace_spans_queued",
                "Spans waiting for export.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(self.spans.len() as u64))
    }

    /// The listeners and the clusters in force, taken under the lock once so the
    /// encoding that follows holds no lock.
    fn in_force(&self) -> (ListenerCounts, Vec<Arc<Cluster>>) {
        let (listeners, clusters) = {
            let bound = self
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let listeners: ListenerCounts = (bound.iter())
                .map(|b| (b.name.clone(), b.counts.clone()))
                .collect();
            let clusters = bound.first().map(|b| b.state.load().clusters.clone());
            (listeners, clusters)
        };
        let mut clusters: Vec<_> = clusters.iter().flat_map(|m| m.values().cloned()).collect();
        clusters.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        (listeners, clusters)
    }
}

fn listener_series(
    encoder: &mut DescriptorEncoder<'_>,
    listeners: &ListenerCounts,
) -> std::fmt::Result {
    let per_listener = |f: &dyn Fn(&ConnCounts) -> u64| -> Vec<(Labels<'_, 1>, u64)> {
        (listeners.iter())
            .map(|(name, c)| ([("listener", name.as_str())], f(c)))
            .collect()
    };
    counters(
        encoder,
        "weft_listener_connections",
        "Connections accepted.",
        &per_listener(&|c| c.accepted.load(Ordering::Relaxed)),
    )?;
    counters(
        encoder,
        "weft_listener_connections_refused",
        "Connections closed at once: the listener had max_connections open.",
        &per_listener(&|c| c.refused.load(Ordering::Relaxed)),
    )?;
    gauges(
        encoder,
        "weft_listener_connections_open",
        "Connections open now.",
        &per_listener(&|c| c.open.load(Ordering::Relaxed)),
    )?;
    counters(
        encoder,
        "weft_listener_received_bytes",
        "Bytes read from clients, after TLS; upgraded connections' included.",
        &per_listener(&|c| c.received_bytes.load(Ordering::Relaxed)),
    )?;
    counters(
        encoder,
        "weft_listener_sent_bytes",
        "Bytes written to clients, before TLS; upgraded connections' included.",
        &per_listener(&|c| c.sent_bytes.load(Ordering::Relaxed)),
    )
}

fn cluster_series(
    encoder: &mut DescriptorEncoder<'_>,
    reports: &ClusterReports<'_>,
) -> std::fmt::Result {
    let per_cluster = |f: &dyn Fn(&ClusterReport, u64) -> u64| -> Vec<(Labels<'_, 1>, u64)> {
        (reports.iter())
            .map(|(name, report, retries)| ([("cluster", *name)], f(report, *retries)))
            .collect()
    };
    gauges(
        encoder,
        "weft_cluster_requests_in_flight",
        "Requests in flight to the cluster (what max_requests limits).",
        &per_cluster(&|r, _| r.requests as u64),
    )?;
    counters(
        encoder,
        "weft_cluster_retries",
        "Attempts after the first, as filters asked.",
        &per_cluster(&|_, retries| retries),
    )
}

fn endpoint_series(
    encoder: &mut DescriptorEncoder<'_>,
    reports: &ClusterReports<'_>,
) -> std::fmt::Result {
    let endpoints: Vec<(Labels<'_, 2>, &EndpointReport)> = (reports.iter())
        .flat_map(|(name, r, _)| {
            (r.endpoints.iter())
                .map(move |e| ([("cluster", *name), ("endpoint", e.address.as_str())], e))
        })
        .collect();
    let each = |f: &dyn Fn(&EndpointReport) -> u64| {
        (endpoints.iter())
            .map(|(l, e)| (*l, f(e)))
            .collect::<Vec<_>>()
    };
    gauges(
        encoder,
        "weft_endpoint_healthy",
        "1 when the active health checks let the endpoint serve (always without checks).",
        &each(&|e| u64::from(e.healthy)),
    )?;
    gauges(
        encoder,
        "weft_endpoint_ejected",
        "1 while outlier detection keeps the endpoint out.",
        &each(&|e| u64::from(e.ejected_for_ms.is_some())),
    )?;
    counters(
        encoder,
        "weft_endpoint_ejections",
        "Times outlier detection ejected the endpoint.",
        &each(&|e| u64::from(e.ejections)),
    )?;
    gauges(
        encoder,
        "weft_endpoint_requests_in_flight",
        "Requests in flight to the endpoint.",
        &each(&|e| u64::from(e.in_flight)),
    )?;
    gauges(
        encoder,
        "weft_endpoint_latency_ewma_seconds",
        "The endpoint's latency estimate (peak EWMA) that the balancer uses.",
        &(endpoints.iter())
            .map(|(l, e)| (*l, e.ewma_ms / 1e3))
            .collect::<Vec<_>>(),
    )?;
    gauges(
        encoder,
        "weft_endpoint_idle_connections",
        "Idle HTTP/1.1 connections pooled to the endpoint.",
        &each(&|e| e.idle_connections as u64),
    )
}
