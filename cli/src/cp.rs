//! `exec-server cp`: copy one file to or from the server's host through the `fs/*` calls,
//! in chunks that fit the message limit and with several in flight, keeping its mode and
//! replacing the destination atomically (a temporary file beside it, then a rename).

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use exec_server_client::{
    Base64Bytes, ConnectOptions, Error, ErrorCode, ExecBackend, ExecFiles, FileKind, FsStatResult,
    RemoteBackend, StartOptions, WriteOptions,
};
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};

use crate::run::{ServerArgs, connect};

/// The prefix that names a path on the server.
const REMOTE: &str = "remote:";

/// Bytes per `fs/read` (its ceiling) and, at most, per `fs/write`: 4 MiB, about 5.6 MiB
/// as base64 in a message, within the default 16 MiB limit.
const CHUNK: usize = exec_server_protocol::FS_READ_MAX_BYTES as usize;

/// Calls in flight at once: the server reads or writes one chunk while the next crosses
/// the connection.
const DEPTH: usize = 4;

/// The smallest chunk tried when the server's message limit refuses larger ones.
const MIN_CHUNK: usize = 16 * 1024;

/// How often one chunk is sent again after the connection dropped (and was resumed).
const RETRIES: u32 = 3;

/// How many symlinks are followed to find the file a destination path names.
const MAX_SYMLINK_HOPS: usize = 40;

/// Options of `exec-server cp`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  exec-server cp ./build.tar.gz remote:/tmp/build.tar.gz
  exec-server cp remote:/var/log/syslog ./syslog
  exec-server cp ./tool remote:/usr/local/bin/     (into a directory, keeping the name)

The copy keeps the source's permission bits and replaces the destination atomically: it
is written to a temporary file beside it and renamed into place, so a reader sees the
old file or the new one, never a mix. Progress goes to stderr when it is a terminal.
Exit status: 0 when the file was copied, 1 otherwise (with the reason on stderr).")]
pub struct CpArgs {
    #[command(flatten)]
    server: ServerArgs,

    /// The file to copy: a local path, or `remote:/PATH` on the server.
    #[arg(value_name = "SRC")]
    src: String,

    /// Where to copy it: `remote:/PATH` when SRC is local, a local path when SRC is
    /// remote. An existing directory receives the file under SRC's name.
    #[arg(value_name = "DST")]
    dst: String,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Local(PathBuf),
    /// An absolute path on the server.
    Remote(String),
}

fn place(arg: &str) -> anyhow::Result<Place> {
    match arg.strip_prefix(REMOTE) {
        Some(path) if path.starts_with('/') => Ok(Place::Remote(path.to_owned())),
        Some(_) => bail!("a remote path must be absolute: {arg:?} (write {REMOTE}/PATH)"),
        None if arg.is_empty() => bail!("an empty path names no file"),
        None => Ok(Place::Local(PathBuf::from(arg))),
    }
}

