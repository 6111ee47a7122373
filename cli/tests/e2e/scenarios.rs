//! Scenarios run over both transports: handshake, process lifecycle, long poll, writes, tty, signals, errors.

use exec_server_protocol::{ErrorCode, method, notification};
use serde_json::{Value, json};

use crate::client::{Client, Kind, ServerProc, b64, output_of, unb64};

/// Checks that the seqs of one process's events are 1, 2, 3, … and that `closed` is last.
fn assert_contiguous(events: &[Value]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["params"]["seq"],
            json!(i as u64 + 1),
            "seq gap in {events:#?}"
        );
    }
    let last = events.last().expect("no events");
    assert_eq!(last["method"], notification::PROCESS_CLOSED);
}

/// Collects the output notifications of `process_id` until its output contains `needle`.
async fn output_until(c: &mut Client, process_id: &str, needle: &str) -> String {
    let mut out = Vec::new();
    loop {
        let n = c.notification().await;
        if n["params"]["processId"] != process_id {
            continue;
        }
        assert_eq!(
            n["method"],
            notification::PROCESS_OUTPUT,
            "before {needle:?}: {n}"
        );
        out.extend(unb64(&n["params"]["chunk"]));
        let text = String::from_utf8_lossy(&out).into_owned();
        if text.contains(needle) {
            return text;
        }
    }
}

/// The notification of `process_id` with this method, skipping (and dropping) every
/// notification before it.
async fn wait_event(c: &mut Client, process_id: &str, method: &str) -> Value {
    loop {
        let n = c.notification().await;
        if n["params"]["processId"] == process_id && n["method"] == method {
            return n;
        }
    }
}

pub async fn handshake(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    let e = c
        .call_err(method::PROCESS_LIST, json!({}), ErrorCode::InvalidRequest)
        .await;
    let initialize = format!("`{}`", method::INITIALIZE);
    assert!(e["message"].as_str().unwrap().contains(&initialize), "{e}");

    let result = c
        .call(
            method::INITIALIZE,
            json!({"clientName": "e2e", "clientVersion": "1"}),
        )
        .await;
    let session_id = result["sessionId"].as_str().unwrap().to_owned();
    assert!(session_id.len() >= 32, "{result}");
    assert_eq!(
        result,
        json!({
            "sessionId": session_id,
            "protocolVersion": 1,
            "serverName": "exec-server",
            "serverVersion": env!("CARGO_PKG_VERSION"),
            "capabilities": {"binaryOutput": false, "outputWindowBytes": null},
        })
    );

    let e = c
        .call_err(method::PROCESS_LIST, json!({}), ErrorCode::InvalidRequest)
        .await;
    let initialized = format!("`{}`", notification::INITIALIZED);
    assert!(e["message"].as_str().unwrap().contains(&initialized), "{e}");

    c.call_err(
        method::INITIALIZE,
        json!({"clientName": "again"}),
        ErrorCode::InvalidRequest,
    )
    .await;

    // An unknown notification is ignored.
    c.notify("e2e/unknownNotification", json!({})).await;
    c.notify(notification::INITIALIZED, json!({})).await;
    assert_eq!(
        c.call(method::PROCESS_LIST, json!({})).await,
        json!({"processes": []})
    );
    // A second `initialize` after the handshake is still refused.
    c.call_err(
        method::INITIALIZE,
        json!({"clientName": "again"}),
        ErrorCode::InvalidRequest,
    )
    .await;
    Ok(())
}

