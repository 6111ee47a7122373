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

/// SPEC 2 again, with the process already started (so only the end of input is under
/// test): the pending long poll is answered before the termination, and the list after
/// it too.
#[tokio::test]
async fn end_of_input_answers_a_long_poll_on_a_running_process() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start("p", &["sleep", "60"], json!({})).await;
    let read = c
        .send_request(
            method::PROCESS_READ,
            json!({"processId": "p", "afterSeq": 0, "waitMs": 300_000}),
        )
        .await;
    let list = c.send_request(method::PROCESS_LIST, json!({})).await;
    c.close().await?;
    let r = c.response(&list).await;
    assert!(r["result"]["processes"].is_array(), "{r}");
    let r = c.response(&read).await;
    assert_eq!(r["result"]["chunks"], json!([]), "{r}");
    assert_eq!(
        r["result"]["exited"], false,
        "answered only after the termination: {r}"
    );
    assert_eq!(server.wait_exit().await?, 0);
    Ok(())
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

/// SPEC 8: one client that sends 1000 reads of 1 MB of output each and stops reading
/// cannot grow the server without bound (before the fix: about 1.3 GB); once it reads
/// again, its responses arrive.
#[tokio::test]
async fn a_client_that_stops_reading_cannot_grow_the_server() -> anyhow::Result<()> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let server = ServerProc::ws(&[]).await?;
    let pid = server.pid();
    let mut c = crate::client::Client::ws(server.url()).await?;
    c.handshake().await;
    c.start("big", &["head", "-c", "1000000", "/dev/urandom"], json!({}))
        .await;
    c.events_until_closed("big").await;
    let before = crate::client::rss_kib(pid);

    let crate::client::Transport::Ws(ws) = &mut c.transport else {
        unreachable!()
    };
    // Queue the requests without flushing each (the server may stop reading them).
    let sending = async {
        for id in 0..1000u64 {
            let read = request(
                10_000 + id,
                method::PROCESS_READ,
                json!({"processId": "big", "afterSeq": 0}),
            );
            ws.feed(Message::text(read.to_string())).await?;
        }
        ws.flush().await
    };
    // The sends may block once the server stops reading: that is the point.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sending).await;
    let peak = crate::client::peak_rss_until_idle(pid).await;
    eprintln!("server VmRSS: {before} KiB before, {peak} KiB at most while not read");
    assert!(
        peak < 150 * 1024,
        "one connection grew the server to {peak} KiB"
    );

    // Reading again, the responses come (the first hundred are checked in full).
    for id in 0..100u64 {
        let r = c.response(&json!(10_000 + id)).await;
        let total: usize = r["result"]["chunks"]
            .as_array()
            .map(|cs| cs.iter().map(|ch| unb64(&ch["chunk"]).len()).sum())
            .unwrap_or(0);
        assert_eq!(total, 1_000_000, "response {id}");
    }
    Ok(())
}

