//! Starting processes: environment, argv[0], spawn errors, invalid params, duplicate ids, limits, forgetting, descriptors.

mod common;

use std::time::Duration;

use common::*;
use exec_server_core::{Error, Session, SessionConfig};
use exec_server_protocol::*;

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

/// Whether this test runs as root (switching users needs it).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_runs_as_another_user_with_its_account() {
    if !is_root() {
        eprintln!("skipped: switching users needs a test run as root");
        return;
    }
    let s = session();
    let mut p = sh(
        "id",
        "id -u; id -g; echo \"$HOME $USER $LOGNAME $SHELL\"; id -G",
    );
    p.user = Some("nobody".into());
    p.inherit_env = true;
    start(&s, p).await;
    let (chunks, last) = read_until_closed(&s, "id").await;
    assert_eq!(
        last.exit_code,
        Some(0),
        "{}",
        concat(&chunks, Stream::Stderr)
    );
    let out = concat(&chunks, Stream::Stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "65534");
    assert_eq!(lines[1], "65534");
    assert_eq!(lines[2], "/nonexistent nobody nobody /usr/sbin/nologin");
    // Supplementary groups are nobody's, not root's.
    assert!(!lines[3].split(' ').any(|g| g == "0"), "{out}");

    // By uid, under a tty whose terminal the user owns.
    let mut p = sh("tty", "id -u; stat -c %u $(tty)");
    p.user = Some("65534".into());
    p.tty = true;
    start(&s, p).await;
    let (chunks, _) = read_until_closed(&s, "tty").await;
    assert_eq!(concat(&chunks, Stream::Pty), "65534\r\n65534\r\n");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_and_bad_user_params_are_refused() {
    let s = session();
    let mut p = params("u", &["true"]);
    p.user = Some("no-such-user-xyz".into());
    let err = s.start(p).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SpawnFailed);
    assert_eq!(err.to_string(), "unknown user \"no-such-user-xyz\"");
    for bad in ["", "a\0b"] {
        let mut p = params("u", &["true"]);
        p.user = Some(bad.into());
        let err = s.start(p).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidParams);
    }
    // Nothing was left reserved.
    assert!(s.list().processes.is_empty());
    s.shutdown().await;
}

/// A sink that records which processes the session told it were forgotten, and whether
/// each one's id was already free then (it must not be, so no new process can take the id
/// before the sink let go of the old one).
struct ForgetSink {
    events: ChannelSink,
    forgotten: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl exec_server_core::EventSink for ForgetSink {
    async fn send(
        &self,
        event: exec_server_core::Event,
    ) -> Result<(), exec_server_core::SinkClosed> {
        self.events.send(event).await
    }

    fn forgotten(&self, process_id: &str) {
        exec_server_core::lock(&self.forgotten).push(process_id.to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_is_told_when_a_process_is_forgotten() {
    let s = Session::new(SessionConfig {
        retain_closed: Duration::from_millis(50),
        ..SessionConfig::default()
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let sink = std::sync::Arc::new(ForgetSink {
        events: ChannelSink(tx),
        forgotten: std::sync::Mutex::new(Vec::new()),
    });
    s.attach(sink.clone());
    start(&s, sh("gone", "echo one")).await;
    start(&s, params("kept", &["sleep", "600"])).await;
    events_until_closed(&mut rx, "gone").await;
    eventually("the closed process to be forgotten", || {
        s.list().processes.len() == 1
    })
    .await;
    assert_eq!(*exec_server_core::lock(&sink.forgotten), ["gone"]);
    s.shutdown().await;
}

/// A sink slow to take `closed` events (a consumer that takes its time).
struct SlowCloseSink(ChannelSink);

#[async_trait::async_trait]
impl exec_server_core::EventSink for SlowCloseSink {
    async fn send(
        &self,
        event: exec_server_core::Event,
    ) -> Result<(), exec_server_core::SinkClosed> {
        if matches!(event, exec_server_core::Event::Closed(_)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.0.send(event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_after_every_last_event_reached_the_sink() {
    let s = session();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    s.attach(std::sync::Arc::new(SlowCloseSink(ChannelSink(tx))));
    for id in ["a", "b", "c"] {
        start(&s, params(id, &["sleep", "600"])).await;
    }
    start(
        &s,
        sh(
            "stubborn",
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        ),
    )
    .await;
    let (chunks, _) = read_until(&s, "stubborn", 0, |_, c| !c.is_empty()).await;
    assert_eq!(concat(&chunks, Stream::Stdout), "ready\n");
    s.close().await;
    // Every closed event is in the sink already: no waiting here.
    let mut closed = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let exec_server_core::Event::Closed(n) = event {
            closed.push(n.process_id);
        }
    }
    closed.sort();
    assert_eq!(closed, ["a", "b", "c", "stubborn"]);
    assert!(s.list().processes.iter().all(|p| p.closed));
}
