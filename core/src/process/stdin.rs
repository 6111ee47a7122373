//! A process's stdin: one byte queue in receipt order, written inline when the fd takes
//! the bytes at once (no task hop on the interactive path), else by a writer task.
//!
//! Pending bytes live in one contiguous queue, so what the limit counts is what memory
//! holds: a million 1-byte writes cost a million bytes, not a million allocations.

use std::collections::{HashSet, VecDeque};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use exec_server_protocol::WriteStatus;
use tokio::sync::Notify;

use crate::lock::lock;
use crate::spawn::SharedFd;
use crate::{Error, sys};

/// How many `writeId`s a process remembers.
const WRITE_IDS_REMEMBERED: usize = 4096;

/// An emptied queue whose buffer grew beyond this gives the memory back.
const SHRINK_ABOVE: usize = 1024 * 1024;

struct Queue {
    /// The stdin fd (a pipe's write end, or the pty master); `None` once closed.
    fd: Option<SharedFd>,
    pending: VecDeque<u8>,
    /// Writes are taken (neither closed, nor exited, nor broken).
    accepting: bool,
    /// Close once `pending` is written (the writer task then drops the fd).
    closing: bool,
    write_ids: HashSet<String>,
    write_id_order: VecDeque<String>,
}

/// The stdin of one process.
pub(super) struct Stdin {
    queue: Mutex<Queue>,
    wake: Notify,
    max_pending: usize,
    tty: bool,
}

impl Stdin {
    pub(super) fn new(fd: SharedFd, max_pending: usize, tty: bool) -> Arc<Stdin> {
        Arc::new(Stdin {
            queue: Mutex::new(Queue {
                fd: Some(fd),
                pending: VecDeque::new(),
                accepting: true,
                closing: false,
                write_ids: HashSet::new(),
                write_id_order: VecDeque::new(),
            }),
            wake: Notify::new(),
            max_pending,
            tty,
        })
    }

    /// Queue `chunk` (synchronously, so calls keep their order), writing what the fd takes
    /// at once when nothing is queued before it.
    pub(super) fn write(
        &self,
        chunk: &[u8],
        write_id: Option<String>,
    ) -> Result<WriteStatus, Error> {
        let mut q = lock(&self.queue);
        if let Some(id) = &write_id
            && q.write_ids.contains(id)
        {
            return Ok(WriteStatus::Accepted);
        }
        if !q.accepting {
            return Ok(WriteStatus::StdinClosed);
        }
        if q.pending.len().saturating_add(chunk.len()) > self.max_pending {
            return Err(Error::LimitReached(format!(
                "pending stdin bytes per process limit ({}) reached",
                self.max_pending
            )));
        }
        let mut rest = chunk;
        if q.pending.is_empty()
            && !rest.is_empty()
            && let Some(fd) = &q.fd
        {
            match sys::write(fd.get_ref().as_fd(), rest) {
                Ok(n) => rest = &rest[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    Self::broken(&mut q);
                    drop(q);
                    self.wake.notify_one();
                    return Ok(WriteStatus::StdinClosed);
                }
            }
        }
        if !rest.is_empty() {
            q.pending.extend(rest);
            self.wake.notify_one();
        }
        if let Some(id) = write_id {
            q.write_ids.insert(id.clone());
            q.write_id_order.push_back(id);
            if q.write_id_order.len() > WRITE_IDS_REMEMBERED
                && let Some(old) = q.write_id_order.pop_front()
            {
                q.write_ids.remove(&old);
            }
        }
        Ok(WriteStatus::Accepted)
    }

    /// Close stdin after the pending writes (a pipe: the child then reads EOF), or for a
    /// tty queue the terminal's EOF character.
    pub(super) fn close(&self) -> WriteStatus {
        let mut q = lock(&self.queue);
        if !q.accepting {
            return WriteStatus::StdinClosed;
        }
        if self.tty
            && let Some(fd) = &q.fd
        {
            let eof = sys::veof_char(fd.get_ref().as_fd());
            q.pending.push_back(eof);
        }
        q.accepting = false;
        q.closing = true;
        drop(q);
        self.wake.notify_one();
        WriteStatus::Accepted
    }

    /// The process exited: later writes answer `stdinClosed`, pending bytes are dropped
    /// and the fd is released.
    pub(super) fn shut(&self) {
        let mut q = lock(&self.queue);
        q.accepting = false;
        q.closing = true;
        q.pending = VecDeque::new();
        drop(q);
        self.wake.notify_one();
    }

    /// The reader is gone (EPIPE) or the terminal hung up: later writes answer
    /// `stdinClosed` instead of vanishing.
    fn broken(q: &mut Queue) {
        q.accepting = false;
        q.closing = true;
        q.pending = VecDeque::new();
    }
}

impl super::Process {
    /// `process/write`.
    pub(crate) fn write(
        &self,
        chunk: &[u8],
        write_id: Option<String>,
    ) -> Result<exec_server_protocol::WriteStatus, Error> {
        match &self.stdin {
            Some(stdin) => stdin.write(chunk, write_id),
            None => Ok(exec_server_protocol::WriteStatus::StdinClosed),
        }
    }

    /// `process/closeStdin`.
    pub(crate) fn close_stdin(&self) -> exec_server_protocol::WriteStatus {
        match &self.stdin {
            Some(stdin) => stdin.close(),
            None => exec_server_protocol::WriteStatus::StdinClosed,
        }
    }
}

/// Writes the queue out whenever the inline write could not take everything, and drops
/// the fd once closing with nothing pending.
pub(super) async fn run_writer(stdin: Arc<Stdin>) {
    loop {
        let notified = stdin.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let fd = {
            let mut q = lock(&stdin.queue);
            if q.pending.is_empty() {
                if q.closing {
                    q.fd = None;
                    return;
                }
                None
            } else {
                q.fd.clone()
            }
        };
        let Some(fd) = fd else {
            notified.await;
            continue;
        };
        let ready = tokio::select! {
            ready = fd.writable() => ready,
            // Shut or broken meanwhile: look at the queue again.
            () = &mut notified => continue,
        };
        let mut guard = match ready {
            Ok(guard) => guard,
            Err(_) => {
                Stdin::broken(&mut lock(&stdin.queue));
                continue;
            }
        };
        let written = guard.try_io(|inner| {
            let mut q = lock(&stdin.queue);
            let (front, _) = q.pending.as_slices();
            if front.is_empty() {
                return Ok(0);
            }
            let n = sys::write(inner.get_ref().as_fd(), front)?;
            q.pending.drain(..n);
            if q.pending.is_empty() && q.pending.capacity() > SHRINK_ABOVE {
                q.pending = VecDeque::new();
            }
            Ok(n)
        });
        match written {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => Stdin::broken(&mut lock(&stdin.queue)),
        }
    }
}
