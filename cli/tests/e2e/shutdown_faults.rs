//! Faults around the server, over its transports: SIGTERM and SIGINT with busy and stubborn children, a client that vanishes mid-stream, and thousands of short processes without growth.

use std::time::Duration;

use exec_server_protocol::{method, notification};
use serde_json::{Value, json};

use crate::client::{Client, Kind, ServerProc, alive, children_of, exists, wait_until, within};

/// Starts processes of every kind that must all be gone after a shutdown: a streaming
/// one, a tty, a shell with a background child, one that ignores SIGTERM. Returns
/// every pid to check (children and grandchildren).
/// The first pid returned is the background grandchild (not the server's child).
async fn busy_family(c: &mut Client) -> Vec<u32> {
    // First, while no other process pushes output.
    let (child, grandchild) = crate::stdio::start_family(c, "fam").await;
    let mut pids = vec![grandchild, child];
    let r = c.start("stream", &["yes"], json!({})).await;
    pids.push(r["pid"].as_u64().unwrap() as u32);
    let r = c.start("tty", &["cat"], json!({"tty": true})).await;
    pids.push(r["pid"].as_u64().unwrap() as u32);
    let r = c
        .start(
            "stubborn",
            &[
                "sh",
                "-c",
                "trap '' TERM; echo armed; while :; do sleep 1; done",
            ],
            json!({}),
        )
        .await;
    pids.push(r["pid"].as_u64().unwrap() as u32);
    // Wait until the trap is set: its output arrives.
    within("the stubborn process to arm", async {
        loop {
            let read = c
                .call(
                    method::PROCESS_READ,
                    json!({"processId": "stubborn", "afterSeq": 0, "waitMs": 5000}),
                )
                .await;
            if !read["chunks"].as_array().is_none_or(Vec::is_empty) {
                return;
            }
        }
    })
    .await;
    pids
}

async fn signal_reaps_everything(kind: Kind, signal: i32) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let server_pid = server.pid();
    let mut c = server.client().await?;
    c.handshake().await;
    let pids = busy_family(&mut c).await;
    server.signal(signal);
    // Keep reading (stdio), as a client would, so the server's output never blocks it.
    let drain = async { while let Ok(Some(_)) = c.recv_text().await {} };
    let (code, ()) = tokio::join!(server.wait_exit(), drain);
    assert_eq!(code?, 0);
    // The server reaped every child before exiting: none is left, not even a zombie
    // (a child reaped by init after the server's death would still be there now).
    for pid in &pids[1..] {
        assert!(!exists(*pid), "child {pid} survived the server");
    }
    // The background grandchild is not the server's child; its group is killed.
    wait_until("the grandchild to die", || !alive(pids[0])).await;
    assert_eq!(children_of(server_pid), Vec::<u32>::new());
    Ok(())
}

#[tokio::test]
async fn sigterm_over_stdio_reaps_every_child() -> anyhow::Result<()> {
    signal_reaps_everything(Kind::Stdio, libc::SIGTERM).await
}

#[tokio::test]
async fn sigint_over_stdio_reaps_every_child() -> anyhow::Result<()> {
    signal_reaps_everything(Kind::Stdio, libc::SIGINT).await
}

#[tokio::test]
async fn sigterm_over_ws_reaps_every_child() -> anyhow::Result<()> {
    signal_reaps_everything(Kind::Ws, libc::SIGTERM).await
}

#[tokio::test]
async fn sigint_over_ws_reaps_every_child() -> anyhow::Result<()> {
    signal_reaps_everything(Kind::Ws, libc::SIGINT).await
}

/// A WebSocket client that vanishes (no close frame) while a process streams: its
/// session detaches and expires, its processes are terminated, and another client on
/// the same server is unaffected.
#[tokio::test]
async fn a_ws_client_vanishing_mid_stream() -> anyhow::Result<()> {
    let server = ServerProc::ws(&["--session-ttl-ms", "200"]).await?;
    let mut other = Client::ws(server.url()).await?;
    other.handshake().await;
    other
        .start(
            "steady",
            &["sh", "-c", "read x; echo \"got $x\""],
            json!({"pipeStdin": true}),
        )
        .await;

    let mut a = Client::ws(server.url()).await?;
    a.handshake().await;
    let r = a.start("stream", &["yes"], json!({})).await;
    let pid = r["pid"].as_u64().unwrap() as u32;
    for _ in 0..10 {
        let n = a.notification().await;
        assert_eq!(n["method"], notification::PROCESS_OUTPUT);
    }
    // Gone without a close frame.
    drop(a);
    wait_until("the stream to be terminated", || !exists(pid)).await;

    let status = other
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "steady", "chunk": crate::client::b64(b"hello\n")}),
        )
        .await;
    assert_eq!(status, json!({"status": "accepted"}));
    let events = other.events_until_closed("steady").await;
    assert_eq!(crate::client::output_of(&events), b"got hello\n");
    Ok(())
}

