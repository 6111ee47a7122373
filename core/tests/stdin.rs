//! Stdin of a process: tty and pipe writes, order, writeIds, close, limits.

mod common;

use common::*;
use exec_server_core::{Session, SessionConfig};
use exec_server_protocol::*;

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
        wait_written: false,
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
async fn write_ids_are_1_to_256_bytes() {
    let s = session();
    let mut p = params("c", &["cat"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    for bad in [String::new(), "x".repeat(257), "é".repeat(129)] {
        let err = s
            .write(ProcessWriteParams {
                wait_written: false,
                process_id: "c".into(),
                chunk: "a".into(),
                write_id: Some(bad.clone()),
            })
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidParams, "{} bytes", bad.len());
    }
    // Also for an unknown process: the params are checked first.
    let err = s
        .write(ProcessWriteParams {
            wait_written: false,
            process_id: "nope".into(),
            chunk: "a".into(),
            write_id: Some(String::new()),
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParams);
    assert_eq!(
        write(&s, "c", "ok", Some(&"x".repeat(256))),
        WriteStatus::Accepted
    );
    close_stdin(&s, "c");
    let (chunks, _) = read_until_closed(&s, "c").await;
    assert_eq!(concat(&chunks, Stream::Stdout), "ok");
    s.shutdown().await;
}

fn write_params(id: &str, bytes: &[u8], wait: bool, write_id: Option<&str>) -> ProcessWriteParams {
    ProcessWriteParams {
        wait_written: wait,
        process_id: id.into(),
        chunk: bytes.to_vec().into(),
        write_id: write_id.map(str::to_owned),
    }
}

/// A child that reads nothing from its stdin until SIGUSR1, then reads all of it.
fn reads_on_usr1(id: &str) -> ProcessStartParams {
    let mut p = sh(
        id,
        "trap 'exec wc -c' USR1; echo ready; while :; do sleep 0.05; done 2>/dev/null",
    );
    p.pipe_stdin = true;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_written_answers_once_the_child_has_the_whole_chunk() {
    let s = session();
    start(&s, reads_on_usr1("r")).await;
    read_until(&s, "r", 0, |_, all| {
        concat(all, Stream::Stdout) == "ready\n"
    })
    .await;
    // Larger than any pipe buffer: it cannot all be written before the child reads.
    let big = vec![b'x'; 1 << 20];
    let pending = s
        .write_then(write_params("r", &big, true, Some("big")))
        .unwrap();
    assert_eq!(pending.now(), None);
    let mut answer = tokio::spawn(pending.result());
    // Not before the child reads: a write answered when queued would be done by now.
    let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut answer).await;
    assert!(early.is_err(), "answered before the child read its stdin");
    // Without waitWritten, a write behind it is answered when queued, and stays in order.
    let queued = s
        .write_then(write_params("r", b"tail", false, None))
        .unwrap();
    assert_eq!(queued.now().map(|r| r.status), Some(WriteStatus::Accepted));
    assert!(
        s.signal(ProcessSignalParams {
            process_id: "r".into(),
            signal: Signal::Usr1,
        })
        .delivered
    );
    let answered = tokio::time::timeout(DEADLINE, answer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answered.status, WriteStatus::Accepted);
    // A waiting retry of an id that was written is answered at once, and not written again.
    let retry = s
        .write_then(write_params("r", &big, true, Some("big")))
        .unwrap();
    assert_eq!(retry.now().map(|r| r.status), Some(WriteStatus::Accepted));
    assert_eq!(close_stdin(&s, "r"), WriteStatus::Accepted);
    let (chunks, _) = read_until_closed(&s, "r").await;
    let counted: String = concat(&chunks, Stream::Stdout);
    assert_eq!(counted, format!("ready\n{}\n", (1 << 20) + 4));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_written_to_a_closed_or_ended_stdin_is_stdin_closed() {
    let s = session();
    // No stdin at all.
    start(&s, params("none", &["sleep", "1000"])).await;
    let answer = s
        .write_then(write_params("none", b"x", true, None))
        .unwrap()
        .result()
        .await;
    assert_eq!(answer.status, WriteStatus::StdinClosed);
    // Closed by closeStdin.
    let mut p = params("closed", &["sleep", "1000"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    assert_eq!(close_stdin(&s, "closed"), WriteStatus::Accepted);
    let answer = s
        .write_then(write_params("closed", b"x", true, None))
        .unwrap()
        .result()
        .await;
    assert_eq!(answer.status, WriteStatus::StdinClosed);
    // Waiting when the process dies without reading: it can no longer be written.
    start(&s, reads_on_usr1("dies")).await;
    read_until(&s, "dies", 0, |_, all| {
        concat(all, Stream::Stdout) == "ready\n"
    })
    .await;
    let pending = s
        .write_then(write_params(
            "dies",
            &vec![b'y'; 1 << 20],
            true,
            Some("big"),
        ))
        .unwrap();
    assert_eq!(pending.now(), None);
    s.terminate(ProcessTerminateParams {
        process_id: "dies".into(),
        grace_ms: 0,
    });
    let answer = tokio::time::timeout(DEADLINE, pending.result())
        .await
        .unwrap();
    assert_eq!(answer.status, WriteStatus::StdinClosed);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_over_the_pending_limit_writes_none_of_it() {
    let s = Session::new(SessionConfig {
        max_pending_stdin_bytes: 1024,
        ..SessionConfig::default()
    });
    let mut p = params("cat", &["cat"]);
    p.pipe_stdin = true;
    start(&s, p).await;
    for wait in [false, true] {
        let err = s
            .write_then(write_params("cat", &[b'z'; 2000], wait, None))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::LimitReached);
    }
    let ok = s
        .write_then(write_params("cat", b"ok\n", true, None))
        .unwrap()
        .result()
        .await;
    assert_eq!(ok.status, WriteStatus::Accepted);
    assert_eq!(close_stdin(&s, "cat"), WriteStatus::Accepted);
    let (chunks, _) = read_until_closed(&s, "cat").await;
    assert_eq!(concat(&chunks, Stream::Stdout), "ok\n");
    s.shutdown().await;
}
