//! Blocking I/O on the local stdin, stdout and stderr for `exec-server run`, each on a
//! thread of its own, bridged to the async side by bounded channels (so a slow local
//! stdout is backpressure on the remote process, never an unbounded buffer).

use std::io;
use std::os::fd::RawFd;
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Chunks queued for one writer thread.
const WRITER_QUEUE: usize = 16;

/// Writes chunks to a file descriptor from a dedicated thread.
pub struct FdWriter {
    tx: Option<mpsc::Sender<Bytes>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl FdWriter {
    /// Starts the writer thread of `fd`.
    pub fn spawn(fd: RawFd, name: &str) -> io::Result<FdWriter> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITER_QUEUE);
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(
            move || -> io::Result<()> {
                while let Some(chunk) = rx.blocking_recv() {
                    write_all(fd, &chunk)?;
                }
                Ok(())
            },
        )?;
        Ok(FdWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `chunk`, waiting while the thread is behind. Fails once the thread stopped
    /// (the descriptor failed, e.g. a closed pipe); [`FdWriter::finish`] says why.
    pub async fn write(&self, chunk: Bytes) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx.send(chunk).await.map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Writes what is queued and stops the thread; its error, if it failed.
    pub fn finish(mut self) -> io::Result<()> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the writer thread panicked")),
            None => Ok(()),
        }
    }
}

/// Writes all of `buf` to `fd`, retrying on EINTR and waiting on EAGAIN (a descriptor
/// someone set non-blocking).
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: writes from a live slice of `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf = &buf[n.unsigned_abs()..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => wait_ready(fd, libc::POLLOUT)?,
            _ => return Err(e),
        }
    }
    Ok(())
}

fn wait_ready(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own.
    let n = unsafe { libc::poll(&mut pfd, 1, -1) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Reads `fd` on a thread of its own until end-of-file or an error, sending each chunk;
/// the channel closes at the end. The thread is left blocked in `read` if the program
/// exits first (as it should: a terminal never reaches end-of-file by itself).
pub fn spawn_reader(fd: RawFd, name: &str) -> io::Result<mpsc::Receiver<Bytes>> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: reads into a live buffer of `buf.len()` bytes.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n == 0 {
                    return;
                }
                if n < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => {
                            if wait_ready(fd, libc::POLLIN).is_err() {
                                return;
                            }
                            continue;
                        }
                        _ => return,
                    }
                }
                let chunk = Bytes::copy_from_slice(&buf[..n.unsigned_abs()]);
                if tx.blocking_send(chunk).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}
