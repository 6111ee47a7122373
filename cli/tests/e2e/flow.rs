//! Flow control per process (SPEC section 13) through the real binary, over both transports, with JSON and binary output: a stalled consumer holds back its own process only, exited and closed wait for the window, acks, `process/read`, detach, takeover and resume, the end of input.

use exec_server_protocol::{ErrorCode, method, notification};
use serde_json::{Value, json};

use crate::client::{Client, Kind, ServerProc, exists, unb64, wait_until};
use crate::window_client::*;

/// Two processes on one connection with windows: the consumer of one never acks while
/// the other streams 64 MiB; that one gets every byte in order, the stalled child is
/// blocked on its pipe and the server holds nothing of it, and once acked it loses nothing.
pub async fn one_stalled_consumer_holds_back_only_its_process(
    kind: Kind,
    binary: bool,
) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let server_pid = server.pid();
    let mut c = server.client().await?;
    let result = init(&mut c, Some(W), binary, None).await;
    assert_eq!(result["capabilities"]["binaryOutput"], binary);

    let stalled_start = start_argv(&mut c, "stalled", &pattern_argv(STALLED_PATTERN, BIG)).await;
    let stalled_pid = stalled_start["pid"].as_u64().unwrap() as u32;
    start_argv(&mut c, "fast", &pattern_argv(FAST_PATTERN, BIG)).await;
    let mut stalled = Consumer::new("stalled", STALLED_PATTERN, W).expect_binary(binary);
    let mut fast = Consumer::new("fast", FAST_PATTERN, W).expect_binary(binary);

    // The fast consumer acks every chunk as it takes it; the stalled one never acks.
    while !fast.closed || stalled.received < W {
        let n = c.notification().await;
        match n["params"]["processId"].as_str() {
            Some("fast") => {
                fast.on_event(&n);
                if n["method"] == notification::PROCESS_OUTPUT {
                    fast.ack(&mut c).await;
                }
            }
            Some("stalled") => stalled.on_event(&n),
            _ => panic!("unexpected {n}"),
        }
    }
    assert_eq!(fast.received, BIG);
    assert_eq!(fast.exited.as_ref().unwrap()["exitCode"], 0);

    // The stalled process: its child blocks on the pipe, and the server read at most one
    // chunk past what it pushed (the one waiting for the window).
    wait_until("the stalled child to block on its pipe", || {
        blocked_on_pipe(stalled_pid)
    })
    .await;
    let entry = list_entry(&mut c, "stalled").await;
    assert_eq!(entry["exited"], false, "{entry}");
    let next_seq = entry["nextSeq"].as_u64().unwrap();
    assert!(
        next_seq <= stalled.last_seq() + 2,
        "the server read on: nextSeq {next_seq}, last pushed {}",
        stalled.last_seq()
    );
    nothing_pushed_for(&mut c, "stalled");
    let peak = peak_rss_kib(server_pid);
    assert!(
        peak < 100 * 1024,
        "server peak RSS {peak} KiB while streaming 64 MiB past a stalled process"
    );

    // Acked, the stalled process goes on and nothing of it was lost.
    stalled.ack(&mut c).await;
    consume_until(&mut c, &mut stalled, true, |s| s.closed).await;
    assert_eq!(stalled.received, BIG);
    assert_eq!(stalled.exited.as_ref().unwrap()["exitCode"], 0);
    Ok(())
}

/// `exited` and `closed` wait for the window like output does, in seq order: the child
/// is gone (reaped) while its last output and its exit are still held back.
pub async fn exited_and_closed_wait_for_the_window(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    init(&mut c, Some(W), false, None).await;
    c.start("quiet", &["sleep", "600"], json!({})).await;
    let total = W + 4464;
    let started = c
        .start(
            "p",
            &["sh", "-c", &format!("head -c {total} /dev/zero; exit 3")],
            json!({}),
        )
        .await;
    let pid = started["pid"].as_u64().unwrap() as u32;
    let mut p = Consumer::new("p", b"\0", W);
    consume_until(&mut c, &mut p, false, |p| p.received >= W).await;
    assert!(p.exited.is_none());

    // The child wrote everything and exited, and was reaped: its exit is held back.
    wait_until("the child to exit and be reaped", || !exists(pid)).await;
    server_wait(&mut c, "quiet", 300).await;
    nothing_pushed_for(&mut c, "p");

    p.ack(&mut c).await;
    consume_until(&mut c, &mut p, true, |p| p.closed).await;
    assert_eq!(p.received, total);
    assert_eq!(p.exited.as_ref().unwrap()["exitCode"], 3);
    Ok(())
}

