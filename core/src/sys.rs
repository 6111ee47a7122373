//! Thin, safe wrappers over the libc calls core needs: signals, terminals, fds, pidfds and waits, limits.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use exec_server_protocol::Signal;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Send `signal` to the process group `pgid`.
pub(crate) fn killpg(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        // Never signal "every process" or init's group by accident.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: killpg has no memory-safety preconditions.
    check(unsafe { libc::killpg(pgid, signal) }).map(drop)
}

/// Send `signal` to the process `pid`.
pub(crate) fn kill(pid: i32, signal: i32) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill has no memory-safety preconditions.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// The foreground process group of the terminal whose master is `fd`.
pub(crate) fn tcgetpgrp(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: fd is a valid open descriptor for the duration of the call.
    let rc = unsafe { libc::tcgetpgrp(fd.as_raw_fd()) };
    if rc > 0 {
        Ok(rc)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The terminal's EOF character (VEOF), Ctrl-D when it cannot be read.
pub(crate) fn veof_char(fd: BorrowedFd<'_>) -> u8 {
    // SAFETY: termios is plain old data; tcgetattr fills it or fails.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is valid and termios points to a properly sized struct.
    let rc = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut termios) };
    if rc == 0 {
        let c = termios.c_cc[libc::VEOF];
        if c != 0 {
            return c;
        }
    }
    0x04
}

/// Put `fd` in non-blocking mode.
pub(crate) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a valid fd with integer arguments.
    let flags = check(unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// How many bytes a pipe or terminal holds ready to read (`FIONREAD`).
pub(crate) fn readable_bytes(fd: &OwnedFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `read(2)` into `buf`.
pub(crate) fn read(fd: &OwnedFd, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `write(2)` of `data`.
pub(crate) fn write(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    // SAFETY: data is a valid slice for the duration of the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `access(path, X_OK)`.
pub(crate) fn is_executable(path: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: path is a valid NUL-terminated string.
    check(unsafe { libc::access(path.as_ptr(), libc::X_OK) }).map(drop)
}

/// A pidfd for our own (not yet reaped) child `pid`: it stays valid across the child's
/// exit, and waiting through it can never touch an unrelated process.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor (close-on-exec) that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal`: signal the process `pidfd` refers to (never a process that reused
/// its pid).
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a valid descriptor, a signal number, no siginfo and
    // no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pidfds of the live processes of session `session` outside its leader's process group
/// (a shell's jobs under a tty). Each was a member when its pidfd was opened (its
/// `/proc` entry is read again after the open), so signals through it reach that process
/// and no other. Walks every process in `/proc`: run it on the blocking pool.
pub(crate) fn session_jobs(session: i32) -> Vec<(i32, OwnedFd)> {
    let mut pids = Vec::new();
    let _ = for_each_process(|p| {
        if p.session == session && p.pgrp != session && !p.zombie {
            pids.push(p.pid);
        }
    });
    pids.into_iter()
        .filter_map(|pid| {
            let fd = pidfd_open(pid).ok()?;
            proc_stat(pid)
                .filter(|p| p.session == session && p.pgrp != session && !p.zombie)
                .map(|_| (pid, fd))
        })
        .collect()
}

/// How a child ended, from its wait status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExitStatus {
    /// The exit status, or 128 + the signal number.
    pub code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<String>,
}

fn waitid_pidfd(pidfd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain old data filled by waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: info points to a valid siginfo_t; P_PIDFD takes the fd as the id.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags | libc::WEXITED | libc::WNOHANG,
            )
        };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    // SAFETY: waitid filled info; si_pid is 0 when no child has changed state (WNOHANG).
    if unsafe { info.si_pid() } == 0 {
        return Ok(None);
    }
    // SAFETY: for a CLD_* code the sigchld member of the union is the one filled.
    let status = unsafe { info.si_status() };
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => ExitStatus {
            code: status,
            signal: None,
        },
        _ => ExitStatus {
            code: 128 + status,
            signal: Some(signal_name(status)),
        },
    }))
}

/// The child's exit status if it has exited, without reaping it: the zombie keeps its
/// pid, and with it the process group id, reserved.
pub(crate) fn peek_exit(pidfd: BorrowedFd<'_>) -> io::Result<Option<ExitStatus>> {
    waitid_pidfd(pidfd, libc::WNOWAIT)
}

/// Reap the exited child (after this its pid may be reused).
pub(crate) fn reap(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    waitid_pidfd(pidfd, 0).map(drop)
}

/// Reap child `pid`, waiting for it (used only right after killing it).
pub(crate) fn reap_blocking(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

/// A process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: i32,
    pub zombie: bool,
    pub pgrp: i32,
    pub session: i32,
}

/// Parses the interesting fields of a `/proc/PID/stat` line.
fn parse_stat(pid: i32, text: &[u8]) -> Option<ProcStat> {
    // "pid (comm) S ppid pgrp session ...": comm may hold spaces and parentheses.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        zombie: state == "Z" || state == "X",
        pgrp,
        session,
    })
}

