//! The guardian: a small companion process that kills every process group the server
//! started when the server dies without cleaning up (SIGKILL, a crash, the OOM killer).
//!
//! The server starts it once, before any other thread exists, with the read end of a
//! pipe as its stdin; the server keeps the only write end (close-on-exec, so no child
//! holds it). Every child announces itself on that pipe (`+PID`) from the clone child
//! (`spawn/child.rs`), once it leads its new group or session and before it execs, so
//! before it can fork anything. The server withdraws an id (`-PID`) before every reap of
//! an announced child: a leader once its group and session have no live member left, a
//! start that failed after the announcement (its exec, its directory, its user) and a
//! child killed because setting it up failed. So the guardian never holds an id that could
//! have been reused, and never signals one (SPEC 7.6). When the pipe
//! reaches end-of-file the server is gone, whatever killed it: the guardian sends
//! SIGTERM (and SIGCONT) to every process whose group or session it holds, SIGKILL to
//! what is left after half a second, and exits. The guardian runs in a session of its
//! own and ignores the terminal's signals, so a Ctrl-C or a signal to the server's
//! process group does not take it down with the server.

use std::ffi::OsStr;
use std::io::{self, BufRead as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

/// The server's write end of the guardian pipe, or -1 when no guardian runs.
static PIPE_FD: AtomicI32 = AtomicI32::new(-1);

/// How long the guardian waits between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// How long the guardian keeps killing before it gives up.
const KILL_FOR: Duration = Duration::from_millis(1500);

/// The running guardian process, owned by the server.
#[derive(Debug)]
pub struct Guardian {
    child: Child,
    pipe: Option<OwnedFd>,
}

impl Guardian {
    /// Starts `program args…` as the guardian (a binary whose entry point calls
    /// [`guardian_main`]) and routes every later child's announcement to it. Call it
    /// before any other thread is started.
    pub fn start<I, S>(program: &Path, args: I) -> io::Result<Guardian>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .current_dir("/");
        // SAFETY: the hook runs in the forked child before exec and only calls
        // async-signal-safe functions (setsid, sigaction, sigprocmask, close_range, fcntl).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                sys::reset_signals_in_child();
                sys::cloexec_from_3_in_child();
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        crate::reaper::set_guardian(child.id() as i32);
        PIPE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        Ok(Guardian {
            child,
            pipe: Some(write),
        })
    }

    /// The guardian's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server is done (every child reaped): close the pipe and let the guardian exit,
    /// waiting for it a bounded time.
    pub fn stop(mut self) {
        self.close();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        tracing::warn!("the guardian did not exit in time");
    }

    fn close(&mut self) {
        PIPE_FD.store(-1, Ordering::SeqCst);
        self.pipe = None;
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        self.close();
    }
}

/// Formats `+PID\n` or `-PID\n` into `buf` without allocating; returns its length.
fn format_line(buf: &mut [u8; 16], sign: u8, pid: i32) -> usize {
    let mut digits = [0u8; 12];
    let mut n = pid.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    buf[0] = sign;
    for i in 0..len {
        buf[1 + i] = digits[len - 1 - i];
    }
    buf[1 + len] = b'\n';
    len + 2
}

fn send(sign: u8, pid: i32) {
    let fd = PIPE_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 16];
    let len = format_line(&mut buf, sign, pid);
    // SAFETY: write of a stack buffer; a line of at most 16 bytes is written atomically
    // (below PIPE_BUF). Errors (the guardian is gone) are ignored: there is nobody to tell.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), len);
    }
}

/// In the clone child before exec (one raw `write`): announce this process (the leader of
/// a new group, and of a new session under a tty) to the guardian. Call it with every
/// signal blocked: a dead guardian then leaves a SIGPIPE pending instead of killing the
/// child, and the caller discards it.
pub(crate) fn announce_in_child() {
    // SAFETY: getpid is async-signal-safe.
    send(b'+', unsafe { libc::getpid() });
}

/// Withdraw `pid` before reaping it (a leader whose group and session have no live member
/// left, or a child whose start failed): after the reap the id may be reused.
pub(crate) fn withdraw(pid: i32) {
    send(b'-', pid);
}

/// The guardian's whole life: read announcements from stdin until end-of-file, then kill
/// whatever is left of the announced groups and sessions. Returns the exit status.
pub fn guardian_main() -> i32 {
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ] {
        // SAFETY: ignoring a catchable signal has no memory-safety preconditions.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let mut ids: Vec<i32> = Vec::new();
    let stdin = io::stdin();
    let mut lines = stdin.lock();
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = line.trim();
        let (sign, number) = text.split_at(text.len().min(1));
        let Ok(pid) = number.parse::<i32>() else {
            continue;
        };
        match sign {
            "+" if pid > 1 && !ids.contains(&pid) => ids.push(pid),
            "-" => ids.retain(|id| *id != pid),
            _ => {}
        }
    }
    if ids.is_empty() {
        return 0;
    }
    let killed = kill_everything(&ids);
    if killed > 0 {
        eprintln!(
            "exec-server guardian: the server died without cleaning up; {killed} process(es) of its {} process group(s) killed",
            ids.len()
        );
    }
    0
}

/// SIGTERM (with SIGCONT) to every live member of the groups and sessions `ids`, SIGKILL
/// after [`TERM_GRACE`], repeated until none is left or [`KILL_FOR`] has passed.
/// Returns how many processes were signalled.
fn kill_everything(ids: &[i32]) -> usize {
    let mut signalled = std::collections::HashSet::new();
    let signal_all = |signal: i32, signalled: &mut std::collections::HashSet<i32>| {
        for id in ids {
            let _ = sys::killpg(*id, signal);
        }
        let _ = sys::for_each_process(|p| {
            if !p.zombie && (ids.contains(&p.pgrp) || ids.contains(&p.session)) {
                let _ = sys::kill(p.pid, signal);
                if signal != libc::SIGCONT {
                    signalled.insert(p.pid);
                }
            }
        });
    };
    signal_all(libc::SIGTERM, &mut signalled);
    signal_all(libc::SIGCONT, &mut signalled);
    let poll = Duration::from_millis(20);
    let grace_end = Instant::now() + TERM_GRACE;
    while Instant::now() < grace_end {
        if sys::live_groups(ids).is_ok_and(|live| live.is_empty()) {
            return signalled.len();
        }
        std::thread::sleep(poll);
    }
    let kill_end = Instant::now() + KILL_FOR;
    loop {
        signal_all(libc::SIGKILL, &mut signalled);
        if sys::live_groups(ids).is_ok_and(|live| live.is_empty()) || Instant::now() >= kill_end {
            return signalled.len();
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_lines_are_formatted_without_allocating() {
        let mut buf = [0u8; 16];
        let n = format_line(&mut buf, b'+', 4_194_304);
        assert_eq!(&buf[..n], b"+4194304\n");
        let n = format_line(&mut buf, b'-', 7);
        assert_eq!(&buf[..n], b"-7\n");
        let n = format_line(&mut buf, b'+', i32::MAX);
        assert_eq!(&buf[..n], b"+2147483647\n");
    }
}
