//! The session: owns the processes of one client and implements the `process/*` methods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use exec_server_protocol::*;

use crate::blocking;
use crate::groups::GroupWatch;
use crate::lock::lock;
use crate::process::{ABANDON_AFTER, LaunchParams, Process, WriteAnswer};
use crate::sink::SinkHub;
use crate::spawn;
use crate::sys;
use crate::{Error, EventSink, SessionConfig};

/// Returned by [`Session::start`]. While it is alive, no event of that process is
/// pushed (nor its output read); dropping it (or [`Started::release`]) lets them flow.
/// A transport drops it once the start response has been written, so the response
/// always precedes the process's first notification.
pub struct Started {
    /// The `process/start` result.
    pub result: ProcessStartResult,
    _gate: tokio::sync::watch::Sender<()>,
}

impl Started {
    /// Let the process's events flow (same as dropping it).
    pub fn release(self) {}
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("result", &self.result)
            .finish_non_exhaustive()
    }
}

enum Slot {
    /// Id reserved while the spawn is under way.
    Starting,
    Live(Arc<Process>),
}

struct Registry {
    map: HashMap<String, Slot>,
    /// Released processes forgotten once closed whose group still had live members: no
    /// longer the session's (no id, not listed, not counted), but cleanup still ends them.
    lingering: Vec<Weak<Process>>,
    next_order: u64,
    shut_down: bool,
}

/// State shared by the session and its processes' tasks.
pub(crate) struct Shared {
    config: SessionConfig,
    registry: Mutex<Registry>,
    hub: Arc<SinkHub>,
    groups: GroupWatch,
    /// Woken whenever a `Starting` slot becomes live or is removed.
    settled: tokio::sync::Notify,
}

impl Shared {
    /// Forget `proc` now (if it is still the one under its id): its id is free and it no
    /// longer counts. `reaped`: nothing of it runs any more; otherwise it lingers, for the
    /// cleanup to end what is left of its group.
    pub(crate) fn forget_now(&self, proc: &Arc<Process>, reaped: bool) {
        let mut reg = lock(&self.registry);
        self.forget(&mut reg, proc);
        reg.lingering
            .retain(|w| w.strong_count() > 0 && !w.ptr_eq(&Arc::downgrade(proc)));
        if !reaped {
            reg.lingering.push(Arc::downgrade(proc));
        }
    }

    /// Forget `proc` after the closed-retention time (if it is still the one under its id).
    pub(crate) fn schedule_forget(self: &Arc<Self>, proc: &Arc<Process>) {
        let weak = Arc::downgrade(self);
        let proc = Arc::downgrade(proc);
        let after = self.config.retain_closed;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let (Some(shared), Some(proc)) = (weak.upgrade(), proc.upgrade()) else {
                return;
            };
            let forgotten = {
                let mut reg = lock(&shared.registry);
                shared.forget(&mut reg, &proc)
            };
            // Outside the registry lock: its retained output leaves the pool now.
            if forgotten {
                proc.forget_output();
            }
        });
    }

    /// Removes `proc` from the registry if it is still the process under its id, and
    /// tells the sink, while the registry is locked: no new process can take the id
    /// before the sink has let go of the old one's pushes. Whether it was removed.
    fn forget(&self, reg: &mut Registry, proc: &Arc<Process>) -> bool {
        if let Some(Slot::Live(p)) = reg.map.get(&proc.id)
            && Arc::ptr_eq(p, proc)
        {
            reg.map.remove(&proc.id);
            self.hub.forgotten(&proc.id);
            return true;
        }
        false
    }
}

/// A `processId` reserved by [`Session::reserve`]: the process is `starting` for every
/// other call until [`StartReservation::spawn`] finishes. Dropping it unspawned releases
/// the id.
pub struct StartReservation {
    shared: Arc<Shared>,
    params: Option<ProcessStartParams>,
    /// The reserved id (also while `params` are away at the spawn).
    process_id: String,
    /// The process is in the registry: nothing to release.
    registered: bool,
    order: u64,
}

impl std::fmt::Debug for StartReservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartReservation")
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