/// A stdio client that stops reading the server's output mid-stream (closes it): the
/// server keeps serving what it can, and at end of input cleans up and exits 0.
#[tokio::test]
async fn a_stdio_client_closing_the_output_mid_stream() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let server_pid = server.pid();
    let mut c = server.client().await?;
    c.handshake().await;
    let r = c.start("stream", &["yes"], json!({})).await;
    let pid = r["pid"].as_u64().unwrap() as u32;
    for _ in 0..10 {
        c.notification().await;
    }
    let crate::client::Transport::Stdio { stdin, stdout } = c.transport else {
        unreachable!()
    };
    drop(stdout);
    // Requests still reach it (their answers are lost with the output).
    let mut stdin = stdin.expect("stdin");
    use tokio::io::AsyncWriteExt;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": method::PROCESS_LIST});
    let _ = stdin.write_all(format!("{list}\n").as_bytes()).await;
    drop(stdin);
    assert_eq!(server.wait_exit().await?, 0);
    assert!(!exists(pid), "child {pid} survived");
    assert_eq!(children_of(server_pid), Vec::<u32>::new());
    Ok(())
}

/// Descriptors, threads and zombies of `pid`.
fn resources(pid: u32) -> (usize, usize, usize) {
    let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let fds = count(format!("/proc/{pid}/fd"));
    let threads = count(format!("/proc/{pid}/task"));
    let zombies = children_of(pid)
        .into_iter()
        .filter(|c| exists(*c) && !alive(*c))
        .count();
    (fds, threads, zombies)
}

/// 10,000 short processes, 50 at a time, on one session: no growth in descriptors,
/// threads, zombies, or memory beyond a small bound.
#[tokio::test]
async fn ten_thousand_short_processes_leave_nothing_behind() -> anyhow::Result<()> {
    const TOTAL: usize = 10_000;
    const BATCH: usize = 50;
    const WARM_UP: usize = 1_000;
    let server = ServerProc::ws(&["--retain-closed-ms", "0"]).await?;
    let pid = server.pid();
    let mut c = Client::ws(server.url()).await?;
    c.handshake().await;
    let mut baseline = None;
    let mut done = 0;
    let mut next = 0usize;
    while done < TOTAL {
        if done == WARM_UP {
            let (fds, threads, _) = resources(pid);
            baseline = Some((fds, threads, crate::client::rss_kib(pid)));
        }
        let mut ids = Vec::new();
        for _ in 0..BATCH {
            let params = json!({"processId": format!("t{next}"), "argv": ["true"],
                                "cwd": "/", "env": {}});
            next += 1;
            ids.push(c.send_request(method::PROCESS_START, params).await);
        }
        for id in &ids {
            let r = c.response(id).await;
            assert!(r.get("error").is_none(), "{r}");
        }
        // Every one of them closes.
        let mut closed = 0;
        while closed < BATCH {
            let n: Value = c.notification().await;
            if n["method"] == notification::PROCESS_CLOSED {
                closed += 1;
            }
        }
        done += BATCH;
    }
    let (fds0, threads0, rss0) = baseline.expect("baseline");
    // Forgetting a closed process is immediate but asynchronous: wait for the list to
    // empty before counting.
    within("every process to be forgotten", async {
        loop {
            let list = c.call(method::PROCESS_LIST, json!({})).await;
            if list["processes"].as_array().is_some_and(Vec::is_empty) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (fds, threads, zombies) = resources(pid);
    let rss = crate::client::rss_kib(pid);
    eprintln!(
        "after {WARM_UP}: {fds0} fds, {threads0} threads, {rss0} KiB; \
         after {TOTAL}: {fds} fds, {threads} threads, {zombies} zombies, {rss} KiB"
    );
    assert_eq!(zombies, 0);
    assert!(fds <= fds0 + 4, "descriptors grew from {fds0} to {fds}");
    assert!(
        threads <= threads0 + 4,
        "threads grew from {threads0} to {threads}"
    );
    assert!(
        rss <= rss0 + 16 * 1024,
        "RSS grew from {rss0} KiB to {rss} KiB"
    );
    Ok(())
}