/// Every process visible in `/proc`, calling `f` for each (processes that vanish
/// while being read are skipped).
pub(crate) fn for_each_process(mut f: impl FnMut(ProcStat)) -> io::Result<()> {
    use std::io::Read as _;
    let mut buf = [0u8; 1024];
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let mut path = std::path::PathBuf::from("/proc");
        path.push(&name);
        path.push("stat");
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(n) = file.read(&mut buf) else { continue };
        if let Some(stat) = parse_stat(pid, &buf[..n]) {
            f(stat);
        }
    }
    Ok(())
}

/// `/proc/PID/stat` of one process, if it still exists.
pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    use std::io::Read as _;
    let mut buf = [0u8; 1024];
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = file.read(&mut buf).ok()?;
    parse_stat(pid, &buf[..n])
}

/// The children of every thread of the process whose `/proc` directory is `dir`
/// (`/proc/PID/task/TID/children`, which lists zombies too).
fn children_in(dir: &str) -> io::Result<Vec<i32>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("{dir}/task"))? {
        let Ok(task) = task else { continue };
        let mut path = task.path();
        path.push("children");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // The file is missing on kernels without CONFIG_PROC_CHILDREN.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
            Err(_) => continue,
        };
        out.extend(
            text.split_ascii_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Ok(out)
}

/// This process's children (every thread's).
pub(crate) fn children_of_self() -> io::Result<Vec<i32>> {
    children_in("/proc/self")
}

/// The children of `pid` (none if it is gone).
pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    children_in(&format!("/proc/{pid}")).unwrap_or_default()
}

/// Reap child `pid` if it has exited (never waits).
pub(crate) fn reap_pid_nohang(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on a child of ours with a valid status pointer.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

/// The ids among `ids` that still have a live (not zombie) process in the process group
/// or the session of that id.
pub(crate) fn live_groups(ids: &[i32]) -> io::Result<Vec<i32>> {
    let mut live = Vec::new();
    for_each_process(|p| {
        if p.zombie {
            return;
        }
        for id in ids {
            if (p.pgrp == *id || p.session == *id) && !live.contains(id) {
                live.push(*id);
            }
        }
    })?;
    Ok(live)
}

/// The name of signal `n` as the wire spells it (`"SIGKILL"`): the client-sendable
/// signals take their names from the protocol, the others are spelled here.
pub(crate) fn signal_name(n: i32) -> String {
    if let Some(s) = Signal::ALL.into_iter().find(|s| signal_number(*s) == n) {
        return s.name().to_owned();
    }
    let name = match n {
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGIO => "SIGIO",
        libc::SIGSYS => "SIGSYS",
        #[cfg(any(target_os = "linux", target_os = "android"))]
        libc::SIGPWR => "SIGPWR",
        #[cfg(any(target_os = "linux", target_os = "android"))]
        libc::SIGSTKFLT => "SIGSTKFLT",
        _ => return format!("SIG{n}"),
    };
    name.to_owned()
}

/// The OS number of a protocol signal.
pub(crate) fn signal_number(signal: Signal) -> i32 {
    match signal {
        Signal::Hup => libc::SIGHUP,
        Signal::Int => libc::SIGINT,
        Signal::Quit => libc::SIGQUIT,
        Signal::Kill => libc::SIGKILL,
        Signal::Usr1 => libc::SIGUSR1,
        Signal::Usr2 => libc::SIGUSR2,
        Signal::Term => libc::SIGTERM,
        Signal::Cont => libc::SIGCONT,
        Signal::Stop => libc::SIGSTOP,
        Signal::Tstp => libc::SIGTSTP,
        Signal::Winch => libc::SIGWINCH,
    }
}

/// The RLIMIT_NOFILE the server was started with, when [`raise_fd_limit`] raised it:
/// children get it back before they exec.
static ORIGINAL_FD_LIMIT: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// The open-files limit a child must be given back (the one the server was started with),
/// when the server raised its own.
pub(crate) fn original_fd_limit() -> Option<libc::rlimit> {
    ORIGINAL_FD_LIMIT.get().copied()
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit (1000 processes need ~3000 fds),
/// remembering the original for the children (a program may rely on its usual limit:
/// `select` cannot take descriptors above 1023).
pub(crate) fn raise_fd_limit() {
    // SAFETY: rlimit is plain old data filled by getrlimit.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: lim points to a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let _ = ORIGINAL_FD_LIMIT.set(lim);
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: raised is a valid rlimit; failure leaves the limit unchanged.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::debug!(
                "could not raise RLIMIT_NOFILE: {}",
                io::Error::last_os_error()
            );
        }
    }
}

// ---------------------------------------------------------------- in a child before exec

