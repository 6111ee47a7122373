//! Params and result types of the `fs/*` methods (SPEC section 12), and the `data` of their -32020 error.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Base64Bytes;

/// Default and ceiling of `maxBytes` of `fs/read`: 4 MiB.
pub const FS_READ_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Permission bits of a file `fs/write` creates when `mode` is absent.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Permission bits of a directory `fs/mkdir` creates when `mode` is absent.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// The largest `mode` accepted: permission, setuid, setgid and sticky bits.
pub const MAX_MODE: u32 = 0o7777;

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_true(value: &bool) -> bool {
    *value
}

fn default_true() -> bool {
    true
}

/// What a path names: `file` (regular file), `dir`, `symlink`, or `other` (device, FIFO, socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    #[allow(missing_docs)]
    File,
    #[allow(missing_docs)]
    Dir,
    #[allow(missing_docs)]
    Symlink,
    #[allow(missing_docs)]
    Other,
}

/// `data` of a -32020 file error: which OS error it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileErrorData {
    /// The symbolic name of the OS error number, e.g. `ENOENT`, `ENOTDIR`, `EACCES`.
    pub errno: String,
}

// ---------------------------------------------------------------- fs/read

/// Params of `fs/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsReadParams {
    /// Absolute path of the file to read.
    pub path: String,
    /// Byte offset to start reading at (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Read at most this many bytes (default and ceiling 4 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// Result of `fs/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsReadResult {
    /// The bytes read, starting at `offset`.
    pub data: Base64Bytes,
    /// No byte follows the returned ones (the end of the file was reached).
    pub eof: bool,
    /// The file's size now, in bytes.
    pub size: u64,
}

// ---------------------------------------------------------------- fs/write

/// Params of `fs/write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsWriteParams {
    /// Absolute path of the file to write.
    pub path: String,
    /// The bytes to write.
    pub data: Base64Bytes,
    /// Write at this byte offset, leaving the rest of the file as it is (not with `append` or `atomic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Write at the end of the file (not with `offset` or `atomic`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub append: bool,
    /// Empty the file before writing; default `true` when neither `offset` nor `append` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// Create the file when it does not exist (default `true`); `false` makes a missing file ENOENT.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub create: bool,
    /// Fail with `EEXIST` when the path exists, as `O_EXCL` (not with `atomic` or `create: false`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclusive: bool,
    /// Permission bits of a file this call creates (default 0o644, applied exactly: no umask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4095))]
    pub mode: Option<u32>,
    /// Write a temporary file beside the target and rename it over the target: readers see the old or the new content, never a mix.
    #[serde(default, skip_serializing_if = "is_false")]
    pub atomic: bool,
}

/// Result of `fs/write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsWriteResult {
    /// The number of bytes written (all of `data`).
    pub bytes_written: u64,
}

// ---------------------------------------------------------------- fs/stat

/// Params of `fs/stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsStatParams {
    /// Absolute path to describe.
    pub path: String,
    /// Describe what a symlink points to (default `true`); `false` describes the link itself.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub follow_symlinks: bool,
}

/// Result of `fs/stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsStatResult {
    /// What the path names.
    pub kind: FileKind,
    /// Size in bytes (for a symlink not followed: the length of its target).
    pub size: u64,
    /// Permission bits, including setuid, setgid and sticky (at most 0o7777).
    pub mode: u32,
    /// Last modification time, in milliseconds since the Unix epoch (0 for earlier times).
    pub mtime_ms: u64,
    /// A symlink's target when it was not followed, otherwise `null`.
    #[schemars(required, extend("type" = ["string", "null"]))]
    pub target: Option<String>,
}

// ---------------------------------------------------------------- fs/list

/// Params of `fs/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsListParams {
    /// Absolute path of the directory to list.
    pub path: String,
}

/// One entry of a directory, as listed by `fs/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsEntry {
    /// The entry's name (not a path); invalid UTF-8 replaced by U+FFFD when `lossy`.
    pub name: String,
    /// What the entry is, not following symlinks.
    pub kind: FileKind,
    /// The name was not UTF-8: `name` cannot be used to address this entry.
    pub lossy: bool,
}

/// Result of `fs/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsListResult {
    /// The directory's entries sorted by name (by their bytes), without `.` and `..`.
    pub entries: Vec<FsEntry>,
}

// ---------------------------------------------------------------- fs/mkdir

/// Params of `fs/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsMkdirParams {
    /// Absolute path of the directory to create.
    pub path: String,
    /// Create missing parents too, and accept an existing directory (like `mkdir -p`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub parents: bool,
    /// Permission bits of the directory (default 0o755, applied exactly: no umask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4095))]
    pub mode: Option<u32>,
}

/// Result of `fs/mkdir`; it has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FsMkdirResult {}

// ---------------------------------------------------------------- fs/remove

/// Params of `fs/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsRemoveParams {
    /// Absolute path of the file, symlink or directory to remove (a symlink itself, never its target).
    pub path: String,
    /// Remove a directory with everything in it; symlinks inside are removed, never followed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recursive: bool,
}

/// Result of `fs/remove`; it has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FsRemoveResult {}

// ---------------------------------------------------------------- fs/rename

/// Params of `fs/rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsRenameParams {
    /// Absolute path of the entry to move.
    pub from: String,
    /// Absolute path to move it to; an existing file there is replaced, as rename(2) does.
    pub to: String,
}

/// Result of `fs/rename`; it has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FsRenameResult {}

// ---------------------------------------------------------------- fs/chmod

/// Params of `fs/chmod`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FsChmodParams {
    /// Absolute path of the entry whose mode to set (a symlink is followed).
    pub path: String,
    /// Permission bits with setuid, setgid and sticky (at most 0o7777), applied exactly.
    #[schemars(range(max = 4095))]
    pub mode: u32,
}

/// Result of `fs/chmod`; it has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FsChmodResult {}
