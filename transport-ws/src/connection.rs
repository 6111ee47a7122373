//! One WebSocket connection: a reader loop that feeds the dispatch in receipt order, a writer task that drains the outbound queue, answers pings and pings.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use exec_server_rpc::{Message, Outbound};
use futures::StreamExt;
use futures::io::BufWriter;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use soketto::connection::Error as WsError;
use tokio::io::{BufReader, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use tokio_util::sync::CancellationToken;

use crate::frames::{FrameReader, Incoming};
use crate::server::Shared;

type Io = WriteOnly<BufWriter<Compat<WriteHalf<TokioIo<Upgraded>>>>>;
type Sender = soketto::Sender<Io>;

/// The socket's write buffer: a frame's header and its payload (an output message is
/// at most ~88 KiB) reach the socket in one write, and several queued messages share a
/// write, instead of a separate tiny write (and TCP segment, and wake-up of the peer)
/// for each frame header.
const WRITE_BUFFER_BYTES: usize = 128 * 1024;

/// How long closing a connection may wait for the close frame to be written.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Pings of the peer waiting to be answered; more are dropped (a pong answers the
/// latest ping anyway).
const PENDING_PONGS: usize = 4;

/// The write half of the socket as soketto's sender needs it (soketto wants a stream
/// that reads too, but this connection's frames are read by [`FrameReader`]).
struct WriteOnly<W>(W);

impl<W: Unpin> futures::io::AsyncRead for WriteOnly<W> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(0))
    }
}

impl<W: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for WriteOnly<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// Milliseconds since `start` at which the peer was last heard from.
struct LastSeen {
    start: Instant,
    millis: AtomicU64,
}

impl LastSeen {
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.millis.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let seen = Duration::from_millis(self.millis.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(seen)
    }
}

/// Serves one upgraded connection until the peer leaves, goes idle, stops taking what
/// is written to it, is taken over, or the server stops.
pub(crate) async fn run(
    shared: Arc<Shared>,
    handshake: soketto::handshake::http::Server,
    upgraded: Upgraded,
) {
    let (read_half, write_half) = tokio::io::split(TokioIo::new(upgraded));
    let io = WriteOnly(BufWriter::with_capacity(
        WRITE_BUFFER_BYTES,
        write_half.compat_write(),
    ));
    // The receiver soketto builds is not used: frames are read by `FrameReader`.
    let (sender, _) = handshake.into_builder(io).finish();
    let reader: FrameReader<BufReader<ReadHalf<TokioIo<Upgraded>>>> = FrameReader::new(
        BufReader::with_capacity(64 * 1024, read_half),
        shared.rpc.config().max_message_bytes,
    );

    // A WebSocket carries binary frames: binary output can be granted (SPEC section 11).
    let (connection, outbound) = shared.rpc.connect(true);
    let conn_id = connection.id();
    let m = exec_server_metrics::metrics();
    m.connections_opened.inc();
    m.connections.inc();
    tracing::info!(conn = conn_id, "WebSocket connection opened");
    let done = CancellationToken::new();
    // Cancelled to have the writer write out everything queued, then close.
    let flush_and_close = CancellationToken::new();
    let (pong_tx, pong_rx) = mpsc::channel(PENDING_PONGS);
    let writer = tokio::spawn(write_loop(
        sender,
        outbound,
        pong_rx,
        Timing {
            ping_interval: shared.config.ping_interval,
            stall_timeout: shared.config.idle_timeout,
        },
        done.clone(),
        flush_and_close.clone(),
    ));

    let last_seen = LastSeen {
        start: Instant::now(),
        millis: AtomicU64::new(0),
    };
    // The stream keeps an interrupted read in its state, so polling it in a `select!`
    // never loses part of a frame.
    let frames = futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next().await.transpose()?;
        Some((item, reader))
    });
    tokio::pin!(frames);
    let check_every = shared.config.idle_timeout.min(shared.config.ping_interval) / 2;
    let mut idle_check = tokio::time::interval(check_every.max(Duration::from_millis(10)));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let reason = loop {
        let item = tokio::select! {
            item = frames.next() => item,
            () = connection.session_closed() => break SESSION_CLOSED,
            () = connection.close_requested() => break "taken over by another connection",
            () = shared.stop.cancelled() => break "server stopping",
            () = done.cancelled() => break "the peer stopped taking messages",
            _ = idle_check.tick() => {
                if last_seen.idle() > shared.config.idle_timeout {
                    break "idle: the peer stopped answering pings";
                }
                continue;
            }
        };
        let incoming = match item {
            None => break "closed by the peer",
            Some(Err(e)) => {
                tracing::debug!(conn = conn_id, "WebSocket error: {e}");
                break "WebSocket error";
            }
            Some(Ok(incoming)) => incoming,
        };
        last_seen.touch();
        let message = match incoming {
            Incoming::Data(data) => Ok(data),
            Incoming::TooLarge(size) => Err(size),
            Incoming::Ping(payload) => {
                // Best effort: a peer that floods pings gets some answered.
                let _ = pong_tx.try_send(payload);
                continue;
            }
            Incoming::Pong => continue,
            Incoming::Close => break "closed by the peer",
        };
        // While a message is handled (which may wait for the outbound queue or for a
        // free in-flight slot), the peer is not read, so its silence proves nothing: the
        // writer watches for a peer that takes nothing instead, and `done` ends this.
        let handled = async {
            match message {
                Ok(data) => connection.handle(&data).await,
                Err(size) => connection.reject_oversized(Some(size)).await,
            }
        };
        tokio::select! {
            () = handled => {}
            () = connection.close_requested() => break "taken over by another connection",
            () = shared.stop.cancelled() => break "server stopping",
            () = done.cancelled() => break "the peer stopped taking messages",
        }
        // Idle time counts from when the peer is read again.
        last_seen.touch();
    };
    tracing::info!(conn = conn_id, reason, "WebSocket connection closing");
    if reason == SESSION_CLOSED {
        // As at the end of input: answer what is in flight, write out everything queued
        // (the close response last of the session's messages), then close.
        tokio::select! {
            () = connection.finish() => {}
            () = done.cancelled() => {}
        }
        flush_and_close.cancel();
    } else {
        done.cancel();
    }
    let _ = writer.await;
    // Dropping the connection detaches its session (it expires after the TTL).
    drop(connection);
    m.connections.dec();
}

