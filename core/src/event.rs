//! Events of a process and the sink an attached session pushes them into.

use exec_server_protocol::{
    ProcessClosedNotification, ProcessExitedNotification, ProcessOutputNotification,
};

/// One event of a process, in seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An output chunk (`process/output`).
    Output(ProcessOutputNotification),
    /// The child's exit (`process/exited`).
    Exited(ProcessExitedNotification),
    /// Exited and every output stream at end-of-file (`process/closed`); the last event.
    Closed(ProcessClosedNotification),
}

impl Event {
    /// The process this event belongs to.
    pub fn process_id(&self) -> &str {
        match self {
            Event::Output(n) => &n.process_id,
            Event::Exited(n) => &n.process_id,
            Event::Closed(n) => &n.process_id,
        }
    }

    /// The event's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Event::Output(n) => n.seq,
            Event::Exited(n) => n.seq,
            Event::Closed(n) => n.seq,
        }
    }
}

/// Where an attached session pushes events. `send` waits for room (lossless
/// backpressure: while it waits, the process's output is not read). It fails
/// when the connection is gone; core then keeps going with retention only.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Push one event, waiting for room.
    async fn send(&self, event: Event) -> Result<(), SinkClosed>;

    /// The session has just forgotten process `process_id` (its closed-retention time
    /// passed, or it was released): a sink that holds a push of it back for a reason of
    /// its own (a flow-control window the client no longer opens) may give that push up.
    /// Called before the `processId` can be taken by a new process. Pushes waiting for
    /// room in the connection are not concerned. Does nothing by default.
    fn forgotten(&self, _process_id: &str) {}
}

/// The sink's connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

impl std::fmt::Display for SinkClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("event sink closed")
    }
}

impl std::error::Error for SinkClosed {}
