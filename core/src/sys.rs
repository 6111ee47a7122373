//! Thin, safe wrappers over the few libc calls core needs (signals, terminals, fds, limits).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// Send `signal` to the process group `pgid`.
pub(crate) fn killpg(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        // Never signal "every process" or init's group by accident.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: killpg has no memory-safety preconditions.
    let rc = unsafe { libc::killpg(pgid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `read(2)` into the spare capacity of `buf` (no zeroing), appending what was read.
pub(crate) fn read_into(fd: &OwnedFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: the kernel writes at most spare.len() bytes into the spare capacity.
    let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let len = buf.len();
    // SAFETY: the kernel initialised exactly n bytes after len.
    unsafe { buf.set_len(len + n) };
    Ok(n)
}

/// `write(2)` of `data`.
pub(crate) fn write(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
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
    let rc = unsafe { libc::access(path.as_ptr(), libc::X_OK) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The name of signal `n` as the wire spells it (`"SIGKILL"`).
pub(crate) fn signal_name(n: i32) -> String {
    let name = match n {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
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
pub(crate) fn signal_number(signal: exec_server_protocol::Signal) -> i32 {
    use exec_server_protocol::Signal;
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

/// Raise RLIMIT_NOFILE's soft limit to the hard limit (1000 processes need ~3000 fds).
pub(crate) fn raise_fd_limit() {
    // SAFETY: rlimit is plain old data filled by getrlimit.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: lim points to a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
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

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_protocol::Signal;

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
        }
    }
}
