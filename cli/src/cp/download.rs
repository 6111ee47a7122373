//! Download: `fs/read`s at their offsets, several in flight and taken in order, into a new
//! local temporary file beside the destination that gets the source's mode and is renamed
//! over it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use exec_server_client::{Error, ErrorCode, ExecFiles, FileKind};
use futures::stream::{FuturesOrdered, StreamExt};

use super::progress::Progress;
use super::upload::split_remote;
use super::{
    CHUNK, Cleanup, DEPTH, MAX_SYMLINK_HOPS, MIN_CHUNK, REMOTE, RETRIES, explain, leftovers,
    temp_name,
};

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

pub(super) async fn download(
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
