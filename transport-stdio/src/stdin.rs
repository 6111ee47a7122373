//! Standard input read on a thread of its own: a blocking read that nothing waits for, so a pending read can never hold up the server's exit.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// Bytes per read of the input.
const BLOCK: usize = 64 * 1024;

/// An [`AsyncRead`] fed by a detached thread that reads `input` with blocking reads.
///
/// The thread is not part of the async runtime, so shutting the runtime down never waits
/// for it; it ends at end of input, on a read error, once this reader is dropped and its
/// next read returns, or with the process.
pub(crate) struct ThreadReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    block: Vec<u8>,
    at: usize,
}

impl ThreadReader {
    pub(crate) fn spawn<R: Read + Send + 'static>(mut input: R) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(2);
        std::thread::Builder::new()
            .name("stdio-reader".into())
            .spawn(move || {
                loop {
                    let mut block = vec![0u8; BLOCK];
                    let item = match input.read(&mut block) {
                        Ok(0) => return,
                        Ok(n) => {
                            block.truncate(n);
                            Ok(block)
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    };
                    let failed = item.is_err();
                    if tx.blocking_send(item).is_err() || failed {
                        return;
                    }
                }
            })?;
        Ok(ThreadReader {
            rx,
            block: Vec::new(),
            at: 0,
        })
    }
}

impl AsyncRead for ThreadReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at == this.block.len() {
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                // End of input (or the thread is gone).
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(block))) => {
                    this.block = block;
                    this.at = 0;
                }
            }
        }
        let n = buf.remaining().min(this.block.len() - this.at);
        buf.put_slice(&this.block[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_everything_then_eof() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = ThreadReader::spawn(std::io::Cursor::new(data.clone())).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
    }
}
