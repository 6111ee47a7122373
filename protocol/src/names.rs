//! Method and notification names and JSON-RPC error codes: the one place they are spelled.

/// Request method names.
pub mod method {
    /// `initialize`: open or resume a session.
    pub const INITIALIZE: &str = "initialize";
    /// `process/start`.
    pub const PROCESS_START: &str = "process/start";
    /// `process/read`.
    pub const PROCESS_READ: &str = "process/read";
    /// `process/write`.
    pub const PROCESS_WRITE: &str = "process/write";
    /// `process/closeStdin`.
    pub const PROCESS_CLOSE_STDIN: &str = "process/closeStdin";
    /// `process/signal`.
    pub const PROCESS_SIGNAL: &str = "process/signal";
    /// `process/resize`.
    pub const PROCESS_RESIZE: &str = "process/resize";
    /// `process/terminate`.
    pub const PROCESS_TERMINATE: &str = "process/terminate";
    /// `process/list`.
    pub const PROCESS_LIST: &str = "process/list";
    /// `process/release`.
    pub const PROCESS_RELEASE: &str = "process/release";
    /// `session/close`.
    pub const SESSION_CLOSE: &str = "session/close";

    // fs/* (SPEC section 12)
    /// `fs/read`.
    pub const FS_READ: &str = "fs/read";
    /// `fs/write`.
    pub const FS_WRITE: &str = "fs/write";
    /// `fs/stat`.
    pub const FS_STAT: &str = "fs/stat";
    /// `fs/list`.
    pub const FS_LIST: &str = "fs/list";
    /// `fs/mkdir`.
    pub const FS_MKDIR: &str = "fs/mkdir";
    /// `fs/remove`.
    pub const FS_REMOVE: &str = "fs/remove";
    /// `fs/rename`.
    pub const FS_RENAME: &str = "fs/rename";
    /// `fs/chmod`.
    pub const FS_CHMOD: &str = "fs/chmod";
}

/// Notification names.
pub mod notification {
    /// `initialized` (client to server): the handshake is complete.
    pub const INITIALIZED: &str = "initialized";
    /// `process/output` (server to client).
    pub const PROCESS_OUTPUT: &str = "process/output";
    /// `process/exited` (server to client).
    pub const PROCESS_EXITED: &str = "process/exited";
    /// `process/closed` (server to client).
    pub const PROCESS_CLOSED: &str = "process/closed";
    /// `process/ack` (client to server): output consumed, for flow control (SPEC section 13).
    pub const PROCESS_ACK: &str = "process/ack";
}

/// The JSON-RPC error codes of SPEC section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// -32700: the message is not valid JSON.
    ParseError,
    /// -32600: not a JSON-RPC request, protocol order broken, or duplicate `processId`.
    InvalidRequest,
    /// -32601: unknown method.
    MethodNotFound,
    /// -32602: missing or mistyped field, or a value the method refuses.
    InvalidParams,
    /// -32603: a server fault.
    InternalError,
    /// -32000: the OS refused to start the program.
    SpawnFailed,
    /// -32001: a configured limit was reached.
    LimitReached,
    /// -32004: unknown `processId`.
    ProcessNotFound,
    /// -32010: `resumeSessionId` unknown or expired.
    SessionNotFound,
    /// -32020: an `fs/*` call failed in the OS; `data.errno` names the error.
    FileError,
}

impl ErrorCode {
    /// Every error code.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::ParseError,
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
        ErrorCode::InternalError,
        ErrorCode::SpawnFailed,
        ErrorCode::LimitReached,
        ErrorCode::ProcessNotFound,
        ErrorCode::SessionNotFound,
        ErrorCode::FileError,
    ];

    /// The numeric code on the wire.
    pub const fn code(self) -> i32 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::InternalError => -32603,
            ErrorCode::SpawnFailed => -32000,
            ErrorCode::LimitReached => -32001,
            ErrorCode::ProcessNotFound => -32004,
            ErrorCode::SessionNotFound => -32010,
            ErrorCode::FileError => -32020,
        }
    }

    /// The short name of SPEC section 3, e.g. `"spawn failed"`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "parse error",
            ErrorCode::InvalidRequest => "invalid request",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::InvalidParams => "invalid params",
            ErrorCode::InternalError => "internal error",
            ErrorCode::SpawnFailed => "spawn failed",
            ErrorCode::LimitReached => "limit reached",
            ErrorCode::ProcessNotFound => "process not found",
            ErrorCode::SessionNotFound => "session not found",
            ErrorCode::FileError => "file error",
        }
    }

    /// The error code with this number.
    pub fn from_code(code: i32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}
