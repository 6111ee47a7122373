//! `fs/read`: a range of a file read straight into the one shared buffer the response is
//! encoded from; a file of unknown size (a device, FIFO or procfs file) read until it ends.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use exec_server_protocol::{Base64Bytes, FsReadResult};

use super::{errno_of, fail};
use crate::Error;

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

pub(super) fn read(path: &Path, offset: u64, max: u64) -> Result<FsReadResult, Error> {
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
