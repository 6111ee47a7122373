//! Retention across every process of every session (`--max-retained-bytes`, SPEC 7.3): the oldest events go first, from closed processes before running ones, reported as any eviction; forgetting a process gives its bytes back.

#![allow(clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::Duration;

use common::*;
use exec_server_core::{EVENT_OVERHEAD, RetentionPool, Session, SessionConfig};
use exec_server_protocol::*;

/// Every process of these tests prints exactly this many bytes, in one write.
const OUT: usize = 1000;
/// What one such event counts for in the pool.
const EVENT: usize = OUT + EVENT_OVERHEAD;

fn session_in(pool: &RetentionPool) -> std::sync::Arc<Session> {
    Session::new(SessionConfig {
        retention: pool.clone(),
        ..SessionConfig::default()
    })
}

/// Prints OUT bytes in one write and exits.
fn prints(id: &str) -> ProcessStartParams {
    params(id, &["head", "-c", &OUT.to_string(), "/dev/zero"])
}

/// Prints OUT bytes in one write and keeps running.
fn prints_and_runs(id: &str) -> ProcessStartParams {
    sh(id, &format!("head -c {OUT} /dev/zero; exec sleep 600"))
}

/// Starts `p` and waits until its output was read (and, when `closes`, its close).
async fn run(s: &Session, p: ProcessStartParams, closes: bool) {
    let id = p.process_id.clone();
    start(s, p).await;
    let (chunks, _) = read_until(s, &id, 0, |r, chunks| {
        chunks.iter().map(|c| c.chunk.len()).sum::<usize>() == OUT && (r.closed || !closes)
    })
    .await;
    assert_eq!(chunks.len(), 1, "{id} printed in one chunk");
}

/// What a read from the start says: (bytes retained, truncated, evictedBytes).
async fn kept(s: &Session, id: &str) -> (usize, bool, u64) {
    let r = s.read(read_params(id, 0, 0)).await.expect("read");
    let bytes = r.chunks.iter().map(|c| c.chunk.len()).sum();
    (bytes, r.truncated, r.evicted_bytes)
}

const INTACT: (usize, bool, u64) = (OUT, false, 0);
const EVICTED: (usize, bool, u64) = (0, true, OUT as u64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_output_of_closed_processes_goes_first_then_of_running_ones() {
    // Room for three events, shared by two sessions.
    let pool = RetentionPool::new(3 * EVENT);
    let (a, b) = (session_in(&pool), session_in(&pool));

    run(&a, prints("old"), true).await;
    run(&b, prints_and_runs("run"), false).await;
    run(&a, prints("new"), true).await;
    assert_eq!(pool.retained_bytes(), 3 * EVENT);
    for (s, id) in [(&a, "old"), (&b, "run"), (&a, "new")] {
        assert_eq!(kept(s, id).await, INTACT, "{id}");
    }

    // A fourth event: the oldest of a closed process goes.
    run(&b, prints("last"), true).await;
    assert_eq!(kept(&a, "old").await, EVICTED);
    assert_eq!(pool.retained_bytes(), 3 * EVENT);

    // A fifth: `run` holds the oldest event, but it is running; `new` is closed.
    run(&b, prints("more"), true).await;
    assert_eq!(kept(&a, "new").await, EVICTED);
    assert_eq!(kept(&b, "run").await, INTACT);
    assert_eq!(kept(&b, "last").await, INTACT);
    assert_eq!(kept(&b, "more").await, INTACT);

    // Two more running processes evict the remaining closed ones, oldest first.
    run(&a, prints_and_runs("run2"), false).await;
    assert_eq!(kept(&b, "last").await, EVICTED);
    assert_eq!(kept(&b, "more").await, INTACT);
    run(&a, prints_and_runs("run3"), false).await;
    assert_eq!(kept(&b, "more").await, EVICTED);
    assert_eq!(kept(&b, "run").await, INTACT);

    // No closed process retains anything: the oldest running one goes.
    run(&b, prints_and_runs("run4"), false).await;
    assert_eq!(kept(&b, "run").await, EVICTED);
    for (s, id) in [(&a, "run2"), (&a, "run3"), (&b, "run4")] {
        assert_eq!(kept(s, id).await, INTACT, "{id}");
    }
    assert_eq!(pool.retained_bytes(), 3 * EVENT);

    // A cursor past the evicted event has lost nothing; the counter stays.
    let r = b.read(read_params("run", 1, 0)).await.expect("read");
    assert_eq!((r.truncated, r.evicted_bytes), (false, OUT as u64));

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_and_ended_sessions_give_their_bytes_back() {
    let pool = RetentionPool::new(64 * EVENT);
    let s = Session::new(SessionConfig {
        retention: pool.clone(),
        retain_closed: Duration::ZERO,
        ..SessionConfig::default()
    });
    start(&s, prints("gone")).await;
    // Forgotten once closed: its id becomes unknown and its bytes leave the pool.
    let forgotten = async {
        loop {
            if s.read(read_params("gone", 0, 0)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(DEADLINE, forgotten)
        .await
        .expect("forgotten within the deadline");
    assert_eq!(pool.retained_bytes(), 0);

    let other = session_in(&pool);
    run(&other, prints_and_runs("kept"), false).await;
    assert_eq!(pool.retained_bytes(), EVENT);
    other.shutdown().await;
    drop(other);
    assert_eq!(pool.retained_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_events_count_their_bookkeeping() {
    // Room for 16 one-byte events, not for 16 × (1 + overhead) bytes of them.
    let s = Session::new(SessionConfig {
        retain_bytes: 16 * (1 + EVENT_OVERHEAD),
        ..SessionConfig::default()
    });
    let mut p = params("cat", &["cat"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    // One byte at a time, each echoed before the next: 64 one-byte events.
    for seq in 1..=64u64 {
        let written = s
            .write(ProcessWriteParams {
                process_id: "cat".into(),
                chunk: Base64Bytes::from("x"),
                write_id: None,
                wait_written: false,
            })
            .expect("write");
        assert_eq!(written.status, WriteStatus::Accepted);
        read_until(&s, "cat", seq - 1, |r, _| r.next_seq > seq).await;
    }
    let r = s.read(read_params("cat", 0, 0)).await.expect("read");
    assert_eq!(r.next_seq, 65, "every byte was one event");
    let seqs: Vec<u64> = r.chunks.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (49..=64).collect::<Vec<_>>());
    assert_eq!((r.truncated, r.evicted_bytes), (true, 48));
    s.shutdown().await;
}
