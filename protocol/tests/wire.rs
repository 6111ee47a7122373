//! Wire tests: the schema bundle and example messages are snapshot-tested, every
//! example round-trips through serde and validates against the generated schema,
//! the committed schema file matches the types, and SPEC's example messages parse.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use exec_server_protocol::*;
use serde_json::{Value, json};

fn validator_for(type_name: &str) -> jsonschema::Validator {
    let bundle = schema_bundle();
    let schema = json!({
        "$schema": SCHEMA_DIALECT,
        "$defs": bundle["$defs"],
        "$ref": format!("#/$defs/{type_name}"),
    });
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema of {type_name}: {e}"))
}

#[test]
fn schema_bundle_snapshot() {
    insta::assert_json_snapshot!("schema_bundle", schema_bundle());
}

#[test]
fn committed_schema_matches_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/exec-server.schema.json"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == schema_bundle_text(),
        "schema/exec-server.schema.json differs from the protocol types: run `cargo xtask schema` and commit the result"
    );
}

#[test]
fn bundle_names_every_method_and_notification() {
    let bundle = schema_bundle();
    let methods = bundle["properties"]["methods"]["properties"]
        .as_object()
        .unwrap();
    let names: Vec<&str> = methods.keys().map(String::as_str).collect();
    let mut expected = method_names();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for (name, entry) in methods {
        for part in ["params", "result"] {
            let reference = entry["properties"][part]["$ref"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}.{part}"));
            let def = reference.trim_start_matches("#/$defs/");
            assert!(
                bundle["$defs"].get(def).is_some(),
                "{name}.{part} -> {reference}"
            );
        }
    }
    let server: Vec<&String> = bundle["properties"]["serverNotifications"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        server,
        ["process/closed", "process/exited", "process/output"]
    );
    let client: Vec<&String> = bundle["properties"]["clientNotifications"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(client, ["initialized", "process/ack"]);
}

#[test]
fn every_type_has_one_example_snapshot() {
    let examples = examples();
    // (10 process + session/close + 8 fs methods) x (params, result) + 5 notifications.
    assert_eq!(examples.len(), 43);
    for example in &examples {
        let kind = match example.kind {
            ExampleKind::Params => "params",
            ExampleKind::Result => "result",
            ExampleKind::Notification => "notification",
        };
        let name = format!("example_{}_{}", example.method.replace('/', "_"), kind);
        insta::assert_json_snapshot!(name, example.message);
    }
}

#[test]
fn examples_round_trip_to_the_same_json() {
    for example in examples() {
        assert_ne!(
            example.value,
            Value::Null,
            "{} did not serialize",
            example.type_name
        );
        let again = (example.round_trip)(&example.value).unwrap_or_else(|e| {
            panic!("{} does not parse its own example: {e}", example.type_name)
        });
        assert_eq!(again, example.value, "{}", example.type_name);
    }
}

#[test]
fn examples_validate_against_the_schema() {
    for example in examples() {
        let validator = validator_for(&example.type_name);
        let errors: Vec<String> = validator
            .iter_errors(&example.value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", example.type_name);
    }
}

#[test]
fn schema_rejects_what_serde_rejects() {
    let start = validator_for("ProcessStartParams");
    assert!(!start.is_valid(&json!({"processId": "p", "argv": [], "cwd": "/", "env": {}})));
    assert!(!start.is_valid(&json!({"processId": "", "argv": ["ls"], "cwd": "/", "env": {}})));
    assert!(!start.is_valid(&json!({"processId": "p", "argv": ["ls"], "cwd": "/"})));
    let signal = validator_for("ProcessSignalParams");
    assert!(!signal.is_valid(&json!({"processId": "p", "signal": "SIGSEGV"})));
    assert!(
        serde_json::from_value::<ProcessSignalParams>(
            json!({"processId": "p", "signal": "SIGSEGV"})
        )
        .is_err()
    );
    let write = validator_for("ProcessWriteParams");
    assert!(!write.is_valid(&json!({"processId": "p", "chunk": "a"})));
    assert!(
        serde_json::from_value::<ProcessWriteParams>(json!({"processId": "p", "chunk": "a"}))
            .is_err()
    );
    let resize = validator_for("ProcessResizeParams");
    assert!(!resize.is_valid(&json!({"processId": "p", "rows": 0, "cols": 80})));
}

#[test]
fn defaults_follow_the_spec() {
    let read: ProcessReadParams = serde_json::from_value(json!({"processId": "p"})).unwrap();
    assert_eq!(
        read,
        ProcessReadParams {
            process_id: "p".into(),
            after_seq: 0,
            max_bytes: None,
            wait_ms: 0
        }
    );
    let terminate: ProcessTerminateParams =
        serde_json::from_value(json!({"processId": "p"})).unwrap();
    assert_eq!(
        terminate,
        ProcessTerminateParams {
            process_id: "p".into(),
            grace_ms: 1000
        }
    );
    let start: ProcessStartParams =
        serde_json::from_value(json!({"processId": "p", "argv": ["ls"], "cwd": "/", "env": {}}))
            .unwrap();
    assert!(!start.inherit_env && !start.tty && !start.pipe_stdin);
    assert_eq!((start.arg0, start.size), (None, None));
    assert_eq!(TerminalSize::default(), TerminalSize { rows: 24, cols: 80 });
}

#[test]
fn names_and_codes() {
    for signal in Signal::ALL {
        assert_eq!(serde_json::to_value(signal).unwrap(), json!(signal.name()));
        assert_eq!(Signal::from_name(signal.name()), Some(signal));
    }
    let codes: Vec<i32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(
        codes,
        [
            -32700, -32600, -32601, -32602, -32603, -32000, -32001, -32004, -32010, -32020
        ]
    );
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_code(code.code()), Some(code));
    }
}