impl Drop for StartReservation {
    fn drop(&mut self) {
        if !self.registered {
            let mut reg = lock(&self.shared.registry);
            if matches!(reg.map.get(&self.process_id), Some(Slot::Starting)) {
                reg.map.remove(&self.process_id);
            }
            drop(reg);
            self.shared.settled.notify_waiters();
        }
    }
}

impl StartReservation {
    /// Spawns the reserved process. On failure the id is released again.
    ///
    /// The spawn is blocking work (the user's account may come from a directory service,
    /// the working directory and `PATH` are looked at, a pty is opened, and the thread
    /// waits until the child has exec'd): it runs on core's blocking threads, never on a
    /// runtime worker. If this future is dropped before the child is registered, a child
    /// already started is killed and reaped, and the id released.
    pub async fn spawn(mut self) -> Result<Started, Error> {
        let Some(params) = self.params.take() else {
            return Err(Error::Internal("start reservation used twice".into()));
        };
        // A failure (or a panic) drops `self` unregistered: the id is released. From the
        // result on, nothing awaits until the process is registered.
        let (params, spawned) = blocking::run_or(
            move || {
                let spawned = spawn::spawn(&params);
                (params, spawned)
            },
            |(_, unclaimed)| {
                if let Ok(spawned) = unclaimed {
                    spawn::abandon(spawned);
                }
            },
        )
        .await
        .ok_or_else(|| Error::Internal("the spawn failed".into()))?;
        let spawned = spawned.inspect_err(|e| {
            if let Error::SpawnFailed { step, .. } = e {
                exec_server_metrics::metrics().spawn_failed(step.name());
            }
        })?;
        let pid = spawned.pid;
        let gate = tokio::sync::watch::Sender::new(());
        let shared = &self.shared;
        let proc = Process::launch(
            LaunchParams {
                id: params.process_id.clone(),
                argv: params.argv,
                order: self.order,
                retain_bytes: shared.config.retain_bytes,
                pool: shared.config.retention.clone(),
                max_pending_stdin: shared.config.max_pending_stdin_bytes,
                timeout: params.timeout_ms.map(Duration::from_millis),
                hub: shared.hub.clone(),
                groups: shared.groups.clone(),
                session: Arc::downgrade(shared),
            },
            spawned,
            &gate,
        );
        {
            let mut reg = lock(&shared.registry);
            reg.map
                .insert(params.process_id.clone(), Slot::Live(proc.clone()));
            self.registered = true;
            if reg.shut_down {
                // shutdown() ran while we spawned: this child must not outlive it.
                drop(reg);
                proc.terminate_for_cleanup(Duration::from_millis(DEFAULT_GRACE_MS));
            }
        }
        shared.settled.notify_waiters();
        Ok(Started {
            result: ProcessStartResult {
                process_id: params.process_id,
                pid,
            },
            _gate: gate,
        })
    }
}

/// The answer to a `process/write` whose bytes are queued (see [`Session::write_then`]).
pub struct PendingWrite(WriteAnswer);

impl PendingWrite {
    /// The answer, if it is known already (no `waitWritten`, or the bytes were written at
    /// once).
    pub fn now(&self) -> Option<ProcessWriteResult> {
        self.0.now().map(|status| ProcessWriteResult { status })
    }

    /// The answer, once it is known.
    pub async fn result(self) -> ProcessWriteResult {
        ProcessWriteResult {
            status: self.0.status().await,
        }
    }

    /// The answer, once it is known or once `stop` resolves (the connection is finishing:
    /// every request read must be answered). Then it says what is true at that moment:
    /// `accepted` if the whole chunk has been written, else `stdinClosed` (the server is
    /// about to end the process).
    pub async fn result_unless(self, stop: impl Future<Output = ()>) -> ProcessWriteResult {
        ProcessWriteResult {
            status: self.0.status_unless(stop).await,
        }
    }
}

impl std::fmt::Debug for PendingWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingWrite")
            .field("now", &self.0.now())
            .finish()
    }
}

enum Lookup {
    Missing,
    Starting,
    Live(Arc<Process>),
}

/// The processes of one client, with their events, retention and sink.
pub struct Session {
    shared: Arc<Shared>,
}

