//! `exec-server run` end to end: the real binary against a real server (WebSocket, or a
//! private stdio server with `--spawn`), exit statuses, stdin, signals, env and cwd, and a
//! connection cut mid-stream by a TCP proxy that `run` survives.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::client::{Kind, ServerProc, TempDir, as_nobody, bin, within};

/// The result of one `exec-server run`.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `exec-server run ARGS` with `stdin` as its input and waits for it.
async fn run(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Ran {
    let mut child = Command::new(bin())
        .arg("run")
        .args(args)
        .env_remove("EXEC_SERVER_URL")
        .env_remove("EXEC_SERVER_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn exec-server run");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feed = tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
        drop(input);
    });
    let output = within("exec-server run", child.wait_with_output())
        .await
        .unwrap();
    feed.await.unwrap();
    Ran {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn exit_status_is_propagated() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let ran = run(
        &["--connect", server.url(), "--", "sh", "-c", "exit 42"],
        b"",
        &[],
    )
    .await;
    assert_eq!(ran.code, Some(42), "{ran:?}");
    // A signal gives 128 + n.
    let ran = run(
        &["--connect", server.url(), "--", "sh", "-c", "kill -TERM $$"],
        b"",
        &[],
    )
    .await;
    assert_eq!(ran.code, Some(143), "{ran:?}");
    // A program the server cannot find: 127, as a shell says it.
    let ran = run(
        &["--connect", server.url(), "--", "no-such-program-here"],
        b"",
        &[],
    )
    .await;
    assert_eq!(ran.code, Some(127), "{ran:?}");
    assert!(
        ran.stderr.contains("no-such-program-here"),
        "{}",
        ran.stderr
    );
}

/// `run` reads the step and errno of a refused start (SPEC 3): 127 only for a program that
/// is not found, 126 for one that cannot be run, and a working directory that is the
/// problem is named as such.
#[tokio::test]
async fn a_refused_start_exits_127_only_when_the_program_is_not_found() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = ServerProc::ws(&[]).await.unwrap();
    let dir = TempDir::new("run-refused");
    let data = dir.join("data.txt");
    std::fs::write(&data, "not a program\n").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = data.to_str().unwrap();
    let cases: [(&[&str], i32, String); 5] = [
        (
            &["--cwd", "/nonexistent-e2e-dir", "--", "true"],
            126,
            "exec-server run: cannot run \"true\": the working directory \"/nonexistent-e2e-dir\" does not exist on the server\n".into(),
        ),
        (
            &["--cwd", data, "--", "true"],
            126,
            format!("exec-server run: cannot run \"true\": the working directory {data:?} is not a directory on the server\n"),
        ),
        (
            &["--", data],
            126,
            format!("exec-server run: cannot run {data:?}: {data}: Permission denied (os error 13) (-32000)\n"),
        ),
        (
            &["--", "/nonexistent-e2e/program"],
            127,
            "exec-server run: cannot run \"/nonexistent-e2e/program\": /nonexistent-e2e/program: No such file or directory (os error 2) (-32000)\n".into(),
        ),
        (
            &["--", "no-such-program-e2e"],
            127,
            "exec-server run: cannot run \"no-such-program-e2e\": no-such-program-e2e: No such file or directory (os error 2) (-32000)\n".into(),
        ),
    ];
    for (args, code, stderr) in cases {
        let mut all = vec!["--connect", server.url()];
        all.extend_from_slice(args);
        let ran = run(&all, b"", &[]).await;
        assert_eq!((ran.code, ran.stderr), (Some(code), stderr), "{args:?}");
    }
}

