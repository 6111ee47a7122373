//! Params, result and notification types of protocol version 1 (SPEC sections 4 to 6).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Base64Bytes;

/// The protocol version this crate describes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default `graceMs` of `process/terminate`, in milliseconds.
pub const DEFAULT_GRACE_MS: u64 = 1000;

/// Ceiling applied to `waitMs` of `process/read`, in milliseconds.
pub const MAX_WAIT_MS: u64 = 300_000;

/// Default terminal rows for a tty process.
pub const DEFAULT_ROWS: u16 = 24;

/// Default terminal columns for a tty process.
pub const DEFAULT_COLS: u16 = 80;

/// Maximum length of a `processId`, in bytes.
pub const MAX_PROCESS_ID_BYTES: usize = 256;

/// Maximum length of a `writeId`, in bytes.
pub const MAX_WRITE_ID_BYTES: usize = 256;

/// Smallest `outputWindowBytes` a client may ask for and a server may grant (SPEC section 13).
pub const MIN_OUTPUT_WINDOW_BYTES: u64 = 65_536;

/// Largest `outputWindowBytes` a client may ask for (SPEC section 13): 64 MiB.
pub const MAX_OUTPUT_WINDOW_BYTES: u64 = 64 * 1024 * 1024;

fn is_false(value: &bool) -> bool {
    !*value
}

fn default_grace_ms() -> u64 {
    DEFAULT_GRACE_MS
}

// ---------------------------------------------------------------- handshake

/// Params of `initialize`: the first request on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    /// Name of the client program, for logs.
    pub client_name: String,
    /// Version of the client program, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// Take over this earlier session (and its processes) instead of starting a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
    /// Optional features the client asks for on this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<ClientCapabilities>,
}

/// Optional features a client asks for in `initialize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCapabilities {
    /// Ask for `process/output` as binary WebSocket frames (SPEC section 11); ignored over stdio.
    #[serde(default, skip_serializing_if = "is_false")]
    pub binary_output: bool,
    /// Ask for flow control per process (SPEC section 13): the server pushes at most about
    /// this many unacknowledged output bytes per process, 65536 to 67108864.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 65536, max = 67108864))]
    pub output_window_bytes: Option<u64>,
}

/// The optional features this connection actually uses, as answered by `initialize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerCapabilities {
    /// `process/output` arrives as binary WebSocket frames (SPEC section 11).
    pub binary_output: bool,
    /// The output window granted per process (SPEC section 13), or `null` when the client
    /// asked for none: pushes are then limited by the connection's backpressure alone.
    #[serde(default)]
    #[schemars(required, extend("type" = ["integer", "null"]))]
    pub output_window_bytes: Option<u64>,
}

/// Result of `initialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    /// The session this connection is attached to; pass it as `resumeSessionId` to resume.
    pub session_id: String,
    /// The protocol version the server speaks: always 1 here.
    pub protocol_version: u32,
    /// The server's name.
    pub server_name: String,
    /// The server's version.
    pub server_version: String,
    /// What this connection uses (absent from servers that predate capabilities: all off).
    #[serde(default)]
    pub capabilities: ServerCapabilities,
}

/// Params of the `initialized` notification (client to server); it has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InitializedParams {}

// ---------------------------------------------------------------- shared values

/// An output stream of a process: `stdout` and `stderr` for pipes, `pty` for a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    #[allow(missing_docs)]
    Stdout,
    #[allow(missing_docs)]
    Stderr,
    #[allow(missing_docs)]
    Pty,
}

/// A signal a client may send with `process/signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Signal {
    #[allow(missing_docs)]
    #[serde(rename = "SIGHUP")]
    Hup,
    #[allow(missing_docs)]
    #[serde(rename = "SIGINT")]
    Int,
    #[allow(missing_docs)]
    #[serde(rename = "SIGQUIT")]
    Quit,
    #[allow(missing_docs)]
    #[serde(rename = "SIGKILL")]
    Kill,
    #[allow(missing_docs)]
    #[serde(rename = "SIGUSR1")]
    Usr1,
    #[allow(missing_docs)]
    #[serde(rename = "SIGUSR2")]
    Usr2,
    #[allow(missing_docs)]
    #[serde(rename = "SIGTERM")]
    Term,
    #[allow(missing_docs)]
    #[serde(rename = "SIGCONT")]
    Cont,
    #[allow(missing_docs)]
    #[serde(rename = "SIGSTOP")]
    Stop,
    #[allow(missing_docs)]
    #[serde(rename = "SIGTSTP")]
    Tstp,
    #[allow(missing_docs)]
    #[serde(rename = "SIGWINCH")]
    Winch,
}

