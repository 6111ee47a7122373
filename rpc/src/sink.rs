//! The event sink core pushes into: each event becomes one flat JSON-RPC notification (or, when granted, a binary output frame) on the connection's outbound queue.

use std::sync::Arc;

use exec_server_core::{Event, EventSink, SinkClosed};
use exec_server_protocol::{
    Base64Bytes, Notification, ProcessClosed, ProcessExited, ProcessOutput,
    ProcessOutputNotification, write_output_header,
};
use serde::Serialize;

use crate::connection::Message;
use crate::queue::OutTx;
use crate::window::Windows;

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

/// A chunk whose base64 form, `++++`, cannot be mistaken for the end of another field.
const MARKER: [u8; 3] = [0xfb, 0xef, 0xbe];
const MARKER_TAIL: &str = "++++\"}}";

/// `process/output` without serde_json's escape scan over the base64 text (a large
/// share of the server's CPU when streaming): the notification is serialized with a
/// 3-byte marker chunk, and when the marker's base64 ends the text (the chunk is the
/// last field) the real chunk is base64-encoded straight into its place, with a SIMD
/// encoder (standard alphabet, padded: the same text as the protocol's `Base64Bytes`).
/// Otherwise it falls back to plain serialization.
fn output_json(n: &ProcessOutputNotification) -> String {
    let marked = ProcessOutputNotification {
        process_id: n.process_id.clone(),
        seq: n.seq,
        stream: n.stream,
        chunk: Base64Bytes::from(&MARKER),
    };
    let mut text = flat::<ProcessOutput>(&marked);
    if !text.ends_with(MARKER_TAIL) {
        return flat::<ProcessOutput>(n);
    }
    text.truncate(text.len() - MARKER_TAIL.len());
    let engine = &base64_simd::STANDARD;
    text.reserve(engine.encoded_length(n.chunk.len()) + MARKER_TAIL.len());
    engine.encode_append(n.chunk.as_bytes(), &mut text);
    text.push_str("\"}}");
    text
}

/// The JSON text of the notification that announces `event`.
pub(crate) fn notification_json(event: &Event) -> String {
    match event {
        Event::Output(n) => output_json(n),
        Event::Exited(n) => flat::<ProcessExited>(n),
        Event::Closed(n) => flat::<ProcessClosed>(n),
    }
}

/// The binary frame of an output event (SPEC section 11), or `None` when the event
/// has no binary form (not output, or a processId too long for the frame's length field).
fn output_frame(event: &Event) -> Option<Vec<u8>> {
    let Event::Output(n) = event else {
        return None;
    };
    let mut frame = Vec::with_capacity(
        exec_server_protocol::OUTPUT_FRAME_HEADER_BYTES + n.process_id.len() + n.chunk.len(),
    );
    write_output_header(&mut frame, &n.process_id, n.seq, n.stream).ok()?;
    frame.extend_from_slice(n.chunk.as_bytes());
    Some(frame)
}

/// The message that announces `event` on a connection with or without binary output.
pub(crate) fn event_message(event: &Event, binary_output: bool) -> Message {
    if binary_output && let Some(frame) = output_frame(event) {
        return Message::Binary(frame);
    }
    Message::Text(notification_json(event))
}

/// Pushes a session's events into one connection's bounded outbound queue.
///
/// `send` waits for room in the queue, so a client that stops reading stops the
/// reading of its processes' output instead of growing a buffer. On a connection
/// granted flow control per process (SPEC section 13) it first waits for room in the
/// process's window, which stops the reading of that process alone. Output goes out as
/// binary frames when the connection was granted `binaryOutput`; every other event
/// stays JSON, in the same queue, so seq order holds across both kinds.
pub(crate) struct QueueSink {
    tx: OutTx,
    binary_output: bool,
    windows: Option<Arc<Windows>>,
}

impl QueueSink {
    pub(crate) fn new(tx: OutTx, binary_output: bool, windows: Option<Arc<Windows>>) -> Self {
        QueueSink {
            tx,
            binary_output,
            windows,
        }
    }
}

#[async_trait::async_trait]
impl EventSink for QueueSink {
    async fn send(&self, event: Event) -> Result<(), SinkClosed> {
        if let Some(windows) = &self.windows
            && !windows.admit(&event).await
        {
            // Its process was forgotten while the window held it back.
            return Ok(());
        }
        let message = event_message(&event, self.binary_output);
        self.tx.send(message).await.map_err(|_| SinkClosed)
    }

    fn forgotten(&self, process_id: &str) {
        if let Some(windows) = &self.windows {
            windows.forgotten(process_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_protocol::{
        ProcessClosedNotification, ProcessExitedNotification, Stream, notification,
    };
    use serde_json::json;

    #[test]
    fn the_fast_output_path_equals_plain_serialization() {
        let mut payloads: Vec<Vec<u8>> = vec![Vec::new(), vec![0], vec![1, 2], MARKER.to_vec()];
        payloads.push((0..=255u8).collect());
        payloads.push((0..70_001u32).map(|i| (i * 7 + i / 3) as u8).collect());
        for (i, payload) in payloads.into_iter().enumerate() {
            for stream in [Stream::Stdout, Stream::Stderr, Stream::Pty] {
                let n = ProcessOutputNotification {
                    process_id: format!("p\"{i}\\\u{1}é"),
                    seq: i as u64 + 1,
                    stream,
                    chunk: Base64Bytes::from(payload.clone()),
                };
                assert_eq!(output_json(&n), flat::<ProcessOutput>(&n));
            }
        }
    }

    #[test]
    fn binary_output_frames_only_output() {
        let out = Event::Output(ProcessOutputNotification {
            process_id: "p1".into(),
            seq: 7,
            stream: Stream::Pty,
            chunk: Base64Bytes::from(&[0u8, 255, 10][..]),
        });
        let Message::Binary(frame) = event_message(&out, true) else {
            panic!("output is not binary");
        };
        let decoded = exec_server_protocol::decode_output_frame(&frame).unwrap();
        assert_eq!(
            decoded,
            exec_server_protocol::OutputFrame {
                process_id: "p1",
                seq: 7,
                stream: Stream::Pty,
                chunk: &[0, 255, 10],
            }
        );
        assert_eq!(
            event_message(&out, false),
            Message::Text(notification_json(&out))
        );
        let closed = Event::Closed(ProcessClosedNotification {
            timed_out: false,
            process_id: "p1".into(),
            seq: 8,
        });
        assert_eq!(
            event_message(&closed, true),
            Message::Text(notification_json(&closed))
        );
    }

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
            timed_out: false,
        });
        let v: serde_json::Value = serde_json::from_str(&notification_json(&exited)).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","method":notification::PROCESS_EXITED,"params":{"processId":"p1","seq":2,"exitCode":137,"signal":"SIGKILL","timedOut":false}})
        );
        let closed = Event::Closed(ProcessClosedNotification {
            timed_out: false,
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
