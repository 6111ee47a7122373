//! The session's current event sink, and each process's cached view of it.
//!
//! Processes never take a session-wide lock per event: each caches the sink and
//! re-reads it only when the session's generation counter has moved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::lock::{read_lock, write_lock};
use crate::{Event, EventSink};

/// The session's current sink and a generation bumped on every attach/detach.
pub(crate) struct SinkHub {
    generation: AtomicU64,
    current: RwLock<Option<Arc<dyn EventSink>>>,
    /// Wakes pushes waiting on a sink that has just been replaced.
    replaced: watch::Sender<()>,
}

impl SinkHub {
    pub(crate) fn new() -> Self {
        SinkHub {
            generation: AtomicU64::new(0),
            current: RwLock::new(None),
            replaced: watch::Sender::new(()),
        }
    }

    /// Replace the sink (`None` = detached).
    pub(crate) fn set(&self, sink: Option<Arc<dyn EventSink>>) {
        {
            let mut cur = write_lock(&self.current);
            *cur = sink;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.replaced.send_replace(());
    }

    /// Tells the current sink (if any) that the session forgot `process_id`.
    pub(crate) fn forgotten(&self, process_id: &str) {
        let sink = read_lock(&self.current).clone();
        if let Some(sink) = sink {
            sink.forgotten(process_id);
        }
    }

    fn snapshot(&self) -> (u64, Option<Arc<dyn EventSink>>) {
        let cur = read_lock(&self.current);
        (self.generation.load(Ordering::Acquire), cur.clone())
    }
}

/// A process's cached copy of the session's sink.
pub(crate) struct SinkCache {
    hub: Arc<SinkHub>,
    generation: u64,
    sink: Option<Arc<dyn EventSink>>,
    replaced: watch::Receiver<()>,
}

impl SinkCache {
    pub(crate) fn new(hub: Arc<SinkHub>) -> Self {
        let replaced = hub.replaced.subscribe();
        let (generation, sink) = hub.snapshot();
        SinkCache {
            hub,
            generation,
            sink,
            replaced,
        }
    }

    /// Pick up an attach or detach. Called before an event becomes visible in retention,
    /// so an event a reader could already see is never pushed to a sink attached later
    /// ("pushes resume with the next new event").
    pub(crate) fn refresh(&mut self) {
        if self.hub.generation.load(Ordering::Acquire) != self.generation {
            self.replaced.mark_unchanged();
            let (generation, sink) = self.hub.snapshot();
            self.generation = generation;
            self.sink = sink;
        }
    }

    /// Push `event` to the sink chosen by the last [`SinkCache::refresh`], waiting for
    /// room. A failed sink is dropped until the next attach. A push still waiting when
    /// the session's sink is replaced (detach, takeover) is abandoned: the event stays in
    /// retention and the process is not held hostage by a sink nobody drains any more.
    pub(crate) async fn push(&mut self, event: Event) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        let send = sink.send(event);
        tokio::pin!(send);
        loop {
            tokio::select! {
                biased;
                sent = &mut send => {
                    if sent.is_err() {
                        self.sink = None;
                    }
                    return;
                }
                woke = self.replaced.changed() => {
                    if woke.is_err() {
                        // Cannot happen (we hold the hub); just finish the send.
                        if (&mut send).await.is_err() {
                            self.sink = None;
                        }
                        return;
                    }
                    if self.hub.generation.load(Ordering::Acquire) != self.generation {
                        let (generation, current) = self.hub.snapshot();
                        let same = current.as_ref().is_some_and(|c| {
                            std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(&sink))
                        });
                        if !same {
                            self.sink = None;
                            return;
                        }
                        // The same sink attached again: the send stays valid.
                        self.generation = generation;
                    }
                    // Nothing that concerns this send changed: keep waiting on it.
                }
            }
        }
    }
}
