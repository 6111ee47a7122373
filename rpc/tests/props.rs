//! Property tests of the dispatch: random bytes and random JSON-RPC messages never panic, every request gets exactly one answer with its id, notifications none, and the connection keeps working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use exec_server_protocol::{method, notification};
use exec_server_rpc::{Connection, Message, Outbound, RpcConfig, Server};
use proptest::prelude::*;
use serde_json::{Value, json};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn server() -> Arc<Server> {
    Server::new(RpcConfig::default()).unwrap()
}

/// The text of a message; these connections never carry binary frames.
fn text(message: Message) -> String {
    match message {
        Message::Text(text) => text,
        Message::Binary(_) => panic!("a binary frame on a connection without binary output"),
    }
}

/// The answers queued within `wait` (the first waited for, the rest taken as queued).
async fn answers(outbound: &mut Outbound, expected: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < expected {
        match tokio::time::timeout(Duration::from_secs(10), outbound.recv()).await {
            Ok(Some(message)) => {
                out.push(serde_json::from_str(&text(message)).expect("the server sent JSON"))
            }
            _ => break,
        }
    }
    // Nothing more than expected may arrive.
    tokio::task::yield_now().await;
    while let Some(message) = outbound.try_recv() {
        out.push(serde_json::from_str(&text(message)).expect("the server sent JSON"));
    }
    out
}

/// Whether the server must leave `message` unanswered: a JSON-RPC notification.
fn is_notification(message: &[u8]) -> bool {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(message) else {
        return false;
    };
    m.get("jsonrpc") == Some(&json!("2.0"))
        && m.get("method").is_some_and(Value::is_string)
        && !m.contains_key("id")
}

async fn handshake(connection: &Connection, outbound: &mut Outbound) {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": method::INITIALIZE,
                      "params": {"clientName": "props"}});
    connection.handle(init.to_string().as_bytes()).await;
    let r = answers(outbound, 1).await;
    assert!(r[0]["result"]["sessionId"].is_string(), "{r:?}");
    let initialized = json!({"jsonrpc": "2.0", "method": notification::INITIALIZED});
    connection.handle(initialized.to_string().as_bytes()).await;
}

async fn still_works(connection: &Connection, outbound: &mut Outbound) {
    let list = json!({"jsonrpc": "2.0", "id": "check", "method": method::PROCESS_LIST});
    connection.handle(list.to_string().as_bytes()).await;
    let r = answers(outbound, 1).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["id"], "check", "{r:?}");
    assert!(r[0]["result"]["processes"].is_array(), "{r:?}");
}

/// Random JSON values of bounded size and depth.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop_oneof![Just("p1"), Just("SIGTERM"), Just("aGkK"), Just("/tmp")].prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("processId".to_owned()),
                    Just("chunk".to_owned()),
                    Just("signal".to_owned()),
                    Just("waitMs".to_owned()),
                    Just("afterSeq".to_owned()),
                    Just("rows".to_owned()),
                    Just("cols".to_owned()),
                    Just("clientName".to_owned()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Random messages shaped like JSON-RPC: a known method (but `process/start`, which
/// could spawn) or a random name, an id of any JSON type or none, random params.
fn message() -> impl Strategy<Value = Value> {
    let methods = prop_oneof![
        Just(method::INITIALIZE.to_owned()),
        Just(method::PROCESS_READ.to_owned()),
        Just(method::PROCESS_WRITE.to_owned()),
        Just(method::PROCESS_CLOSE_STDIN.to_owned()),
        Just(method::PROCESS_SIGNAL.to_owned()),
        Just(method::PROCESS_RESIZE.to_owned()),
        Just(method::PROCESS_TERMINATE.to_owned()),
        Just(method::PROCESS_LIST.to_owned()),
        Just(notification::INITIALIZED.to_owned()),
        ".{0,20}",
    ];
    (
        methods,
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop_oneof![Just(json!("2.0")), json_value()],
        any::<bool>(),
    )
        .prop_map(|(method, id, params, version, with_version)| {
            let mut m = serde_json::Map::new();
            if with_version {
                m.insert("jsonrpc".into(), version);
            }
            m.insert("method".into(), Value::from(method));
            if let Some(id) = id {
                m.insert("id".into(), id);
            }
            if let Some(params) = params {
                m.insert("params".into(), params);
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random bytes before the handshake: never a panic, one answer unless it is a
    /// notification, and the connection can still initialize.
    #[test]
    fn random_bytes_are_answered(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        runtime().block_on(async {
            let server = server();
            let (connection, mut outbound) = server.connect(false);
            connection.handle(&bytes).await;
            let expected = usize::from(!is_notification(&bytes));
            let got = answers(&mut outbound, expected).await;
            assert_eq!(got.len(), expected, "{:?}: {got:?}", String::from_utf8_lossy(&bytes));
            for r in &got {
                assert_eq!(r["jsonrpc"], "2.0");
                assert!(r.get("error").is_some() || r.get("result").is_some(), "{r}");
            }
            handshake(&connection, &mut outbound).await;
            still_works(&connection, &mut outbound).await;
        });
    }

    /// Random JSON text (any value) after the handshake.
    #[test]
    fn random_json_is_answered(value in json_value()) {
        runtime().block_on(async {
            let server = server();
            let (connection, mut outbound) = server.connect(false);
            handshake(&connection, &mut outbound).await;
            let text = value.to_string();
            connection.handle(text.as_bytes()).await;
            let expected = usize::from(!is_notification(text.as_bytes()));
            let got = answers(&mut outbound, expected).await;
            assert_eq!(got.len(), expected, "{text}: {got:?}");
            still_works(&connection, &mut outbound).await;
        });
    }

    /// Random JSON-RPC-shaped messages after the handshake: a request with a valid id is
    /// answered once with that id; a notification not at all.
    #[test]
    fn random_requests_are_answered_with_their_id(m in message()) {
        runtime().block_on(async {
            let server = server();
            let (connection, mut outbound) = server.connect(false);
            handshake(&connection, &mut outbound).await;
            let text = m.to_string();
            connection.handle(text.as_bytes()).await;
            let expected = usize::from(!is_notification(text.as_bytes()));
            let got = answers(&mut outbound, expected).await;
            assert_eq!(got.len(), expected, "{text}: {got:?}");
            let id = &m["id"];
            let valid_id = m.get("id").is_some_and(|id| {
                id.is_string() && id.as_str().is_some_and(|s| s.len() < 1000)
                    || id.is_u64()
                    || id.is_null()
            });
            if let Some(r) = got.first() && valid_id && m["jsonrpc"] == "2.0" {
                assert_eq!(&r["id"], id, "{text}: {r}");
            }
            still_works(&connection, &mut outbound).await;
        });
    }
}
