//! `session/close` (SPEC 5.10) through the real binary, over both transports: processes terminated and reaped, the answer after their last events, the connection ended, the session gone.

use exec_server_protocol::{ErrorCode, method, notification};
use serde_json::{Value, json};

use crate::client::{Client, Kind, ServerProc, exists, unb64};
use crate::window_client::{Consumer, W, consume_until, init};

/// `session/close` ends the session: every process (one ignoring SIGTERM, one held back
/// by a window that is never acked) is terminated and reaped, the response comes after
/// their last events, and the server closes the connection.
pub async fn session_close(kind: Kind, binary: bool) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    let session = init(&mut c, Some(W), binary, None).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut pids = Vec::new();
    for (id, argv) in [
        ("sleeper", vec!["sleep", "600"]),
        (
            "stubborn",
            vec![
                "sh",
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 1; done",
            ],
        ),
        ("stalled", vec!["sh", "-c", "yes | head -c 67108864"]),
    ] {
        let started = c.start(id, &argv, json!({})).await;
        pids.push(started["pid"].as_u64().unwrap() as u32);
    }
    // The stubborn one has set up its trap once it printed.
    let read = c
        .call(
            method::PROCESS_READ,
            json!({"processId": "stubborn", "afterSeq": 0, "waitMs": 30_000}),
        )
        .await;
    assert_eq!(unb64(&read["chunks"][0]["chunk"]), b"ready\n", "{read}");
    let mut stalled = Consumer::new("stalled", b"y\n", W);
    consume_until(&mut c, &mut stalled, false, |s| s.received >= W).await;

    let log_start = c.log.len();
    let id = c.send_request(method::SESSION_CLOSE, json!({})).await;
    let response = c.response(&id).await;
    assert_eq!(response["result"], json!({}), "{response}");
    // Every child is reaped by now.
    for pid in &pids {
        assert!(!exists(*pid), "pid {pid} is still there");
    }
    // Each process's exit and close came before the response; the stubborn one was killed.
    let log = &c.log[log_start..];
    let at = log.iter().position(|m| m["id"] == id).unwrap();
    for process_id in ["sleeper", "stubborn", "stalled"] {
        let closed = log.iter().position(|m| {
            m["method"] == notification::PROCESS_CLOSED && m["params"]["processId"] == process_id
        });
        assert!(
            closed.is_some_and(|closed| closed < at),
            "{process_id}: closed at {closed:?}, response at {at}"
        );
    }
    let stubborn_exit = log
        .iter()
        .find(|m| {
            m["method"] == notification::PROCESS_EXITED && m["params"]["processId"] == "stubborn"
        })
        .unwrap();
    assert_eq!(
        stubborn_exit["params"]["signal"], "SIGKILL",
        "{stubborn_exit}"
    );

    // The server closes the connection.
    let next = crate::client::within("the connection to close", c.recv_text()).await?;
    assert!(next.is_none(), "after the close response: {next:?}");
    if kind == Kind::Stdio {
        assert_eq!(server.wait_exit().await?, 0);
        return Ok(());
    }
    // The session is gone.
    let mut again = Client::ws(server.url()).await?;
    again
        .call_err(
            method::INITIALIZE,
            json!({"clientName": "e2e", "resumeSessionId": session}),
            ErrorCode::SessionNotFound,
        )
        .await;
    // The server still serves other connections.
    let mut other = Client::ws(server.url()).await?;
    other.handshake().await;
    assert_eq!(
        other.call(method::PROCESS_LIST, json!({})).await,
        json!({"processes": []})
    );
    Ok(())
}

#[tokio::test]
async fn session_close_stdio() -> anyhow::Result<()> {
    session_close(Kind::Stdio, false).await
}

#[tokio::test]
async fn session_close_ws_json() -> anyhow::Result<()> {
    session_close(Kind::Ws, false).await
}

#[tokio::test]
async fn session_close_ws_binary() -> anyhow::Result<()> {
    session_close(Kind::Ws, true).await
}

/// `session/close` before the handshake, then twice in a row and a request behind them:
/// that request gets -32600, both closes `{}` (the first one first), then the connection
/// ends.
async fn session_close_twice(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.call_err(method::SESSION_CLOSE, json!({}), ErrorCode::InvalidRequest)
        .await;
    c.call(method::INITIALIZE, json!({"clientName": "e2e"}))
        .await;
    c.call_err(method::SESSION_CLOSE, json!({}), ErrorCode::InvalidRequest)
        .await;
    c.notify(notification::INITIALIZED, json!({})).await;
    // It ignores SIGTERM, so the close takes the whole grace (1 s): the server reads the
    // requests pipelined behind it long before it ends the connection (messages it has
    // not read by then go unanswered).
    c.start(
        "p",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        ],
        json!({}),
    )
    .await;
    let ready = c
        .call(
            method::PROCESS_READ,
            json!({"processId": "p", "afterSeq": 0, "waitMs": 30_000}),
        )
        .await;
    assert_eq!(ready["chunks"].as_array().map(Vec::len), Some(1), "{ready}");

    let first = c.send_request(method::SESSION_CLOSE, json!({})).await;
    let second = c.send_request(method::SESSION_CLOSE, json!({})).await;
    let between = c.send_request(method::PROCESS_LIST, json!({})).await;
    let refused = c.response(&between).await;
    assert_eq!(
        refused["error"]["code"],
        ErrorCode::InvalidRequest.code(),
        "{refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains(method::SESSION_CLOSE), "{message}");
    let log_start = c.log.len();
    assert_eq!(c.response(&first).await["result"], json!({}));
    assert_eq!(c.response(&second).await["result"], json!({}));
    let at = |id: &Value| c.log[log_start..].iter().position(|m| &m["id"] == id);
    assert!(at(&first) < at(&second), "{:?}", &c.log[log_start..]);
    let next = crate::client::within("the connection to close", c.recv_text()).await?;
    assert!(next.is_none(), "{next:?}");
    Ok(())
}

#[tokio::test]
async fn session_close_twice_over_stdio() -> anyhow::Result<()> {
    session_close_twice(Kind::Stdio).await
}

#[tokio::test]
async fn session_close_twice_over_ws() -> anyhow::Result<()> {
    session_close_twice(Kind::Ws).await
}
