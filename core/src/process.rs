//! One process: its events (seq, retention, push), its output, stdin and exit tasks, and signals.

use std::collections::{HashSet, VecDeque};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use exec_server_protocol::{
    Base64Bytes, OutputChunk, ProcessClosedNotification, ProcessExitedNotification, ProcessInfo,
    ProcessOutputNotification, ProcessReadResult, Stream, WriteStatus,
};
use portable_pty::{MasterPty, PtySize};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use crate::session::Shared;
use crate::sink::{SinkCache, SinkHub};
use crate::spawn::{SharedFd, Spawned};
use crate::{Error, Event, sys};

/// Output is read in chunks of up to this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// How many `writeId`s a process remembers.
const WRITE_IDS_REMEMBERED: usize = 4096;

/// At exit, at most this many chunks per stream are drained before `exited` is emitted.
const DRAIN_CHUNKS_AT_EXIT: usize = 16;

/// Lock a std mutex, ignoring poisoning (no invariant spans a panic here).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait until the `Started` gate is dropped.
async fn gate_open(mut gate: watch::Receiver<()>) {
    while gate.changed().await.is_ok() {}
}

/// Control state: the child handle and stdin, guarded by one short synchronous lock.
/// Reaping and signalling both happen under it, so a group is never signalled after
/// its leader was reaped by us unnoticed (pid-reuse guard).
struct Control {
    /// `None` once reaped.
    child: Option<Child>,
    /// The stdin queue; `None` when there is no stdin or it was closed.
    stdin: Option<mpsc::UnboundedSender<Arc<[u8]>>>,
    write_ids: HashSet<String>,
    write_id_order: VecDeque<String>,
}

/// Event state visible to readers: seq counter, retention, exit and close.
struct State {
    next_seq: u64,
    chunks: VecDeque<OutputChunk>,
    retained_bytes: usize,
    evicted_bytes: u64,
    /// Highest seq of an evicted output event (0 = none).
    evicted_through: u64,
    exit: Option<(i32, Option<String>)>,
    closed: bool,
}

/// State of the emitting side, held (tokio mutex) from seq assignment until the push is done.
/// Output is read under this lock too, so the drain at exit and the stream tasks
/// never reorder a stream's bytes.
struct Emitter {
    streams: Vec<StreamSlot>,
    open_streams: usize,
    exited: bool,
    closed: bool,
    sink: SinkCache,
}

/// One output stream: its fd, its reusable read buffer, and whether it reached EOF.
struct StreamSlot {
    stream: Stream,
    fd: SharedFd,
    /// Allocated on first read, so idle processes cost no buffer; never zeroed.
    buf: Vec<u8>,
    eof: bool,
}

/// What one non-blocking read of a stream gave.
enum ReadOutcome {
    Data(Arc<[u8]>),
    Eof,
    WouldBlock,
}

