//! A client's view of flow control per process (SPEC section 13) for the e2e tests: `initialize` with a window, a consumer that checks the window at every pushed event, and helpers to see that a process is held back.

use std::collections::VecDeque;

use exec_server_protocol::{method, notification};
use serde_json::{Value, json};

use crate::client::{Client, group_members, unb64};

/// The smallest window a client may ask for.
pub const W: u64 = 65_536;

/// `initialize` (with a window and binary output when given, resuming when given) and
/// `initialized`; returns the result.
pub async fn init(
    c: &mut Client,
    window: Option<u64>,
    binary: bool,
    resume: Option<&str>,
) -> Value {
    let mut params = json!({"clientName": "e2e", "capabilities": {}});
    if let Some(window) = window {
        params["capabilities"]["outputWindowBytes"] = json!(window);
    }
    if binary {
        params["capabilities"]["binaryOutput"] = json!(true);
    }
    if let Some(session) = resume {
        params["resumeSessionId"] = json!(session);
    }
    let result = c.call(method::INITIALIZE, params).await;
    assert_eq!(
        result["capabilities"]["outputWindowBytes"],
        json!(window),
        "{result}"
    );
    c.notify(notification::INITIALIZED, json!({})).await;
    result
}

/// What a client knows of one process's pushed events: the bytes it got (checked against
/// the repeating pattern the process prints), and what it has not acknowledged, to check
/// the window at every event.
pub struct Consumer {
    process_id: String,
    pattern: Vec<u8>,
    window: u64,
    /// Output bytes received.
    pub received: u64,
    /// The seq the next event must have (0 until the first one).
    next_seq: u64,
    /// The seq of the first event received (0: none yet).
    first_seq: u64,
    /// Output events received and not acknowledged: (seq, bytes).
    unacked: VecDeque<(u64, u64)>,
    /// Whether binary frames (`true`) or JSON (`false`) are expected for output, if known.
    binary: Option<bool>,
    pub exited: Option<Value>,
    pub closed: bool,
}

impl Consumer {
    pub fn new(process_id: &str, pattern: &[u8], window: u64) -> Consumer {
        Consumer {
            process_id: process_id.to_owned(),
            pattern: pattern.to_vec(),
            window,
            received: 0,
            next_seq: 0,
            first_seq: 0,
            unacked: VecDeque::new(),
            binary: None,
            exited: None,
            closed: false,
        }
    }

    pub fn expect_binary(mut self, binary: bool) -> Consumer {
        self.binary = Some(binary);
        self
    }

    /// The first output event received and not acknowledged: (seq, bytes).
    pub fn first_unacked(&self) -> Option<(u64, u64)> {
        self.unacked.front().copied()
    }

    /// From now on the server may push without regard to the window (it was lifted).
    pub fn lift(&mut self) {
        self.window = u64::MAX;
    }

    /// The seq of the first event received (0: none yet).
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Output bytes received and not acknowledged.
    pub fn unacked(&self) -> u64 {
        self.unacked.iter().map(|(_, b)| b).sum()
    }

    /// The seq of the last event received.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Checks and counts one pushed event of this process.
    pub fn on_event(&mut self, n: &Value) {
        assert_eq!(n["params"]["processId"], self.process_id.as_str());
        assert!(!self.closed, "an event after closed: {n}");
        let seq = n["params"]["seq"].as_u64().unwrap();
        if self.next_seq != 0 {
            assert_eq!(seq, self.next_seq, "seq gap or disorder at {n}");
        } else {
            self.first_seq = seq;
        }
        self.next_seq = seq + 1;
        // The SPEC's rule, seen from the client: the server pushes only while what it
        // pushed and we did not acknowledge is below the window (our acks may reach it
        // late, which only makes it hold back more).
        let unacked = self.unacked();
        assert!(
            unacked < self.window,
            "{} pushed seq {seq} with {unacked} bytes unacknowledged (window {})",
            self.process_id,
            self.window
        );
        if n["method"] == notification::PROCESS_OUTPUT {
            if let Some(binary) = self.binary {
                assert_eq!(
                    n.get(crate::client::BINARY_FRAME) == Some(&json!(true)),
                    binary,
                    "{n}"
                );
            }
            let chunk = unb64(&n["params"]["chunk"]);
            // An empty pattern checks no content.
            for (i, byte) in chunk
                .iter()
                .enumerate()
                .filter(|_| !self.pattern.is_empty())
            {
                let at = (self.received + i as u64) % self.pattern.len() as u64;
                assert_eq!(
                    *byte, self.pattern[at as usize],
                    "{}: byte {} differs",
                    self.process_id, self.received
                );
            }
            self.received += chunk.len() as u64;
            self.unacked.push_back((seq, chunk.len() as u64));
        } else if n["method"] == notification::PROCESS_EXITED {
            assert!(self.exited.is_none(), "two exits: {n}");
            self.exited = Some(n["params"].clone());
        } else {
            assert_eq!(n["method"], notification::PROCESS_CLOSED, "{n}");
            assert!(self.exited.is_some(), "closed before exited: {n}");
            self.closed = true;
        }
    }

