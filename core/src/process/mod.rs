//! One process of a session: its state as readers see it, and the tasks that drive it.
//!
//! - `output`: the emitter (seq assignment, retention, push), reading the output streams.
//! - `stdin`: the stdin queue, written inline when the fd takes it, else by a writer task.
//! - `end`: exit (observed through a pidfd without reaping), reaping once the group is
//!   empty, signals, terminate, and giving up on streams a runaway daemon keeps open.

mod end;

pub(crate) use end::ABANDON_AFTER;
mod output;
mod stdin;

pub(crate) use stdin::WriteAnswer;

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, Weak};

use exec_server_metrics::metrics;
use exec_server_protocol::{ProcessInfo, ProcessReadResult};
use portable_pty::MasterPty;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::Error;
use crate::groups::GroupWatch;
use crate::lock::lock;
use crate::retention::{Holder, Retained, RetentionPool};
use crate::session::Shared;
use crate::sink::{SinkCache, SinkHub};
use crate::spawn::{SharedFd, Spawned};
use crate::sys::ExitStatus;

use output::{Emitter, StreamSlot};
use stdin::Stdin;

/// Wait until the `Started` gate is dropped.
async fn gate_open(mut gate: watch::Receiver<()>) {
    while gate.changed().await.is_ok() {}
}

/// The leader's life as signalling sees it, under one short lock: a group is signalled
/// only while its leader is not reaped (alive, or a zombie that keeps the id reserved).
#[derive(Default)]
struct Control {
    /// The leader has exited (its status was read; it is a zombie until reaped).
    exited: bool,
    /// The leader was reaped: the group id may be reused, never signal it again.
    reaped: bool,
}

/// Event state visible to readers: seq counter, retention, exit, close and release.
struct State {
    next_seq: u64,
    retained: Retained,
    exit: Option<ExitStatus>,
    closed: bool,
    /// The leader was reaped after its group emptied.
    released: bool,
    /// The server terminated it because its `timeoutMs` passed.
    timed_out: bool,
    /// The client released it (`process/release`): forgotten as soon as it is closed.
    release_requested: bool,
}

/// The parent's side of a pseudo-terminal.
struct PtyHandles {
    /// portable-pty's master, used to resize.
    master: Mutex<Box<dyn MasterPty + Send>>,
    /// Our non-blocking duplicate of the master (reading, writing, tcgetpgrp).
    fd: SharedFd,
}

/// One child process of a session.
pub(crate) struct Process {
    pub id: String,
    pub pid: u32,
    pub argv: Vec<String>,
    pub tty: bool,
    /// Start order within the session, for `process/list`.
    pub order: u64,
    /// The server-wide retention this process's output counts towards.
    pool: RetentionPool,
    ctl: Mutex<Control>,
    state: Mutex<State>,
    emitter: tokio::sync::Mutex<Emitter>,
    /// Bumped after every event and on release (readers' long polls, shutdown's waits).
    changed: watch::Sender<()>,
    pty: Option<PtyHandles>,
    stdin: Option<Arc<Stdin>>,
    /// Set to give up on the output streams (see `end`).
    abandon: watch::Sender<bool>,
    groups: GroupWatch,
    session: Weak<Shared>,
}

/// Everything `Process::launch` needs besides the spawned child.
pub(crate) struct LaunchParams {
    pub id: String,
    pub argv: Vec<String>,
    pub order: u64,
    pub retain_bytes: usize,
    pub pool: RetentionPool,
    pub max_pending_stdin: usize,
    /// Terminate the process once it has run this long.
    pub timeout: Option<std::time::Duration>,
    pub hub: Arc<SinkHub>,
    pub groups: GroupWatch,
    pub session: Weak<Shared>,
}

impl Process {
    /// Wrap a spawned child and start its tasks; they wait for `gate` before emitting.
    pub(crate) fn launch(
        lp: LaunchParams,
        spawned: Spawned,
        gate: &watch::Sender<()>,
    ) -> Arc<Process> {
        let Spawned {
            pid,
            pidfd,
            outputs,
            stdin,
            pty,
        } = spawned;
        let tty = pty.is_some();
        metrics().processes_started.inc();
        metrics().processes_running.inc();
        let stdin = stdin.map(|fd| Stdin::new(fd, lp.max_pending_stdin, tty));
        let proc = Arc::new(Process {
            id: lp.id,
            pid,
            argv: lp.argv,
            tty,
            order: lp.order,
            ctl: Mutex::new(Control::default()),
            state: Mutex::new(State {
                next_seq: 1,
                retained: lp.pool.retained(lp.retain_bytes),
                exit: None,
                closed: false,
                released: false,
                timed_out: false,
                release_requested: false,
            }),
            emitter: tokio::sync::Mutex::new(Emitter::new(
                outputs
                    .iter()
                    .map(|(stream, fd)| StreamSlot::new(*stream, fd.clone()))
                    .collect(),
                SinkCache::new(lp.hub),
            )),
            changed: watch::Sender::new(()),
            pty: pty.map(|p| PtyHandles {
                master: Mutex::new(p.master),
                fd: p.fd,
            }),
            stdin: stdin.clone(),
            abandon: watch::Sender::new(false),
            groups: lp.groups,
            session: lp.session,
            pool: lp.pool,
        });
        for (index, (_, fd)) in outputs.into_iter().enumerate() {
            tokio::spawn(output::read_stream(
                proc.clone(),
                index,
                fd,
                gate.subscribe(),
            ));
        }
        tokio::spawn(end::watch_exit(proc.clone(), pidfd, gate.subscribe()));
        if let Some(limit) = lp.timeout {
            tokio::spawn(end::enforce_timeout(proc.clone(), limit));
        }
        if let Some(stdin) = stdin {
            tokio::spawn(stdin::run_writer(stdin));
        }
        proc
    }