impl Session {
    /// A new session with these limits. Must be called inside a tokio runtime.
    pub fn new(config: SessionConfig) -> Arc<Session> {
        Arc::new(Session {
            shared: Arc::new(Shared {
                config,
                registry: Mutex::new(Registry {
                    map: HashMap::new(),
                    lingering: Vec::new(),
                    next_order: 0,
                    shut_down: false,
                }),
                hub: Arc::new(SinkHub::new()),
                groups: GroupWatch::new(),
                settled: tokio::sync::Notify::new(),
            }),
        })
    }

    fn lookup(&self, id: &str) -> Lookup {
        match lock(&self.shared.registry).map.get(id) {
            None => Lookup::Missing,
            Some(Slot::Starting) => Lookup::Starting,
            Some(Slot::Live(p)) => Lookup::Live(p.clone()),
        }
    }

    fn live(&self, id: &str) -> Option<Arc<Process>> {
        match self.lookup(id) {
            Lookup::Live(p) => Some(p),
            _ => None,
        }
    }

    fn not_found(id: &str) -> Error {
        Error::ProcessNotFound(format!("unknown processId {id:?}"))
    }

    /// `process/start`: [`Session::reserve`] then [`StartReservation::spawn`].
    pub async fn start(&self, params: ProcessStartParams) -> Result<Started, Error> {
        self.reserve(params)?.spawn().await
    }

    /// The synchronous first half of `process/start`: validates the params and reserves
    /// the `processId`, so every later call naming it sees the process (`starting`) even
    /// before it is spawned. Call it in the order the requests were received.
    pub fn reserve(&self, params: ProcessStartParams) -> Result<StartReservation, Error> {
        spawn::validate(&params)?;
        let order = {
            let mut reg = lock(&self.shared.registry);
            if reg.shut_down {
                return Err(Error::InvalidRequest("the session is shut down".into()));
            }
            if reg.map.contains_key(&params.process_id) {
                return Err(Error::InvalidRequest(format!(
                    "processId {:?} is already in use",
                    params.process_id
                )));
            }
            if reg.map.len() >= self.shared.config.max_processes {
                return Err(Error::LimitReached(format!(
                    "processes per session limit ({}) reached",
                    self.shared.config.max_processes
                )));
            }
            reg.map.insert(params.process_id.clone(), Slot::Starting);
            reg.next_order += 1;
            reg.next_order
        };
        Ok(StartReservation {
            shared: self.shared.clone(),
            process_id: params.process_id.clone(),
            params: Some(params),
            registered: false,
            order,
        })
    }

    /// Waits until `id` is not `starting` (its spawn finished or failed); returns at
    /// once when it is not starting now.
    pub async fn settled(&self, id: &str) {
        self.wait_settled(|reg| matches!(reg.map.get(id), Some(Slot::Starting)))
            .await;
    }

    /// Waits until no process of the session is `starting`.
    pub async fn all_settled(&self) {
        self.wait_settled(|reg| reg.map.values().any(|s| matches!(s, Slot::Starting)))
            .await;
    }

    async fn wait_settled(&self, starting: impl Fn(&Registry) -> bool) {
        loop {
            let notified = self.shared.settled.notified();
            tokio::pin!(notified);
            // Registered before the check: a start that settles after it still wakes us.
            notified.as_mut().enable();
            if !starting(&lock(&self.shared.registry)) {
                return;
            }
            notified.await;
        }
    }

