//! Options of a process over both transports of the real binary: `mergeStderr` (SPEC 5.1),
//! `waitWritten` and the pending-stdin limit (SPEC 5.3), and `process/release` (SPEC 5.9).

use exec_server_protocol::{ErrorCode, method, notification};
use serde_json::json;

use crate::client::{Kind, ServerProc, b64, output_of, within};

async fn merge_stderr(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let script = "echo one; echo two >&2; echo three; echo four >&2; printf five >&2";
    c.start(
        "merged",
        &["sh", "-c", script],
        json!({"mergeStderr": true}),
    )
    .await;
    let events = c.events_until_closed("merged").await;
    let streams: Vec<&str> = events
        .iter()
        .filter(|e| e["method"] == notification::PROCESS_OUTPUT)
        .map(|e| e["params"]["stream"].as_str().unwrap_or_default())
        .collect();
    assert!(
        !streams.is_empty() && streams.iter().all(|s| *s == "stdout"),
        "{events:?}"
    );
    // One pipe: exactly the order the program wrote.
    assert_eq!(output_of(&events), b"one\ntwo\nthree\nfour\nfive");

    // Under a tty it is accepted and changes nothing: the terminal merges already.
    c.start(
        "tty",
        &["sh", "-c", "echo out; echo err >&2"],
        json!({"tty": true, "mergeStderr": true}),
    )
    .await;
    let events = c.events_until_closed("tty").await;
    assert!(
        events
            .iter()
            .filter(|e| e["method"] == notification::PROCESS_OUTPUT)
            .all(|e| e["params"]["stream"] == "pty"),
        "{events:?}"
    );
    assert_eq!(output_of(&events), b"out\r\nerr\r\n");
    Ok(())
}

#[tokio::test]
async fn merge_stderr_stdio() -> anyhow::Result<()> {
    merge_stderr(Kind::Stdio).await
}

#[tokio::test]
async fn merge_stderr_ws() -> anyhow::Result<()> {
    merge_stderr(Kind::Ws).await
}

/// A child that reads nothing from its stdin until SIGUSR1, then counts all of it.
/// (The signal goes to the group: the loop's `sleep` dies of it too, and the shell's note
/// about that goes to /dev/null.)
const READS_ON_USR1: &str =
    "trap 'exec wc -c' USR1; echo ready; while :; do sleep 0.05; done 2>/dev/null";

async fn wait_written(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &["--max-pending-stdin-bytes", "4194304"]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start(
        "r",
        &["sh", "-c", READS_ON_USR1],
        json!({"pipeStdin": true}),
    )
    .await;
    let first = c.notification().await;
    assert_eq!(output_of(&[first]), b"ready\n");
    // More than any pipe holds: answered only once the child has read it.
    let big = vec![b'x'; 1 << 20];
    let waiting = c
        .send_request(
            method::PROCESS_WRITE,
            json!({"processId": "r", "chunk": b64(&big), "waitWritten": true}),
        )
        .await;
    // Other requests are answered meanwhile, and a plain write is answered when queued
    // (its bytes go after the waiting write's).
    let list = c.call(method::PROCESS_LIST, json!({})).await;
    assert_eq!(list["processes"][0]["processId"], "r");
    let tail = c
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "r", "chunk": b64(b"tail")}),
        )
        .await;
    assert_eq!(tail, json!({"status": "accepted"}));
    let stray = c.take_stray();
    assert!(stray.iter().all(|r| r["id"] != waiting), "{stray:?}");
    let signal = c
        .call(
            method::PROCESS_SIGNAL,
            json!({"processId": "r", "signal": "SIGUSR1"}),
        )
        .await;
    assert_eq!(signal, json!({"delivered": true}));
    let answer = c.response(&waiting).await;
    assert_eq!(answer["result"], json!({"status": "accepted"}), "{answer}");
    c.call(method::PROCESS_CLOSE_STDIN, json!({"processId": "r"}))
        .await;
    let events = c.events_until_closed("r").await;
    assert_eq!(
        output_of(&events),
        format!("{}\n", (1 << 20) + 4).as_bytes()
    );

    // To a process whose stdin is closed (none was asked for): stdinClosed at once.
    c.start("no-stdin", &["sleep", "1000"], json!({})).await;
    let r = c
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "no-stdin", "chunk": b64(b"x"), "waitWritten": true}),
        )
        .await;
    assert_eq!(r, json!({"status": "stdinClosed"}));
    // A write waiting when the process dies without reading: stdinClosed.
    c.start(
        "dies",
        &["sh", "-c", READS_ON_USR1],
        json!({"pipeStdin": true}),
    )
    .await;
    let waiting = c
        .send_request(
            method::PROCESS_WRITE,
            json!({"processId": "dies", "chunk": b64(&big), "waitWritten": true}),
        )
        .await;
    c.call(
        method::PROCESS_TERMINATE,
        json!({"processId": "dies", "graceMs": 0}),
    )
    .await;
    let answer = c.response(&waiting).await;
    assert_eq!(
        answer["result"],
        json!({"status": "stdinClosed"}),
        "{answer}"
    );
    c.call(
        method::PROCESS_TERMINATE,
        json!({"processId": "no-stdin", "graceMs": 0}),
    )
    .await;
    Ok(())
}

