//! The stdio serving loop: one connection, a reader that dispatches line by line, a writer that drains the outbound queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use exec_server_rpc::{Outbound, Server};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::watch;

use crate::Error;
use crate::lines::{Line, LineReader};

/// How long the writer may take to flush the last messages after shutdown.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Writes every queued message as one line, flushing whenever the queue runs empty.
/// Returns when every sender is gone; after `stop`, writes what is already queued and returns.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut outbound: Outbound,
    output: W,
    mut stop: watch::Receiver<bool>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, output);
    loop {
        let message = tokio::select! {
            biased;
            message = outbound.recv() => message,
            _ = stop.wait_for(|stopped| *stopped) => None,
        };
        let Some(first) = message else {
            tracing::debug!("output queue finished");
            break;
        };
        let mut next = Some(first);
        while let Some(message) = next {
            if let Err(e) = write_line(&mut out, &message).await {
                tracing::warn!("cannot write to the output: {e}");
                return;
            }
            next = outbound.try_recv();
        }
        if let Err(e) = out.flush().await {
            tracing::warn!("cannot write to the output: {e}");
            return;
        }
    }
    // Drain what is queued already, then flush.
    while let Some(message) = outbound.try_recv() {
        if write_line(&mut out, &message).await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
}

async fn write_line<W: AsyncWrite + Unpin>(out: &mut W, message: &str) -> std::io::Result<()> {
    out.write_all(message.as_bytes()).await?;
    out.write_all(b"\n").await
}

/// Serves one JSON-RPC connection over `input` and `output` (one message per line)
/// until `input` ends or `shutdown` resolves; then every process of the server is
/// terminated and reaped, the output flushed, and it returns.
pub async fn serve<R, W, S>(
    server: Arc<Server>,
    input: R,
    output: W,
    shutdown: S,
) -> Result<(), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    S: Future<Output = ()>,
{
    let (connection, outbound) = server.connect();
    let (stop, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(write_loop(outbound, output, stop_rx));
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
    let mut writer = writer;
    if tokio::time::timeout(FLUSH_DEADLINE, &mut writer)
        .await
        .is_err()
    {
        tracing::warn!("the last notifications did not drain in time");
        stop.send_replace(true);
        if tokio::time::timeout(FLUSH_DEADLINE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
    result
}

/// [`serve`] on the process's own stdin and stdout.
pub async fn serve_stdio<S: Future<Output = ()>>(
    server: Arc<Server>,
    shutdown: S,
) -> Result<(), Error> {
    serve(server, tokio::io::stdin(), tokio::io::stdout(), shutdown).await
}
