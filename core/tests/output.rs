//! Output of a process: stream separation, seq order, exit and close, long polls, retention, backpressure, detach and reattach.

mod common;

use std::time::Duration;

use common::*;
use exec_server_core::Event;
use exec_server_protocol::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_keep_streams_apart_and_sequence_every_event() {
    let s = session();
    let (sink, mut rx) = channel_sink(64);
    s.attach(sink);
    start(&s, sh("p", "echo a; echo b >&2; exit 7")).await;
    let events = events_until_closed(&mut rx, "p").await;
    assert_eq!(events.len(), 4, "{events:?}");
    let seqs: Vec<u64> = events.iter().map(Event::seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    // stdout and stderr are separate pipes: their relative order may vary.
    let mut outputs = events[..2].to_vec();
    outputs.sort_by_key(|e| match e {
        Event::Output(o) => o.stream == Stream::Stderr,
        _ => true,
    });
    let (out_seq, err_seq) = (outputs[0].seq(), outputs[1].seq());
    assert_eq!(
        outputs,
        [
            output("p", out_seq, Stream::Stdout, "a\n"),
            output("p", err_seq, Stream::Stderr, "b\n")
        ]
    );
    assert_eq!(events[2], exited("p", 3, 7, None));
    assert_eq!(events[3], closed("p", 4));

    let r = s.read(read_params("p", 0, 0)).await.unwrap();
    let mut chunks = vec![
        OutputChunk {
            seq: out_seq,
            stream: Stream::Stdout,
            chunk: "a\n".into(),
        },
        OutputChunk {
            seq: err_seq,
            stream: Stream::Stderr,
            chunk: "b\n".into(),
        },
    ];
    chunks.sort_by_key(|c| c.seq);
    assert_eq!(
        r,
        ProcessReadResult {
            chunks,
            next_seq: 5,
            exited: true,
            exit_code: Some(7),
            signal: None,
            closed: true,
            timed_out: false,
            truncated: false,
            evicted_bytes: 0,
            failure: None,
        }
    );
    let info = s.list().processes;
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].next_seq, 5);
    assert!(info[0].closed && info[0].exited && !info[0].tty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_merges_stdout_and_stderr_into_pty() {
    let s = session();
    let mut p = sh("t", "echo a; echo b >&2");
    p.tty = true;
    start(&s, p).await;
    let (chunks, last) = read_until_closed(&s, "t").await;
    assert!(chunks.iter().all(|c| c.stream == Stream::Pty), "{chunks:?}");
    assert_eq!(concat(&chunks, Stream::Pty), "a\r\nb\r\n");
    assert_eq!((last.exit_code, last.signal), (Some(0), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchild_output_comes_after_exited_and_before_closed() {
    let dir = std::env::temp_dir().join(format!("core-test-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let fifo = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let s = session();
    let (sink, mut rx) = channel_sink(64);
    s.attach(sink);
    // The grandchild keeps stdout open and writes only once the test opens the fifo.
    let script = "(read x < \"$0\"; echo \"late $x\") & exit 3";
    start(
        &s,
        params("g", &["sh", "-c", script, dir.to_str().unwrap()]),
    )
    .await;
    assert_eq!(recv(&mut rx).await, exited("g", 1, 3, None));

    // A cursor past the exit waits for the late output instead of spinning.
    let pending = {
        let s = s.clone();
        tokio::spawn(async move { s.read(read_params("g", 1, 60_000)).await })
    };
    let path = dir.clone();
    tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || std::fs::write(path, "go\n")),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let events = events_until_closed(&mut rx, "g").await;
    assert_eq!(
        events,
        [output("g", 2, Stream::Stdout, "late go\n"), closed("g", 3)]
    );
    let r = tokio::time::timeout(DEADLINE, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.chunks[0].chunk.as_bytes(), b"late go\n");
    assert_eq!(r.chunks[0].seq, 2);
    let _ = std::fs::remove_file(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_when_output_arrives() {
    let s = session();
    let mut p = params("c", &["cat"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    let mut pending = Box::pin(s.read(read_params("c", 0, 300_000)));
    // cat prints nothing before it is written to: polled once, the long poll has
    // subscribed to the process's events and parked.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(pending.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    // Output that arrives after it parked wakes it.
    assert_eq!(write(&s, "c", "x", None), WriteStatus::Accepted);
    let r = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("long poll returned on output")
        .unwrap();
    assert_eq!(
        r.chunks,
        [OutputChunk {
            seq: 1,
            stream: Stream::Stdout,
            chunk: "x".into()
        }]
    );
    assert_eq!(r.next_seq, 2);
    assert!(!r.exited);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_cuts_whole_chunks_and_sets_next_seq() {
    let s = session();
    let mut p = params("m", &["cat"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    // One echoed chunk per write: wait for each before the next.
    for (i, piece) in ["1111", "22222", "333"].iter().enumerate() {
        assert_eq!(write(&s, "m", piece, None), WriteStatus::Accepted);
        read_until(&s, "m", i as u64, |r, _| r.next_seq > i as u64 + 1).await;
    }
    let read = |after_seq, max_bytes| {
        let s = s.clone();
        async move {
            s.read(ProcessReadParams {
                process_id: "m".into(),
                after_seq,
                max_bytes,
                wait_ms: 0,
            })
            .await
            .unwrap()
        }
    };
    let seqs = |r: &ProcessReadResult| r.chunks.iter().map(|c| c.seq).collect::<Vec<_>>();
    let r = read(0, Some(9)).await;
    assert_eq!((seqs(&r), r.next_seq), (vec![1, 2], 3));
    let r = read(0, Some(8)).await;
    assert_eq!((seqs(&r), r.next_seq), (vec![1], 2));
    // At least one chunk even when it alone exceeds maxBytes; never split.
    let r = read(0, Some(1)).await;
    assert_eq!((seqs(&r), r.next_seq), (vec![1], 2));
    assert_eq!(r.chunks[0].chunk.as_bytes(), b"1111");
    let r = read(1, Some(100)).await;
    assert_eq!((seqs(&r), r.next_seq), (vec![2, 3], 4));
    let r = read(3, None).await;
    assert_eq!((seqs(&r), r.next_seq, r.exited), (vec![], 4, false));

    assert_eq!(close_stdin(&s, "m"), WriteStatus::Accepted);
    let (_, last) = read_until(&s, "m", 3, |r, _| r.closed).await;
    // nextSeq moves past exit and close.
    assert_eq!((last.next_seq, last.exit_code), (6, Some(0)));
    let r = read(0, Some(5)).await;
    assert_eq!((seqs(&r), r.next_seq), (vec![1], 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_evicts_oldest_whole_chunks_and_reports_it() {
    let s = session();
    let (sink, mut rx) = channel_sink(16);
    s.attach(sink);
    const TOTAL: usize = 3 * 1024 * 1024;
    start(
        &s,
        params("r", &["head", "-c", &TOTAL.to_string(), "/dev/zero"]),
    )
    .await;
    let events = events_until_closed(&mut rx, "r").await;
    let pushed: Vec<OutputChunk> = events
        .iter()
        .filter_map(|e| match e {
            Event::Output(o) => Some(OutputChunk {
                seq: o.seq,
                stream: o.stream,
                chunk: o.chunk.clone(),
            }),
            _ => None,
        })
        .collect();
    assert_eq!(pushed.iter().map(|c| c.chunk.len()).sum::<usize>(), TOTAL);
    assert!(pushed.iter().all(|c| c.chunk.len() <= 64 * 1024));

    let r = s.read(read_params("r", 0, 0)).await.unwrap();
    assert!(r.truncated);
    let retained: usize = r.chunks.iter().map(|c| c.chunk.len()).sum();
    assert!(retained <= 1024 * 1024, "{retained}");
    assert_eq!(r.evicted_bytes as usize + retained, TOTAL);
    // Retention holds exactly the newest pushed chunks, whole.
    assert_eq!(r.chunks[..], pushed[pushed.len() - r.chunks.len()..]);
    let first_kept = r.chunks[0].seq;
    // A cursor at the last evicted event has lost nothing.
    let r2 = s.read(read_params("r", first_kept - 1, 0)).await.unwrap();
    assert!(!r2.truncated);
    assert_eq!(r2.chunks, r.chunks);
    assert_eq!(r2.evicted_bytes, r.evicted_bytes);
    let r3 = s.read(read_params("r", first_kept - 2, 0)).await.unwrap();
    assert!(r3.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sink_stops_reading_and_loses_nothing() {
    let s = session();
    // Room for one event: the producer soon blocks on its pipe.
    let (sink, mut rx) = channel_sink(1);
    s.attach(sink);
    const TOTAL: usize = 4 * 1024 * 1024;
    let started = start(
        &s,
        params("bp", &["head", "-c", &TOTAL.to_string(), "/dev/zero"]),
    )
    .await;
    // Nobody consumes: the child ends up blocked writing to its full pipe.
    let wchan = format!("/proc/{}/wchan", started.pid);
    // (Where the kernel hides wchan it always reads "0": then a 2 s window has to do.)
    let since = std::time::Instant::now();
    let mut wchan_works = false;
    eventually("the child to block on its pipe", || {
        let w = std::fs::read_to_string(&wchan).unwrap_or_default();
        wchan_works |= !w.is_empty() && w != "0";
        w.ends_with("pipe_write") || (!wchan_works && since.elapsed() > Duration::from_secs(2))
    })
    .await;
    // Reading stopped: one event in the channel, one waiting to be sent.
    let info = s.list().processes;
    assert!(info[0].next_seq <= 3, "{info:?}");
    assert!(!info[0].exited);

    let events = events_until_closed(&mut rx, "bp").await;
    let seqs: Vec<u64> = events.iter().map(Event::seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "every event once, in order, no gaps");
    let bytes: usize = events
        .iter()
        .map(|e| match e {
            Event::Output(o) => o.chunk.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(bytes, TOTAL);
    let n = events.len();
    assert_eq!(events[n - 2], exited("bp", n as u64 - 1, 0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_events_are_retained_and_reattach_resumes_with_the_next_event() {
    let s = session();
    let (sink_a, mut rx_a) = channel_sink(16);
    s.attach(sink_a);
    let mut p = params("d", &["cat"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    write(&s, "d", "1", None);
    assert_eq!(recv(&mut rx_a).await, output("d", 1, Stream::Stdout, "1"));

    s.detach();
    write(&s, "d", "2", None);
    let (chunks, _) = read_until(&s, "d", 1, |r, _| r.next_seq > 2).await;
    assert_eq!(
        chunks,
        [OutputChunk {
            seq: 2,
            stream: Stream::Stdout,
            chunk: "2".into()
        }]
    );

    let (sink_b, mut rx_b) = channel_sink(16);
    s.attach(sink_b);
    write(&s, "d", "3", None);
    assert_eq!(recv(&mut rx_b).await, output("d", 3, Stream::Stdout, "3"));
    close_stdin(&s, "d");
    assert_eq!(
        events_until_closed(&mut rx_b, "d").await,
        [exited("d", 4, 0, None), closed("d", 5)]
    );
    // The first sink saw nothing after the detach.
    assert!(rx_a.try_recv().is_err());

    // A sink whose connection is gone: core keeps going with retention only.
    let (sink_c, rx_c) = channel_sink(1);
    drop(rx_c);
    s.attach(sink_c);
    start(&s, sh("gone", "echo still")).await;
    let (chunks, _) = read_until_closed(&s, "gone").await;
    assert_eq!(concat(&chunks, Stream::Stdout), "still\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_pushed_while_the_start_result_is_held() {
    let s = session();
    let (sink, mut rx) = channel_sink(16);
    s.attach(sink);
    let started = s.start(sh("h", "echo hi")).await.unwrap();
    assert_eq!(started.result.process_id, "h");
    // The child is certainly done (reaped, or a zombie) ...
    let pid = started.result.pid;
    eventually("the child to finish", || !alive(pid)).await;
    // ... yet nothing was read, retained or pushed while the gate is held.
    let before = rx.try_recv();
    assert!(before.is_err(), "{before:?}");
    let listed = s.list().processes;
    assert_eq!((listed[0].next_seq, listed[0].exited), (1, false));
    drop(started);
    assert_eq!(
        events_until_closed(&mut rx, "h").await,
        [
            output("h", 1, Stream::Stdout, "hi\n"),
            exited("h", 2, 0, None),
            closed("h", 3)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_releases_a_process_blocked_on_a_full_sink() {
    let s = session();
    // A sink nobody drains: the producer blocks.
    let (sink, rx) = channel_sink(1);
    s.attach(sink);
    const TOTAL: usize = 1024 * 1024;
    start(
        &s,
        params("stuck", &["head", "-c", &TOTAL.to_string(), "/dev/zero"]),
    )
    .await;
    read_until(&s, "stuck", 0, |r, _| r.next_seq >= 3).await;
    s.detach();
    // Reading resumes with retention only, and the process runs to its close.
    let (_, last) = read_until(&s, "stuck", 0, |r, _| r.closed).await;
    assert_eq!(last.exit_code, Some(0));
    let all = s.read(read_params("stuck", 0, 0)).await.unwrap();
    let bytes: usize = all.chunks.iter().map(|c| c.chunk.len()).sum();
    assert_eq!(bytes + all.evicted_bytes as usize, TOTAL);
    drop(rx);
}
