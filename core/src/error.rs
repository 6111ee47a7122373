//! The one error type of core, and its mapping to the SPEC's JSON-RPC error codes.

use exec_server_protocol::{ErrorCode, SpawnErrorData, SpawnStep};

/// The one error enum of core. [`Error::code`] is the single place that maps to SPEC codes;
/// `Display` is the JSON-RPC error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// -32602: a params value the method refuses (empty argv, relative cwd, NUL byte, ...).
    #[error("{0}")]
    InvalidParams(String),
    /// -32600: duplicate `processId`, resize of a process without a tty.
    #[error("{0}")]
    InvalidRequest(String),
    /// -32000: the OS refused to start the program: which step failed, its errno's name,
    /// and the message with what failed and the OS error text.
    #[error("{message}")]
    SpawnFailed {
        /// The step that failed (`data.step`).
        step: SpawnStep,
        /// The errno's symbolic name (`data.errno`), `None` when no OS error applies (an
        /// unknown user).
        errno: Option<&'static str>,
        /// What failed and the OS error text.
        message: String,
    },
    /// -32001: a configured limit was reached; the message names the limit.
    #[error("{0}")]
    LimitReached(String),
    /// -32004: unknown `processId`.
    #[error("{0}")]
    ProcessNotFound(String),
    /// -32603: a server fault.
    #[error("{0}")]
    Internal(String),
    /// -32020: an `fs/*` call failed in the OS: `errno` is the error's symbolic name
    /// (`"ENOENT"`), `message` the call, the path and the OS text.
    #[error("{message}")]
    File {
        /// The errno's symbolic name, for the error's `data.errno`.
        errno: &'static str,
        /// The call, the path and the OS error text.
        message: String,
    },
}

impl Error {
    /// The JSON-RPC error code of this error (SPEC section 3).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidParams(_) => ErrorCode::InvalidParams,
            Error::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Error::SpawnFailed { .. } => ErrorCode::SpawnFailed,
            Error::LimitReached(_) => ErrorCode::LimitReached,
            Error::ProcessNotFound(_) => ErrorCode::ProcessNotFound,
            Error::Internal(_) => ErrorCode::InternalError,
            Error::File { .. } => ErrorCode::FileError,
        }
    }

    /// For a spawn error (-32000): its `data`, the step that failed and its errno's name.
    pub fn spawn_data(&self) -> Option<SpawnErrorData> {
        match self {
            Error::SpawnFailed { step, errno, .. } => Some(SpawnErrorData {
                step: *step,
                errno: errno.map(str::to_owned),
            }),
            _ => None,
        }
    }

    /// A spawn error at `step` with no OS error behind it.
    pub(crate) fn spawn(step: SpawnStep, message: String) -> Error {
        Error::SpawnFailed {
            step,
            errno: None,
            message,
        }
    }

    /// A spawn error at `step` caused by the OS error `err`: `what: err` as the message.
    pub(crate) fn spawn_os(step: SpawnStep, what: &str, err: &std::io::Error) -> Error {
        Error::SpawnFailed {
            step,
            errno: err.raw_os_error().map(crate::fs::errno::errno_name),
            message: format!("{what}: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_spec_code_and_displays_its_message() {
        let cases = [
            (Error::InvalidParams("a".into()), -32602),
            (Error::InvalidRequest("b".into()), -32600),
            (Error::spawn(SpawnStep::User, "c".into()), -32000),
            (Error::LimitReached("d".into()), -32001),
            (Error::ProcessNotFound("e".into()), -32004),
            (Error::Internal("f".into()), -32603),
            (
                Error::File {
                    errno: "ENOENT",
                    message: "g".into(),
                },
                -32020,
            ),
        ];
        let got: Vec<(i32, String)> = cases
            .iter()
            .map(|(e, _)| (e.code().code(), e.to_string()))
            .collect();
        let want: Vec<(i32, String)> = cases
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g"])
            .map(|((_, code), msg)| (*code, msg.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_spawn_error_carries_its_step_and_errno_name() {
        let err = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = Error::spawn_os(SpawnStep::Cwd, "cwd \"/x\"", &err);
        assert_eq!(
            e.to_string(),
            "cwd \"/x\": No such file or directory (os error 2)"
        );
        assert_eq!(
            e.spawn_data(),
            Some(SpawnErrorData {
                step: SpawnStep::Cwd,
                errno: Some("ENOENT".into())
            })
        );
        let e = Error::spawn(SpawnStep::User, "unknown user \"x\"".into());
        assert_eq!(
            e.spawn_data(),
            Some(SpawnErrorData {
                step: SpawnStep::User,
                errno: None
            })
        );
        assert_eq!(Error::Internal("x".into()).spawn_data(), None);
    }
}
