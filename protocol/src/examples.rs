//! One example value per wire type, and the example messages derived from the method table.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::Base64Bytes;
use crate::fs::*;
use crate::table::{Example, Method, Notification, TableVisitor, WireType, visit};
use crate::types::*;

impl Example for InitializeParams {
    fn example() -> Self {
        InitializeParams {
            client_name: "demo".into(),
            client_version: Some("1.2.0".into()),
            resume_session_id: None,
            capabilities: Some(ClientCapabilities {
                binary_output: true,
                output_window_bytes: Some(4 * 1024 * 1024),
            }),
        }
    }
}

impl Example for InitializeResult {
    fn example() -> Self {
        InitializeResult {
            session_id: "6c1d0e4f9a2b4c7d8e1f2a3b4c5d6e7f".into(),
            protocol_version: PROTOCOL_VERSION,
            server_name: "exec-server".into(),
            server_version: "0.1.0".into(),
            capabilities: ServerCapabilities {
                binary_output: true,
                output_window_bytes: Some(4 * 1024 * 1024),
            },
        }
    }
}

impl Example for InitializedParams {
    fn example() -> Self {
        InitializedParams {}
    }
}

impl Example for ProcessStartParams {
    fn example() -> Self {
        ProcessStartParams {
            process_id: "p1".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo hi; echo oops >&2; exit 7".into(),
            ],
            cwd: "/tmp".into(),
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            inherit_env: false,
            tty: true,
            pipe_stdin: false,
            arg0: Some("sh".into()),
            size: Some(TerminalSize {
                rows: 40,
                cols: 120,
            }),
            timeout_ms: Some(60_000),
            user: Some("nobody".into()),
            merge_stderr: false,
        }
    }
}

impl Example for ProcessStartResult {
    fn example() -> Self {
        ProcessStartResult {
            process_id: "p1".into(),
            pid: 4242,
        }
    }
}

impl Example for ProcessReadParams {
    fn example() -> Self {
        ProcessReadParams {
            process_id: "p1".into(),
            after_seq: 2,
            max_bytes: Some(65536),
            wait_ms: 30000,
        }
    }
}

impl Example for ProcessReadResult {
    fn example() -> Self {
        ProcessReadResult {
            chunks: vec![
                OutputChunk {
                    seq: 1,
                    stream: Stream::Stdout,
                    chunk: Base64Bytes::from("hi\n"),
                },
                OutputChunk {
                    seq: 2,
                    stream: Stream::Stderr,
                    chunk: Base64Bytes::from("oops\n"),
                },
            ],
            next_seq: 5,
            exited: true,
            exit_code: Some(7),
            signal: None,
            closed: true,
            timed_out: false,
            truncated: false,
            evicted_bytes: 0,
            failure: None,
        }
    }
}

impl Example for ProcessWriteParams {
    fn example() -> Self {
        ProcessWriteParams {
            process_id: "p1".into(),
            chunk: Base64Bytes::from("ls\n"),
            write_id: Some("w-17".into()),
            wait_written: true,
        }
    }
}

impl Example for ProcessWriteResult {
    fn example() -> Self {
        ProcessWriteResult {
            status: WriteStatus::Accepted,
        }
    }
}

impl Example for ProcessCloseStdinParams {
    fn example() -> Self {
        ProcessCloseStdinParams {
            process_id: "p1".into(),
        }
    }
}

impl Example for ProcessCloseStdinResult {
    fn example() -> Self {
        ProcessCloseStdinResult {
            status: WriteStatus::StdinClosed,
        }
    }
}

impl Example for ProcessSignalParams {
    fn example() -> Self {
        ProcessSignalParams {
            process_id: "p1".into(),
            signal: Signal::Int,
        }
    }
}

impl Example for ProcessSignalResult {
    fn example() -> Self {
        ProcessSignalResult { delivered: true }
    }
}

impl Example for ProcessResizeParams {
    fn example() -> Self {
        ProcessResizeParams {
            process_id: "p1".into(),
            rows: 50,
            cols: 132,
        }
    }
}

