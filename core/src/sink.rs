//! The session's current event sink, and each process's cached view of it.
//!
//! Processes never take a session-wide lock per event: each caches the sink and
//! re-reads it only when the session's generation counter has moved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::{Event, EventSink};

/// The session's current sink and a generation bumped on every attach/detach.
pub(crate) struct SinkHub {
    generation: AtomicU64,
    current: RwLock<Option<Arc<dyn EventSink>>>,
}

impl SinkHub {
    pub(crate) fn new() -> Self {
        SinkHub {
            generation: AtomicU64::new(0),
            current: RwLock::new(None),
        }
    }

    /// Replace the sink (`None` = detached).
    pub(crate) fn set(&self, sink: Option<Arc<dyn EventSink>>) {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = sink;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn snapshot(&self) -> (u64, Option<Arc<dyn EventSink>>) {
        let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
        (self.generation.load(Ordering::Acquire), cur.clone())
    }
}

/// A process's cached copy of the session's sink.
pub(crate) struct SinkCache {
    hub: Arc<SinkHub>,
    generation: u64,
    sink: Option<Arc<dyn EventSink>>,
}

impl SinkCache {
    pub(crate) fn new(hub: Arc<SinkHub>) -> Self {
        let (generation, sink) = hub.snapshot();
        SinkCache {
            hub,
            generation,
            sink,
        }
    }

    /// Pick up an attach or detach. Called before an event becomes visible in retention,
    /// so an event a reader could already see is never pushed to a sink attached later
    /// ("pushes resume with the next new event").
    pub(crate) fn refresh(&mut self) {
        if self.hub.generation.load(Ordering::Acquire) != self.generation {
            let (generation, sink) = self.hub.snapshot();
            self.generation = generation;
            self.sink = sink;
        }
    }

    /// Push `event` to the sink chosen by the last [`SinkCache::refresh`], waiting for
    /// room; a failed sink is dropped until the next attach.
    pub(crate) async fn push(&mut self, event: Event) {
        if let Some(sink) = &self.sink
            && sink.send(event).await.is_err()
        {
            self.sink = None;
        }
    }
}
