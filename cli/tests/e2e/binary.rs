//! Binary output (SPEC section 11) through the real binary: granted only when asked for on a WebSocket, frames in seq order among text frames, `process/read` still base64, and a resume decides afresh.

use exec_server_protocol::{method, notification};
use serde_json::{Value, json};

use crate::client::{BINARY_FRAME, Client, ServerProc, b64};

/// `initialize` with `capabilities` (when given) and `initialized`; returns the result.
async fn init(c: &mut Client, capabilities: Option<Value>, resume: Option<&str>) -> Value {
    let mut params = json!({"clientName": "e2e"});
    if let Some(capabilities) = capabilities {
        params["capabilities"] = capabilities;
    }
    if let Some(session) = resume {
        params["resumeSessionId"] = json!(session);
    }
    let result = c.call(method::INITIALIZE, params).await;
    c.notify(notification::INITIALIZED, json!({})).await;
    result
}

/// Whether this notification came as a binary frame.
fn binary(event: &Value) -> bool {
    event.get(BINARY_FRAME) == Some(&json!(true))
}

/// Runs `printf` of `text` as `process_id` and returns its one output event.
async fn one_output(c: &mut Client, process_id: &str, text: &str) -> Value {
    c.start(process_id, &["printf", text], json!({})).await;
    let events = c.events_until_closed(process_id).await;
    let outputs: Vec<&Value> = events
        .iter()
        .filter(|e| e["method"] == notification::PROCESS_OUTPUT)
        .collect();
    assert_eq!(outputs.len(), 1, "{events:?}");
    outputs[0].clone()
}

#[tokio::test]
async fn granted_on_ws_frames_keep_seq_order_with_text_and_read_stays_base64() -> anyhow::Result<()>
{
    let server = ServerProc::ws(&[]).await?;
    let mut c = Client::ws(server.url()).await?;
    let result = init(&mut c, Some(json!({"binaryOutput": true})), None).await;
    assert_eq!(
        result["capabilities"],
        json!({"binaryOutput": true, "outputWindowBytes": null})
    );

    // Bytes that are not UTF-8, both streams, several chunks, then exit 3.
    let script = "printf 'a\\000b\\377'; printf err >&2; seq 1 40000; exit 3";
    let log_start = c.log.len();
    c.start("b", &["sh", "-c", script], json!({})).await;
    let events = c.events_until_closed("b").await;

    // One ordered stream: seqs 1, 2, 3, … in arrival order across binary and text frames.
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["params"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    // Every output event is a binary frame; exited and closed are JSON text.
    for event in &events {
        let output = event["method"] == notification::PROCESS_OUTPUT;
        assert_eq!(binary(event), output, "{event}");
    }
    assert!(events.len() > 4, "expected several chunks: {events:?}");
    let exited: Vec<&Value> = events
        .iter()
        .filter(|e| e["method"] == notification::PROCESS_EXITED)
        .collect();
    assert_eq!(exited.len(), 1);
    assert_eq!(exited[0]["params"]["exitCode"], 3);
    assert_eq!(
        events.last().unwrap()["method"],
        notification::PROCESS_CLOSED
    );

    // The frames decode to exactly the bytes written, per stream.
    let stream_bytes = |stream: &str| -> Vec<u8> {
        events
            .iter()
            .filter(|e| binary(e) && e["params"]["stream"] == stream)
            .flat_map(|e| crate::client::unb64(&e["params"]["chunk"]))
            .collect()
    };
    let mut expected = b"a\0b\xff".to_vec();
    for i in 1..=40000 {
        expected.extend_from_slice(format!("{i}\n").as_bytes());
    }
    assert_eq!(stream_bytes("stdout"), expected);
    assert_eq!(stream_bytes("stderr"), b"err");

    // The start response was written before the first frame of the process.
    let log = &c.log[log_start..];
    let response = log
        .iter()
        .position(|m| m["result"]["processId"] == "b")
        .unwrap();
    let first_event = log
        .iter()
        .position(|m| m["params"]["processId"] == "b" && m.get("method").is_some())
        .unwrap();
    assert!(response < first_event, "{log:?}");

    // process/read answers in JSON with base64 chunks: the same events as the frames.
    let read = c
        .call(
            method::PROCESS_READ,
            json!({"processId": "b", "afterSeq": 0}),
        )
        .await;
    let pushed: Vec<Value> = events
        .iter()
        .filter(|e| binary(e))
        .map(|e| {
            json!({
                "seq": e["params"]["seq"],
                "stream": e["params"]["stream"],
                "chunk": e["params"]["chunk"],
            })
        })
        .collect();
    assert_eq!(read["chunks"], json!(pushed));
    Ok(())
}

#[tokio::test]
async fn not_granted_on_ws_unless_asked() -> anyhow::Result<()> {
    let server = ServerProc::ws(&[]).await?;
    for capabilities in [None, Some(json!({})), Some(json!({"binaryOutput": false}))] {
        let mut c = Client::ws(server.url()).await?;
        let result = init(&mut c, capabilities.clone(), None).await;
        assert_eq!(
            result["capabilities"],
            json!({"binaryOutput": false, "outputWindowBytes": null}),
            "{capabilities:?}"
        );
        let output = one_output(&mut c, "t", "hi").await;
        assert!(!binary(&output), "{output}");
        assert_eq!(output["params"]["chunk"], b64(b"hi"));
        c.close().await?;
    }
    Ok(())
}

#[tokio::test]
async fn not_granted_over_stdio() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    let result = init(&mut c, Some(json!({"binaryOutput": true})), None).await;
    assert_eq!(
        result["capabilities"],
        json!({"binaryOutput": false, "outputWindowBytes": null})
    );
    let output = one_output(&mut c, "t", "hi").await;
    assert_eq!(
        output,
        json!({"jsonrpc": "2.0", "method": notification::PROCESS_OUTPUT,
               "params": {"processId": "t", "seq": 1, "stream": "stdout", "chunk": b64(b"hi")}})
    );
    Ok(())
}

#[tokio::test]
async fn a_resume_decides_binary_output_afresh() -> anyhow::Result<()> {
    let server = ServerProc::ws(&[]).await?;
    let mut a = Client::ws(server.url()).await?;
    let result = init(&mut a, Some(json!({"binaryOutput": true})), None).await;
    assert_eq!(result["capabilities"]["binaryOutput"], true);
    let session = result["sessionId"].as_str().unwrap().to_owned();
    assert!(binary(&one_output(&mut a, "a", "1").await));
    a.close().await?;
    drop(a);

    // Resumed without asking: JSON output.
    let mut b = Client::ws(server.url()).await?;
    let result = init(&mut b, None, Some(&session)).await;
    assert_eq!(result["capabilities"]["binaryOutput"], false);
    let output = one_output(&mut b, "b", "2").await;
    assert!(!binary(&output), "{output}");
    assert_eq!(output["params"]["chunk"], b64(b"2"));
    b.close().await?;
    drop(b);

    // Resumed asking again: binary output.
    let mut c = Client::ws(server.url()).await?;
    let result = init(&mut c, Some(json!({"binaryOutput": true})), Some(&session)).await;
    assert_eq!(result["capabilities"]["binaryOutput"], true);
    let output = one_output(&mut c, "c", "3").await;
    assert!(binary(&output), "{output}");
    assert_eq!(output["params"]["chunk"], b64(b"3"));
    Ok(())
}