pub async fn lifecycle(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let id = c
        .send_request(
            method::PROCESS_START,
            json!({
                "processId": "p1",
                "argv": ["sh", "-c", "echo hi; echo oops >&2; exit 7"],
                "cwd": "/tmp",
                "env": {"PATH": "/usr/bin:/bin"},
            }),
        )
        .await;
    let response = c.response(&id).await;
    let pid = response["result"]["pid"].as_u64().unwrap();
    assert_eq!(response["result"], json!({"processId": "p1", "pid": pid}));
    let events = c.events_until_closed("p1").await;

    // The start response came before any notification of p1.
    let response_at = c.log.iter().position(|m| m["id"] == id).unwrap();
    let first_event_at = c
        .log
        .iter()
        .position(|m| m.get("id").is_none() && m["params"]["processId"] == "p1")
        .unwrap();
    assert!(response_at < first_event_at, "{:#?}", c.log);

    assert_contiguous(&events);
    assert_eq!(events.len(), 4, "{events:#?}");
    let mut outputs: Vec<(String, Vec<u8>)> = events[..2]
        .iter()
        .map(|e| {
            assert_eq!(e["method"], notification::PROCESS_OUTPUT);
            (
                e["params"]["stream"].as_str().unwrap().to_owned(),
                unb64(&e["params"]["chunk"]),
            )
        })
        .collect();
    outputs.sort();
    assert_eq!(
        outputs,
        vec![
            ("stderr".to_owned(), b"oops\n".to_vec()),
            ("stdout".to_owned(), b"hi\n".to_vec())
        ]
    );
    assert_eq!(
        events[2],
        json!({"jsonrpc": "2.0", "method": notification::PROCESS_EXITED,
               "params": {"processId": "p1", "seq": 3, "exitCode": 7, "signal": null, "timedOut": false}})
    );
    assert_eq!(
        events[3],
        json!({"jsonrpc": "2.0", "method": notification::PROCESS_CLOSED,
               "params": {"processId": "p1", "seq": 4}})
    );

    let read = c
        .call(
            method::PROCESS_READ,
            json!({"processId": "p1", "afterSeq": 0}),
        )
        .await;
    let chunks: Vec<Value> = events[..2]
        .iter()
        .map(|e| {
            json!({"seq": e["params"]["seq"], "stream": e["params"]["stream"], "chunk": e["params"]["chunk"]})
        })
        .collect();
    assert_eq!(
        read,
        json!({"chunks": chunks, "nextSeq": 5, "exited": true, "exitCode": 7, "signal": null,
               "closed": true, "timedOut": false, "truncated": false, "evictedBytes": 0, "failure": null})
    );

    let list = c.call(method::PROCESS_LIST, json!({})).await;
    assert_eq!(
        list,
        json!({"processes": [{"processId": "p1", "pid": pid,
            "argv": ["sh", "-c", "echo hi; echo oops >&2; exit 7"], "tty": false, "exited": true,
            "exitCode": 7, "signal": null, "closed": true, "timedOut": false, "nextSeq": 5}]})
    );
    Ok(())
}

pub async fn long_poll_and_writes(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start(
        "r",
        &["sh", "-c", "read line; echo \"got $line\"; exec cat"],
        json!({"pipeStdin": true}),
    )
    .await;

    // A long poll is pending while other requests are answered.
    let poll = c
        .send_request(
            method::PROCESS_READ,
            json!({"processId": "r", "afterSeq": 0, "waitMs": 25000}),
        )
        .await;
    let list = c.call(method::PROCESS_LIST, json!({})).await;
    assert_eq!(list["processes"][0]["exited"], false);
    let status = c
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "r", "chunk": b64(b"hello\n")}),
        )
        .await;
    assert_eq!(status, json!({"status": "accepted"}));
    let read = c.response(&poll).await;
    assert_eq!(
        read["result"]["chunks"],
        json!([{"seq": 1, "stream": "stdout", "chunk": b64(b"got hello\n")}])
    );
    assert_eq!(read["result"]["nextSeq"], 2);
    assert_eq!(read["result"]["exited"], false);

    // Pipelined writes reach stdin in the order they were sent.
    let mut ids = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        let line = format!("line {i}\n");
        expected.extend_from_slice(line.as_bytes());
        ids.push(
            c.send_request(
                method::PROCESS_WRITE,
                json!({"processId": "r", "chunk": b64(line.as_bytes()), "writeId": format!("w{i}")}),
            )
            .await,
        );
    }
    // A retried writeId is acknowledged without being written again.
    ids.push(
        c.send_request(
            method::PROCESS_WRITE,
            json!({"processId": "r", "chunk": b64(b"line 0\n"), "writeId": "w0"}),
        )
        .await,
    );
    let close = c
        .send_request(method::PROCESS_CLOSE_STDIN, json!({"processId": "r"}))
        .await;
    for id in &ids {
        assert_eq!(
            c.response(id).await["result"],
            json!({"status": "accepted"})
        );
    }
    assert_eq!(
        c.response(&close).await["result"],
        json!({"status": "accepted"})
    );
    let events = c.events_until_closed("r").await;
    let all = output_of(&events);
    let mut want = b"got hello\n".to_vec();
    want.extend(&expected);
    assert_eq!(
        String::from_utf8_lossy(&all),
        String::from_utf8_lossy(&want)
    );
    let exited = events
        .iter()
        .find(|e| e["method"] == notification::PROCESS_EXITED)
        .unwrap();
    assert_eq!(exited["params"]["exitCode"], 0);

    // After the exit, stdin is closed.
    let status = c
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "r", "chunk": b64(b"x")}),
        )
        .await;
    assert_eq!(status, json!({"status": "stdinClosed"}));
    let status = c
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "nobody", "chunk": b64(b"x")}),
        )
        .await;
    assert_eq!(status, json!({"status": "unknownProcess"}));
    Ok(())
}

