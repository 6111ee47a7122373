//! WebSocket framing abuse through the real binary: binary frames, fragments, messages over the limit in one frame or many, control frames between data frames; each is answered as SPEC sections 2 and 3 say, and a normal request works right after it.

use exec_server_protocol::{ErrorCode, method};
use serde_json::{Value, json};

use crate::abuse::{Expect, MAX, check, padded_list, req};
use crate::client::{Client, ServerProc};

/// Sends one message in frames of these parts (with their FIN bits).
async fn fragments(c: &mut Client, parts: Vec<(Vec<u8>, bool)>, binary: bool) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let crate::client::Transport::Ws(ws) = &mut c.transport else {
        unreachable!()
    };
    for (i, (part, fin)) in parts.into_iter().enumerate() {
        let opcode = match (i, binary) {
            (0, false) => OpCode::Data(Data::Text),
            (0, true) => OpCode::Data(Data::Binary),
            _ => OpCode::Data(Data::Continue),
        };
        ws.send(Message::Frame(Frame::message(part, opcode, fin)))
            .await
            .expect("send a frame");
    }
}

async fn binary(c: &mut Client, bytes: Vec<u8>) {
    use futures::SinkExt;
    let crate::client::Transport::Ws(ws) = &mut c.transport else {
        unreachable!()
    };
    ws.send(tokio_tungstenite::tungstenite::Message::binary(bytes))
        .await
        .expect("send");
}

/// WebSocket framing: binary frames, fragments, over-limit fragments, control frames.
#[tokio::test]
async fn bad_frames_over_ws() -> anyhow::Result<()> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let max = MAX.to_string();
    let server = ServerProc::ws(&["--max-message-bytes", &max]).await?;
    let mut c = Client::ws(server.url()).await?;
    c.handshake().await;
    binary(&mut c, vec![0x00, 0xff, 0x13, 0x37]).await;
    check(
        &mut c,
        "binary frame, not JSON",
        &Expect::Error(ErrorCode::ParseError, Value::Null),
    )
    .await;
    binary(&mut c, b"\x89PNG\r\n\x1a\n".to_vec()).await;
    check(
        &mut c,
        "binary frame, a PNG header",
        &Expect::Error(ErrorCode::ParseError, Value::Null),
    )
    .await;
    binary(&mut c, req(json!(50), method::PROCESS_LIST, json!({}))).await;
    check(
        &mut c,
        "binary frame holding a request",
        &Expect::Result(json!(50)),
    )
    .await;
    binary(&mut c, Vec::new()).await;
    check(
        &mut c,
        "empty binary frame",
        &Expect::Error(ErrorCode::ParseError, Value::Null),
    )
    .await;

    let at_limit = padded_list(51, MAX);
    let (a, b) = at_limit.split_at(MAX / 2);
    fragments(&mut c, vec![(a.to_vec(), false), (b.to_vec(), true)], false).await;
    check(
        &mut c,
        "fragmented, exactly at the limit",
        &Expect::Result(json!(51)),
    )
    .await;
    let over = padded_list(52, MAX + 1);
    let (a, b) = over.split_at(10);
    fragments(&mut c, vec![(a.to_vec(), false), (b.to_vec(), true)], false).await;
    check(
        &mut c,
        "fragmented, one byte over",
        &Expect::Error(ErrorCode::LimitReached, Value::Null),
    )
    .await;
    let parts: Vec<(Vec<u8>, bool)> = (0..40).map(|i| (vec![b' '; 4096], i == 39)).collect();
    fragments(&mut c, parts, true).await;
    check(
        &mut c,
        "40 binary fragments over the limit",
        &Expect::Error(ErrorCode::LimitReached, Value::Null),
    )
    .await;
    let one = req(json!(53), method::PROCESS_LIST, json!({}));
    let parts: Vec<(Vec<u8>, bool)> = one
        .iter()
        .enumerate()
        .map(|(i, b)| (vec![*b], i + 1 == one.len()))
        .collect();
    fragments(&mut c, parts, false).await;
    check(
        &mut c,
        "a request in one-byte fragments",
        &Expect::Result(json!(53)),
    )
    .await;
    let single = padded_list(54, MAX + 1);
    fragments(&mut c, vec![(single, true)], false).await;
    check(
        &mut c,
        "single frame, one byte over",
        &Expect::Error(ErrorCode::LimitReached, Value::Null),
    )
    .await;

    // Control frames between data frames: a ping is answered, a pong ignored.
    {
        let crate::client::Transport::Ws(ws) = &mut c.transport else {
            unreachable!()
        };
        ws.send(Message::Ping(b"hi".to_vec().into())).await?;
        ws.send(Message::Pong(b"unsolicited".to_vec().into()))
            .await?;
    }
    check(&mut c, "ping and pong", &Expect::Nothing).await;
    Ok(())
}
