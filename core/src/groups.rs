//! Waiting for a process group (and session) to have no live member left, so its leader
//! can be reaped without ever signalling a group id that could have been reused.
//!
//! Linux keeps a pid number reserved while any process still uses it as its pid,
//! process group id or session id. A process's leader is therefore kept as a zombie after
//! its exit (its status read with `WNOWAIT`) until no live process is left in its group or
//! session; until then every signal to the group is safe. There is no kernel event for
//! "group empty", so one watcher per session scans `/proc` for every id it waits on at
//! once: at once when asked, then with a backoff (10 ms doubling to 1 s) while some group
//! still has members. The scan reads `/proc`, so it runs on the blocking pool; it runs
//! once per leader's exit, and again only while some leader has exited with members left,
//! which for most commands is never.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::lock::lock;
use crate::{blocking, reaper, sys};

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Pending {
    waiters: Vec<(i32, oneshot::Sender<()>)>,
    running: bool,
}

#[derive(Default)]
struct Inner {
    pending: Mutex<Pending>,
    poke: Notify,
}

/// Waits for groups to empty; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct GroupWatch {
    inner: Arc<Inner>,
}

impl GroupWatch {
    pub(crate) fn new() -> Self {
        GroupWatch::default()
    }

    /// Resolves once no live process has `id` as its process group or session id. Call it
    /// only after the process `id` itself has exited (a zombie does not count).
    pub(crate) async fn wait_empty(&self, id: i32) {
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.inner.pending);
            pending.waiters.push((id, tx));
            if !pending.running {
                pending.running = true;
                tokio::spawn(run(self.inner.clone()));
            }
        }
        self.poke();
        // The watcher resolves every waiter before it stops; a dropped sender means the
        // runtime is going away, and then there is nothing left to wait for either.
        let _ = rx.await;
    }

    /// Something was just signalled: look again soon.
    pub(crate) fn poke(&self) {
        self.inner.poke.notify_one();
    }
}

async fn run(inner: Arc<Inner>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let ids: Vec<i32> = {
            let mut pending = lock(&inner.pending);
            pending.waiters.retain(|(_, tx)| !tx.is_closed());
            if pending.waiters.is_empty() {
                pending.running = false;
                return;
            }
            pending.waiters.iter().map(|(id, _)| *id).collect()
        };
        // Reading /proc is blocking work: on the blocking pool, never a runtime worker.
        let scan = blocking::walk(move || {
            #[cfg(test)]
            crate::hold::at("group scan");
            if reaper::is_subreaper() {
                reaper::live_groups_among_descendants(&ids).or_else(|_| sys::live_groups(&ids))
            } else {
                sys::live_groups(&ids)
            }
        })
        .await
        .unwrap_or_else(|| Err(std::io::Error::other("the /proc scan failed")));
        let live = match scan {
            Ok(live) => live,
            Err(e) => {
                // Without /proc nothing can be known: release every waiter (the leader
                // is then reaped at once, as a plain wait would).
                tracing::warn!("cannot scan /proc for process groups: {e}");
                Vec::new()
            }
        };
        {
            let mut pending = lock(&inner.pending);
            let waiters = std::mem::take(&mut pending.waiters);
            for (id, tx) in waiters {
                if live.contains(&id) {
                    pending.waiters.push((id, tx));
                } else {
                    let _ = tx.send(());
                }
            }
            if pending.waiters.is_empty() {
                pending.running = false;
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(MAX_BACKOFF),
            () = inner.poke.notified() => backoff = FIRST_BACKOFF,
        }
    }
}
