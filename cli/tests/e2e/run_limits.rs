//! `exec-server run --timeout` and `--user` end to end: the real binary against a real
//! server. A command that runs too long is ended (even one that ignores SIGTERM) and `run`
//! exits 124 with a note on stderr; one that ends in time keeps its status; `--user`
//! runs the command as that user.

use crate::client::ServerProc;
use crate::cp::exec_server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_ends_the_command_and_run_exits_124() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let ran = exec_server(&[
        "run",
        "--connect",
        server.url(),
        "--timeout",
        "500ms",
        "--",
        "sh",
        "-c",
        "echo started; sleep 100",
    ])
    .await;
    assert_eq!(
        (ran.code, ran.stdout.as_str(), ran.stderr.as_str()),
        (
            Some(124),
            "started\n",
            "exec-server run: timed out after 500ms\n"
        ),
        "{ran:?}"
    );

    // A command that ignores SIGTERM is killed after the grace; a bare number is seconds.
    // (SIG_IGN survives exec, so `sleep` ignores it too.)
    let ran = exec_server(&[
        "run",
        "--connect",
        server.url(),
        "--timeout",
        "1.5",
        "--",
        "sh",
        "-c",
        "trap '' TERM; sleep 100",
    ])
    .await;
    assert_eq!(
        (ran.code, ran.stderr.as_str()),
        (Some(124), "exec-server run: timed out after 1500ms\n"),
        "{ran:?}"
    );
}

/// The limit holds until the command's output is closed: a background job that keeps it
/// open past the deadline is ended then, and `run` exits 124 (with `--spawn`, over stdio).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_ends_what_the_command_left_running() {
    let ran = exec_server(&[
        "run",
        "--spawn",
        "--timeout",
        "1s",
        "--",
        "sh",
        "-c",
        "sleep 600 & echo started",
    ])
    .await;
    assert_eq!(
        (ran.code, ran.stdout.as_str(), ran.stderr.as_str()),
        (
            Some(124),
            "started\n",
            "exec-server run: timed out after 1s\n"
        ),
        "{ran:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ends_in_time_keeps_its_status() {
    let server = ServerProc::ws(&[]).await.unwrap();
    for timeout in ["30s", "5m", "1h", "0"] {
        let ran = exec_server(&[
            "run",
            "--connect",
            server.url(),
            "--timeout",
            timeout,
            "--",
            "sh",
            "-c",
            "echo done; exit 3",
        ])
        .await;
        assert_eq!(
            (ran.code, ran.stdout.as_str(), ran.stderr.as_str()),
            (Some(3), "done\n", ""),
            "--timeout {timeout}: {ran:?}"
        );
    }
    // Over a private stdio server too.
    let ran = exec_server(&["run", "--spawn", "--timeout", "200ms", "--", "sleep", "100"]).await;
    assert_eq!(
        (ran.code, ran.stderr.as_str()),
        (Some(124), "exec-server run: timed out after 200ms\n"),
        "{ran:?}"
    );
}

#[tokio::test]
async fn a_bad_duration_is_refused_with_the_accepted_forms() {
    for bad in ["10x", "-1", "soon", ""] {
        let ran = exec_server(&["run", "--spawn", "--timeout", bad, "--", "true"]).await;
        assert_eq!(ran.code, Some(2), "{bad:?}: {ran:?}");
        assert!(
            ran.stderr.contains("--timeout") && ran.stderr.contains("30s"),
            "{bad:?}: {}",
            ran.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_runs_the_command_as_that_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the server must run as root to switch users, and this test does not");
        return;
    }
    let server = ServerProc::ws(&[]).await.unwrap();
    let ran = exec_server(&[
        "run",
        "--connect",
        server.url(),
        "--user",
        "nobody",
        "--",
        "sh",
        "-c",
        "id -u; echo \"$USER\"",
    ])
    .await;
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (Some(0), "65534\nnobody\n"),
        "{ran:?}"
    );
    let ran = exec_server(&[
        "run",
        "--connect",
        server.url(),
        "--user",
        "no-such-user-here",
        "--",
        "true",
    ])
    .await;
    // A start the server refuses: 126, as a shell gives for a program it cannot run.
    assert_eq!(ran.code, Some(126), "{ran:?}");
    assert!(
        ran.stderr.starts_with("exec-server run: ") && ran.stderr.contains("no-such-user-here"),
        "{}",
        ran.stderr
    );
}