pub async fn tty(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start(
        "t",
        &[
            "sh",
            "-c",
            "stty size; read x; stty size; read y; echo \"[$y]\"",
        ],
        json!({"tty": true, "size": {"rows": 24, "cols": 80}}),
    )
    .await;
    output_until(&mut c, "t", "24 80").await;
    assert_eq!(
        c.call(
            method::PROCESS_RESIZE,
            json!({"processId": "t", "rows": 40, "cols": 100})
        )
        .await,
        json!({})
    );
    c.call(
        method::PROCESS_WRITE,
        json!({"processId": "t", "chunk": b64(b"\n")}),
    )
    .await;
    output_until(&mut c, "t", "40 100").await;
    let status = c
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "t", "chunk": b64(b"typed\n")}),
        )
        .await;
    assert_eq!(status, json!({"status": "accepted"}));
    let text = output_until(&mut c, "t", "[typed]").await;
    // The terminal echoed the line (with its CR LF) before the shell printed it back.
    let echo = text.find("typed\r\n").expect("the tty echo");
    assert!(echo < text.find("[typed]").unwrap(), "{text:?}");
    let exited = wait_event(&mut c, "t", notification::PROCESS_EXITED).await;
    assert_eq!(exited["params"]["exitCode"], 0);
    wait_event(&mut c, "t", notification::PROCESS_CLOSED).await;
    let read = c
        .call(method::PROCESS_READ, json!({"processId": "t"}))
        .await;
    assert!(
        read["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|ch| ch["stream"] == "pty"),
        "{read}"
    );
    Ok(())
}

pub async fn signals_and_terminate(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start("s", &["sleep", "30"], json!({})).await;
    c.start("k", &["sleep", "30"], json!({})).await;
    assert_eq!(
        c.call(
            method::PROCESS_SIGNAL,
            json!({"processId": "s", "signal": "SIGINT"})
        )
        .await,
        json!({"delivered": true})
    );
    let exited = wait_event(&mut c, "s", notification::PROCESS_EXITED).await;
    assert_eq!(
        exited["params"],
        json!({"processId": "s", "seq": 1, "exitCode": 130, "signal": "SIGINT", "timedOut": false})
    );
    wait_event(&mut c, "s", notification::PROCESS_CLOSED).await;
    assert_eq!(
        c.call(
            method::PROCESS_TERMINATE,
            json!({"processId": "k", "graceMs": 0})
        )
        .await,
        json!({"running": true})
    );
    let exited = wait_event(&mut c, "k", notification::PROCESS_EXITED).await;
    assert_eq!(
        exited["params"],
        json!({"processId": "k", "seq": 1, "exitCode": 137, "signal": "SIGKILL", "timedOut": false})
    );
    wait_event(&mut c, "k", notification::PROCESS_CLOSED).await;
    assert_eq!(
        c.call(
            method::PROCESS_SIGNAL,
            json!({"processId": "s", "signal": "SIGTERM"})
        )
        .await,
        json!({"delivered": false})
    );
    assert_eq!(
        c.call(method::PROCESS_TERMINATE, json!({"processId": "k"}))
            .await,
        json!({"running": false})
    );
    assert_eq!(
        c.call(method::PROCESS_TERMINATE, json!({"processId": "nobody"}))
            .await,
        json!({"running": false})
    );
    let list = c.call(method::PROCESS_LIST, json!({})).await;
    let mut summary: Vec<(String, Value, Value, Value)> = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["processId"].as_str().unwrap().to_owned(),
                p["exitCode"].clone(),
                p["signal"].clone(),
                p["closed"].clone(),
            )
        })
        .collect();
    summary.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        summary,
        vec![
            ("k".to_owned(), json!(137), json!("SIGKILL"), json!(true)),
            ("s".to_owned(), json!(130), json!("SIGINT"), json!(true)),
        ]
    );
    Ok(())
}

