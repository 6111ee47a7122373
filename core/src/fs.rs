//! The `fs/*` methods of SPEC section 12: read, write (at an offset, appended, exclusively
//! created, or atomically replaced), stat, list, mkdir, remove (recursive without ever
//! following a symlink), rename and chmod, acting with the server's own permissions.
//!
//! Every call runs on tokio's blocking pool, never on a runtime worker, and at most
//! [`FsConfig::max_concurrent`] run at once per [`Files`]; a caller waits for a slot.
//! OS failures become [`Error::File`] (-32020) with the errno's symbolic name.
//!
//! This file holds the entry points and what they share (path and mode checks, the error
//! of an OS call); each concern has its own file: `read.rs`, `write.rs` (in place),
//! `atomic.rs` (temporary file and rename), `stat.rs` (stat and list), `mkdir.rs`,
//! `tree.rs` (directory-fd calls and the recursive remove), `errno.rs` (errno names).

mod atomic;
mod errno;
mod mkdir;
mod read;
mod stat;
mod tree;
mod write;

use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use exec_server_protocol::{
    DEFAULT_DIR_MODE, FS_READ_MAX_BYTES, FileKind, FsChmodParams, FsChmodResult, FsListParams,
    FsListResult, FsMkdirParams, FsMkdirResult, FsReadParams, FsReadResult, FsRemoveParams,
    FsRemoveResult, FsRenameParams, FsRenameResult, FsStatParams, FsStatResult, FsWriteParams,
    FsWriteResult, MAX_MODE,
};
use tokio::sync::Semaphore;

use crate::Error;
use write::WritePlan;

/// Default of [`FsConfig::max_concurrent`].
pub const DEFAULT_FS_CONCURRENCY: usize = 16;

/// Limits of the `fs/*` methods.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// At most this many file calls run at once; more wait for a slot.
    pub max_concurrent: usize,
    /// A directory listing whose response would exceed this many bytes is refused (-32001)
    /// before it is built in full.
    pub max_message_bytes: usize,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            max_concurrent: DEFAULT_FS_CONCURRENCY,
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The `fs/*` methods, with a bound on how many run at once.
#[derive(Debug, Clone)]
pub struct Files {
    config: FsConfig,
    permits: Arc<Semaphore>,
}

impl Files {
    /// File calls limited by `config`.
    pub fn new(config: FsConfig) -> Files {
        let permits = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        Files { config, permits }
    }

