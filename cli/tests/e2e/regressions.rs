//! Regression tests of defects found in hardening: responses lost at end of input, requests pipelined after a start not seeing the process, unbounded memory per connection, WebSocket framing and liveness faults.

use std::process::Stdio;

use exec_server_protocol::{method, notification};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::client::{Kind, ServerProc, b64, bin, unb64, within};

/// Runs a stdio server on `lines` written at once (stdin then closed) and returns every
/// message it printed and its exit code.
async fn run_stdio(lines: &[Value], extra: &[&str]) -> (Vec<Value>, i32) {
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "stdio", "--log-level", "warn"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn exec-server");
    let mut input = String::new();
    for line in lines {
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let reading = tokio::spawn(async move {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await.map(|_| out)
    });
    stdin.write_all(input.as_bytes()).await.expect("write");
    drop(stdin);
    let out = within("the server's output to end", reading)
        .await
        .expect("join")
        .expect("read");
    let status = within("the server to exit", child.wait())
        .await
        .expect("wait");
    let messages = String::from_utf8(out)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    (messages, status.code().unwrap_or(-1))
}

fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn handshake_lines() -> Vec<Value> {
    vec![
        request(1, method::INITIALIZE, json!({"clientName": "e2e"})),
        json!({"jsonrpc": "2.0", "method": notification::INITIALIZED}),
    ]
}

fn start_params(process_id: &str, argv: &[&str]) -> Value {
    json!({"processId": process_id, "argv": argv, "cwd": "/tmp",
           "env": {"PATH": "/usr/bin:/bin"}, "pipeStdin": true})
}

fn response(messages: &[Value], id: u64) -> Option<&Value> {
    messages
        .iter()
        .find(|m| m["id"] == id && m.get("method").is_none())
}

/// SPEC 2: at end of input every request read is answered, a pending long poll at once
/// with what it has — before the processes are terminated, so it still sees the process
/// running. (Before the fix the poll was cancelled at shutdown, or answered only after
/// the termination it does not wait for.)
#[tokio::test]
async fn end_of_input_answers_a_pending_long_poll_at_once() {
    let mut lines = handshake_lines();
    lines.push(request(
        2,
        method::PROCESS_START,
        start_params("p", &["sleep", "60"]),
    ));
    lines.push(request(
        3,
        method::PROCESS_READ,
        json!({"processId": "p", "afterSeq": 0, "waitMs": 300_000}),
    ));
    lines.push(request(4, method::PROCESS_LIST, json!({})));
    let (messages, code) = run_stdio(&lines, &[]).await;
    assert_eq!(code, 0);
    for id in 1..=4 {
        let r =
            response(&messages, id).unwrap_or_else(|| panic!("no response {id}: {messages:#?}"));
        assert!(r.get("error").is_none(), "{r}");
    }
    let read = &response(&messages, 3).unwrap()["result"];
    assert_eq!(read["chunks"], json!([]), "{read}");
    assert_eq!(
        read["exited"], false,
        "the poll waited for the termination: {read}"
    );
    assert_eq!(read["closed"], false, "{read}");
    // The process was still terminated, and its last events written.
    let exited = messages
        .iter()
        .find(|m| m["method"] == notification::PROCESS_EXITED)
        .unwrap_or_else(|| panic!("no exit event: {messages:#?}"));
    assert_eq!(exited["params"]["signal"], "SIGTERM", "{exited}");
}

/// SPEC 2, repeated on the real binary: requests piped in with a read and a list as the
/// last lines are all answered, every run.
#[tokio::test]
async fn requests_piped_before_end_of_input_are_all_answered() {
    for run in 0..20 {
        let mut lines = handshake_lines();
        lines.push(request(
            2,
            method::PROCESS_START,
            start_params("p", &["sh", "-c", "echo hi"]),
        ));
        lines.push(request(
            3,
            method::PROCESS_READ,
            json!({"processId": "p", "afterSeq": 0, "waitMs": 300_000}),
        ));
        lines.push(request(4, method::PROCESS_LIST, json!({})));
        let (messages, code) = run_stdio(&lines, &[]).await;
        assert_eq!(code, 0, "run {run}");
        for id in 1..=4 {
            let r = response(&messages, id)
                .unwrap_or_else(|| panic!("run {run}: no response {id}: {messages:#?}"));
            assert!(r.get("error").is_none(), "run {run}: {r}");
        }
    }
}

/// SPEC 5.3: requests sent right after a `process/start`, without waiting for its
/// response, see the process: a write is `starting` or `accepted` (never
/// `unknownProcess`), a read waits for it (never -32004), signal and terminate reach it,
/// and list shows it.
async fn pipelined_requests_see_the_started_process(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    for i in 0..20 {
        let pid = format!("p{i}");
        let start = c
            .send_request(
                method::PROCESS_START,
                start_params(&pid, &["sh", "-c", "echo ready; exec cat"]),
            )
            .await;
        let write = c
            .send_request(
                method::PROCESS_WRITE,
                json!({"processId": pid, "chunk": b64(b"x\n")}),
            )
            .await;
        let read = c
            .send_request(
                method::PROCESS_READ,
                json!({"processId": pid, "afterSeq": 0, "waitMs": 20_000}),
            )
            .await;
        let signal = c
            .send_request(
                method::PROCESS_SIGNAL,
                json!({"processId": pid, "signal": "SIGCONT"}),
            )
            .await;
        let list = c.send_request(method::PROCESS_LIST, json!({})).await;

        let r = c.response(&start).await;
        assert!(r.get("error").is_none(), "{r}");
        let r = c.response(&write).await;
        let status = r["result"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            status == "starting" || status == "accepted",
            "write {i}: {r}"
        );
        let r = c.response(&read).await;
        assert!(r.get("error").is_none(), "read {i}: {r}");
        let chunks = r["result"]["chunks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!chunks.is_empty(), "read {i}: {r}");
        assert_eq!(chunks[0]["seq"], 1, "{r}");
        // `cat` may echo the write into the same chunk.
        assert!(unb64(&chunks[0]["chunk"]).starts_with(b"ready\n"), "{r}");
        let r = c.response(&signal).await;
        assert_eq!(r["result"], json!({"delivered": true}), "signal {i}: {r}");
        let r = c.response(&list).await;
        let listed = r["result"]["processes"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["processId"] == pid.as_str()));
        assert!(listed, "list {i}: {r}");
        // (A terminate sent here would race the read, which runs in a task of its own.)
        let r = c
            .request(
                method::PROCESS_TERMINATE,
                json!({"processId": pid, "graceMs": 0}),
            )
            .await;
        assert_eq!(r["result"], json!({"running": true}), "terminate {i}: {r}");
    }
    Ok(())
}

#[tokio::test]
async fn pipelined_requests_see_the_started_process_stdio() -> anyhow::Result<()> {
    pipelined_requests_see_the_started_process(Kind::Stdio).await
}

#[tokio::test]
async fn pipelined_requests_see_the_started_process_ws() -> anyhow::Result<()> {
    pipelined_requests_see_the_started_process(Kind::Ws).await
}
