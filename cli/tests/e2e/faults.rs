//! Faults of the server and of its children: SIGKILL to the server, a member that ignores
//! SIGTERM and holds no pipe, a stopped child, a child that closes stdout early, a daemon
//! that leaves the group, the token kept from children (their environment and `/proc`),
//! and the open-files limit children get.

use exec_server_protocol::{method, notification};
use serde_json::json;

use crate::client::{
    Kind, ServerProc, alive, check, group_members, output_of, processes_with_arg, spawn_with,
    stat_fields, wait_until,
};

fn kill_all(pids: &[u32]) {
    for pid in pids {
        // SAFETY: kill(2) of a process this test started (through the server).
        unsafe {
            libc::kill(*pid as i32, libc::SIGKILL);
        }
    }
}

#[tokio::test]
async fn sigkill_of_the_server_kills_every_group_it_started() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    // A background grandchild in each: one over pipes, one under a tty (its own session).
    let pipes = c
        .start(
            "pipes",
            &["sh", "-c", "sleep 1000 & exec sleep 1001"],
            json!({}),
        )
        .await["pid"]
        .as_u64()
        .unwrap() as u32;
    let tty = c
        .start(
            "tty",
            &["sh", "-c", "sleep 1002 & exec sleep 1003"],
            json!({"tty": true}),
        )
        .await["pid"]
        .as_u64()
        .unwrap() as u32;
    wait_until("both groups to have two members", || {
        group_members(pipes).len() == 2 && group_members(tty).len() == 2
    })
    .await;
    let members: Vec<u32> = group_members(pipes)
        .into_iter()
        .chain(group_members(tty))
        .collect();
    server.signal(libc::SIGKILL);
    server.child.wait().await?;
    wait_until("every member of both groups to die", || {
        members.iter().all(|pid| !alive(*pid))
    })
    .await;
    Ok(())
}

async fn terminate_kills_a_member_that_ignores_sigterm(kind: Kind) -> anyhow::Result<()> {
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let script =
        r#"(trap "" TERM; exec sleep 1000 </dev/null >/dev/null 2>&1) & echo $!; exec sleep 1001"#;
    let leader = c.start("p", &["sh", "-c", script], json!({})).await["pid"]
        .as_u64()
        .unwrap() as u32;
    let first = c.notification().await;
    let member: u32 = String::from_utf8(output_of(&[first]))?.trim().parse()?;
    wait_until("the member to run sleep", || {
        std::fs::read(format!("/proc/{member}/cmdline"))
            .is_ok_and(|c| c.starts_with(b"sleep\x001000"))
    })
    .await;
    let result = c
        .call(
            method::PROCESS_TERMINATE,
            json!({"processId": "p", "graceMs": 300}),
        )
        .await;
    assert_eq!(result, json!({"running": true}));
    let events = c.events_until_closed("p").await;
    let exited = events
        .iter()
        .find(|e| e["method"] == notification::PROCESS_EXITED)
        .expect("exited");
    assert_eq!(exited["params"]["signal"], "SIGTERM", "{exited}");
    wait_until("the SIGTERM-ignoring member to be killed", || {
        !alive(member)
    })
    .await;
    assert!(!alive(leader));
    Ok(())
}

#[tokio::test]
async fn terminate_kills_a_member_that_ignores_sigterm_stdio() -> anyhow::Result<()> {
    terminate_kills_a_member_that_ignores_sigterm(Kind::Stdio).await
}

#[tokio::test]
async fn terminate_kills_a_member_that_ignores_sigterm_ws() -> anyhow::Result<()> {
    terminate_kills_a_member_that_ignores_sigterm(Kind::Ws).await
}

#[tokio::test]
async fn a_stopped_child_is_terminated() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let pid = c.start("p", &["sleep", "1000"], json!({})).await["pid"]
        .as_u64()
        .unwrap() as u32;
    let sent = c
        .call(
            method::PROCESS_SIGNAL,
            json!({"processId": "p", "signal": "SIGSTOP"}),
        )
        .await;
    assert_eq!(sent, json!({"delivered": true}));
    wait_until("the child to stop", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
        })
    })
    .await;
    let result = c
        .call(
            method::PROCESS_TERMINATE,
            json!({"processId": "p", "graceMs": 5000}),
        )
        .await;
    assert_eq!(result, json!({"running": true}));
    let events = c.events_until_closed("p").await;
    // SIGCONT after SIGTERM lets the stopped child act on SIGTERM within the grace.
    assert_eq!(events[0]["method"], notification::PROCESS_EXITED);
    assert_eq!(events[0]["params"]["signal"], "SIGTERM", "{events:?}");
    Ok(())
}

