//! A process's events as the client delivers them: the event type, the lossless bounded
//! stream a consumer reads, and the per-process route that fills it (from pushes, and from
//! `process/read` when pushes could not be taken: after a resume, or before anyone listens).
//!
//! The rules a route follows:
//! - An event is queued once, in seq order; a push at or below the last queued seq is a
//!   duplicate and is skipped.
//! - While the stream's consumer is there and its queue is full, `push` waits: for a remote
//!   client that stops the socket reader (so the server's backpressure does the rest), for
//!   the local backend it stops that process's output pump.
//! - Nobody waits on a queue nobody reads: before the stream is taken, a full queue makes
//!   the route skip pushes and fetch them from the server's retention when the stream is
//!   taken; after the stream and the handle are dropped, events are discarded.
//! - A gap (a push after a resume, or after skipped pushes) is filled by a catch-up task
//!   reading from the last queued seq; pushes arriving meanwhile are held and appended
//!   after what the reads returned. What retention no longer had is reported as
//!   [`ProcessEvent::Truncated`], never hidden.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use exec_server_protocol::{ErrorCode, ProcessReadResult, Stream};
use tokio::sync::Notify;

use crate::Error;

/// One event of a process, in seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessEvent {
    /// A chunk of output.
    Output {
        /// The event's sequence number.
        seq: u64,
        /// `stdout`, `stderr`, or `pty` for a terminal.
        stream: Stream,
        /// The bytes, exactly as the process wrote them.
        chunk: Bytes,
    },
    /// The process exited. Output may still follow (a grandchild can hold its pipes).
    #[non_exhaustive]
    Exited {
        /// The event's sequence number.
        seq: u64,
        /// The exit status, or 128 + n when signal n ended it.
        exit_code: i32,
        /// The name of the signal that ended it, if one did.
        signal: Option<String>,
        /// The server ended it because its timeout passed.
        timed_out: bool,
    },
    /// The process exited and all its output was delivered: the last event.
    Closed {
        /// The event's sequence number.
        seq: u64,
    },
    /// Events `first_seq..=last_seq` were evicted from the server's retention before this
    /// client could read them: that output is lost. (An exit among them is reported right
    /// after this event, with `seq: last_seq`.)
    Truncated {
        /// The first lost seq.
        first_seq: u64,
        /// The last lost seq.
        last_seq: u64,
    },
    /// The transport was lost and the client is not reconnecting on its own. The stream
    /// continues where it left off if [`crate::Client::resume`] succeeds.
    Disconnected {
        /// Why the transport was lost.
        reason: String,
    },
    /// The stream ended before the process closed (the client was closed, the session or
    /// the process is gone from the server). `None` follows.
    Failure {
        /// What happened.
        reason: String,
    },
}

impl ProcessEvent {
    /// The last seq this event accounts for (`None` for notices that are not events of the process).
    fn last_seq(&self) -> Option<u64> {
        match self {
            ProcessEvent::Output { seq, .. }
            | ProcessEvent::Exited { seq, .. }
            | ProcessEvent::Closed { seq } => Some(*seq),
            ProcessEvent::Truncated { last_seq, .. } => Some(*last_seq),
            ProcessEvent::Disconnected { .. } | ProcessEvent::Failure { .. } => None,
        }
    }

    fn weight(&self) -> usize {
        match self {
            ProcessEvent::Output { chunk, .. } => chunk.len().max(64),
            _ => 64,
        }
    }
}

/// Queue limits of one stream: `push` waits beyond either.
const MAX_QUEUED_EVENTS: usize = 1024;
const MAX_QUEUED_BYTES: usize = 2 * 1024 * 1024;

/// How far a queue may grow past its bound while its wait would hold up a call.
const HARD_QUEUED_BYTES: usize = 32 * 1024 * 1024;

/// How often a waiting push checks whether it holds up a call.
const STALL_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// Byte limit of each catch-up read once an unlimited one was refused as too large.
const CATCH_UP_READ_BYTES: u64 = 1024 * 1024;

