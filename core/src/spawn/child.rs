//! Starting a child without copying the server: `clone(CLONE_VM | CLONE_VFORK)`, the way
//! `posix_spawn` does it, with the steps `posix_spawn` cannot take (announcing the child
//! to the guardian, marking stray descriptors close-on-exec, a controlling terminal,
//! switching users).
//!
//! A `fork` of the server copies its page tables and was the largest single cost of a
//! spawn. With `CLONE_VM` the child runs in the server's memory, on a stack of its own,
//! while the thread that cloned it waits (`CLONE_VFORK`) until it has called `execve` or
//! exited. So the child may only make raw system calls on data prepared before the clone:
//! no allocation, no lock, no glibc wrapper with process-wide effects (glibc's `setuid`
//! would try to change the credentials of every server thread: the raw system calls are
//! used). Every signal is blocked around the clone and the child resets every handler
//! before unblocking, so no server signal handler can run in the child. A step that fails
//! leaves its errno in memory the parent reads once the child is gone.

use std::ffi::{CStr, CString, c_void};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::account::Account;
use crate::{guardian, sys};

/// Size of the child's stack (it runs a handful of system calls).
const STACK_BYTES: usize = 64 * 1024;

/// How the child sets up its process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// A new process group (pipes).
    NewGroup,
    /// A new session with fd 0 as its controlling terminal (tty).
    NewSessionWithTty,
}

/// Everything the child needs, built before the clone.
pub(crate) struct ChildSpec<'a> {
    pub program: &'a CStr,
    /// NULL-terminated.
    pub argv: &'a [*const libc::c_char],
    /// NULL-terminated.
    pub envp: &'a [*const libc::c_char],
    pub cwd: &'a CStr,
    /// Descriptors that become the child's 0, 1 and 2.
    pub stdio: [RawFd; 3],
    pub group: Group,
    pub account: Option<&'a Account>,
}

/// What the child reports when a step fails: which step, and its errno.
struct Shared<'a> {
    spec: &'a ChildSpec<'a>,
    step: AtomicI32,
    errno: AtomicI32,
}

/// The steps of the child, for error messages.
const STEPS: [&str; 8] = [
    "",
    "creating the process group or session",
    "setting up stdio",
    "taking the terminal",
    "entering the working directory",
    "switching user",
    "exec",
    "cloning",
];

/// Builds a NULL-terminated pointer array over `strings` (which must outlive it).
pub(crate) fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Starts the child; returns its pid once it has called `execve`. A failure of any step
/// in the child comes back as an error naming the step, with the child already reaped.
pub(crate) fn spawn(spec: &ChildSpec<'_>) -> io::Result<i32> {
    let shared = Shared {
        spec,
        step: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK_BYTES];
    // The stack grows down; its top, aligned to 16 bytes.
    let top = (stack.as_mut_ptr() as usize + STACK_BYTES) & !15;
    // SAFETY: sigset_t is plain old data, filled by sigfillset.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigfillset and pthread_sigmask on valid sigset_t values; clone gets a
    // function that only makes async-signal-safe raw system calls, a stack that outlives
    // it (the parent waits: CLONE_VFORK), and a pointer to `shared`, which outlives the
    // child for the same reason.
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &shared as *const Shared<'_> as *mut c_void,
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        pid
    };
    drop(stack);
    let step = shared.step.load(Ordering::SeqCst);
    if step != 0 {
        // The child may have announced itself to the guardian before the step that
        // failed: withdraw the id before the reap frees it (withdrawing an id the guardian
        // never heard of changes nothing), so an unrelated process that gets this pid next
        // is never signalled.
        guardian::withdraw(pid);
        sys::reap_blocking(pid);
        let errno = shared.errno.load(Ordering::SeqCst);
        let err = io::Error::from_raw_os_error(errno);
        let what = STEPS.get(step as usize).copied().unwrap_or("the child");
        return Err(if step == 6 {
            err
        } else {
            io::Error::new(err.kind(), format!("{what}: {err}"))
        });
    }
    Ok(pid)
}

/// The child's errno after a failed raw system call.
fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// Runs in the child (see the module docs for what it may do).
extern "C" fn child_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Shared` of `spawn`, alive while this runs.
    let shared = unsafe { &*(arg as *const Shared<'_>) };
    let fail = |step: i32| -> libc::c_int {
        shared.errno.store(errno(), Ordering::SeqCst);
        shared.step.store(step, Ordering::SeqCst);
        // SAFETY: _exit ends the child at once (no atexit handlers, no flushing).
        unsafe { libc::_exit(127) }
    };
    let spec = shared.spec;
    // SAFETY: raw system calls on integers and on memory prepared before the clone.
    unsafe {
        // No server handler may run in here: every handler back to its default first
        // (signals are blocked until exec).
        for sig in 1..65 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
        let grouped = match spec.group {
            Group::NewGroup => libc::setpgid(0, 0),
            Group::NewSessionWithTty => libc::setsid(),
        };
        if grouped < 0 {
            return fail(1);
        }
        for (target, &fd) in spec.stdio.iter().enumerate() {
            let target = target as RawFd;
            let rc = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if rc < 0 {
                return fail(2);
            }
        }
        if spec.group == Group::NewSessionWithTty {
            #[allow(clippy::useless_conversion)]
            if libc::ioctl(0, libc::TIOCSCTTY.into(), 0) < 0 {
                return fail(3);
            }
        }
        guardian::announce_in_child();
        // A dead guardian left a SIGPIPE pending (signals are blocked): ignoring SIGPIPE
        // discards it, then back to the default.
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut());
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut());
        sys::cloexec_from_3_in_child();
        if libc::chdir(spec.cwd.as_ptr()) < 0 {
            return fail(4);
        }
        if let Some(account) = spec.account
            && crate::account::become_in_child(account).is_err()
        {
            return fail(5);
        }
        let none: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            spec.program.as_ptr(),
            spec.argv.as_ptr(),
            spec.envp.as_ptr(),
        );
        fail(6)
    }
}