#[tokio::test]
async fn a_child_that_closes_stdout_early_still_reports_everything() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start(
        "p",
        &[
            "sh",
            "-c",
            "echo out; exec >&-; read x; echo err >&2; exit 3",
        ],
        json!({"pipeStdin": true}),
    )
    .await;
    // stdout reaches end-of-file while the child still runs, waiting on stdin.
    let first = c.notification().await;
    assert_eq!(output_of(&[first]), b"out\n");
    let written = c
        .call(
            method::PROCESS_WRITE,
            json!({"processId": "p", "chunk": crate::client::b64(b"go\n")}),
        )
        .await;
    assert_eq!(written, json!({"status": "accepted"}));
    let events = c.events_until_closed("p").await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap_or(""),
                e["params"]["stream"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (notification::PROCESS_OUTPUT, "stderr"),
            (notification::PROCESS_EXITED, ""),
            (notification::PROCESS_CLOSED, "")
        ]
    );
    assert_eq!(output_of(&events), b"err\n");
    assert_eq!(events[1]["params"]["exitCode"], 3);
    Ok(())
}

#[tokio::test]
async fn a_daemon_that_leaves_the_group_does_not_hold_up_cleanup() -> anyhow::Result<()> {
    let marker = format!("1000.{}", std::process::id());
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    // The daemon takes a session of its own and keeps stdout and stderr open.
    let script = format!("setsid sleep {marker} & echo started");
    c.start("d", &["sh", "-c", &script], json!({})).await;
    let first = c.notification().await;
    assert_eq!(output_of(&[first]), b"started\n");
    // Its argv holds the marker from the exec of `setsid` on, before it has left the
    // group: wait until it leads a session of its own, or the cleanup below may catch it
    // still in the group (and kill it, rightly).
    wait_until("the daemon to leave the group", || {
        processes_with_arg(&marker)
            .iter()
            .any(|pid| stat_fields(*pid).is_some_and(|f| f.get(3) == Some(&pid.to_string())))
    })
    .await;
    c.close().await?;
    // Stdin EOF: the process is terminated; its streams, held by the daemon, are given
    // up after a bound, so `closed` is still written and the server exits.
    let events = c.events_until_closed("d").await;
    assert!(
        events
            .iter()
            .any(|e| e["method"] == notification::PROCESS_EXITED),
        "{events:?}"
    );
    assert_eq!(server.wait_exit().await?, 0);
    let daemons = processes_with_arg(&marker);
    kill_all(&daemons);
    // It escaped: nothing in the server's power could signal it, and it is still there.
    assert_eq!(daemons.len(), 1);
    Ok(())
}

#[tokio::test]
async fn the_token_never_reaches_a_child() -> anyhow::Result<()> {
    let token = "s3cret-token-for-the-env-test";
    let mut server = ServerProc::ws_env(&[], &[("EXEC_SERVER_TOKEN", token)]).await?;
    assert_eq!(server.token(), token);
    let mut c = server.client().await?;
    c.handshake().await;
    c.start(
        "env",
        &["env"],
        json!({"inheritEnv": true, "env": {"MARKER": "yes"}}),
    )
    .await;
    let events = c.events_until_closed("env").await;
    let text = String::from_utf8(output_of(&events))?;
    assert!(text.lines().any(|l| l == "MARKER=yes"), "{text}");
    assert!(
        !text.contains(token) && !text.contains("EXEC_SERVER_TOKEN"),
        "{text}"
    );
    Ok(())
}