impl StreamSlot {
    /// One `read(2)` into the reusable buffer; EIO (pty master after the slave closed) is EOF.
    fn read_once(
        &mut self,
        read: impl FnOnce(&mut Vec<u8>) -> std::io::Result<usize>,
    ) -> ReadOutcome {
        if self.buf.capacity() < CHUNK_BYTES {
            self.buf.reserve_exact(CHUNK_BYTES);
        }
        self.buf.clear();
        match read(&mut self.buf) {
            Ok(0) => ReadOutcome::Eof,
            // One exact-size allocation per chunk, shared by retention and the push.
            Ok(n) => ReadOutcome::Data(Arc::from(&self.buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => ReadOutcome::WouldBlock,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => ReadOutcome::Eof,
            Err(e) => {
                tracing::warn!("read {:?}: {e}", self.stream);
                ReadOutcome::Eof
            }
        }
    }
}

/// One child process of a session.
pub(crate) struct Process {
    pub id: String,
    pub pid: u32,
    pub argv: Vec<String>,
    pub tty: bool,
    /// Start order within the session, for `process/list`.
    pub order: u64,
    retain_bytes: usize,
    max_pending_stdin: usize,
    pending_stdin: Arc<AtomicUsize>,
    ctl: Mutex<Control>,
    state: Mutex<State>,
    emitter: tokio::sync::Mutex<Emitter>,
    /// Bumped after every event (readers' long poll) and when the child is reaped.
    changed: watch::Sender<()>,
    pty_master: Option<Mutex<Box<dyn MasterPty + Send>>>,
    pty_fd: Option<SharedFd>,
    /// Sending `true` once the child is reaped (shutdown waits on it).
    reaped: watch::Sender<bool>,
    session: Weak<Shared>,
}

/// Everything `Process::launch` needs besides the spawned child.
pub(crate) struct LaunchParams {
    pub id: String,
    pub argv: Vec<String>,
    pub order: u64,
    pub retain_bytes: usize,
    pub max_pending_stdin: usize,
    pub hub: Arc<SinkHub>,
    pub session: Weak<Shared>,
}

impl Process {
    /// Wrap a spawned child and start its tasks; they wait for `gate` before emitting.
    pub(crate) fn launch(
        lp: LaunchParams,
        spawned: Spawned,
        gate: &watch::Sender<()>,
    ) -> Arc<Process> {
        let Spawned {
            child,
            pid,
            outputs,
            stdin,
            pty,
        } = spawned;
        let tty = pty.is_some();
        let (pty_master, pty_fd) = match pty {
            Some(p) => (Some(Mutex::new(p.master)), Some(p.fd)),
            None => (None, None),
        };
        let pending_stdin = Arc::new(AtomicUsize::new(0));
        let (stdin_tx, stdin_task) = match stdin {
            Some(fd) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some((fd, rx)))
            }
            None => (None, None),
        };
        let proc = Arc::new(Process {
            id: lp.id,
            pid,
            argv: lp.argv,
            tty,
            order: lp.order,
            retain_bytes: lp.retain_bytes,
            max_pending_stdin: lp.max_pending_stdin,
            pending_stdin,
            ctl: Mutex::new(Control {
                child: Some(child),
                stdin: stdin_tx,
                write_ids: HashSet::new(),
                write_id_order: VecDeque::new(),
            }),
            state: Mutex::new(State {
                next_seq: 1,
                chunks: VecDeque::new(),
                retained_bytes: 0,
                evicted_bytes: 0,
                evicted_through: 0,
                exit: None,
                closed: false,
            }),
            emitter: tokio::sync::Mutex::new(Emitter {
                streams: outputs
                    .iter()
                    .map(|(stream, fd)| StreamSlot {
                        stream: *stream,
                        fd: fd.clone(),
                        buf: Vec::new(),
                        eof: false,
                    })
                    .collect(),
                open_streams: outputs.len(),
                exited: false,
                closed: false,
                sink: SinkCache::new(lp.hub),
            }),
            changed: watch::Sender::new(()),
            pty_master,
            pty_fd,
            reaped: watch::Sender::new(false),
            session: lp.session,
        });
        for (index, (_, fd)) in outputs.into_iter().enumerate() {
            tokio::spawn(read_stream(proc.clone(), index, fd, gate.subscribe()));
        }
        tokio::spawn(wait_exit(proc.clone(), gate.subscribe()));
        if let Some((fd, rx)) = stdin_task {
            tokio::spawn(write_stdin(
                fd,
                rx,
                proc.pending_stdin.clone(),
                Arc::downgrade(&proc),
            ));
        }
        proc
    }

    // ------------------------------------------------------------ events

    async fn emit_output(&self, em: &mut Emitter, stream: Stream, bytes: Arc<[u8]>) {
        let chunk = Base64Bytes::from_shared(bytes);
        em.sink.refresh();
        let seq = {
            let mut st = lock(&self.state);
            let seq = st.take_seq();
            st.retain(
                OutputChunk {
                    seq,
                    stream,
                    chunk: chunk.clone(),
                },
                self.retain_bytes,
            );
            seq
        };
        self.changed.send_replace(());
        em.sink
            .push(Event::Output(ProcessOutputNotification {
                process_id: self.id.clone(),
                seq,
                stream,
                chunk,
            }))
            .await;
    }

    async fn stream_eof(self: &Arc<Self>, em: &mut Emitter, index: usize) {
        if let Some(slot) = em.streams.get_mut(index) {
            if slot.eof {
                return;
            }
            slot.eof = true;
            slot.buf = Vec::new();
        }
        em.open_streams = em.open_streams.saturating_sub(1);
        self.maybe_close(em).await;
    }

    /// Emit what the streams already hold (a bounded amount), so output the child wrote
    /// before it exited comes before `exited` whenever the child itself held the stream.
    async fn drain_streams(self: &Arc<Self>, em: &mut Emitter) {
        for index in 0..em.streams.len() {
            for _ in 0..DRAIN_CHUNKS_AT_EXIT {
                let Some(slot) = em.streams.get_mut(index) else {
                    break;
                };
                if slot.eof {
                    break;
                }
                let fd = slot.fd.clone();
                let stream = slot.stream;
                match slot.read_once(|buf| sys::read_into(fd.get_ref(), buf)) {
                    ReadOutcome::Data(bytes) => self.emit_output(em, stream, bytes).await,
                    ReadOutcome::Eof => {
                        self.stream_eof(em, index).await;
                        break;
                    }
                    ReadOutcome::WouldBlock => break,
                }
            }
        }
    }

