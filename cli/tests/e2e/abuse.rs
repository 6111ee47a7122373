//! The bad-input corpus, over both transports of the real binary: each message is answered as SPEC section 3 says (or not at all, for a notification), and a normal request works right after it.

use exec_server_protocol::{ErrorCode, method, notification};
use serde_json::{Value, json};

use crate::client::{Client, Kind, ServerProc, b64};

/// The message size limit of the servers under test.
pub(crate) const MAX: usize = 65_536;

/// What the server must do with a message.
#[derive(Debug, Clone)]
pub(crate) enum Expect {
    /// An error response with this code and this id.
    Error(ErrorCode, Value),
    /// A successful response with this id.
    Result(Value),
    /// Nothing (a notification).
    Nothing,
}

struct Case {
    name: String,
    message: Vec<u8>,
    expect: Expect,
}

fn case(name: &str, message: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        message: message.into(),
        expect,
    }
}

pub(crate) fn req(id: Value, method: &str, params: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        .to_string()
        .into_bytes()
}

/// A `process/list` request with id `id`, padded with spaces to exactly `len` bytes.
pub(crate) fn padded_list(id: u64, len: usize) -> Vec<u8> {
    let head = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{}\",",
        method::PROCESS_LIST
    );
    let tail = "\"params\":{}}";
    let mut out = head.into_bytes();
    out.resize(len - tail.len(), b' ');
    out.extend_from_slice(tail.as_bytes());
    assert_eq!(out.len(), len);
    out
}

fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
    let mut s = open.repeat(depth);
    s.push_str(inner);
    s.push_str(&close.repeat(depth));
    s
}

