//! Upload: the destination resolved on the server (a directory, symlinks), a temporary
//! file created exclusively beside it, chunks written at their offsets with several in
//! flight, the mode set with `fs/chmod`, and a rename over the destination. Only `fs/*`
//! calls: no process is ever started on the server.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, anyhow, bail};
use exec_server_client::{Base64Bytes, Error, ExecFiles, FileKind, FsStatResult, WriteOptions};
use futures::stream::{FuturesUnordered, StreamExt};

use super::chunks::{Put, put, read_chunks};
use super::progress::Progress;
use super::{CHUNK, Cleanup, DEPTH, MAX_SYMLINK_HOPS, REMOTE, explain, is_errno, leftovers};

/// How many fresh names are tried for a temporary file before giving up.
const TEMP_ATTEMPTS: usize = 8;

/// The mode of a temporary file while it is written: the server's user alone may read or
/// write it (later chunks open it again); it gets the source's mode once it is complete.
const TEMP_MODE: u32 = 0o600;

/// The parent directory and file name of an absolute remote path.
pub(super) fn split_remote(path: &str) -> (&str, &str) {
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

/// Creates a new, empty temporary file in `dir` (mode [`TEMP_MODE`]) under a name from
/// `fresh`, exclusively: a name that exists (another copy's temporary file, anything) is
/// never written to; another name is tried. Returns the path, noted in `cleanup`; or the
/// error of the last attempt (EEXIST when every name was taken).
async fn create_temp(
    files: &dyn ExecFiles,
    dir: &str,
    cleanup: &Cleanup,
    mut fresh: impl FnMut() -> String,
) -> Result<String, Error> {
    let mut attempt = 0;
    loop {
        let candidate = join_remote(dir, &fresh());
        // Noted before the call: a call cut off by a lost connection may have created it.
        leftovers(cleanup).remote = Some(candidate.clone());
        let options = WriteOptions::default().exclusive(true).mode(TEMP_MODE);
        match files
            .write(&candidate, Base64Bytes::default(), options)
            .await
        {
            Ok(_) => return Ok(candidate),
            Err(e) => {
                if !e.is_disconnected() {
                    // The server answered: it created nothing.
                    leftovers(cleanup).remote = None;
                }
                attempt += 1;
                if !is_errno(&e, "EEXIST") || attempt == TEMP_ATTEMPTS {
                    return Err(e);
                }
            }
        }
    }
}

pub(super) async fn upload(
    files: &dyn ExecFiles,
    from: &Path,
    to: &str,
    cleanup: &Cleanup,
) -> anyhow::Result<()> {
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
    // end; or the target itself when it is a device or FIFO (written to, not replaced), or
    // when the directory takes no new files but the target may be writable (not atomic).
    let device = match existing.as_ref().map(|s| s.kind) {
        Some(FileKind::Dir) => bail!("cannot copy to {shown_to}: it is a directory"),
        Some(FileKind::Other) => true,
        _ => false,
    };
    let temp = if device {
        None
    } else {
        match create_temp(files, dir, cleanup, || super::temp_name(target_name)).await {
            Ok(temp) => Some(temp),
            Err(e) if is_errno(&e, "EACCES") || is_errno(&e, "EPERM") => None,
            Err(e) if is_errno(&e, "EEXIST") => {
                bail!("cannot find a free temporary name in {REMOTE}{dir}")
            }
            Err(e) => {
                return Err(
                    explain(&e).context(format!("cannot create a temporary file in {REMOTE}{dir}"))
                );
            }
        }
    };
    let write_to = temp.clone().unwrap_or_else(|| target.clone());

    let mut progress = Progress::new(total);
    let limit = AtomicU64::new(CHUNK as u64);
    let mut chunks = read_chunks(file);
    let read_error = |e: std::io::Error| anyhow!(e).context(format!("cannot read {shown_from}"));
    let write_error = |e: Error| explain(&e).context(format!("cannot write {shown_to}"));

    let mut reading = true;
    if temp.is_none() {
        // In place, the first chunk creates or empties the file, alone.
        let (_, first) = chunks
            .recv()
            .await
            .unwrap_or_else(|| Ok((0, Base64Bytes::default())))
            .map_err(read_error)?;
        let first_len = first.len() as u64;
        put(files, &write_to, 0, first, Put::Create(TEMP_MODE), &limit)
            .await
            .map_err(write_error)?;
        progress.advance(first_len);
        reading = first_len > 0;
    }

    // The rest at their offsets, several at once (appended in order to a device).
    let how = if device { Put::Append } else { Put::At };
    let in_flight = if device { 1 } else { DEPTH };
    let mut writing = FuturesUnordered::new();
    while reading || !writing.is_empty() {
        // Encoding a chunk takes a while and the calls here are often ready at once:
        // let a signal be seen between chunks (tokio's budget counts calls, not time).
        tokio::task::yield_now().await;
        tokio::select! {
            chunk = chunks.recv(), if reading && writing.len() < in_flight => match chunk {
                None => reading = false,
                // The empty file the temporary already is.
                Some(Ok((_, data))) if data.is_empty() => {}
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
            if mode != TEMP_MODE {
                files.chmod(temp, mode).await.map_err(|e| {
                    explain(&e).context(format!("cannot set the mode of {REMOTE}{temp}"))
                })?;
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
                files.chmod(&target, mode).await.map_err(|e| {
                    explain(&e).context(format!("cannot set the mode of {shown_to}"))
                })?;
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use exec_server_client::{ExecBackend, LocalBackend};

    use super::*;

    #[test]
    fn remote_paths_split_and_join() {
        assert_eq!(split_remote("/a/b/c"), ("/a/b", "c"));
        assert_eq!(split_remote("/c"), ("/", "c"));
        assert_eq!(join_remote("/", "c"), "/c");
        assert_eq!(join_remote("/a/", "c"), "/a/c");
        assert_eq!(join_remote("/a", "c"), "/a/c");
    }

    /// A fresh directory for one test, removed on drop.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn a_taken_temporary_name_is_never_written_and_another_is_tried() {
        let dir = Scratch(
            std::env::temp_dir().join(format!("exec-server-cp-unit-{}", std::process::id())),
        );
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir(&dir.0).unwrap();
        let shown = dir.0.to_str().unwrap().to_owned();
        // Another copy's temporary file, and a dangling symlink.
        std::fs::write(dir.0.join("taken"), b"theirs").unwrap();
        std::fs::set_permissions(dir.0.join("taken"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        symlink("gone", dir.0.join("link")).unwrap();
        let backend = LocalBackend::new();
        let cleanup = Cleanup::default();

        let mut names = ["taken", "link", "free"].into_iter();
        let temp = create_temp(backend.files(), &shown, &cleanup, || {
            names.next().unwrap().to_owned()
        })
        .await
        .unwrap();
        assert_eq!(temp, format!("{shown}/free"));
        assert_eq!(leftovers(&cleanup).remote.as_deref(), Some(temp.as_str()));
        let made = std::fs::metadata(&temp).unwrap();
        assert_eq!(
            (made.len(), made.permissions().mode() & 0o7777),
            (0, TEMP_MODE)
        );
        // What was there is untouched; nothing was created through the symlink.
        assert_eq!(std::fs::read(dir.0.join("taken")).unwrap(), b"theirs");
        assert!(!dir.0.join("gone").exists());

        // Every name taken: EEXIST after a bounded number of tries, nothing to clean up.
        let mut tries = 0;
        let e = create_temp(backend.files(), &shown, &cleanup, || {
            tries += 1;
            "taken".to_owned()
        })
        .await
        .unwrap_err();
        assert!(is_errno(&e, "EEXIST"), "{e}");
        assert_eq!(tries, TEMP_ATTEMPTS);
        assert_eq!(leftovers(&cleanup).remote, None);
        assert_eq!(std::fs::read(dir.0.join("taken")).unwrap(), b"theirs");

        // Another failure is returned at once.
        let mut tries = 0;
        let e = create_temp(
            backend.files(),
            &format!("{shown}/missing"),
            &cleanup,
            || {
                tries += 1;
                "x".to_owned()
            },
        )
        .await
        .unwrap_err();
        assert!(is_errno(&e, "ENOENT"), "{e}");
        assert_eq!(tries, 1);
    }
}
