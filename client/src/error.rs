//! The one error type of the client crate.

use exec_server_protocol::{ErrorCode, FileErrorData, SpawnErrorData};

/// Everything a client call can fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server (or the local backend) answered with a JSON-RPC error (SPEC section 3).
    #[error("{message} ({code})")]
    Rpc {
        /// The numeric code on the wire, e.g. -32000.
        code: i32,
        /// The error's `message`.
        message: String,
        /// The error's `data`, if any, as JSON text.
        data: Option<String>,
    },
    /// Connecting failed (no server, refused upgrade, wrong token, spawn of the server failed).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The transport was lost: this call, and every call until a resume, fails with it.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// The client was closed (or dropped); nothing more can be done with it.
    #[error("the client is closed")]
    Closed,
    /// The server sent something this client cannot understand.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The operation is not available on this backend or transport (e.g. resume over stdio).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A process's event stream was already taken.
    #[error("the event stream of process {0:?} was already taken")]
    EventsTaken(String),
}

impl Error {
    /// The SPEC error code, for errors the server (or the local backend) answered with
    /// one of the codes SPEC section 3 names.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Rpc { code, .. } => ErrorCode::from_code(*code),
            _ => None,
        }
    }

    /// For a file error (-32020): the OS error's symbolic name from its `data`, e.g.
    /// `"ENOENT"`, `"ENOTDIR"`, `"EACCES"`.
    pub fn errno(&self) -> Option<String> {
        match self {
            Error::Rpc {
                code,
                data: Some(data),
                ..
            } if *code == ErrorCode::FileError.code() => {
                serde_json::from_str::<FileErrorData>(data)
                    .ok()
                    .map(|d| d.errno)
            }
            _ => None,
        }
    }

    /// For a spawn error (-32000): its `data`, the step that failed (`exec`, `cwd`, `user`,
    /// …) and the OS error's symbolic name, so a missing program (`exec`, `ENOENT`) can be
    /// told from a missing working directory.
    pub fn spawn_data(&self) -> Option<SpawnErrorData> {
        match self {
            Error::Rpc {
                code,
                data: Some(data),
                ..
            } if *code == ErrorCode::SpawnFailed.code() => serde_json::from_str(data).ok(),
            _ => None,
        }
    }

    /// Whether the transport was lost (a resume may help).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected(_))
    }

    pub(crate) fn rpc(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Rpc {
            code: code.code(),
            message: message.into(),
            data: None,
        }
    }
}

#[cfg(feature = "local")]
impl From<exec_server_core::Error> for Error {
    fn from(e: exec_server_core::Error) -> Self {
        // The same `data` a server sends with this error.
        let data = match &e {
            exec_server_core::Error::File { errno, .. } => serde_json::to_string(&FileErrorData {
                errno: (*errno).to_owned(),
            })
            .ok(),
            _ => e.spawn_data().and_then(|d| serde_json::to_string(&d).ok()),
        };
        Error::Rpc {
            code: e.code().code(),
            message: e.to_string(),
            data,
        }
    }
}
