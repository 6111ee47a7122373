//! Calls relative to directory descriptors (openat, unlinkat, renameat, readdir), and the
//! recursive remove built on them, which never follows a symlink at any depth.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use super::fail;
use crate::Error;

/// How many times a directory that gained entries while it was being emptied is listed again.
const MAX_RELISTS: u8 = 3;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// `name` as a C string; a NUL byte is refused before any call is made.
pub(super) fn c_name(name: &OsStr) -> Result<CString, Error> {
    CString::new(name.as_bytes())
        .map_err(|_| Error::InvalidParams("a path must not contain a NUL byte".into()))
}

/// Opens a directory by path for use as the base of `*at` calls only (`O_PATH`: no read
/// permission needed, symlinks in the path followed as for any path).
pub(super) fn open_base_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a valid NUL-terminated string; open returns a new fd or -1.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`.
pub(super) fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: dir is open for the call, name is NUL-terminated; a new fd or -1 is returned.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `unlinkat(dir, name, flags)`: `0` removes a non-directory, `AT_REMOVEDIR` an empty directory.
pub(super) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: dir is open for the call and name is NUL-terminated.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `renameat(dir, from, dir, to)`: both names in one directory.
pub(super) fn renameat(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<()> {
    let fd = dir.as_raw_fd();
    // SAFETY: fd is open for the call and both names are NUL-terminated.
    cvt(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) }).map(drop)
}

/// Whether `name` in `dir` is a directory, not following a symlink.
fn is_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<bool> {
    // SAFETY: stat is plain old data that fstatat fills or leaves alone on failure.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dir is open, name is NUL-terminated and st is a properly sized struct.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// The errors `unlinkat(…, 0)` gives for a directory (Linux says EISDIR, POSIX EPERM).
fn is_dir_refusal(e: &io::Error) -> bool {
    matches!(errno_of(e), libc::EISDIR | libc::EPERM)
}

/// An open directory stream (`fdopendir`) whose fd also serves `*at` calls.
struct DirStream {
    dirp: NonNull<libc::DIR>,
}

impl DirStream {
    /// Opens directory `name` in `parent` without following a symlink: a symlink gives
    /// ELOOP (or ENOTDIR), never its target.
    fn open_at(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<DirStream> {
        let fd = openat(
            parent,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        )?;
        let raw = fd.as_raw_fd();
        // SAFETY: raw is an open directory fd; on success the stream owns it.
        let dirp = unsafe { libc::fdopendir(raw) };
        match NonNull::new(dirp) {
            Some(dirp) => {
                // The stream owns the fd from now on and closes it in `closedir`.
                std::mem::forget(fd);
                Ok(DirStream { dirp })
            }
            None => Err(io::Error::last_os_error()),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: dirp is a live stream; its fd stays open until closedir, after `self`'s borrow.
        unsafe { BorrowedFd::borrow_raw(libc::dirfd(self.dirp.as_ptr())) }
    }

    /// Every name in the directory from its start, without `.` and `..`.
    fn names(&mut self) -> io::Result<Vec<CString>> {
        let mut names = Vec::new();
        // SAFETY: dirp is a live stream.
        unsafe { libc::rewinddir(self.dirp.as_ptr()) };
        loop {
            // readdir reports an error only through errno: clear it first.
            // SAFETY: __errno_location returns this thread's errno slot.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: dirp is a live stream used by this thread only.
            let entry = unsafe { libc::readdir(self.dirp.as_ptr()) };
            if entry.is_null() {
                let e = io::Error::last_os_error();
                return if errno_of(&e) == 0 { Ok(names) } else { Err(e) };
            }
            // SAFETY: entry points to a dirent valid until the next readdir; d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(name.to_owned());
            }
        }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: dirp is a live stream, closed exactly once here (with its fd).
        unsafe { libc::closedir(self.dirp.as_ptr()) };
    }
}

/// A directory being emptied: its stream, its name in its parent, and the names left to remove.
struct Frame {
    dir: DirStream,
    name: CString,
    path: PathBuf,
    pending: Vec<CString>,
    relists: u8,
}

/// Opens directory `name` of `parent` for emptying. When it is no longer a directory (a
/// symlink or a file replaced it since), that entry is unlinked instead: `None`.
fn open_frame(
    parent: BorrowedFd<'_>,
    name: CString,
    path: PathBuf,
) -> Result<Option<Frame>, Error> {
    match DirStream::open_at(parent, &name) {
        Ok(mut dir) => {
            let pending = dir.names().map_err(|e| fail("list", &path, e))?;
            Ok(Some(Frame {
                dir,
                name,
                path,
                pending,
                relists: 0,
            }))
        }
        Err(e) if matches!(errno_of(&e), libc::ELOOP | libc::ENOTDIR) => {
            match unlinkat(parent, &name, 0) {
                Ok(()) => Ok(None),
                Err(e) if errno_of(&e) == libc::ENOENT => Ok(None),
                Err(e) => Err(fail("remove", &path, e)),
            }
        }
        Err(e) if errno_of(&e) == libc::ENOENT => Ok(None),
        Err(e) => Err(fail("open", &path, e)),
    }
}

/// Splits an absolute path into its parent directory and final name; refuses `/`, and a
/// final `.` or `..`.
pub(super) fn split(path: &Path) -> Result<(&Path, &OsStr), Error> {
    let ends_in_dots = matches!(
        path.as_os_str()
            .as_bytes()
            .rsplit(|b| *b == b'/')
            .find(|c| !c.is_empty()),
        Some(b".." | b".")
    );
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !ends_in_dots => Ok((parent, name)),
        _ => Err(Error::InvalidParams(format!(
            "{} does not name an entry of a directory (it is `/` or ends in `.` or `..`)",
            path.display()
        ))),
    }
}

/// Removes `path`: a file or symlink (the link itself), an empty directory, or — with
/// `recursive` — a directory and everything below it. Every step below `path` is relative to
/// an open directory fd and refuses to follow symlinks, so neither a symlink inside the tree
/// nor a directory swapped for a symlink mid-walk leads outside it.
pub(super) fn remove(path: &Path, recursive: bool) -> Result<(), Error> {
    let (parent, name) = split(path)?;
    let name = c_name(name)?;
    let base = open_base_dir(parent).map_err(|e| fail("open", parent, e))?;
    let base = base.as_fd();
    match unlinkat(base, &name, 0) {
        Ok(()) => return Ok(()),
        Err(e) if is_dir_refusal(&e) && is_dir_at(base, &name).unwrap_or(false) => {}
        Err(e) => return Err(fail("remove", path, e)),
    }
    if !recursive {
        return unlinkat(base, &name, libc::AT_REMOVEDIR).map_err(|e| fail("remove", path, e));
    }
    remove_tree(base, name, path.to_path_buf())
}

/// Empties and removes directory `name` of `base`, depth first, with an explicit stack (no
/// recursion, so a deep tree cannot overflow the thread's stack; it holds one fd per level).
fn remove_tree(base: BorrowedFd<'_>, name: CString, path: PathBuf) -> Result<(), Error> {
    let mut stack: Vec<Frame> = Vec::new();
    if let Some(frame) = open_frame(base, name, path)? {
        stack.push(frame);
    }
    while let Some(top) = stack.last_mut() {
        if let Some(child) = top.pending.pop() {
            let child_path = top.path.join(OsStr::from_bytes(child.to_bytes()));
            let descend = match unlinkat(top.dir.fd(), &child, 0) {
                Ok(()) => None,
                Err(e) if errno_of(&e) == libc::ENOENT => None,
                Err(e) if is_dir_refusal(&e) => open_frame(top.dir.fd(), child, child_path)?,
                Err(e) => return Err(fail("remove", &child_path, e)),
            };
            if let Some(frame) = descend {
                stack.push(frame);
            }
            continue;
        }
        // `top` is empty: remove it from its parent.
        let Some(mut frame) = stack.pop() else { break };
        let parent = stack.last().map_or(base, |f| f.dir.fd());
        match unlinkat(parent, &frame.name, libc::AT_REMOVEDIR) {
            Ok(()) => {}
            Err(e) if errno_of(&e) == libc::ENOENT => {}
            Err(e)
                if matches!(errno_of(&e), libc::ENOTEMPTY | libc::EEXIST)
                    && frame.relists < MAX_RELISTS =>
            {
                // Something was created in it meanwhile: list it again.
                frame.pending = frame
                    .dir
                    .names()
                    .map_err(|e| fail("list", &frame.path, e))?;
                frame.relists += 1;
                stack.push(frame);
            }
            Err(e) => return Err(fail("remove", &frame.path, e)),
        }
    }
    Ok(())
}
