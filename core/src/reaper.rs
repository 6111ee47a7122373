//! Subreaper mode: the server adopts every orphan its children leave behind.
//!
//! With `PR_SET_CHILD_SUBREAPER` a process that outlives its parent (a shell's background
//! job, a double-forked daemon) is re-parented to the server instead of init. Two things
//! follow. Every live member of a process group the server started is then the server's
//! descendant, so "is this group empty yet?" is answered by walking the server's own
//! process tree (a few `/proc` files in the common case) instead of every process on the
//! machine. And adopted orphans are the server's children: when they die, the server
//! must reap them, which [`reap_orphans`] does on every SIGCHLD.
//!
//! Leaders (the processes `process/start` spawned) are reaped by their own `Process`
//! through their pidfd, at a time of its choosing (see `process/end.rs`), so the orphan
//! reaper must never touch them: every leader is registered before it can exit, under a
//! gate that the reaper takes exclusively while it reaps.

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use crate::lock::{lock, read_lock, write_lock};
use crate::sys;

static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Children that are not orphans: leaders still owned by a `Process` (and the guardian).
static OWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Held (shared) from before a clone until the new leader is registered; taken exclusively
/// by the orphan reaper, so it never reaps a leader it has not heard of yet.
static SPAWN_GATE: RwLock<()> = RwLock::new(());

/// The guardian's pid, which is a child of the server but no orphan.
static GUARDIAN: AtomicI32 = AtomicI32::new(0);

/// Make this process a child subreaper. Call it once at startup, in a server binary whose
/// children are all started by core (the orphan reaper reaps every other child), then run
/// [`reap_orphans`] in its runtime.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    SUBREAPER.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`become_subreaper`] succeeded.
pub(crate) fn is_subreaper() -> bool {
    SUBREAPER.load(Ordering::SeqCst)
}

pub(crate) fn set_guardian(pid: i32) {
    GUARDIAN.store(pid, Ordering::SeqCst);
}

/// Taken around a spawn, until [`own`] registered the new leader.
pub(crate) fn spawn_gate() -> RwLockReadGuard<'static, ()> {
    read_lock(&SPAWN_GATE)
}

/// `pid` is a leader owned by a `Process`: not an orphan.
pub(crate) fn own(pid: i32) {
    lock(&OWNED).get_or_insert_with(HashSet::new).insert(pid);
}

/// `pid` was reaped by its `Process`.
pub(crate) fn disown(pid: i32) {
    if let Some(set) = lock(&OWNED).as_mut() {
        set.remove(&pid);
    }
}

fn is_owned(pid: i32) -> bool {
    pid == GUARDIAN.load(Ordering::SeqCst)
        || lock(&OWNED).as_ref().is_some_and(|set| set.contains(&pid))
}

/// The ids among `ids` whose process group or session still has a live member among the
/// server's descendants. Owned leaders are not walked into: a leader heads a group of its
/// own and its descendants are its group's business (they become orphans, and so
/// visible here, once it exits).
pub(crate) fn live_groups_among_descendants(ids: &[i32]) -> io::Result<Vec<i32>> {
    let mut live = Vec::new();
    let mut queue: Vec<i32> = sys::children_of_self()?
        .into_iter()
        .filter(|pid| !is_owned(*pid))
        .collect();
    let mut seen = HashSet::new();
    while let Some(pid) = queue.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let Some(stat) = sys::proc_stat(pid) else {
            continue;
        };
        if !stat.zombie {
            for id in ids {
                if (stat.pgrp == *id || stat.session == *id) && !live.contains(id) {
                    live.push(*id);
                }
            }
        }
        queue.extend(sys::children_of(pid));
    }
    Ok(live)
}

/// Reap every adopted orphan that has died, now and on every SIGCHLD, until the runtime
/// ends. Never touches an owned leader. The `/proc` walk runs on the blocking pool.
pub async fn reap_orphans() {
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGCHLD, orphans will not be reaped: {e}");
            return;
        }
    };
    loop {
        crate::blocking::walk(reap_dead_orphans).await;
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

/// Finds dead orphans by walking `/proc` without any lock, then reaps them under the spawn
/// gate, checking again that each is not an owned leader: a leader cloned during the walk
/// is registered before the gate can be taken, so it is never reaped here; `waitpid` with
/// `WNOHANG` leaves a live child (or a pid that is no longer our child) alone.
fn reap_dead_orphans() {
    let Ok(children) = sys::children_of_self() else {
        return;
    };
    let dead: Vec<i32> = children
        .into_iter()
        .filter(|pid| !is_owned(*pid) && sys::proc_stat(*pid).is_some_and(|s| s.zombie))
        .collect();
    if dead.is_empty() {
        return;
    }
    let _gate = write_lock(&SPAWN_GATE);
    for pid in dead {
        if !is_owned(pid) {
            sys::reap_pid_nohang(pid);
        }
    }
}
