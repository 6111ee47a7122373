//! Scale test: 1000 concurrent processes in one session, each having printed once, with a
//! bounded thread count and no per-process read buffer. In its own test binary so no other
//! test's threads or allocations are counted.

mod common;

use common::*;
use exec_server_core::{Session, SessionConfig, raise_fd_limit};
use exec_server_protocol::*;

const N: usize = 1000;
const MAX_THREADS: usize = 16;

/// Bytes the allocator has handed out and not had back (every arena, and large blocks).
fn allocated_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sleeps_start_list_and_terminate_with_few_threads() {
    raise_fd_limit();
    let s = Session::new(SessionConfig::default());
    let argv = ["sh", "-c", "echo up; exec sleep 1000"];
    let before = allocated_bytes();
    let mut pids = Vec::with_capacity(N);
    for i in 0..N {
        let id = format!("sleep-{i}");
        let r = start(&s, params(&id, &argv)).await;
        read_until(&s, &id, 0, |r, _| r.next_seq > 1).await;
        pids.push(r.pid);
        if i % 100 == 0 {
            assert!(thread_count() < MAX_THREADS, "threads: {}", thread_count());
        }
    }
    assert!(thread_count() < MAX_THREADS, "threads: {}", thread_count());
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_default()
        .to_string();
    let allocated = allocated_bytes().saturating_sub(before);
    eprintln!(
        "{N} live processes that printed once: {} threads, {fds} fds, {rss}, {} KiB allocated",
        thread_count(),
        allocated / 1024
    );
    // Retained output, events and bookkeeping, but no 64 KiB read buffer per stream
    // (which alone would be 128 MiB).
    assert!(
        allocated < 32 * 1024 * 1024,
        "{} KiB allocated for {N} processes",
        allocated / 1024
    );

    let listed = s.list().processes;
    assert_eq!(listed.len(), N);
    for (i, info) in listed.iter().enumerate() {
        assert_eq!(
            info,
            &ProcessInfo {
                process_id: format!("sleep-{i}"),
                pid: pids[i],
                argv: argv.iter().map(|a| a.to_string()).collect(),
                tty: false,
                exited: false,
                exit_code: None,
                signal: None,
                closed: false,
                timed_out: false,
                next_seq: 2,
            }
        );
    }

    for i in 0..N {
        let r = s.terminate(ProcessTerminateParams {
            process_id: format!("sleep-{i}"),
            grace_ms: 1000,
        });
        assert!(r.running, "sleep-{i}");
    }
    for i in 0..N {
        let (_, last) = read_until_closed(&s, &format!("sleep-{i}")).await;
        assert_eq!(
            (last.exit_code, last.signal.as_deref(), last.next_seq),
            (Some(143), Some("SIGTERM"), 4)
        );
        if i % 100 == 0 {
            assert!(thread_count() < MAX_THREADS, "threads: {}", thread_count());
        }
    }
    assert!(pids.iter().all(|p| !alive(*p)));
    assert!(s.list().processes.iter().all(|p| p.closed));
    tokio::time::timeout(DEADLINE, s.shutdown()).await.unwrap();
}
