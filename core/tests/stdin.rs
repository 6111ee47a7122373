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