/// Acks of an unknown process and acks that do not move forward change nothing; an
/// ack beyond the last pushed event acknowledges everything pushed so far, and no more.
pub async fn ack_semantics(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    init(&mut c, Some(W), false, None).await;
    c.start("quiet", &["sleep", "600"], json!({})).await;
    let total: u64 = 1_000_000;
    start_argv(&mut c, "p", &pattern_argv(b"ack\n", total)).await;
    let mut p = Consumer::new("p", b"ack\n", W);
    consume_until(&mut c, &mut p, false, |p| p.received >= W).await;

    // Unknown process, seq 0, and the first seq again after it was acked: nothing moves.
    let (first, first_bytes) = p.first_unacked().unwrap();
    c.notify(
        notification::PROCESS_ACK,
        json!({"processId": "nobody", "seq": 1_000_000_000u64}),
    )
    .await;
    c.notify(
        notification::PROCESS_ACK,
        json!({"processId": "p", "seq": 0}),
    )
    .await;
    server_wait(&mut c, "quiet", 300).await;
    nothing_pushed_for(&mut c, "p");
    if p.unacked() - first_bytes >= W {
        // Acking the first chunk still leaves the window full: the ack itself, then
        // the same ack again, change nothing visible.
        p.ack_seq(&mut c, first).await;
        p.ack_seq(&mut c, first).await;
        server_wait(&mut c, "quiet", 300).await;
        nothing_pushed_for(&mut c, "p");
    }

    // Far beyond the last pushed event: everything pushed so far is acknowledged, so the
    // window fills once more and stops again (the model checks every push).
    p.ack_seq(&mut c, 1_000_000_000).await;
    let before = p.received;
    consume_until(&mut c, &mut p, false, |p| p.received >= before + W).await;
    server_wait(&mut c, "quiet", 300).await;
    nothing_pushed_for(&mut c, "p");
    // The same far ack again moves forward (to the new last pushed event).
    p.ack_seq(&mut c, 1_000_000_000).await;
    consume_until(&mut c, &mut p, true, |p| p.closed).await;
    assert_eq!(p.received, total);
    Ok(())
}

