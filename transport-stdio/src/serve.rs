//! The stdio serving loop: one connection, a reader that dispatches line by line, a writer thread that drains the outbound queue.
//!
//! Ending is ordered so that no request that was read goes unanswered: stop reading
//! (end of input, `session/close` answered, or a termination signal), let the
//! connection answer everything in flight (pending long polls return at once with what
//! they have), shut the server down (every process terminated and reaped), then let the
//! writer drain every response and last event before returning.

use std::future::Future;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use exec_server_rpc::{Connection, Message, Outbound, Server};
use tokio::io::AsyncRead;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::lines::{Line, LineReader};
use crate::stdin::ThreadReader;

/// While shutting down, output that makes no progress for this long is given up (the
/// reader of our stdout is gone or stuck).
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// How often the shutdown checks the writer's progress.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// What the writer thread is doing, for the shutdown to tell a slow reader from a gone one.
struct WriterState {
    start: Instant,
    /// Milliseconds since `start` of the last message taken or write finished.
    progress_ms: AtomicU64,
    /// A write or flush is under way.
    busy: AtomicBool,
}

impl WriterState {
    fn new() -> Arc<Self> {
        Arc::new(WriterState {
            start: Instant::now(),
            progress_ms: AtomicU64::new(0),
            busy: AtomicBool::new(false),
        })
    }

    fn progress(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.progress_ms.store(now, Ordering::Relaxed);
    }

    fn since_progress(&self) -> Duration {
        let at = Duration::from_millis(self.progress_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(at)
    }

    /// A write has been blocked for longer than the deadline.
    fn stalled(&self) -> bool {
        self.busy.load(Ordering::Relaxed) && self.since_progress() > FLUSH_DEADLINE
    }
}

/// Writes every queued message as one line, flushing whenever the queue runs empty,
/// until every sender of the queue is gone or the output fails.
///
/// It runs on a thread of its own with plain blocking writes: no runtime hop per
/// write, and no line-buffering layer scanning every message for newlines.
fn write_loop<W: Write>(mut outbound: Outbound, output: W, state: &WriterState) {
    // Larger than one output message (~88 KiB): a message and its newline reach the
    // output in one write, with further queued messages, never a 1-byte write of its own.
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, output);
    let write = |out: &mut std::io::BufWriter<W>, message: &Message| {
        let Message::Text(text) = message else {
            // Never granted over stdio (the connection is opened without binary frames).
            return Err(std::io::Error::other("a binary message on stdio"));
        };
        state.busy.store(true, Ordering::Relaxed);
        let written = out
            .write_all(text.as_bytes())
            .and_then(|()| out.write_all(b"\n"));
        state.busy.store(false, Ordering::Relaxed);
        state.progress();
        written
    };
    while let Some(first) = outbound.blocking_recv() {
        state.progress();
        let mut next = Some(first);
        while let Some(message) = next {
            if let Err(e) = write(&mut out, &message) {
                tracing::warn!("cannot write to the output: {e}");
                return;
            }
            next = outbound.try_recv();
        }
        state.busy.store(true, Ordering::Relaxed);
        let flushed = out.flush();
        state.busy.store(false, Ordering::Relaxed);
        state.progress();
        if let Err(e) = flushed {
            tracing::warn!("cannot write to the output: {e}");
            return;
        }
    }
}

/// Resolves once the writer has been stuck in one write for [`FLUSH_DEADLINE`], after
/// giving the connection's output up (so nothing waits on it any more).
async fn give_up_when_stalled(state: &WriterState, connection: &Connection) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if state.stalled() {
            tracing::warn!("the output is not being read: giving up on it");
            connection.abandon_output();
            return;
        }
    }
}

