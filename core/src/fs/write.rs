//! `fs/write` in place: the checked options of a write, and a write at an offset, appended,
//! or replacing the content, with a new file's mode applied exactly.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use exec_server_protocol::{DEFAULT_FILE_MODE, FsWriteParams};

use super::{checked_mode, errno_of, fail};
use crate::Error;

/// The checked options of one `fs/write`.
#[derive(Debug)]
pub(super) struct WritePlan {
    offset: Option<u64>,
    append: bool,
    truncate: bool,
    pub(super) create: bool,
    /// `O_EXCL`: an existing path (even a dangling symlink) is EEXIST.
    exclusive: bool,
    pub(super) mode: u32,
    pub(super) atomic: bool,
}

impl WritePlan {
    pub(super) fn new(p: &FsWriteParams) -> Result<WritePlan, Error> {
        let refuse = |why: &str| Err(Error::InvalidParams(why.to_owned()));
        if p.offset.is_some() && p.append {
            return refuse("offset and append exclude each other");
        }
        if p.atomic && (p.offset.is_some() || p.append) {
            return refuse("atomic replaces the whole file: not with offset or append");
        }
        if p.atomic && p.truncate == Some(false) {
            return refuse("atomic replaces the whole file: not with truncate false");
        }
        if p.append && p.truncate == Some(true) {
            return refuse("append and truncate exclude each other");
        }
        if p.exclusive && p.atomic {
            return refuse("exclusive creates the file in place: not with atomic");
        }
        if p.exclusive && !p.create {
            return refuse("exclusive creates the file: not with create false");
        }
        Ok(WritePlan {
            offset: p.offset,
            append: p.append,
            truncate: p.truncate.unwrap_or(p.offset.is_none() && !p.append),
            create: p.create,
            exclusive: p.exclusive,
            mode: checked_mode(p.mode, DEFAULT_FILE_MODE)?,
            atomic: p.atomic,
        })
    }
}

/// Opens `path` for writing; `true` when this call created it.
fn open_for_write(path: &Path, plan: &WritePlan) -> Result<(File, bool), Error> {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .append(plan.append)
        .truncate(plan.truncate)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    if !plan.create {
        return options
            .open(path)
            .map(|f| (f, false))
            .map_err(|e| fail("open", path, e));
    }
    // Create exclusively first, so the mode is applied only to a file this call created.
    match options.clone().create_new(true).mode(plan.mode).open(path) {
        Ok(file) => return Ok((file, true)),
        Err(e) if errno_of(&e) == libc::EEXIST && !plan.exclusive => {}
        Err(e) => return Err(fail("open", path, e)),
    }
    match options.open(path) {
        Ok(file) => return Ok((file, false)),
        // A dangling symlink (or a file removed meanwhile): create through it, as O_CREAT does.
        Err(e) if errno_of(&e) == libc::ENOENT => {}
        Err(e) => return Err(fail("open", path, e)),
    }
    options
        .create(true)
        .mode(plan.mode)
        .open(path)
        .map(|f| (f, true))
        .map_err(|e| fail("open", path, e))
}

pub(super) fn write_in_place(path: &Path, data: &[u8], plan: &WritePlan) -> Result<(), Error> {
    let (file, created) = open_for_write(path, plan)?;
    if created {
        // Exactly `mode`: the server's umask does not apply.
        file.set_permissions(Permissions::from_mode(plan.mode))
            .map_err(|e| fail("chmod", path, e))?;
    }
    match plan.offset {
        Some(offset) => file.write_all_at(data, offset),
        None => (&mut &file).write_all(data),
    }
    .map_err(|e| fail("write", path, e))
}

#[cfg(test)]
mod tests {
    use exec_server_protocol::Base64Bytes;

    use super::*;

    #[test]
    fn bad_combinations_are_invalid_params() {
        let base = FsWriteParams {
            exclusive: false,
            path: "/f".into(),
            data: Base64Bytes::default(),
            offset: None,
            append: false,
            truncate: None,
            create: true,
            mode: None,
            atomic: false,
        };
        let bad = [
            FsWriteParams {
                offset: Some(1),
                append: true,
                ..base.clone()
            },
            FsWriteParams {
                offset: Some(0),
                atomic: true,
                ..base.clone()
            },
            FsWriteParams {
                append: true,
                atomic: true,
                ..base.clone()
            },
            FsWriteParams {
                truncate: Some(false),
                atomic: true,
                ..base.clone()
            },
            FsWriteParams {
                truncate: Some(true),
                append: true,
                ..base.clone()
            },
            FsWriteParams {
                mode: Some(0o10000),
                ..base.clone()
            },
            FsWriteParams {
                exclusive: true,
                atomic: true,
                ..base.clone()
            },
            FsWriteParams {
                exclusive: true,
                create: false,
                ..base.clone()
            },
        ];
        for p in bad {
            let e = WritePlan::new(&p).unwrap_err();
            assert_eq!(e.code().code(), -32602, "{p:?}: {e}");
        }
        let plan = WritePlan::new(&base).unwrap();
        assert!(plan.truncate && plan.create && plan.mode == 0o644);
        let at = WritePlan::new(&FsWriteParams {
            offset: Some(3),
            ..base.clone()
        })
        .unwrap();
        assert!(!at.truncate);
        let appended = WritePlan::new(&FsWriteParams {
            append: true,
            ..base.clone()
        })
        .unwrap();
        assert!(!appended.truncate);
        // Exclusive goes with offset or append: the new file gets the bytes there.
        for p in [
            FsWriteParams {
                exclusive: true,
                ..base.clone()
            },
            FsWriteParams {
                exclusive: true,
                offset: Some(5),
                ..base.clone()
            },
            FsWriteParams {
                exclusive: true,
                append: true,
                ..base
            },
        ] {
            assert!(WritePlan::new(&p).unwrap().exclusive, "{p:?}");
        }
    }
}