    /// Acknowledges everything received.
    pub async fn ack(&mut self, c: &mut Client) {
        self.ack_seq(c, self.last_seq()).await;
    }

    /// Sends `process/ack` of `seq` and credits it in the model (beyond the last received
    /// event: everything received).
    pub async fn ack_seq(&mut self, c: &mut Client, seq: u64) {
        c.notify(
            notification::PROCESS_ACK,
            json!({"processId": self.process_id, "seq": seq}),
        )
        .await;
        while self.unacked.front().is_some_and(|(s, _)| *s <= seq) {
            self.unacked.pop_front();
        }
    }
}

/// The `process/list` entry of `process_id`.
pub async fn list_entry(c: &mut Client, process_id: &str) -> Value {
    let list = c.call(method::PROCESS_LIST, json!({})).await;
    list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["processId"] == process_id)
        .cloned()
        .unwrap_or_else(|| panic!("{process_id} not listed: {list}"))
}

/// Whether a live member of the process group `pgid` is blocked writing to a pipe.
pub fn blocked_on_pipe(pgid: u32) -> bool {
    group_members(pgid).into_iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/wchan"))
            .is_ok_and(|w| w.contains("pipe_write"))
    })
}

/// VmHWM (peak resident size) of `pid` in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A request that makes the server wait `ms` before answering (a long poll of a quiet
/// process): pushes the server was going to make by then are queued before its answer.
pub async fn server_wait(c: &mut Client, quiet: &str, ms: u64) {
    let read = c
        .call(
            method::PROCESS_READ,
            json!({"processId": quiet, "afterSeq": 0, "waitMs": ms}),
        )
        .await;
    assert_eq!(read["chunks"], json!([]), "{read}");
}

/// No notification of `process_id` arrived while the last responses were awaited.
pub fn nothing_pushed_for(c: &mut Client, process_id: &str) {
    let pushed: Vec<Value> = c
        .take_notifications()
        .into_iter()
        .filter(|n| n["params"]["processId"] == process_id)
        .collect();
    assert!(
        pushed.is_empty(),
        "pushed while its window was full: {pushed:?}"
    );
}

/// Pushed events of `consumer`'s process (others are dropped) until `done` holds.
pub async fn consume_until(
    c: &mut Client,
    consumer: &mut Consumer,
    ack: bool,
    done: impl Fn(&Consumer) -> bool,
) {
    while !done(consumer) {
        let n = c.notification().await;
        if n["params"]["processId"] != consumer.process_id.as_str() {
            continue;
        }
        consumer.on_event(&n);
        if ack && n["method"] == notification::PROCESS_OUTPUT {
            consumer.ack(c).await;
        }
    }
}

pub const BIG: u64 = 64 * 1024 * 1024;
pub const FAST_PATTERN: &[u8] = b"0123456789abcdef\n";
pub const STALLED_PATTERN: &[u8] = b"stalled-process-output\n";

/// `sh -c` printing `pattern` (a line) repeatedly, `bytes` in all.
pub fn pattern_argv(pattern: &[u8], bytes: u64) -> Vec<String> {
    let line = std::str::from_utf8(&pattern[..pattern.len() - 1]).unwrap();
    vec![
        "sh".into(),
        "-c".into(),
        format!("yes {line} | head -c {bytes}"),
    ]
}

pub async fn start_argv(c: &mut Client, process_id: &str, argv: &[String]) -> Value {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    c.start(process_id, &argv, json!({})).await
}
