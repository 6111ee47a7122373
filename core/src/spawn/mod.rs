//! Validating `process/start` params and spawning the child, with pipes or under a new pty.

mod child;

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use exec_server_protocol::{
    MAX_PROCESS_ID_BYTES, ProcessStartParams, SpawnStep, Stream, TerminalSize,
};
use portable_pty::{MasterPty, PtySize};
use tokio::io::unix::AsyncFd;

use crate::account::{self, Account};
use crate::{Error, TOKEN_ENV, guardian, reaper, sys};

/// A non-blocking fd registered with tokio's reactor, shared by the tasks that use it.
pub(crate) type SharedFd = Arc<AsyncFd<OwnedFd>>;

/// A freshly spawned child and the parent's ends of its stdio.
pub(crate) struct Spawned {
    pub pid: u32,
    /// The child's pidfd: its exit is observed and it is reaped through this alone.
    pub pidfd: AsyncFd<OwnedFd>,
    /// Output streams to read until end-of-file.
    pub outputs: Vec<(Stream, SharedFd)>,
    /// Where `process/write` bytes go (pipe or pty master), if stdin is writable.
    pub stdin: Option<SharedFd>,
    /// The pty master (for resize), when the child runs under a tty.
    pub pty: Option<Pty>,
}

/// The parent's side of a pseudo-terminal.
pub(crate) struct Pty {
    /// portable-pty's master, used to resize.
    pub master: Box<dyn MasterPty + Send>,
    /// Our non-blocking duplicate of the master, for reading, writing and tcgetpgrp.
    pub fd: SharedFd,
}

/// Check every params value the method refuses with -32602.
pub(crate) fn validate(p: &ProcessStartParams) -> Result<(), Error> {
    let invalid = |m: String| Err(Error::InvalidParams(m));
    if p.process_id.is_empty() || p.process_id.len() > MAX_PROCESS_ID_BYTES {
        return invalid(format!(
            "processId must be 1 to {MAX_PROCESS_ID_BYTES} bytes, got {}",
            p.process_id.len()
        ));
    }
    if p.argv.is_empty() {
        return invalid("argv must not be empty".into());
    }
    if p.argv[0].is_empty() {
        return invalid("argv[0] must not be empty".into());
    }
    if let Some(i) = p.argv.iter().position(|a| a.contains('\0')) {
        return invalid(format!("argv[{i}] contains a NUL byte"));
    }
    if p.arg0.as_deref().is_some_and(|a| a.contains('\0')) {
        return invalid("arg0 contains a NUL byte".into());
    }
    if p.cwd.contains('\0') {
        return invalid("cwd contains a NUL byte".into());
    }
    if !Path::new(&p.cwd).is_absolute() {
        return invalid(format!("cwd must be an absolute path, got {:?}", p.cwd));
    }
    for (k, v) in &p.env {
        if k.is_empty() {
            return invalid("env has an empty variable name".into());
        }
        if k.contains('=') {
            return invalid(format!("env name {k:?} contains '='"));
        }
        if k.contains('\0') || v.contains('\0') {
            return invalid(format!("env variable {k:?} contains a NUL byte"));
        }
    }
    if let Some(size) = p.size {
        check_size(size.rows, size.cols)?;
    }
    if let Some(user) = &p.user
        && (user.is_empty() || user.contains('\0'))
    {
        return invalid("user must be a non-empty name or uid without NUL bytes".into());
    }
    Ok(())
}

/// Rows and columns must both be at least 1.
pub(crate) fn check_size(rows: u16, cols: u16) -> Result<(), Error> {
    if rows == 0 || cols == 0 {
        return Err(Error::InvalidParams(format!(
            "rows and cols must be at least 1, got {rows}x{cols}"
        )));
    }
    Ok(())
}

/// The child's environment: exactly `env`, or the server's own with `env` laid over it
/// (less the server's token, which never reaches a child).
fn child_env(p: &ProcessStartParams, account: Option<&Account>) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = if p.inherit_env {
        std::env::vars_os()
            .filter(|(k, _)| k != TOKEN_ENV)
            .collect()
    } else {
        BTreeMap::new()
    };
    if p.inherit_env
        && let Some(a) = account
    {
        env.insert("HOME".into(), a.home.clone());
        env.insert("USER".into(), a.name.clone());
        env.insert("LOGNAME".into(), a.name.clone());
        env.insert("SHELL".into(), a.shell.clone());
    }
    for (k, v) in &p.env {
        env.insert(k.into(), v.into());
    }
    env
}

