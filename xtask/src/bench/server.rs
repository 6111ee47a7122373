//! The release `exec-server` binary as a separate process, and what /proc says about it (CPU time, RSS, threads).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::client::{Client, within};

/// A running `exec-server serve`.
pub struct Server {
    child: Child,
    pid: u32,
    url: Option<String>,
    stdio: Option<(ChildStdin, ChildStdout)>,
    /// `perf record` attached to the server, when `BENCH_PERF_DIR` is set.
    perf: Option<Child>,
}

/// Attaches `perf record -g` to `pid`, writing `$BENCH_PERF_DIR/LABEL.data`, when that
/// variable is set.
fn perf_record(pid: u32, label: &str) -> Result<Option<Child>> {
    let Some(dir) = std::env::var_os("BENCH_PERF_DIR") else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("{label}.data"));
    let child = Command::new("perf")
        .args([
            "record",
            "--no-inherit",
            "-e",
            "cpu-clock",
            "-F",
            "4000",
            "-g",
            "-p",
        ])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn perf record")?;
    // perf needs a moment to attach; its first samples are not worth a handshake.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Some(child))
}

impl Server {
    /// `exec-server serve --listen ws://127.0.0.1:0` with `extra` flags; reads the URL it prints.
    pub async fn ws(bin: &Path, label: &str, extra: &[&str]) -> Result<Server> {
        let mut child = command(bin, "ws://127.0.0.1:0", extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = within("the server's URL line", lines.next_line())
            .await??
            .context("the server printed no URL")?;
        let pid = child.id().context("the server has no pid")?;
        Ok(Server {
            child,
            pid,
            url: Some(url),
            stdio: None,
            perf: perf_record(pid, label)?,
        })
    }

    /// `exec-server serve --listen stdio` with `extra` flags.
    pub async fn stdio(bin: &Path, label: &str, extra: &[&str]) -> Result<Server> {
        let mut child = command(bin, "stdio", extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let pid = child.id().context("the server has no pid")?;
        Ok(Server {
            child,
            pid,
            url: None,
            stdio: Some((stdin, stdout)),
            perf: perf_record(pid, label)?,
        })
    }

    /// A new initialized client: a WebSocket connection, or (once) the stdio pipes.
    pub async fn client(&mut self, binary: bool) -> Result<Client> {
        if let Some((stdin, stdout)) = self.stdio.take() {
            return Client::stdio(stdin, stdout).await;
        }
        match &self.url {
            Some(url) => Client::ws(url, binary).await,
            None => bail!("the stdio server has only one client"),
        }
    }

    /// A new WebSocket client asking for binary output and an output window per process.
    pub async fn windowed_client(&self, window: u64) -> Result<Client> {
        match &self.url {
            Some(url) => Client::ws_with(url, true, Some(window)).await,
            None => bail!("output windows are measured over WebSocket"),
        }
    }

    /// CPU time the server has used so far (user + system, every thread).
    pub fn cpu(&self) -> Result<Duration> {
        cpu_time(self.pid)
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> Result<u64> {
        status_field(self.pid, "VmRSS:").map(|kib| kib * 1024)
    }

    /// Number of threads.
    pub fn threads(&self) -> Result<u64> {
        status_field(self.pid, "Threads:")
    }

    /// SIGTERM, then waits for the exit (the server terminates and reaps every child).
    pub async fn stop(mut self) -> Result<()> {
        if let Some(mut perf) = self.perf.take()
            && let Some(pid) = perf.id()
        {
            // SAFETY: kill(2) on our own unreaped child; SIGINT makes perf write its file.
            unsafe {
                libc::kill(pid as i32, libc::SIGINT);
            }
            within("perf record to finish", perf.wait()).await??;
        }
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let status = within("the server to exit", self.child.wait()).await??;
        if !status.success() {
            bail!("the server exited with {status}");
        }
        Ok(())
    }
}

fn command(bin: &Path, listen: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", listen, "--log-level", "warn"])
        .args(extra)
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// The server binary: the release build, or `BENCH_SERVER_BIN` when set (to compare
/// builds of other commits on the same machine at the same time).
pub fn binary(root: &Path) -> PathBuf {
    std::env::var_os("BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/exec-server"))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// utime + stime of `pid` from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short stat")?
            .parse::<u64>()
            .context("stat field")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_nanos(total * 1_000_000_000 / clock_ticks()))
}

/// A `kB` or count field of /proc/PID/status.
fn status_field(pid: u32, name: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name} in /proc/{pid}/status"))
}