impl Example for ProcessResizeResult {
    fn example() -> Self {
        ProcessResizeResult {}
    }
}

impl Example for ProcessTerminateParams {
    fn example() -> Self {
        ProcessTerminateParams {
            process_id: "p1".into(),
            grace_ms: 500,
        }
    }
}

impl Example for ProcessTerminateResult {
    fn example() -> Self {
        ProcessTerminateResult { running: true }
    }
}

impl Example for ProcessListParams {
    fn example() -> Self {
        ProcessListParams {}
    }
}

impl Example for ProcessListResult {
    fn example() -> Self {
        ProcessListResult {
            processes: vec![ProcessInfo {
                process_id: "p1".into(),
                pid: 4242,
                argv: vec!["sleep".into(), "1000".into()],
                tty: false,
                exited: true,
                exit_code: Some(143),
                signal: Some("SIGTERM".into()),
                closed: false,
                timed_out: true,
                next_seq: 2,
            }],
        }
    }
}

impl Example for ProcessOutputNotification {
    fn example() -> Self {
        ProcessOutputNotification {
            process_id: "p1".into(),
            seq: 1,
            stream: Stream::Pty,
            chunk: Base64Bytes::from("hi\r\n"),
        }
    }
}

impl Example for ProcessExitedNotification {
    fn example() -> Self {
        ProcessExitedNotification {
            process_id: "p1".into(),
            seq: 3,
            exit_code: 130,
            signal: Some("SIGINT".into()),
            timed_out: false,
        }
    }
}

impl Example for ProcessClosedNotification {
    fn example() -> Self {
        ProcessClosedNotification {
            process_id: "p1".into(),
            seq: 4,
            timed_out: false,
        }
    }
}

impl Example for ProcessAckNotification {
    fn example() -> Self {
        ProcessAckNotification {
            process_id: "p1".into(),
            seq: 2,
        }
    }
}

impl Example for ProcessReleaseParams {
    fn example() -> Self {
        ProcessReleaseParams {
            process_id: "p1".into(),
        }
    }
}

impl Example for ProcessReleaseResult {
    fn example() -> Self {
        ProcessReleaseResult {}
    }
}

impl Example for SessionCloseParams {
    fn example() -> Self {
        SessionCloseParams {}
    }
}

impl Example for SessionCloseResult {
    fn example() -> Self {
        SessionCloseResult {}
    }
}

// ---------------------------------------------------------------- fs/* (SPEC section 12)

impl Example for FsReadParams {
    fn example() -> Self {
        FsReadParams {
            path: "/tmp/notes.txt".into(),
            offset: Some(0),
            max_bytes: Some(65536),
        }
    }
}

impl Example for FsReadResult {
    fn example() -> Self {
        FsReadResult {
            data: Base64Bytes::from("hello\n"),
            eof: true,
            size: 6,
        }
    }
}

impl Example for FsWriteParams {
    fn example() -> Self {
        FsWriteParams {
            path: "/tmp/notes.txt".into(),
            data: Base64Bytes::from("hello\n"),
            offset: None,
            append: false,
            truncate: None,
            create: true,
            exclusive: false,
            mode: Some(0o600),
            atomic: true,
        }
    }
}

impl Example for FsWriteResult {
    fn example() -> Self {
        FsWriteResult { bytes_written: 6 }
    }
}

impl Example for FsStatParams {
    fn example() -> Self {
        FsStatParams {
            path: "/tmp/link".into(),
            follow_symlinks: false,
        }
    }
}

impl Example for FsStatResult {
    fn example() -> Self {
        FsStatResult {
            kind: FileKind::Symlink,
            size: 14,
            mode: 0o777,
            mtime_ms: 1_764_480_000_000,
            target: Some("/tmp/notes.txt".into()),
        }
    }
}

impl Example for FsListParams {
    fn example() -> Self {
        FsListParams {
            path: "/tmp/project".into(),
        }
    }
}

