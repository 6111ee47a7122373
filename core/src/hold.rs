//! Test-only holds: a test makes one named point of blocking work wait until it lets go,
//! to prove that the work runs off the runtime's worker threads (a `current_thread` runtime
//! keeps running other tasks meanwhile).

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use crate::lock::lock;

static HOLDS: Mutex<Vec<(String, Receiver<()>)>> = Mutex::new(Vec::new());

/// The next pass through `point` waits until the returned sender sends (or is dropped).
pub(crate) fn arm(point: &str) -> Sender<()> {
    let (tx, rx) = channel();
    lock(&HOLDS).push((point.to_owned(), rx));
    tx
}

/// Waits here if a test armed `point`.
pub(crate) fn at(point: &str) {
    let held = {
        let mut holds = lock(&HOLDS);
        let index = holds.iter().position(|(p, _)| p == point);
        index.map(|i| holds.remove(i).1)
    };
    if let Some(rx) = held {
        let _ = rx.recv();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use exec_server_protocol::ProcessStartParams;

    use super::*;
    use crate::{Session, SessionConfig};

    fn params(id: &str, script: &str) -> ProcessStartParams {
        ProcessStartParams {
            merge_stderr: false,
            process_id: id.into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            cwd: "/".into(),
            env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
            inherit_env: false,
            tty: false,
            pipe_stdin: false,
            arg0: None,
            size: None,
            timeout_ms: None,
            user: None,
        }
    }

    /// Arms `point`, runs `work` on a one-thread runtime, and checks that the runtime ran
    /// another task while the work was held there. A watchdog lets go after 10 s so the
    /// test ends (and fails) when the work blocks the only worker.
    async fn runtime_runs_while_held<F>(point: &str, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let release = arm(point);
        let (progressed, progress) = channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let in_time = progress.recv_timeout(Duration::from_secs(10)).is_ok();
            let _ = release.send(());
            in_time
        });
        let task = tokio::spawn(work);
        // Let the work start: on a one-thread runtime it runs at this task's first yield,
        // and from there either holds the only thread or runs elsewhere.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let _ = progressed.send(());
        task.await.unwrap();
        assert!(
            watchdog.join().unwrap(),
            "the runtime ran nothing while {point} was held"
        );
        // The hold was reached (or the test proves nothing).
        assert!(
            lock(&HOLDS).iter().all(|(p, _)| p != point),
            "{point} never reached"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_spawn_runs_off_the_runtime_thread() {
        let s = Session::new(SessionConfig::default());
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        // (The hold names the process: no other test's spawn takes it.)
        runtime_runs_while_held("spawn held-spawn", async move {
            s.start(params("held-spawn", "true")).await.unwrap();
            flag.store(true, Ordering::SeqCst);
            s.shutdown().await;
        })
        .await;
        assert!(started.load(Ordering::SeqCst));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_group_scan_runs_off_the_runtime_thread() {
        let s = Session::new(SessionConfig::default());
        // Started before the hold is armed; its exit then makes the group watcher scan.
        s.start(params("p", "exit 0")).await.unwrap();
        runtime_runs_while_held("group scan", async move {
            s.shutdown().await;
        })
        .await;
    }
}
