//! Starts that fail, over the real binary: the error says which step failed and its errno
//! (SPEC 3), and the guardian never signals the pid a failed start had (SPEC 7.6), even
//! once an unrelated process has that pid.

use exec_server_protocol::{ErrorCode, method};
use serde_json::{Value, json};

use crate::client::{
    Kind, ServerProc, TempDir, alive, all_children_of, is_root, wait_until, within,
};

/// `process/start` params for `argv` in `cwd`, with `extra` laid over them.
fn start_params(argv: &[&str], cwd: &str, extra: Value) -> Value {
    let mut params = json!({
        "processId": "failing",
        "argv": argv,
        "cwd": cwd,
        "env": {"PATH": "/usr/bin:/bin"},
    });
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    params
}

async fn spawn_errors_carry_their_step_and_errno(kind: Kind) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("spawn-errors");
    let not_executable = dir.join("data.txt");
    std::fs::write(&not_executable, "not a program\n")?;
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644))?;
    let bad_interpreter = dir.join("script");
    std::fs::write(&bad_interpreter, "#!/nonexistent/interpreter\n")?;
    std::fs::set_permissions(&bad_interpreter, std::fs::Permissions::from_mode(0o755))?;
    let not_executable = not_executable.to_str().unwrap_or_default().to_owned();
    let bad_interpreter = bad_interpreter.to_str().unwrap_or_default().to_owned();
    let file_as_cwd = not_executable.clone();

    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let cases: Vec<(&str, Value, Value, &str)> = vec![
        (
            "a missing program (PATH lookup)",
            start_params(&["no-such-program-e2e"], "/", json!({})),
            json!({"step": "exec", "errno": "ENOENT"}),
            "No such file or directory (os error 2)",
        ),
        (
            "a missing program (a path)",
            start_params(&["/nonexistent-e2e/program"], "/", json!({})),
            json!({"step": "exec", "errno": "ENOENT"}),
            "No such file or directory (os error 2)",
        ),
        (
            "a missing interpreter",
            start_params(&[&bad_interpreter], "/", json!({})),
            json!({"step": "exec", "errno": "ENOENT"}),
            "No such file or directory (os error 2)",
        ),
        (
            "a missing cwd",
            start_params(&["true"], "/nonexistent-e2e-dir", json!({})),
            json!({"step": "cwd", "errno": "ENOENT"}),
            "No such file or directory (os error 2)",
        ),
        (
            "a cwd that is a file",
            start_params(&["true"], &file_as_cwd, json!({})),
            json!({"step": "cwd", "errno": "ENOTDIR"}),
            "Not a directory (os error 20)",
        ),
        (
            "an unknown user",
            start_params(&["true"], "/", json!({"user": "no-such-user-e2e"})),
            json!({"step": "user", "errno": null}),
            "unknown user \"no-such-user-e2e\"",
        ),
    ];
    for (name, params, data, text) in cases {
        let e = c
            .call_err(method::PROCESS_START, params, ErrorCode::SpawnFailed)
            .await;
        assert_eq!(e["data"], data, "{name}: {e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.ends_with(text), "{name}: {e}");
    }
    // A file without any execute bit: as root `access(X_OK)` says so too, so this is
    // refused with EACCES whoever runs the test.
    let e = c
        .call_err(
            method::PROCESS_START,
            start_params(&[&not_executable], "/", json!({})),
            ErrorCode::SpawnFailed,
        )
        .await;
    assert_eq!(e["data"], json!({"step": "exec", "errno": "EACCES"}), "{e}");
    // The id is free again after every failure.
    c.start("failing", &["true"], json!({})).await;
    c.events_until_closed("failing").await;
    Ok(())
}

#[tokio::test]
async fn spawn_errors_carry_their_step_and_errno_stdio() -> anyhow::Result<()> {
    spawn_errors_carry_their_step_and_errno(Kind::Stdio).await
}

#[tokio::test]
async fn spawn_errors_carry_their_step_and_errno_ws() -> anyhow::Result<()> {
    spawn_errors_carry_their_step_and_errno(Kind::Ws).await
}

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

fn last_pid() -> Option<i32> {
    std::fs::read_to_string(NS_LAST_PID)
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn pid_max() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768)
}

/// Makes `pid` the next pid the kernel hands out (unless someone else forks first).
fn next_pid_is(pid: i32) -> bool {
    std::fs::write(NS_LAST_PID, (pid - 1).to_string()).is_ok()
}

/// A free pid a little ahead of the last one handed out.
fn free_pid_ahead() -> i32 {
    let max = pid_max();
    let mut pid = last_pid().unwrap_or(1000) + 200;
    loop {
        if pid >= max - 10 {
            pid = 1000;
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return pid;
        }
        pid += 1;
    }
}

/// A process of our own (not the server's) in a session of its own, whose pid is `pid`;
/// `None` when another process took that pid first.
fn unrelated_setsid_sleep(pid: i32, marker: &str) -> Option<std::process::Child> {
    if !next_pid_is(pid) {
        return None;
    }
    let mut child = std::process::Command::new("setsid")
        .args(["sleep", marker])
        .stdin(std::process::Stdio::null())
        .spawn()
        .ok()?;
    if child.id() as i32 == pid {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// SPEC 7.6: a pid whose start failed (exec failed after the child had announced itself
/// to the guardian) is never signalled, so an unrelated process that reuses it survives
/// the server's death.
#[tokio::test]
async fn the_guardian_never_signals_the_pid_of_a_failed_start() -> anyhow::Result<()> {
    if !is_root()
        || std::fs::OpenOptions::new()
            .write(true)
            .open(NS_LAST_PID)
            .is_err()
    {
        eprintln!("skipped: choosing the next pid needs root (writing {NS_LAST_PID})");
        return Ok(());
    }
    let marker = format!("1000.{}7", std::process::id());
    let mut server = ServerProc::stdio(&[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    // Warm up: the server's threads exist before the pids are counted.
    c.start("warm", &["true"], json!({})).await;
    c.events_until_closed("warm").await;
    // Another process forks between our write of ns_last_pid and the failed start now
    // and then (the machine is shared): try again until the failed child had `pid`.
    let mut sleeper = None;
    for _ in 0..500 {
        let pid = free_pid_ahead();
        if !next_pid_is(pid) {
            continue;
        }
        c.call_err(
            method::PROCESS_START,
            start_params(&["/nonexistent-e2e/program"], "/", json!({})),
            ErrorCode::SpawnFailed,
        )
        .await;
        // The last pid handed out is `pid`: the failed child had it (it was handed out
        // after our write), and nothing else since.
        if last_pid() != Some(pid) {
            continue;
        }
        if let Some(child) = unrelated_setsid_sleep(pid, &marker) {
            sleeper = Some(child);
            break;
        }
    }
    let Some(mut sleeper) = sleeper else {
        anyhow::bail!("no attempt gave the failed start's pid to an unrelated process");
    };
    let pid = sleeper.id();
    let guardian = all_children_of(server.pid())
        .into_iter()
        .find(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).nth(1) == Some(b"guardian".as_slice())
        })
        .expect("the server's guardian");
    server.signal(libc::SIGKILL);
    within("the server to die", server.child.wait()).await?;
    // The guardian kills what it holds and exits.
    wait_until("the guardian to exit", || !alive(guardian)).await;
    let survived = alive(pid);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(
        survived,
        "the guardian killed pid {pid}, which only a failed start had held"
    );
    Ok(())
}
