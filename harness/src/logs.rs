//! The filter's log lines: the engine writes them as `tracing` events under the
//! `weft::filter` target on the thread that runs the hook, so a subscriber set for
//! that thread while hooks run catches exactly them (and keeps the engine's own
//! warnings about the failure, which the run reports otherwise, off the terminal).

use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::run::LogLine;

/// Where the engine writes a filter's `log` calls.
const TARGET: &str = "weft::filter";

/// Run `f` and return what filters logged meanwhile on this thread.
pub(crate) fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<LogLine>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Lines(lines.clone()));
    let result = tracing::subscriber::with_default(subscriber, f);
    let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(PoisonError::into_inner));
    (result, lines)
}

struct Lines(Arc<Mutex<Vec<LogLine>>>);

impl<S: Subscriber> Layer<S> for Lines {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.target() == TARGET {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.target() == TARGET
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let line = LogLine {
            level: *event.metadata().level(),
            message: message.0,
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

/// The `message` field of an event (the filter's text; `filter` names it, which
/// the harness knows).
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
