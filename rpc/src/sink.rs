//! The event sink core pushes into: each event becomes one flat JSON-RPC notification on the connection's outbound queue.

use exec_server_core::{Event, EventSink, SinkClosed};
use exec_server_protocol::{Notification, ProcessClosed, ProcessExited, ProcessOutput};
use serde::Serialize;
use tokio::sync::mpsc;

/// A flat notification: `{"jsonrpc":"2.0","method":…,"params":…}` (no subscription wrapping).
#[derive(Serialize)]
struct Flat<'a, P: Serialize> {
    jsonrpc: &'static str,
    method: &'static str,
    params: &'a P,
}

fn flat<N: Notification>(params: &N::Params) -> String {
    let message = Flat {
        jsonrpc: "2.0",
        method: N::NAME,
        params,
    };
    // Serializing plain structs of strings, integers and base64 into a String cannot fail.
    serde_json::to_string(&message).unwrap_or_default()
}

/// The JSON text of the notification that announces `event`.
pub(crate) fn notification_json(event: &Event) -> String {
    match event {
        Event::Output(n) => flat::<ProcessOutput>(n),
        Event::Exited(n) => flat::<ProcessExited>(n),
        Event::Closed(n) => flat::<ProcessClosed>(n),
    }
}

/// Pushes a session's events into one connection's bounded outbound queue.
///
/// `send` waits for room in the queue, so a client that stops reading stops the
/// reading of its processes' output instead of growing a buffer.
pub(crate) struct QueueSink {
    tx: mpsc::Sender<String>,
}

impl QueueSink {
    pub(crate) fn new(tx: mpsc::Sender<String>) -> Self {
        QueueSink { tx }
    }
}

#[async_trait::async_trait]
impl EventSink for QueueSink {
    async fn send(&self, event: Event) -> Result<(), SinkClosed> {
        let text = notification_json(&event);
        self.tx.send(text).await.map_err(|_| SinkClosed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_protocol::{
        Base64Bytes, ProcessClosedNotification, ProcessExitedNotification,
        ProcessOutputNotification, Stream, notification,
    };
    use serde_json::json;

    #[test]
    fn notifications_are_flat() {
        let out = Event::Output(ProcessOutputNotification {
            process_id: "p1".into(),
            seq: 1,
            stream: Stream::Stdout,
            chunk: Base64Bytes::from("hi\n"),
        });
        let v: serde_json::Value = serde_json::from_str(&notification_json(&out)).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","method":notification::PROCESS_OUTPUT,"params":{"processId":"p1","seq":1,"stream":"stdout","chunk":"aGkK"}})
        );
        let exited = Event::Exited(ProcessExitedNotification {
            process_id: "p1".into(),
            seq: 2,
            exit_code: 137,
            signal: Some("SIGKILL".into()),
        });
        let v: serde_json::Value = serde_json::from_str(&notification_json(&exited)).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","method":notification::PROCESS_EXITED,"params":{"processId":"p1","seq":2,"exitCode":137,"signal":"SIGKILL"}})
        );
        let closed = Event::Closed(ProcessClosedNotification {
            process_id: "p1".into(),
            seq: 3,
        });
        let v: serde_json::Value = serde_json::from_str(&notification_json(&closed)).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","method":notification::PROCESS_CLOSED,"params":{"processId":"p1","seq":3}})
        );
    }
}