/// Runs `exec-server cp`.
pub fn main(args: CpArgs) -> anyhow::Result<()> {
    let src = place(&args.src)?;
    let dst = place(&args.dst)?;
    let direction = match (src, dst) {
        (Place::Local(from), Place::Remote(to)) => Direction::Upload { from, to },
        (Place::Remote(from), Place::Local(to)) => Direction::Download { from, to },
        (Place::Local(_), Place::Local(_)) => bail!(
            "both paths are local: one of SRC and DST must be on the server ({REMOTE}/PATH); for a local copy use cp"
        ),
        (Place::Remote(_), Place::Remote(_)) => bail!(
            "both paths are remote: one of SRC and DST must be local (a copy on the server is `exec-server run -- cp SRC DST`)"
        ),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(copy(&args.server, direction));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

#[derive(Debug)]
enum Direction {
    Upload { from: PathBuf, to: String },
    Download { from: String, to: PathBuf },
}

/// Temporary files to remove when the copy fails or is interrupted.
#[derive(Debug, Default)]
struct Leftovers {
    remote: Option<String>,
    local: Option<PathBuf>,
}

type Cleanup = Mutex<Leftovers>;

fn leftovers(cleanup: &Cleanup) -> std::sync::MutexGuard<'_, Leftovers> {
    cleanup.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn copy(server: &ServerArgs, direction: Direction) -> anyhow::Result<()> {
    let interrupted = interruption()?;
    tokio::pin!(interrupted);
    let options = ConnectOptions::default().client_name("exec-server cp");
    let client = tokio::select! {
        client = connect(server, options) => client?,
        signal = &mut interrupted => bail!("interrupted by {signal}"),
    };
    let backend = RemoteBackend::new(client.clone());
    let files = backend.files();
    let cleanup = Cleanup::default();
    let transfer = async {
        match &direction {
            Direction::Upload { from, to } => upload(&backend, from, to, &cleanup).await,
            Direction::Download { from, to } => download(files, from, to, &cleanup).await,
        }
    };
    let result = tokio::select! {
        result = transfer => result,
        signal = &mut interrupted => Err(anyhow!("interrupted by {signal}")),
    };
    if result.is_err() {
        let left = std::mem::take(&mut *leftovers(&cleanup));
        if let Some(temp) = left.remote {
            let _ = tokio::time::timeout(Duration::from_secs(5), files.remove(&temp, false)).await;
        }
        if let Some(temp) = left.local {
            let _ = std::fs::remove_file(temp);
        }
    }
    client.close().await;
    result
}

/// Resolves on the first SIGINT, SIGTERM or SIGHUP (registered at once, so none of them
/// ends `cp` without its cleanup).
fn interruption() -> anyhow::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        }
    })
}

/// A client error as a message: a file error ends with its errno name.
fn explain(e: &Error) -> anyhow::Error {
    match (e, e.errno()) {
        (Error::Rpc { message, .. }, Some(errno)) => anyhow!("{message} ({errno})"),
        _ => anyhow!("{e}"),
    }
}

fn is_errno(e: &Error, name: &str) -> bool {
    e.errno().as_deref() == Some(name)
}

/// A fresh name for a temporary file beside `name`: hidden, random, at most 255 bytes.
fn temp_name(name: &str) -> String {
    let mut end = name.len().min(200);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}.{:016x}.cp-tmp", &name[..end], random_u64())
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_os.is_ok() {
        return u64::from_ne_bytes(bytes);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------- upload

/// The parent directory and file name of an absolute remote path.
fn split_remote(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("/", path),
    }
}

fn join_remote(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The remote file `dst` names for a source called `name`: inside `dst` when that is a
/// directory, through symlinks to the file they point at; and what is there now.
async fn remote_target(
    files: &dyn ExecFiles,
    dst: &str,
    name: &str,
) -> anyhow::Result<(String, Option<FsStatResult>)> {
    let mut path = match files.stat(dst, true).await {
        Ok(stat) if stat.kind == FileKind::Dir => join_remote(dst, name),
        Ok(_) | Err(_) if dst.ends_with('/') => {
            bail!("{REMOTE}{dst} is not a directory")
        }
        Ok(_) => dst.to_owned(),
        Err(e) if is_errno(&e, "ENOENT") => dst.to_owned(),
        Err(e) => return Err(explain(&e).context(format!("cannot copy to {REMOTE}{dst}"))),
    };
    for _ in 0..MAX_SYMLINK_HOPS {
        match files.stat(&path, false).await {
            Ok(stat) if stat.kind == FileKind::Symlink => {
                let target = stat.target.unwrap_or_default();
                path = if target.starts_with('/') {
                    target
                } else {
                    join_remote(split_remote(&path).0, &target)
                };
            }
            Ok(stat) => return Ok((path, Some(stat))),
            Err(e) if is_errno(&e, "ENOENT") => return Ok((path, None)),
            Err(e) => return Err(explain(&e).context(format!("cannot copy to {REMOTE}{path}"))),
        }
    }
    bail!("cannot copy to {REMOTE}{dst}: too many levels of symbolic links")
}

/// How one chunk is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Put {
    /// The first chunk: creates the file with this mode, or empties an existing one.
    Create(u32),
    /// At the chunk's offset, into the file the first chunk made.
    At,
    /// At the end (a device or FIFO has no offsets).
    Append,
}