impl Signal {
    /// Every signal a client may send.
    pub const ALL: [Signal; 11] = [
        Signal::Hup,
        Signal::Int,
        Signal::Quit,
        Signal::Kill,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Term,
        Signal::Cont,
        Signal::Stop,
        Signal::Tstp,
        Signal::Winch,
    ];

    /// The wire name, e.g. `"SIGINT"`.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Term => "SIGTERM",
            Signal::Cont => "SIGCONT",
            Signal::Stop => "SIGSTOP",
            Signal::Tstp => "SIGTSTP",
            Signal::Winch => "SIGWINCH",
        }
    }

    /// The signal with this wire name.
    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Outcome of `process/write` and `process/closeStdin`: `accepted` (queued for stdin, or a
/// `writeId` already accepted), `unknownProcess`, `stdinClosed` (no stdin, closed, or exited),
/// or `starting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WriteStatus {
    #[allow(missing_docs)]
    Accepted,
    #[allow(missing_docs)]
    UnknownProcess,
    #[allow(missing_docs)]
    StdinClosed,
    #[allow(missing_docs)]
    Starting,
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct TerminalSize {
    /// Rows, at least 1.
    #[schemars(range(min = 1))]
    pub rows: u16,
    /// Columns, at least 1.
    #[schemars(range(min = 1))]
    pub cols: u16,
}

impl Default for TerminalSize {
    fn default() -> Self {
        TerminalSize {
            rows: DEFAULT_ROWS,
            cols: DEFAULT_COLS,
        }
    }
}

// ---------------------------------------------------------------- process/start

/// Params of `process/start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStartParams {
    /// Client-chosen name of the process, 1 to 256 bytes, unique within the session while retained.
    #[schemars(length(min = 1, max = 256))]
    pub process_id: String,
    /// Program and arguments; `argv[0]` without a `/` is looked up in the child's `PATH`.
    #[schemars(length(min = 1))]
    pub argv: Vec<String>,
    /// Absolute path of an existing directory to run in.
    pub cwd: String,
    /// The child's environment (exactly, unless `inheritEnv`).
    pub env: BTreeMap<String, String>,
    /// `true`: the server's own environment with `env` laid over it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub inherit_env: bool,
    /// Run under a new pseudo-terminal.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    /// For non-tty processes: keep stdin open for `process/write` (otherwise it is `/dev/null`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pipe_stdin: bool,
    /// The value the child sees as `argv[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg0: Option<String>,
    /// Initial terminal size for a tty process (default 24x80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<TerminalSize>,
    /// Terminate the process (as `process/terminate` with the default grace) once it has run
    /// this many milliseconds; its `process/exited` then says `timedOut: true`. The limit
    /// holds until `closed`: members of its group still holding its output open at the
    /// deadline are terminated then. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Run as this user (a name or a numeric uid): its uid, primary gid and supplementary
    /// groups, and with `inheritEnv` its `HOME`, `USER`, `LOGNAME` and `SHELL`. Needs a
    /// server running as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// For non-tty processes: stderr is the same pipe as stdout (`2>&1`), so all output is
    /// one `stdout` stream in the order the program wrote it. A tty merges both already.
    #[serde(default, skip_serializing_if = "is_false")]
    pub merge_stderr: bool,
}

/// Result of `process/start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStartResult {
    /// The process's protocol name, as given.
    pub process_id: String,
    /// The OS process id of the child.
    pub pid: u32,
}

// ---------------------------------------------------------------- process/read