/// Reads a process's retained events for a catch-up.
#[async_trait::async_trait]
pub(crate) trait Fetch: Send + Sync + 'static {
    /// `process/read` without waiting.
    async fn fetch(
        &self,
        process_id: &str,
        after_seq: u64,
        max_bytes: Option<u64>,
    ) -> Result<ProcessReadResult, Error>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consumer {
    /// The stream has not been taken yet.
    Waiting,
    /// An [`EventStream`] reads the queue.
    Taken,
    /// Nobody will read: the stream was dropped, or the handle was before taking it.
    Gone,
}

enum CatchUp {
    Idle,
    /// Pushes were skipped; fetch them when a consumer takes the stream.
    Needed,
    /// A catch-up task runs; pushes are held until it is done.
    Fetching {
        generation: u64,
        held: VecDeque<ProcessEvent>,
    },
}

struct RouteState {
    queue: VecDeque<ProcessEvent>,
    queued_bytes: usize,
    /// The last seq queued (or accounted for by a `Truncated`).
    last_seq: u64,
    exited: bool,
    /// `Closed` was queued: nothing follows.
    closed: bool,
    /// The stream ends once the queue is drained.
    ended: bool,
    consumer: Consumer,
    catch_up: CatchUp,
    generation: u64,
}

impl RouteState {
    fn full(&self) -> bool {
        self.queue.len() >= MAX_QUEUED_EVENTS || self.queued_bytes >= MAX_QUEUED_BYTES
    }

    fn enqueue(&mut self, event: ProcessEvent) {
        if self.consumer == Consumer::Gone {
            return;
        }
        if let Some(seq) = event.last_seq() {
            self.last_seq = self.last_seq.max(seq);
        }
        match &event {
            ProcessEvent::Exited { .. } => self.exited = true,
            ProcessEvent::Closed { .. } => self.closed = true,
            _ => {}
        }
        self.queued_bytes += event.weight();
        self.queue.push_back(event);
    }
}

/// The delivery state of one process's events.
pub(crate) struct Route {
    process_id: String,
    state: Mutex<RouteState>,
    readable: Notify,
    writable: Notify,
    fetch: Arc<dyn Fetch>,
}