/// `process/read` is not limited by windows: it returns output read but held back from
/// the push, and an ack of what it read opens the window.
pub async fn read_is_not_limited_by_windows(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    init(&mut c, Some(W), false, None).await;
    let total: u64 = 1_000_000;
    start_argv(&mut c, "p", &pattern_argv(b"read\n", total)).await;
    let mut p = Consumer::new("p", b"read\n", W);
    consume_until(&mut c, &mut p, false, |p| p.received >= W).await;
    let last = p.last_seq();

    // The chunk waiting for the window is retained and readable at once.
    let read = c
        .call(
            method::PROCESS_READ,
            json!({"processId": "p", "afterSeq": last, "waitMs": 30_000}),
        )
        .await;
    let chunks = read["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty(), "{read}");
    assert_eq!(chunks[0]["seq"], last + 1, "{read}");
    let read_through = read["nextSeq"].as_u64().unwrap() - 1;
    assert!(read_through > last);
    nothing_pushed_for(&mut c, "p");

    // The reader acks what it read (beyond the last pushed): pushes go on.
    p.ack_seq(&mut c, read_through).await;
    consume_until(&mut c, &mut p, true, |p| p.closed).await;
    assert_eq!(p.received, total);
    Ok(())
}

/// A detached session's windows hold nothing back: its process runs to the end while
/// no connection is attached.
#[tokio::test]
async fn a_detached_session_is_not_held_back_by_windows() -> anyhow::Result<()> {
    let server = ServerProc::ws(&[]).await?;
    let mut a = Client::ws(server.url()).await?;
    let session = init(&mut a, Some(W), false, None).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let total: u64 = 3_000_000;
    let started = start_argv(&mut a, "p", &pattern_argv(b"detached\n", total)).await;
    let pid = started["pid"].as_u64().unwrap() as u32;
    let mut p = Consumer::new("p", b"detached\n", W);
    consume_until(&mut a, &mut p, false, |p| p.received >= W).await;
    a.close().await?;
    drop(a);

    // It can end only if the server reads all of its output while detached.
    wait_until("the process to finish while detached", || !exists(pid)).await;
    let mut b = Client::ws(server.url()).await?;
    init(&mut b, None, false, Some(&session)).await;
    // A cursor past every event waits for the close.
    let read = b
        .call(
            method::PROCESS_READ,
            json!({"processId": "p", "afterSeq": 1u64 << 60, "waitMs": 30_000}),
        )
        .await;
    assert_eq!(read["closed"], true, "{read}");
    assert_eq!(read["exitCode"], 0, "{read}");
    let retained: u64 = b
        .call(method::PROCESS_READ, json!({"processId": "p"}))
        .await["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| unb64(&c["chunk"]).len() as u64)
        .sum();
    assert_eq!(retained + read["evictedBytes"].as_u64().unwrap(), total);
    Ok(())
}

/// A resumed session starts with every window empty: the new connection takes the
/// session over from one whose window is full (the push waiting there is abandoned),
/// gets pushes at once, catches up with `process/read`, and acks from there on.
#[tokio::test]
async fn a_resumed_session_starts_with_empty_windows() -> anyhow::Result<()> {
    let server = ServerProc::ws(&[]).await?;
    let mut a = Client::ws(server.url()).await?;
    let session = init(&mut a, Some(W), false, None).await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    // 100 000 bytes of `a`, then (after a line on stdin) 400 000 bytes of `b`. The first
    // batch fills A's window, and the rest of it (under 64 KiB) fits in the pipe, so the
    // child gets to `read` either way.
    let (batch1, batch2): (u64, u64) = (100_000, 400_000);
    let script = format!(
        "head -c {batch1} /dev/zero | tr '\\0' a; read x; head -c {batch2} /dev/zero | tr '\\0' b"
    );
    c_start_piped(&mut a, "p", &script).await;
    let mut first = Consumer::new("p", b"a", W);
    consume_until(&mut a, &mut first, false, |p| p.received >= W).await;

    // Resumed with a window, taking the session over from A while A's window is full.
    let mut b = Client::ws(server.url()).await?;
    init(&mut b, Some(W), true, Some(&session)).await;
    // The whole first batch reaches retention: what A did not get is under the window,
    // so it is pushed to B (or was read while detached) without any ack.
    let mut retained = 0;
    while retained < batch1 {
        let read = b
            .call(
                method::PROCESS_READ,
                json!({"processId": "p", "afterSeq": 0, "waitMs": 30_000}),
            )
            .await;
        retained = read["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| unb64(&c["chunk"]).len() as u64)
            .sum();
        if retained < batch1 {
            let next = read["nextSeq"].as_u64().unwrap();
            b.call(
                method::PROCESS_READ,
                json!({"processId": "p", "afterSeq": next - 1, "waitMs": 30_000}),
            )
            .await;
        }
    }
    let w = b
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "p", "chunk": crate::client::b64(b"go\n")}),
        )
        .await;
    assert_eq!(w["status"], "accepted");
    // The second batch is pushed to B before B acks anything: the window A left full
    // did not carry over. Pushes resume with a new event, after A's last one.
    let mut on_b = Consumer::new("p", b"", W).expect_binary(true);
    consume_until(&mut b, &mut on_b, false, |p| p.unacked() >= W).await;
    assert!(on_b.first_seq() > first.last_seq());
    on_b.ack(&mut b).await;
    consume_until(&mut b, &mut on_b, true, |p| p.closed).await;
    // The connection taken over was closed, with nothing more of `p` on it.
    while let Some(text) =
        crate::client::within("the old connection to close", a.recv_text()).await?
    {
        let message: Value = serde_json::from_str(&text)?;
        assert!(
            message["params"]["seq"].as_u64() <= Some(first.last_seq()),
            "pushed to the old connection after the takeover: {message}"
        );
    }

    // Everything, in order, is still readable: the first batch, then the second.
    let read = b
        .call(
            method::PROCESS_READ,
            json!({"processId": "p", "afterSeq": 0}),
        )
        .await;
    let bytes: Vec<u8> = read["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| unb64(&c["chunk"]))
        .collect();
    let mut expected = vec![b'a'; batch1 as usize];
    expected.extend(vec![b'b'; batch2 as usize]);
    assert!(bytes == expected, "{} bytes read", bytes.len());
    Ok(())
}

async fn c_start_piped(c: &mut Client, process_id: &str, script: &str) {
    c.start(
        process_id,
        &["sh", "-c", script],
        json!({"pipeStdin": true}),
    )
    .await;
}

#[tokio::test]
async fn one_stalled_consumer_stdio() -> anyhow::Result<()> {
    one_stalled_consumer_holds_back_only_its_process(Kind::Stdio, false).await
}

#[tokio::test]
async fn one_stalled_consumer_ws_json() -> anyhow::Result<()> {
    one_stalled_consumer_holds_back_only_its_process(Kind::Ws, false).await
}

#[tokio::test]
async fn one_stalled_consumer_ws_binary() -> anyhow::Result<()> {
    one_stalled_consumer_holds_back_only_its_process(Kind::Ws, true).await
}

#[tokio::test]
async fn exited_and_closed_wait_stdio() -> anyhow::Result<()> {
    exited_and_closed_wait_for_the_window(Kind::Stdio).await
}

#[tokio::test]
async fn exited_and_closed_wait_ws() -> anyhow::Result<()> {
    exited_and_closed_wait_for_the_window(Kind::Ws).await
}

#[tokio::test]
async fn ack_semantics_stdio() -> anyhow::Result<()> {
    ack_semantics(Kind::Stdio).await
}

#[tokio::test]
async fn ack_semantics_ws() -> anyhow::Result<()> {
    ack_semantics(Kind::Ws).await
}

#[tokio::test]
async fn read_is_not_limited_stdio() -> anyhow::Result<()> {
    read_is_not_limited_by_windows(Kind::Stdio).await
}

#[tokio::test]
async fn read_is_not_limited_ws() -> anyhow::Result<()> {
    read_is_not_limited_by_windows(Kind::Ws).await
}

/// At the end of input (stdio) windows hold nothing back any more: the last events of a
/// process whose window is full still go out, and the server exits 0.
#[tokio::test]
async fn end_of_input_lifts_the_windows() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    init(&mut c, Some(W), false, None).await;
    c.start(
        "stalled",
        &["sh", "-c", "yes | head -c 67108864"],
        json!({}),
    )
    .await;
    let mut stalled = Consumer::new("stalled", b"y\n", W);
    consume_until(&mut c, &mut stalled, false, |s| s.received >= W).await;
    c.close().await?;
    // No ack: everything left is pushed anyway (the model's window check is off now).
    stalled.lift();
    while !stalled.closed {
        let n = c.notification().await;
        stalled.on_event(&n);
    }
    assert_eq!(stalled.exited.as_ref().unwrap()["signal"], "SIGTERM");
    assert_eq!(server.wait_exit().await?, 0);
    Ok(())
}

