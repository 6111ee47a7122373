//! The stdio serving loop: one connection, a reader that dispatches line by line, a writer thread that drains the outbound queue.

use std::future::Future;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use exec_server_rpc::{Message, Outbound, Server};
use tokio::io::AsyncRead;
use tokio::sync::oneshot;

use crate::Error;
use crate::lines::{Line, LineReader};

/// How long the last notifications may take to drain after shutdown.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Writes every queued message as one line, flushing whenever the queue runs empty,
/// until every sender of the queue is gone or the output fails.
///
/// It runs on a thread of its own with plain blocking writes: no runtime hop per
/// write, and no line-buffering layer scanning every message for newlines.
fn write_loop<W: Write>(mut outbound: Outbound, output: W) {
    // Larger than one output message (~88 KiB): a message and its newline reach the
    // output in one write, with further queued messages, never a 1-byte write of its own.
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, output);
    let write = |out: &mut std::io::BufWriter<W>, message: &Message| match message {
        Message::Text(text) => {
            out.write_all(text.as_bytes())?;
            out.write_all(b"\n")
        }
        // Never granted over stdio (the connection is opened without binary frames).
        Message::Binary(_) => Err(std::io::Error::other("a binary message on stdio")),
    };
    while let Some(first) = outbound.blocking_recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            if let Err(e) = write(&mut out, &message) {
                tracing::warn!("cannot write to the output: {e}");
                return;
            }
            next = outbound.try_recv();
        }
        if let Err(e) = out.flush() {
            tracing::warn!("cannot write to the output: {e}");
            return;
        }
    }
}

/// Serves one JSON-RPC connection over `input` and `output` (one message per line)
/// until `input` ends or `shutdown` resolves; then every process of the server is
/// terminated and reaped, the last notifications written, and it returns.
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
    let (done_tx, done_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("stdio-writer".into())
        .spawn(move || {
            write_loop(outbound, output);
            let _ = done_tx.send(());
        })
        .map_err(Error::Writer)?;
    let mut lines = LineReader::new(input, server.config().max_message_bytes);
    tokio::pin!(shutdown);

    let read = async {
        loop {
            match lines.next_line().await {
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
    let result = tokio::select! {
        result = read => result,
        () = &mut shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
    };

    // Terminate and reap every process. Their last events (exit, close) still reach
    // the output: the writer runs until every sender of the queue is gone (the
    // connection, and each process's push once its streams closed), within a deadline.
    server.shutdown().await;
    drop(connection);
    if tokio::time::timeout(FLUSH_DEADLINE, done_rx).await.is_err() {
        tracing::warn!("the last notifications did not drain in time");
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
/// Output goes to a duplicate of file descriptor 1, written directly (Rust's `Stdout`
/// would line-buffer it).
pub async fn serve_stdio<S: Future<Output = ()>>(
    server: Arc<Server>,
    shutdown: S,
) -> Result<(), Error> {
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(Error::Writer)?;
    let stdout = std::fs::File::from(stdout);
    grow_pipe(&stdout);
    serve(server, tokio::io::stdin(), stdout, shutdown).await
}
