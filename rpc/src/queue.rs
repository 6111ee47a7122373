//! A connection's outbound queue: bounded in messages and in bytes, so what a client that stops reading can make the server hold is bounded.
//!
//! Output events wait in the queue as the chunk they carry (shared with the process's
//! retention) and the few bytes around it; their text or binary frame is made when the
//! writer takes them, so a full queue costs the server next to nothing beyond the
//! retained output it shares (SPEC 7.3).

use std::sync::Arc;

use exec_server_protocol::Base64Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::connection::Message;

/// What is queued: a message, or an output event made into one when the writer takes it.
#[derive(Debug)]
pub(crate) enum Payload {
    /// A message made already.
    Ready(Message),
    /// An output notification: its text up to the chunk's base64, the chunk, and the
    /// text after it.
    Text {
        head: String,
        chunk: Base64Bytes,
        tail: &'static str,
    },
    /// A binary output frame: its header, then the chunk.
    Frame { head: Vec<u8>, chunk: Base64Bytes },
}

impl Payload {
    /// The length of the message it becomes (what it holds of the byte budget).
    pub(crate) fn len(&self) -> usize {
        match self {
            Payload::Ready(message) => message.len(),
            Payload::Text { head, chunk, tail } => {
                head.len() + base64_simd::STANDARD.encoded_length(chunk.len()) + tail.len()
            }
            Payload::Frame { head, chunk } => head.len() + chunk.len(),
        }
    }

    /// The message: the chunk base64-encoded into place (SIMD), or copied after the
    /// frame's header.
    pub(crate) fn into_message(self) -> Message {
        match self {
            Payload::Ready(message) => message,
            Payload::Text {
                mut head,
                chunk,
                tail,
            } => {
                let engine = &base64_simd::STANDARD;
                head.reserve_exact(engine.encoded_length(chunk.len()) + tail.len());
                engine.encode_append(chunk.as_bytes(), &mut head);
                head.push_str(tail);
                Message::Text(head)
            }
            Payload::Frame { mut head, chunk } => {
                head.reserve_exact(chunk.len());
                head.extend_from_slice(chunk.as_bytes());
                Message::Binary(head)
            }
        }
    }
}

impl From<Message> for Payload {
    fn from(message: Message) -> Self {
        Payload::Ready(message)
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Payload::Ready(Message::Text(text))
    }
}

/// The connection is gone (or its output was abandoned): the message was not queued.
#[derive(Debug)]
pub(crate) struct Closed;

/// One queued message and the bytes of the budget it holds until the writer takes it.
#[derive(Debug)]
pub(crate) struct Queued {
    payload: Payload,
    _bytes: OwnedSemaphorePermit,
}

/// The sending side, shared by the dispatch, its tasks and the session's event sink.
///
/// Every message takes `min(len, budget)` bytes of the connection's byte budget before it
/// is queued and gives them back when the writer takes it: the queue holds at most
/// `budget` bytes, or one message when that message alone is larger.
#[derive(Clone, Debug)]
pub(crate) struct OutTx {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    budget: usize,
    /// Cancelled when the output is given up (a writer that stopped making progress
    /// during shutdown): every send then fails at once instead of waiting.
    abandon: CancellationToken,
}

impl OutTx {
    /// A queue of `messages` messages and `budget` bytes (both at least 1).
    pub(crate) fn new(messages: usize, budget: usize) -> (OutTx, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(messages.max(1));
        // A semaphore counts at most `Semaphore::MAX_PERMITS`, and acquire_many takes a u32.
        let budget = budget.clamp(1, u32::MAX as usize >> 3);
        let out = OutTx {
            tx,
            bytes: Arc::new(Semaphore::new(budget)),
            budget,
            abandon: CancellationToken::new(),
        };
        (out, rx)
    }

    fn permits(&self, len: usize) -> u32 {
        // `budget` fits in a u32 (see `new`).
        len.clamp(1, self.budget) as u32
    }