/// `outputWindowBytes` out of range or of the wrong type: -32602, no session is opened,
/// and the connection can still initialize.
async fn bad_windows(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    let bad = [
        json!(0),
        json!(65_535),
        json!(67_108_865),
        json!(u64::MAX),
        json!(-1),
        json!(65_536.5),
        json!("65536"),
        json!(true),
        json!({}),
        json!([65_536]),
    ];
    for window in bad {
        let e = c
            .call_err(
                method::INITIALIZE,
                json!({"clientName": "e2e", "capabilities": {"outputWindowBytes": window}}),
                ErrorCode::InvalidParams,
            )
            .await;
        if window.as_u64().is_some() {
            assert!(
                e["message"].as_str().unwrap().contains("outputWindowBytes"),
                "{window}: {e}"
            );
        }
    }
    // `null` is no window; the bounds themselves are fine.
    let result = c
        .call(
            method::INITIALIZE,
            json!({"clientName": "e2e", "capabilities": {"outputWindowBytes": null}}),
        )
        .await;
    assert_eq!(result["capabilities"]["outputWindowBytes"], Value::Null);
    for window in [65_536u64, 67_108_864] {
        let mut other = match kind {
            Kind::Stdio => break,
            Kind::Ws => Client::ws(server.url()).await?,
        };
        init(&mut other, Some(window), false, None).await;
    }
    Ok(())
}

#[tokio::test]
async fn bad_windows_over_stdio() -> anyhow::Result<()> {
    bad_windows(Kind::Stdio).await
}

#[tokio::test]
async fn bad_windows_over_ws() -> anyhow::Result<()> {
    bad_windows(Kind::Ws).await
}
