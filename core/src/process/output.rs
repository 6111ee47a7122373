//! The emitting side of a process: reading its output streams, assigning seqs, retaining
//! and pushing events, in seq order.
//!
//! One tokio mutex (the emitter) is held from reading a chunk, through seq assignment and
//! retention, to the end of the sink's `send`: events reach the sink strictly in seq
//! order, and a full sink stops that process's reads (backpressure).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use exec_server_protocol::{
    Base64Bytes, OutputChunk, ProcessClosedNotification, ProcessExitedNotification,
    ProcessOutputNotification, Stream,
};
use tokio::sync::watch;

use super::{Process, gate_open};
use crate::Event;
use crate::lock::lock;
use crate::sink::SinkCache;
use crate::spawn::SharedFd;
use crate::sys::{self, ExitStatus};

/// Output is read in chunks of up to this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// At exit, at most this many chunks per stream are drained before `exited` is emitted.
const DRAIN_CHUNKS_AT_EXIT: usize = 16;

thread_local! {
    /// A read buffer shared by every stream read on this thread, for reads whose size is
    /// not known in advance: idle processes hold no buffer of their own.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// State of the emitting side (see the module docs).
pub(super) struct Emitter {
    streams: Vec<StreamSlot>,
    open_streams: usize,
    exited: bool,
    closed: bool,
    sink: SinkCache,
}

/// One output stream: its fd until end-of-file, then nothing.
pub(super) struct StreamSlot {
    stream: Stream,
    fd: Option<SharedFd>,
    /// The last read was large: output is flowing (see [`read_chunk`]).
    flowing: bool,
}

impl StreamSlot {
    pub(super) fn new(stream: Stream, fd: SharedFd) -> Self {
        StreamSlot {
            stream,
            fd: Some(fd),
            flowing: false,
        }
    }
}

/// A read at least this large means output is flowing.
const FLOWING_BYTES: usize = 16 * 1024;

impl Emitter {
    pub(super) fn new(streams: Vec<StreamSlot>, sink: SinkCache) -> Self {
        Emitter {
            open_streams: streams.len(),
            streams,
            exited: false,
            closed: false,
            sink,
        }
    }
}

/// What one non-blocking read of a stream gave.
enum ReadOutcome {
    Data(Arc<[u8]>),
    Eof,
    WouldBlock,
}

/// One read of up to [`CHUNK_BYTES`]. While output is `flowing`, the fd is asked how much
/// it holds (`FIONREAD`) and the bytes are read straight into an allocation of that size,
/// which retention and the push then share: no copy of a large chunk. Otherwise (small,
/// interactive output, where the extra system call costs more than copying a few bytes)
/// they go through the thread's scratch buffer. `Ok(None)` is end-of-file (EIO from a pty
/// master whose slave closed counts as one).
fn read_chunk(fd: &OwnedFd, flowing: bool) -> std::io::Result<Option<Arc<[u8]>>> {
    let result = read_chunk_inner(fd, flowing);
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(None),
        other => other,
    }
}

fn read_chunk_inner(fd: &OwnedFd, flowing: bool) -> std::io::Result<Option<Arc<[u8]>>> {
    let avail = if flowing {
        sys::readable_bytes(fd).unwrap_or(0).min(CHUNK_BYTES)
    } else {
        0
    };
    if avail > 0 {
        let mut buf: Arc<[MaybeUninit<u8>]> = Arc::new_uninit_slice(avail);
        if let Some(slice) = Arc::get_mut(&mut buf) {
            let n = sys::read(fd, slice)?;
            if n == 0 {
                return Ok(None);
            }
            if n == avail {
                // SAFETY: the kernel initialised all `avail` bytes.
                return Ok(Some(unsafe { buf.assume_init() }));
            }
            // SAFETY: the kernel initialised the first n bytes.
            let read = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
            return Ok(Some(Arc::from(read)));
        }
    }
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.capacity() < CHUNK_BYTES {
            scratch.reserve_exact(CHUNK_BYTES);
        }
        let n = sys::read(fd, &mut scratch.spare_capacity_mut()[..CHUNK_BYTES])?;
        if n == 0 {
            return Ok(None);
        }
        // SAFETY: the kernel initialised the first n bytes of the spare capacity.
        let read =
            unsafe { std::slice::from_raw_parts(scratch.spare_capacity_mut().as_ptr().cast(), n) };
        Ok(Some(Arc::from(read)))
    })
}

fn outcome(result: std::io::Result<Option<Arc<[u8]>>>, stream: Stream) -> ReadOutcome {
    match result {
        Ok(Some(bytes)) => ReadOutcome::Data(bytes),
        Ok(None) => ReadOutcome::Eof,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => ReadOutcome::WouldBlock,
        Err(e) => {
            tracing::warn!("read {stream:?}: {e}");
            ReadOutcome::Eof
        }
    }
}

/// The metrics label of a stream.
fn stream_label(stream: Stream) -> exec_server_metrics::StreamLabel {
    use exec_server_metrics::StreamLabel;
    match stream {
        Stream::Stdout => StreamLabel::stdout,
        Stream::Stderr => StreamLabel::stderr,
        Stream::Pty => StreamLabel::pty,
    }
}

