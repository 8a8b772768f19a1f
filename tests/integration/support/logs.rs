//! limpet's log events, captured in memory for the few checks whose only evidence is a log
//! event (limpet read a bad edit and kept the old table).
//!
//! Events are kept whole, message and fields in one string, because some carry multi-line
//! values (TOML errors quote the offending line). The subscriber is global because limpet
//! logs from tasks on any runtime thread; tests in one binary share it, so each looks only
//! for events naming its own file.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = format!("{} ", event.metadata().level());
        event.record(&mut Fields(&mut text));
        EVENTS.lock().unwrap().push(text);
    }
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={value} ", field.name());
    }
}

/// Starts capturing (once per test binary).
pub fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry()
            .with(Capture)
            .with(tracing_subscriber::filter::LevelFilter::INFO);
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other subscriber in this test binary");
    });
}

/// How many captured events contain every one of `needles`.
pub fn count(needles: &[&str]) -> usize {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|event| needles.iter().all(|n| event.contains(n)))
        .count()
}
