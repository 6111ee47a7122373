//! A process's stdin: one byte queue in receipt order, written inline when the fd takes
//! the bytes at once (no task hop on the interactive path), else by a writer task.
//!
//! Pending bytes live in one contiguous queue, so what the limit counts is what memory
//! holds: a million 1-byte writes cost a million bytes, not a million allocations.
//!
//! Every byte accepted has an offset in the stream; a `watch` publishes how many have been
//! written to the fd and whether more ever will be. A `waitWritten` write waits on it until
//! the offset of its last byte is written (`accepted`) or can no longer be
//! (`stdinClosed`); it is queued like any other write, so order is kept.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use exec_server_protocol::WriteStatus;
use tokio::sync::{Notify, watch};

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
    /// The stream offset after the last byte accepted.
    accepted_end: u64,
    /// Bytes written to the fd so far (`accepted_end - pending.len()` while open).
    written: u64,
    /// Remembered `writeId`s, with the stream offset after their last byte.
    write_ids: HashMap<String, u64>,
    write_id_order: VecDeque<String>,
}

/// How far stdin has got: bytes written to the fd, and whether any more ever will be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    written: u64,
    ended: bool,
}

/// The stdin of one process.
pub(super) struct Stdin {
    queue: Mutex<Queue>,
    wake: Notify,
    progress: watch::Sender<Progress>,
    max_pending: usize,
    tty: bool,
}

/// The answer to a write: now, or once its bytes are written (`waitWritten`).
pub(crate) enum WriteAnswer {
    /// The status is known now.
    Now(WriteStatus),
    /// `accepted` once the stream has been written up to `end`; `stdinClosed` if it ends
    /// before.
    WhenWritten {
        progress: watch::Receiver<Progress>,
        end: u64,
    },
}

impl WriteAnswer {
    /// The status, once it is known.
    pub(crate) async fn status(self) -> WriteStatus {
        match self {
            WriteAnswer::Now(status) => status,
            WriteAnswer::WhenWritten { mut progress, end } => {
                let reached = progress.wait_for(|p| p.written >= end || p.ended).await;
                match reached {
                    Ok(p) if p.written >= end => WriteStatus::Accepted,
                    _ => WriteStatus::StdinClosed,
                }
            }
        }
    }

    /// The status, once it is known or once `stop` resolves: then what is true at that
    /// moment (`accepted` if the whole chunk is written, else `stdinClosed`).
    pub(crate) async fn status_unless(self, stop: impl Future<Output = ()>) -> WriteStatus {
        match self {
            WriteAnswer::Now(status) => status,
            WriteAnswer::WhenWritten { progress, end } => {
                let snapshot = progress.clone();
                tokio::select! {
                    status = (WriteAnswer::WhenWritten { progress, end }).status() => status,
                    () = stop => {
                        if snapshot.borrow().written >= end {
                            WriteStatus::Accepted
                        } else {
                            WriteStatus::StdinClosed
                        }
                    }
                }
            }
        }
    }

    /// The status if it is known now.
    pub(crate) fn now(&self) -> Option<WriteStatus> {
        match self {
            WriteAnswer::Now(status) => Some(*status),
            WriteAnswer::WhenWritten { .. } => None,
        }
    }
}

impl Stdin {
    pub(super) fn new(fd: SharedFd, max_pending: usize, tty: bool) -> Arc<Stdin> {
        Arc::new(Stdin {
            queue: Mutex::new(Queue {
                fd: Some(fd),
                pending: VecDeque::new(),
                accepting: true,
                closing: false,
                accepted_end: 0,
                written: 0,
                write_ids: HashMap::new(),
                write_id_order: VecDeque::new(),
            }),
            wake: Notify::new(),
            progress: watch::Sender::new(Progress::default()),
            max_pending,
            tty,
        })
    }