impl Process {
    async fn emit_output(self: &Arc<Self>, em: &mut Emitter, stream: Stream, bytes: Arc<[u8]>) {
        exec_server_metrics::metrics().output(stream_label(stream), bytes.len());
        let chunk = Base64Bytes::from_shared(bytes);
        em.sink.refresh();
        let (seq, unlisted) = {
            let mut st = lock(&self.state);
            let seq = st.take_seq();
            let unlisted = st.retained.push(OutputChunk {
                seq,
                stream,
                chunk: chunk.clone(),
            });
            (seq, unlisted)
        };
        // Outside the state lock: the pool's lock comes first.
        if unlisted {
            self.pool.list(&self.as_holder());
        }
        self.pool.enforce();
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

    /// Stream `index` reached end-of-file (or was given up): its fd is closed now.
    async fn stream_eof(self: &Arc<Self>, em: &mut Emitter, index: usize) {
        let Some(slot) = em.streams.get_mut(index) else {
            return;
        };
        if slot.fd.take().is_none() {
            return;
        }
        em.open_streams = em.open_streams.saturating_sub(1);
        self.maybe_close(em).await;
    }

    /// Emit what the streams already hold (a bounded amount), so output the child wrote
    /// before it exited comes before `exited` whenever the child itself held the stream.
    async fn drain_streams(self: &Arc<Self>, em: &mut Emitter) {
        for index in 0..em.streams.len() {
            for _ in 0..DRAIN_CHUNKS_AT_EXIT {
                let Some(slot) = em.streams.get(index) else {
                    break;
                };
                let Some(fd) = slot.fd.clone() else {
                    break;
                };
                let stream = slot.stream;
                match outcome(read_chunk(fd.get_ref(), slot.flowing), stream) {
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

    /// Record and push `exited` (`timed_out`: the deadline ended the leader), after
    /// draining what the streams already hold.
    pub(super) async fn emit_exit(self: &Arc<Self>, status: ExitStatus, timed_out: bool) {
        let mut em = self.emitter.lock().await;
        self.drain_streams(&mut em).await;
        em.sink.refresh();
        let seq = {
            let mut st = lock(&self.state);
            st.exit = Some(status.clone());
            st.take_seq()
        };
        self.changed.send_replace(());
        em.exited = true;
        em.sink
            .push(Event::Exited(ProcessExitedNotification {
                process_id: self.id.clone(),
                seq,
                exit_code: status.code,
                signal: status.signal,
                timed_out,
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
        let (seq, timed_out, forgotten) = {
            let mut st = lock(&self.state);
            st.closed = true;
            let forgotten = self.forget_when_done(&mut st);
            (st.take_seq(), st.timed_out, forgotten)
        };
        if forgotten {
            // Released: its retained output leaves the pool now.
            self.forget_output();
        } else {
            // Closed processes are evicted first.
            self.pool.closed(&self.as_holder());
        }
        self.changed.send_replace(());
        em.sink
            .push(Event::Closed(ProcessClosedNotification {
                process_id: self.id.clone(),
                seq,
                timed_out,
            }))
            .await;
    }

    /// Wait until no event of this process is being emitted: once it is closed, its
    /// `closed` event has then been handed to the sink.
    pub(crate) async fn wait_emitted(&self) {
        drop(self.emitter.lock().await);
    }

    /// Give up on every stream still open: they count as at end-of-file from now on.
    pub(super) async fn abandon_streams(self: &Arc<Self>) {
        let mut em = self.emitter.lock().await;
        for index in 0..em.streams.len() {
            self.stream_eof(&mut em, index).await;
        }
    }
}

/// Read one output stream until end-of-file, emitting a chunk per read. The read happens
/// under the emitter lock, so it waits while the sink is full. Stops early when the
/// process's streams are abandoned.
pub(super) async fn read_stream(
    proc: Arc<Process>,
    index: usize,
    fd: SharedFd,
    gate: watch::Receiver<()>,
) {
    let mut abandoned = proc.abandon.subscribe();
    tokio::select! {
        () = gate_open(gate) => {}
        _ = abandoned.wait_for(|a| *a) => return,
    }
    loop {
        let ready = tokio::select! {
            ready = fd.readable() => ready,
            _ = abandoned.wait_for(|a| *a) => return,
        };
        let mut guard = match ready {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(process_id = %proc.id, "poll output: {e}");
                let mut em = proc.emitter.lock().await;
                proc.stream_eof(&mut em, index).await;
                return;
            }
        };
        let mut em = proc.emitter.lock().await;
        let Some(slot) = em.streams.get(index) else {
            return;
        };
        if slot.fd.is_none() {
            // The drain at exit (or an abandon) already ended this stream.
            return;
        }
        let stream = slot.stream;
        let flowing = slot.flowing;
        let result = match guard.try_io(|inner| read_chunk(inner.get_ref(), flowing)) {
            Ok(result) => result,
            Err(_would_block) => Err(std::io::ErrorKind::WouldBlock.into()),
        };
        // Readiness is cleared only by a read that would block (`try_io`), never after a
        // short read: a pipe writer that was blocked on a full pipe refills it without a
        // new wake-up when the pipe was not empty, and that data would never be read.
        if let Ok(Some(bytes)) = &result
            && let Some(slot) = em.streams.get_mut(index)
        {
            slot.flowing = bytes.len() >= FLOWING_BYTES;
        }
        drop(guard);
        match outcome(result, stream) {
            ReadOutcome::Data(bytes) => proc.emit_output(&mut em, stream, bytes).await,
            ReadOutcome::Eof => {
                proc.stream_eof(&mut em, index).await;
                return;
            }
            ReadOutcome::WouldBlock => {}
        }
    }
}
