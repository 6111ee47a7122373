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
//! used). Every signal is blocked around the clone with the raw `rt_sigprocmask` (glibc's
//! `pthread_sigmask` leaves its own two internal signals unblocked), and the child resets
//! every handler, those two included, with the raw `rt_sigaction` before unblocking, so no
//! server signal handler can run in the child. The child's stack is a mapping of its own
//! with a guard page below it, kept per thread for the next spawn. A step that fails
//! leaves its errno in memory the parent reads once the child is gone.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_void};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use exec_server_protocol::SpawnStep;

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
    /// The open-files limit to give the child (the server's original, when it raised its
    /// own).
    pub fd_limit: Option<libc::rlimit>,
}

/// What the child reports when a step fails: which step, and its errno.
struct Shared<'a> {
    spec: &'a ChildSpec<'a>,
    step: AtomicI32,
    errno: AtomicI32,
}

/// The steps of the child (index = the step number `fail` records; 0 = none failed): the
/// step a failure reports (`data.step`) and what it is called in the message.
const STEPS: [(SpawnStep, &str); 8] = [
    (SpawnStep::Setup, "starting the child"),
    (SpawnStep::Setup, "creating the process group or session"),
    (SpawnStep::Setup, "setting up stdio"),
    (SpawnStep::Pty, "taking the terminal"),
    (SpawnStep::Cwd, "entering the working directory"),
    (SpawnStep::User, "switching user"),
    (SpawnStep::Exec, "exec"),
    (SpawnStep::Setup, "restoring the open-files limit"),
];

/// A step of starting the child failed.
#[derive(Debug)]
pub(crate) struct ChildFailed {
    /// Which step.
    pub step: SpawnStep,
    /// What the step is called, for the message.
    pub what: &'static str,
    /// Its OS error.
    pub err: io::Error,
}

/// A signal set as the kernel takes it: one bit per signal, 64 signals (glibc's
/// `sigset_t` is larger, and its wrappers filter the set).
type KernelSigset = u64;

/// `rt_sigprocmask(how, set, old)` as a raw system call: unlike glibc's `sigprocmask` and
/// `pthread_sigmask`, it blocks glibc's internal signals (thread cancellation and the
/// `setxid` broadcast) too.
///
/// # Safety
/// `set` and `old` must be null or point to valid [`KernelSigset`]s.
unsafe fn raw_sigprocmask(
    how: libc::c_int,
    set: *const KernelSigset,
    old: *mut KernelSigset,
) -> libc::c_long {
    // SAFETY: as the caller promises; the size is the kernel's.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            set,
            old,
            std::mem::size_of::<KernelSigset>(),
        )
    }
}

/// The kernel's `struct sigaction` for `rt_sigaction`. Zeroed, it means `SIG_DFL` with no
/// flags and an empty mask, whatever the architecture's field order.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: KernelSigset,
}

/// In the child: every signal's handler back to the default with the raw `rt_sigaction`
/// (glibc's `sigaction` refuses its two internal signals, whose handlers would otherwise
/// stay installed).
///
/// # Safety
/// Only in the clone child (it changes the dispositions of the calling process, which in
/// the child are its own copy).
unsafe fn reset_handlers_in_child() {
    let default = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a valid kernel sigaction and the kernel's sigset size; an invalid
        // signal number only fails.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<KernelSigset>(),
            );
        }
    }
}

/// Size of the guard page below the child's stack, and the page size.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}

