//! The session: owns the processes of one client and implements the `process/*` methods.

use std::sync::Arc;

use exec_server_protocol::*;

use crate::{Error, EventSink, SessionConfig};

/// Returned by [`Session::start`]. While it is alive, no event of that process is
/// pushed (nor its output read); dropping it (or [`Started::release`]) lets them flow.
pub struct Started {
    /// The `process/start` result.
    pub result: ProcessStartResult,
    _gate: tokio::sync::watch::Sender<()>,
}

impl Started {
    /// Let the process's events flow (same as dropping it).
    pub fn release(self) {}
}

/// The processes of one client, with their events, retention and sink.
pub struct Session {
    _config: SessionConfig,
}

impl Session {
    /// A new session with these limits. Must be called inside a tokio runtime.
    pub fn new(config: SessionConfig) -> Arc<Session> {
        Arc::new(Session { _config: config })
    }

    /// `process/start`.
    pub async fn start(&self, params: ProcessStartParams) -> Result<Started, Error> {
        Err(Error::Internal(format!(
            "not implemented: {}",
            params.process_id
        )))
    }

    /// `process/read`: long poll without lost wake-ups; `waitMs` capped at [`MAX_WAIT_MS`].
    pub async fn read(&self, params: ProcessReadParams) -> Result<ProcessReadResult, Error> {
        Err(Error::ProcessNotFound(params.process_id))
    }

    /// `process/write`: synchronous enqueue, so writes reach stdin in the order of these calls.
    pub fn write(&self, _params: ProcessWriteParams) -> Result<ProcessWriteResult, Error> {
        Ok(ProcessWriteResult {
            status: WriteStatus::UnknownProcess,
        })
    }

    /// `process/closeStdin`.
    pub fn close_stdin(&self, _params: ProcessCloseStdinParams) -> ProcessCloseStdinResult {
        ProcessCloseStdinResult {
            status: WriteStatus::UnknownProcess,
        }
    }

    /// `process/signal`.
    pub fn signal(&self, _params: ProcessSignalParams) -> ProcessSignalResult {
        ProcessSignalResult { delivered: false }
    }

    /// `process/resize`.
    pub fn resize(&self, params: ProcessResizeParams) -> Result<ProcessResizeResult, Error> {
        Err(Error::ProcessNotFound(params.process_id))
    }

    /// `process/terminate`: answers at once; SIGTERM, then SIGKILL after `graceMs`, runs in the background.
    pub fn terminate(&self, _params: ProcessTerminateParams) -> ProcessTerminateResult {
        ProcessTerminateResult { running: false }
    }

    /// `process/list`.
    pub fn list(&self) -> ProcessListResult {
        ProcessListResult {
            processes: Vec::new(),
        }
    }

    /// Attach a sink (replacing any previous one): pushes resume with the next new event.
    pub fn attach(&self, _sink: Arc<dyn EventSink>) {}

    /// Detach: events go to retention only; output keeps being read.
    pub fn detach(&self) {}

    /// Terminate every process with the default grace and wait until every child is
    /// reaped (bounded by an internal deadline). Idempotent.
    pub async fn shutdown(&self) {}
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit (1000 processes need ~3000 fds).
pub fn raise_fd_limit() {}