/// Why a connection ends when its client closed the session (`session/close`).
const SESSION_CLOSED: &str = "the client closed its session";

/// The writer's clocks.
struct Timing {
    /// Interval between pings.
    ping_interval: Duration,
    /// A single write or flush that takes longer than this ends the connection: the peer
    /// stopped taking what is sent to it.
    stall_timeout: Duration,
}

/// Writes queued messages as text or binary frames, in queue order (flushing when the
/// queue runs empty), answers pings and pings every `ping_interval`, until `done`, or
/// until `flush_and_close` once the queue is empty; then sends a close frame.
async fn write_loop(
    mut sender: Sender,
    mut outbound: Outbound,
    mut pongs: mpsc::Receiver<Vec<u8>>,
    timing: Timing,
    done: CancellationToken,
    flush_and_close: CancellationToken,
) {
    let ping_interval = timing.ping_interval;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Every write is bounded by the stall timeout and stops with `done`.
    macro_rules! bounded {
        ($io:expr) => {
            tokio::select! {
                biased;
                () = done.cancelled() => return Ok(()),
                written = tokio::time::timeout(timing.stall_timeout, $io) => match written {
                    Ok(result) => result?,
                    Err(_) => return Err(WsError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer took nothing for the idle timeout",
                    ))),
                },
            }
        };
    }
    let result: Result<(), WsError> = async {
        loop {
            tokio::select! {
                biased;
                () = done.cancelled() => return Ok(()),
                message = outbound.recv() => {
                    let Some(mut message) = message else { return Ok(()) };
                    loop {
                        bounded!(send(&mut sender, message));
                        match outbound.try_recv() {
                            Some(next) => message = next,
                            None => break,
                        }
                    }
                    bounded!(sender.flush());
                }
                // Polled after the queue: only when it is empty.
                () = flush_and_close.cancelled() => return Ok(()),
                Some(payload) = pongs.recv() => {
                    if let Ok(payload) = soketto::data::ByteSlice125::try_from(payload.as_slice()) {
                        bounded!(async {
                            sender.send_pong(payload).await?;
                            sender.flush().await
                        });
                    }
                }
                _ = ping.tick() => {
                    let empty: &[u8] = &[];
                    if let Ok(payload) = soketto::data::ByteSlice125::try_from(empty) {
                        bounded!(async {
                            sender.send_ping(payload).await?;
                            sender.flush().await
                        });
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("WebSocket write error: {e}");
        done.cancel();
        return;
    }
    let _ = tokio::time::timeout(CLOSE_DEADLINE, sender.close()).await;
}

/// Sends one queued message as one frame of its kind.
async fn send(sender: &mut Sender, message: Message) -> Result<(), WsError> {
    match message {
        Message::Text(text) => sender.send_text_owned(text).await,
        Message::Binary(frame) => sender.send_binary_mut(frame).await,
    }
}
