//! The backend trait: start processes and drive them, the same way whether they run in
//! this process ([`crate::LocalBackend`]) or on an exec-server ([`crate::RemoteBackend`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use exec_server_protocol::{
    DEFAULT_GRACE_MS, ProcessInfo, ProcessReadResult, ProcessStartParams, Signal, TerminalSize,
    WriteStatus,
};

use crate::{Error, EventStream, ExecFiles};

/// Something that runs processes: in this process, or on an exec-server.
#[async_trait::async_trait]
pub trait ExecBackend: Send + Sync {
    /// Starts a process. Its events are buffered from the first one on; take them with
    /// [`ExecProcess::events`].
    async fn start(&self, options: StartOptions) -> Result<Arc<dyn ExecProcess>, Error>;

    /// Every process the backend's session retains.
    async fn list(&self) -> Result<Vec<ProcessInfo>, Error>;

    /// The files of the host the processes run on.
    fn files(&self) -> &dyn ExecFiles;
}

/// A started process.
#[async_trait::async_trait]
pub trait ExecProcess: Send + Sync {
    /// The process's protocol name (its `processId`).
    fn id(&self) -> &str;

    /// The OS process id of the child (on the server's host).
    fn pid(&self) -> u32;

    /// The process's events from its first one on, once per process. A second call is
    /// [`Error::EventsTaken`].
    fn events(&self) -> Result<EventStream, Error>;

    /// `process/read`: retained output from a cursor, long-polling up to `options.wait`.
    /// When a remote client's transport is lost, the result's `failure` says so (and the
    /// cursor does not move).
    async fn read(&self, options: ReadOptions) -> Result<ProcessReadResult, Error>;

    /// Writes to the process's stdin (pipe or terminal).
    async fn write(&self, data: &[u8]) -> Result<WriteStatus, Error>;

    /// Closes stdin: a pipe after the pending writes, a terminal by its EOF character.
    async fn close_stdin(&self) -> Result<WriteStatus, Error>;

    /// Sends a signal to the process group (a terminal's foreground group). `false`
    /// when the process has exited.
    async fn signal(&self, signal: Signal) -> Result<bool, Error>;

    /// Resizes the process's terminal.
    async fn resize(&self, size: TerminalSize) -> Result<(), Error>;

    /// SIGTERM to the group, then SIGKILL after `grace`. `true` if it was running.
    async fn terminate(&self, grace: Duration) -> Result<bool, Error>;
}

/// How to start a process. Build it with [`StartOptions::new`] and the setters; fields
/// will be added without breaking callers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartOptions {
    /// Program and arguments; `argv[0]` without a `/` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Working directory (absolute). Default: `/`.
    pub cwd: Option<String>,
    /// Environment: exactly this, or laid over the server's own with `inherit_env`.
    pub env: BTreeMap<String, String>,
    /// Start from the server's own environment (default `true`).
    pub inherit_env: bool,
    /// Run under a new pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open for writes (non-tty processes; a tty always has one).
    pub pipe_stdin: bool,
    /// Initial terminal size (tty only; default 24x80).
    pub size: Option<TerminalSize>,
    /// The value the child sees as `argv[0]`.
    pub arg0: Option<String>,
    /// The `processId`; default: a fresh one.
    pub process_id: Option<String>,
    /// Terminate the process (as [`ExecProcess::terminate`] with the default grace) once
    /// it has run this long; its exit then says `timed_out`.
    pub timeout: Option<Duration>,
    /// Run as this user (a name or a numeric uid); needs a server running as root.
    pub user: Option<String>,
}

impl StartOptions {
    /// Runs `argv` in `/` with the server's environment, stdin closed, no terminal.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StartOptions {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            env: BTreeMap::new(),
            inherit_env: true,
            tty: false,
            pipe_stdin: false,
            size: None,
            arg0: None,
            process_id: None,
            timeout: None,
            user: None,
        }
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Whether to start from the server's own environment.
    pub fn inherit_env(mut self, inherit: bool) -> Self {
        self.inherit_env = inherit;
        self
    }

    /// Runs under a pseudo-terminal.
    pub fn tty(mut self, tty: bool) -> Self {
        self.tty = tty;
        self
    }

    /// Keeps stdin open for writes.
    pub fn pipe_stdin(mut self, pipe: bool) -> Self {
        self.pipe_stdin = pipe;
        self
    }

    /// The initial terminal size.
    pub fn size(mut self, size: TerminalSize) -> Self {
        self.size = Some(size);
        self
    }

    /// The `argv[0]` the child sees.
    pub fn arg0(mut self, arg0: impl Into<String>) -> Self {
        self.arg0 = Some(arg0.into());
        self
    }

    /// The `processId` to use.
    pub fn process_id(mut self, id: impl Into<String>) -> Self {
        self.process_id = Some(id.into());
        self
    }

    /// Ends the process after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs the process as `user`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The `process/start` params, with `process_id` filled in.
    pub(crate) fn into_params(self, process_id: String) -> ProcessStartParams {
        ProcessStartParams {
            merge_stderr: false,
            process_id,
            argv: self.argv,
            cwd: self.cwd.unwrap_or_else(|| "/".to_owned()),
            env: self.env,
            inherit_env: self.inherit_env,
            tty: self.tty,
            pipe_stdin: self.pipe_stdin,
            arg0: self.arg0,
            size: self.size,
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            user: self.user,
        }
    }
}

/// A `process/read` cursor and its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Return events after this seq (0 = from the start).
    pub after_seq: u64,
    /// Stop before the chunk bytes would exceed this (at least one chunk is returned).
    pub max_bytes: Option<u64>,
    /// Wait up to this long for the next event when there is none.
    pub wait: Duration,
}

impl ReadOptions {
    /// Everything after `after_seq`, without waiting.
    pub fn after(after_seq: u64) -> Self {
        ReadOptions {
            after_seq,
            ..ReadOptions::default()
        }
    }

    /// Long-polls up to `wait`.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Caps the chunk bytes of one read.
    pub fn max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = Some(max);
        self
    }
}

/// The default grace of [`ExecProcess::terminate`] (SPEC's `graceMs` default).
pub const DEFAULT_GRACE: Duration = Duration::from_millis(DEFAULT_GRACE_MS);

/// Fresh process ids: a prefix unique to the backend instance and a counter.
pub(crate) struct IdGenerator {
    prefix: String,
    next: AtomicU64,
}

impl IdGenerator {
    pub(crate) fn new(prefix: impl Into<String>) -> Self {
        IdGenerator {
            prefix: prefix.into(),
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> String {
        format!(
            "{}{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl std::fmt::Debug for dyn ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess")
            .field("id", &self.id())
            .field("pid", &self.pid())
            .finish()
    }
}
