//! What the engine puts on `/metrics`: one collector, the [`MetricsHub`], over two kinds
//! of figures kept apart because they have different owners.
//!
//! - [`hooks`]: the engine's own figures about each filter's hooks (time, failures,
//!   instances), which every filter has whether it asks or not;
//! - [`families`]: the metric families filters define through `weft:filter/host`,
//!   named, labelled and bounded by the filter's configuration.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::Gauge;

pub(crate) mod families;
pub(crate) mod hooks;
#[cfg(test)]
mod tests;

pub use families::{DefinedSeries, MetricsSpec, SeriesValue};

use families::{Families, FilterMetrics};
use hooks::HookFigures;

/// Holds one in a gauge of live things for as long as the thing it belongs to lives.
pub(crate) struct Live(Gauge);

impl Live {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every filter's metrics, and the engine's own gauges; register it once as a
/// collector.
#[derive(Debug, Default)]
pub struct MetricsHub {
    /// Filter instances alive (warm in a pool or running a hook).
    pub(crate) instances: Gauge,
    /// Compiled components alive (used by at least one loaded filter).
    pub(crate) components: Gauge,
    /// Every loaded filter, for its hook figures.
    hooks: HookFigures,
    /// Every loaded filter's own metrics.
    families: Arc<Families>,
}

impl MetricsHub {
    /// Show a newly loaded filter's hook figures for as long as it is loaded.
    pub(crate) fn watch(&self, filter: &Arc<dyn hooks::Figures>) {
        self.hooks.watch(filter);
    }

    /// The metrics of a filter being loaded: those of the same filter already loaded
    /// (same name, module and metric settings), so a reload keeps counting, or new ones.
    pub(crate) fn filter_metrics(
        &self,
        filter: &str,
        digest: &str,
        spec: &MetricsSpec,
    ) -> Arc<FilterMetrics> {
        self.families.filter_metrics(filter, digest, spec)
    }

    /// Read every series of the metrics filters defined, as `/metrics` would show
    /// them (idle series dropped first). For readers off the request path, such as
    /// the report a proxy sends its config server; updates go on meanwhile.
    pub fn read_defined(&self, f: impl FnMut(&DefinedSeries<'_>)) {
        self.families.read_defined(f);
    }
}

impl Collector for MetricsHub {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, gauge) in [
            (
                "weft_engine_instances",
                "Filter instances alive, warm or running a hook.",
                &self.instances,
            ),
            (
                "weft_engine_components",
                "Compiled filter components in use.",
                &self.components,
            ),
        ] {
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        self.hooks.encode(&mut encoder)?;
        self.families.encode(&mut encoder)
    }
}