/// Without `--cwd`, `run` asks for its own current directory and falls back to `/` when the
/// server cannot enter it (here: a server running as `nobody`, a directory only root may
/// enter, found by the step of the error rather than its text).
#[tokio::test]
async fn without_cwd_a_directory_the_server_cannot_enter_falls_back_to_the_root() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(server) = as_nobody(Kind::Ws, &[]).await.unwrap() else {
        eprintln!("skipped: needs root and a `nobody` account");
        return;
    };
    let dir = TempDir::new("run-private-cwd");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let ran = within(
        "exec-server run",
        Command::new(bin())
            .args(["run", "--connect", server.url(), "--", "pwd"])
            .current_dir(&dir.0)
            .env_remove("EXEC_SERVER_URL")
            .env_remove("EXEC_SERVER_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            ran.status.code(),
            String::from_utf8_lossy(&ran.stdout).as_ref()
        ),
        (Some(0), "/\n"),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
}

#[tokio::test]
async fn stdin_stdout_and_stderr_are_forwarded() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let ran = run(
        &["--connect", server.url(), "--", "wc", "-l"],
        b"a\nb\n",
        &[],
    )
    .await;
    assert_eq!(
        (ran.code, ran.stdout.trim_ascii()),
        (Some(0), &b"2"[..]),
        "{ran:?}"
    );
    let ran = run(
        &[
            "--connect",
            server.url(),
            "--",
            "sh",
            "-c",
            "cat; echo to-stderr >&2",
        ],
        b"through cat\n",
        &[],
    )
    .await;
    assert_eq!(
        (ran.code, ran.stdout.as_slice()),
        (Some(0), &b"through cat\n"[..])
    );
    assert_eq!(ran.stderr, "to-stderr\n");
    // A megabyte of binary input arrives unchanged.
    let input: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let ran = run(&["--connect", server.url(), "--", "cat"], &input, &[]).await;
    assert_eq!(ran.code, Some(0));
    assert!(ran.stdout == input, "cat changed the bytes");
}

#[tokio::test]
async fn url_from_the_environment_and_env_and_cwd_options() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let ran = run(
        &[
            "--env",
            "GREETING=hi there",
            "--cwd",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING\"; pwd; test -n \"$PATH\"",
        ],
        b"",
        &[("EXEC_SERVER_URL", server.url())],
    )
    .await;
    assert_eq!(
        (ran.code, String::from_utf8_lossy(&ran.stdout).into_owned()),
        (Some(0), "hi there\n/tmp\n".to_owned())
    );
    // Without --cwd: the local current directory (the server has it: same host).
    let dir = std::env::current_dir().unwrap();
    let ran = run(&["--connect", server.url(), "--", "pwd"], b"", &[]).await;
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim_end(),
        dir.display().to_string()
    );
    // No server named: a clear error.
    let ran = run(&["--", "true"], b"", &[]).await;
    assert_eq!(ran.code, Some(255));
    assert!(ran.stderr.contains("--connect"), "{}", ran.stderr);
}

#[tokio::test]
async fn spawn_needs_no_server() {
    let ran = run(
        &[
            "--spawn",
            "--",
            "sh",
            "-c",
            "read x; echo \"out $x\"; echo err >&2; exit 3",
        ],
        b"line\n",
        &[],
    )
    .await;
    assert_eq!(
        (ran.code, ran.stdout.as_slice()),
        (Some(3), &b"out line\n"[..]),
        "{ran:?}"
    );
    assert_eq!(ran.stderr, "err\n");
    let ran = run(&["--spawn", "--", "sh", "-c", "exit 42"], b"", &[]).await;
    assert_eq!(ran.code, Some(42));
}

#[tokio::test]
async fn ctrl_c_without_a_tty_interrupts_the_remote_process() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--connect", server.url(), "--", "sh", "-c"])
        .arg("trap 'echo got INT; exit 5' INT; echo ready; while :; do sleep 0.05; done")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    within("ready", async {
        let mut buf = [0u8; 256];
        while !seen.ends_with(b"ready\n") {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "run ended early");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGINT);
    }
    let status = within("run to exit", child.wait()).await.unwrap();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).await.unwrap();
    assert_eq!(
        (status.code(), rest.as_slice()),
        (Some(5), &b"got INT\n"[..])
    );
}

