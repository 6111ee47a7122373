//! `fs/mkdir`: one directory with an exact mode (no umask), or `mkdir -p`.

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use exec_server_protocol::DEFAULT_DIR_MODE;

use super::{errno_of, fail};
use crate::Error;

/// Creates directory `path` with exactly `mode` (no umask): made owner-only first, then
/// set through a descriptor that cannot have followed a symlink.
pub(super) fn mkdir_exact(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)?;
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path);
    match opened {
        Ok(dir) => dir.set_permissions(Permissions::from_mode(mode)),
        // An umask that removed the owner's own bits: set the mode by path.
        Err(e) if errno_of(&e) == libc::EACCES => {
            std::fs::set_permissions(path, Permissions::from_mode(mode))
        }
        Err(e) => Err(e),
    }
}

fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

/// `mkdir -p`: missing parents get mode 0o755, `path` gets `mode`; an existing directory
/// (or a symlink to one) is fine and keeps its mode.
pub(super) fn mkdir_parents(path: &Path, mode: u32) -> Result<(), Error> {
    let mode_for = |p: &Path| if p == path { mode } else { DEFAULT_DIR_MODE };
    // Walk up to the deepest ancestor that exists, then create downwards.
    let mut missing: Vec<&Path> = Vec::new();
    let mut current = path;
    loop {
        match mkdir_exact(current, mode_for(current)) {
            Ok(()) => break,
            Err(e) if errno_of(&e) == libc::EEXIST => {
                if current == path && !is_dir(path) {
                    return Err(fail("mkdir", path, e));
                }
                break;
            }
            Err(e) if errno_of(&e) == libc::ENOENT => match current.parent() {
                Some(parent) => {
                    missing.push(current);
                    current = parent;
                }
                None => return Err(fail("mkdir", current, e)),
            },
            Err(e) => return Err(fail("mkdir", current, e)),
        }
    }
    for dir in missing.into_iter().rev() {
        match mkdir_exact(dir, mode_for(dir)) {
            Ok(()) => {}
            // Created meanwhile by someone else: fine, as for `mkdir -p`.
            Err(e) if errno_of(&e) == libc::EEXIST && is_dir(dir) => {}
            Err(e) => return Err(fail("mkdir", dir, e)),
        }
    }
    Ok(())
}
