//! `fs/stat` (a path's kind, size, mode and mtime, or a symlink itself) and `fs/list` (a
//! directory's entries, sorted by the bytes of their names, bounded by the message size).

use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use exec_server_protocol::{FileKind, FsEntry, FsListResult, FsStatResult, MAX_MODE};

use super::{fail, kind_of};
use crate::Error;

pub(super) fn stat(path: &Path, follow: bool) -> Result<FsStatResult, Error> {
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| fail("stat", path, e))?;
    let kind = kind_of(meta.file_type());
    let target = if kind == FileKind::Symlink {
        let target = std::fs::read_link(path).map_err(|e| fail("readlink", path, e))?;
        Some(target.to_string_lossy().into_owned())
    } else {
        None
    };
    let mtime_ms = u64::try_from(meta.mtime())
        .map_or(0, |s| s.saturating_mul(1000))
        .saturating_add(u64::try_from(meta.mtime_nsec()).map_or(0, |ns| ns / 1_000_000));
    let mtime_ms = if meta.mtime() < 0 { 0 } else { mtime_ms };
    Ok(FsStatResult {
        kind,
        size: meta.len(),
        mode: meta.mode() & MAX_MODE,
        mtime_ms,
        target,
    })
}

/// What one listed entry adds to the response beyond its name, as an upper estimate.
const ENTRY_OVERHEAD_BYTES: usize = 48;

pub(super) fn list(path: &Path, max_message_bytes: usize) -> Result<FsListResult, Error> {
    let dir = std::fs::read_dir(path).map_err(|e| fail("list", path, e))?;
    // (the raw name when it is not UTF-8, the entry): sorted by raw bytes below.
    let mut entries: Vec<(Option<Vec<u8>>, FsEntry)> = Vec::new();
    let mut estimate = 64usize;
    for entry in dir {
        let entry = entry.map_err(|e| fail("list", path, e))?;
        // The type from the directory itself (d_type), not following symlinks.
        let kind = match entry.file_type() {
            Ok(file_type) => kind_of(file_type),
            // Removed while being listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail("stat", &entry.path(), e)),
        };
        let (raw, name, lossy) = match entry.file_name().into_string() {
            Ok(name) => (None, name, false),
            Err(raw) => {
                let raw = raw.into_vec();
                let name = String::from_utf8_lossy(&raw).into_owned();
                (Some(raw), name, true)
            }
        };
        estimate = estimate.saturating_add(name.len() + ENTRY_OVERHEAD_BYTES);
        if estimate > max_message_bytes {
            return Err(Error::LimitReached(format!(
                "the listing of {} exceeds the maximum message size ({max_message_bytes} bytes)",
                path.display()
            )));
        }
        entries.push((raw, FsEntry { name, kind, lossy }));
    }
    let key = |(raw, entry): &(Option<Vec<u8>>, FsEntry)| -> Vec<u8> {
        raw.clone()
            .unwrap_or_else(|| entry.name.as_bytes().to_vec())
    };
    entries.sort_by_cached_key(key);
    Ok(FsListResult {
        entries: entries.into_iter().map(|(_, entry)| entry).collect(),
    })
}
