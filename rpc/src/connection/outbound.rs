//! What a connection sends: one outbound [`Message`], and the [`Outbound`] queue a transport writes from.

use tokio::sync::mpsc;

use crate::queue::Queued;

/// One outbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A complete JSON-RPC message (a response or a flat notification), without a
    /// trailing newline.
    Text(String),
    /// A binary output frame (SPEC section 11); only on a connection that was granted
    /// `binaryOutput`, which only a transport with binary frames can be.
    Binary(Vec<u8>),
}

impl Message {
    /// Its length in bytes (what it holds of the connection's byte budget).
    pub fn len(&self) -> usize {
        match self {
            Message::Text(text) => text.len(),
            Message::Binary(frame) => frame.len(),
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text of a text message (tests).
    #[cfg(test)]
    pub(crate) fn into_text(self) -> String {
        match self {
            Message::Text(text) => text,
            Message::Binary(_) => panic!("a binary message"),
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text)
    }
}

/// The receiving end of a connection's outbound queue, in the order the messages must
/// be written.
///
/// Taking a message gives the bytes it held back to the connection's byte budget.
#[derive(Debug)]
pub struct Outbound {
    rx: mpsc::Receiver<Queued>,
}

impl Outbound {
    pub(crate) fn new(rx: mpsc::Receiver<Queued>) -> Self {
        Outbound { rx }
    }

    /// The next message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await.map(Queued::into_message)
    }

    /// The next message if one is queued already (for batching writes before a flush).
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok().map(Queued::into_message)
    }

    /// [`Outbound::recv`] for a plain thread (it panics inside the async runtime).
    pub fn blocking_recv(&mut self) -> Option<Message> {
        self.rx.blocking_recv().map(Queued::into_message)
    }
}