/// The example of SPEC section 10, one message per line (`→` client, `←` server).
const SPEC_EXAMPLE: &str = r#"
→ {"jsonrpc":"2.0","id":1,"method":"initialize","params":{"clientName":"demo"}}
← {"jsonrpc":"2.0","id":1,"result":{"sessionId":"6c1d…","protocolVersion":1,"serverName":"exec-server","serverVersion":"0.1.0","capabilities":{"binaryOutput":false,"outputWindowBytes":null}}}
→ {"jsonrpc":"2.0","method":"initialized"}
→ {"jsonrpc":"2.0","id":2,"method":"process/start","params":{"processId":"p1","argv":["sh","-c","echo hi; echo oops >&2; exit 7"],"cwd":"/tmp","env":{"PATH":"/usr/bin:/bin"}}}
← {"jsonrpc":"2.0","id":2,"result":{"processId":"p1","pid":4242}}
← {"jsonrpc":"2.0","method":"process/output","params":{"processId":"p1","seq":1,"stream":"stdout","chunk":"aGkK"}}
← {"jsonrpc":"2.0","method":"process/output","params":{"processId":"p1","seq":2,"stream":"stderr","chunk":"b29wcwo="}}
← {"jsonrpc":"2.0","method":"process/exited","params":{"processId":"p1","seq":3,"exitCode":7,"signal":null,"timedOut":false}}
← {"jsonrpc":"2.0","method":"process/closed","params":{"processId":"p1","seq":4,"timedOut":false}}
→ {"jsonrpc":"2.0","id":3,"method":"process/read","params":{"processId":"p1","afterSeq":0}}
← {"jsonrpc":"2.0","id":3,"result":{"chunks":[{"seq":1,"stream":"stdout","chunk":"aGkK"},{"seq":2,"stream":"stderr","chunk":"b29wcwo="}],"nextSeq":5,"exited":true,"exitCode":7,"signal":null,"closed":true,"timedOut":false,"truncated":false,"evictedBytes":0,"failure":null}}
"#;

/// Parses `value` as `T` and checks that serializing it gives the same JSON back.
fn parses_exactly<T: WireType>(value: &Value) {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"));
    assert_eq!(&serde_json::to_value(&typed).unwrap(), value);
}

/// The repository's copy of the wire contract.
const SPEC_COPY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../SPEC.md");

#[test]
fn the_committed_spec_is_the_shared_one() {
    let copy = std::fs::read_to_string(SPEC_COPY).expect("SPEC.md at the repository root");
    // Where the authoritative text sits beside the checkout, the copy must match it.
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/SPEC.md");
    match std::fs::read_to_string(shared) {
        Ok(text) => assert!(
            text == copy,
            "SPEC.md differs from {shared}: copy it over (cp {shared} SPEC.md) and review the change"
        ),
        Err(e) => eprintln!("note: {shared} not readable ({e}); checked the committed copy only"),
    }
}

#[test]
fn spec_section_10_messages_parse() {
    let spec = std::fs::read_to_string(SPEC_COPY).expect("SPEC.md at the repository root");
    for line in SPEC_EXAMPLE.lines().filter(|l| !l.is_empty()) {
        assert!(
            spec.contains(line),
            "SPEC.md section 10 no longer contains: {line}"
        );
    }

    let mut methods_by_id = std::collections::HashMap::new();
    let mut parsed = 0;
    for line in SPEC_EXAMPLE.lines().filter(|l| !l.is_empty()) {
        let (from_client, text) = match (line.strip_prefix("→ "), line.strip_prefix("← ")) {
            (Some(text), _) => (true, text),
            (_, Some(text)) => (false, text),
            _ => panic!("unexpected line {line}"),
        };
        let message: Value = serde_json::from_str(text).unwrap();
        assert_eq!(message["jsonrpc"], "2.0");
        let params = message.get("params").cloned().unwrap_or(json!({}));
        match (from_client, message["method"].as_str(), message.get("id")) {
            (true, Some(name), Some(id)) => {
                methods_by_id.insert(id.to_string(), name.to_owned());
                match name {
                    method::INITIALIZE => parses_exactly::<InitializeParams>(&params),
                    method::PROCESS_START => parses_exactly::<ProcessStartParams>(&params),
                    method::PROCESS_READ => {
                        let read: ProcessReadParams = serde_json::from_value(params).unwrap();
                        assert_eq!(read.after_seq, 0);
                    }
                    other => panic!("no check for {other}"),
                }
            }
            (true, Some(name), None) => {
                assert_eq!(name, notification::INITIALIZED);
                parses_exactly::<InitializedParams>(&params);
            }
            (false, None, Some(id)) => match methods_by_id[&id.to_string()].as_str() {
                method::INITIALIZE => parses_exactly::<InitializeResult>(&message["result"]),
                method::PROCESS_START => parses_exactly::<ProcessStartResult>(&message["result"]),
                method::PROCESS_READ => parses_exactly::<ProcessReadResult>(&message["result"]),
                other => panic!("no check for {other}"),
            },
            (false, Some(name), None) => match name {
                notification::PROCESS_OUTPUT => {
                    parses_exactly::<ProcessOutputNotification>(&params)
                }
                notification::PROCESS_EXITED => {
                    parses_exactly::<ProcessExitedNotification>(&params)
                }
                notification::PROCESS_CLOSED => {
                    parses_exactly::<ProcessClosedNotification>(&params)
                }
                other => panic!("unexpected notification {other}"),
            },
            _ => panic!("unexpected message {line}"),
        }
        parsed += 1;
    }
    assert_eq!(parsed, 11);
}