    async fn emit_exit(self: &Arc<Self>, exit_code: i32, signal: Option<String>) {
        let mut em = self.emitter.lock().await;
        self.drain_streams(&mut em).await;
        em.sink.refresh();
        let seq = {
            let mut st = lock(&self.state);
            st.exit = Some((exit_code, signal.clone()));
            st.take_seq()
        };
        self.changed.send_replace(());
        em.exited = true;
        em.sink
            .push(Event::Exited(ProcessExitedNotification {
                process_id: self.id.clone(),
                seq,
                exit_code,
                signal,
            }))
            .await;
        self.maybe_close(&mut em).await;
    }

    async fn maybe_close(self: &Arc<Self>, em: &mut Emitter) {
        if !em.exited || em.open_streams > 0 || em.closed {
            return;
        }
        em.closed = true;
        em.sink.refresh();
        let seq = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.take_seq()
        };
        self.changed.send_replace(());
        if let Some(shared) = self.session.upgrade() {
            shared.schedule_forget(self);
        }
        em.sink
            .push(Event::Closed(ProcessClosedNotification {
                process_id: self.id.clone(),
                seq,
            }))
            .await;
    }

    // ------------------------------------------------------------ reading

    /// Subscribe to event changes (subscribe before checking state: no lost wake-ups).
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// Whether there is an event with seq > `after_seq`, or the process is closed.
    pub(crate) fn ready(&self, after_seq: u64) -> bool {
        let st = lock(&self.state);
        st.closed || st.next_seq.saturating_sub(1) > after_seq
    }

    /// The `process/read` result for this cursor.
    pub(crate) fn read(&self, after_seq: u64, max_bytes: Option<u64>) -> ProcessReadResult {
        let st = lock(&self.state);
        let start = st.chunks.partition_point(|c| c.seq <= after_seq);
        let mut chunks = Vec::new();
        let mut total: u64 = 0;
        let mut cut = false;
        for c in st.chunks.range(start..) {
            let len = c.chunk.len() as u64;
            if let Some(max) = max_bytes
                && !chunks.is_empty()
                && total.saturating_add(len) > max
            {
                cut = true;
                break;
            }
            total = total.saturating_add(len);
            chunks.push(c.clone());
        }
        let next_seq = match (cut, chunks.last()) {
            (true, Some(last)) => last.seq + 1,
            _ => st.next_seq,
        };
        ProcessReadResult {
            chunks,
            next_seq,
            exited: st.exit.is_some(),
            exit_code: st.exit.as_ref().map(|e| e.0),
            signal: st.exit.as_ref().and_then(|e| e.1.clone()),
            closed: st.closed,
            truncated: st.evicted_through > after_seq,
            evicted_bytes: st.evicted_bytes,
            failure: None,
        }
    }

    /// The `process/list` entry.
    pub(crate) fn info(&self) -> ProcessInfo {
        let st = lock(&self.state);
        ProcessInfo {
            process_id: self.id.clone(),
            pid: self.pid,
            argv: self.argv.clone(),
            tty: self.tty,
            exited: st.exit.is_some(),
            exit_code: st.exit.as_ref().map(|e| e.0),
            signal: st.exit.as_ref().and_then(|e| e.1.clone()),
            closed: st.closed,
            next_seq: st.next_seq,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    // ------------------------------------------------------------ stdin

    /// Enqueue bytes for stdin (synchronously, so calls keep their order).
    pub(crate) fn write(
        &self,
        chunk: &Base64Bytes,
        write_id: Option<String>,
    ) -> Result<WriteStatus, Error> {
        let mut ctl = lock(&self.ctl);
        if let Some(id) = &write_id
            && ctl.write_ids.contains(id)
        {
            return Ok(WriteStatus::Accepted);
        }
        let Some(tx) = ctl.stdin.as_ref() else {
            return Ok(WriteStatus::StdinClosed);
        };
        let len = chunk.len();
        let pending = self.pending_stdin.load(Ordering::Acquire);
        if pending.saturating_add(len) > self.max_pending_stdin {
            return Err(Error::LimitReached(format!(
                "pending stdin bytes per process limit ({}) reached",
                self.max_pending_stdin
            )));
        }
        if !chunk.is_empty() {
            self.pending_stdin.fetch_add(len, Ordering::AcqRel);
            if tx.send(chunk.shared().clone()).is_err() {
                self.pending_stdin.fetch_sub(len, Ordering::AcqRel);
                ctl.stdin = None;
                return Ok(WriteStatus::StdinClosed);
            }
        }
        if let Some(id) = write_id {
            ctl.write_ids.insert(id.clone());
            ctl.write_id_order.push_back(id);
            if ctl.write_id_order.len() > WRITE_IDS_REMEMBERED
                && let Some(old) = ctl.write_id_order.pop_front()
            {
                ctl.write_ids.remove(&old);
            }
        }
        Ok(WriteStatus::Accepted)
    }

    /// Close stdin after pending writes (pipe) or write the terminal's EOF character (tty).
    pub(crate) fn close_stdin(&self) -> WriteStatus {
        let mut ctl = lock(&self.ctl);
        let Some(tx) = ctl.stdin.take() else {
            return WriteStatus::StdinClosed;
        };
        if let Some(fd) = &self.pty_fd {
            let eof: Arc<[u8]> = Arc::new([sys::veof_char(fd.get_ref().as_fd())]);
            self.pending_stdin.fetch_add(1, Ordering::AcqRel);
            if tx.send(eof).is_err() {
                self.pending_stdin.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // Dropping the sender ends the writer task after the queued bytes; for a pipe it
        // then closes the write end, so the child reads EOF.
        drop(tx);
        WriteStatus::Accepted
    }

    // ------------------------------------------------------------ exit

    /// Poll tokio's SIGCHLD/pidfd-driven wait under the control lock, so the reap and
    /// every signal to the group are serialised (pid-reuse guard). tokio keeps the
    /// reaper's state in the `Child`, so a fresh `wait()` future per poll is fine.
    fn poll_reap(&self, cx: &mut std::task::Context<'_>) -> Poll<(i32, Option<String>)> {
        let mut ctl = lock(&self.ctl);
        let Some(child) = ctl.child.as_mut() else {
            return Poll::Ready((-1, None));
        };
        let waited = {
            let wait = child.wait();
            let mut wait = std::pin::pin!(wait);
            match wait.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            }
        };
        let result = match waited {
            Ok(status) => match (status.signal(), status.code()) {
                (Some(n), _) => (128 + n, Some(sys::signal_name(n))),
                (None, Some(code)) => (code, None),
                (None, None) => (-1, None),
            },
            Err(e) => {
                tracing::warn!(process_id = %self.id, "wait failed: {e}");
                (-1, None)
            }
        };
        ctl.child = None;
        ctl.stdin = None;
        drop(ctl);
        self.reaped.send_replace(true);
        Poll::Ready(result)
    }

    /// Whether the direct child has been reaped.
    pub(crate) fn is_reaped(&self) -> bool {
        *self.reaped.borrow()
    }

    /// Wait until the child is reaped.
    pub(crate) async fn wait_reaped(&self) {
        let mut rx = self.reaped.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Wait until the `exited` event has been recorded (it may wait on a full sink).
    pub(crate) async fn wait_exit_recorded(&self) {
        loop {
            let mut rx = self.subscribe();
            if lock(&self.state).exit.is_some() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    // ------------------------------------------------------------ signals

    /// `process/signal`: to the process group, or the tty's foreground group.
    pub(crate) fn signal(&self, signal: i32) -> bool {
        let ctl = lock(&self.ctl);
        if ctl.child.is_none() {
            return false;
        }
        let pgid = match &self.pty_fd {
            Some(fd) => sys::tcgetpgrp(fd.get_ref().as_fd()).unwrap_or(self.pid as i32),
            None => self.pid as i32,
        };
        sys::killpg(pgid, signal).is_ok()
    }

    /// Signal the process group for cleanup. While the leader is not reaped the group id
    /// cannot have been reused. After the leader was reaped, the group is only signalled
    /// while some stream is still open (a group member most likely holds it, and a group
    /// with a live member keeps its id reserved). Returns whether the leader was running.
    fn kill_group(&self, signal: i32) -> bool {
        let ctl = lock(&self.ctl);
        let running = ctl.child.is_some();
        if running || !self.is_closed() {
            let _ = sys::killpg(self.pid as i32, signal);
            if let Some(fd) = &self.pty_fd {
                // Jobs a shell moved to the terminal's foreground are another group.
                if let Ok(fg) = sys::tcgetpgrp(fd.get_ref().as_fd())
                    && fg != self.pid as i32
                    && running
                {
                    let _ = sys::killpg(fg, signal);
                }
            }
        }
        running
    }

    /// `process/terminate`: SIGTERM now (SIGKILL when `grace` is zero), SIGKILL to the
    /// group after `grace` if it has not closed by then. Returns whether it was running.
    pub(crate) fn terminate(self: &Arc<Self>, grace: Duration) -> bool {
        if grace.is_zero() {
            return self.kill_group(libc::SIGKILL);
        }
        let running = self.kill_group(libc::SIGTERM);
        // A stopped group would never act on SIGTERM.
        let _ = self.running_then(|| sys::killpg(self.pid as i32, libc::SIGCONT));
        let proc = self.clone();
        tokio::spawn(async move {
            let mut rx = proc.subscribe();
            let deadline = tokio::time::Instant::now() + grace;
            while !proc.is_closed() {
                if tokio::time::timeout_at(deadline, rx.changed())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            if !proc.is_closed() {
                proc.kill_group(libc::SIGKILL);
            }
        });
        running
    }

    /// SIGKILL to the group now (session dropped without shutdown).
    pub(crate) fn kill_now(&self) {
        self.kill_group(libc::SIGKILL);
    }

    fn running_then<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let ctl = lock(&self.ctl);
        ctl.child.as_ref().map(|_| f())
    }

    // ------------------------------------------------------------ resize

    /// `process/resize`.
    pub(crate) fn resize(&self, rows: u16, cols: u16) -> Result<(), Error> {
        let Some(master) = &self.pty_master else {
            return Err(Error::InvalidRequest(format!(
                "process {:?} has no tty to resize",
                self.id
            )));
        };
        lock(master)
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| Error::Internal(format!("resize: {e}")))
    }
}

impl State {
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Keep `chunk`, evicting the oldest whole chunks beyond `limit` bytes.
    fn retain(&mut self, chunk: OutputChunk, limit: usize) {
        self.retained_bytes += chunk.chunk.len();
        self.chunks.push_back(chunk);
        while self.retained_bytes > limit {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.retained_bytes -= old.chunk.len();
            self.evicted_bytes += old.chunk.len() as u64;
            self.evicted_through = old.seq;
        }
    }
}

// ---------------------------------------------------------------- tasks

/// Read one output stream until EOF (EIO on a pty master), emitting a chunk per read.
/// The read itself happens under the emitter lock, so it waits while the sink is full.
async fn read_stream(proc: Arc<Process>, index: usize, fd: SharedFd, gate: watch::Receiver<()>) {
    gate_open(gate).await;
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(process_id = %proc.id, "poll output: {e}");
                let mut em = proc.emitter.lock().await;
                proc.stream_eof(&mut em, index).await;
                return;
            }
        };
        let mut em = proc.emitter.lock().await;
        let Some(slot) = em.streams.get_mut(index) else {
            return;
        };
        if slot.eof {
            // The drain at exit already saw EOF.
            return;
        }
        let stream = slot.stream;
        let outcome = slot.read_once(|buf| {
            match guard.try_io(|inner| sys::read_into(inner.get_ref(), buf)) {
                Ok(result) => result,
                Err(_would_block) => Err(std::io::ErrorKind::WouldBlock.into()),
            }
        });
        drop(guard);
        match outcome {
            ReadOutcome::Data(bytes) => proc.emit_output(&mut em, stream, bytes).await,
            ReadOutcome::Eof => {
                proc.stream_eof(&mut em, index).await;
                return;
            }
            ReadOutcome::WouldBlock => {}
        }
    }
}

/// Write queued stdin bytes in order; dropping the fd at the end closes a pipe's write end.
async fn write_stdin(
    fd: SharedFd,
    mut rx: mpsc::UnboundedReceiver<Arc<[u8]>>,
    pending: Arc<AtomicUsize>,
    proc: Weak<Process>,
) {
    let mut broken = false;
    while let Some(data) = rx.recv().await {
        let mut off = 0;
        while !broken && off < data.len() {
            let mut guard = match fd.writable().await {
                Ok(g) => g,
                Err(_) => {
                    broken = true;
                    break;
                }
            };
            match guard.try_io(|inner| sys::write(inner.get_ref(), &data[off..])) {
                Ok(Ok(n)) => off += n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => broken = true,
                Err(_would_block) => {}
            }
        }
        pending.fetch_sub(data.len(), Ordering::AcqRel);
        if broken {
            // The reader is gone (EPIPE) or the terminal hung up: later writes answer
            // stdinClosed instead of vanishing.
            if let Some(proc) = proc.upgrade() {
                lock(&proc.ctl).stdin = None;
            }
        }
    }
}

/// Wait for the child's exit, reap it, then (once the gate opens) emit `exited`.
async fn wait_exit(proc: Arc<Process>, gate: watch::Receiver<()>) {
    let status = std::future::poll_fn(|cx| proc.poll_reap(cx)).await;
    gate_open(gate).await;
    proc.emit_exit(status.0, status.1).await;
}