/// A message over the size limit sent in fragments is answered with -32001 and the
/// connection keeps working (before the fix soketto discarded the wrong number of bytes
/// and the connection desynchronised).
#[tokio::test]
async fn a_fragmented_message_over_the_limit_leaves_the_connection_usable() -> anyhow::Result<()> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let server = ServerProc::ws(&["--max-message-bytes", "65536"]).await?;
    let mut c = crate::client::Client::ws(server.url()).await?;
    c.handshake().await;
    for round in 0..3 {
        let crate::client::Transport::Ws(ws) = &mut c.transport else {
            unreachable!()
        };
        let part = vec![b' '; 30_000];
        ws.send(Message::Frame(Frame::message(
            part.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await?;
        ws.send(Message::Frame(Frame::message(
            part.clone(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await?;
        ws.send(Message::Frame(Frame::message(
            part,
            OpCode::Data(Data::Continue),
            true,
        )))
        .await?;
        let r = c.response(&Value::Null).await;
        assert_eq!(
            r["error"]["code"],
            exec_server_protocol::ErrorCode::LimitReached.code(),
            "round {round}: {r}"
        );
        let list = c.call(method::PROCESS_LIST, json!({})).await;
        assert_eq!(list, json!({"processes": []}), "round {round}");
    }
    // A fragmented message within the limit is reassembled.
    let crate::client::Transport::Ws(ws) = &mut c.transport else {
        unreachable!()
    };
    let text = request(77, method::PROCESS_LIST, json!({})).to_string();
    let (a, b) = text.as_bytes().split_at(10);
    ws.send(Message::Frame(Frame::message(
        a.to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await?;
    ws.send(Message::Frame(Frame::message(
        b.to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await?;
    let r = c.response(&json!(77)).await;
    assert_eq!(r["result"], json!({"processes": []}), "{r}");
    Ok(())
}

/// Connections that never send a request are capped before the upgrade: past
/// `--max-pending-connections` a new one is closed at once, and a slot frees when one
/// of them goes.
#[tokio::test]
async fn connections_that_never_upgrade_are_capped() -> anyhow::Result<()> {
    use tokio::net::TcpStream;

    let server = ServerProc::ws(&["--max-pending-connections", "2"]).await?;
    let addr = server.addr();
    let idle1 = TcpStream::connect(&addr).await?;
    let _idle2 = TcpStream::connect(&addr).await?;
    // The third is closed without an answer (before the fix it was served).
    let mut third = TcpStream::connect(&addr).await?;
    let _ = third
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await;
    let mut answer = Vec::new();
    let _ = within(
        "the third connection to close",
        third.read_to_end(&mut answer),
    )
    .await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    drop(idle1);
    within("a free slot", async {
        loop {
            if let Ok((200, _)) = crate::client::http_get(&addr, "/healthz", &[]).await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    Ok(())
}

/// A peer that stops taking messages is dropped even while the server is blocked
/// handling one of its requests (before the fix the idle timer did not run then, and
/// the connection and its processes stayed forever).
#[tokio::test]
async fn a_peer_that_takes_nothing_is_dropped_while_a_request_waits() -> anyhow::Result<()> {
    let server = ServerProc::ws(&[
        "--ping-interval-ms",
        "100",
        "--idle-timeout-ms",
        "500",
        "--session-ttl-ms",
        "100",
    ])
    .await?;
    let mut c = crate::client::Client::ws(server.url()).await?;
    c.handshake().await;
    let started = c.start("yes", &["yes"], json!({})).await;
    let pid = started["pid"].as_u64().unwrap() as u32;
    // Not reading: the outbound queue fills with output, and a response waits for room
    // in it, with the server's reader inside the dispatch. (Many requests, so that one
    // surely arrives once the queue is full.)
    let crate::client::Transport::Ws(ws) = &mut c.transport else {
        unreachable!()
    };
    let sending = async {
        use futures::SinkExt;
        for id in 0..2000u64 {
            let list = request(id, method::PROCESS_LIST, json!({}));
            ws.feed(tokio_tungstenite::tungstenite::Message::text(
                list.to_string(),
            ))
            .await?;
        }
        ws.flush().await
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sending).await;
    // Dropped, detached, expired: the process is terminated.
    crate::client::wait_until("the process to be terminated", || {
        !crate::client::alive(pid)
    })
    .await;
    Ok(())
}

/// SPEC 8: past `--max-in-flight` unanswered requests the server stops reading the
/// connection until a response is written: with two long polls pending and a limit of
/// two, a `process/list` sent after them is answered only after one of them.
async fn the_in_flight_limit_stops_reading(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &["--max-in-flight", "2"]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let flag =
        std::env::temp_dir().join(format!("exec-e2e-inflight-{}-{kind:?}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    c.start(
        "w",
        &[
            "sh",
            "-c",
            "while [ ! -e \"$F\" ]; do sleep 0.01; done; echo go",
        ],
        json!({"env": {"PATH": "/usr/bin:/bin", "F": flag.to_str().unwrap()}}),
    )
    .await;
    let polls = [
        c.send_request(
            method::PROCESS_READ,
            json!({"processId": "w", "afterSeq": 0, "waitMs": 300_000}),
        )
        .await,
        c.send_request(
            method::PROCESS_READ,
            json!({"processId": "w", "afterSeq": 0, "waitMs": 300_000}),
        )
        .await,
    ];
    let list = c.send_request(method::PROCESS_LIST, json!({})).await;
    std::fs::write(&flag, b"")?;
    let list_response = c.response(&list).await;
    assert!(list_response["result"]["processes"].is_array());
    for poll in &polls {
        let r = c.response(poll).await;
        assert_eq!(unb64(&r["result"]["chunks"][0]["chunk"]), b"go\n", "{r}");
    }
    let at = |id: &Value| c.log.iter().position(|m| &m["id"] == id).unwrap();
    let first_poll = at(&polls[0]).min(at(&polls[1]));
    assert!(
        first_poll < at(&list),
        "the list was answered while two requests were in flight: {:#?}",
        c.log
    );
    let _ = std::fs::remove_file(&flag);
    Ok(())
}

#[tokio::test]
async fn the_in_flight_limit_stops_reading_stdio() -> anyhow::Result<()> {
    the_in_flight_limit_stops_reading(Kind::Stdio).await
}

#[tokio::test]
async fn the_in_flight_limit_stops_reading_ws() -> anyhow::Result<()> {
    the_in_flight_limit_stops_reading(Kind::Ws).await
}

/// `fs/read` answers are bounded like `process/read` ones: 100 reads of a 4 MiB file
/// whose answers the client does not take make the server wait, not hold 100 answers;
/// and 200 pipelined 1 MiB `fs/write`s hold at most twice the message limit in requests.
#[tokio::test]
async fn file_calls_a_client_does_not_read_cannot_grow_the_server() -> anyhow::Result<()> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let dir = std::env::temp_dir().join(format!("exec-server-e2e-fsmem-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("four.bin");
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 31 + 7) as u8)
        .collect();
    std::fs::write(&file, &data)?;
    let path = file.to_string_lossy().into_owned();

    let server = ServerProc::ws(&[]).await?;
    let pid = server.pid();
    let mut c = crate::client::Client::ws(server.url()).await?;
    c.handshake().await;
    let before = crate::client::rss_kib(pid);
    let crate::client::Transport::Ws(ws) = &mut c.transport else {
        unreachable!()
    };
    let chunk = crate::client::b64(&vec![b'w'; 1024 * 1024]);
    let sending = async {
        for id in 0..100u64 {
            let read = request(20_000 + id, method::FS_READ, json!({"path": path}));
            ws.feed(Message::text(read.to_string())).await?;
        }
        for id in 0..200u64 {
            let target = dir.join(format!("w{id}")).to_string_lossy().into_owned();
            let write = request(
                30_000 + id,
                method::FS_WRITE,
                json!({"path": target, "data": chunk}),
            );
            ws.feed(Message::text(write.to_string())).await?;
        }
        ws.flush().await
    };
    // The sends block once the server stops reading: that is the point.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sending).await;
    let peak = crate::client::peak_rss_until_idle(pid).await;
    eprintln!("server VmRSS: {before} KiB before, {peak} KiB at most while not read");
    assert!(
        peak < 150 * 1024,
        "one connection grew the server to {peak} KiB"
    );
    // Reading again, the answers come, whole.
    for id in 0..5u64 {
        let r = c.response(&json!(20_000 + id)).await;
        assert_eq!(unb64(&r["result"]["data"]), data, "answer {id}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
