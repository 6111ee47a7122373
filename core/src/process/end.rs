//! How a process ends: its exit observed through a pidfd without reaping, the reap once
//! its group is empty, signals, terminate, and giving up on streams held open by a
//! process that escaped the group.
//!
//! The leader stays a zombie from its exit until no live process is left in its group
//! (or, under a tty, its session): the zombie keeps the id reserved, so every signal sent
//! to the group meanwhile reaches only its own members, including a member that ignores
//! SIGTERM and holds none of the process's pipes. Signals and the reap share one lock.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use exec_server_protocol::DEFAULT_GRACE_MS;
use tokio::sync::watch;

use super::{PidFd, Process, gate_open};
use crate::lock::lock;
use crate::sys::{self, ExitStatus};
use crate::{guardian, reaper};

/// After a cleanup's SIGKILL, how long output streams may stay open (held by a process
/// that left the group) before they are given up.
pub(crate) const ABANDON_AFTER: Duration = Duration::from_secs(2);

/// Wait for the leader's exit, record it, then reap it once its group is empty.
pub(super) async fn watch_exit(proc: Arc<Process>, pidfd: PidFd, gate: watch::Receiver<()>) {
    let status = wait_for_exit(&proc, &pidfd).await;
    exec_server_metrics::metrics().processes_running.dec();
    // Whether the deadline ended the leader: decided now, so a deadline that passes later
    // (members of the group still holding the output) marks `closed`, not this exit.
    let timed_out = {
        let mut ctl = lock(&proc.ctl);
        ctl.exited = true;
        lock(&proc.state).timed_out
    };
    if let Some(stdin) = &proc.stdin {
        stdin.shut();
    }
    tokio::spawn(release(proc.clone(), pidfd));
    gate_open(gate).await;
    proc.emit_exit(status, timed_out).await;
}

async fn wait_for_exit(proc: &Process, pidfd: &PidFd) -> ExitStatus {
    let failed = ExitStatus {
        code: -1,
        signal: None,
    };
    loop {
        let mut guard = match pidfd.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::warn!(process_id = %proc.id, "poll pidfd: {e}");
                return failed;
            }
        };
        match sys::peek_exit(guard.get_inner().as_fd()) {
            Ok(Some(status)) => return status,
            Ok(None) => guard.clear_ready(),
            Err(e) => {
                tracing::warn!(process_id = %proc.id, "wait: {e}");
                return failed;
            }
        }
    }
}

/// Reap the leader once no live process is left in its group or session.
async fn release(proc: Arc<Process>, pidfd: PidFd) {
    proc.groups.wait_empty(proc.pid as i32).await;
    {
        let mut ctl = lock(&proc.ctl);
        // Withdrawn before the reap: the guardian never holds an id that could be reused.
        guardian::withdraw(proc.pid as i32);
        if let Err(e) = sys::reap(pidfd.get_ref().as_fd()) {
            tracing::warn!(process_id = %proc.id, "reap: {e}");
        }
        reaper::disown(proc.pid as i32);
        ctl.reaped = true;
    }
    drop(pidfd);
    let forgotten = {
        let mut st = lock(&proc.state);
        st.released = true;
        proc.forget_when_done(&mut st)
    };
    if forgotten {
        proc.forget_output();
    }
    proc.changed.send_replace(());
}

/// `timeoutMs`: the limit holds until `closed`. Once the process has run `limit` and is not
/// closed, it is marked timed out and its group terminated as `process/terminate` with the
/// default grace does: the leader if it still runs, else the members of its group that
/// still hold its output (`sh -c 'sleep 600 & echo started'`). Output streams still open
/// [`ABANDON_AFTER`] after the SIGKILL are held outside the group and given up, as in a
/// cleanup, so a timed-out process always closes. A tokio timer, not a thread; it ends
/// with the process's close.
pub(super) async fn enforce_timeout(proc: Arc<Process>, limit: Duration) {
    tokio::select! {
        () = tokio::time::sleep(limit) => {}
        () = proc.wait_closed() => return,
    }
    let leader_running = {
        let ctl = lock(&proc.ctl);
        let mut st = lock(&proc.state);
        if st.closed {
            return;
        }
        st.timed_out = true;
        !ctl.exited
    };
    tracing::info!(
        process_id = %proc.id,
        limit_ms = limit.as_millis() as u64,
        leader_running,
        "timed out: terminating"
    );
    proc.changed.send_replace(());
    proc.terminate_for_cleanup(Duration::from_millis(DEFAULT_GRACE_MS));
}

