//! Integration tests of a session's process lifecycle: streams, seq order, exit, close, stdin, signals, tty.

mod common;

use std::time::Duration;

use common::*;
use exec_server_core::{Error, Event, Session, SessionConfig};
use exec_server_protocol::*;

fn session() -> std::sync::Arc<Session> {
    Session::new(SessionConfig::default())
}

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
    let pending = {
        let s = s.clone();
        tokio::spawn(async move { s.read(read_params("c", 0, 300_000)).await })
    };
    // cat prints nothing before it is written to, so the poll cannot have returned.
    tokio::task::yield_now().await;
    assert!(!pending.is_finished());
    let w = s.write(ProcessWriteParams {
        process_id: "c".into(),
        chunk: "x".into(),
        write_id: None,
    });
    assert_eq!(w.unwrap().status, WriteStatus::Accepted);
    let r = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("long poll returned on output")
        .unwrap()
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

fn write(s: &Session, id: &str, bytes: &str, write_id: Option<&str>) -> WriteStatus {
    #[allow(clippy::unwrap_used)]
    s.write(ProcessWriteParams {
        process_id: id.into(),
        chunk: bytes.into(),
        write_id: write_id.map(str::to_string),
    })
    .unwrap()
    .status
}

fn close_stdin(s: &Session, id: &str) -> WriteStatus {
    s.close_stdin(ProcessCloseStdinParams {
        process_id: id.into(),
    })
    .status
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
async fn tty_cat_echoes_and_close_stdin_sends_eof() {
    let s = session();
    let mut p = params("tc", &["cat"]);
    p.tty = true;
    start(&s, p).await;
    assert_eq!(write(&s, "tc", "hello\n", None), WriteStatus::Accepted);
    // The terminal echoes the line, then cat prints it.
    read_until(&s, "tc", 0, |_, all| {
        concat(all, Stream::Pty) == "hello\r\nhello\r\n"
    })
    .await;
    assert_eq!(close_stdin(&s, "tc"), WriteStatus::Accepted);
    let (_, last) = read_until_closed(&s, "tc").await;
    assert_eq!((last.exit_code, last.signal.as_deref()), (Some(0), None));
    assert_eq!(write(&s, "tc", "more", None), WriteStatus::StdinClosed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_stdin_writes_in_order_dedupes_write_ids_and_closes() {
    let s = session();
    let mut p = params("w", &["cat"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    assert_eq!(write(&s, "w", "abc", Some("w1")), WriteStatus::Accepted);
    assert_eq!(write(&s, "w", "abc", Some("w1")), WriteStatus::Accepted);
    assert_eq!(write(&s, "w", "def", Some("w2")), WriteStatus::Accepted);
    assert_eq!(write(&s, "w", "ghi", None), WriteStatus::Accepted);
    assert_eq!(close_stdin(&s, "w"), WriteStatus::Accepted);
    assert_eq!(write(&s, "w", "late", None), WriteStatus::StdinClosed);
    assert_eq!(close_stdin(&s, "w"), WriteStatus::StdinClosed);
    // A retry of an accepted id still answers accepted, without writing.
    assert_eq!(write(&s, "w", "abc", Some("w1")), WriteStatus::Accepted);
    let (chunks, last) = read_until_closed(&s, "w").await;
    assert_eq!(concat(&chunks, Stream::Stdout), "abcdefghi");
    assert_eq!(last.exit_code, Some(0));

    // Without pipeStdin, stdin is /dev/null.
    let (sink, mut rx) = channel_sink(16);
    s.attach(sink);
    start(&s, params("n", &["cat"])).await;
    assert_eq!(write(&s, "n", "x", None), WriteStatus::StdinClosed);
    assert_eq!(close_stdin(&s, "n"), WriteStatus::StdinClosed);
    assert_eq!(
        events_until_closed(&mut rx, "n").await,
        [exited("n", 1, 0, None), closed("n", 2)]
    );
    assert_eq!(write(&s, "nope", "x", None), WriteStatus::UnknownProcess);
    assert_eq!(close_stdin(&s, "nope"), WriteStatus::UnknownProcess);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_stdin_is_bounded() {
    let s = Session::new(SessionConfig {
        max_pending_stdin_bytes: 8,
        ..SessionConfig::default()
    });
    // `sleep` never reads stdin, but a pipe takes 64 KiB, so only the limit refuses.
    let mut p = params("b", &["sleep", "1000"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    let big = s.write(ProcessWriteParams {
        process_id: "b".into(),
        chunk: "123456789".into(),
        write_id: None,
    });
    let err = big.unwrap_err();
    assert_eq!(err.code(), ErrorCode::LimitReached);
    assert!(err.to_string().contains("stdin"), "{err}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_end_processes_with_128_plus_n_and_their_name() {
    let s = session();
    for (i, (signal, n, name)) in [
        (Signal::Int, 2, "SIGINT"),
        (Signal::Term, 15, "SIGTERM"),
        (Signal::Kill, 9, "SIGKILL"),
    ]
    .into_iter()
    .enumerate()
    {
        for tty in [false, true] {
            let id = format!("s{i}{tty}");
            let mut p = params(&id, &["sleep", "1000"]);
            p.tty = tty;
            start(&s, p).await;
            let r = s.signal(ProcessSignalParams {
                process_id: id.clone(),
                signal,
            });
            assert!(r.delivered);
            let (_, last) = read_until_closed(&s, &id).await;
            assert_eq!(
                (last.exited, last.exit_code, last.signal.as_deref()),
                (true, Some(128 + n), Some(name)),
                "{id}"
            );
            let again = s.signal(ProcessSignalParams {
                process_id: id.clone(),
                signal,
            });
            assert!(!again.delivered);
        }
    }
    let unknown = s.signal(ProcessSignalParams {
        process_id: "nope".into(),
        signal: Signal::Term,
    });
    assert!(!unknown.delivered);

    // A crash is reported by name too.
    start(&s, sh("segv", "kill -SEGV $$")).await;
    let (_, last) = read_until_closed(&s, "segv").await;
    assert_eq!(
        (last.exit_code, last.signal.as_deref()),
        (Some(128 + 11), Some("SIGSEGV"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_stops_the_whole_group() {
    let s = session();
    let started = start(&s, sh("tg", "sleep 1000 & sleep 1000")).await;
    let mut sleeps = Vec::new();
    eventually("two sleeps in the group", || {
        sleeps = group_members(started.pid, "sleep");
        sleeps.len() == 2
    })
    .await;
    let r = s.terminate(ProcessTerminateParams {
        process_id: "tg".into(),
        grace_ms: 1000,
    });
    assert!(r.running);
    let (_, last) = read_until_closed(&s, "tg").await;
    assert_eq!(
        (last.exit_code, last.signal.as_deref()),
        (Some(143), Some("SIGTERM"))
    );
    eventually("both sleeps gone", || sleeps.iter().all(|p| !alive(*p))).await;
    let again = s.terminate(ProcessTerminateParams {
        process_id: "tg".into(),
        grace_ms: 1000,
    });
    assert!(!again.running);
    let unknown = s.terminate(ProcessTerminateParams {
        process_id: "nope".into(),
        grace_ms: 0,
    });
    assert!(!unknown.running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_kills_a_child_that_ignores_sigterm_after_the_grace() {
    let s = session();
    start(&s, sh("ig", "trap '' TERM; echo ready; exec sleep 1000")).await;
    read_until(&s, "ig", 0, |_, all| {
        concat(all, Stream::Stdout) == "ready\n"
    })
    .await;
    let r = s.terminate(ProcessTerminateParams {
        process_id: "ig".into(),
        grace_ms: 200,
    });
    assert!(r.running);
    let (_, last) = read_until_closed(&s, "ig").await;
    assert_eq!(
        (last.exit_code, last.signal.as_deref()),
        (Some(137), Some("SIGKILL"))
    );

    // graceMs 0: SIGKILL at once.
    start(&s, sh("k0", "trap '' TERM; echo ready; exec sleep 1000")).await;
    read_until(&s, "k0", 0, |_, all| {
        concat(all, Stream::Stdout) == "ready\n"
    })
    .await;
    assert!(
        s.terminate(ProcessTerminateParams {
            process_id: "k0".into(),
            grace_ms: 0,
        })
        .running
    );
    let (_, last) = read_until_closed(&s, "k0").await;
    assert_eq!(last.signal.as_deref(), Some("SIGKILL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_and_initial_size_reach_the_child() {
    let s = session();
    let mut p = sh("rs", "stty size; read x; stty size");
    p.tty = true;
    p.size = Some(TerminalSize {
        rows: 30,
        cols: 100,
    });
    start(&s, p).await;
    read_until(&s, "rs", 0, |_, all| {
        concat(all, Stream::Pty).contains("30 100\r\n")
    })
    .await;
    let r = s.resize(ProcessResizeParams {
        process_id: "rs".into(),
        rows: 40,
        cols: 120,
    });
    assert_eq!(r, Ok(ProcessResizeResult {}));
    assert_eq!(write(&s, "rs", "\n", None), WriteStatus::Accepted);
    let (chunks, last) = read_until_closed(&s, "rs").await;
    assert!(
        concat(&chunks, Stream::Pty).ends_with("40 120\r\n"),
        "{chunks:?}"
    );
    assert_eq!(last.exit_code, Some(0));

    let zero = s.resize(ProcessResizeParams {
        process_id: "rs".into(),
        rows: 0,
        cols: 10,
    });
    assert_eq!(zero.unwrap_err().code(), ErrorCode::InvalidParams);
    let unknown = s.resize(ProcessResizeParams {
        process_id: "nope".into(),
        rows: 1,
        cols: 1,
    });
    assert_eq!(unknown.unwrap_err().code(), ErrorCode::ProcessNotFound);
    start(&s, params("pipe", &["true"])).await;
    let no_tty = s.resize(ProcessResizeParams {
        process_id: "pipe".into(),
        rows: 1,
        cols: 1,
    });
    assert_eq!(no_tty.unwrap_err().code(), ErrorCode::InvalidRequest);
}

fn env_lines(chunks: &[OutputChunk]) -> Vec<String> {
    let mut lines: Vec<String> = concat(chunks, Stream::Stdout)
        .split('\0')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_is_exact_unless_inherited_and_arg0_is_honoured() {
    let s = session();
    let mut p = params("e", &["env", "-0"]);
    p.env.insert("A".into(), "1 2".into());
    start(&s, p).await;
    let (chunks, _) = read_until_closed(&s, "e").await;
    assert_eq!(env_lines(&chunks), ["A=1 2", "PATH=/usr/bin:/bin"]);

    let mut p = params("i", &["env", "-0"]);
    p.env = [("ZZ_OVERLAY".to_string(), "x".to_string())].into();
    p.inherit_env = true;
    start(&s, p).await;
    let (chunks, _) = read_until_closed(&s, "i").await;
    let mut expected: Vec<String> = std::env::vars()
        .filter(|(k, _)| k != "ZZ_OVERLAY")
        .map(|(k, v)| format!("{k}={v}"))
        .chain(["ZZ_OVERLAY=x".to_string()])
        .collect();
    expected.sort();
    assert_eq!(env_lines(&chunks), expected);

    let mut p = sh("a0", "echo $0");
    p.arg0 = Some("custom-name".into());
    start(&s, p).await;
    let (chunks, _) = read_until_closed(&s, "a0").await;
    // sh -c reports its own argv[0] as $0.
    assert_eq!(concat(&chunks, Stream::Stdout), "custom-name\n");

    // cwd is honoured.
    let mut p = params("cwd", &["pwd"]);
    p.cwd = "/usr".into();
    start(&s, p).await;
    let (chunks, _) = read_until_closed(&s, "cwd").await;
    assert_eq!(concat(&chunks, Stream::Stdout), "/usr\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_errors_carry_the_os_text_and_never_fall_back() {
    let s = session();
    let enoent = "No such file or directory (os error 2)";

    let mut p = params("x", &["pwd"]);
    p.cwd = "/definitely/not/a/dir".into();
    let err = s.start(p).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SpawnFailed);
    assert!(err.to_string().contains(enoent), "{err}");

    let err = s
        .start(params("x", &["definitely-not-a-program-42"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SpawnFailed);
    assert!(err.to_string().contains(enoent), "{err}");

    let err = s
        .start(params("x", &["/definitely/not/a/program"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SpawnFailed);
    assert!(err.to_string().contains(enoent), "{err}");

    let mut p = params("x", &["pwd"]);
    p.tty = true;
    p.cwd = "/definitely/not/a/dir".into();
    let err = s.start(p).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SpawnFailed);

    // argv[0] is looked up in the child's PATH, not the server's.
    let mut p = params("x", &["sh", "-c", "true"]);
    p.env = [("PATH".to_string(), "/definitely/not".to_string())].into();
    let err = s.start(p).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SpawnFailed);
    // No PATH in the child's env: the server's own is used.
    let mut p = params("y", &["sh", "-c", "true"]);
    p.env.clear();
    start(&s, p).await;
    let (_, last) = read_until_closed(&s, "y").await;
    assert_eq!(last.exit_code, Some(0));

    // A failed start leaves no trace: the id is free.
    assert!(s.list().processes.iter().all(|p| p.process_id != "x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_params_are_refused_before_spawning() {
    let s = session();
    let mut cases: Vec<ProcessStartParams> = vec![
        params("", &["true"]),
        params(&"x".repeat(257), &["true"]),
        params("x", &[]),
        params("x", &["tr\0ue"]),
    ];
    let mut p = params("x", &["true"]);
    p.cwd = "relative/dir".into();
    cases.push(p);
    let mut p = params("x", &["true"]);
    p.cwd = "/tm\0p".into();
    cases.push(p);
    let mut p = params("x", &["true"]);
    p.env.insert("A=B".into(), "1".into());
    cases.push(p);
    let mut p = params("x", &["true"]);
    p.env.insert(String::new(), "1".into());
    cases.push(p);
    let mut p = params("x", &["true"]);
    p.env.insert("A".into(), "1\0".into());
    cases.push(p);
    let mut p = params("x", &["true"]);
    p.tty = true;
    p.size = Some(TerminalSize { rows: 0, cols: 80 });
    cases.push(p);
    for case in cases {
        let err = s.start(case.clone()).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidParams, "{case:?}: {err}");
    }
    // 256 bytes is fine.
    start(&s, params(&"x".repeat(256), &["true"])).await;
    let err = s.read(read_params("nope", 0, 0)).await.unwrap_err();
    assert_eq!(
        err,
        Error::ProcessNotFound("unknown processId \"nope\"".into())
    );
    assert_eq!(err.code(), ErrorCode::ProcessNotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_are_refused_even_when_racing() {
    let s = session();
    start(&s, params("d", &["sleep", "1000"])).await;
    let err = s.start(params("d", &["true"])).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);

    for round in 0..20 {
        let id = format!("race{round}");
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                let p = params(&id, &["true"]);
                tokio::spawn(async move { s.start(p).await.map(|st| st.result) })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e.code(), ErrorCode::InvalidRequest),
            }
        }
        assert_eq!(ok, 1, "exactly one start of {id} succeeds");
    }
    // A closed process keeps its id while retained.
    start(&s, params("c", &["true"])).await;
    read_until_closed(&s, "c").await;
    let err = s.start(params("c", &["true"])).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_processes_are_forgotten_and_ids_reused() {
    let s = Session::new(SessionConfig {
        retain_closed: Duration::from_millis(50),
        ..SessionConfig::default()
    });
    start(&s, sh("id", "echo one")).await;
    read_until_closed(&s, "id").await;
    eventually("the closed process to be forgotten", || {
        s.list().processes.is_empty()
    })
    .await;
    let err = s.read(read_params("id", 0, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProcessNotFound);
    start(&s, sh("id", "echo two")).await;
    let (chunks, _) = read_until_closed(&s, "id").await;
    assert_eq!(concat(&chunks, Stream::Stdout), "two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_limit_is_enforced_and_named() {
    let s = Session::new(SessionConfig {
        max_processes: 2,
        ..SessionConfig::default()
    });
    start(&s, params("a", &["sleep", "1000"])).await;
    start(&s, params("b", &["sleep", "1000"])).await;
    let err = s.start(params("c", &["true"])).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::LimitReached);
    assert!(err.to_string().contains("processes per session"), "{err}");
    let ids: Vec<String> = s
        .list()
        .processes
        .into_iter()
        .map(|p| p.process_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
    s.shutdown().await;
    assert!(s.list().processes.iter().all(|p| p.exited));
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
async fn shutdown_terminates_and_reaps_everything() {
    let s = session();
    let a = start(&s, params("a", &["sleep", "1000"])).await;
    let mut p = params("b", &["sleep", "1000"]);
    p.tty = true;
    let b = start(&s, p).await;
    let c = start(&s, sh("c", "trap '' TERM; echo ready; exec sleep 1000")).await;
    read_until(&s, "c", 0, |_, all| {
        concat(all, Stream::Stdout) == "ready\n"
    })
    .await;
    tokio::time::timeout(DEADLINE, s.shutdown()).await.unwrap();
    for pid in [a.pid, b.pid, c.pid] {
        assert!(!alive(pid), "{pid} still running");
    }
    // Idempotent, and the session refuses new work.
    tokio::time::timeout(DEADLINE, s.shutdown()).await.unwrap();
    assert!(s.start(params("z", &["true"])).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_the_reader_closed_stdin_answer_stdin_closed() {
    let s = session();
    let mut p = sh("ep", "exec <&-; echo ready; exec sleep 1000");
    p.pipe_stdin = true;
    start(&s, p).await;
    read_until(&s, "ep", 0, |_, all| {
        concat(all, Stream::Stdout) == "ready\n"
    })
    .await;
    // The first write meets EPIPE; from then on stdin counts as closed.
    eventually("stdin to be seen closed", || {
        write(&s, "ep", "x", None) == WriteStatus::StdinClosed
    })
    .await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_signals_go_to_the_terminal_foreground_group() {
    let s = session();
    // With job control the shell runs the inner job in its own group and makes it the
    // terminal's foreground group: a Ctrl-C reaches the job (which exits 5), not the
    // outer shell (which would die of SIGINT).
    let mut p = sh(
        "fg",
        "set -m; sh -c 'trap \"exit 5\" INT; echo ready; while :; do sleep 1; done'; echo \"after $?\"",
    );
    p.tty = true;
    let started = start(&s, p).await;
    read_until(&s, "fg", 0, |_, all| {
        concat(all, Stream::Pty).contains("ready")
    })
    .await;
    let mut job = 0;
    eventually("the job to be the terminal's foreground group", || {
        let found = children_named(started.pid, "sh");
        match found.first() {
            Some(&pid) => {
                job = pid;
                proc_stat(pid).is_some_and(|(_, _, g)| g == pid as i32)
                    && proc_tpgid(pid) == Some(pid as i32)
            }
            None => false,
        }
    })
    .await;
    let r = s.signal(ProcessSignalParams {
        process_id: "fg".into(),
        signal: Signal::Int,
    });
    assert!(r.delivered);
    let (chunks, last) = read_until_closed(&s, "fg").await;
    assert!(
        concat(&chunks, Stream::Pty).contains("after 5"),
        "{chunks:?} {last:?}"
    );
    assert_eq!((last.exit_code, last.signal), (Some(0), None));
    assert!(!alive(job));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_after_the_leader_exited_still_stops_its_group() {
    let s = session();
    let (sink, mut rx) = channel_sink(16);
    s.attach(sink);
    let started = start(&s, sh("orphan", "sleep 1000 & echo started; exit 4")).await;
    assert_eq!(
        recv(&mut rx).await,
        output("orphan", 1, Stream::Stdout, "started\n")
    );
    assert_eq!(recv(&mut rx).await, exited("orphan", 2, 4, None));
    // The background job may still be a forked shell about to exec sleep.
    let mut sleeps = Vec::new();
    eventually("the background sleep", || {
        sleeps = group_members(started.pid, "sleep");
        sleeps.len() == 1
    })
    .await;
    // The leader is gone, so it "was not running"; its group still holds stdout and is stopped.
    let r = s.terminate(ProcessTerminateParams {
        process_id: "orphan".into(),
        grace_ms: 1000,
    });
    assert!(!r.running);
    assert_eq!(recv(&mut rx).await, closed("orphan", 3));
    eventually("the background sleep to be gone", || !alive(sleeps[0])).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_inherit_no_stray_descriptors() {
    let s = session();
    // Other processes' pipes and ptys stay open meanwhile; none may leak into a child
    // (a leaked write end would delay another process's EOF forever).
    let mut busy = params("busy", &["cat"]);
    busy.pipe_stdin = true;
    start(&s, busy).await;
    let mut t = params("busy-tty", &["cat"]);
    t.tty = true;
    start(&s, t).await;
    for tty in [false, true] {
        let id = format!("fds-{tty}");
        // ls itself holds fd 3 open on the directory it lists.
        let mut p = params(&id, &["ls", "/proc/self/fd"]);
        p.tty = tty;
        start(&s, p).await;
        let (chunks, _) = read_until_closed(&s, &id).await;
        let text = concat(&chunks, if tty { Stream::Pty } else { Stream::Stdout });
        let fds: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{id}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_racing_starts_leaves_no_child_behind() {
    let s = session();
    let starts: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.start(params(&format!("r{i}"), &["sleep", "1000"]))
                    .await
                    .map(|st| st.result.pid)
            })
        })
        .collect();
    tokio::time::timeout(DEADLINE, s.shutdown()).await.unwrap();
    let mut pids = Vec::new();
    for t in starts {
        match t.await.unwrap() {
            Ok(pid) => pids.push(pid),
            Err(e) => assert_eq!(e.code(), ErrorCode::InvalidRequest, "{e}"),
        }
    }
    // Starts that won the race are terminated by them or by shutdown; none survives.
    eventually("every started child to be gone", || {
        pids.iter().all(|p| !alive(*p))
    })
    .await;
}