/// The corpus shared by both transports. Process `tty` is a live tty process.
fn corpus() -> Vec<Case> {
    use ErrorCode::*;
    let null = Value::Null;
    let long_id = "p".repeat(10 * 1024);
    let mib = "x".repeat(1 << 20);
    // A huge string that still fits in a message.
    let big = "x".repeat(MAX - 200);
    let start = |id: u64, params: Value| {
        let mut p = json!({"processId": "new", "argv": ["true"], "cwd": "/tmp", "env": {}});
        if let (Some(p), Some(extra)) = (p.as_object_mut(), params.as_object()) {
            for (k, v) in extra {
                p.insert(k.clone(), v.clone());
            }
        }
        req(json!(id), method::PROCESS_START, p)
    };
    vec![
        // Not JSON.
        case(
            "invalid JSON",
            "{this is not json",
            Expect::Error(ParseError, null.clone()),
        ),
        case(
            "truncated JSON",
            r#"{"jsonrpc":"2.0","id":1,"#,
            Expect::Error(ParseError, null.clone()),
        ),
        case(
            "trailing garbage",
            r#"{"jsonrpc":"2.0","id":1,"method":"x"} x"#,
            Expect::Error(ParseError, null.clone()),
        ),
        case(
            "invalid UTF-8",
            [
                &br#"{"jsonrpc":"2.0","id":2,"method":"process/list","params":{"x":""#[..],
                b"\xff\xfe",
                b"\"}}",
            ]
            .concat(),
            Expect::Error(ParseError, null.clone()),
        ),
        case(
            "invalid UTF-8 in the method",
            [
                &br#"{"jsonrpc":"2.0","id":2,"method":"process/"#[..],
                b"\xc3\x28",
                b"\"}",
            ]
            .concat(),
            Expect::Error(ParseError, null.clone()),
        ),
        // Valid JSON, and an array: a batch.
        case(
            "array nested 10,000 deep",
            nested("[", "", "]", 10_000),
            Expect::Error(InvalidRequest, null.clone()),
        ),
        case(
            "object nested 10,000 deep",
            nested("{\"a\":", "1", "}", 10_000),
            Expect::Error(InvalidRequest, null.clone()),
        ),
        case(
            "params nested 10,000 deep",
            format!(
                r#"{{"jsonrpc":"2.0","id":3,"method":"{}","params":{{"a":{}}}}}"#,
                method::PROCESS_LIST,
                nested("[", "", "]", 10_000)
            ),
            // An unknown params field, ignored (without recursion).
            Expect::Result(json!(3)),
        ),
        // Valid JSON, not a request.
        case("a number", "5", Expect::Error(InvalidRequest, null.clone())),
        case(
            "a string",
            "\"process/list\"",
            Expect::Error(InvalidRequest, null.clone()),
        ),
        case("null", "null", Expect::Error(InvalidRequest, null.clone())),
        case(
            "a batch",
            req(json!(4), method::PROCESS_LIST, json!({}))
                .iter()
                .copied()
                .fold(b"[".to_vec(), |mut v, b| {
                    v.push(b);
                    v
                })
                .into_iter()
                .chain(*b"]")
                .collect::<Vec<u8>>(),
            Expect::Error(InvalidRequest, null.clone()),
        ),
        case(
            "an empty batch",
            "[]",
            Expect::Error(InvalidRequest, null.clone()),
        ),
        case(
            "a response from the client",
            r#"{"jsonrpc":"2.0","id":5,"result":{}}"#,
            Expect::Error(InvalidRequest, json!(5)),
        ),
        case(
            "an error from the client",
            r#"{"jsonrpc":"2.0","id":6,"error":{"code":1,"message":"x"}}"#,
            Expect::Error(InvalidRequest, json!(6)),
        ),
        case(
            "no jsonrpc member",
            format!(r#"{{"id":7,"method":"{}"}}"#, method::PROCESS_LIST),
            Expect::Error(InvalidRequest, json!(7)),
        ),
        case(
            "jsonrpc 1.0",
            format!(
                r#"{{"jsonrpc":"1.0","id":8,"method":"{}"}}"#,
                method::PROCESS_LIST
            ),
            Expect::Error(InvalidRequest, json!(8)),
        ),
        case(
            "method not a string",
            r#"{"jsonrpc":"2.0","id":9,"method":5}"#,
            Expect::Error(InvalidRequest, json!(9)),
        ),
        case(
            "id an object",
            format!(
                r#"{{"jsonrpc":"2.0","id":{{"a":1}},"method":"{}"}}"#,
                method::PROCESS_LIST
            ),
            Expect::Error(InvalidRequest, null.clone()),
        ),
        case(
            "id a fraction",
            format!(
                r#"{{"jsonrpc":"2.0","id":1.5,"method":"{}"}}"#,
                method::PROCESS_LIST
            ),
            Expect::Error(InvalidRequest, null.clone()),
        ),
        case(
            "id negative",
            format!(
                r#"{{"jsonrpc":"2.0","id":-5,"method":"{}"}}"#,
                method::PROCESS_LIST
            ),
            Expect::Error(InvalidRequest, null.clone()),
        ),
        case(
            "id of 2 KiB",
            req(json!("i".repeat(2048)), method::PROCESS_LIST, json!({})),
            Expect::Error(InvalidRequest, null.clone()),
        ),
        case(
            "duplicate id",
            format!(
                r#"{{"jsonrpc":"2.0","id":10,"id":11,"method":"{}"}}"#,
                method::PROCESS_LIST
            ),
            Expect::Error(InvalidRequest, null.clone()),
        ),
        // Requests with bad params.
        case(
            "unknown method of 64 KiB",
            req(json!(12), &big, json!({})),
            Expect::Error(MethodNotFound, json!(12)),
        ),
        case(
            "params a string",
            req(json!(13), method::PROCESS_LIST, json!("x")),
            Expect::Error(InvalidParams, json!(13)),
        ),
        case(
            "negative waitMs",
            req(
                json!(14),
                method::PROCESS_READ,
                json!({"processId": "tty", "waitMs": -1}),
            ),
            Expect::Error(InvalidParams, json!(14)),
        ),
        case(
            "afterSeq beyond u64",
            format!(
                r#"{{"jsonrpc":"2.0","id":15,"method":"{}","params":{{"processId":"tty","afterSeq":18446744073709551616}}}}"#,
                method::PROCESS_READ
            ),
            Expect::Error(InvalidParams, json!(15)),
        ),
        case(
            "afterSeq a fraction",
            req(
                json!(16),
                method::PROCESS_READ,
                json!({"processId": "tty", "afterSeq": 1.5}),
            ),
            Expect::Error(InvalidParams, json!(16)),
        ),
        case(
            "a 64 KiB string as waitMs",
            req(
                json!(17),
                method::PROCESS_READ,
                json!({"processId": "tty", "waitMs": big}),
            ),
            Expect::Error(InvalidParams, json!(17)),
        ),
        case(
            "resize to 0 rows",
            req(
                json!(18),
                method::PROCESS_RESIZE,
                json!({"processId": "tty", "rows": 0, "cols": 80}),
            ),
            Expect::Error(InvalidParams, json!(18)),
        ),
        case(
            "resize to 70000 rows",
            req(
                json!(19),
                method::PROCESS_RESIZE,
                json!({"processId": "tty", "rows": 70000, "cols": 80}),
            ),
            Expect::Error(InvalidParams, json!(19)),
        ),
        case(
            "start with 0 cols",
            start(20, json!({"tty": true, "size": {"rows": 24, "cols": 0}})),
            Expect::Error(InvalidParams, json!(20)),
        ),
        case(
            "start with 70000 rows",
            start(
                21,
                json!({"tty": true, "size": {"rows": 70000, "cols": 80}}),
            ),
            Expect::Error(InvalidParams, json!(21)),
        ),
        case(
            "start with a 10 KiB processId",
            start(22, json!({"processId": long_id})),
            Expect::Error(InvalidParams, json!(22)),
        ),
        case(
            "read with a 10 KiB processId",
            req(
                json!(23),
                method::PROCESS_READ,
                json!({"processId": long_id, "waitMs": 300000}),
            ),
            Expect::Error(InvalidParams, json!(23)),
        ),
        case(
            "write with a 10 KiB processId",
            req(
                json!(24),
                method::PROCESS_WRITE,
                json!({"processId": long_id, "chunk": ""}),
            ),
            Expect::Error(InvalidParams, json!(24)),
        ),
        case(
            "signal with a 10 KiB processId",
            req(
                json!(25),
                method::PROCESS_SIGNAL,
                json!({"processId": long_id, "signal": "SIGTERM"}),
            ),
            Expect::Error(InvalidParams, json!(25)),
        ),
        case(
            "start with an empty processId",
            start(26, json!({"processId": ""})),
            Expect::Error(InvalidParams, json!(26)),
        ),
        case(
            "NUL in argv",
            start(27, json!({"argv": ["tr\u{0}ue"]})),
            Expect::Error(InvalidParams, json!(27)),
        ),
        case(
            "NUL in an env value",
            start(28, json!({"env": {"A": "x\u{0}y"}})),
            Expect::Error(InvalidParams, json!(28)),
        ),
        case(
            "NUL in an env name",
            start(29, json!({"env": {"A\u{0}B": "x"}})),
            Expect::Error(InvalidParams, json!(29)),
        ),
        case(
            "= in an env name",
            start(30, json!({"env": {"A=B": "x"}})),
            Expect::Error(InvalidParams, json!(30)),
        ),
        case(
            "relative cwd",
            start(31, json!({"cwd": "tmp"})),
            Expect::Error(InvalidParams, json!(31)),
        ),
        case(
            "bad base64",
            req(
                json!(32),
                method::PROCESS_WRITE,
                json!({"processId": "tty", "chunk": "***"}),
            ),
            Expect::Error(InvalidParams, json!(32)),
        ),
        case(
            "unknown signal",
            req(
                json!(33),
                method::PROCESS_SIGNAL,
                json!({"processId": "tty", "signal": "SIGFOO"}),
            ),
            Expect::Error(InvalidParams, json!(33)),
        ),
        case(
            "duplicate key in params",
            format!(
                r#"{{"jsonrpc":"2.0","id":34,"method":"{}","params":{{"processId":"a","processId":"b","signal":"SIGTERM"}}}}"#,
                method::PROCESS_SIGNAL
            ),
            Expect::Error(InvalidParams, json!(34)),
        ),
        case(
            "a second initialize",
            req(
                json!(35),
                method::INITIALIZE,
                json!({"clientName": "again"}),
            ),
            Expect::Error(InvalidRequest, json!(35)),
        ),
        // Accepted as they are.
        case(
            "unknown params field",
            req(json!(36), method::PROCESS_LIST, json!({"bogus": 1})),
            Expect::Result(json!(36)),
        ),
        case(
            "64 KiB unknown params field",
            req(json!(37), method::PROCESS_LIST, json!({"pad": big})),
            Expect::Result(json!(37)),
        ),
        case(
            "unknown top-level member",
            format!(
                r#"{{"jsonrpc":"2.0","id":38,"method":"{}","extra":[1,2]}}"#,
                method::PROCESS_LIST
            ),
            Expect::Result(json!(38)),
        ),
        case(
            "a write of 0 bytes",
            req(
                json!(39),
                method::PROCESS_WRITE,
                json!({"processId": "tty", "chunk": ""}),
            ),
            Expect::Result(json!(39)),
        ),
        case(
            "exactly the size limit",
            padded_list(40, MAX),
            Expect::Result(json!(40)),
        ),
        // Over the size limit.
        case(
            "one byte over the size limit",
            padded_list(41, MAX + 1),
            Expect::Error(LimitReached, null.clone()),
        ),
        case(
            "1 MiB over the size limit",
            req(json!(42), method::PROCESS_LIST, json!({"pad": mib})),
            Expect::Error(LimitReached, null.clone()),
        ),
        // File calls: refused before anything is touched (the paths do not exist, so a
        // check that was skipped would show as a file error instead).
        case(
            "fs/chmod on a missing path",
            req(
                json!(60),
                method::FS_CHMOD,
                json!({"path": "/nonexistent-exec-server-e2e/f", "mode": 0o644}),
            ),
            Expect::Error(FileError, json!(60)),
        ),
        case(
            "fs/chmod with a mode beyond 0o7777",
            req(
                json!(61),
                method::FS_CHMOD,
                json!({"path": "/nonexistent-exec-server-e2e/f", "mode": 0o10000}),
            ),
            Expect::Error(InvalidParams, json!(61)),
        ),
        case(
            "fs/chmod with a mode beyond u32",
            req(
                json!(62),
                method::FS_CHMOD,
                json!({"path": "/nonexistent-exec-server-e2e/f", "mode": 1u64 << 32}),
            ),
            Expect::Error(InvalidParams, json!(62)),
        ),
        case(
            "fs/chmod with a negative mode",
            req(
                json!(63),
                method::FS_CHMOD,
                json!({"path": "/nonexistent-exec-server-e2e/f", "mode": -1}),
            ),
            Expect::Error(InvalidParams, json!(63)),
        ),
        case(
            "fs/chmod without a mode",
            req(
                json!(64),
                method::FS_CHMOD,
                json!({"path": "/nonexistent-exec-server-e2e/f"}),
            ),
            Expect::Error(InvalidParams, json!(64)),
        ),
        case(
            "fs/chmod of a relative path",
            req(
                json!(65),
                method::FS_CHMOD,
                json!({"path": "tmp", "mode": 0o755}),
            ),
            Expect::Error(InvalidParams, json!(65)),
        ),
        case(
            "fs/write exclusive and atomic",
            req(
                json!(66),
                method::FS_WRITE,
                json!({"path": "/nonexistent-exec-server-e2e/f", "data": "", "exclusive": true, "atomic": true}),
            ),
            Expect::Error(InvalidParams, json!(66)),
        ),
        case(
            "fs/write exclusive without create",
            req(
                json!(67),
                method::FS_WRITE,
                json!({"path": "/nonexistent-exec-server-e2e/f", "data": "", "exclusive": true, "create": false}),
            ),
            Expect::Error(InvalidParams, json!(67)),
        ),
        // Notifications: no answer.
        case(
            "unknown notification",
            r#"{"jsonrpc":"2.0","method":"e2e/unknown","params":{"a":1}}"#,
            Expect::Nothing,
        ),
        case(
            "initialized again, with params",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":[1,2,3]}}"#,
                notification::INITIALIZED
            ),
            Expect::Nothing,
        ),
        // Acks (SPEC section 13): never answered, whatever they hold.
        case(
            "an ack with params a string",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":"x"}}"#,
                notification::PROCESS_ACK
            ),
            Expect::Nothing,
        ),
        case(
            "an ack without params",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}"}}"#,
                notification::PROCESS_ACK
            ),
            Expect::Nothing,
        ),
        case(
            "an ack without seq",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":{{"processId":"tty"}}}}"#,
                notification::PROCESS_ACK
            ),
            Expect::Nothing,
        ),
        case(
            "an ack with a negative seq",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":{{"processId":"tty","seq":-1}}}}"#,
                notification::PROCESS_ACK
            ),
            Expect::Nothing,
        ),
        case(
            "an ack with a seq beyond u64",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":{{"processId":"tty","seq":18446744073709551616}}}}"#,
                notification::PROCESS_ACK
            ),
            Expect::Nothing,
        ),
        case(
            "an ack with seq a string",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":{{"processId":"tty","seq":"1"}}}}"#,
                notification::PROCESS_ACK
            ),
            Expect::Nothing,
        ),
        case(
            "an ack with a 10 KiB processId",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":{{"processId":"{long_id}","seq":1}}}}"#,
                notification::PROCESS_ACK
            ),
            Expect::Nothing,
        ),
        case(
            "an ack of an unknown process, the largest seq",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":{{"processId":"nobody","seq":18446744073709551615}}}}"#,
                notification::PROCESS_ACK
            ),
            Expect::Nothing,
        ),
        case(
            "an ack sent as a request",
            req(
                json!(43),
                notification::PROCESS_ACK,
                json!({"processId": "tty", "seq": 1}),
            ),
            Expect::Error(MethodNotFound, json!(43)),
        ),
        case(
            "session/close with params a string",
            req(json!(44), method::SESSION_CLOSE, json!("x")),
            Expect::Error(InvalidParams, json!(44)),
        ),
        case(
            "notification of a real method",
            format!(
                r#"{{"jsonrpc":"2.0","method":"{}","params":{{}}}}"#,
                method::PROCESS_LIST
            ),
            Expect::Nothing,
        ),
    ]
}

