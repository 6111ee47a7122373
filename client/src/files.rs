//! [`ExecFiles`]: the files of the host a backend runs processes on (SPEC section 12), the
//! same way whether that is this machine ([`crate::LocalBackend`]) or a server's
//! ([`crate::RemoteBackend`]).

use exec_server_protocol::{Base64Bytes, FsEntry, FsReadResult, FsStatResult, FsWriteParams};

use crate::Error;

/// Files on the backend's host, with the permissions of the server (or of this process).
///
/// Every path is absolute (a relative one is -32602, [`crate::ErrorCode::InvalidParams`]).
/// An OS failure is -32020 ([`crate::ErrorCode::FileError`]) and [`Error::errno`] names
/// it (`"ENOENT"`). One call moves at most a message's worth of bytes: large files go in
/// chunks ([`ExecFiles::read`] returns at most 4 MiB; keep each write to a few MiB).
#[async_trait::async_trait]
pub trait ExecFiles: Send + Sync {
    /// `fs/read`: up to `max_bytes` (default and ceiling 4 MiB) from `offset`; the result
    /// says whether the file ended (`eof`) and its size now.
    async fn read(
        &self,
        path: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<FsReadResult, Error>;

    /// `fs/write`: writes `data` as `options` say (by default: create with mode 0o644,
    /// or replace the content); returns the number of bytes written (all of `data`).
    async fn write(
        &self,
        path: &str,
        data: Base64Bytes,
        options: WriteOptions,
    ) -> Result<u64, Error>;

    /// `fs/stat`: kind, size, permission bits, mtime; with `follow_symlinks` false, a
    /// symlink itself (and its target).
    async fn stat(&self, path: &str, follow_symlinks: bool) -> Result<FsStatResult, Error>;

    /// `fs/list`: a directory's entries sorted by name, without `.` and `..`.
    async fn list(&self, path: &str) -> Result<Vec<FsEntry>, Error>;

    /// `fs/mkdir`: creates a directory with `mode` (default 0o755, no umask); `parents`
    /// creates missing parents and accepts an existing directory, like `mkdir -p`.
    async fn mkdir(&self, path: &str, parents: bool, mode: Option<u32>) -> Result<(), Error>;

    /// `fs/remove`: removes a file, a symlink (never its target) or an empty directory;
    /// `recursive` removes a directory with everything in it.
    async fn remove(&self, path: &str, recursive: bool) -> Result<(), Error>;

    /// `fs/rename`: rename(2), replacing an existing `to` as it does.
    async fn rename(&self, from: &str, to: &str) -> Result<(), Error>;

    /// `fs/chmod`: sets the permission bits (setuid, setgid and sticky included, at most
    /// 0o7777) of `path`, following a symlink.
    async fn chmod(&self, path: &str, mode: u32) -> Result<(), Error>;
}

/// How [`ExecFiles::write`] writes. The default creates a missing file (mode 0o644) and
/// replaces the content of an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Write at this offset, leaving the rest of the file as it is.
    pub offset: Option<u64>,
    /// Write at the end of the file.
    pub append: bool,
    /// Empty the file first; default: when neither `offset` nor `append` is set.
    pub truncate: Option<bool>,
    /// Create a missing file (default `true`; `false` makes it ENOENT).
    pub create: bool,
    /// Only create: an existing path (even a dangling symlink) is EEXIST, as `O_EXCL`
    /// (not with `atomic` or `create: false`).
    pub exclusive: bool,
    /// Permission bits of a file this write creates (exactly: no umask).
    pub mode: Option<u32>,
    /// Write a temporary file beside the target and rename it over it: readers see the
    /// old content or the new, never a mix. An existing file keeps its mode.
    pub atomic: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            offset: None,
            append: false,
            truncate: None,
            create: true,
            exclusive: false,
            mode: None,
            atomic: false,
        }
    }
}

impl WriteOptions {
    /// Writes at `offset` without truncating.
    pub fn at(offset: u64) -> Self {
        WriteOptions {
            offset: Some(offset),
            ..WriteOptions::default()
        }
    }

    /// Appends.
    pub fn append() -> Self {
        WriteOptions {
            append: true,
            ..WriteOptions::default()
        }
    }

    /// Replaces the whole file atomically.
    pub fn atomic() -> Self {
        WriteOptions {
            atomic: true,
            ..WriteOptions::default()
        }
    }

    /// Whether to empty the file first.
    pub fn truncate(mut self, truncate: bool) -> Self {
        self.truncate = Some(truncate);
        self
    }

    /// Whether to create a missing file.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Whether to fail with EEXIST when the path exists, as `O_EXCL`.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// The permission bits of a file this write creates.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// The `fs/write` params.
    pub(crate) fn into_params(self, path: &str, data: Base64Bytes) -> FsWriteParams {
        FsWriteParams {
            exclusive: self.exclusive,
            path: path.to_owned(),
            data,
            offset: self.offset,
            append: self.append,
            truncate: self.truncate,
            create: self.create,
            mode: self.mode,
            atomic: self.atomic,
        }
    }
}
