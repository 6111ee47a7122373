//! Signals, resize, terminate and shutdown: whole groups, SIGTERM then SIGKILL, no child left behind.

mod common;

use common::*;
use exec_server_core::Event;
use exec_server_protocol::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_kills_a_member_that_ignores_sigterm_and_holds_no_pipe() {
    let s = session();
    let script =
        r#"(trap "" TERM; exec sleep 1000 </dev/null >/dev/null 2>&1) & echo $!; exec sleep 1001"#;
    let leader = start(&s, sh("p", script)).await.pid;
    let (chunks, _) = read_until(&s, "p", 0, |_, all| {
        concat(all, Stream::Stdout).ends_with('\n')
    })
    .await;
    let member: u32 = concat(&chunks, Stream::Stdout).trim().parse().unwrap();
    eventually("the member to run sleep", || {
        group_members(leader, "sleep").contains(&member)
    })
    .await;
    let r = s.terminate(ProcessTerminateParams {
        process_id: "p".into(),
        grace_ms: 300,
    });
    assert!(r.running);
    // The leader dies of SIGTERM and its pipes close; the member holds none and ignores
    // SIGTERM, so only the SIGKILL after the grace ends it.
    let (_, last) = read_until_closed(&s, "p").await;
    assert_eq!(last.signal.as_deref(), Some("SIGTERM"));
    eventually("the member to be killed", || !alive(member)).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stays_unreaped_while_its_group_lives_and_terminate_still_reaches_it() {
    let s = session();
    let script = r#"(trap "" TERM; exec sleep 1000 </dev/null >/dev/null 2>&1) & echo $!"#;
    let leader = start(&s, sh("p", script)).await.pid;
    let (chunks, last) = read_until_closed(&s, "p").await;
    assert_eq!(last.exit_code, Some(0));
    let member: u32 = concat(&chunks, Stream::Stdout).trim().parse().unwrap();
    // The leader exited and every stream closed, but a member lives: the leader is kept
    // as a zombie, which keeps the group id from being reused.
    assert!(alive(member));
    assert_eq!(proc_stat(leader).map(|(state, _, _)| state), Some('Z'));
    // So the group can still be terminated safely: not running, yet its member dies.
    let r = s.terminate(ProcessTerminateParams {
        process_id: "p".into(),
        grace_ms: 200,
    });
    assert!(!r.running);
    eventually("the member to be killed", || !alive(member)).await;
    eventually("the leader to be reaped", || proc_stat(leader).is_none()).await;
    assert_eq!(s.list().processes.len(), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_is_reaped_once_its_last_member_exits() {
    let s = session();
    let leader = start(&s, sh("p", "sleep 0.3 </dev/null >/dev/null 2>&1 &"))
        .await
        .pid;
    let (_, last) = read_until_closed(&s, "p").await;
    assert_eq!(last.exit_code, Some(0));
    // Reaped without any terminate, as soon as the background sleep is gone.
    eventually("the leader to be reaped", || proc_stat(leader).is_none()).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_terminates_the_group_and_says_so() {
    let s = session();
    // Ignores SIGTERM, so only the SIGKILL after the default grace ends it.
    let mut p = sh("slow", "trap '' TERM; echo ready; exec sleep 1000");
    p.timeout_ms = Some(200);
    start(&s, p).await;
    let (chunks, last) = read_until_closed(&s, "slow").await;
    assert_eq!(concat(&chunks, Stream::Stdout), "ready\n");
    assert_eq!(
        (last.exit_code, last.signal.as_deref(), last.timed_out),
        (Some(137), Some("SIGKILL"), true)
    );
    assert!(s.list().processes[0].timed_out);

    // One that finishes in time is not timed out.
    let mut p = sh("quick", "exit 3");
    p.timeout_ms = Some(60_000);
    start(&s, p).await;
    let (_, last) = read_until_closed(&s, "quick").await;
    assert_eq!((last.exit_code, last.timed_out), (Some(3), false));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_holds_until_closed() {
    let s = session();
    let (sink, mut rx) = channel_sink(16);
    s.attach(sink);
    // The leader exits at once; the background sleep holds stdout past the deadline.
    let mut p = sh("bg", "sleep 1000 & echo started");
    p.timeout_ms = Some(300);
    start(&s, p).await;
    let events = events_until_closed(&mut rx, "bg").await;
    let (exit, close) = match &events[..] {
        [.., Event::Exited(e), Event::Closed(c)] => (e.clone(), c.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (exit.exit_code, exit.timed_out, close.timed_out),
        (0, false, true)
    );
    let (_, last) = read_until_closed(&s, "bg").await;
    assert!(last.timed_out);
    assert!(s.list().processes[0].timed_out);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_reported_in_the_pushed_exit() {
    let s = session();
    let (sink, mut rx) = channel_sink(16);
    s.attach(sink);
    let mut p = params("t", &["sleep", "1000"]);
    p.timeout_ms = Some(100);
    start(&s, p).await;
    let events = events_until_closed(&mut rx, "t").await;
    let mut want = exited("t", 1, 143, Some("SIGTERM"));
    if let Event::Exited(n) = &mut want {
        n.timed_out = true;
    }
    let mut last = closed("t", 2);
    if let Event::Closed(n) = &mut last {
        n.timed_out = true;
    }
    assert_eq!(events, [want, last]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_under_a_tty_reaches_every_job_of_the_shell() {
    let s = session();
    let mut p = params("sh", &["bash", "--norc", "--noprofile", "-i"]);
    p.tty = true;
    p.pipe_stdin = true;
    start(&s, p).await;
    // With job control on, the background job gets a process group of its own.
    assert_eq!(
        write(&s, "sh", "set -m; sleep 1000 & echo JOB=$!\n", None),
        WriteStatus::Accepted
    );
    // The terminal echoes the command line too: the pid is the `JOB=` followed by digits.
    let job_pid = |out: &str| -> Option<u32> {
        out.split("JOB=")
            .skip(1)
            .find(|rest| rest.starts_with(|c: char| c.is_ascii_digit()) && rest.contains('\n'))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let (chunks, _) = read_until(&s, "sh", 0, |_, all| {
        job_pid(&concat(all, Stream::Pty)).is_some()
    })
    .await;
    let job = job_pid(&concat(&chunks, Stream::Pty)).unwrap();
    eventually("the job to run in its own group", || {
        proc_stat(job).is_some_and(|(_, _, pgrp)| pgrp == job as i32)
    })
    .await;
    let r = s.terminate(ProcessTerminateParams {
        process_id: "sh".into(),
        grace_ms: 300,
    });
    assert!(r.running);
    read_until_closed(&s, "sh").await;
    eventually("the job to be killed", || !alive(job)).await;
    s.shutdown().await;
}