impl Route {
    pub(crate) fn new(process_id: String, fetch: Arc<dyn Fetch>) -> Arc<Route> {
        Arc::new(Route {
            process_id,
            state: Mutex::new(RouteState {
                queue: VecDeque::new(),
                queued_bytes: 0,
                last_seq: 0,
                exited: false,
                closed: false,
                ended: false,
                consumer: Consumer::Waiting,
                catch_up: CatchUp::Idle,
                generation: 0,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
            fetch,
        })
    }

    fn lock(&self) -> MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether nothing more will be delivered through this route (it can be forgotten).
    pub(crate) fn finished(&self) -> bool {
        let st = self.lock();
        st.consumer == Consumer::Gone || st.closed || st.ended
    }

    /// Delivers one pushed event (output, exited or closed). Waits while a consumer's queue is
    /// full; never waits when nobody consumes.
    ///
    /// `stalled` tells whether the waiting holds up something the consumer may itself be
    /// waiting for (a remote call whose response is behind this event on the connection).
    /// Then the queue grows past its bound, up to a hard limit, instead of deadlocking; past
    /// that, pushes are skipped and read back from retention when the consumer catches up
    /// (a loss there is reported as [`ProcessEvent::Truncated`]).
    pub(crate) async fn push(
        self: &Arc<Self>,
        event: ProcessEvent,
        stalled: &(dyn Fn() -> bool + Send + Sync),
    ) {
        let Some(seq) = event.last_seq() else {
            return;
        };
        let mut event = Some(event);
        let mut stretch = false;
        loop {
            let room = self.writable.notified();
            {
                let mut st = self.lock();
                if st.consumer == Consumer::Gone || st.closed || st.ended || seq <= st.last_seq {
                    return;
                }
                match &mut st.catch_up {
                    CatchUp::Fetching { held, .. } => {
                        held.extend(event.take());
                        return;
                    }
                    CatchUp::Needed => return,
                    CatchUp::Idle => {}
                }
                if seq != st.last_seq + 1 {
                    // A gap: fill it from retention, then continue with this event.
                    let generation = self.begin_fetching(&mut st, event.take());
                    drop(st);
                    self.spawn_catch_up(generation);
                    return;
                }
                let fits = !st.full() || (stretch && st.queued_bytes < HARD_QUEUED_BYTES);
                if fits && let Some(event) = event.take() {
                    st.enqueue(event);
                    drop(st);
                    self.readable.notify_one();
                    return;
                }
                if st.consumer == Consumer::Waiting || stretch {
                    // Nobody reads yet, or the wait would deadlock: do not hold the
                    // connection; read these events back from retention later.
                    st.catch_up = CatchUp::Needed;
                    return;
                }
            }
            if !stretch && stalled() {
                // Already overdue (an earlier push found the same): no need to wait first.
                stretch = true;
                continue;
            }
            if tokio::time::timeout(STALL_CHECK, room).await.is_err() {
                stretch = stalled();
            }
        }
    }

    fn begin_fetching(&self, st: &mut RouteState, first: Option<ProcessEvent>) -> u64 {
        st.generation += 1;
        st.catch_up = CatchUp::Fetching {
            generation: st.generation,
            held: first.into_iter().collect(),
        };
        st.generation
    }

    /// Before a resume's `initialize`: hold every push from now on; [`Route::spawn_held_catch_up`]
    /// then reads what was missed. Returns the catch-up's generation (`None` if nothing will be delivered).
    pub(crate) fn hold(&self) -> Option<u64> {
        let mut st = self.lock();
        if st.consumer == Consumer::Gone || st.closed || st.ended {
            return None;
        }
        Some(self.begin_fetching(&mut st, None))
    }

    /// Starts the catch-up prepared by [`Route::hold`].
    pub(crate) fn spawn_held_catch_up(self: &Arc<Self>, generation: u64) {
        self.spawn_catch_up(generation);
    }

    fn spawn_catch_up(self: &Arc<Self>, generation: u64) {
        let route = self.clone();
        tokio::spawn(async move { route.catch_up(generation).await });
    }

    fn current(&self, st: &RouteState, generation: u64) -> bool {
        matches!(st.catch_up, CatchUp::Fetching { generation: g, .. } if g == generation)
    }

    async fn catch_up(self: Arc<Self>, generation: u64) {
        let (mut after, mut exited) = {
            let st = self.lock();
            if !self.current(&st, generation) {
                return;
            }
            (st.last_seq, st.exited)
        };
        let mut fetched: Vec<ProcessEvent> = Vec::new();
        let mut max_bytes = None;
        loop {
            let read = self.fetch.fetch(&self.process_id, after, max_bytes).await;
            let read = match read {
                Ok(read) => read,
                Err(e) if e.code() == Some(ErrorCode::LimitReached) && max_bytes.is_none() => {
                    max_bytes = Some(CATCH_UP_READ_BYTES);
                    continue;
                }
                Err(Error::Disconnected(_) | Error::Closed) => {
                    // A resume (or the end of the client) takes over from here.
                    return;
                }
                Err(e) => {
                    let mut st = self.lock();
                    if !self.current(&st, generation) {
                        return;
                    }
                    st.catch_up = CatchUp::Idle;
                    for event in fetched {
                        st.enqueue(event);
                    }
                    st.enqueue(ProcessEvent::Failure {
                        reason: format!(
                            "cannot read the missed events of process {:?}: {e}",
                            self.process_id
                        ),
                    });
                    st.ended = true;
                    drop(st);
                    self.readable.notify_one();
                    return;
                }
            };
            let (events, end, complete) = events_from_read(after, &read, exited);
            exited |= events
                .iter()
                .any(|e| matches!(e, ProcessEvent::Exited { .. }));
            fetched.extend(events);
            after = end;
            if complete {
                break;
            }
            // Cut by maxBytes: go on unless the held pushes already continue from here.
            let st = self.lock();
            let CatchUp::Fetching {
                generation: g,
                held,
            } = &st.catch_up
            else {
                return;
            };
            if *g != generation {
                return;
            }
            if held
                .front()
                .and_then(ProcessEvent::last_seq)
                .is_some_and(|s| s <= after + 1)
            {
                break;
            }
        }
        let mut st = self.lock();
        if !self.current(&st, generation) {
            return;
        }
        let CatchUp::Fetching { held, .. } = std::mem::replace(&mut st.catch_up, CatchUp::Idle)
        else {
            return;
        };
        for event in fetched {
            if event.last_seq().is_some_and(|s| s > st.last_seq) {
                st.enqueue(event);
            }
        }
        st.last_seq = st.last_seq.max(after);
        let mut held = held;
        while let Some(event) = held.pop_front() {
            let Some(seq) = event.last_seq() else {
                continue;
            };
            if seq <= st.last_seq || st.closed {
                continue;
            }
            if seq != st.last_seq + 1 {
                // Another gap (cannot happen with a conforming server): read again.
                let generation = self.begin_fetching(&mut st, Some(event));
                if let CatchUp::Fetching { held: h, .. } = &mut st.catch_up {
                    h.extend(held);
                }
                drop(st);
                self.readable.notify_one();
                self.spawn_catch_up(generation);
                return;
            }
            st.enqueue(event);
        }
        drop(st);
        self.readable.notify_one();
    }

    /// The transport was lost and no reconnect is under way: tell the consumer.
    pub(crate) fn disconnected(&self, reason: &str) {
        let mut st = self.lock();
        if st.consumer == Consumer::Gone || st.closed || st.ended {
            return;
        }
        st.enqueue(ProcessEvent::Disconnected {
            reason: reason.to_owned(),
        });
        drop(st);
        self.readable.notify_one();
    }

    /// Ends the stream (after what is queued) with a [`ProcessEvent::Failure`].
    pub(crate) fn end(&self, reason: &str) {
        let mut st = self.lock();
        if st.closed || st.ended {
            return;
        }
        st.enqueue(ProcessEvent::Failure {
            reason: reason.to_owned(),
        });
        st.ended = true;
        st.catch_up = CatchUp::Idle;
        drop(st);
        self.readable.notify_one();
        self.writable.notify_one();
    }

    /// Hands out the stream, once.
    pub(crate) fn take(self: &Arc<Self>) -> Result<EventStream, Error> {
        let mut st = self.lock();
        if st.consumer != Consumer::Waiting {
            return Err(Error::EventsTaken(self.process_id.clone()));
        }
        st.consumer = Consumer::Taken;
        if matches!(st.catch_up, CatchUp::Needed) {
            let generation = self.begin_fetching(&mut st, None);
            drop(st);
            self.spawn_catch_up(generation);
        }
        Ok(EventStream {
            route: self.clone(),
            done: false,
        })
    }

    /// The process handle is gone: if nobody took the stream, nobody ever will.
    pub(crate) fn handle_dropped(&self) {
        let mut st = self.lock();
        if st.consumer == Consumer::Waiting {
            self.gone(&mut st);
        }
    }

    fn gone(&self, st: &mut RouteState) {
        st.consumer = Consumer::Gone;
        st.queue.clear();
        st.queued_bytes = 0;
        st.catch_up = CatchUp::Idle;
        self.writable.notify_one();
    }
}

/// The events of one process, lossless and in seq order, ending after
/// [`ProcessEvent::Closed`] (or a [`ProcessEvent::Failure`]).
///
/// The stream is bounded: while it is full, a remote client stops reading its connection
/// (so the server stops reading the process's output) and the local backend stops reading
/// the process's output. Read it promptly, or drop it if you only use
/// [`crate::ExecProcess::read`]: other calls on the same connection wait behind a full stream.
pub struct EventStream {
    route: Arc<Route>,
    done: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("process_id", &self.route.process_id)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event; `None` once the process closed (or the stream failed).
    pub async fn next(&mut self) -> Option<ProcessEvent> {
        if self.done {
            return None;
        }
        loop {
            let ready = self.route.readable.notified();
            {
                let mut st = self.route.lock();
                if let Some(event) = st.queue.pop_front() {
                    st.queued_bytes -= event.weight();
                    if matches!(st.catch_up, CatchUp::Needed)
                        && st.consumer == Consumer::Taken
                        && !st.full()
                    {
                        // Pushes were skipped while this queue was over its bound.
                        let generation = self.route.begin_fetching(&mut st, None);
                        self.route.spawn_catch_up(generation);
                    }
                    if st.queue.is_empty()
                        && (matches!(event, ProcessEvent::Closed { .. }) || st.ended)
                    {
                        self.done = true;
                    }
                    drop(st);
                    self.route.writable.notify_one();
                    return Some(event);
                }
                if st.ended || st.closed {
                    self.done = true;
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Reads to the end and gathers stdout, stderr (or pty output) and the exit.
    pub async fn collect(mut self) -> Output {
        let mut out = Output::default();
        while let Some(event) = self.next().await {
            match event {
                ProcessEvent::Output { stream, chunk, .. } => match stream {
                    Stream::Stderr => out.stderr.extend_from_slice(&chunk),
                    Stream::Stdout | Stream::Pty => out.stdout.extend_from_slice(&chunk),
                },
                ProcessEvent::Exited {
                    exit_code,
                    signal,
                    timed_out,
                    ..
                } => {
                    out.exit_code = Some(exit_code);
                    out.signal = signal;
                    out.timed_out = timed_out;
                }
                ProcessEvent::Closed { .. } => out.closed = true,
                ProcessEvent::Truncated { .. } => out.truncated = true,
                ProcessEvent::Disconnected { reason } | ProcessEvent::Failure { reason } => {
                    out.failure = Some(reason);
                }
            }
        }
        out
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let mut st = self.route.lock();
        self.route.gone(&mut st);
    }
}

/// Everything a process printed, and how it ended: what [`EventStream::collect`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Output {
    /// stdout (or everything, for a tty).
    pub stdout: Vec<u8>,
    /// stderr.
    pub stderr: Vec<u8>,
    /// The exit status (128 + n for signal n), if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<String>,
    /// Whether the server ended it because its timeout passed.
    pub timed_out: bool,
    /// Whether the stream reached `Closed`.
    pub closed: bool,
    /// Whether some output was lost to retention.
    pub truncated: bool,
    /// The last disconnect or failure notice, if any.
    pub failure: Option<String>,
}

/// The events a `process/read` result covers after `after`: its chunks, and the exit and
/// close events placed at the seqs the chunks leave free. Returns them with the last seq
/// covered and whether the read covered everything the server had (not cut by `maxBytes`).
pub(crate) fn events_from_read(
    after: u64,
    read: &ProcessReadResult,
    exit_known: bool,
) -> (Vec<ProcessEvent>, u64, bool) {
    let chunks = &read.chunks;
    let complete = chunks.last().is_none_or(|c| c.seq + 1 != read.next_seq);
    let end = if complete {
        read.next_seq.saturating_sub(1).max(after)
    } else {
        chunks.last().map_or(after, |c| c.seq)
    };
    let close_seq = (complete && read.closed && end > after).then_some(end);
    let timed_out = read.timed_out;
    let mut exit =
        (read.exited && !exit_known).then(|| (read.exit_code.unwrap_or(-1), read.signal.clone()));
    let mut out = Vec::with_capacity(chunks.len() + 3);
    let mut cursor = after + 1;
    let mut lost_exit_at = None;
    if read.truncated {
        let lost_end = match chunks.first() {
            Some(c) => c.seq.saturating_sub(1),
            None => close_seq.map_or(end, |c| c - 1),
        };
        if lost_end >= cursor {
            out.push(ProcessEvent::Truncated {
                first_seq: cursor,
                last_seq: lost_end,
            });
            lost_exit_at = Some((out.len(), lost_end));
            cursor = lost_end + 1;
        }
    }
    let mut fill_gap = |out: &mut Vec<ProcessEvent>, from: u64, to: u64| {
        // Seqs from..=to hold no output: the exit (first), the close (last), nothing else.
        let mut from = from;
        if from > to {
            return;
        }
        if Some(from) != close_seq
            && let Some((exit_code, signal)) = exit.take()
        {
            out.push(ProcessEvent::Exited {
                seq: from,
                exit_code,
                signal,
                timed_out,
            });
            from += 1;
        }
        let last_unexplained = if close_seq == Some(to) {
            to.checked_sub(1)
        } else {
            Some(to)
        };
        if let Some(last) = last_unexplained
            && last >= from
        {
            out.push(ProcessEvent::Truncated {
                first_seq: from,
                last_seq: last,
            });
        }
    };
    for c in chunks {
        if c.seq < cursor {
            continue;
        }
        fill_gap(&mut out, cursor, c.seq - 1);
        out.push(ProcessEvent::Output {
            seq: c.seq,
            stream: c.stream,
            chunk: Bytes::from_owner(c.chunk.shared().clone()),
        });
        cursor = c.seq + 1;
    }
    fill_gap(&mut out, cursor, end);
    if let Some((exit_code, signal)) = exit.take()
        && let Some((index, seq)) = lost_exit_at
    {
        out.insert(
            index,
            ProcessEvent::Exited {
                seq,
                exit_code,
                signal,
                timed_out,
            },
        );
    }
    if let Some(seq) = close_seq {
        out.push(ProcessEvent::Closed { seq });
    }
    (out, end, complete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_protocol::OutputChunk;

    fn read(
        chunks: &[u64],
        next_seq: u64,
        exited: bool,
        closed: bool,
        truncated: bool,
    ) -> ProcessReadResult {
        ProcessReadResult {
            chunks: chunks
                .iter()
                .map(|&seq| OutputChunk {
                    seq,
                    stream: Stream::Stdout,
                    chunk: format!("{seq}").as_str().into(),
                })
                .collect(),
            next_seq,
            exited,
            exit_code: exited.then_some(7),
            signal: None,
            closed,
            timed_out: false,
            truncated,
            evicted_bytes: 0,
            failure: None,
        }
    }

    /// A compact picture of events: o5 = output 5, x5 = exited 5, c5 = closed, t2-4 = truncated.
    fn shape(events: &[ProcessEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                ProcessEvent::Output { seq, chunk, .. } => {
                    assert_eq!(chunk.as_ref(), seq.to_string().as_bytes());
                    format!("o{seq}")
                }
                ProcessEvent::Exited { seq, exit_code, .. } => {
                    assert_eq!(*exit_code, 7);
                    format!("x{seq}")
                }
                ProcessEvent::Closed { seq } => format!("c{seq}"),
                ProcessEvent::Truncated {
                    first_seq,
                    last_seq,
                } => format!("t{first_seq}-{last_seq}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn exit_and_close_are_placed_in_the_gaps_the_chunks_leave() {
        let (ev, end, complete) =
            events_from_read(0, &read(&[1, 2, 4], 6, true, true, false), false);
        assert_eq!(
            (shape(&ev), end, complete),
            (
                vec!["o1", "o2", "x3", "o4", "c5"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                5,
                true
            )
        );
        // Exit known already: the only gap is the close.
        let (ev, end, _) = events_from_read(3, &read(&[4], 6, true, true, false), true);
        assert_eq!((shape(&ev), end), (vec!["o4".to_string(), "c5".into()], 5));
        // Exited, not closed, exit at the end.
        let (ev, end, _) = events_from_read(1, &read(&[2], 4, true, false, false), false);
        assert_eq!((shape(&ev), end), (vec!["o2".to_string(), "x3".into()], 3));
        // Nothing new.
        let (ev, end, complete) = events_from_read(4, &read(&[], 5, false, false, false), false);
        assert_eq!((shape(&ev), end, complete), (Vec::<String>::new(), 4, true));
    }

    #[test]
    fn a_read_cut_by_max_bytes_says_so_and_places_no_close() {
        let (ev, end, complete) = events_from_read(0, &read(&[1, 2], 3, true, true, false), false);
        assert_eq!(
            (shape(&ev), end, complete),
            (vec!["o1".to_string(), "o2".into()], 2, false)
        );
    }

    #[test]
    fn evicted_events_are_reported_with_an_exit_among_them() {
        let (ev, end, _) = events_from_read(0, &read(&[8, 9], 10, false, false, true), false);
        assert_eq!(
            (shape(&ev), end),
            (vec!["t1-7".to_string(), "o8".into(), "o9".into()], 9)
        );
        // Everything evicted, exited and closed: the exit is reported after the loss.
        let (ev, end, _) = events_from_read(2, &read(&[], 10, true, true, true), false);
        assert_eq!(
            (shape(&ev), end),
            (vec!["t3-8".to_string(), "x8".into(), "c9".into()], 9)
        );
        // Exit after the retained chunks is still placed exactly.
        let (ev, _, _) = events_from_read(0, &read(&[5, 6], 9, true, true, true), false);
        assert_eq!(shape(&ev), vec!["t1-4", "o5", "o6", "x7", "c8"]);
    }
}
