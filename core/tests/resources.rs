//! What processes cost the server after they are done: no descriptors for closed
//! processes, and stdin queues that hold what they count. In its own test binary so
//! no other test's descriptors or allocations are counted.

mod common;

use std::time::Duration;

use common::*;
use exec_server_core::{Error, Session, SessionConfig};
use exec_server_protocol::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Bytes the allocator has handed out and not had back (every arena, and large blocks).
fn allocated_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_processes_hold_no_descriptors_and_stdin_costs_what_it_holds() {
    // Closed processes stay retained, but their pipes and pidfds are closed. (Retained
    // for an hour: on a busy machine 200 spawns can take longer than the default 30 s.)
    let s = Session::new(SessionConfig {
        retain_closed: Duration::from_secs(3600),
        ..SessionConfig::default()
    });
    let before = open_fds();
    for i in 0..200 {
        let id = format!("t{i}");
        let pid = start(&s, params(&id, &["true"])).await.pid;
        read_until_closed(&s, &id).await;
        eventually("the leader to be reaped", || proc_stat(pid).is_none()).await;
    }
    assert_eq!(s.list().processes.len(), 200);
    let after = open_fds();
    assert!(
        after <= before + 4,
        "200 closed processes hold {} more descriptors",
        after - before
    );
    s.shutdown().await;

    // A million 1-byte writes to a child that never reads: the queue holds a million
    // bytes, not a million allocations.
    const LIMIT: usize = 1024 * 1024;
    let s = Session::new(SessionConfig {
        max_pending_stdin_bytes: LIMIT,
        ..SessionConfig::default()
    });
    let mut p = params("w", &["sleep", "1000"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    let before = allocated_bytes();
    let one: Base64Bytes = "a".into();
    let mut accepted = 0usize;
    loop {
        match s.write(ProcessWriteParams {
            wait_written: false,
            process_id: "w".into(),
            chunk: one.clone(),
            write_id: None,
        }) {
            Ok(r) => {
                assert_eq!(r.status, WriteStatus::Accepted);
                accepted += 1;
            }
            Err(Error::LimitReached(_)) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(accepted <= 2 * LIMIT, "the stdin limit never came");
    }
    // The pipe took its buffer's worth inline; the queue holds exactly the limit.
    assert!(accepted >= LIMIT, "accepted {accepted}");
    let grown = allocated_bytes().saturating_sub(before);
    assert!(
        grown < 4 * LIMIT,
        "{accepted} queued bytes cost {grown} bytes of memory"
    );
    let r = s.terminate(ProcessTerminateParams {
        process_id: "w".into(),
        grace_ms: 0,
    });
    assert!(r.running);
    tokio::time::timeout(Duration::from_secs(30), s.shutdown())
        .await
        .unwrap();
}
