//! Writes the access log's lines as they are: each `weft::access` event's message is
//! one JSON object, and a line of its own.

use std::io::Write;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// A layer that writes each event's message, and a newline, to `W`.
pub(crate) struct Lines<W>(pub(crate) W);

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            // A message's Debug is its text (format arguments are not quoted).
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl<S, W> tracing_subscriber::Layer<S> for Lines<W>
where
    S: tracing::Subscriber,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut line = String::with_capacity(512);
        event.record(&mut Message(&mut line));
        line.push('\n');
        let _ = self.0.make_writer().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_message_is_a_line_of_its_own() {
        let out = Buffer::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(Lines(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let line = r#"{"status":200,"path":"/a \"b\""}"#;
            tracing::info!(target: "weft::access", "{line}");
            tracing::info!(target: "weft::access", "{}", r#"{"status":503}"#);
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "{\"status\":200,\"path\":\"/a \\\"b\\\"\"}\n{\"status\":503}\n"
        );
    }
}
