//! The remote client's own behaviour: transport loss, resume and automatic reconnect
//! without gap or duplicate, truncation reported, typed errors, closing.
//!
//! Connections go through a TCP proxy in the test that can cut them mid-stream. Processes
//! pause on FIFOs the test opens, so the test decides what happens while detached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Proxy, TestServer, within};
use exec_server_client::{
    Client, ConnectOptions, Error, ErrorCode, ExecBackend, ProcessEvent, ReconnectPolicy,
    RemoteBackend, StartOptions, WriteStatus,
};
use exec_server_protocol::ProcessReadParams;

/// A FIFO in a fresh temporary directory, removed on drop.
struct Fifo {
    dir: PathBuf,
    path: PathBuf,
}

impl Fifo {
    fn new(name: &str) -> Fifo {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "exec-server-client-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        Fifo { dir, path }
    }

    fn sh(&self) -> String {
        self.path.display().to_string()
    }

    /// Releases a `read x < FIFO` in the child (opening blocks until the child opens it).
    async fn release(&self) {
        let path = self.path.clone();
        within(
            "the child to open its FIFO",
            tokio::task::spawn_blocking(move || std::fs::write(path, "go\n")),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn seq_lines(from: u64, to: u64) -> Vec<u8> {
    (from..=to)
        .map(|n| format!("{n}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Collects events into stdout until it ends with `marker` (failing on anything unexpected).
async fn stdout_until(
    events: &mut exec_server_client::EventStream,
    stdout: &mut Vec<u8>,
    marker: &[u8],
) {
    within("output", async {
        while !stdout.ends_with(marker) {
            match events.next().await.expect("an event") {
                ProcessEvent::Output { chunk, .. } => stdout.extend_from_slice(&chunk),
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
}

/// The rest of a stream: stdout, and every other event in order.
async fn rest(events: exec_server_client::EventStream) -> (Vec<u8>, Vec<ProcessEvent>) {
    let mut events = events;
    let mut stdout = Vec::new();
    let mut others = Vec::new();
    let mut last_seq = 0;
    within("the stream to end", async {
        while let Some(event) = events.next().await {
            match event {
                ProcessEvent::Output { seq, chunk, .. } => {
                    assert!(seq > last_seq, "seq {seq} after {last_seq}: a duplicate");
                    last_seq = seq;
                    stdout.extend_from_slice(&chunk);
                }
                other => others.push(other),
            }
        }
    })
    .await;
    (stdout, others)
}

async fn connect(url: &str, options: ConnectOptions) -> (Client, RemoteBackend) {
    let client = Client::connect(url, options).await.expect("connect");
    (client.clone(), RemoteBackend::new(client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_loss_fails_calls_and_resume_continues() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let (client, backend) = connect(&server.url_via(proxy.addr), ConnectOptions::default()).await;
    let p = backend
        .start(StartOptions::new(["cat"]).pipe_stdin(true))
        .await
        .unwrap();
    let mut events = p.events().unwrap();
    p.write(b"before\n").await.unwrap();
    let mut stdout = Vec::new();
    stdout_until(&mut events, &mut stdout, b"before\n").await;

    // A long poll in flight when the connection drops.
    let poll = {
        let client = client.clone();
        let id = p.id().to_owned();
        tokio::spawn(async move {
            client
                .process_read(ProcessReadParams {
                    process_id: id,
                    after_seq: 1,
                    max_bytes: None,
                    wait_ms: 30_000,
                })
                .await
        })
    };
    proxy.cut();
    match within("the loss to show", events.next()).await {
        Some(ProcessEvent::Disconnected { reason }) => assert!(!reason.is_empty()),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let read = within("the long poll", poll).await.unwrap().unwrap();
    assert!(
        read.failure.is_some(),
        "the read reports the loss: {read:?}"
    );
    assert_eq!(
        (read.chunks.len(), read.next_seq),
        (0, 2),
        "the cursor does not move"
    );
    let err = p.write(b"lost?\n").await.unwrap_err();
    assert!(err.is_disconnected(), "{err}");
    assert!(backend.list().await.unwrap_err().is_disconnected());
    assert!(!client.is_connected());

    client.resume().await.expect("resume");
    assert!(client.is_connected());
    assert_eq!(p.write(b"after\n").await.unwrap(), WriteStatus::Accepted);
    assert_eq!(p.close_stdin().await.unwrap(), WriteStatus::Accepted);
    let (more, others) = rest(events).await;
    assert_eq!(more, b"after\n");
    assert!(
        matches!(
            others.as_slice(),
            [
                ProcessEvent::Exited { exit_code: 0, .. },
                ProcessEvent::Closed { .. }
            ]
        ),
        "{others:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reads_what_was_missed_without_gap_or_duplicate() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let (client, backend) = connect(&server.url_via(proxy.addr), ConnectOptions::default()).await;
    let (f1, f2) = (Fifo::new("one"), Fifo::new("two"));
    let script = format!(
        "seq 1 20000; read x < {}; seq 20001 60000; read y < {}; seq 60001 100000",
        f1.sh(),
        f2.sh()
    );
    let p = backend
        .start(StartOptions::new(["sh", "-c", &script]))
        .await
        .unwrap();
    let mut events = p.events().unwrap();
    let mut stdout = Vec::new();
    stdout_until(&mut events, &mut stdout, b"\n20000\n").await;

    proxy.cut();
    assert!(matches!(
        within("the loss", events.next()).await,
        Some(ProcessEvent::Disconnected { .. })
    ));
    // Output while detached: retained by the server only.
    f1.release().await;
    client.resume().await.expect("resume");
    // Output after the resume: pushed.
    f2.release().await;
    let (more, others) = rest(events).await;
    stdout.extend_from_slice(&more);
    assert!(
        stdout == seq_lines(1, 100000),
        "stdout differs ({} bytes)",
        stdout.len()
    );
    assert!(
        matches!(
            others.as_slice(),
            [
                ProcessEvent::Exited { exit_code: 0, .. },
                ProcessEvent::Closed { .. }
            ]
        ),
        "{others:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lost_to_retention_while_detached_is_reported() {
    let server = TestServer::with_retention(64 * 1024).await;
    let proxy = Proxy::start(server.addr).await;
    let (client, backend) = connect(&server.url_via(proxy.addr), ConnectOptions::default()).await;
    let (f1, f2) = (Fifo::new("one"), Fifo::new("two"));
    let script = format!(
        "seq 1 1000; read x < {}; seq 1001 200000; read y < {}; echo end",
        f1.sh(),
        f2.sh()
    );
    let p = backend
        .start(StartOptions::new(["sh", "-c", &script]))
        .await
        .unwrap();
    let mut events = p.events().unwrap();
    let mut stdout = Vec::new();
    stdout_until(&mut events, &mut stdout, b"\n1000\n").await;
    proxy.cut();
    assert!(matches!(
        within("the loss", events.next()).await,
        Some(ProcessEvent::Disconnected { .. })
    ));
    // ~1.3 MB printed while detached, 64 KiB retained.
    f1.release().await;
    f2.release().await;
    client.resume().await.expect("resume");
    let mut events = events;
    let mut truncated = None;
    let mut tail = Vec::new();
    within("the rest", async {
        while let Some(event) = events.next().await {
            match event {
                ProcessEvent::Truncated {
                    first_seq,
                    last_seq,
                } => {
                    assert!(
                        truncated.is_none() && tail.is_empty(),
                        "one loss, before the rest"
                    );
                    truncated = Some((first_seq, last_seq));
                }
                ProcessEvent::Output { chunk, .. } => tail.extend_from_slice(&chunk),
                ProcessEvent::Exited { exit_code, .. } => assert_eq!(exit_code, 0),
                ProcessEvent::Closed { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    let (first, last) = truncated.expect("the loss is reported");
    assert!(first <= last);
    // What follows the loss is the retained end of the output, contiguous.
    let text = String::from_utf8(tail).unwrap();
    assert!(
        text.ends_with("199999\n200000\nend\n"),
        "{}",
        &text[text.len().saturating_sub(40)..]
    );
    assert!(
        text.len() < 200 * 1024,
        "most of it was lost: {} bytes",
        text.len()
    );
    let lines: Vec<&str> = text.lines().skip(1).collect(); // the first may be a partial line
    for pair in lines.windows(2) {
        if pair[1] == "end" {
            break;
        }
        let (a, b): (u64, u64) = (pair[0].parse().unwrap(), pair[1].parse().unwrap());
        assert_eq!(a + 1, b, "a gap inside the retained output");
    }
    assert_eq!(stdout, seq_lines(1, 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_reconnect_is_invisible_to_the_consumer() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let options = ConnectOptions::default().reconnect(ReconnectPolicy::default());
    let (client, backend) = connect(&server.url_via(proxy.addr), options).await;
    let f1 = Fifo::new("one");
    let script = format!(
        "seq 1 20000; read x < {}; seq 20001 60000; read line; echo \"line=$line\"",
        f1.sh()
    );
    let p = backend
        .start(StartOptions::new(["sh", "-c", &script]).pipe_stdin(true))
        .await
        .unwrap();
    let mut events = p.events().unwrap();
    let mut stdout = Vec::new();
    stdout_until(&mut events, &mut stdout, b"\n20000\n").await;
    proxy.cut();
    f1.release().await;
    // A write during the outage waits for the reconnect and is delivered once.
    assert_eq!(p.write(b"hello\n").await.unwrap(), WriteStatus::Accepted);
    let (more, others) = rest(events).await;
    stdout.extend_from_slice(&more);
    let mut expected = seq_lines(1, 60000);
    expected.extend_from_slice(b"line=hello\n");
    assert!(
        stdout == expected,
        "stdout differs ({} bytes)",
        stdout.len()
    );
    assert!(
        matches!(
            others.as_slice(),
            [
                ProcessEvent::Exited { exit_code: 0, .. },
                ProcessEvent::Closed { .. }
            ]
        ),
        "no Disconnected notice, nothing else: {others:?}"
    );
    assert!(client.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_gives_up_and_ends_the_streams() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let options = ConnectOptions::default()
        .reconnect(ReconnectPolicy::default().give_up_after(Duration::from_millis(300)));
    let (_client, backend) = connect(&server.url_via(proxy.addr), options).await;
    let p = backend
        .start(StartOptions::new(["cat"]).pipe_stdin(true))
        .await
        .unwrap();
    let events = p.events().unwrap();
    proxy.set_accepting(false);
    proxy.cut();
    let (stdout, others) = rest(events).await;
    assert!(stdout.is_empty());
    match others.as_slice() {
        [ProcessEvent::Failure { reason }] => {
            assert!(reason.contains("reconnecting failed"), "{reason}")
        }
        other => panic!("expected one Failure, got {other:?}"),
    }
    let err = p.write(b"x").await.unwrap_err();
    assert!(err.is_disconnected(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_authentication() {
    let server = TestServer::start().await;
    let (client, _) = connect(&server.url, ConnectOptions::default()).await;
    let err = client
        .process_read(ProcessReadParams {
            process_id: "nobody".into(),
            after_seq: 0,
            max_bytes: None,
            wait_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProcessNotFound), "{err}");
    assert!(matches!(err, Error::Rpc { code: -32004, .. }));

    // Without the token: refused before the upgrade.
    let bare = server.url.split('?').next().unwrap().to_owned();
    let err = Client::connect(&bare, ConnectOptions::default())
        .await
        .unwrap_err();
    match &err {
        Error::Connect(message) => {
            assert!(message.contains("401"), "{message}");
            assert!(!message.contains(&server.token), "the token is never shown");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    // With the token as a bearer header.
    let client = Client::connect(
        &bare,
        ConnectOptions::default().bearer_token(server.token.clone()),
    )
    .await
    .expect("bearer auth");
    assert_eq!(client.session_id().len(), 32);

    // Resuming over stdio is not possible; spawning a missing program is a connect error.
    let err = Client::spawn(
        "/nonexistent/exec-server",
        ["serve"],
        ConnectOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_client_ends_every_stream() {
    let server = TestServer::start().await;
    let (client, backend) = connect(&server.url, ConnectOptions::default()).await;
    let p = backend
        .start(StartOptions::new(["cat"]).pipe_stdin(true))
        .await
        .unwrap();
    let events = p.events().unwrap();
    client.close().await;
    let (_, others) = rest(events).await;
    assert!(
        matches!(others.as_slice(), [ProcessEvent::Failure { .. }]),
        "{others:?}"
    );
    assert!(matches!(p.write(b"x").await.unwrap_err(), Error::Closed));
}

/// Random bytes arrive exactly as the server retained them, whichever encoding the
/// connection uses (binary frames when granted, base64 JSON otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bytes_match_the_retained_bytes() {
    let server = TestServer::start().await;
    for binary in [true, false] {
        let (client, backend) =
            connect(&server.url, ConnectOptions::default().binary_output(binary)).await;
        // The real server grants binary output on a WebSocket when asked, and only then.
        assert_eq!(client.binary_output(), binary);
        let p = backend
            .start(StartOptions::new(["head", "-c", "300000", "/dev/urandom"]))
            .await
            .unwrap();
        let out = p.events().unwrap().collect().await;
        assert_eq!((out.stdout.len(), out.exit_code), (300000, Some(0)));
        let retained = client
            .process_read(ProcessReadParams {
                process_id: p.id().to_owned(),
                after_seq: 0,
                max_bytes: None,
                wait_ms: 0,
            })
            .await
            .unwrap();
        let retained: Vec<u8> = retained
            .chunks
            .iter()
            .flat_map(|c| c.chunk.to_vec())
            .collect();
        assert!(retained == out.stdout, "streamed and retained bytes differ");
    }
}

/// The file methods are typed calls too, and their failures carry -32020 and the errno.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_methods_round_trip() {
    use exec_server_protocol::{
        FileKind, FsListParams, FsMkdirParams, FsReadParams, FsRemoveParams, FsRenameParams,
        FsStatParams, FsWriteParams,
    };
    let server = TestServer::start().await;
    let (client, _) = connect(&server.url, ConnectOptions::default()).await;
    let dir = std::env::temp_dir().join(format!("exec-server-client-fs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.display().to_string();
    client
        .fs_mkdir(FsMkdirParams {
            path: format!("{root}/a/b"),
            parents: true,
            mode: None,
        })
        .await
        .unwrap();
    let file = format!("{root}/a/b/f.txt");
    let written = client
        .fs_write(FsWriteParams {
            exclusive: false,
            path: file.clone(),
            data: b"hello file".into(),
            offset: None,
            append: false,
            truncate: None,
            create: true,
            mode: None,
            atomic: true,
        })
        .await
        .unwrap();
    assert_eq!(written.bytes_written, 10);
    let stat = client
        .fs_stat(FsStatParams {
            path: file.clone(),
            follow_symlinks: true,
        })
        .await
        .unwrap();
    assert_eq!((stat.kind, stat.size), (FileKind::File, 10));
    let read = client
        .fs_read(FsReadParams {
            path: file.clone(),
            offset: Some(6),
            max_bytes: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (read.data.as_bytes(), read.eof, read.size),
        (&b"file"[..], true, 10)
    );
    let moved = format!("{root}/a/g.txt");
    client
        .fs_rename(FsRenameParams {
            from: file.clone(),
            to: moved.clone(),
        })
        .await
        .unwrap();
    let names: Vec<String> = client
        .fs_list(FsListParams {
            path: format!("{root}/a"),
        })
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["b", "g.txt"]);
    let err = client
        .fs_read(FsReadParams {
            path: file,
            offset: None,
            max_bytes: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FileError), "{err}");
    match &err {
        Error::Rpc {
            data: Some(data), ..
        } => assert!(data.contains("ENOENT"), "{data}"),
        other => panic!("no errno data: {other:?}"),
    }
    client
        .fs_remove(FsRemoveParams {
            path: root.clone(),
            recursive: true,
        })
        .await
        .unwrap();
    assert!(!dir.exists());
}

/// Binary output frames (SPEC 11), from a scripted server that grants them: the client
/// asks for them, decodes them, and orders them with the JSON events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_output_frames_are_decoded_when_granted() {
    use futures::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    async fn recv_json(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    ) -> Value {
        loop {
            if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let init = recv_json(&mut ws).await;
        assert_eq!(init["method"], "initialize");
        assert_eq!(
            init["params"]["capabilities"]["binaryOutput"], true,
            "asked for"
        );
        let result = json!({
            "sessionId": "0123456789abcdef0123456789abcdef", "protocolVersion": 1,
            "serverName": "scripted", "serverVersion": "0",
            "capabilities": {"binaryOutput": true},
        });
        let reply = json!({"jsonrpc": "2.0", "id": init["id"], "result": result});
        ws.send(Message::text(reply.to_string())).await.unwrap();
        assert_eq!(recv_json(&mut ws).await["method"], "initialized");
        let start = recv_json(&mut ws).await;
        assert_eq!(start["method"], "process/start");
        let id = start["params"]["processId"].as_str().unwrap().to_owned();
        let reply =
            json!({"jsonrpc": "2.0", "id": start["id"], "result": {"processId": id, "pid": 4242}});
        ws.send(Message::text(reply.to_string())).await.unwrap();
        for (seq, stream, bytes) in [
            (
                1,
                exec_server_protocol::Stream::Stdout,
                &b"raw \x00\xff bytes"[..],
            ),
            (2, exec_server_protocol::Stream::Stderr, &b"err"[..]),
        ] {
            let frame = exec_server_protocol::encode_output_frame(&id, seq, stream, bytes).unwrap();
            ws.send(Message::Binary(frame.into())).await.unwrap();
        }
        for (method, params) in [
            (
                "process/exited",
                json!({"processId": id, "seq": 3, "exitCode": 0, "signal": null, "timedOut": false}),
            ),
            ("process/closed", json!({"processId": id, "seq": 4})),
        ] {
            let note = json!({"jsonrpc": "2.0", "method": method, "params": params});
            ws.send(Message::text(note.to_string())).await.unwrap();
        }
        // Keep the connection open until the client closes it.
        while let Some(Ok(_)) = ws.next().await {}
    });
    let client = Client::connect(&format!("ws://{addr}/"), ConnectOptions::default())
        .await
        .unwrap();
    assert!(client.binary_output(), "granted");
    let backend = RemoteBackend::new(client.clone());
    let p = backend
        .start(StartOptions::new(["anything"]))
        .await
        .unwrap();
    assert_eq!(p.pid(), 4242);
    let out = within("the scripted events", p.events().unwrap().collect()).await;
    assert_eq!(out.stdout, b"raw \x00\xff bytes");
    assert_eq!(out.stderr, b"err");
    assert_eq!(
        (out.exit_code, out.closed, out.truncated),
        (Some(0), true, false)
    );
    client.close().await;
    within("the scripted server", server).await.unwrap();
}
