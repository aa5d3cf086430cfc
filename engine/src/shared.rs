//! What one loaded filter's instances share: its name, module, metrics, state, span
//! queue and hook figures, and what it declared when it started.

use std::sync::{Arc, OnceLock};

use http::header::HeaderName;

use crate::metrics::families::FilterMetrics;
use crate::spans::SpanQueue;
use crate::state::SharedState;
use crate::stats::HookStats;

/// Per-filter things shared by all of its instances.
pub(crate) struct FilterShared {
    pub(crate) name: Arc<str>,
    pub(crate) metrics: Arc<FilterMetrics>,
    pub(crate) state: SharedState,
    /// Where `export-span` puts spans.
    pub(crate) spans: Arc<SpanQueue>,
    /// What its hooks cost and how they fail.
    pub(crate) stats: HookStats,
    /// The hex sha256 of its module, which `/metrics` and `/filters` show.
    pub(crate) digest: Arc<str>,
    /// The headers the filter named in its interest, parsed once.
    pub(crate) views: OnceLock<HeaderViews>,
}

/// The header names a filter reads through the one-call heads.
#[derive(Debug, Default)]
pub(crate) struct HeaderViews {
    pub(crate) request: Box<[HeaderName]>,
    pub(crate) response: Box<[HeaderName]>,
}

/// A cluster a filter's configuration names, as the filter declared it in `init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRef {
    /// The cluster's name.
    pub name: String,
    /// The configuration key that names it, e.g. `routes[2].cluster`.
    pub key: String,
}

impl crate::metrics::hooks::Figures for FilterShared {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn digest(&self) -> &Arc<str> {
        &self.digest
    }

    fn stats(&self) -> &HookStats {
        &self.stats
    }
}