/// In the clone child before exec (one raw system call): set RLIMIT_NOFILE to `limit`.
/// Limits belong to the child's own process, so the server's stay as they are.
pub(crate) fn set_fd_limit_in_child(limit: &libc::rlimit) -> io::Result<()> {
    // SAFETY: prlimit64 on the calling process with a valid new limit and no old one.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE,
            limit as *const libc::rlimit,
            std::ptr::null_mut::<libc::rlimit>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In a forked child before exec (async-signal-safe calls only): every signal back to
/// its default action, so a child of a server started with SIGINT ignored (a background
/// job) still dies of SIGINT, and an empty signal mask.
pub(crate) fn reset_signals_in_child() {
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction with SIG_DFL and an empty mask is async-signal-safe and valid
        // for every catchable signal; errors (invalid numbers) are ignored.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    // SAFETY: sigprocmask with an empty set is async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// In a child before exec (the guardian's forked child, or a clone child sharing the
/// server's memory: async-signal-safe calls only, no allocation): mark every descriptor
/// from 3 up close-on-exec, so descriptors the server inherited without that flag never
/// reach the program (a stray pipe end there could keep some reader from seeing EOF).
/// Marked rather than closed so the standard library's exec-error pipe keeps working.
/// `close_range` (Linux 5.11+) first; on older kernels the entries of `/proc/self/fd`;
/// without `/proc`, every descriptor below the open-files limit.
pub(crate) fn cloexec_from_3_in_child() {
    // SAFETY: close_range only changes descriptor flags in this (child) process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    if cloexec_listed_fds_in_child() {
        return;
    }
    // SAFETY: rlimit is plain old data; getrlimit and fcntl are async-signal-safe.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            4096
        };
        for fd in 3..max {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Marks every descriptor listed in `/proc/self/fd` (from 3 up) close-on-exec with raw
/// system calls and a stack buffer (no allocation). `false` when the list is unreadable.
fn cloexec_listed_fds_in_child() -> bool {
    const PATH: &[u8] = b"/proc/self/fd\0";
    // SAFETY: open, getdents64, fcntl and close are async-signal-safe system calls; the
    // buffer lives on the stack and the kernel writes at most its length.
    unsafe {
        let dir = libc::open(
            PATH.as_ptr().cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off + 19 < n as usize {
                // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                if reclen == 0 {
                    break;
                }
                let mut fd: libc::c_int = 0;
                let mut digits = 0;
                let mut i = off + 19;
                while i < off + reclen && buf[i] != 0 {
                    let b = buf[i];
                    if !b.is_ascii_digit() {
                        digits = 0;
                        break;
                    }
                    fd = fd
                        .saturating_mul(10)
                        .saturating_add((b - b'0') as libc::c_int);
                    digits += 1;
                    i += 1;
                }
                if digits > 0 && fd >= 3 && fd != dir {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
                off += reclen;
            }
        }
        libc::close(dir);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_signals_round_trip_through_their_numbers() {
        for s in Signal::ALL {
            assert_eq!(signal_name(signal_number(s)), s.name());
        }
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(libc::SIGABRT), "SIGABRT");
        assert_eq!(
            signal_name(libc::SIGRTMIN() + 1),
            format!("SIG{}", libc::SIGRTMIN() + 1)
        );
    }

    #[test]
    fn killpg_refuses_group_ids_that_mean_more_than_one_group() {
        for pgid in [-1, 0, 1] {
            let err = killpg(pgid, 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
            let err = kill(pgid, 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        }
    }

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = b"4242 (a) b (c)) S 1 4240 4200 0 -1 4194560 100";
        assert_eq!(
            parse_stat(4242, line),
            Some(ProcStat {
                pid: 4242,
                zombie: false,
                pgrp: 4240,
                session: 4200
            })
        );
        let zombie = b"7 (sh) Z 1 7 7 0";
        assert!(parse_stat(7, zombie).is_some_and(|p| p.zombie));
        assert_eq!(parse_stat(1, b"garbage"), None);
    }

    #[test]
    fn the_proc_fallback_marks_inherited_descriptors_close_on_exec() {
        // SAFETY: dup of stdin gives a fresh descriptor without FD_CLOEXEC.
        let fd = unsafe { libc::dup(0) };
        assert!(fd >= 3);
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = || unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags() & libc::FD_CLOEXEC, 0);
        // What runs on kernels without close_range (it only sets flags, so it is safe here).
        assert!(cloexec_listed_fds_in_child());
        assert_eq!(flags() & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        // SAFETY: closing the descriptor dup gave us.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn this_process_is_seen_in_its_own_group() {
        // SAFETY: getpgrp and getpid have no preconditions.
        let (pgrp, pid) = unsafe { (libc::getpgrp(), libc::getpid()) };
        let mut me = None;
        for_each_process(|p| {
            if p.pid == pid {
                me = Some(p);
            }
        })
        .unwrap();
        assert_eq!(me.map(|p| p.pgrp), Some(pgrp));
        assert_eq!(live_groups(&[pgrp]).unwrap(), vec![pgrp]);
    }
}
