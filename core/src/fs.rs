//! The `fs/*` methods of SPEC section 12: read, write (at an offset, appended, or atomically
//! replaced), stat, list, mkdir, remove (recursive without ever following a symlink) and rename,
//! acting with the server's own permissions.
//!
//! Every call runs on tokio's blocking pool, never on a runtime worker, and at most
//! [`FsConfig::max_concurrent`] run at once per [`Files`]; a caller waits for a slot.
//! OS failures become [`Error::File`] (-32020) with the errno's symbolic name.

pub(crate) mod errno;
mod tree;

use std::ffi::OsStr;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use exec_server_protocol::{
    Base64Bytes, DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, FS_READ_MAX_BYTES, FileKind, FsEntry,
    FsListParams, FsListResult, FsMkdirParams, FsMkdirResult, FsReadParams, FsReadResult,
    FsRemoveParams, FsRemoveResult, FsRenameParams, FsRenameResult, FsStatParams, FsStatResult,
    FsWriteParams, FsWriteResult, MAX_MODE,
};
use tokio::sync::Semaphore;

use crate::Error;

/// Default of [`FsConfig::max_concurrent`].
pub const DEFAULT_FS_CONCURRENCY: usize = 16;

/// How many symlinks an atomic write follows to find the file it replaces (as the kernel's
/// own limit for a path lookup).
const MAX_SYMLINK_HOPS: usize = 40;

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
        self.run(move || read(&path, offset, max)).await
    }

    /// `fs/write`.
    pub async fn write(&self, p: FsWriteParams) -> Result<FsWriteResult, Error> {
        let path = absolute(&p.path)?;
        let plan = WritePlan::new(&p)?;
        let data = p.data;
        self.run(move || {
            if plan.atomic {
                write_atomic(&path, &data, plan.create, plan.mode)?;
            } else {
                write_in_place(&path, &data, &plan)?;
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
        self.run(move || stat(&path, p.follow_symlinks)).await
    }

    /// `fs/list`: entries sorted by the bytes of their names, without `.` and `..`.
    pub async fn list(&self, p: FsListParams) -> Result<FsListResult, Error> {
        let path = absolute(&p.path)?;
        let max = self.config.max_message_bytes;
        self.run(move || list(&path, max)).await
    }

    /// `fs/mkdir`.
    pub async fn mkdir(&self, p: FsMkdirParams) -> Result<FsMkdirResult, Error> {
        let path = absolute(&p.path)?;
        let mode = checked_mode(p.mode, DEFAULT_DIR_MODE)?;
        self.run(move || {
            if p.parents {
                mkdir_parents(&path, mode)?;
            } else {
                mkdir_exact(&path, mode).map_err(|e| fail("mkdir", &path, e))?;
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

// ---------------------------------------------------------------- read

/// A shared buffer of `len` zero bytes, allocated once (no copy when it becomes the response).
fn zeroed_shared(len: usize) -> Arc<[u8]> {
    let mut buffer = Arc::<[u8]>::new_uninit_slice(len);
    let Some(slice) = Arc::get_mut(&mut buffer) else {
        // A fresh Arc is never shared; fall back to a copy rather than assume it.
        return Arc::from(vec![0u8; len]);
    };
    slice.fill(MaybeUninit::new(0));
    // SAFETY: every element was initialized by the fill above.
    unsafe { buffer.assume_init() }
}

fn read(path: &Path, offset: u64, max: u64) -> Result<FsReadResult, Error> {
    // O_NONBLOCK: opening or reading a FIFO or terminal never waits (EAGAIN instead).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail("open", path, e))?;
    let meta = file.metadata().map_err(|e| fail("stat", path, e))?;
    let known = meta.is_file() && meta.len() > 0;
    let (data, hit_end) = if known {
        read_known(&file, offset, max.min(meta.len().saturating_sub(offset)))
    } else {
        // Size unknown (a device, FIFO, or a zero-size procfs file): read until end or `max`.
        read_stream(&file, offset, max)
    }
    .map_err(|e| fail("read", path, e))?;
    let size = file.metadata().map_or(meta.len(), |m| m.len());
    let end = offset.saturating_add(data.len() as u64);
    let eof = hit_end || (known && end >= size);
    Ok(FsReadResult {
        data: Base64Bytes::from_shared(data),
        eof,
        size,
    })
}

/// Reads `want` bytes at `offset` into one buffer; `true` when the file ended before that.
fn read_known(file: &File, offset: u64, want: u64) -> io::Result<(Arc<[u8]>, bool)> {
    let want = usize::try_from(want).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buffer = zeroed_shared(want);
    let Some(slice) = Arc::get_mut(&mut buffer) else {
        return Err(io::Error::from_raw_os_error(libc::ENOMEM));
    };
    let mut got = 0;
    let mut hit_end = false;
    while got < want {
        match file.read_at(&mut slice[got..], offset + got as u64) {
            Ok(0) => {
                hit_end = true;
                break;
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got < want {
        // The file shrank (or reports a size it does not have): keep only what was read.
        let short: Arc<[u8]> = Arc::from(&buffer[..got]);
        buffer = short;
    }
    Ok((buffer, hit_end))
}

/// Reads up to `max` bytes from something whose size is unknown; `true` when it ended.
fn read_stream(file: &File, offset: u64, max: u64) -> io::Result<(Arc<[u8]>, bool)> {
    let max = usize::try_from(max).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut data = Vec::new();
    let mut chunk = vec![0u8; max.min(64 * 1024)];
    let mut seekable = true;
    let mut hit_end = false;
    while data.len() < max {
        let room = (max - data.len()).min(chunk.len());
        let read = if seekable {
            let at = offset
                .checked_add(data.len() as u64)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            file.read_at(&mut chunk[..room], at)
        } else {
            (&mut &*file).read(&mut chunk[..room])
        };
        match read {
            Ok(0) => {
                hit_end = true;
                break;
            }
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A FIFO or terminal has no offsets: read it in order from where it is.
            Err(e) if errno_of(&e) == libc::ESPIPE && seekable && offset == 0 => seekable = false,
            // Nothing more to read right now: return what was read.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !data.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    Ok((Arc::from(data), hit_end))
}

// ---------------------------------------------------------------- write

/// The checked options of one `fs/write`.
#[derive(Debug)]
struct WritePlan {
    offset: Option<u64>,
    append: bool,
    truncate: bool,
    create: bool,
    mode: u32,
    atomic: bool,
}

impl WritePlan {
    fn new(p: &FsWriteParams) -> Result<WritePlan, Error> {
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
        Ok(WritePlan {
            offset: p.offset,
            append: p.append,
            truncate: p.truncate.unwrap_or(p.offset.is_none() && !p.append),
            create: p.create,
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
        Err(e) if errno_of(&e) == libc::EEXIST => {}
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

fn write_in_place(path: &Path, data: &[u8], plan: &WritePlan) -> Result<(), Error> {
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
fn write_atomic(path: &Path, data: &[u8], create: bool, mode: u32) -> Result<(), Error> {
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

// ---------------------------------------------------------------- stat, list

fn stat(path: &Path, follow: bool) -> Result<FsStatResult, Error> {
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

fn list(path: &Path, max_message_bytes: usize) -> Result<FsListResult, Error> {
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

// ---------------------------------------------------------------- mkdir

/// Creates directory `path` with exactly `mode` (no umask): made owner-only first, then
/// set through a descriptor that cannot have followed a symlink.
fn mkdir_exact(path: &Path, mode: u32) -> io::Result<()> {
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
fn mkdir_parents(path: &Path, mode: u32) -> Result<(), Error> {
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
            ..base
        })
        .unwrap();
        assert!(!appended.truncate);
    }

    #[test]
    fn relative_and_nul_paths_are_refused() {
        for p in ["", "tmp/x", "./x", "~/x", "/a\0b"] {
            assert_eq!(absolute(p).unwrap_err().code().code(), -32602, "{p:?}");
        }
        assert_eq!(absolute("/a/b").unwrap(), PathBuf::from("/a/b"));
    }
}
