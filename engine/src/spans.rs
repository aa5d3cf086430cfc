//! Spans that filters finish, queued for the proxy's exporter.
//!
//! `export-span` pushes onto a bounded lock-free queue and returns at once; the
//! proxy's exporter drains it in batches away from the request path. When nobody
//! exports (no collector configured) or the queue is full (the collector is slow or
//! down), the span is dropped and counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use std::sync::OnceLock;

use crossbeam_queue::ArrayQueue;

pub use crate::bindings::host_api::{Span, SpanKind};

/// Spans waiting for export at most; more are dropped.
pub const SPAN_QUEUE: usize = 8192;

/// The queue between filters' `export-span` and the proxy's span exporter.
pub struct SpanQueue {
    /// Made when export is first turned on: a proxy that exports nothing holds no
    /// room for spans.
    queue: OnceLock<ArrayQueue<Span>>,
    enabled: AtomicBool,
    dropped: AtomicU64,
}

impl std::fmt::Debug for SpanQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanQueue")
            .field("queued", &self.len())
            .field("enabled", &self.enabled.load(Relaxed))
            .finish()
    }
}

impl Default for SpanQueue {
    fn default() -> Self {
        Self {
            queue: OnceLock::new(),
            enabled: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }
}

impl SpanQueue {
    /// Whether an exporter takes spans.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Start or stop taking spans; stopping drops those still queued.
    pub fn set_enabled(&self, on: bool) {
        if on {
            self.queue.get_or_init(|| ArrayQueue::new(SPAN_QUEUE));
        }
        self.enabled.store(on, Relaxed);
        if !on {
            while self.pop().is_some() {}
        }
    }

    /// Queue a span; false (and counted) when it was dropped.
    pub fn push(&self, span: Span) -> bool {
        if self.enabled()
            && let Some(q) = self.queue.get()
            && q.push(span).is_ok()
        {
            return true;
        }
        self.dropped.fetch_add(1, Relaxed);
        false
    }

    /// The oldest queued span.
    pub fn pop(&self) -> Option<Span> {
        self.queue.get()?.pop()
    }

    /// Spans waiting.
    pub fn len(&self) -> usize {
        self.queue.get().map_or(0, ArrayQueue::len)
    }

    /// Whether no span waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spans dropped at the queue: none exported, or the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u64) -> Span {
        Span {
            trace_id: (1, 2),
            span_id: id,
            parent_span_id: None,
            name: "GET".into(),
            kind: SpanKind::Server,
            start: 1,
            end: 2,
            error: false,
            attributes: Vec::new(),
            trace_state: None,
        }
    }

    #[test]
    fn drops_when_off_or_full() {
        let q = SpanQueue::default();
        assert!(!q.push(span(1)));
        assert_eq!(q.dropped(), 1);
        q.set_enabled(true);
        for i in 0..SPAN_QUEUE as u64 {
            assert!(q.push(span(i + 1)));
        }
        assert!(!q.push(span(0)));
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.pop().map(|s| s.span_id), Some(1));
        q.set_enabled(false);
        assert!(q.is_empty());
    }
}