impl Process {
    /// `process/signal`: to the process group, or the tty's foreground group. `false`
    /// once the leader has exited.
    pub(crate) fn signal(&self, signal: i32) -> bool {
        let ctl = lock(&self.ctl);
        if ctl.exited {
            return false;
        }
        let pgid = match &self.pty {
            Some(pty) => sys::tcgetpgrp(pty.fd.get_ref().as_fd()).unwrap_or(self.pid as i32),
            None => self.pid as i32,
        };
        sys::killpg(pgid, signal).is_ok()
    }

    /// Signal the whole group with each of `signals`, in order (and under a tty every
    /// process of its session: a shell's jobs are groups of their own) unless the leader
    /// was reaped. Returns whether the leader is still running.
    fn kill_group(self: &Arc<Self>, signals: &'static [i32]) -> bool {
        let ctl = lock(&self.ctl);
        if ctl.reaped {
            return false;
        }
        let pid = self.pid as i32;
        for signal in signals {
            let _ = sys::killpg(pid, *signal);
        }
        let running = !ctl.exited;
        drop(ctl);
        if self.pty.is_some() {
            // A shell under a tty moves its jobs to groups of their own within its session
            // (which the unreaped leader keeps reserved): signal every one of them too.
            // Finding them walks /proc: on the blocking pool, outside the lock.
            let proc = self.clone();
            crate::blocking::detach_walk(move || proc.signal_session_jobs(signals));
        }
        running
    }

    /// Signals every job of the tty session through pidfds, unless the leader has been
    /// reaped meanwhile (the session id may then belong to someone else). Blocking.
    fn signal_session_jobs(&self, signals: &[i32]) {
        let jobs = sys::session_jobs(self.pid as i32);
        if jobs.is_empty() {
            return;
        }
        let ctl = lock(&self.ctl);
        if ctl.reaped {
            return;
        }
        for (_, pidfd) in &jobs {
            for signal in signals {
                let _ = sys::pidfd_kill(pidfd.as_fd(), *signal);
            }
        }
        drop(ctl);
        self.groups.poke();
    }

    fn is_released(&self) -> bool {
        lock(&self.state).released
    }

    /// `process/terminate`: SIGTERM (and SIGCONT, for a stopped group) now, SIGKILL to the
    /// group after `grace` if any member is still alive (`0` = SIGKILL at once). Returns
    /// whether the leader was running. Answers at once; the rest runs in a task.
    pub(crate) fn terminate(self: &Arc<Self>, grace: Duration) -> bool {
        self.stop(grace, false)
    }

    /// Terminate for cleanup (shutdown, expiry): as [`Process::terminate`], and then output
    /// streams still open [`ABANDON_AFTER`] later (a process that left the group holds
    /// them) are given up, so nothing of the process outlives the cleanup.
    pub(crate) fn terminate_for_cleanup(self: &Arc<Self>, grace: Duration) {
        self.stop(grace, true);
    }

    fn stop(self: &Arc<Self>, grace: Duration, cleanup: bool) -> bool {
        let running = if grace.is_zero() {
            self.kill_group(&[libc::SIGKILL])
        } else {
            self.kill_group(&[libc::SIGTERM, libc::SIGCONT])
        };
        self.groups.poke();
        if self.is_done() {
            return running;
        }
        let proc = self.clone();
        tokio::spawn(async move {
            let mut rx = proc.subscribe();
            if !grace.is_zero() {
                let deadline = tokio::time::Instant::now() + grace;
                while !proc.is_released() {
                    if tokio::time::timeout_at(deadline, rx.changed())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                if !proc.is_released() {
                    proc.kill_group(&[libc::SIGKILL]);
                    proc.groups.poke();
                }
            }
            if !cleanup {
                return;
            }
            let deadline = tokio::time::Instant::now() + ABANDON_AFTER;
            while !proc.is_closed() {
                if tokio::time::timeout_at(deadline, rx.changed())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            if !proc.is_closed() {
                tracing::info!(
                    process_id = %proc.id,
                    "output still open after the kill (held outside the group): giving it up"
                );
                proc.abandon.send_replace(true);
                proc.abandon_streams().await;
            }
        });
        running
    }

    /// SIGKILL to the group now (a session dropped without shutdown).
    pub(crate) fn kill_now(self: &Arc<Self>) {
        self.kill_group(&[libc::SIGKILL]);
    }
}