/// Checks the answer to a message, then that a normal request works and nothing else
/// was answered.
pub(crate) async fn check(c: &mut Client, name: &str, expect: &Expect) {
    match expect {
        Expect::Error(code, id) => {
            let r = c.response(id).await;
            assert_eq!(r["error"]["code"], code.code(), "{name}: {r}");
            let message = r["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.is_empty() && message.len() <= 1100,
                "{name}: message of {} bytes",
                message.len()
            );
            assert!(r.get("result").is_none(), "{name}: {r}");
        }
        Expect::Result(id) => {
            let r = c.response(id).await;
            assert!(
                r.get("error").is_none() && r.get("result").is_some(),
                "{name}: {r}"
            );
        }
        Expect::Nothing => {}
    }
    let list = c.call(method::PROCESS_LIST, json!({})).await;
    assert!(list["processes"].is_array(), "{name}: {list}");
    let stray = c.take_stray();
    assert!(stray.is_empty(), "{name}: unexpected answers {stray:?}");
}

async fn run_corpus(kind: Kind) -> anyhow::Result<()> {
    let max = MAX.to_string();
    let mut server = ServerProc::start(kind, &["--max-message-bytes", &max]).await?;
    let mut c = server.client().await?;
    // With output windows, so acks are parsed and applied.
    crate::window_client::init(&mut c, Some(crate::window_client::W), false, None).await;
    c.start("tty", &["cat"], json!({"tty": true})).await;
    for case in corpus() {
        eprintln!("case: {}", case.name);
        c.send_bytes(&case.message).await?;
        check(&mut c, &case.name, &case.expect).await;
    }
    // The tty process is untouched by all of it, and its output still flows.
    let r = c
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "tty", "chunk": b64(b"still here\n")}),
        )
        .await;
    assert_eq!(r, json!({"status": "accepted"}));
    let mut echoed = Vec::new();
    while !String::from_utf8_lossy(&echoed).contains("still here") {
        let n = c.notification().await;
        assert_eq!(n["params"]["processId"], "tty", "{n}");
        echoed.extend(crate::client::unb64(&n["params"]["chunk"]));
    }
    Ok(())
}

#[tokio::test]
async fn bad_input_over_stdio() -> anyhow::Result<()> {
    run_corpus(Kind::Stdio).await
}

#[tokio::test]
async fn bad_input_over_ws() -> anyhow::Result<()> {
    run_corpus(Kind::Ws).await
}