/// Find `name` (no `/`) in `path_var` as execvp would; errors carry the OS text.
fn lookup_program(name: &str, path_var: &OsString, cwd: &Path) -> Result<PathBuf, io::Error> {
    let mut denied = false;
    for dir in path_var.as_bytes().split(|b| *b == b':') {
        let dir = Path::new(std::ffi::OsStr::from_bytes(dir));
        let candidate = if dir.as_os_str().is_empty() {
            cwd.join(name)
        } else if dir.is_relative() {
            cwd.join(dir).join(name)
        } else {
            dir.join(name)
        };
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() => {
                let c = CString::new(candidate.as_os_str().as_bytes())
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                match sys::is_executable(&c) {
                    Ok(()) => return Ok(candidate),
                    Err(_) => denied = true,
                }
            }
            _ => {}
        }
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// Spawn the child described by validated `p`. Blocking: run it on the blocking pool.
pub(crate) fn spawn(p: &ProcessStartParams) -> Result<Spawned, Error> {
    #[cfg(test)]
    crate::hold::at(&format!("spawn {}", p.process_id));
    let cwd = PathBuf::from(&p.cwd);
    let cwd_failed =
        |e: &io::Error| Error::spawn_os(SpawnStep::Cwd, &format!("cwd {:?}", p.cwd), e);
    match std::fs::metadata(&cwd) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(cwd_failed(&io::Error::from_raw_os_error(libc::ENOTDIR))),
        Err(e) => return Err(cwd_failed(&e)),
    }
    let account = p.user.as_deref().map(account::resolve).transpose()?;
    let env = child_env(p, account.as_ref());
    let argv0 = &p.argv[0];
    let program = if argv0.contains('/') {
        cwd.join(argv0)
    } else {
        let path_var = env
            .get(std::ffi::OsStr::new("PATH"))
            .cloned()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        lookup_program(argv0, &path_var, &cwd)
            .map_err(|e| Error::spawn_os(SpawnStep::Exec, argv0, &e))?
    };
    // Validated: no NUL byte anywhere.
    let cstr = |bytes: Vec<u8>| {
        CString::new(bytes)
            .map_err(|_| Error::InvalidParams("a NUL byte in argv, env or cwd".into()))
    };
    let program = cstr(program.into_os_string().into_vec())?;
    let mut argv = vec![cstr(
        p.arg0.as_deref().unwrap_or(argv0).as_bytes().to_vec(),
    )?];
    for arg in &p.argv[1..] {
        argv.push(cstr(arg.as_bytes().to_vec())?);
    }
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in env {
        let mut entry = k.into_vec();
        entry.push(b'=');
        entry.extend_from_slice(v.as_bytes());
        envp.push(cstr(entry)?);
    }
    let image = Image {
        program,
        argv,
        envp,
        cwd: cstr(cwd.into_os_string().into_vec())?,
        account,
        argv0,
    };
    if p.tty {
        // A terminal merges stdout and stderr already: `mergeStderr` changes nothing.
        spawn_tty(&image, p.size.unwrap_or_default())
    } else {
        spawn_pipes(&image, p.pipe_stdin, p.merge_stderr)
    }
}

/// What the child execs, as C strings built before the clone.
struct Image<'a> {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    account: Option<Account>,
    argv0: &'a str,
}