/// Writes `data` (at `offset`, as `how` says) in pieces of at most `limit` bytes; halves
/// `limit` while the server refuses a message as too large, and sends a piece again after
/// the connection was resumed (a write at an offset can be repeated).
async fn put(
    files: &dyn ExecFiles,
    path: &str,
    offset: u64,
    data: Base64Bytes,
    how: Put,
    limit: &AtomicU64,
) -> Result<(), Error> {
    let mut done = 0usize;
    let mut retries = 0;
    loop {
        let size = usize::try_from(limit.load(Ordering::Relaxed))
            .unwrap_or(CHUNK)
            .min(data.len() - done);
        let piece: Base64Bytes = if done == 0 && size == data.len() {
            data.clone()
        } else {
            data[done..done + size].into()
        };
        let options = match how {
            Put::Create(mode) if done == 0 => WriteOptions::default().mode(mode),
            Put::Append => WriteOptions::append().create(false),
            _ => WriteOptions::at(offset + done as u64).create(false),
        };
        match files.write(path, piece, options).await {
            Ok(_) => {
                done += size;
                if done == data.len() {
                    return Ok(());
                }
            }
            Err(e) if e.code() == Some(ErrorCode::LimitReached) && size > MIN_CHUNK => {
                limit.fetch_min((size / 2) as u64, Ordering::Relaxed);
            }
            Err(e) if e.is_disconnected() && retries < RETRIES && how != Put::Append => {
                retries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Chunks of a local file read on a thread of its own: `(offset, bytes)` from offset 0
/// (an empty file gives one empty chunk), ending with the error if reading fails.
fn read_chunks(
    file: std::fs::File,
) -> tokio::sync::mpsc::Receiver<std::io::Result<(u64, Base64Bytes)>> {
    let (tx, rx) = tokio::sync::mpsc::channel(DEPTH);
    std::thread::spawn(move || {
        let mut file = file;
        let mut offset = 0u64;
        loop {
            let mut buffer = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match file.read(&mut buffer[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            buffer.truncate(filled);
            let sent = (filled > 0 || offset == 0)
                .then(|| tx.blocking_send(Ok((offset, buffer.into()))).is_ok());
            if filled < CHUNK || sent == Some(false) {
                return;
            }
            offset += filled as u64;
        }
    });
    rx
}

/// Sets the mode of a remote file. The protocol has no chmod: `fs/write` gives a mode to
/// the files it creates only. So this runs `chmod` on the server.
async fn remote_chmod(backend: &dyn ExecBackend, path: &str, mode: u32) -> anyhow::Result<()> {
    let argv = [
        "chmod".to_owned(),
        format!("{mode:o}"),
        "--".to_owned(),
        path.to_owned(),
    ];
    let process = backend
        .start(StartOptions::new(argv).timeout(Duration::from_secs(60)))
        .await
        .map_err(|e| explain(&e))?;
    let out = process.events()?.collect().await;
    if out.exit_code != Some(0) {
        bail!(
            "chmod {mode:o} failed ({}): {}",
            out.exit_code
                .map_or_else(|| "no exit status".to_owned(), |c| format!("exit {c}")),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

async fn upload(
    backend: &dyn ExecBackend,
    from: &Path,
    to: &str,
    cleanup: &Cleanup,
) -> anyhow::Result<()> {
    let files = backend.files();
    let shown_from = from.display();
    let file = std::fs::File::open(from).with_context(|| format!("cannot open {shown_from}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {shown_from}"))?;
    if meta.is_dir() {
        bail!("{shown_from} is a directory (cp copies one file)");
    }
    let mode = meta.permissions().mode() & 0o7777;
    let total = meta.is_file().then_some(meta.len());
    let name = from
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{shown_from} has no file name to copy under"))?;

    let (target, existing) = remote_target(files, to, name).await?;
    let shown_to = format!("{REMOTE}{target}");
    let (dir, target_name) = split_remote(&target);
    let dir_stat = files
        .stat(dir, true)
        .await
        .map_err(|e| explain(&e).context(format!("cannot copy to {shown_to}")))?;
    if dir_stat.kind != FileKind::Dir {
        bail!("cannot copy to {shown_to}: {REMOTE}{dir} is not a directory");
    }
    // Where the bytes go: a new temporary file beside the target, renamed over it at the
    // end; or the target itself when it is a device or FIFO (written to, not replaced).
    let device = match existing.as_ref().map(|s| s.kind) {
        Some(FileKind::Dir) => bail!("cannot copy to {shown_to}: it is a directory"),
        Some(FileKind::Other) => true,
        _ => false,
    };
    let mut temp = None;
    if !device {
        for _ in 0..8 {
            let candidate = join_remote(dir, &temp_name(target_name));
            match files.stat(&candidate, false).await {
                Err(e) if is_errno(&e, "ENOENT") => {
                    temp = Some(candidate);
                    break;
                }
                _ => {}
            }
        }
        if temp.is_none() {
            bail!("cannot find a free temporary name in {REMOTE}{dir}");
        }
    }
    // Created owner-writable (later chunks open it again), then given `mode` by chmod
    // when that differs.
    let create_mode = if device { mode } else { mode | 0o600 };

    let mut progress = Progress::new(total);
    let limit = AtomicU64::new(CHUNK as u64);
    let mut chunks = read_chunks(file);
    let read_error = |e: std::io::Error| anyhow!(e).context(format!("cannot read {shown_from}"));
    let write_error = |e: Error| explain(&e).context(format!("cannot write {shown_to}"));

    // The first chunk creates the file, alone.
    let (_, first) = chunks
        .recv()
        .await
        .unwrap_or_else(|| Ok((0, Base64Bytes::default())))
        .map_err(read_error)?;
    let first_len = first.len() as u64;
    let mut write_to = match &temp {
        Some(temp) => {
            leftovers(cleanup).remote = Some(temp.clone());
            temp.clone()
        }
        None => target.clone(),
    };
    match put(
        files,
        &write_to,
        0,
        first.clone(),
        Put::Create(create_mode),
        &limit,
    )
    .await
    {
        Ok(()) => {}
        // A directory that takes no new files, beside a target that may be writable:
        // write the target in place (not atomic then).
        Err(e) if temp.is_some() && (is_errno(&e, "EACCES") || is_errno(&e, "EPERM")) => {
            leftovers(cleanup).remote = None;
            temp = None;
            write_to = target.clone();
            put(files, &write_to, 0, first, Put::Create(create_mode), &limit)
                .await
                .map_err(write_error)?;
        }
        Err(e) => return Err(write_error(e)),
    }
    progress.advance(first_len);

    // The rest at their offsets, several at once (appended in order to a device).
    let how = if device { Put::Append } else { Put::At };
    let in_flight = if device { 1 } else { DEPTH };
    let mut writing = FuturesUnordered::new();
    let mut reading = first_len > 0;
    while reading || !writing.is_empty() {
        // Encoding a chunk takes a while and the calls here are often ready at once:
        // let a signal be seen between chunks (tokio's budget counts calls, not time).
        tokio::task::yield_now().await;
        tokio::select! {
            chunk = chunks.recv(), if reading && writing.len() < in_flight => match chunk {
                None => reading = false,
                Some(chunk) => {
                    let (offset, data) = chunk.map_err(read_error)?;
                    let len = data.len() as u64;
                    let (limit, write_to) = (&limit, &write_to);
                    writing.push(async move {
                        put(files, write_to, offset, data, how, limit).await.map(|()| len)
                    });
                }
            },
            Some(done) = writing.next(), if !writing.is_empty() => {
                progress.advance(done.map_err(write_error)?);
            }
        }
    }
    progress.finish();
    if device {
        return Ok(());
    }

    match &temp {
        Some(temp) => {
            if create_mode != mode {
                remote_chmod(backend, temp, mode)
                    .await
                    .with_context(|| format!("cannot set the mode of {REMOTE}{temp}"))?;
            }
            files
                .rename(temp, &target)
                .await
                .map_err(|e| explain(&e).context(format!("cannot rename into {shown_to}")))?;
            leftovers(cleanup).remote = None;
        }
        None => {
            // Written in place: a file that existed kept its mode; give it the source's.
            let now = files.stat(&target, true).await.map_err(|e| explain(&e))?;
            if now.mode != mode {
                remote_chmod(backend, &target, mode)
                    .await
                    .with_context(|| format!("cannot set the mode of {shown_to}"))?;
            }
        }
    }
    let stat = files
        .stat(&target, true)
        .await
        .map_err(|e| explain(&e).context(format!("cannot check {shown_to}")))?;
    if let Some(total) = total
        && stat.size != total
    {
        bail!(
            "{shown_to} has {} bytes after the copy, not {total}: was it changed meanwhile?",
            stat.size
        );
    }
    if stat.mode != mode {
        bail!("{shown_to} has mode {:o}, not {mode:o}", stat.mode);
    }
    Ok(())
}

// ---------------------------------------------------------------- download

/// The local file `dst` names for a source called `name` (as [`remote_target`] does).
fn local_target(dst: &Path, name: &str) -> anyhow::Result<(PathBuf, Option<std::fs::Metadata>)> {
    let trailing_slash = dst.as_os_str().to_string_lossy().ends_with('/');
    let mut path = match std::fs::metadata(dst) {
        Ok(meta) if meta.is_dir() => dst.join(name),
        Ok(_) | Err(_) if trailing_slash => bail!("{} is not a directory", dst.display()),
        _ => dst.to_path_buf(),
    };
    for _ in 0..MAX_SYMLINK_HOPS {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)
                    .with_context(|| format!("cannot read the link {}", path.display()))?;
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            Ok(meta) => return Ok((path, Some(meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((path, None)),
            Err(e) => {
                return Err(anyhow!(e).context(format!("cannot copy to {}", path.display())));
            }
        }
    }
    bail!(
        "cannot copy to {}: too many levels of symbolic links",
        dst.display()
    )
}

/// Creates a new temporary file beside `target` (mode 0600 until the copy is complete).
fn local_temp(target: &Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempt = 0;
    loop {
        let temp = dir.join(temp_name(&name));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(e) => {
                return Err(anyhow!(e).context(format!(
                    "cannot create a temporary file in {}",
                    dir.display()
                )));
            }
        }
    }
}

async fn download(
    files: &dyn ExecFiles,
    from: &str,
    to: &Path,
    cleanup: &Cleanup,
) -> anyhow::Result<()> {
    let shown_from = format!("{REMOTE}{from}");
    let stat = files
        .stat(from, true)
        .await
        .map_err(|e| explain(&e).context(format!("cannot copy {shown_from}")))?;
    match stat.kind {
        FileKind::File => {}
        FileKind::Dir => bail!("{shown_from} is a directory (cp copies one file)"),
        _ => bail!("{shown_from} is not a regular file"),
    }
    let name = split_remote(from).1;
    let (target, existing) = local_target(to, name)?;
    let shown_to = target.display().to_string();
    let in_place = match &existing {
        Some(meta) if meta.is_dir() => bail!("cannot copy to {shown_to}: it is a directory"),
        Some(meta) => !meta.is_file(),
        None => false,
    };
    let (temp, file) = if in_place {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&target)
            .with_context(|| format!("cannot open {shown_to}"))?;
        (None, file)
    } else {
        let (temp, file) = local_temp(&target)?;
        leftovers(cleanup).local = Some(temp.clone());
        (Some(temp), file)
    };
    let file = Arc::new(file);

    let mut progress = Progress::new(Some(stat.size));
    let fail = |e: Error| explain(&e).context(format!("cannot read {shown_from}"));
    let mut offset = 0u64;
    let mut known_size = stat.size;
    let mut max = CHUNK as u64;
    let mut retries = 0;
    // Reads at their offsets, several in flight, taken in order. A short read that is
    // not the end (the file changed size), a refused size or a resumed connection
    // starts the reads again from where the copy is.
    'reads: loop {
        let mut reading = FuturesOrdered::new();
        let mut next = offset;
        loop {
            // As for uploads: a signal is seen between chunks.
            tokio::task::yield_now().await;
            while reading.len() < DEPTH && (next < known_size || reading.is_empty()) {
                let at = next;
                reading.push_back(async move { (at, files.read(from, at, Some(max)).await) });
                next += max;
            }
            let Some((at, result)) = reading.next().await else {
                continue 'reads;
            };
            let got = match result {
                Ok(got) => got,
                Err(e) if e.code() == Some(ErrorCode::LimitReached) && max > MIN_CHUNK as u64 => {
                    max /= 2;
                    continue 'reads;
                }
                Err(e) if e.is_disconnected() && retries < RETRIES => {
                    retries += 1;
                    continue 'reads;
                }
                Err(e) => return Err(fail(e)),
            };
            debug_assert_eq!(at, offset);
            let len = got.data.len() as u64;
            let data = got.data;
            let writer = file.clone();
            tokio::task::spawn_blocking(move || (&*writer).write_all(&data))
                .await
                .map_err(|e| anyhow!("the writer failed: {e}"))?
                .with_context(|| format!("cannot write {shown_to}"))?;
            offset += len;
            progress.advance(len);
            if got.eof {
                break 'reads;
            }
            known_size = known_size.max(got.size);
            if len != max {
                continue 'reads;
            }
        }
    }
    progress.finish();

    let file = Arc::try_unwrap(file).map_err(|_| anyhow!("the local file is still in use"))?;
    if let Some(temp) = temp {
        // Exactly the source's mode (no umask), as the server's own writes do.
        file.set_permissions(std::fs::Permissions::from_mode(stat.mode))
            .with_context(|| format!("cannot set the mode of {}", temp.display()))?;
        drop(file);
        std::fs::rename(&temp, &target)
            .with_context(|| format!("cannot rename {} to {shown_to}", temp.display()))?;
        leftovers(cleanup).local = None;
    }
    Ok(())
}

// ---------------------------------------------------------------- progress

/// Progress on stderr when it is a terminal: bytes, percent, MB/s, at most ten times a
/// second. Nothing when stderr is not a terminal.
struct Progress {
    on: bool,
    total: Option<u64>,
    done: u64,
    start: Instant,
    shown: Option<Instant>,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        Progress {
            on: crate::tty::is_tty(2),
            total,
            done: 0,
            start: Instant::now(),
            shown: None,
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if self.on
            && self
                .shown
                .is_none_or(|at| at.elapsed() >= Duration::from_millis(100))
        {
            self.show();
            self.shown = Some(Instant::now());
        }
    }

    fn show(&self) {
        let seconds = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / seconds / 1e6;
        let line = match self.total {
            Some(total) if total > 0 => format!(
                "{} / {} ({:3.0}%)  {rate:.1} MB/s",
                human(self.done),
                human(total),
                self.done as f64 * 100.0 / total as f64
            ),
            _ => format!("{}  {rate:.1} MB/s", human(self.done)),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[K{line}");
        let _ = stderr.flush();
    }

    fn finish(&mut self) {
        if self.on {
            self.show();
            eprintln!();
            self.on = false;
        }
    }
}

impl Drop for Progress {
    /// A copy that failed or was interrupted leaves its last progress line complete, so
    /// the error starts on a line of its own.
    fn drop(&mut self) {
        if self.on && self.shown.is_some() {
            eprintln!();
        }
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_local_or_absolute_remote() {
        assert_eq!(
            place("remote:/tmp/a").unwrap(),
            Place::Remote("/tmp/a".into())
        );
        assert_eq!(place("./a").unwrap(), Place::Local("./a".into()));
        for bad in ["remote:tmp/a", "remote:", "remote:~/a", ""] {
            assert!(place(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn remote_paths_split_and_join() {
        assert_eq!(split_remote("/a/b/c"), ("/a/b", "c"));
        assert_eq!(split_remote("/c"), ("/", "c"));
        assert_eq!(join_remote("/", "c"), "/c");
        assert_eq!(join_remote("/a/", "c"), "/a/c");
        assert_eq!(join_remote("/a", "c"), "/a/c");
    }

    #[test]
    fn temp_names_are_hidden_fresh_and_short() {
        let long = "é".repeat(200);
        let (a, b) = (temp_name(&long), temp_name(&long));
        assert_ne!(a, b);
        assert!(
            a.len() <= 255 && a.starts_with(".é") && a.ends_with(".cp-tmp"),
            "{a}"
        );
    }

    #[test]
    fn sizes_read_as_people_do() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(100 * 1024 * 1024), "100.0 MiB");
    }
}