/// The child's stack: a private mapping with an inaccessible guard page below it, so an
/// overflow faults instead of writing into the server's memory.
struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    fn map() -> io::Result<Stack> {
        let guard = page_size();
        let len = guard + STACK_BYTES;
        // SAFETY: an anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping just made.
        if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The top of the stack (it grows down), aligned to 16 bytes.
    fn top(&self) -> *mut c_void {
        ((self.base as usize + self.len) & !15) as *mut c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer used.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

thread_local! {
    /// This thread's child stack, mapped at its first spawn and reused: a clone child runs
    /// while its parent thread waits, so one stack per thread is enough.
    static STACK: RefCell<Option<Stack>> = const { RefCell::new(None) };
}

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
pub(crate) fn spawn(spec: &ChildSpec<'_>) -> Result<i32, ChildFailed> {
    let shared = Shared {
        spec,
        step: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    let pid = STACK
        .with_borrow_mut(|slot| -> io::Result<i32> {
            let stack = match slot {
                Some(stack) => stack,
                None => slot.insert(Stack::map()?),
            };
            let all: KernelSigset = !0;
            let mut old: KernelSigset = 0;
            // SAFETY: raw_sigprocmask on valid sets; clone gets a function that only makes
            // raw system calls, a stack that outlives it (the parent waits: CLONE_VFORK, and
            // the stack stays borrowed until then), and a pointer to `shared`, which outlives
            // the child for the same reason.
            unsafe {
                raw_sigprocmask(libc::SIG_SETMASK, &all, &mut old);
                let pid = libc::clone(
                    child_main,
                    stack.top(),
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    &shared as *const Shared<'_> as *mut c_void,
                );
                let err = io::Error::last_os_error();
                raw_sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                if pid < 0 {
                    return Err(err);
                }
                Ok(pid)
            }
        })
        .map_err(|err| ChildFailed {
            step: SpawnStep::Setup,
            what: "clone",
            err,
        })?;
    let step = shared.step.load(Ordering::SeqCst);
    if step != 0 {
        // The child may have announced itself to the guardian before the step that
        // failed: withdraw the id before the reap frees it (withdrawing an id the guardian
        // never heard of changes nothing), so an unrelated process that gets this pid next
        // is never signalled.
        guardian::withdraw(pid);
        sys::reap_blocking(pid);
        let errno = shared.errno.load(Ordering::SeqCst);
        let (step, what) = STEPS.get(step as usize).copied().unwrap_or(STEPS[0]);
        return Err(ChildFailed {
            step,
            what,
            err: io::Error::from_raw_os_error(errno),
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
        reset_handlers_in_child();
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
        let mut action = KernelSigaction {
            handler: libc::SIG_IGN,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for handler in [libc::SIG_IGN, libc::SIG_DFL] {
            action.handler = handler;
            libc::syscall(
                libc::SYS_rt_sigaction,
                libc::SIGPIPE,
                &action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<KernelSigset>(),
            );
        }
        sys::cloexec_from_3_in_child();
        if let Some(limit) = &spec.fd_limit
            && sys::set_fd_limit_in_child(limit).is_err()
        {
            return fail(7);
        }
        if libc::chdir(spec.cwd.as_ptr()) < 0 {
            return fail(4);
        }
        if let Some(account) = spec.account
            && crate::account::become_in_child(account).is_err()
        {
            return fail(5);
        }
        let none: KernelSigset = 0;
        raw_sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            spec.program.as_ptr(),
            spec.argv.as_ptr(),
            spec.envp.as_ptr(),
        );
        fail(6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit of signal `sig` in a kernel signal set.
    fn bit(sig: libc::c_int) -> KernelSigset {
        1 << (sig - 1)
    }

    #[test]
    fn the_raw_mask_blocks_glibcs_internal_signals_too() {
        // glibc's SIGCANCEL and SIGSETXID: the first two real-time signals it keeps.
        let internal = [32, 33];
        let all: KernelSigset = !0;
        let mut old: KernelSigset = 0;
        let mut now: KernelSigset = 0;
        // SAFETY: valid sets; the mask of this test thread is restored before returning.
        unsafe {
            raw_sigprocmask(libc::SIG_SETMASK, &all, &mut old);
            raw_sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
            raw_sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        for sig in internal {
            assert_ne!(now & bit(sig), 0, "signal {sig} not blocked");
        }
        // What glibc's pthread_sigmask would have left open (the reason for the raw call).
        // SAFETY: as above, with glibc's sigset_t filled by sigfillset.
        unsafe {
            let mut full: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut full);
            let mut saved: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, &full, &mut saved);
            raw_sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
            libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut());
        }
        assert_eq!(now & (bit(32) | bit(33)), 0);
    }

    #[test]
    fn the_child_stack_has_a_guard_page_below_it() {
        let stack = Stack::map().unwrap();
        let base = stack.base as usize;
        let guard_end = base + page_size();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let regions: Vec<(usize, usize, String)> = maps
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (from, to) = fields.next()?.split_once('-')?;
                let perms = fields.next()?.to_owned();
                Some((
                    usize::from_str_radix(from, 16).ok()?,
                    usize::from_str_radix(to, 16).ok()?,
                    perms,
                ))
            })
            .collect();
        // (A neighbour with the same protection may be merged into the same region.)
        let containing = |addr: usize| {
            regions
                .iter()
                .find(|(from, to, _)| *from <= addr && addr < *to)
                .expect("a mapped address")
        };
        let guard = containing(base);
        assert_eq!((guard.1, guard.2.as_str()), (guard_end, "---p"));
        let usable = containing(guard_end);
        assert!(usable.2.starts_with("rw"), "{usable:?}");
        assert!(usable.1 >= base + stack.len, "{usable:?}");
        assert_eq!(stack.top() as usize % 16, 0);
        assert!(stack.top() as usize <= base + stack.len);
    }
}