    /// Takes room for a message of `len` bytes from the byte budget, waiting for it.
    pub(crate) async fn reserve(&self, len: usize) -> Result<OwnedSemaphorePermit, Closed> {
        let n = self.permits(len);
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(permit) => return Ok(permit),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                exec_server_metrics::metrics().backpressure_waits.inc();
            }
        }
        tokio::select! {
            permit = self.bytes.clone().acquire_many_owned(n) => permit.map_err(|_| Closed),
            () = self.abandon.cancelled() => Err(Closed),
        }
    }

    /// Queues a message (text or a binary frame, or an output event to make into one),
    /// waiting for room in the byte budget and in the queue.
    pub(crate) async fn send(&self, message: impl Into<Payload>) -> Result<(), Closed> {
        let message = message.into();
        let bytes = self.reserve(message.len()).await?;
        self.send_reserved(message, bytes).await
    }

    /// Queues `text` with room reserved before it was built. Room reserved in excess is
    /// given back; when too little was reserved, it is given back whole and the right
    /// amount taken anew (topping up could deadlock two tasks that each hold part).
    pub(crate) async fn send_reserved(
        &self,
        message: impl Into<Payload>,
        mut bytes: OwnedSemaphorePermit,
    ) -> Result<(), Closed> {
        let message = message.into();
        let want = self.permits(message.len()) as usize;
        let have = bytes.num_permits();
        if have > want {
            drop(bytes.split(have - want));
        } else if have < want {
            drop(bytes);
            bytes = self.reserve(message.len()).await?;
        }
        let queued = Queued {
            payload: message,
            _bytes: bytes,
        };
        let queued = match self.tx.try_send(queued) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Closed),
            Err(mpsc::error::TrySendError::Full(queued)) => {
                exec_server_metrics::metrics().backpressure_waits.inc();
                queued
            }
        };
        tokio::select! {
            sent = self.tx.send(queued) => sent.map_err(|_| Closed),
            () = self.abandon.cancelled() => Err(Closed),
        }
    }

    /// Gives the output up: every pending and future send fails at once.
    pub(crate) fn abandon(&self) {
        self.abandon.cancel();
    }
}

impl Queued {
    /// The message (made now for an output event); the bytes it held go back to the
    /// budget.
    pub(crate) fn into_message(self) -> Message {
        self.payload.into_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_holds_at_most_its_byte_budget() {
        let (tx, mut rx) = OutTx::new(100, 10);
        tx.send(String::from("12345")).await.unwrap();
        tx.send(String::from("12345")).await.unwrap();
        // The budget is used up: the next send waits until the writer takes one.
        let blocked = tx.send(String::from("x"));
        tokio::pin!(blocked);
        assert!(
            futures::poll!(blocked.as_mut()).is_pending(),
            "a send past the byte budget must wait"
        );
        assert_eq!(rx.recv().await.unwrap().into_message().into_text(), "12345");
        blocked.await.unwrap();
        // A message larger than the whole budget waits for an empty queue, then passes.
        let big = tx.send("y".repeat(50));
        tokio::pin!(big);
        assert!(futures::poll!(big.as_mut()).is_pending());
        assert_eq!(rx.recv().await.unwrap().into_message().into_text(), "12345");
        assert!(futures::poll!(big.as_mut()).is_pending());
        assert_eq!(rx.recv().await.unwrap().into_message().into_text(), "x");
        big.await.unwrap();
        assert_eq!(
            rx.recv().await.unwrap().into_message().into_text().len(),
            50
        );
    }

    #[tokio::test]
    async fn reserved_room_is_adjusted_to_the_message() {
        let (tx, mut rx) = OutTx::new(100, 10);
        let room = tx.reserve(8).await.unwrap();
        tx.send_reserved(String::from("abc"), room).await.unwrap();
        // 3 bytes held: 7 are free.
        let room = tx.reserve(7).await.unwrap();
        // Too little reserved: given back and taken anew once the queue drains.
        let send = tx.send_reserved(String::from("0123456789"), room);
        tokio::pin!(send);
        assert!(futures::poll!(send.as_mut()).is_pending());
        assert_eq!(rx.recv().await.unwrap().into_message().into_text(), "abc");
        send.await.unwrap();
        assert_eq!(
            rx.recv().await.unwrap().into_message().into_text(),
            "0123456789"
        );
    }

    #[tokio::test]
    async fn abandoning_fails_waiting_sends() {
        let (tx, _rx) = OutTx::new(1, 100);
        tx.send(String::from("a")).await.unwrap();
        let waiting = tx.send(String::from("b"));
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        tx.abandon();
        assert!(waiting.await.is_err());
    }
}