    /// Publishes the queue's progress (call it with the queue locked, after a change).
    fn publish(&self, q: &Queue) {
        let now = Progress {
            written: q.written,
            ended: q.fd.is_none(),
        };
        self.progress.send_if_modified(|p| {
            let changed = *p != now;
            *p = now;
            changed
        });
    }

    /// The answer for bytes up to `end`: accepted now if written already, else (with
    /// `wait`) when they are, else accepted now (queued).
    fn answer(&self, q: &Queue, end: u64, wait: bool) -> WriteAnswer {
        if !wait || q.written >= end {
            return WriteAnswer::Now(WriteStatus::Accepted);
        }
        WriteAnswer::WhenWritten {
            progress: self.progress.subscribe(),
            end,
        }
    }

    /// Queue `chunk` (synchronously, so calls keep their order), writing what the fd takes
    /// at once when nothing is queued before it. With `wait` the answer comes once the
    /// whole chunk is written (or can no longer be).
    pub(super) fn write(
        &self,
        chunk: &[u8],
        write_id: Option<String>,
        wait: bool,
    ) -> Result<WriteAnswer, Error> {
        // An empty chunk has nothing to wait for.
        let wait = wait && !chunk.is_empty();
        let mut q = lock(&self.queue);
        if let Some(id) = &write_id
            && let Some(end) = q.write_ids.get(id).copied()
        {
            return Ok(self.answer(&q, end, wait));
        }
        if !q.accepting {
            return Ok(WriteAnswer::Now(WriteStatus::StdinClosed));
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
                Ok(n) => {
                    rest = &rest[n..];
                    q.written += n as u64;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    Self::broken(&mut q);
                    self.publish(&q);
                    drop(q);
                    self.wake.notify_one();
                    return Ok(WriteAnswer::Now(WriteStatus::StdinClosed));
                }
            }
        }
        q.accepted_end += chunk.len() as u64;
        let end = q.accepted_end;
        if !rest.is_empty() {
            q.pending.extend(rest);
            self.wake.notify_one();
        }
        if let Some(id) = write_id {
            q.write_ids.insert(id.clone(), end);
            q.write_id_order.push_back(id);
            if q.write_id_order.len() > WRITE_IDS_REMEMBERED
                && let Some(old) = q.write_id_order.pop_front()
            {
                q.write_ids.remove(&old);
            }
        }
        self.publish(&q);
        Ok(self.answer(&q, end, wait))
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
            q.accepted_end += 1;
        }
        q.accepting = false;
        q.closing = true;
        self.publish(&q);
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
        self.publish(&q);
        drop(q);
        self.wake.notify_one();
    }

    /// The reader is gone (EPIPE) or the terminal hung up: later writes answer
    /// `stdinClosed` instead of vanishing. Nothing more will be written: pending bytes are
    /// dropped and the fd goes (waiting writes answer `stdinClosed`).
    fn broken(q: &mut Queue) {
        q.accepting = false;
        q.closing = true;
        q.pending = VecDeque::new();
        q.fd = None;
    }
}

impl super::Process {
    /// `process/write`: queued now, answered now or (`wait`) once written.
    pub(crate) fn write(
        &self,
        chunk: &[u8],
        write_id: Option<String>,
        wait: bool,
    ) -> Result<WriteAnswer, Error> {
        match &self.stdin {
            Some(stdin) => stdin.write(chunk, write_id, wait),
            None => Ok(WriteAnswer::Now(WriteStatus::StdinClosed)),
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
                    stdin.publish(&q);
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
                let mut q = lock(&stdin.queue);
                Stdin::broken(&mut q);
                stdin.publish(&q);
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
            q.written += n as u64;
            if q.pending.is_empty() && q.pending.capacity() > SHRINK_ABOVE {
                q.pending = VecDeque::new();
            }
            stdin.publish(&q);
            Ok(n)
        });
        match written {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                let mut q = lock(&stdin.queue);
                Stdin::broken(&mut q);
                stdin.publish(&q);
            }
        }
    }
}
