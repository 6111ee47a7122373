//! Core's blocking work (spawning a child, walking `/proc`) on a few threads of its own,
//! never on a runtime worker. [`MAX_THREADS`] threads, started at the first use and kept:
//! a burst of starts queues here instead of growing tokio's blocking pool (and the
//! server's thread count) by one thread per start in flight, and those threads would
//! linger for seconds after the burst.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use crate::lock::lock;

/// How many threads run core's blocking work, server-wide.
pub(crate) const MAX_THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// Where jobs go; `None` when no thread could be started (then tokio's pool is used).
static POOL: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();

fn pool() -> Option<&'static Mutex<Sender<Job>>> {
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..MAX_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("exec-server-blocking-{i}"))
                .spawn(move || work(&rx));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!("cannot start a thread for blocking work: {e}"),
            }
        }
        (started > 0).then(|| Mutex::new(tx))
    })
    .as_ref()
}

/// One worker: runs jobs until the pool is gone.
fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = lock(rx).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Runs `f` on one of the blocking threads, inside the caller's runtime (so it may
/// register descriptors with the reactor); `None` if it panicked.
pub(crate) async fn run<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let Some(pool) = pool() else {
        return tokio::task::spawn_blocking(f).await.ok();
    };
    let handle = tokio::runtime::Handle::try_current().ok();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _runtime = handle.as_ref().map(|h| h.enter());
        let out = std::panic::catch_unwind(AssertUnwindSafe(f)).ok();
        let _ = tx.send(out);
    });
    lock(pool).send(job).ok()?;
    rx.await.ok().flatten()
}

/// Runs `f` as [`run`] does, without waiting for it; right here outside a runtime (a
/// session dropped after its runtime).
pub(crate) fn detach<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn(run(f))),
        Err(_) => f(),
    }
}
