//! Chunks of an upload: the local file read on a thread of its own, and one chunk written
//! to the server in pieces that fit its message limit, sent again after a resumed
//! connection.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use exec_server_client::{Base64Bytes, Error, ErrorCode, ExecFiles, WriteOptions};

use super::{CHUNK, DEPTH, MIN_CHUNK, RETRIES};

/// How one chunk is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Put {
    /// The first chunk written in place: creates the file with this mode, or empties an
    /// existing one.
    Create(u32),
    /// At the chunk's offset, into a file that exists.
    At,
    /// At the end (a device or FIFO has no offsets).
    Append,
}

/// Writes `data` (at `offset`, as `how` says) in pieces of at most `limit` bytes; halves
/// `limit` while the server refuses a message as too large, and sends a piece again after
/// the connection was resumed (a write at an offset can be repeated).
pub(super) async fn put(
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
pub(super) fn read_chunks(
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
