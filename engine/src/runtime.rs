//! What every loaded filter keeps of its engine to start instances: the wasmtime
//! engine, where metrics and spans go, and the compiled component it came from. The
//! engine's compiler, linker and caches stay with the [`Engine`](crate::Engine).

use std::sync::Arc;
use std::time::Instant;

use crate::bindings::FilterWorldPre;
use crate::host::HostState;
use crate::metrics::{Live, MetricsHub};
use crate::spans::SpanQueue;

/// The parts of an engine its filters share.
pub(crate) struct Runtime {
    pub(crate) wasmtime: wasmtime::Engine,
    pub(crate) metrics: Arc<MetricsHub>,
    pub(crate) spans: Arc<SpanQueue>,
    /// What a filter's monotonic clock counts from.
    pub(crate) epoch_start: Instant,
}

/// A compiled component, type-checked against the filter world and ready to
/// instantiate; shared by every filter loaded from the same module.
pub(crate) struct Compiled {
    pub(crate) pre: FilterWorldPre<HostState>,
    /// Counts this component in `weft_engine_components` while it lives.
    _live: Live,
}

impl Compiled {
    pub(crate) fn new(pre: FilterWorldPre<HostState>, metrics: &MetricsHub) -> Self {
        Self {
            pre,
            _live: Live::new(&metrics.components),
        }
    }
}
