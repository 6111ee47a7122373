//! Flow control per process (SPEC section 13): the output window of each process on one connection, the client's acknowledgements, and the wait of a push for room.
//!
//! A push of a process waits here, inside the connection's event sink, while that
//! process's window is full. Core holds the process's emitter lock across the push, so
//! the wait stops the reading of exactly that process's output; other processes and
//! every response keep flowing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use exec_server_core::{Event, lock};
use tokio::sync::Notify;

/// At most this many ranges of unacknowledged output are remembered per process. Past
/// it, neighbouring ranges are merged in pairs: an acknowledgement that ends inside a
/// merged range credits only the ranges before it until a later one covers the whole
/// range, so the window errs on the side of holding back (by at most a range, about
/// `2 × window / MAX_RANGES` bytes) and memory per process stays bounded whatever the
/// size of the chunks.
const MAX_RANGES: usize = 1024;

/// The window of one process.
struct Window {
    /// Tells apart two processes that used the same `processId` one after the other.
    generation: u64,
    /// Seq of the last event pushed (0: none yet on this connection).
    last_pushed: u64,
    /// Everything up to this seq is acknowledged (never beyond `last_pushed`).
    acked: u64,
    /// Output bytes pushed and not acknowledged.
    unacked: u64,
    /// The pushed, unacknowledged output: (last seq of the range, its bytes), oldest first.
    ranges: VecDeque<(u64, u64)>,
    /// Wakes the push waiting for this window (there is at most one: core pushes one
    /// event of a process at a time).
    opened: Arc<Notify>,
}

impl Window {
    fn new(generation: u64) -> Self {
        Window {
            generation,
            last_pushed: 0,
            acked: 0,
            unacked: 0,
            ranges: VecDeque::new(),
            opened: Arc::new(Notify::new()),
        }
    }

    fn record(&mut self, seq: u64, bytes: u64) {
        self.last_pushed = seq;
        if bytes == 0 {
            return;
        }
        if self.ranges.len() >= MAX_RANGES {
            let old = std::mem::take(&mut self.ranges);
            let mut old = old.into_iter();
            while let Some((first_end, first_bytes)) = old.next() {
                match old.next() {
                    Some((end, bytes)) => self.ranges.push_back((end, first_bytes + bytes)),
                    None => self.ranges.push_back((first_end, first_bytes)),
                }
            }
        }
        self.ranges.push_back((seq, bytes));
        self.unacked += bytes;
    }

    /// Credits what `seq` acknowledges; returns whether anything changed.
    fn ack(&mut self, seq: u64) -> bool {
        // Beyond the last pushed event: everything pushed so far.
        let seq = seq.min(self.last_pushed);
        if seq <= self.acked {
            return false;
        }
        self.acked = seq;
        while let Some(&(end, bytes)) = self.ranges.front()
            && end <= seq
        {
            self.ranges.pop_front();
            self.unacked -= bytes;
        }
        true
    }
}

#[derive(Default)]
struct Inner {
    windows: HashMap<String, Window>,
    next_generation: u64,
    /// Windows no longer hold anything back (the input ended, or `session/close`).
    lifted: bool,
}

/// The windows of every process pushed on one connection that was granted flow control.
pub(crate) struct Windows {
    /// The window granted, in bytes.
    bytes: u64,
    inner: Mutex<Inner>,
}

/// The raw output bytes an event counts for (the same for JSON and binary frames).
fn event_bytes(event: &Event) -> u64 {
    match event {
        Event::Output(n) => n.chunk.len() as u64,
        Event::Exited(_) | Event::Closed(_) => 0,
    }
}

