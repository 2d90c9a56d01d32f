//! Where events go: the sending end of the channel that the runner's reporter loop reads.
//!
//! Below the fixtures, the contexts and the runner, which all emit; the events themselves
//! are plain data in `event`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::event::{Event, EventKind};

/// Where events go: one channel read by the reporters' loop.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: Option<mpsc::UnboundedSender<Event>>,
    start: Instant,
}

impl EventSink {
    pub(crate) fn new(tx: Option<mpsc::UnboundedSender<Event>>, start: Instant) -> Self {
        Self { tx, start }
    }

    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        if let Some(tx) = &self.tx {
            let timestamp_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let _ = tx.send(Event {
                timestamp_ms,
                elapsed: self.start.elapsed(),
                kind,
            });
        }
    }
}
