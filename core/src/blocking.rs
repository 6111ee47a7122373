//! Core's blocking work, never on a runtime worker. Spawning a child runs on a few threads
//! of its own: at most [`MAX_THREADS`], each started when a spawn comes and no thread is
//! free, and kept, so a burst of starts queues here instead of growing tokio's blocking
//! pool (and the server's thread count) by one thread per start in flight, threads that
//! would linger for seconds after the burst. Walks of `/proc` run on tokio's blocking
//! pool, at most [`MAX_WALKS`] at a time, so they never queue in front of a spawn.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use crate::lock::lock;

/// How many threads run core's blocking work, server-wide.
pub(crate) const MAX_THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// The job queue and its workers: up to [`MAX_THREADS`], each started when a job comes
/// and no worker is idle, and kept.
struct Pool {
    tx: Mutex<Sender<Job>>,
    rx: Arc<Mutex<Receiver<Job>>>,
    /// Workers started.
    started: AtomicUsize,
    /// Workers waiting for a job.
    idle: Arc<AtomicUsize>,
}

static POOL: OnceLock<Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        Pool {
            tx: Mutex::new(tx),
            rx: Arc::new(Mutex::new(rx)),
            started: AtomicUsize::new(0),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    })
}

impl Pool {
    /// Queues `job`, starting a worker when none is idle (up to [`MAX_THREADS`]); `Err`
    /// gives the job back when no worker runs at all.
    fn submit(&self, job: Job) -> Result<(), Job> {
        if self.idle.load(Ordering::SeqCst) == 0 {
            self.grow();
        }
        if self.started.load(Ordering::SeqCst) == 0 {
            return Err(job);
        }
        lock(&self.tx).send(job).map_err(|e| e.0)
    }

    fn grow(&self) {
        let n = self.started.load(Ordering::SeqCst);
        if n >= MAX_THREADS
            || self
                .started
                .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        let rx = self.rx.clone();
        let idle = self.idle.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("exec-server-blocking-{n}"))
            .spawn(move || work(&rx, &idle));
        if let Err(e) = spawned {
            self.started.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot start a thread for blocking work: {e}");
        }
    }
}

/// One worker: runs jobs until the pool is gone.
fn work(rx: &Mutex<Receiver<Job>>, idle: &AtomicUsize) {
    loop {
        idle.fetch_add(1, Ordering::SeqCst);
        let job = lock(rx).recv();
        idle.fetch_sub(1, Ordering::SeqCst);
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Runs `f` on one of the spawn threads, inside the caller's runtime (so it may register
/// descriptors with the reactor); `None` if it panicked. If the caller has stopped
/// waiting (its future was dropped) by the time `f` returns, `unclaimed` gets the result
/// on that thread; `f` is not run at all when nobody waits any more before it starts.
pub(crate) async fn run_or<T, F, U>(f: F, unclaimed: U) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
    U: FnOnce(T) + Send + 'static,
{
    let handle = tokio::runtime::Handle::try_current().ok();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        if tx.is_closed() {
            return;
        }
        let _runtime = handle.as_ref().map(|h| h.enter());
        let out = std::panic::catch_unwind(AssertUnwindSafe(f)).ok();
        if let Err(Some(value)) = tx.send(out) {
            unclaimed(value);
        }
    });
    if let Err(job) = pool().submit(job) {
        drop(tokio::task::spawn_blocking(job));
    }
    rx.await.ok().flatten()
}

/// How many `/proc` walks run at once, server-wide.
const MAX_WALKS: usize = 2;

static WALKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_WALKS);

/// Runs a `/proc` walk on tokio's blocking pool, at most [`MAX_WALKS`] at a time: walks
/// never queue in front of a spawn (they follow every exit), and at most that many pool
/// threads are ever busy with them. `None` if it panicked.
pub(crate) async fn walk<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    // The semaphore is never closed.
    let _slot = WALKS.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

/// Runs `f` as [`walk`] does, without waiting for it; right here outside a runtime (a
/// session dropped after its runtime).
pub(crate) fn detach_walk<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn(walk(f))),
        Err(_) => f(),
    }
}
