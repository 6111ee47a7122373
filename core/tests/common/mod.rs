//! Helpers shared by core's integration tests: params builders, a channel sink, deadline-bounded reads.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use exec_server_core::{Event, EventSink, Session, SessionConfig, SinkClosed};
use exec_server_protocol::*;
use tokio::sync::mpsc;

/// Every wait in these tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn env_path() -> BTreeMap<String, String> {
    [("PATH".to_string(), "/usr/bin:/bin".to_string())].into()
}

pub fn params(id: &str, argv: &[&str]) -> ProcessStartParams {
    ProcessStartParams {
        merge_stderr: false,
        process_id: id.to_string(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: "/".to_string(),
        env: env_path(),
        inherit_env: false,
        tty: false,
        pipe_stdin: false,
        arg0: None,
        size: None,
        timeout_ms: None,
        user: None,
    }
}

pub fn sh(id: &str, script: &str) -> ProcessStartParams {
    params(id, &["sh", "-c", script])
}

/// Start and release at once.
pub async fn start(session: &Session, p: ProcessStartParams) -> ProcessStartResult {
    let started = session.start(p).await.expect("start");
    let result = started.result.clone();
    started.release();
    result
}

/// A sink backed by a bounded channel: `send` waits while it is full.
pub struct ChannelSink(pub mpsc::Sender<Event>);

#[async_trait::async_trait]
impl EventSink for ChannelSink {
    async fn send(&self, event: Event) -> Result<(), SinkClosed> {
        self.0.send(event).await.map_err(|_| SinkClosed)
    }
}

pub fn channel_sink(capacity: usize) -> (Arc<ChannelSink>, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Arc::new(ChannelSink(tx)), rx)
}

pub async fn recv(rx: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("event within the deadline")
        .expect("sink channel open")
}

/// Receive events of `id` until its `closed` event (inclusive).
pub async fn events_until_closed(rx: &mut mpsc::Receiver<Event>, id: &str) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let e = recv(rx).await;
        if e.process_id() != id {
            continue;
        }
        let closed = matches!(e, Event::Closed(_));
        events.push(e);
        if closed {
            return events;
        }
    }
}

pub fn read_params(id: &str, after_seq: u64, wait_ms: u64) -> ProcessReadParams {
    ProcessReadParams {
        process_id: id.to_string(),
        after_seq,
        max_bytes: None,
        wait_ms,
    }
}

/// Follow a process with long polls until it is closed; returns every chunk seen and the last result.
pub async fn read_until_closed(
    session: &Session,
    id: &str,
) -> (Vec<OutputChunk>, ProcessReadResult) {
    read_until(session, id, 0, |r, _| r.closed).await
}

/// Follow a process with long polls from `after_seq` until `done(last result, all chunks)`.
pub async fn read_until(
    session: &Session,
    id: &str,
    mut after_seq: u64,
    mut done: impl FnMut(&ProcessReadResult, &[OutputChunk]) -> bool,
) -> (Vec<OutputChunk>, ProcessReadResult) {
    let mut chunks = Vec::new();
    let fut = async {
        loop {
            let r = session
                .read(read_params(id, after_seq, 10_000))
                .await
                .expect("read");
            chunks.extend(r.chunks.iter().cloned());
            after_seq = r.next_seq - 1;
            if done(&r, &chunks) {
                return r;
            }
        }
    };
    let last = tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("condition within the deadline");
    (chunks, last)
}

pub fn concat(chunks: &[OutputChunk], stream: Stream) -> String {
    let bytes: Vec<u8> = chunks
        .iter()
        .filter(|c| c.stream == stream)
        .flat_map(|c| c.chunk.as_bytes().to_vec())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn output(id: &str, seq: u64, stream: Stream, bytes: &str) -> Event {
    Event::Output(ProcessOutputNotification {
        process_id: id.to_string(),
        seq,
        stream,
        chunk: Base64Bytes::from(bytes),
    })
}

pub fn exited(id: &str, seq: u64, exit_code: i32, signal: Option<&str>) -> Event {
    Event::Exited(ProcessExitedNotification {
        process_id: id.to_string(),
        seq,
        exit_code,
        signal: signal.map(str::to_string),
        timed_out: false,
    })
}

pub fn closed(id: &str, seq: u64) -> Event {
    Event::Closed(ProcessClosedNotification {
        timed_out: false,
        process_id: id.to_string(),
        seq,
    })
}

/// Poll an external condition (the OS process table) until it holds, within the deadline.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fields of /proc/PID/stat after the command name: (state, ppid, pgrp).
pub fn proc_stat(pid: u32) -> Option<(char, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// The terminal's foreground process group as /proc/PID/stat reports it (tpgid).
pub fn proc_tpgid(pid: u32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    rest.split(' ').nth(5)?.parse().ok()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

/// Live processes named `comm` whose `/proc/PID/stat` (state, ppid, pgrp) satisfies `keep`.
fn live_named(comm: &str, keep: impl Fn((char, i32, i32)) -> bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            name.trim_end() == comm && alive(pid) && proc_stat(pid).is_some_and(&keep)
        })
        .collect()
}

/// Live processes whose process group is `pgrp` and whose command name is `comm`.
pub fn group_members(pgrp: u32, comm: &str) -> Vec<u32> {
    live_named(comm, |(_, _, g)| g == pgrp as i32)
}

/// Live processes named `comm` whose parent is `ppid`.
pub fn children_named(ppid: u32, comm: &str) -> Vec<u32> {
    live_named(comm, |(_, pp, _)| pp == ppid as i32)
}

/// Threads of this test process, from /proc/self/status.
pub fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line")
}

/// A session with the default limits.
pub fn session() -> Arc<Session> {
    Session::new(SessionConfig::default())
}

/// `process/write` of `bytes`; the status.
pub fn write(s: &Session, id: &str, bytes: &str, write_id: Option<&str>) -> WriteStatus {
    s.write(ProcessWriteParams {
        wait_written: false,
        process_id: id.into(),
        chunk: bytes.into(),
        write_id: write_id.map(str::to_string),
    })
    .unwrap()
    .status
}

/// `process/closeStdin`; the status.
pub fn close_stdin(s: &Session, id: &str) -> WriteStatus {
    s.close_stdin(ProcessCloseStdinParams {
        process_id: id.into(),
    })
    .status
}