#[tokio::test]
async fn wait_written_stdio() -> anyhow::Result<()> {
    wait_written(Kind::Stdio).await
}

#[tokio::test]
async fn wait_written_ws() -> anyhow::Result<()> {
    wait_written(Kind::Ws).await
}

/// At end of input a write still waiting is answered (SPEC 2: nothing read goes
/// unanswered), and the server still exits.
#[tokio::test]
async fn a_waiting_write_is_answered_at_end_of_input() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start(
        "r",
        &["sh", "-c", READS_ON_USR1],
        json!({"pipeStdin": true}),
    )
    .await;
    let waiting = c
        .send_request(
            method::PROCESS_WRITE,
            json!({"processId": "r", "chunk": b64(&vec![b'x'; 1 << 20]), "waitWritten": true}),
        )
        .await;
    c.close().await?;
    let answer = c.response(&waiting).await;
    assert_eq!(
        answer["result"],
        json!({"status": "stdinClosed"}),
        "{answer}"
    );
    assert_eq!(server.wait_exit().await?, 0);
    Ok(())
}

/// SPEC 5.9: a client that releases every process it is done with never meets the
/// per-session limit (1024 by default).
async fn released_processes_never_meet_the_limit(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let e = c
        .call_err(
            method::PROCESS_RELEASE,
            json!({"processId": "nobody"}),
            ErrorCode::ProcessNotFound,
        )
        .await;
    assert!(
        e["message"].as_str().unwrap_or_default().contains("nobody"),
        "{e}"
    );
    for i in 0..1100 {
        let id = format!("p{i}");
        c.start(&id, &["true"], json!({})).await;
        if i % 2 == 0 {
            // Released while it may still run: forgotten once it closes.
            c.call(method::PROCESS_RELEASE, json!({"processId": id}))
                .await;
            c.events_until_closed(&id).await;
        } else {
            // Released after it closed: forgotten at once.
            c.events_until_closed(&id).await;
            c.call(method::PROCESS_RELEASE, json!({"processId": id}))
                .await;
        }
    }
    // Nothing is retained once every process has closed.
    wait_until_listed(&mut c, 0).await;
    Ok(())
}

/// Lists until the session retains `n` processes (a released process is forgotten right
/// after its `closed` was pushed).
async fn wait_until_listed(c: &mut crate::client::Client, n: usize) {
    within("the released processes to be forgotten", async {
        loop {
            let list = c.call(method::PROCESS_LIST, json!({})).await;
            if list["processes"].as_array().map(Vec::len) == Some(n) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn released_processes_never_meet_the_limit_stdio() -> anyhow::Result<()> {
    released_processes_never_meet_the_limit(Kind::Stdio).await
}

#[tokio::test]
async fn released_processes_never_meet_the_limit_ws() -> anyhow::Result<()> {
    released_processes_never_meet_the_limit(Kind::Ws).await
}
