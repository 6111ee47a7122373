//! One WebSocket connection: a reader loop that feeds the dispatch in receipt order, a writer task that drains the outbound queue and pings.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use exec_server_rpc::{Message, Outbound};
use futures::StreamExt;
use futures::io::{BufReader, BufWriter};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use soketto::connection::Error as WsError;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

use crate::server::Shared;

type Io = BufReader<BufWriter<Compat<TokioIo<Upgraded>>>>;
type Sender = soketto::Sender<Io>;

/// The socket's write buffer: a frame's header and its payload (an output message is
/// at most ~88 KiB) reach the socket in one write, and several queued messages share a
/// write, instead of a separate tiny write (and TCP segment, and wake-up of the peer)
/// for each frame header.
const WRITE_BUFFER_BYTES: usize = 128 * 1024;

/// How long closing a connection may wait for the close frame to be written.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Frames up to this size are read; a message over the limit is discarded without
/// being buffered and answered with a -32001 error.
const MAX_FRAME_BYTES: usize = 1 << 40;

enum Received {
    Data(Vec<u8>),
    Pong,
    TooLarge(usize),
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

/// Serves one upgraded connection until the peer leaves, goes idle, is taken over, or
/// the server stops.
pub(crate) async fn run(
    shared: Arc<Shared>,
    handshake: soketto::handshake::http::Server,
    upgraded: Upgraded,
) {
    let io = BufReader::new(BufWriter::with_capacity(
        WRITE_BUFFER_BYTES,
        TokioIo::new(upgraded).compat(),
    ));
    let mut builder = handshake.into_builder(io);
    builder.set_max_message_size(shared.rpc.config().max_message_bytes);
    builder.set_max_frame_size(MAX_FRAME_BYTES);
    let (sender, receiver) = builder.finish();

    // A WebSocket carries binary frames: binary output can be granted (SPEC section 11).
    let (connection, outbound) = shared.rpc.connect(true);
    let conn_id = connection.id();
    tracing::info!(conn = conn_id, "WebSocket connection opened");
    let done = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        sender,
        outbound,
        shared.config.ping_interval,
        done.clone(),
    ));

    let last_seen = LastSeen {
        start: Instant::now(),
        millis: AtomicU64::new(0),
    };
    // The stream keeps an interrupted receive in its state, so polling it in a
    // `select!` never loses part of a frame.
    let frames = futures::stream::unfold(receiver, |mut receiver| async move {
        let mut data = Vec::new();
        let item = match receiver.receive(&mut data).await {
            Ok(soketto::Incoming::Data(_)) => Ok(Received::Data(data)),
            Ok(soketto::Incoming::Pong(_)) => Ok(Received::Pong),
            Ok(soketto::Incoming::Closed(_)) | Err(WsError::Closed) => return None,
            Err(WsError::MessageTooLarge { current, .. }) => Ok(Received::TooLarge(current)),
            Err(e) => Err(e),
        };
        Some((item, receiver))
    });
    tokio::pin!(frames);
    let check_every = shared.config.idle_timeout.min(shared.config.ping_interval) / 2;
    let mut idle_check = tokio::time::interval(check_every.max(Duration::from_millis(10)));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let reason = loop {
        let item = tokio::select! {
            item = frames.next() => item,
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
        let received = match item {
            None => break "closed by the peer",
            Some(Err(e)) => {
                tracing::debug!(conn = conn_id, "WebSocket error: {e}");
                break "WebSocket error";
            }
            Some(Ok(received)) => received,
        };
        last_seen.touch();
        let handled = async {
            match received {
                Received::Data(data) => connection.handle(&data).await,
                Received::TooLarge(size) => connection.reject_oversized(Some(size)).await,
                Received::Pong => {}
            }
        };
        tokio::select! {
            () = handled => {}
            () = connection.close_requested() => break "taken over by another connection",
            () = shared.stop.cancelled() => break "server stopping",
        }
    };
    tracing::info!(conn = conn_id, reason, "WebSocket connection closing");
    done.cancel();
    let _ = writer.await;
    // Dropping the connection detaches its session (it expires after the TTL).
    drop(connection);
}

/// Writes queued messages as text or binary frames, in queue order (flushing when the
/// queue runs empty), and pings
/// every `ping_interval`, until `done`; then sends a close frame.
async fn write_loop(
    mut sender: Sender,
    mut outbound: Outbound,
    ping_interval: Duration,
    done: CancellationToken,
) {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: Result<(), WsError> = async {
        loop {
            tokio::select! {
                biased;
                () = done.cancelled() => return Ok(()),
                message = outbound.recv() => {
                    let Some(mut message) = message else { return Ok(()) };
                    loop {
                        tokio::select! {
                            biased;
                            () = done.cancelled() => return Ok(()),
                            sent = send(&mut sender, message) => sent?,
                        }
                        match outbound.try_recv() {
                            Some(next) => message = next,
                            None => break,
                        }
                    }
                    tokio::select! {
                        biased;
                        () = done.cancelled() => return Ok(()),
                        flushed = sender.flush() => flushed?,
                    }
                }
                _ = ping.tick() => {
                    let empty: &[u8] = &[];
                    if let Ok(payload) = soketto::data::ByteSlice125::try_from(empty) {
                        let ping = async {
                            sender.send_ping(payload).await?;
                            sender.flush().await
                        };
                        tokio::select! {
                            biased;
                            () = done.cancelled() => return Ok(()),
                            pinged = ping => pinged?,
                        }
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
