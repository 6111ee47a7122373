//! `exec-server cp`: copy one file to or from the server's host through the `fs/*` calls
//! alone (it never starts a process there), in chunks that fit the message limit and with
//! several in flight, keeping its mode and replacing the destination atomically (a
//! temporary file beside it, then a rename).
//!
//! This file holds the command line, the connection, signals and cleanup; `cp/upload.rs`
//! and `cp/download.rs` are the two directions, `cp/chunks.rs` moves an upload's chunks,
//! `cp/progress.rs` draws the progress line.

mod chunks;
mod download;
mod progress;
mod upload;

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use exec_server_client::{ConnectOptions, Error, ExecBackend, RemoteBackend};

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
old file or the new one, never a mix. It uses only the server's file calls and never
starts a process there. Progress goes to stderr when it is a terminal.
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
            Direction::Upload { from, to } => upload::upload(files, from, to, &cleanup).await,
            Direction::Download { from, to } => download::download(files, from, to, &cleanup).await,
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
    fn temp_names_are_hidden_fresh_and_short() {
        let long = "é".repeat(200);
        let (a, b) = (temp_name(&long), temp_name(&long));
        assert_ne!(a, b);
        assert!(
            a.len() <= 255 && a.starts_with(".é") && a.ends_with(".cp-tmp"),
            "{a}"
        );
    }
}
