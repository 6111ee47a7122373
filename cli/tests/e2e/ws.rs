//! Scenarios over WebSocket, and the WebSocket-only behaviour: auth, Origin, healthz, limits, resume, expiry, backpressure.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use exec_server_protocol::{ErrorCode, method, notification};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::client::{
    Client, Kind, ServerProc, alive, children_of, exists, http_get, rss_kib, unb64, wait_until,
    within,
};
use crate::scenarios;
use crate::stdio::start_family;

#[tokio::test]
async fn handshake() -> anyhow::Result<()> {
    scenarios::handshake(Kind::Ws).await
}

#[tokio::test]
async fn lifecycle() -> anyhow::Result<()> {
    scenarios::lifecycle(Kind::Ws).await
}

#[tokio::test]
async fn long_poll_and_writes() -> anyhow::Result<()> {
    scenarios::long_poll_and_writes(Kind::Ws).await
}

#[tokio::test]
async fn tty() -> anyhow::Result<()> {
    scenarios::tty(Kind::Ws).await
}

#[tokio::test]
async fn signals_and_terminate() -> anyhow::Result<()> {
    scenarios::signals_and_terminate(Kind::Ws).await
}

#[tokio::test]
async fn errors() -> anyhow::Result<()> {
    scenarios::errors(Kind::Ws).await
}

/// The HTTP status of a WebSocket upgrade attempt (101 when it succeeds).
async fn upgrade_status(url: &str, headers: &[(&'static str, &str)]) -> u16 {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).expect("header"));
    }
    match within("an upgrade", tokio_tungstenite::connect_async(request)).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed without an HTTP status: {e}"),
    }
}

#[tokio::test]
async fn token_origin_and_healthz() -> anyhow::Result<()> {
    let server = ServerProc::ws(&["--allow-origin", "http://good.example"]).await?;
    let addr = server.addr();
    let token = server.token();
    assert!(token.len() >= 32, "a 128-bit token: {}", server.url());
    assert_eq!(server.url(), format!("ws://{addr}/?token={token}"));

    assert_eq!(
        http_get(&addr, "/healthz", &[]).await?,
        (200, "ok".to_owned())
    );

    let bare = format!("ws://{addr}/");
    assert_eq!(upgrade_status(&bare, &[]).await, 401);
    assert_eq!(
        upgrade_status(&format!("{bare}?token=wrong"), &[]).await,
        401
    );
    let wrong = "Bearer 00000000000000000000000000000000";
    assert_eq!(
        upgrade_status(&bare, &[("authorization", wrong)]).await,
        401
    );
    let bearer = format!("Bearer {token}");
    assert_eq!(
        upgrade_status(&bare, &[("authorization", &bearer)]).await,
        101
    );
    assert_eq!(upgrade_status(server.url(), &[]).await, 101);
    assert_eq!(
        upgrade_status(server.url(), &[("origin", "http://evil.example")]).await,
        403
    );
    assert_eq!(
        upgrade_status(server.url(), &[("origin", "http://good.example")]).await,
        101
    );
    // The URL works as printed.
    let mut c = Client::ws(server.url()).await?;
    c.handshake().await;
    Ok(())
}

