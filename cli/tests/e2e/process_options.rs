//! Options of a process over both transports of the real binary: `mergeStderr` (SPEC 5.1),
//! `waitWritten` and the pending-stdin limit (SPEC 5.3), and `process/release` (SPEC 5.9).

use exec_server_protocol::notification;
use serde_json::json;

use crate::client::{Kind, ServerProc, output_of};

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