/// Every error code of SPEC section 3 that a client can provoke, each followed by a
/// request that still works.
pub async fn errors(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &["--max-message-bytes", "65536"]).await?;
    let mut c = server.client().await?;

    // -32010 before anything else; the connection can still initialize afterwards.
    c.call_err(
        method::INITIALIZE,
        json!({"clientName": "e2e", "resumeSessionId": "0123456789abcdef"}),
        ErrorCode::SessionNotFound,
    )
    .await;
    c.handshake().await;

    async fn still_works(c: &mut Client) {
        let list = c.call(method::PROCESS_LIST, json!({})).await;
        assert!(list["processes"].is_array(), "{list}");
    }

    // -32700: not JSON (id null).
    c.send_raw("{this is not json").await?;
    let r = c.response(&Value::Null).await;
    assert_eq!(r["error"]["code"], ErrorCode::ParseError.code(), "{r}");
    still_works(&mut c).await;

    // -32600: valid JSON but not a request; a batch is one error object.
    c.send_raw(r#"{"jsonrpc":"2.0","id":5}"#).await?;
    let r = c.response(&json!(5)).await;
    assert_eq!(r["error"]["code"], ErrorCode::InvalidRequest.code(), "{r}");
    let batch = json!([{"jsonrpc": "2.0", "id": 6, "method": method::PROCESS_LIST}]);
    c.send(&batch).await?;
    let r = c.response(&Value::Null).await;
    assert_eq!(r["error"]["code"], ErrorCode::InvalidRequest.code(), "{r}");
    assert!(r.is_object());
    still_works(&mut c).await;

    // -32601.
    c.call_err("e2e/noSuchMethod", json!({}), ErrorCode::MethodNotFound)
        .await;
    still_works(&mut c).await;

    // -32602: wrong types, empty argv, relative cwd, bad base64, unknown signal.
    let e = c
        .call_err(
            method::PROCESS_START,
            json!({"processId": 5, "argv": ["true"], "cwd": "/tmp", "env": {}}),
            ErrorCode::InvalidParams,
        )
        .await;
    assert!(
        e["message"].as_str().unwrap().contains("invalid type"),
        "{e}"
    );
    c.call_err(
        method::PROCESS_START,
        json!({"processId": "x", "argv": [], "cwd": "/tmp", "env": {}}),
        ErrorCode::InvalidParams,
    )
    .await;
    c.call_err(
        method::PROCESS_START,
        json!({"processId": "x", "argv": ["true"], "cwd": "tmp", "env": {}}),
        ErrorCode::InvalidParams,
    )
    .await;
    c.call_err(
        method::PROCESS_START,
        json!({"processId": "x", "argv": ["true"], "cwd": "/tmp"}),
        ErrorCode::InvalidParams,
    )
    .await;
    let e = c
        .call_err(
            method::PROCESS_WRITE,
            json!({"processId": "x", "chunk": "***"}),
            ErrorCode::InvalidParams,
        )
        .await;
    assert!(e["message"].as_str().unwrap().contains("base64"), "{e}");
    c.call_err(
        method::PROCESS_SIGNAL,
        json!({"processId": "x", "signal": "SIGFOO"}),
        ErrorCode::InvalidParams,
    )
    .await;
    still_works(&mut c).await;

    // -32001: a message over --max-message-bytes.
    let big = "x".repeat(70_000);
    c.send(&json!({"jsonrpc": "2.0", "id": 77, "method": method::PROCESS_LIST, "params": {"pad": big}}))
        .await?;
    let r = c.response(&Value::Null).await;
    assert_eq!(r["error"]["code"], ErrorCode::LimitReached.code(), "{r}");
    still_works(&mut c).await;

    // -32001: a response over --max-message-bytes.
    c.start("big", &["head", "-c", "100000", "/dev/zero"], json!({}))
        .await;
    wait_event(&mut c, "big", notification::PROCESS_CLOSED).await;
    let e = c
        .call_err(
            method::PROCESS_READ,
            json!({"processId": "big"}),
            ErrorCode::LimitReached,
        )
        .await;
    assert!(e["message"].as_str().unwrap().contains("maxBytes"), "{e}");
    still_works(&mut c).await;

    // -32000: the program does not exist.
    let e = c
        .call_err(
            method::PROCESS_START,
            json!({"processId": "nx", "argv": ["/nonexistent/program"], "cwd": "/tmp", "env": {}}),
            ErrorCode::SpawnFailed,
        )
        .await;
    // The OS error text, as SPEC 3 says.
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("No such file or directory"), "{e}");
    still_works(&mut c).await;

    // -32004: unknown process for read and resize.
    c.call_err(
        method::PROCESS_READ,
        json!({"processId": "nobody"}),
        ErrorCode::ProcessNotFound,
    )
    .await;
    c.call_err(
        method::PROCESS_RESIZE,
        json!({"processId": "nobody", "rows": 10, "cols": 10}),
        ErrorCode::ProcessNotFound,
    )
    .await;

    // -32600: duplicate processId; resize of a process without a tty.
    c.start("dup", &["sleep", "30"], json!({})).await;
    c.call_err(
        method::PROCESS_START,
        json!({"processId": "dup", "argv": ["true"], "cwd": "/tmp", "env": {}}),
        ErrorCode::InvalidRequest,
    )
    .await;
    c.call_err(
        method::PROCESS_RESIZE,
        json!({"processId": "dup", "rows": 10, "cols": 10}),
        ErrorCode::InvalidRequest,
    )
    .await;
    c.call(
        method::PROCESS_TERMINATE,
        json!({"processId": "dup", "graceMs": 0}),
    )
    .await;
    still_works(&mut c).await;
    Ok(())
}
