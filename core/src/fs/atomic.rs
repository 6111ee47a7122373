//! `fs/write` with `atomic`: a temporary file beside the target, flushed and renamed over
//! it, so a reader sees the old content or the new, never a mix.

use std::ffi::OsStr;
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use exec_server_protocol::MAX_MODE;

use super::{errno_of, fail, tree};
use crate::Error;

/// How many symlinks an atomic write follows to find the file it replaces (as the kernel's
/// own limit for a path lookup).
const MAX_SYMLINK_HOPS: usize = 40;

/// Follows symlinks in the final component of `path`, as opening it would, to the path of
/// the file an atomic write replaces (which may not exist yet).
fn resolve_links(path: &Path) -> Result<PathBuf, Error> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target =
                    std::fs::read_link(&current).map_err(|e| fail("readlink", &current, e))?;
                current = match current.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(fail(
        "open",
        path,
        io::Error::from_raw_os_error(libc::ELOOP),
    ))
}

/// A temporary file that is removed when dropped unless it was renamed into place.
struct TempFile<'a> {
    dir: std::os::fd::BorrowedFd<'a>,
    name: std::ffi::CString,
    armed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = tree::unlinkat(self.dir, &self.name, 0);
        }
    }
}

/// A name for a temporary file beside `name`: hidden, unique, and short enough for any
/// name `name` can be.
fn temp_name(name: &OsStr) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(255);
    out.push(b'.');
    out.extend_from_slice(&bytes[..bytes.len().min(200)]);
    out.extend_from_slice(format!(".{:x}-{count:x}-{nanos:x}.tmp", std::process::id()).as_bytes());
    out
}

/// Writes `data` to a new file beside the target, flushes it to disk, and renames it over
/// the target: a reader sees the old content or the new, never a mix. An existing target
/// keeps its mode (and, where the server may set them, its owner and group).
pub(super) fn write_atomic(path: &Path, data: &[u8], create: bool, mode: u32) -> Result<(), Error> {
    let target = resolve_links(path)?;
    let (dir, name) = tree::split(&target)?;
    let c_target = tree::c_name(name)?;
    let base = tree::open_base_dir(dir).map_err(|e| fail("open", dir, e))?;
    let base = base.as_fd();

    let existing = match std::fs::metadata(&target) {
        Ok(meta) => Some(meta),
        Err(e) if errno_of(&e) == libc::ENOENT => None,
        Err(e) => return Err(fail("stat", &target, e)),
    };
    let final_mode = match &existing {
        None if !create => {
            return Err(fail(
                "open",
                &target,
                io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        None => mode,
        Some(meta) if meta.is_dir() => {
            return Err(fail(
                "open",
                &target,
                io::Error::from_raw_os_error(libc::EISDIR),
            ));
        }
        Some(meta) if !meta.is_file() => {
            return Err(Error::InvalidParams(format!(
                "an atomic write replaces a regular file; {} is not one",
                target.display()
            )));
        }
        Some(meta) => meta.mode() & MAX_MODE,
    };

    let mut attempts = 0;
    let (temp, file) = loop {
        let temp_bytes = temp_name(name);
        let c_temp = tree::c_name(OsStr::from_bytes(&temp_bytes))?;
        match tree::openat(
            base,
            &c_temp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        ) {
            Ok(fd) => {
                let temp = TempFile {
                    dir: base,
                    name: c_temp,
                    armed: true,
                };
                break (temp, File::from(fd));
            }
            Err(e) if errno_of(&e) == libc::EEXIST && attempts < 8 => attempts += 1,
            Err(e) => {
                let shown = dir.join(OsStr::from_bytes(&temp_bytes));
                return Err(fail("create", &shown, e));
            }
        }
    };
    let temp_path = dir.join(OsStr::from_bytes(temp.name.to_bytes()));
    let step = |op: &str, r: io::Result<()>| r.map_err(|e| fail(op, &temp_path, e));

    step("write", (&mut &file).write_all(data))?;
    if let Some(meta) = &existing {
        // Best effort: only root (or the owner, for the group) may; chown clears setuid
        // bits, so it comes before the chmod.
        let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
    }
    step(
        "chmod",
        file.set_permissions(Permissions::from_mode(final_mode)),
    )?;
    step("fsync", file.sync_all())?;
    drop(file);
    tree::renameat(base, &temp.name, &c_target).map_err(|e| {
        let what = format!("{} -> {}", temp_path.display(), target.display());
        fail("rename", Path::new(&what), e)
    })?;
    let mut temp = temp;
    temp.armed = false;
    // Best effort: make the rename itself durable.
    if let Ok(dir_fd) = tree::openat(base, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        let _ = File::from(dir_fd).sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_hidden_unique_and_short() {
        let long = "x".repeat(255);
        let a = temp_name(OsStr::new(&long));
        let b = temp_name(OsStr::new(&long));
        assert_ne!(a, b);
        assert!(a.len() <= 255, "{}", a.len());
        assert!(a.starts_with(b".xxx") && a.ends_with(b".tmp"));
    }
}