    // ------------------------------------------------------------ reading

    /// Subscribe to event changes (subscribe before checking state: no lost wake-ups).
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// Whether there is an event with seq > `after_seq`, or the process is closed.
    pub(crate) fn ready(&self, after_seq: u64) -> bool {
        let st = lock(&self.state);
        st.closed || st.next_seq.saturating_sub(1) > after_seq
    }

    /// The `process/read` result for this cursor.
    pub(crate) fn read(&self, after_seq: u64, max_bytes: Option<u64>) -> ProcessReadResult {
        let st = lock(&self.state);
        let mut chunks = Vec::new();
        let mut total: u64 = 0;
        let mut cut = false;
        for c in st.retained.after(after_seq) {
            let len = c.chunk.len() as u64;
            if let Some(max) = max_bytes
                && !chunks.is_empty()
                && total.saturating_add(len) > max
            {
                cut = true;
                break;
            }
            total = total.saturating_add(len);
            chunks.push(c.clone());
        }
        let next_seq = match (cut, chunks.last()) {
            (true, Some(last)) => last.seq + 1,
            _ => st.next_seq,
        };
        ProcessReadResult {
            chunks,
            next_seq,
            exited: st.exit.is_some(),
            exit_code: st.exit.as_ref().map(|e| e.code),
            signal: st.exit.as_ref().and_then(|e| e.signal.clone()),
            closed: st.closed,
            timed_out: st.timed_out,
            truncated: st.retained.evicted_through > after_seq,
            evicted_bytes: st.retained.evicted_bytes,
            failure: None,
        }
    }

    /// The `process/list` entry.
    pub(crate) fn info(&self) -> ProcessInfo {
        let st = lock(&self.state);
        ProcessInfo {
            process_id: self.id.clone(),
            pid: self.pid,
            argv: self.argv.clone(),
            tty: self.tty,
            exited: st.exit.is_some(),
            exit_code: st.exit.as_ref().map(|e| e.code),
            signal: st.exit.as_ref().and_then(|e| e.signal.clone()),
            closed: st.closed,
            timed_out: st.timed_out,
            next_seq: st.next_seq,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Closed, and its leader reaped once its group emptied: nothing of it is left running.
    pub(crate) fn is_done(&self) -> bool {
        let st = lock(&self.state);
        st.closed && st.released
    }

    /// Wait until [`Process::is_done`].
    pub(crate) async fn wait_done(&self) {
        loop {
            let mut rx = self.subscribe();
            if self.is_done() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Wait until the process is closed.
    pub(crate) async fn wait_closed(&self) {
        loop {
            let mut rx = self.subscribe();
            if self.is_closed() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Wait until the `exited` event has been recorded (it may wait on a full sink).
    pub(crate) async fn wait_exit_recorded(&self) {
        loop {
            let mut rx = self.subscribe();
            if lock(&self.state).exit.is_some() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Forget the process once it is closed: at once when the client released it (its
    /// retained output is dropped now, and the sink told, so a push a flow-control window
    /// holds back is given up: the client needs nothing more of it), else
    /// `--retain-closed-ms` after it is also reaped. Called (under the state lock) whenever
    /// one of those changes.
    ///
    /// Returns whether it was forgotten now: the caller then calls
    /// [`Process::forget_output`] once it has let go of the state lock.
    #[must_use]
    fn forget_when_done(self: &Arc<Self>, st: &mut State) -> bool {
        if !st.closed {
            return false;
        }
        let Some(shared) = self.session.upgrade() else {
            return false;
        };
        if st.release_requested {
            shared.forget_now(self, st.released);
            return true;
        }
        if st.released {
            shared.schedule_forget(self);
        }
        false
    }

    /// `process/release`: forget the process once it has closed (now, if it has). Never
    /// signals it.
    pub(crate) fn release(self: &Arc<Self>) {
        let forgotten = {
            let mut st = lock(&self.state);
            if st.release_requested {
                return;
            }
            st.release_requested = true;
            self.forget_when_done(&mut st)
        };
        if forgotten {
            self.forget_output();
        }
    }
}

impl Process {
    /// `process/resize`.
    pub(crate) fn resize(&self, rows: u16, cols: u16) -> Result<(), Error> {
        let Some(pty) = &self.pty else {
            return Err(Error::InvalidRequest(format!(
                "process {:?} has no tty to resize",
                self.id
            )));
        };
        lock(&pty.master)
            .resize(portable_pty::PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| Error::Internal(format!("resize: {e}")))
    }
}

impl State {
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

impl Holder for Process {
    fn with_retained(&self, f: &mut dyn FnMut(&mut Retained, bool)) {
        let mut st = lock(&self.state);
        let closed = st.closed;
        f(&mut st.retained, closed);
    }
}

impl Process {
    fn as_holder(self: &Arc<Self>) -> Arc<dyn Holder> {
        self.clone()
    }

    /// The process is forgotten: its retained output is dropped now, whoever still
    /// holds the process.
    pub(crate) fn forget_output(self: &Arc<Self>) {
        self.pool.forget(&self.as_holder());
    }
}

/// The pidfd of a leader, registered with the reactor (readable once it has exited).
pub(crate) type PidFd = AsyncFd<OwnedFd>;