#[tokio::test]
async fn no_auth_is_refused_on_a_non_loopback_bind() -> anyhow::Result<()> {
    let output = within(
        "the server to refuse",
        tokio::process::Command::new(crate::client::bin())
            .args(["serve", "--listen", "ws://0.0.0.0:0", "--insecure-no-auth"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await?;
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn no_auth_on_loopback_needs_no_token() -> anyhow::Result<()> {
    let server = ServerProc::ws(&["--insecure-no-auth"]).await?;
    assert_eq!(server.url(), format!("ws://{}/", server.addr()));
    let mut c = Client::ws(server.url()).await?;
    c.handshake().await;
    // A binary frame holding a JSON message is accepted too.
    let request = json!({"jsonrpc": "2.0", "id": 9, "method": method::PROCESS_LIST});
    if let crate::client::Transport::Ws(ws) = &mut c.transport {
        use futures::SinkExt;
        let frame =
            tokio_tungstenite::tungstenite::Message::binary(request.to_string().into_bytes());
        ws.send(frame).await?;
    }
    let response = c.response(&json!(9)).await;
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "id": 9, "result": {"processes": []}})
    );
    Ok(())
}

#[tokio::test]
async fn the_token_comes_from_the_environment_or_a_file() -> anyhow::Result<()> {
    let server = ServerProc::ws_env(&[], &[("EXEC_SERVER_TOKEN", "from-env-token")]).await?;
    assert_eq!(server.token(), "from-env-token");
    assert_eq!(upgrade_status(server.url(), &[]).await, 101);
    let path = std::env::temp_dir().join(format!("exec-e2e-token-{}", std::process::id()));
    std::fs::write(&path, "from-file-token\n")?;
    let server = ServerProc::ws_env(
        &["--token-file", path.to_str().unwrap()],
        &[("EXEC_SERVER_TOKEN", "ignored")],
    )
    .await?;
    let _ = std::fs::remove_file(&path);
    assert_eq!(server.token(), "from-file-token");
    assert_eq!(upgrade_status(server.url(), &[]).await, 101);
    let other = format!("ws://{}/?token=ignored", server.addr());
    assert_eq!(upgrade_status(&other, &[]).await, 401);
    Ok(())
}

#[tokio::test]
async fn connection_limit() -> anyhow::Result<()> {
    let server = ServerProc::ws(&["--max-connections", "1"]).await?;
    let mut first = Client::ws(server.url()).await?;
    first.handshake().await;
    assert_eq!(upgrade_status(server.url(), &[]).await, 503);
    // The healthz endpoint does not count.
    assert_eq!(http_get(&server.addr(), "/healthz", &[]).await?.0, 200);
    first.close().await?;
    drop(first);
    within("a free connection slot", async {
        while upgrade_status(server.url(), &[]).await != 101 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() -> anyhow::Result<()> {
    let server = ServerProc::ws(&["--ping-interval-ms", "100", "--idle-timeout-ms", "500"]).await?;
    let addr = server.addr();
    let mut stream = TcpStream::connect(&addr).await?;
    let request = format!(
        "GET /?token={} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.token()
    );
    stream.write_all(request.as_bytes()).await?;
    // Never answer: the server pings, then closes the connection.
    let mut received = Vec::new();
    within(
        "the server to drop an idle peer",
        stream.read_to_end(&mut received),
    )
    .await?;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // At least one ping frame (opcode 0x9) came after the handshake.
    let body_at = text.find("\r\n\r\n").unwrap() + 4;
    assert!(received[body_at..].contains(&0x89), "no ping frame");
    Ok(())
}

#[tokio::test]
async fn resume_reads_detached_output_and_takes_over() -> anyhow::Result<()> {
    let server = ServerProc::ws(&[]).await?;
    let mut a = Client::ws(server.url()).await?;
    let session_id = a.handshake().await;
    let flag = std::env::temp_dir().join(format!("exec-e2e-resume-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    let done = flag.with_extension("done");
    let _ = std::fs::remove_file(&done);
    a.start(
        "w",
        &[
            "sh",
            "-c",
            "echo one; while [ ! -e \"$F\" ]; do sleep 0.02; done; echo two; touch \"$F.done\"; exec sleep 60",
        ],
        json!({"env": {"PATH": "/usr/bin:/bin", "F": flag.to_str().unwrap()}}),
    )
    .await;
    let first = a.notification().await;
    assert_eq!(first["params"]["seq"], 1);
    assert_eq!(unb64(&first["params"]["chunk"]), b"one\n");
    a.close().await?;
    drop(a);

    // Output produced while detached.
    std::fs::write(&flag, b"")?;
    wait_until("the detached output", || done.exists()).await;

    let mut b = Client::ws(server.url()).await?;
    let result = b
        .call(
            method::INITIALIZE,
            json!({"clientName": "e2e", "resumeSessionId": session_id}),
        )
        .await;
    assert_eq!(result["sessionId"], session_id.as_str());
    b.notify(notification::INITIALIZED, json!({})).await;
    let read = b
        .call(
            method::PROCESS_READ,
            json!({"processId": "w", "afterSeq": 1, "waitMs": 10000}),
        )
        .await;
    assert_eq!(
        read["chunks"],
        json!([{"seq": 2, "stream": "stdout", "chunk": crate::client::b64(b"two\n")}])
    );
    // Pushes resume on the new connection.
    b.call(
        method::PROCESS_TERMINATE,
        json!({"processId": "w", "graceMs": 0}),
    )
    .await;
    let exited = b.notification().await;
    assert_eq!(
        exited["params"],
        json!({"processId": "w", "seq": 3, "exitCode": 137, "signal": "SIGKILL", "timedOut": false})
    );

    // A third connection takes the session over: the second is closed.
    let mut c = Client::ws(server.url()).await?;
    c.call(
        method::INITIALIZE,
        json!({"clientName": "e2e", "resumeSessionId": session_id}),
    )
    .await;
    within("the old connection to close", async {
        while b.recv_text().await.ok().flatten().is_some() {}
    })
    .await;
    c.notify(notification::INITIALIZED, json!({})).await;
    let list = c.call(method::PROCESS_LIST, json!({})).await;
    assert_eq!(list["processes"][0]["processId"], "w");
    let _ = std::fs::remove_file(&flag);
    let _ = std::fs::remove_file(&done);
    Ok(())
}

#[tokio::test]
async fn a_detached_session_expires_and_its_processes_are_gone() -> anyhow::Result<()> {
    let server = ServerProc::ws(&["--session-ttl-ms", "300"]).await?;
    let mut a = Client::ws(server.url()).await?;
    let session_id = a.handshake().await;
    let (child, grandchild) = start_family(&mut a, "fam").await;
    a.close().await?;
    drop(a);
    wait_until("the child to be reaped", || !exists(child)).await;
    wait_until("the grandchild to die", || !alive(grandchild)).await;
    assert_eq!(children_of(server.pid()), Vec::<u32>::new());
    let mut b = Client::ws(server.url()).await?;
    b.call_err(
        method::INITIALIZE,
        json!({"clientName": "e2e", "resumeSessionId": session_id}),
        ErrorCode::SessionNotFound,
    )
    .await;
    Ok(())
}

#[tokio::test]
async fn sigterm_terminates_every_process_and_exits_0() -> anyhow::Result<()> {
    let mut server = ServerProc::ws(&[]).await?;
    let mut a = Client::ws(server.url()).await?;
    a.handshake().await;
    let (child, grandchild) = start_family(&mut a, "fam").await;
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().await?, 0);
    // The URL was the only line on stdout.
    let rest = within("stdout to close", server.stdout_rest.take().unwrap()).await?;
    assert_eq!(rest, Vec::<String>::new());
    assert!(!exists(child), "child {child} survived");
    wait_until("the grandchild to die", || !alive(grandchild)).await;
    Ok(())
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(borrow)]
    method: &'a str,
    #[serde(borrow)]
    params: PushParams<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushParams<'a> {
    seq: u64,
    #[serde(borrow, default)]
    chunk: Option<&'a str>,
}

/// A client that stops reading while a child writes 200 MiB: the server's RSS stays
/// under 100 MiB, and once the client reads again every byte arrives, in order.
#[tokio::test]
async fn a_slow_reader_gets_every_byte_without_server_memory_growth() -> anyhow::Result<()> {
    use base64::Engine as _;
    const BLOCK: usize = 1_000_003;
    const REPEAT: usize = 210; // 210 * BLOCK > 200 MiB
    let mut block = vec![0u8; BLOCK];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut block)?;
    let path = std::env::temp_dir().join(format!("exec-e2e-block-{}", std::process::id()));
    std::fs::write(&path, &block)?;

    let server = ServerProc::ws(&[]).await?;
    let pid = server.pid();
    let mut c = Client::ws(server.url()).await?;
    c.handshake().await;

    let max_rss = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (max_rss, stop) = (max_rss.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max_rss.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let script = format!("i=0; while [ $i -lt {REPEAT} ]; do cat \"$B\"; i=$((i+1)); done");
    c.start(
        "big",
        &["sh", "-c", &script],
        json!({"env": {"PATH": "/usr/bin:/bin", "B": path.to_str().unwrap()}}),
    )
    .await;
    // Not reading: the server must stop reading the child, not buffer. Once its queue
    // is full it has nothing to do: wait until it uses no CPU, then measure.
    let rss_while_stalled = crate::client::peak_rss_until_idle(pid).await;

    let mut offset = 0usize;
    let mut next_seq = 1u64;
    let mut bytes = Vec::new();
    let engine = base64::engine::general_purpose::STANDARD;
    loop {
        let text = within("a push", c.recv_text())
            .await?
            .expect("the connection stayed open");
        let push: Push<'_> = serde_json::from_str(&text)?;
        assert_eq!(push.params.seq, next_seq, "seq gap");
        next_seq += 1;
        if push.method == notification::PROCESS_CLOSED {
            break;
        }
        if push.method != notification::PROCESS_OUTPUT {
            continue;
        }
        bytes.clear();
        engine.decode_vec(push.params.chunk.unwrap_or(""), &mut bytes)?;
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let at = offset % BLOCK;
            let n = rest.len().min(BLOCK - at);
            assert!(
                rest[..n] == block[at..at + n],
                "bytes differ at offset {offset}"
            );
            rest = &rest[n..];
            offset += n;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let _ = std::fs::remove_file(&path);
    assert_eq!(offset, BLOCK * REPEAT);
    let max = max_rss.load(Ordering::Relaxed);
    eprintln!(
        "server VmRSS: {rss_while_stalled} KiB while the client was stalled, {max} KiB at most"
    );
    assert!(
        rss_while_stalled < 100 * 1024,
        "server RSS reached {rss_while_stalled} KiB while the client did not read"
    );
    assert!(max < 100 * 1024, "server RSS reached {max} KiB");
    Ok(())
}

#[tokio::test]
async fn process_and_wait_limits() -> anyhow::Result<()> {
    let server = ServerProc::ws(&["--max-processes", "1", "--max-wait-ms", "50"]).await?;
    let mut c = Client::ws(server.url()).await?;
    c.handshake().await;
    c.start("one", &["sleep", "30"], json!({})).await;
    let e = c
        .call_err(
            method::PROCESS_START,
            json!({"processId": "two", "argv": ["true"], "cwd": "/tmp", "env": {}}),
            ErrorCode::LimitReached,
        )
        .await;
    // The message names the limit.
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("processes per session") && message.contains('1'),
        "{e}"
    );
    // waitMs far above --max-wait-ms still answers (well within the test deadline).
    let read = c
        .call(
            method::PROCESS_READ,
            json!({"processId": "one", "afterSeq": 0, "waitMs": 3_600_000}),
        )
        .await;
    assert_eq!(read["chunks"], json!([]));
    assert_eq!(read["exited"], false);
    c.call(
        method::PROCESS_TERMINATE,
        json!({"processId": "one", "graceMs": 0}),
    )
    .await;
    Ok(())
}