/// SPEC 2: a child cannot read the token from the server either: neither
/// `/proc/PID/environ` nor `/proc/PID/cmdline` of the server or of its guardian holds it.
async fn the_token_is_not_readable_through_proc(kind: Kind) -> anyhow::Result<()> {
    let token = "s3cret-token-for-the-proc-test";
    let env = [
        ("EXEC_SERVER_TOKEN", token),
        ("E2E_SERVER_MARKER", "visible"),
    ];
    let mut server = ServerProc::start_env(kind, &[], &env).await?;
    if kind == Kind::Ws {
        // The token still authenticates.
        assert_eq!(server.token(), token);
    }
    let mut c = server.client().await?;
    c.handshake().await;
    // The server, then each of its children (the guardian, and this shell).
    let script = r#"for p in $PPID $(cat /proc/$PPID/task/*/children); do
        printf '%s\n' "== $p"; tr '\0' '\n' < /proc/$p/environ; tr '\0' ' ' < /proc/$p/cmdline; echo
    done"#;
    c.start("peek", &["sh", "-c", script], json!({})).await;
    let events = c.events_until_closed("peek").await;
    let text = String::from_utf8(output_of(&events))?;
    // The reads worked: the server's and the guardian's environments were seen.
    assert_eq!(
        text.lines()
            .filter(|l| *l == "E2E_SERVER_MARKER=visible")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains(" guardian"), "{text}");
    assert!(!text.contains(token), "{text}");
    assert!(!text.contains("EXEC_SERVER_TOKEN"), "{text}");
    Ok(())
}

#[tokio::test]
async fn the_token_is_not_readable_through_proc_stdio() -> anyhow::Result<()> {
    the_token_is_not_readable_through_proc(Kind::Stdio).await
}

#[tokio::test]
async fn the_token_is_not_readable_through_proc_ws() -> anyhow::Result<()> {
    the_token_is_not_readable_through_proc(Kind::Ws).await
}

/// The server raises its own RLIMIT_NOFILE soft limit to the hard one; its children get
/// the soft limit the server was started with.
async fn children_get_the_open_files_limit_the_server_was_started_with(
    kind: Kind,
) -> anyhow::Result<()> {
    let mut hard: libc::rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) })?;
    if hard.rlim_max <= 300 {
        eprintln!("skipped: the hard open-files limit is too low to lower the soft one");
        return Ok(());
    }
    let max = hard.rlim_max;
    let mut server = spawn_with(kind, &[], move || {
        let lowered = libc::rlimit {
            rlim_cur: 300,
            rlim_max: max,
        };
        // SAFETY: setrlimit with a valid struct, between fork and exec.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) })
    })
    .await?;
    let mut c = server.client().await?;
    c.handshake().await;
    c.start("limit", &["sh", "-c", "ulimit -n"], json!({}))
        .await;
    let events = c.events_until_closed("limit").await;
    assert_eq!(String::from_utf8(output_of(&events))?, "300\n");
    c.start("tty", &["sh", "-c", "ulimit -n"], json!({"tty": true}))
        .await;
    let events = c.events_until_closed("tty").await;
    assert_eq!(String::from_utf8(output_of(&events))?, "300\r\n");
    // The server itself runs with the raised limit.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid()))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let soft: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(soft, [max.to_string(), max.to_string()], "{line}");
    Ok(())
}

#[tokio::test]
async fn children_get_the_open_files_limit_the_server_was_started_with_stdio() -> anyhow::Result<()>
{
    children_get_the_open_files_limit_the_server_was_started_with(Kind::Stdio).await
}

#[tokio::test]
async fn children_get_the_open_files_limit_the_server_was_started_with_ws() -> anyhow::Result<()> {
    children_get_the_open_files_limit_the_server_was_started_with(Kind::Ws).await
}

#[tokio::test]
async fn orphans_are_adopted_and_reaped_and_still_count_as_group_members() -> anyhow::Result<()> {
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    // The shell exits at once; its background job outlives it, holding no pipe.
    let script = "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!";
    let leader = c.start("p", &["sh", "-c", script], json!({})).await["pid"]
        .as_u64()
        .unwrap() as u32;
    let events = c.events_until_closed("p").await;
    let orphan: u32 = String::from_utf8(output_of(&events))?.trim().parse()?;
    // Adopted by the server (a child subreaper), not by init.
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    assert_eq!(parent(orphan), Some(server.pid()));
    // The orphan keeps the group alive: the leader stays unreaped, and terminate reaches it.
    assert!(std::path::Path::new(&format!("/proc/{leader}")).exists());
    let r = c
        .call(
            method::PROCESS_TERMINATE,
            json!({"processId": "p", "graceMs": 100}),
        )
        .await;
    assert_eq!(r, json!({"running": false}));
    // Killed, then reaped by the server: no zombie is left behind.
    wait_until("the orphan to be killed and reaped", || {
        !std::path::Path::new(&format!("/proc/{orphan}")).exists()
    })
    .await;
    wait_until("the leader to be reaped", || {
        !std::path::Path::new(&format!("/proc/{leader}")).exists()
    })
    .await;
    Ok(())
}
