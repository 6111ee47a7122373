//! Scenarios over stdio, and the stdio-only behaviour: EOF and SIGTERM clean-up.

use exec_server_protocol::{method, notification};
use serde_json::json;

use crate::client::{Kind, ServerProc, alive, exists, unb64, wait_until};
use crate::scenarios;

#[tokio::test]
async fn handshake() -> anyhow::Result<()> {
    scenarios::handshake(Kind::Stdio).await
}

#[tokio::test]
async fn lifecycle() -> anyhow::Result<()> {
    scenarios::lifecycle(Kind::Stdio).await
}

#[tokio::test]
async fn long_poll_and_writes() -> anyhow::Result<()> {
    scenarios::long_poll_and_writes(Kind::Stdio).await
}

#[tokio::test]
async fn tty() -> anyhow::Result<()> {
    scenarios::tty(Kind::Stdio).await
}

#[tokio::test]
async fn signals_and_terminate() -> anyhow::Result<()> {
    scenarios::signals_and_terminate(Kind::Stdio).await
}

#[tokio::test]
async fn errors() -> anyhow::Result<()> {
    scenarios::errors(Kind::Stdio).await
}

/// Starts a process with a background grandchild; returns (child pid, grandchild pid).
pub async fn start_family(c: &mut crate::client::Client, process_id: &str) -> (u32, u32) {
    let result = c
        .start(
            process_id,
            &["sh", "-c", "sleep 60 & echo $!; exec sleep 61"],
            json!({}),
        )
        .await;
    let child = result["pid"].as_u64().unwrap() as u32;
    let n = c.notification().await;
    assert_eq!(n["method"], notification::PROCESS_OUTPUT, "{n}");
    let grandchild: u32 = String::from_utf8(unb64(&n["params"]["chunk"]))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(child) && alive(grandchild));
    (child, grandchild)
}

#[tokio::test]
async fn stdin_eof_terminates_every_process_and_exits_0() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let (child, grandchild) = start_family(&mut c, "fam").await;
    c.close().await?;
    // The exit and close of the process are still flushed to stdout before the server exits.
    let events = c.events_until_closed("fam").await;
    assert!(
        events
            .iter()
            .any(|e| e["method"] == notification::PROCESS_EXITED)
    );
    assert_eq!(server.wait_exit().await?, 0);
    assert!(!exists(child), "child {child} survived");
    wait_until("the grandchild to die", || !alive(grandchild)).await;
    Ok(())
}

#[tokio::test]
async fn sigterm_terminates_every_process_and_exits_0() -> anyhow::Result<()> {
    signal_terminates_every_process_and_exits_0(libc::SIGTERM).await
}

#[tokio::test]
async fn sigint_terminates_every_process_and_exits_0() -> anyhow::Result<()> {
    signal_terminates_every_process_and_exits_0(libc::SIGINT).await
}

async fn signal_terminates_every_process_and_exits_0(signal: i32) -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let (child, grandchild) = start_family(&mut c, "fam").await;
    // The handshake answered, so the signal handlers are installed.
    c.call(method::PROCESS_LIST, json!({})).await;
    server.signal(signal);
    assert_eq!(server.wait_exit().await?, 0);
    assert!(!exists(child), "child {child} survived");
    wait_until("the grandchild to die", || !alive(grandchild)).await;
    Ok(())
}