impl Image<'_> {
    /// Starts it with `stdio` as its 0, 1 and 2; the pid, registered as owned (the orphan
    /// reaper leaves it alone) before it can be reaped by anyone else.
    fn start(&self, stdio: [RawFd; 3], group: child::Group) -> Result<i32, Error> {
        let argv = child::pointers(&self.argv);
        let envp = child::pointers(&self.envp);
        let spec = child::ChildSpec {
            program: &self.program,
            argv: &argv,
            envp: &envp,
            cwd: &self.cwd,
            stdio,
            group,
            account: self.account.as_ref(),
            fd_limit: sys::original_fd_limit(),
        };
        let gate = reaper::spawn_gate();
        let pid = child::spawn(&spec).map_err(|f| match f.step {
            SpawnStep::Exec => Error::spawn_os(f.step, self.argv0, &f.err),
            SpawnStep::Cwd => Error::spawn_os(f.step, &format!("cwd {:?}", self.cwd), &f.err),
            _ => Error::spawn_os(f.step, &format!("{}: {}", self.argv0, f.what), &f.err),
        })?;
        reaper::own(pid);
        drop(gate);
        Ok(pid)
    }
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(Error::Internal(format!(
            "pipe: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `fd`, moved to a number from 3 up when it is 0, 1 or 2 (a server started with one of
/// those closed), so placing the child's stdio can never overwrite another of its ends.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, Error> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd we own, or -1.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(Error::Internal(format!(
            "fcntl: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: dup is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Registers a non-blocking fd with tokio's reactor.
pub(crate) fn register(fd: OwnedFd) -> Result<SharedFd, Error> {
    sys::set_nonblocking(&fd).map_err(|e| Error::Internal(format!("fcntl: {e}")))?;
    // SAFETY: an OwnedFd stays open and keeps its number until the AsyncFd drops it.
    unsafe { AsyncFd::register(fd) }
        .map(Arc::new)
        .map_err(|e| Error::Internal(format!("registering an fd with the reactor: {e}")))
}

/// A pidfd for our child `pid`, registered with the reactor (readable once it exits).
fn open_pidfd(pid: i32) -> Result<AsyncFd<OwnedFd>, Error> {
    let fd =
        sys::pidfd_open(pid).map_err(|e| Error::Internal(format!("pidfd of the child: {e}")))?;
    // SAFETY: an OwnedFd stays open and keeps its number until the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::Internal(format!("registering a pidfd with the reactor: {e}")))
}

/// A spawned child nobody took (the start was abandoned): killed with its group and
/// reaped (blocking), so it never runs unowned.
pub(crate) fn abandon(spawned: Spawned) {
    let pid = spawned.pid as i32;
    drop(spawned);
    drop(Unowned::new(pid));
}

/// A child that was spawned but is not owned by a `Process` yet: if setting it up fails,
/// dropping this kills its group and reaps it, so it never runs unowned.
struct Unowned {
    pid: i32,
    armed: bool,
}

impl Unowned {
    fn new(pid: i32) -> Self {
        Unowned { pid, armed: true }
    }

    fn disarm(mut self) -> u32 {
        self.armed = false;
        self.pid as u32
    }
}

impl Drop for Unowned {
    fn drop(&mut self) {
        if self.armed {
            let _ = sys::killpg(self.pid, libc::SIGKILL);
            let _ = sys::kill(self.pid, libc::SIGKILL);
            guardian::withdraw(self.pid);
            sys::reap_blocking(self.pid);
            reaper::disown(self.pid);
        }
    }
}

/// Spawns with pipes: stdin a pipe (`pipe_stdin`) or `/dev/null`; stdout a pipe, and
/// stderr a pipe of its own or, with `merge_stderr`, the same pipe as stdout (`2>&1`: one
/// `stdout` stream in the order the program wrote).
fn spawn_pipes(image: &Image<'_>, pipe_stdin: bool, merge_stderr: bool) -> Result<Spawned, Error> {
    let internal = |e: io::Error| Error::Internal(format!("child stdio: {e}"));
    let (stdin_child, stdin_ours) = if pipe_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .open("/dev/null")
            .map_err(internal)?;
        (above_stdio(OwnedFd::from(null))?, None)
    };
    let (stdout_ours, stdout_child) = pipe()?;
    let stderr = if merge_stderr { None } else { Some(pipe()?) };
    let stderr_child_fd = stderr
        .as_ref()
        .map_or(stdout_child.as_raw_fd(), |(_, child)| child.as_raw_fd());
    let pid = image.start(
        [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child_fd,
        ],
        child::Group::NewGroup,
    )?;
    let (stderr_ours, stderr_child) = stderr.unzip();
    // The child's ends are its own now: ours must go, or EOF never comes.
    drop((stdin_child, stdout_child, stderr_child));
    let unowned = Unowned::new(pid);
    #[cfg(test)]
    tests::fail_setup_if_asked()?;
    let pidfd = open_pidfd(pid)?;
    let mut outputs = vec![(Stream::Stdout, register(stdout_ours)?)];
    if let Some(fd) = stderr_ours {
        outputs.push((Stream::Stderr, register(fd)?));
    }
    let stdin = match stdin_ours {
        Some(fd) => Some(register(fd)?),
        None => None,
    };
    Ok(Spawned {
        pid: unowned.disarm(),
        pidfd,
        outputs,
        stdin,
        pty: None,
    })
}

fn spawn_tty(image: &Image<'_>, size: TerminalSize) -> Result<Spawned, Error> {
    let pty_err = |e: &io::Error| Error::spawn_os(SpawnStep::Pty, "opening a pty", e);
    let pair = portable_pty::native_pty_system()
        .openpty(PtySize {
            rows: size.rows,
            cols: size.cols,
            pixel_width: 0,
            pixel_height: 0,
        })
        .map_err(|e| match e.downcast_ref::<io::Error>() {
            Some(os) => pty_err(os),
            None => Error::spawn(SpawnStep::Pty, format!("opening a pty: {e}")),
        })?;
    let master = pair.master;
    let raw_master = master
        .as_raw_fd()
        .ok_or_else(|| Error::Internal("pty master has no fd".into()))?;
    let slave_path = master
        .tty_name()
        .ok_or_else(|| Error::Internal("pty slave has no name".into()))?;
    // Our own slave fd (close-on-exec, not our controlling terminal); portable-pty's copy goes now.
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave_path)
        .map_err(|e| pty_err(&e))?
        .into();
    let slave = above_stdio(slave)?;
    drop(pair.slave);
    if let Some(account) = &image.account {
        // The terminal belongs to the user the shell runs as, so it can use it.
        // SAFETY: fchown on a descriptor we own; -1 leaves the group as it is.
        if unsafe { libc::fchown(slave.as_raw_fd(), account.uid, u32::MAX) } != 0 {
            return Err(pty_err(&io::Error::last_os_error()));
        }
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd we own, or -1.
    let dup = unsafe { libc::fcntl(raw_master, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(pty_err(&io::Error::last_os_error()));
    }
    // SAFETY: dup is a fresh fd owned by nobody else.
    let master_fd = unsafe { OwnedFd::from_raw_fd(dup) };
    let fd = slave.as_raw_fd();
    let pid = image.start([fd, fd, fd], child::Group::NewSessionWithTty)?;
    // The parent's slave must go, or EOF never comes.
    drop(slave);
    let unowned = Unowned::new(pid);
    let pidfd = open_pidfd(pid)?;
    let fd = register(master_fd)?;
    Ok(Spawned {
        pid: unowned.disarm(),
        pidfd,
        outputs: vec![(Stream::Pty, fd.clone())],
        stdin: Some(fd.clone()),
        pty: Some(Pty { master, fd }),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Makes the next pipe spawn fail after its child exists (a test of the clean-up).
    static FAIL_SETUP: AtomicBool = AtomicBool::new(false);

    pub(super) fn fail_setup_if_asked() -> Result<(), Error> {
        if FAIL_SETUP.swap(false, Ordering::SeqCst) {
            return Err(Error::Internal("setup failure injected by a test".into()));
        }
        Ok(())
    }

    /// Live processes whose argv holds `marker`.
    fn running_with(marker: &str) -> Vec<i32> {
        let mut out = Vec::new();
        sys::for_each_process(|p| {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
            if !p.zombie && cmdline.split(|b| *b == 0).any(|a| a == marker.as_bytes()) {
                out.push(p.pid);
            }
        })
        .unwrap();
        out
    }

    #[tokio::test]
    async fn a_child_whose_setup_fails_is_killed_and_reaped_before_the_error() {
        let marker = format!("1000.{}", std::process::id());
        let params = ProcessStartParams {
            merge_stderr: false,
            process_id: "p".into(),
            argv: vec!["sleep".into(), marker.clone()],
            cwd: "/".into(),
            env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
            inherit_env: false,
            tty: false,
            pipe_stdin: false,
            arg0: None,
            size: None,
            timeout_ms: None,
            user: None,
        };
        FAIL_SETUP.store(true, Ordering::SeqCst);
        let err = spawn(&params).err().expect("the injected failure");
        assert_eq!(
            err,
            Error::Internal("setup failure injected by a test".into())
        );
        // Killed and reaped before the error came back: nothing to wait for.
        assert_eq!(running_with(&marker), Vec::<i32>::new());
        // And without the injection the same spawn works (the marker is right).
        let spawned = spawn(&params).unwrap();
        let pid = spawned.pid as i32;
        assert_eq!(running_with(&marker), vec![pid]);
        sys::kill(pid, libc::SIGKILL).unwrap();
        sys::reap_blocking(pid);
        reaper::disown(pid);
    }
}