    /// Runs `call` on the blocking pool once a slot is free. The slot is held until `call`
    /// returns, even when the caller stops waiting, so the bound holds for the pool's threads.
    async fn run<T, F>(&self, call: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("file calls are shut down".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            call()
        })
        .await
        .map_err(|e| Error::Internal(format!("a file call failed: {e}")))?
    }

    /// `fs/read`: up to `maxBytes` (at most 4 MiB) from `offset`, read straight into the
    /// one buffer the response is encoded from.
    pub async fn read(&self, p: FsReadParams) -> Result<FsReadResult, Error> {
        let path = absolute(&p.path)?;
        let offset = p.offset.unwrap_or(0);
        let max = p
            .max_bytes
            .unwrap_or(FS_READ_MAX_BYTES)
            .min(FS_READ_MAX_BYTES);
        self.run(move || read::read(&path, offset, max)).await
    }

    /// `fs/write`.
    pub async fn write(&self, p: FsWriteParams) -> Result<FsWriteResult, Error> {
        let path = absolute(&p.path)?;
        let plan = WritePlan::new(&p)?;
        let data = p.data;
        self.run(move || {
            if plan.atomic {
                atomic::write_atomic(&path, &data, plan.create, plan.mode)?;
            } else {
                write::write_in_place(&path, &data, &plan)?;
            }
            Ok(FsWriteResult {
                bytes_written: data.len() as u64,
            })
        })
        .await
    }

    /// `fs/stat`.
    pub async fn stat(&self, p: FsStatParams) -> Result<FsStatResult, Error> {
        let path = absolute(&p.path)?;
        self.run(move || stat::stat(&path, p.follow_symlinks)).await
    }

    /// `fs/list`: entries sorted by the bytes of their names, without `.` and `..`.
    pub async fn list(&self, p: FsListParams) -> Result<FsListResult, Error> {
        let path = absolute(&p.path)?;
        let max = self.config.max_message_bytes;
        self.run(move || stat::list(&path, max)).await
    }

    /// `fs/mkdir`.
    pub async fn mkdir(&self, p: FsMkdirParams) -> Result<FsMkdirResult, Error> {
        let path = absolute(&p.path)?;
        let mode = checked_mode(p.mode, DEFAULT_DIR_MODE)?;
        self.run(move || {
            if p.parents {
                mkdir::mkdir_parents(&path, mode)?;
            } else {
                mkdir::mkdir_exact(&path, mode).map_err(|e| fail("mkdir", &path, e))?;
            }
            Ok(FsMkdirResult {})
        })
        .await
    }

    /// `fs/remove`: never follows a symlink (a symlink named by `path` is removed itself).
    pub async fn remove(&self, p: FsRemoveParams) -> Result<FsRemoveResult, Error> {
        let path = absolute(&p.path)?;
        tree::split(&path)?;
        self.run(move || tree::remove(&path, p.recursive).map(|()| FsRemoveResult {}))
            .await
    }

    /// `fs/rename`: rename(2); an existing `to` is replaced as rename(2) does.
    pub async fn rename(&self, p: FsRenameParams) -> Result<FsRenameResult, Error> {
        let from = absolute(&p.from)?;
        let to = absolute(&p.to)?;
        self.run(move || {
            std::fs::rename(&from, &to).map_err(|e| {
                let what = format!("{} -> {}", from.display(), to.display());
                fail("rename", Path::new(&what), e)
            })?;
            Ok(FsRenameResult {})
        })
        .await
    }

    /// `fs/chmod`: chmod(2), which follows symlinks; the mode is applied exactly (setuid,
    /// setgid and sticky included), as far as the OS lets the server set it.
    pub async fn chmod(&self, p: FsChmodParams) -> Result<FsChmodResult, Error> {
        let path = absolute(&p.path)?;
        let mode = checked_mode(Some(p.mode), 0)?;
        self.run(move || {
            std::fs::set_permissions(&path, Permissions::from_mode(mode))
                .map_err(|e| fail("chmod", &path, e))?;
            Ok(FsChmodResult {})
        })
        .await
    }
}

/// The error of a failed OS call: -32020 with the errno's name, `op`, the path and the OS text.
pub(crate) fn fail(op: &str, path: &Path, e: io::Error) -> Error {
    let message = format!("{op} {}: {e}", path.display());
    match e.raw_os_error() {
        Some(n) => Error::File {
            errno: errno::errno_name(n),
            message,
        },
        None => Error::Internal(message),
    }
}

/// `path` if it is absolute and free of NUL bytes; -32602 otherwise.
fn absolute(path: &str) -> Result<PathBuf, Error> {
    if !path.starts_with('/') {
        return Err(Error::InvalidParams(format!(
            "path must be absolute: {path:?}"
        )));
    }
    if path.contains('\0') {
        return Err(Error::InvalidParams(
            "a path must not contain a NUL byte".into(),
        ));
    }
    Ok(PathBuf::from(path))
}

fn checked_mode(mode: Option<u32>, default: u32) -> Result<u32, Error> {
    match mode {
        Some(mode) if mode > MAX_MODE => Err(Error::InvalidParams(format!(
            "mode {mode:#o} has bits beyond {MAX_MODE:#o}"
        ))),
        Some(mode) => Ok(mode),
        None => Ok(default),
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn kind_of(file_type: std::fs::FileType) -> FileKind {
    if file_type.is_symlink() {
        FileKind::Symlink
    } else if file_type.is_dir() {
        FileKind::Dir
    } else if file_type.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_nul_paths_are_refused() {
        for p in ["", "tmp/x", "./x", "~/x", "/a\0b"] {
            assert_eq!(absolute(p).unwrap_err().code().code(), -32602, "{p:?}");
        }
        assert_eq!(absolute("/a/b").unwrap(), PathBuf::from("/a/b"));
    }
}