/// Params of `process/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessReadParams {
    /// The process to read.
    pub process_id: String,
    /// Return events with a seq greater than this (0 = from the start).
    #[serde(default)]
    pub after_seq: u64,
    /// Stop before the chunk bytes would exceed this (at least one chunk is always returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Long poll: wait up to this many milliseconds for the next event (capped at 300000).
    #[serde(default)]
    pub wait_ms: u64,
}

/// One retained output event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputChunk {
    /// The event's sequence number.
    pub seq: u64,
    /// The stream it came from.
    pub stream: Stream,
    /// The bytes, exactly as read.
    pub chunk: Base64Bytes,
}

/// Result of `process/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessReadResult {
    /// Retained output events with `seq > afterSeq`, in order.
    pub chunks: Vec<OutputChunk>,
    /// The seq of the first event this response does not cover; continue with `afterSeq: nextSeq - 1`.
    pub next_seq: u64,
    /// Whether the process has exited.
    pub exited: bool,
    /// The exit code (128 + n for signal n), once exited.
    #[schemars(required, extend("type" = ["integer", "null"]))]
    pub exit_code: Option<i32>,
    /// The name of the signal that ended the process, if one did.
    #[schemars(required, extend("type" = ["string", "null"]))]
    pub signal: Option<String>,
    /// Whether the process has exited and every output stream reached end-of-file.
    pub closed: bool,
    /// The server ended the process because its `timeoutMs` passed.
    #[serde(default)]
    pub timed_out: bool,
    /// Output events after `afterSeq` were evicted from retention: output was lost to this reader.
    pub truncated: bool,
    /// All output bytes of this process evicted from retention so far.
    pub evicted_bytes: u64,
    /// Always `null` from the server; a client library fills it when its transport is lost.
    #[schemars(required, extend("type" = ["string", "null"]))]
    pub failure: Option<String>,
}

// ---------------------------------------------------------------- process/write, closeStdin

/// Params of `process/write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessWriteParams {
    /// The process to write to.
    pub process_id: String,
    /// The bytes to write to its stdin.
    pub chunk: Base64Bytes,
    /// Idempotency key, 1 to 256 bytes: a retry with an id already accepted is not written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub write_id: Option<String>,
    /// Answer once the whole chunk has been written to the child's stdin (`accepted`) or can
    /// no longer be (`stdinClosed`), instead of when it is queued.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wait_written: bool,
}

/// Result of `process/write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessWriteResult {
    /// What became of the write.
    pub status: WriteStatus,
}

/// Params of `process/closeStdin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessCloseStdinParams {
    /// The process whose stdin to close.
    pub process_id: String,
}

/// Result of `process/closeStdin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessCloseStdinResult {
    /// What became of the close.
    pub status: WriteStatus,
}

// ---------------------------------------------------------------- signal, resize, terminate

/// Params of `process/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSignalParams {
    /// The process to signal.
    pub process_id: String,
    /// The signal, sent to the process group (a tty's foreground group).
    pub signal: Signal,
}

/// Result of `process/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSignalResult {
    /// `false` when the process is unknown or has exited.
    pub delivered: bool,
}

/// Params of `process/resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessResizeParams {
    /// The tty process to resize.
    pub process_id: String,
    /// New rows, at least 1.
    #[schemars(range(min = 1))]
    pub rows: u16,
    /// New columns, at least 1.
    #[schemars(range(min = 1))]
    pub cols: u16,
}

/// Result of `process/resize`; it has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessResizeResult {}

/// Params of `process/terminate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessTerminateParams {
    /// The process to stop, with its whole process group.
    pub process_id: String,
    /// Milliseconds between SIGTERM and SIGKILL (0 = SIGKILL at once).
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
}

/// Result of `process/terminate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessTerminateResult {
    /// `true` if it was running and is now being stopped.
    pub running: bool,
}

// ---------------------------------------------------------------- process/list

/// Params of `process/list`; it has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessListParams {}