#[tokio::test]
async fn a_closed_stdout_stops_the_command() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--connect", server.url(), "--", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 4];
    within("yes", stdout.read_exact(&mut buf)).await.unwrap();
    drop(stdout);
    let status = within("run to stop", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(141), "128 + SIGPIPE");
}

/// A TCP proxy whose connections can be cut; it keeps accepting new ones.
struct Proxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let conns = conns.clone();
            tokio::spawn(async move {
                while let Ok((mut down, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut up) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                    conns.lock().unwrap().push(task);
                }
            })
        };
        Proxy {
            addr,
            conns,
            accept,
        }
    }

    fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

fn fifo() -> PathBuf {
    let path = crate::client::temp_path("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap()
            .success()
    );
    path
}

/// Reads `stdout` into `seen` until it ends with `marker`.
async fn read_until(stdout: &mut tokio::process::ChildStdout, seen: &mut Vec<u8>, marker: &[u8]) {
    within("output", async {
        let mut buf = vec![0u8; 65536];
        while !seen.ends_with(marker) {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "run ended early");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
}

/// Releases a `read x < FIFO` in the command (opening blocks until it opens the FIFO).
async fn release(gate: &std::path::Path) {
    let gate = gate.to_owned();
    within(
        "the command to read its gate",
        tokio::task::spawn_blocking(move || std::fs::write(gate, "go\n")),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn a_dropped_connection_is_resumed_without_losing_or_repeating_output() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let proxy = Proxy::start(server.addr()).await;
    let url = server
        .url()
        .replace(&server.addr(), &proxy.addr.to_string());
    let (one, two) = (fifo(), fifo());
    // About 0.5 MB while the connection is down (within the server's 1 MiB retention),
    // then 1.4 MB once it is back.
    let script = format!(
        "seq 1 20000; read x < {}; seq 20001 100000; read y < {}; seq 100001 300000; echo done >&2",
        one.display(),
        two.display()
    );
    let mut child = Command::new(bin())
        .args(["run", "--connect", &url, "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    read_until(&mut stdout, &mut seen, b"\n20000\n").await;
    assert_eq!(proxy.connections(), 1);
    proxy.cut();
    release(&one).await;
    read_until(&mut stdout, &mut seen, b"\n100000\n").await;
    release(&two).await;
    let mut rest = Vec::new();
    within("the rest of the output", stdout.read_to_end(&mut rest))
        .await
        .unwrap();
    seen.extend_from_slice(&rest);
    let output = within("run to exit", child.wait_with_output())
        .await
        .unwrap();
    let _ = std::fs::remove_file(&one);
    let _ = std::fs::remove_file(&two);
    let expected: String = (1..=300000).map(|n| format!("{n}\n")).collect();
    assert!(
        seen == expected.as_bytes(),
        "output differs ({} bytes, expected {}); stderr: {}",
        seen.len(),
        expected.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "done\n",
        "nothing but the command's stderr"
    );
    assert_eq!(proxy.connections(), 1, "run connected again, once");
}

/// A local reader that stalls while stdin keeps coming loses nothing: `run`'s output is
/// pure backpressure (48 MiB through `cat`, far more than the client's queue and the
/// server's retention together).
#[tokio::test]
async fn a_stalled_stdout_loses_nothing_while_stdin_flows() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--connect", server.url(), "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut x: u32 = 1;
    let input: Vec<u8> = (0..48 * 1024 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    let feed = {
        let input = input.clone();
        tokio::spawn(async move {
            stdin.write_all(&input).await.unwrap();
            drop(stdin);
        })
    };
    // The reader stalls (a paused pager) while the writer keeps going.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut stdout = child.stdout.take().unwrap();
    let mut output = Vec::new();
    within("the output", stdout.read_to_end(&mut output))
        .await
        .unwrap();
    within("the input", feed).await.unwrap();
    let status = within("run to exit", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        output == input,
        "output differs: {} bytes of {}",
        output.len(),
        input.len()
    );
}