impl Example for FsListResult {
    fn example() -> Self {
        FsListResult {
            entries: vec![
                FsEntry {
                    name: "README.md".into(),
                    kind: FileKind::File,
                    lossy: false,
                },
                FsEntry {
                    name: "caf\u{fffd}".into(),
                    kind: FileKind::File,
                    lossy: true,
                },
                FsEntry {
                    name: "src".into(),
                    kind: FileKind::Dir,
                    lossy: false,
                },
            ],
        }
    }
}

impl Example for FsMkdirParams {
    fn example() -> Self {
        FsMkdirParams {
            path: "/tmp/project/build/out".into(),
            parents: true,
            mode: Some(0o755),
        }
    }
}

impl Example for FsMkdirResult {
    fn example() -> Self {
        FsMkdirResult {}
    }
}

impl Example for FsRemoveParams {
    fn example() -> Self {
        FsRemoveParams {
            path: "/tmp/project/build".into(),
            recursive: true,
        }
    }
}

impl Example for FsRemoveResult {
    fn example() -> Self {
        FsRemoveResult {}
    }
}

impl Example for FsRenameParams {
    fn example() -> Self {
        FsRenameParams {
            from: "/tmp/notes.txt".into(),
            to: "/tmp/notes.old".into(),
        }
    }
}

impl Example for FsRenameResult {
    fn example() -> Self {
        FsRenameResult {}
    }
}

impl Example for FsChmodParams {
    fn example() -> Self {
        FsChmodParams {
            path: "/tmp/project/run.sh".into(),
            mode: 0o755,
        }
    }
}

impl Example for FsChmodResult {
    fn example() -> Self {
        FsChmodResult {}
    }
}

/// What part of a message an example is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExampleKind {
    /// The `params` of a request.
    Params,
    /// The `result` of a response.
    Result,
    /// The `params` of a notification.
    Notification,
}

/// One example value of a wire type, and the whole JSON-RPC message carrying it.
#[derive(Debug, Clone)]
pub struct ExampleMessage {
    /// The method or notification name.
    pub method: &'static str,
    /// Which part of the message `value` is.
    pub kind: ExampleKind,
    /// The name of the type's definition in the schema bundle's `$defs`.
    pub type_name: String,
    /// The example value, as JSON.
    pub value: Value,
    /// The complete JSON-RPC 2.0 message that carries `value`.
    pub message: Value,
    /// Parses JSON into the type and serializes it again.
    pub round_trip: fn(&Value) -> Result<Value, serde_json::Error>,
}

fn round_trip<T: WireType>(value: &Value) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(value.clone())?;
    serde_json::to_value(typed)
}

fn example<T: WireType>(method: &'static str, kind: ExampleKind) -> ExampleMessage {
    // Serializing these plain data types cannot fail; a failure would be a bug
    // caught by the example tests, which compare against `Value::Null`.
    let value = serde_json::to_value(T::example()).unwrap_or(Value::Null);
    let message = match kind {
        ExampleKind::Params => {
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": value})
        }
        ExampleKind::Result => json!({"jsonrpc": "2.0", "id": 1, "result": value}),
        ExampleKind::Notification => json!({"jsonrpc": "2.0", "method": method, "params": value}),
    };
    ExampleMessage {
        method,
        kind,
        type_name: T::schema_name().into_owned(),
        value,
        message,
        round_trip: round_trip::<T>,
    }
}

/// One example message for every params, result and notification type of the table.
pub fn examples() -> Vec<ExampleMessage> {
    struct Collect(Vec<ExampleMessage>);
    impl TableVisitor for Collect {
        fn method<M: Method>(&mut self) {
            self.0
                .push(example::<M::Params>(M::NAME, ExampleKind::Params));
            self.0
                .push(example::<M::Result>(M::NAME, ExampleKind::Result));
        }
        fn notification<N: Notification>(&mut self) {
            let _ = N::DIRECTION;
            self.0
                .push(example::<N::Params>(N::NAME, ExampleKind::Notification));
        }
    }
    let mut all = Collect(Vec::new());
    visit(&mut all);
    all.0
}