/// Serves one JSON-RPC connection over `input` and `output` (one message per line)
/// until `input` ends or `shutdown` resolves. Then every request read is answered,
/// every process of the server is terminated and reaped, the last notifications are
/// written, and it returns.
pub async fn serve<R, W, S>(
    server: Arc<Server>,
    input: R,
    output: W,
    shutdown: S,
) -> Result<(), Error>
where
    R: AsyncRead + Unpin,
    W: Write + Send + 'static,
    S: Future<Output = ()>,
{
    // Lines carry text only: binary output is never granted over stdio.
    let (connection, outbound) = server.connect(false);
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let state = WriterState::new();
    {
        let state = state.clone();
        std::thread::Builder::new()
            .name("stdio-writer".into())
            .spawn(move || {
                write_loop(outbound, output, &state);
                let _ = done_tx.send(());
            })
            .map_err(Error::Writer)?;
    }
    let mut lines = LineReader::new(input, server.config().max_message_bytes);
    let stopping = CancellationToken::new();

    // Reading stops at end of input, once the session was closed, or at the signal, never
    // in the middle of handling a message: a message that was read is dispatched, so it
    // will be answered.
    let read = async {
        loop {
            let line = tokio::select! {
                biased;
                () = stopping.cancelled() => return Ok(()),
                () = connection.session_closed() => {
                    tracing::info!("session closed: ending as at end of input");
                    return Ok(());
                }
                line = lines.next_line() => line,
            };
            match line {
                Ok(Some(Line::Message(line))) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    connection.handle(&line).await;
                }
                Ok(Some(Line::TooLong)) => connection.reject_oversized(None).await,
                Ok(None) => {
                    tracing::info!("end of input");
                    return Ok(());
                }
                Err(e) => return Err(Error::Read(e)),
            }
        }
    };
    let signalled = async {
        shutdown.await;
        tracing::info!("shutting down");
        stopping.cancel();
        // Handling the message at hand may wait for the output; give it up if stuck.
        give_up_when_stalled(&state, &connection).await;
    };
    let result = tokio::select! {
        result = read => result,
        () = signalled => Ok(()),
    };

    // Answer everything in flight, then terminate and reap every process. Their last
    // events (exit, close) still reach the output.
    {
        let finishing = async {
            connection.finish().await;
            server.shutdown().await;
        };
        tokio::pin!(finishing);
        tokio::select! {
            () = &mut finishing => {}
            () = give_up_when_stalled(&state, &connection) => finishing.await,
        }
    }
    drop(connection);

    // The writer runs until every sender of the queue is gone (the connection, and each
    // process's push once its streams closed), as long as it makes progress.
    loop {
        match tokio::time::timeout(CHECK_EVERY, &mut done_rx).await {
            Ok(_) => break,
            Err(_) if state.since_progress() > FLUSH_DEADLINE => {
                tracing::warn!("the last notifications did not drain in time");
                break;
            }
            Err(_) => {}
        }
    }
    result
}

/// Asks for a 1 MiB pipe buffer when `fd` is a pipe (the most an unprivileged process
/// gets by default): an output message (~88 KiB) then fits in the pipe, so the
/// writer does not block, and wake the reader, in the middle of every message. Not a
/// pipe, or refused: nothing changes.
fn grow_pipe(fd: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int and fails
    // harmlessly (EBADF, EINVAL, EPERM) on anything that is not a pipe or over the limit.
    let _ = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

/// [`serve`] on the process's own stdin and stdout.
///
/// Input is read by a thread of its own (a pending read of stdin never delays the exit);
/// output goes to a duplicate of file descriptor 1, written directly (Rust's `Stdout`
/// would line-buffer it).
pub async fn serve_stdio<S: Future<Output = ()>>(
    server: Arc<Server>,
    shutdown: S,
) -> Result<(), Error> {
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(Error::Writer)?;
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(Error::Read)?;
    let input = ThreadReader::spawn(std::fs::File::from(stdin)).map_err(Error::Read)?;
    let stdout = std::fs::File::from(stdout);
    grow_pipe(&stdout);
    serve(server, input, stdout, shutdown).await
}
