//! The errors of the dispatch and their JSON-RPC error objects: the one place a wire error is built.

use exec_server_protocol::{ErrorCode, FileErrorData, SpawnErrorData};
use jsonrpsee_types::ErrorObjectOwned;
use serde::Serialize;

/// The longest error `message` sent, in bytes (longer texts are cut and end in `…`).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// An error answered to a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A process operation failed in core; its code comes from `exec_server_core::Error::code`.
    #[error(transparent)]
    Core(#[from] exec_server_core::Error),
    /// The message is not valid JSON.
    #[error("parse error: {0}")]
    Parse(String),
    /// Not a JSON-RPC request, or the handshake order was broken.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No method has this name.
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// The params do not match the method's params type.
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// A configured limit was reached (the message names it).
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// `resumeSessionId` names no live session.
    #[error("session not found: {0}")]
    SessionNotFound(String),
    /// A server fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The SPEC error code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Core(e) => e.code(),
            Error::Parse(_) => ErrorCode::ParseError,
            Error::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Error::MethodNotFound(_) => ErrorCode::MethodNotFound,
            Error::InvalidParams(_) => ErrorCode::InvalidParams,
            Error::LimitReached(_) => ErrorCode::LimitReached,
            Error::SessionNotFound(_) => ErrorCode::SessionNotFound,
            Error::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The JSON-RPC error object: the SPEC code, this error's text as `message` (cut to
    /// [`MAX_ERROR_MESSAGE_BYTES`]: a parse error can quote a client's huge string), and
    /// `data` for a spawn error (-32000: `{"step": STEP, "errno": NAME | null}`) and a file
    /// error (-32020: `{"errno": NAME}`).
    pub fn to_error_object(&self) -> ErrorObjectOwned {
        let data = match self {
            Error::Core(exec_server_core::Error::File { errno, .. }) => {
                Some(ErrorData::File(FileErrorData {
                    errno: (*errno).to_owned(),
                }))
            }
            Error::Core(e) => e.spawn_data().map(ErrorData::Spawn),
            _ => None,
        };
        let mut message = self.to_string();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut end = MAX_ERROR_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        ErrorObjectOwned::owned(self.code().code(), message, data)
    }
}

/// The `data` of an error object.
#[derive(Serialize)]
#[serde(untagged)]
enum ErrorData {
    File(FileErrorData),
    Spawn(SpawnErrorData),
}

impl From<Error> for ErrorObjectOwned {
    fn from(e: Error) -> Self {
        e.to_error_object()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec_table() {
        let cases = [
            (Error::Parse("x".into()), -32700),
            (Error::InvalidRequest("x".into()), -32600),
            (Error::MethodNotFound("x".into()), -32601),
            (Error::InvalidParams("x".into()), -32602),
            (Error::Internal("x".into()), -32603),
            (Error::LimitReached("x".into()), -32001),
            (Error::SessionNotFound("x".into()), -32010),
        ];
        for (e, code) in cases {
            let obj = e.to_error_object();
            assert_eq!(obj.code(), code);
            assert_eq!(obj.message(), e.to_string());
            assert!(obj.data().is_none());
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let e = Error::InvalidParams("é".repeat(5000));
        let obj = e.to_error_object();
        assert!(obj.message().len() <= MAX_ERROR_MESSAGE_BYTES + '…'.len_utf8());
        assert!(obj.message().ends_with('…'));
        assert!(obj.message().starts_with("invalid params: éé"));
    }

    #[test]
    fn a_file_error_carries_its_errno_name() {
        let e = Error::from(exec_server_core::Error::File {
            errno: "ENOTDIR",
            message: "open /etc/passwd/x: Not a directory (os error 20)".into(),
        });
        let obj = e.to_error_object();
        assert_eq!(obj.code(), -32020);
        assert_eq!(
            obj.message(),
            "open /etc/passwd/x: Not a directory (os error 20)"
        );
        assert_eq!(obj.data().map(|d| d.get()), Some(r#"{"errno":"ENOTDIR"}"#));
    }

    #[tokio::test]
    async fn a_spawn_error_carries_its_step_and_errno_name() {
        let session = exec_server_core::Session::new(Default::default());
        let params = |argv: &str, cwd: &str| exec_server_protocol::ProcessStartParams {
            merge_stderr: false,
            process_id: "p".into(),
            argv: vec![argv.into()],
            cwd: cwd.into(),
            env: Default::default(),
            inherit_env: false,
            tty: false,
            pipe_stdin: false,
            arg0: None,
            size: None,
            timeout_ms: None,
            user: None,
        };
        let cases = [
            (
                params("/nonexistent/program", "/"),
                "/nonexistent/program: No such file or directory (os error 2)",
                r#"{"step":"exec","errno":"ENOENT"}"#,
            ),
            (
                params("true", "/nonexistent"),
                "cwd \"/nonexistent\": No such file or directory (os error 2)",
                r#"{"step":"cwd","errno":"ENOENT"}"#,
            ),
        ];
        for (params, message, data) in cases {
            let e = Error::from(session.start(params).await.unwrap_err());
            let obj = e.to_error_object();
            assert_eq!(
                (obj.code(), obj.message(), obj.data().map(|d| d.get())),
                (-32000, message, Some(data))
            );
        }
        let mut unknown = params("true", "/");
        unknown.user = Some("no-such-user-rpc".into());
        let obj = Error::from(session.start(unknown).await.unwrap_err()).to_error_object();
        assert_eq!(
            obj.data().map(|d| d.get()),
            Some(r#"{"step":"user","errno":null}"#)
        );
    }
}
