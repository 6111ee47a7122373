//! Test-only holds: a test makes one named point of blocking work wait until it lets go,
//! to prove that the work runs off the runtime's worker threads (a `current_thread` runtime
//! keeps running other tasks meanwhile).

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use crate::lock::lock;

/// An armed point: who is told when it is reached, and what it waits for.
type Armed = (String, Sender<()>, Receiver<()>);

static HOLDS: Mutex<Vec<Armed>> = Mutex::new(Vec::new());

/// A test's side of an armed point.
pub(crate) struct Hold {
    /// Send (or drop) to let the held work go on.
    pub(crate) release: Sender<()>,
    /// Receives once the work has reached the point.
    pub(crate) reached: Receiver<()>,
}

/// The next pass through `point` waits until the hold is released.
pub(crate) fn arm(point: &str) -> Hold {
    let (release, wait) = channel();
    let (tell, reached) = channel();
    lock(&HOLDS).push((point.to_owned(), tell, wait));
    Hold { release, reached }
}

/// Waits here if a test armed `point`.
pub(crate) fn at(point: &str) {
    let held = {
        let mut holds = lock(&HOLDS);
        let index = holds.iter().position(|(p, _, _)| p == point);
        index.map(|i| holds.remove(i))
    };
    if let Some((_, tell, wait)) = held {
        let _ = tell.send(());
        let _ = wait.recv();
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
        let release = arm(point).release;
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
            lock(&HOLDS).iter().all(|(p, _, _)| p != point),
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

    /// A start whose future is dropped while its child is being spawned leaves no child
    /// behind (killed and reaped) and releases its id.
    #[tokio::test(flavor = "current_thread")]
    async fn a_start_dropped_during_its_spawn_leaves_no_child() {
        let s = Session::new(SessionConfig::default());
        let marker = format!("1000.{}9", std::process::id());
        let hold = arm("spawn abandoned");
        let task = tokio::spawn({
            let s = s.clone();
            let script = format!("exec sleep {marker}");
            async move { s.start(params("abandoned", &script)).await.map(drop) }
        });
        // The spawn has begun on a blocking thread when the hold is reached.
        let reached = tokio::task::spawn_blocking(move || hold.reached.recv().is_ok());
        assert!(reached.await.unwrap());
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        drop(hold.release);
        // Killed (and reaped) on that thread: wait (bounded) until no process has the marker.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !running_with(&marker).is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child still runs"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The id is free again.
        s.start(params("abandoned", "true")).await.unwrap();
        s.shutdown().await;
    }

    /// Processes whose argv holds `marker`.
    fn running_with(marker: &str) -> Vec<i32> {
        let mut out = Vec::new();
        crate::sys::for_each_process(|p| {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|a| a == marker.as_bytes()) {
                out.push(p.pid);
            }
        })
        .unwrap();
        out
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
