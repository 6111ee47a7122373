//! The machine's own limits, measured in the same run: a raw pipe, a raw pty echo through `cat`, and a bare fork/exec/wait.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// `head -c BYTES /dev/zero` read through a pipe in 64 KiB reads (what `| cat` does);
/// returns the wall time from spawn to end of file and exit.
pub fn pipe(bytes: u64) -> Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn head")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let status = child.wait()?;
    let elapsed = start.elapsed();
    ensure!(status.success(), "head failed: {status}");
    ensure!(total == bytes, "the raw pipe gave {total} of {bytes} bytes");
    Ok(elapsed)
}

/// The command that runs behind a terminal for the echo figures: raw mode, no echo by
/// the terminal, `R` when ready, then `cat` sends every byte back.
pub const ECHO_SCRIPT: &str = "stty raw -echo; printf R; exec cat";

/// Opens a pty pair: (master, slave).
fn open_pty() -> Result<(File, File)> {
    // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes into our buffer.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 {
            bail!("posix_openpt: {}", std::io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(master);
        if libc::grantpt(master.as_raw_fd()) != 0 || libc::unlockpt(master.as_raw_fd()) != 0 {
            bail!("grantpt/unlockpt: {}", std::io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            bail!("ptsname_r: {}", std::io::Error::last_os_error());
        }
        let path = std::ffi::CStr::from_ptr(name.as_ptr());
        let slave = libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if slave < 0 {
            bail!("open {path:?}: {}", std::io::Error::last_os_error());
        }
        Ok((File::from(master), File::from_raw_fd(slave)))
    }
}

/// `cat` in raw mode behind a pty the bench holds the master of.
pub struct RawPty {
    master: File,
    child: std::process::Child,
}

impl RawPty {
    /// Starts [`ECHO_SCRIPT`] on a new pty and waits until it is ready.
    pub fn open() -> Result<RawPty> {
        let (mut master, slave) = open_pty()?;
        let child = Command::new("sh")
            .args(["-c", ECHO_SCRIPT])
            .stdin(slave.try_clone()?)
            .stdout(slave.try_clone()?)
            .stderr(slave)
            .spawn()
            .context("spawn sh behind the pty")?;
        let mut byte = [0u8; 1];
        master.read_exact(&mut byte)?;
        ensure!(byte == *b"R", "unexpected first byte {byte:?} from the pty");
        Ok(RawPty { master, child })
    }

    /// One byte written to the master, through `cat`, and read back.
    pub fn round_trip(&mut self) -> Result<Duration> {
        let mut byte = [0u8; 1];
        let start = Instant::now();
        self.master.write_all(b"x")?;
        self.master.read_exact(&mut byte)?;
        let elapsed = start.elapsed();
        ensure!(byte == *b"x", "the pty echoed {byte:?}");
        Ok(elapsed)
    }

    pub fn close(mut self) {
        let _ = self.child.kill();
        drop(self.master);
        let _ = self.child.wait();
    }
}

/// fork, execv `/bin/true`, waitpid, `count` times; pushes each one's milliseconds.
pub fn fork_exec_wait(count: usize, times: &mut Vec<f64>) -> Result<()> {
    let path = CString::new("/bin/true")?;
    let argv = [path.as_ptr(), std::ptr::null()];
    for _ in 0..count {
        let start = Instant::now();
        // SAFETY: the child only calls execv and _exit (async-signal-safe); the argv
        // pointers were built before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        ensure!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        let elapsed = start.elapsed();
        ensure!(
            waited == pid,
            "waitpid: {}",
            std::io::Error::last_os_error()
        );
        ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "/bin/true failed"
        );
        times.push(elapsed.as_secs_f64() * 1e3);
    }
    Ok(())
}