    /// `process/read`: long poll without lost wake-ups; `waitMs` capped at [`MAX_WAIT_MS`].
    /// A process that is still starting is waited for first (the wait counts from then).
    pub async fn read(&self, params: ProcessReadParams) -> Result<ProcessReadResult, Error> {
        self.settled(&params.process_id).await;
        let proc = self
            .live(&params.process_id)
            .ok_or_else(|| Self::not_found(&params.process_id))?;
        let wait = Duration::from_millis(params.wait_ms.min(MAX_WAIT_MS));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Subscribe before checking: a change after the check still wakes us.
            let mut rx = proc.subscribe();
            if proc.ready(params.after_seq) || tokio::time::Instant::now() >= deadline {
                break;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(proc.read(params.after_seq, params.max_bytes))
    }

    /// `process/write`, answered when the bytes are queued: a synchronous enqueue, so
    /// writes reach stdin in the order of these calls. Unknown process: status
    /// `unknownProcess`; still starting: status `starting`. `waitWritten` is not waited
    /// for here: see [`Session::write_then`].
    pub fn write(&self, params: ProcessWriteParams) -> Result<ProcessWriteResult, Error> {
        let status = match self.enqueue(params, false)? {
            WriteAnswer::Now(status) => status,
            WriteAnswer::WhenWritten { .. } => WriteStatus::Accepted,
        };
        Ok(ProcessWriteResult { status })
    }

    /// `process/write` with `waitWritten` honoured: the bytes are queued now (call it in
    /// the order the requests were received), and the returned [`PendingWrite`] gives the
    /// answer: at once, or with `waitWritten` once the whole chunk has been written to the
    /// child's stdin (`accepted`) or can no longer be (`stdinClosed`). Over the
    /// pending-stdin limit: -32001, nothing written.
    pub fn write_then(&self, params: ProcessWriteParams) -> Result<PendingWrite, Error> {
        let wait = params.wait_written;
        self.enqueue(params, wait).map(PendingWrite)
    }

    fn enqueue(&self, params: ProcessWriteParams, wait: bool) -> Result<WriteAnswer, Error> {
        if let Some(id) = &params.write_id
            && (id.is_empty() || id.len() > MAX_WRITE_ID_BYTES)
        {
            return Err(Error::InvalidParams(format!(
                "writeId must be 1 to {MAX_WRITE_ID_BYTES} bytes, got {}",
                id.len()
            )));
        }
        Ok(match self.lookup(&params.process_id) {
            Lookup::Missing => WriteAnswer::Now(WriteStatus::UnknownProcess),
            Lookup::Starting => WriteAnswer::Now(WriteStatus::Starting),
            Lookup::Live(p) => p.write(params.chunk.as_bytes(), params.write_id, wait)?,
        })
    }

    /// `process/closeStdin`: a pipe is closed after pending writes; a tty gets its EOF character.
    pub fn close_stdin(&self, params: ProcessCloseStdinParams) -> ProcessCloseStdinResult {
        let status = match self.lookup(&params.process_id) {
            Lookup::Missing => WriteStatus::UnknownProcess,
            Lookup::Starting => WriteStatus::Starting,
            Lookup::Live(p) => p.close_stdin(),
        };
        ProcessCloseStdinResult { status }
    }

    /// `process/signal`: to the process group (a tty's foreground group).
    pub fn signal(&self, params: ProcessSignalParams) -> ProcessSignalResult {
        let delivered = self
            .live(&params.process_id)
            .is_some_and(|p| p.signal(sys::signal_number(params.signal)));
        ProcessSignalResult { delivered }
    }

    /// `process/resize`.
    pub fn resize(&self, params: ProcessResizeParams) -> Result<ProcessResizeResult, Error> {
        let proc = self
            .live(&params.process_id)
            .ok_or_else(|| Self::not_found(&params.process_id))?;
        spawn::check_size(params.rows, params.cols)?;
        proc.resize(params.rows, params.cols)?;
        Ok(ProcessResizeResult {})
    }

    /// `process/terminate`: answers at once; SIGTERM, then SIGKILL after `graceMs`, runs in
    /// the background.
    pub fn terminate(&self, params: ProcessTerminateParams) -> ProcessTerminateResult {
        let running = self
            .live(&params.process_id)
            .is_some_and(|p| p.terminate(Duration::from_millis(params.grace_ms)));
        ProcessTerminateResult { running }
    }

    /// `process/release`: the client needs nothing more of this process. Once it has
    /// closed (at once if it has) it is forgotten: its retained output is dropped, it no
    /// longer counts towards the processes-per-session limit, and its id may be reused.
    /// Never signals it: a running process keeps running, pushing, listing and answering
    /// reads until it closes. -32004 for an unknown id. A process still starting is not
    /// released (-32600): wait for [`Session::settled`] first, as the dispatch does.
    pub fn release(&self, params: ProcessReleaseParams) -> Result<ProcessReleaseResult, Error> {
        match self.lookup(&params.process_id) {
            Lookup::Missing => Err(Self::not_found(&params.process_id)),
            Lookup::Starting => Err(Error::InvalidRequest(format!(
                "process {:?} is still starting",
                params.process_id
            ))),
            Lookup::Live(p) => {
                p.release();
                Ok(ProcessReleaseResult {})
            }
        }
    }

    /// `process/list`: every process the session retains, in start order.
    pub fn list(&self) -> ProcessListResult {
        let (mut procs, _) = self.snapshot(&lock(&self.shared.registry));
        procs.sort_by_key(|p| p.order);
        ProcessListResult {
            processes: procs.iter().map(|p| p.info()).collect(),
        }
    }

    /// Attach a sink (replacing any previous one): pushes resume with the next new event.
    pub fn attach(&self, sink: Arc<dyn EventSink>) {
        self.shared.hub.set(Some(sink));
    }

    /// Detach: events go to retention only; output keeps being read.
    pub fn detach(&self) {
        self.shared.hub.set(None);
    }

    /// Terminate every process with the default grace and wait until each is done: its
    /// group empty, its leader reaped and its output closed (bounded by an internal
    /// deadline). Idempotent.
    pub async fn shutdown(&self) {
        self.shut_down_processes().await;
    }

    /// `session/close`: [`Session::shutdown`], then wait until the last event of each
    /// process has been handed to the sink (pushed, or given up with a sink that was
    /// replaced meanwhile), so a response sent after it follows every event.
    pub async fn close(&self) {
        for p in self.shut_down_processes().await {
            p.wait_emitted().await;
        }
    }

    /// The body of [`Session::shutdown`]; returns every process it waited for.
    async fn shut_down_processes(&self) -> Vec<Arc<Process>> {
        let (procs, mut starting) = {
            let mut reg = lock(&self.shared.registry);
            reg.shut_down = true;
            let (mut procs, starting) = self.snapshot(&reg);
            procs.extend(Self::lingering(&reg));
            (procs, starting)
        };
        let grace = Duration::from_millis(DEFAULT_GRACE_MS);
        for p in &procs {
            if !p.is_done() {
                p.terminate_for_cleanup(grace);
            }
        }
        let deadline = tokio::time::Instant::now() + grace + ABANDON_AFTER + Duration::from_secs(3);
        // A start that reserved its id before the flag was set terminates its own child
        // right after spawning it (see `start`); wait for it to show up, then wait for it.
        let mut all = procs;
        while starting && tokio::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
            let (now, still) = self.snapshot(&lock(&self.shared.registry));
            starting = still;
            for p in now {
                if !all.iter().any(|q| Arc::ptr_eq(q, &p)) {
                    all.push(p);
                }
            }
        }
        for p in &all {
            if tokio::time::timeout_at(deadline, p.wait_done())
                .await
                .is_err()
            {
                tracing::warn!(process_id = %p.id, pid = p.pid, "process not done by the shutdown deadline");
            }
        }
        // Best effort: let the exit be recorded too, so `list` shows it (a full sink may delay it).
        for p in &all {
            let _ = tokio::time::timeout_at(deadline, p.wait_exit_recorded()).await;
        }
        all
    }

    /// Released processes forgotten before their group emptied, still alive.
    fn lingering(reg: &Registry) -> Vec<Arc<Process>> {
        reg.lingering.iter().filter_map(Weak::upgrade).collect()
    }

    /// Every live process, and whether any start is still under way.
    fn snapshot(&self, reg: &Registry) -> (Vec<Arc<Process>>, bool) {
        let mut starting = false;
        let procs = reg
            .map
            .values()
            .filter_map(|s| match s {
                Slot::Live(p) => Some(p.clone()),
                Slot::Starting => {
                    starting = true;
                    None
                }
            })
            .collect();
        (procs, starting)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Dropping a session without shutdown must not leave children behind.
        let procs = {
            let reg = lock(&self.shared.registry);
            let (mut procs, _) = self.snapshot(&reg);
            procs.extend(Self::lingering(&reg));
            procs
        };
        for p in procs {
            if !p.is_done() {
                p.kill_now();
            }
            // Nobody can read it any more: its output leaves the server's retention now,
            // not when its last task lets go of it.
            p.forget_output();
        }
    }
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit (1000 processes need ~3000 fds).
pub fn raise_fd_limit() {
    sys::raise_fd_limit();
}