impl Windows {
    pub(crate) fn new(bytes: u64) -> Arc<Self> {
        Arc::new(Windows {
            bytes,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Waits until `event` may be pushed (its process's unacknowledged output is below the
    /// window, or windows were lifted) and counts it as pushed. `false`: do not push it,
    /// its process was forgotten while it waited.
    ///
    /// A process's window ends with its `closed` event. An event whose seq does not follow
    /// the last one pushed under its `processId` belongs to a new process that reuses the
    /// id: it starts a fresh window.
    pub(crate) async fn admit(&self, event: &Event) -> bool {
        let process_id = event.process_id();
        let seq = event.seq();
        let last = matches!(event, Event::Closed(_));
        let mut mine: Option<(u64, Arc<Notify>)> = None;
        let mut stalled = false;
        loop {
            let opened = {
                let mut guard = self.lock();
                let inner = &mut *guard;
                if inner.lifted {
                    if last {
                        inner.windows.remove(process_id);
                    }
                    return true;
                }
                let window = match &mine {
                    None => {
                        let fresh = inner
                            .windows
                            .get(process_id)
                            .is_none_or(|w| seq <= w.last_pushed);
                        if fresh {
                            inner.next_generation += 1;
                            let window = Window::new(inner.next_generation);
                            if let Some(old) = inner.windows.insert(process_id.to_owned(), window) {
                                // A push of the old process still waiting gives up.
                                old.opened.notify_one();
                            }
                        }
                        let Some(window) = inner.windows.get_mut(process_id) else {
                            return true;
                        };
                        mine = Some((window.generation, window.opened.clone()));
                        window
                    }
                    Some((generation, _)) => match inner.windows.get_mut(process_id) {
                        Some(window) if window.generation == *generation => window,
                        // Forgotten, or replaced by a new process under the same id.
                        _ => return false,
                    },
                };
                if window.unacked < self.bytes {
                    window.record(seq, event_bytes(event));
                    if last {
                        inner.windows.remove(process_id);
                    }
                    return true;
                }
                window.opened.clone()
            };
            if !stalled {
                stalled = true;
                exec_server_metrics::metrics().window_stalls.inc();
            }
            // A wake-up between the unlock and this wait is kept as a permit: none is lost.
            opened.notified().await;
        }
    }

    /// `process/ack`: every output event of `process_id` up to `seq` was consumed. An ack
    /// that does not move forward, or names a process without a window, changes nothing.
    pub(crate) fn ack(&self, process_id: &str, seq: u64) {
        let mut inner = self.lock();
        if let Some(window) = inner.windows.get_mut(process_id)
            && window.ack(seq)
            && window.unacked < self.bytes
        {
            window.opened.notify_one();
        }
    }

    /// The session forgot `process_id`: a push of it still waiting gives up, and its window
    /// is gone (an ack naming it changes nothing).
    pub(crate) fn forgotten(&self, process_id: &str) {
        if let Some(window) = self.lock().windows.remove(process_id) {
            window.opened.notify_one();
        }
    }

    /// From now on nothing is held back: every waiting push goes out, and later ones do
    /// not wait (no acknowledgement can come any more, or the client is closing its
    /// session and wants the last events).
    pub(crate) fn lift(&self) {
        let mut inner = self.lock();
        inner.lifted = true;
        for window in inner.windows.values() {
            window.opened.notify_one();
        }
    }

    /// The unacknowledged output bytes of `process_id` (tests).
    #[cfg(test)]
    fn unacked(&self, process_id: &str) -> Option<u64> {
        self.lock().windows.get(process_id).map(|w| w.unacked)
    }
}

#[cfg(test)]
mod tests {
    use exec_server_protocol::{
        Base64Bytes, ProcessClosedNotification, ProcessExitedNotification,
        ProcessOutputNotification, Stream,
    };

    use super::*;

    fn output(id: &str, seq: u64, len: usize) -> Event {
        Event::Output(ProcessOutputNotification {
            process_id: id.into(),
            seq,
            stream: Stream::Stdout,
            chunk: Base64Bytes::from(vec![b'x'; len]),
        })
    }

    fn exited(id: &str, seq: u64) -> Event {
        Event::Exited(ProcessExitedNotification {
            process_id: id.into(),
            seq,
            exit_code: 0,
            signal: None,
            timed_out: false,
        })
    }

    fn closed(id: &str, seq: u64) -> Event {
        Event::Closed(ProcessClosedNotification {
            process_id: id.into(),
            seq,
            timed_out: false,
        })
    }

    /// Polls `admit` once: `Some(allowed)` when it finished, `None` while it waits.
    async fn poll_once(fut: &mut std::pin::Pin<&mut impl Future<Output = bool>>) -> Option<bool> {
        match futures::poll!(fut.as_mut()) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn the_crossing_chunk_goes_whole_then_pushes_wait_for_an_ack() {
        let w = Windows::new(100);
        assert!(w.admit(&output("p", 1, 60)).await);
        // 60 < 100: this one goes, whole, and crosses the window.
        assert!(w.admit(&output("p", 2, 60)).await);
        assert_eq!(w.unacked("p"), Some(120));
        let next_event = output("p", 3, 1);
        let next = w.admit(&next_event);
        tokio::pin!(next);
        assert_eq!(poll_once(&mut next).await, None);
        // Another process is not held back.
        assert!(w.admit(&output("q", 1, 500)).await);
        // An ack of seq 1 leaves 60 unacked: below the window, the push goes.
        w.ack("p", 1);
        assert!(next.await);
        assert_eq!(w.unacked("p"), Some(61));
    }

    #[tokio::test]
    async fn exited_and_closed_wait_too_and_closed_ends_the_window() {
        let w = Windows::new(100);
        assert!(w.admit(&output("p", 1, 100)).await);
        let exit_event = exited("p", 2);
        let exit = w.admit(&exit_event);
        tokio::pin!(exit);
        assert_eq!(poll_once(&mut exit).await, None);
        w.ack("p", 1);
        assert!(exit.await);
        assert!(w.admit(&closed("p", 3)).await);
        assert_eq!(w.unacked("p"), None, "closed ends the window");
    }

    #[tokio::test]
    async fn stale_unknown_and_future_acks() {
        let w = Windows::new(100);
        assert!(w.admit(&output("p", 1, 50)).await);
        assert!(w.admit(&output("p", 2, 50)).await);
        w.ack("nobody", 2);
        w.ack("p", 0);
        assert_eq!(w.unacked("p"), Some(100));
        w.ack("p", 1);
        assert_eq!(w.unacked("p"), Some(50));
        // Not forward: nothing changes.
        w.ack("p", 1);
        assert_eq!(w.unacked("p"), Some(50));
        // Beyond the last pushed: everything pushed so far...
        w.ack("p", 1000);
        assert_eq!(w.unacked("p"), Some(0));
        // ... and no more: a later push counts, and acking it again moves forward.
        assert!(w.admit(&output("p", 3, 100)).await);
        assert_eq!(w.unacked("p"), Some(100));
        w.ack("p", 1000);
        assert_eq!(w.unacked("p"), Some(0));
    }

    #[tokio::test]
    async fn a_forgotten_process_gives_up_its_waiting_push_and_a_new_one_starts_afresh() {
        let w = Windows::new(100);
        assert!(w.admit(&output("p", 1, 100)).await);
        let close_event = closed("p", 2);
        let close = w.admit(&close_event);
        tokio::pin!(close);
        assert_eq!(poll_once(&mut close).await, None);
        w.forgotten("p");
        assert!(!close.await);
        w.ack("p", 1);
        assert_eq!(w.unacked("p"), None);
        // A new process under the same id: a fresh window.
        assert!(w.admit(&output("p", 1, 10)).await);
        assert_eq!(w.unacked("p"), Some(10));
    }

    #[tokio::test]
    async fn a_reused_id_replaces_a_stuck_window() {
        let w = Windows::new(100);
        assert!(w.admit(&output("p", 1, 60)).await);
        assert!(w.admit(&output("p", 2, 60)).await);
        let old_event = closed("p", 3);
        let old = w.admit(&old_event);
        tokio::pin!(old);
        assert_eq!(poll_once(&mut old).await, None);
        // seq 1 again: another process under this id.
        assert!(w.admit(&output("p", 1, 5)).await);
        assert!(!old.await);
        assert_eq!(w.unacked("p"), Some(5));
    }

    #[tokio::test]
    async fn lifting_releases_every_wait() {
        let w = Windows::new(100);
        assert!(w.admit(&output("p", 1, 100)).await);
        let next_event = output("p", 2, 100);
        let next = w.admit(&next_event);
        tokio::pin!(next);
        assert_eq!(poll_once(&mut next).await, None);
        w.lift();
        assert!(next.await);
        assert!(w.admit(&output("p", 3, 100)).await);
        assert!(w.admit(&closed("p", 4)).await);
    }

    #[test]
    fn ranges_stay_bounded_and_credit_conservatively() {
        let pushed = 10 * MAX_RANGES as u64;
        let fill = |window: &mut Window| {
            for seq in 1..=pushed {
                window.record(seq, 1);
                assert!(window.ranges.len() <= MAX_RANGES);
            }
            assert_eq!(window.unacked, pushed);
        };
        // An ack of everything pushed is exact.
        let mut whole = Window::new(1);
        fill(&mut whole);
        assert!(whole.ack(pushed));
        assert_eq!(whole.unacked, 0);
        assert!(whole.ranges.is_empty());
        // An ack in the middle of a merged range credits less than it covers, never more,
        // and a later ack of the rest is exact again.
        let mut half = Window::new(2);
        fill(&mut half);
        assert!(half.ack(pushed / 2 + 1));
        assert!(
            half.unacked >= pushed - (pushed / 2 + 1),
            "{}",
            half.unacked
        );
        assert!(half.unacked < pushed, "{}", half.unacked);
        assert!(half.ack(pushed));
        assert_eq!(half.unacked, 0);
    }
}