// ---------------------------------------------------------------- fs/* (SPEC section 12)

#[test]
fn fs_defaults_follow_the_spec() {
    let read: FsReadParams = serde_json::from_value(json!({"path": "/f"})).unwrap();
    assert_eq!(
        read,
        FsReadParams {
            path: "/f".into(),
            offset: None,
            max_bytes: None
        }
    );
    let write: FsWriteParams = serde_json::from_value(json!({"path": "/f", "data": ""})).unwrap();
    assert_eq!(
        write,
        FsWriteParams {
            path: "/f".into(),
            data: Base64Bytes::default(),
            offset: None,
            append: false,
            truncate: None,
            create: true,
            exclusive: false,
            mode: None,
            atomic: false,
        }
    );
    // Defaults are left out of what this crate serializes.
    assert_eq!(
        serde_json::to_value(&write).unwrap(),
        json!({"path": "/f", "data": ""})
    );
    let stat: FsStatParams = serde_json::from_value(json!({"path": "/f"})).unwrap();
    assert!(stat.follow_symlinks);
    let nulls: FsReadParams =
        serde_json::from_value(json!({"path": "/f", "offset": null, "maxBytes": null})).unwrap();
    assert_eq!(nulls, read);
    let mkdir: FsMkdirParams = serde_json::from_value(json!({"path": "/d"})).unwrap();
    assert_eq!((mkdir.parents, mkdir.mode), (false, None));
    let remove: FsRemoveParams = serde_json::from_value(json!({"path": "/d"})).unwrap();
    assert!(!remove.recursive);
    assert_eq!(FS_READ_MAX_BYTES, 4 << 20);
    assert_eq!((DEFAULT_FILE_MODE, DEFAULT_DIR_MODE), (0o644, 0o755));
}

#[test]
fn fs_schema_rejects_what_serde_rejects() {
    let write = validator_for("FsWriteParams");
    assert!(!write.is_valid(&json!({"path": "/f"})));
    assert!(!write.is_valid(&json!({"path": "/f", "data": "a"})));
    assert!(!write.is_valid(&json!({"path": "/f", "data": "", "mode": 4096})));
    assert!(serde_json::from_value::<FsWriteParams>(json!({"path": "/f"})).is_err());
    let stat = validator_for("FsStatResult");
    assert!(
        !stat
            .is_valid(&json!({"kind": "fifo", "size": 0, "mode": 0, "mtimeMs": 0, "target": null}))
    );
    assert!(!stat.is_valid(&json!({"kind": "file", "size": 0, "mode": 0, "mtimeMs": 0})));
    assert!(
        serde_json::from_value::<FsStatResult>(
            json!({"kind": "fifo", "size": 0, "mode": 0, "mtimeMs": 0, "target": null})
        )
        .is_err()
    );
}

#[test]
fn the_error_data_types_are_in_the_bundle() {
    let bundle = schema_bundle();
    assert_eq!(bundle["x-errorCodes"]["-32020"], "file error");
    assert_eq!(
        bundle["x-errorData"],
        json!({
            "-32000": {"$ref": "#/$defs/SpawnErrorData"},
            "-32020": {"$ref": "#/$defs/FileErrorData"},
        })
    );
    let spawn = validator_for("SpawnErrorData");
    for data in [
        json!({"step": "exec", "errno": "ENOENT"}),
        json!({"step": "user", "errno": null}),
    ] {
        assert!(spawn.is_valid(&data), "{data}");
        let typed: SpawnErrorData = serde_json::from_value(data.clone()).unwrap();
        assert_eq!(serde_json::to_value(typed).unwrap(), data);
    }
    assert!(!spawn.is_valid(&json!({"step": "fork", "errno": null})));
    assert!(!spawn.is_valid(&json!({"step": "cwd"})));
    let data = serde_json::to_value(FileErrorData {
        errno: "ENOENT".into(),
    })
    .unwrap();
    assert_eq!(data, json!({"errno": "ENOENT"}));
    assert!(validator_for("FileErrorData").is_valid(&data));
}
