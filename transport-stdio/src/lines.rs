//! A line reader with a maximum line length: a longer line is skipped whole and reported, and the next line reads normally.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line within the limit, without its `\n`.
    Message(Vec<u8>),
    /// A line longer than the limit; its bytes were discarded.
    TooLong,
}

/// Reads `\n`-terminated lines of at most `max` bytes.
pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    line: Vec<u8>,
    discarding: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(input: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::with_capacity(64 * 1024, input),
            max,
            line: Vec::new(),
            discarding: false,
        }
    }

    /// The next line, or `None` at end of input. A last line without `\n` still counts.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                if self.discarding {
                    self.discarding = false;
                    return Ok(Some(Line::TooLong));
                }
                if self.line.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Line::Message(std::mem::take(&mut self.line))));
            }
            let (data, used, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if !self.discarding {
                if self.line.len() + data.len() > self.max {
                    self.discarding = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(data);
                }
            }
            self.inner.consume(used);
            if complete {
                if std::mem::take(&mut self.discarding) {
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(Line::Message(std::mem::take(&mut self.line))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_skipped_and_the_next_line_works() {
        let input: &[u8] = b"short\n0123456789abcdef\nok\n\nlast";
        let mut reader = LineReader::new(input, 10);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            lines.push(line);
        }
        assert_eq!(
            lines,
            vec![
                Line::Message(b"short".to_vec()),
                Line::TooLong,
                Line::Message(b"ok".to_vec()),
                Line::Message(Vec::new()),
                Line::Message(b"last".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn a_line_exactly_at_the_limit_is_kept_across_buffer_refills() {
        let mut input = vec![b'x'; 200_000];
        input.push(b'\n');
        input.extend_from_slice(&[b'y'; 200_001]);
        input.push(b'\n');
        let mut reader = LineReader::new(input.as_slice(), 200_000);
        assert_eq!(
            reader.next_line().await.unwrap(),
            Some(Line::Message(vec![b'x'; 200_000]))
        );
        assert_eq!(reader.next_line().await.unwrap(), Some(Line::TooLong));
        assert_eq!(reader.next_line().await.unwrap(), None);
    }

    /// Feeds its input in reads of the given sizes.
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        next: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let this = &mut *self;
            let size = this
                .sizes
                .get(this.next % this.sizes.len().max(1))
                .copied()
                .unwrap_or(1)
                .max(1);
            this.next += 1;
            let n = size.min(this.data.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.data[this.at..this.at + n]);
            this.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    proptest::proptest! {
        /// Random input read in random pieces gives exactly the lines of a plain split,
        /// with the over-long ones reported and dropped.
        #[test]
        fn lines_match_a_plain_split(
            data in proptest::collection::vec(proptest::prop_oneof![proptest::prelude::Just(b'\n'), proptest::prelude::any::<u8>()], 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..10),
            max in 1usize..64,
        ) {
            let mut expected = Vec::new();
            let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            if data.last() == Some(&b'\n') || data.is_empty() {
                pieces.pop();
            }
            for piece in pieces {
                expected.push(if piece.len() > max { Line::TooLong } else { Line::Message(piece.to_vec()) });
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(async {
                let mut reader = LineReader::new(Chunked { data: data.clone(), at: 0, sizes, next: 0 }, max);
                let mut got = Vec::new();
                while let Some(line) = reader.next_line().await.unwrap() {
                    got.push(line);
                }
                got
            });
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