/// One retained process, as listed by `process/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    /// The process's protocol name.
    pub process_id: String,
    /// The OS process id of the child.
    pub pid: u32,
    /// The argv it was started with.
    pub argv: Vec<String>,
    /// Whether it runs under a pseudo-terminal.
    pub tty: bool,
    /// Whether it has exited.
    pub exited: bool,
    /// The exit code (128 + n for signal n), once exited.
    #[schemars(required, extend("type" = ["integer", "null"]))]
    pub exit_code: Option<i32>,
    /// The name of the signal that ended it, if one did.
    #[schemars(required, extend("type" = ["string", "null"]))]
    pub signal: Option<String>,
    /// Whether it has exited and every output stream reached end-of-file.
    pub closed: bool,
    /// The server ended it because its `timeoutMs` passed.
    #[serde(default)]
    pub timed_out: bool,
    /// The seq its next event will have.
    pub next_seq: u64,
}

/// Result of `process/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessListResult {
    /// Every process the session retains.
    pub processes: Vec<ProcessInfo>,
}

// ---------------------------------------------------------------- notifications

/// Params of the `process/output` notification: one output chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessOutputNotification {
    /// The process that wrote it.
    pub process_id: String,
    /// The event's sequence number.
    pub seq: u64,
    /// The stream it came from.
    pub stream: Stream,
    /// The bytes, exactly as read.
    pub chunk: Base64Bytes,
}

/// Params of the `process/exited` notification: the child's wait status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessExitedNotification {
    /// The process that exited.
    pub process_id: String,
    /// The event's sequence number.
    pub seq: u64,
    /// The exit status, or 128 + the signal number when a signal ended it.
    pub exit_code: i32,
    /// The name of the signal that ended it (`"SIGKILL"`), or `null`.
    #[schemars(required, extend("type" = ["string", "null"]))]
    pub signal: Option<String>,
    /// The server ended it because its `timeoutMs` passed.
    #[serde(default)]
    pub timed_out: bool,
}

/// Params of the `process/closed` notification: exited and every stream at end-of-file; the last event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessClosedNotification {
    /// The process that closed.
    pub process_id: String,
    /// The event's sequence number.
    pub seq: u64,
    /// The server ended the process, or members of its group after the leader exited,
    /// because its `timeoutMs` passed.
    #[serde(default)]
    pub timed_out: bool,
}

/// Params of the `process/ack` notification (client to server, SPEC section 13): every
/// output event of the process with a seq up to `seq` has been consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessAckNotification {
    /// The process whose output was consumed.
    pub process_id: String,
    /// The highest seq consumed.
    pub seq: u64,
}

// ---------------------------------------------------------------- process/release, session/close

/// Params of `process/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessReleaseParams {
    /// The process the client needs nothing more of; it is forgotten once it has closed.
    pub process_id: String,
}

/// Result of `process/release`; it has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessReleaseResult {}

/// Params of `session/close`; it has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionCloseParams {}

/// Result of `session/close`; it has no fields. Written after every process of the
/// session was terminated, reaped and its last events pushed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionCloseResult {}

// ---------------------------------------------------------------- spawn errors

/// The step of starting a process that failed (`data.step` of a -32000 error): `cwd` (the
/// working directory), `user` (looking up or switching to the user), `pty` (opening the
/// terminal), `exec` (the program: not found, not executable) or `setup` (anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpawnStep {
    #[allow(missing_docs)]
    Cwd,
    #[allow(missing_docs)]
    User,
    #[allow(missing_docs)]
    Pty,
    #[allow(missing_docs)]
    Exec,
    #[allow(missing_docs)]
    Setup,
}

impl SpawnStep {
    /// The wire name, e.g. `"exec"`.
    pub const fn name(self) -> &'static str {
        match self {
            SpawnStep::Cwd => "cwd",
            SpawnStep::User => "user",
            SpawnStep::Pty => "pty",
            SpawnStep::Exec => "exec",
            SpawnStep::Setup => "setup",
        }
    }
}

/// `data` of a -32000 spawn error: which step failed and its OS error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpawnErrorData {
    /// The step that failed.
    pub step: SpawnStep,
    /// The symbolic name of the OS error number (`ENOENT`, `EACCES`), or `null` when no OS
    /// error applies (an unknown user).
    #[schemars(required, extend("type" = ["string", "null"]))]
    pub errno: Option<String>,
}
