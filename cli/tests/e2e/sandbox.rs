//! `timeoutMs` and `user` on `process/start` over both transports: a timed-out process is
//! terminated and says so, one that finishes in time does not, the limit holds until
//! `closed`, a process runs as another user, and a server that is not root refuses to
//! switch users.

use exec_server_protocol::{ErrorCode, method, notification};
use serde_json::{Value, json};

use crate::client::{Kind, ServerProc, as_nobody, is_root, output_of};

async fn timeouts(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    // Ignores SIGTERM: the timeout's terminate needs its SIGKILL after the default grace.
    c.start(
        "slow",
        &["sh", "-c", "trap '' TERM; echo ready; exec sleep 1000"],
        json!({"timeoutMs": 300}),
    )
    .await;
    let events = c.events_until_closed("slow").await;
    assert_eq!(output_of(&events), b"ready\n");
    let exited = events
        .iter()
        .find(|e| e["method"] == notification::PROCESS_EXITED)
        .expect("exited");
    assert_eq!(
        exited["params"],
        json!({"processId": "slow", "seq": 2, "exitCode": 137, "signal": "SIGKILL", "timedOut": true})
    );
    let read = c
        .call(
            method::PROCESS_READ,
            json!({"processId": "slow", "afterSeq": 3}),
        )
        .await;
    assert_eq!(read["timedOut"], true, "{read}");

    c.start(
        "quick",
        &["sh", "-c", "exit 5"],
        json!({"timeoutMs": 60000}),
    )
    .await;
    let events = c.events_until_closed("quick").await;
    assert_eq!(
        events[0]["params"],
        json!({"processId": "quick", "seq": 1, "exitCode": 5, "signal": null, "timedOut": false})
    );
    let list = c.call(method::PROCESS_LIST, json!({})).await;
    let timed_out: Vec<(&str, bool)> = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["processId"].as_str().unwrap(),
                p["timedOut"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(timed_out, [("slow", true), ("quick", false)]);
    Ok(())
}

#[tokio::test]
async fn timeouts_stdio() -> anyhow::Result<()> {
    timeouts(Kind::Stdio).await
}

#[tokio::test]
async fn timeouts_ws() -> anyhow::Result<()> {
    timeouts(Kind::Ws).await
}

/// SPEC 5.1: the limit holds until `closed`. The leader exits in time, but a member of its
/// group keeps the output open past the deadline: the group is terminated then, and
/// `closed`, read results and list entries say `timedOut` (the exit does not: the leader
/// ended on its own).
async fn a_timeout_holds_until_closed(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start(
        "bg",
        &["sh", "-c", "sleep 600 & echo started"],
        json!({"timeoutMs": 500}),
    )
    .await;
    let events = c.events_until_closed("bg").await;
    assert_eq!(output_of(&events), b"started\n");
    let tail: Vec<&Value> = events[1..].iter().map(|e| &e["params"]).collect();
    assert_eq!(
        tail,
        [
            &json!({"processId": "bg", "seq": 2, "exitCode": 0, "signal": null, "timedOut": false}),
            &json!({"processId": "bg", "seq": 3, "timedOut": true}),
        ]
    );
    let read = c
        .call(
            method::PROCESS_READ,
            json!({"processId": "bg", "afterSeq": 3}),
        )
        .await;
    assert_eq!(
        (&read["closed"], &read["timedOut"]),
        (&json!(true), &json!(true)),
        "{read}"
    );
    let list = c.call(method::PROCESS_LIST, json!({})).await;
    assert_eq!(list["processes"][0]["timedOut"], true, "{list}");
    // One that closes in time is never marked.
    c.start(
        "quick",
        &["sh", "-c", "sleep 0.1 & echo started"],
        json!({"timeoutMs": 60000}),
    )
    .await;
    let events = c.events_until_closed("quick").await;
    let closed = events.last().map(|e| &e["params"]);
    assert_eq!(
        closed,
        Some(&json!({"processId": "quick", "seq": 3, "timedOut": false}))
    );
    Ok(())
}

#[tokio::test]
async fn a_timeout_holds_until_closed_stdio() -> anyhow::Result<()> {
    a_timeout_holds_until_closed(Kind::Stdio).await
}

#[tokio::test]
async fn a_timeout_holds_until_closed_ws() -> anyhow::Result<()> {
    a_timeout_holds_until_closed(Kind::Ws).await
}

async fn run_as_user(kind: Kind) -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("skipped: switching users needs a server running as root");
        return Ok(());
    }
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start("id", &["id", "-u"], json!({"user": "nobody"}))
        .await;
    let events = c.events_until_closed("id").await;
    assert_eq!(output_of(&events), b"65534\n");
    let e = c
        .call_err(
            method::PROCESS_START,
            json!({"processId": "x", "argv": ["true"], "cwd": "/", "env": {}, "user": "no-such-user-xyz"}),
            ErrorCode::SpawnFailed,
        )
        .await;
    assert_eq!(e["message"], "unknown user \"no-such-user-xyz\"");
    Ok(())
}

#[tokio::test]
async fn run_as_user_stdio() -> anyhow::Result<()> {
    run_as_user(Kind::Stdio).await
}

#[tokio::test]
async fn run_as_user_ws() -> anyhow::Result<()> {
    run_as_user(Kind::Ws).await
}

async fn a_server_that_is_not_root_cannot_switch_users(kind: Kind) -> anyhow::Result<()> {
    let mut server = if is_root() {
        match as_nobody(kind, &[]).await? {
            Some(server) => server,
            None => {
                eprintln!("skipped: running as root and there is no `nobody` account");
                return Ok(());
            }
        }
    } else {
        ServerProc::start(kind, &[]).await?
    };
    let mut c = server.client().await?;
    c.handshake().await;
    let e = c
        .call_err(
            method::PROCESS_START,
            json!({"processId": "x", "argv": ["true"], "cwd": "/", "env": {}, "user": "root"}),
            ErrorCode::SpawnFailed,
        )
        .await;
    assert_eq!(
        e["message"],
        "cannot run as user \"root\": only a server running as root can switch users"
    );
    Ok(())
}

#[tokio::test]
async fn a_server_that_is_not_root_cannot_switch_users_stdio() -> anyhow::Result<()> {
    a_server_that_is_not_root_cannot_switch_users(Kind::Stdio).await
}

#[tokio::test]
async fn a_server_that_is_not_root_cannot_switch_users_ws() -> anyhow::Result<()> {
    a_server_that_is_not_root_cannot_switch_users(Kind::Ws).await
}
