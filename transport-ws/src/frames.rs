//! The reading side of a WebSocket connection: frames reassembled into messages, with the message size limit applied per message, fragmented or not.
//!
//! soketto's receiver checks the limit against the accumulated length of a fragmented
//! message and then discards that accumulated length from the socket instead of the rest
//! of the message, which desynchronises the stream. This reader uses soketto's frame
//! header codec only: a message over the limit is skipped frame by frame, without being
//! buffered, up to its final fragment, and reported once; the next message reads
//! normally.

use soketto::Parsing;
use soketto::base::{Codec, Header, OpCode};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The longest header of a frame (2 + 8 length bytes + 4 mask bytes).
const MAX_HEADER: usize = 14;

/// One thing read from the peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A complete text or binary message.
    Data(Vec<u8>),
    /// A message over the limit was skipped; its total payload length.
    TooLarge(usize),
    /// A ping, with its payload (to be answered with a pong).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame.
    Close,
}

/// A violation of the WebSocket protocol or an I/O error: the connection ends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// Reading failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// A header could not be decoded (reserved bits or opcode, a fragmented control frame…).
    #[error("bad frame: {0}")]
    Codec(#[from] soketto::base::Error),
    /// A client frame without a mask.
    #[error("unmasked client frame")]
    Unmasked,
    /// A continuation frame outside a fragmented message, or a new message inside one.
    #[error("unexpected {0:?} frame")]
    Unexpected(OpCode),
    /// The stream ended inside a frame or a fragmented message.
    #[error("the stream ended inside a message")]
    Truncated,
}

/// Reads frames from `reader` and yields whole messages of at most `max` bytes.
pub(crate) struct FrameReader<R> {
    reader: R,
    codec: Codec,
    max: usize,
    /// The message being reassembled.
    message: Vec<u8>,
    /// Inside a fragmented message (its first frame had no FIN).
    fragmented: bool,
    /// The total length of a message over the limit being skipped.
    skipping: Option<usize>,
}

impl<R: AsyncBufRead + Unpin> FrameReader<R> {
    pub(crate) fn new(reader: R, max: usize) -> Self {
        let mut codec = Codec::default();
        // Sizes are checked per message here, not per frame by the codec.
        codec.set_max_data_size(usize::MAX);
        FrameReader {
            reader,
            codec,
            max,
            message: Vec::new(),
            fragmented: false,
            skipping: None,
        }
    }

    /// The next message or control frame; `None` when the stream ends between messages.
    ///
    /// Not cancel-safe: keep the future alive (e.g. inside a stream) until it resolves.
    pub(crate) async fn next(&mut self) -> Result<Option<Incoming>, FrameError> {
        loop {
            let Some(header) = self.header().await? else {
                if self.fragmented {
                    return Err(FrameError::Truncated);
                }
                return Ok(None);
            };
            if !header.is_masked() {
                return Err(FrameError::Unmasked);
            }
            let len = header.payload_len();
            match header.opcode() {
                OpCode::Ping | OpCode::Pong | OpCode::Close => {
                    // The codec limits control frames to 125 bytes and refuses fragments.
                    let mut payload = vec![0u8; len];
                    self.read_exact(&mut payload).await?;
                    Codec::apply_mask(&header, &mut payload);
                    return Ok(Some(match header.opcode() {
                        OpCode::Ping => Incoming::Ping(payload),
                        OpCode::Pong => Incoming::Pong,
                        _ => Incoming::Close,
                    }));
                }
                OpCode::Text | OpCode::Binary if !self.fragmented => {}
                OpCode::Continue if self.fragmented => {}
                other => return Err(FrameError::Unexpected(other)),
            }
            let total = self
                .skipping
                .unwrap_or(self.message.len())
                .saturating_add(len);
            if total > self.max {
                if self.skipping.is_none() {
                    self.message = Vec::new();
                }
                self.skipping = Some(total);
                self.skip(len).await?;
            } else {
                let at = self.message.len();
                self.message.resize(at + len, 0);
                let read = self.read_exact_at(at).await;
                read?;
                Codec::apply_mask(&header, &mut self.message[at..]);
            }
            if !header.is_fin() {
                self.fragmented = true;
                continue;
            }
            self.fragmented = false;
            if let Some(total) = self.skipping.take() {
                return Ok(Some(Incoming::TooLarge(total)));
            }
            return Ok(Some(Incoming::Data(std::mem::take(&mut self.message))));
        }
    }

    /// The next frame header; `None` at a clean end of the stream.
    async fn header(&mut self) -> Result<Option<Header>, FrameError> {
        let mut bytes = [0u8; MAX_HEADER];
        let mut have = 0;
        loop {
            match self.codec.decode_header(&bytes[..have])? {
                Parsing::Done { value, .. } => return Ok(Some(value)),
                Parsing::NeedMore(n) => {
                    let available = self.reader.fill_buf().await?;
                    if available.is_empty() {
                        return if have == 0 {
                            Ok(None)
                        } else {
                            Err(FrameError::Truncated)
                        };
                    }
                    // Take exactly what the codec asked for, so no payload byte is eaten.
                    let n = n.min(available.len()).min(MAX_HEADER - have);
                    bytes[have..have + n].copy_from_slice(&available[..n]);
                    self.reader.consume(n);
                    have += n;
                }
            }
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        match self.reader.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_exact_at(&mut self, at: usize) -> Result<(), FrameError> {
        let mut message = std::mem::take(&mut self.message);
        let read = self.read_exact(&mut message[at..]).await;
        self.message = message;
        read
    }

    /// Reads and drops `n` payload bytes.
    async fn skip(&mut self, mut n: usize) -> Result<(), FrameError> {
        while n > 0 {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Err(FrameError::Truncated);
            }
            let take = n.min(available.len());
            self.reader.consume(take);
            n -= take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read_all(input: Vec<u8>, max: usize) -> (Vec<Incoming>, Option<String>) {
        // A tiny buffer, so headers and payloads straddle refills.
        let reader = tokio::io::BufReader::with_capacity(3, std::io::Cursor::new(input));
        let mut frames = FrameReader::new(reader, max);
        let mut out = Vec::new();
        loop {
            match frames.next().await {
                Ok(Some(item)) => out.push(item),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    #[tokio::test]
    async fn messages_fragments_and_control_frames() {
        let mut input = frame(true, 1, b"hello");
        input.extend(frame(false, 2, b"ab"));
        input.extend(frame(true, 9, b"ping!"));
        input.extend(frame(false, 0, b"cd"));
        input.extend(frame(true, 0, b"ef"));
        input.extend(frame(true, 10, b""));
        input.extend(frame(true, 8, &[0x03, 0xe8]));
        let (items, error) = read_all(input, 100).await;
        assert_eq!(error, None);
        assert_eq!(
            items,
            vec![
                Incoming::Data(b"hello".to_vec()),
                Incoming::Ping(b"ping!".to_vec()),
                Incoming::Data(b"abcdef".to_vec()),
                Incoming::Pong,
                Incoming::Close,
            ]
        );
    }

    #[tokio::test]
    async fn an_oversized_message_is_skipped_whole_and_the_next_one_reads() {
        let mut input = frame(true, 1, &[b'x'; 11]);
        input.extend(frame(true, 1, b"ok1"));
        // Fragmented: the limit is crossed in the second of three fragments, with a ping
        // between them.
        input.extend(frame(false, 1, &[b'a'; 6]));
        input.extend(frame(false, 0, &[b'b'; 6]));
        input.extend(frame(true, 9, b"p"));
        input.extend(frame(true, 0, &[b'c'; 300]));
        input.extend(frame(true, 1, b"ok2"));
        // Exactly at the limit, in fragments.
        input.extend(frame(false, 2, &[b'd'; 5]));
        input.extend(frame(true, 0, &[b'e'; 5]));
        let (items, error) = read_all(input, 10).await;
        assert_eq!(error, None);
        let mut at_limit = vec![b'd'; 5];
        at_limit.extend_from_slice(&[b'e'; 5]);
        assert_eq!(
            items,
            vec![
                Incoming::TooLarge(11),
                Incoming::Data(b"ok1".to_vec()),
                Incoming::Ping(b"p".to_vec()),
                Incoming::TooLarge(312),
                Incoming::Data(b"ok2".to_vec()),
                Incoming::Data(at_limit),
            ]
        );
    }

    #[tokio::test]
    async fn protocol_violations_end_the_stream() {
        let (_, error) = read_all(frame(true, 0, b"x"), 10).await;
        assert!(error.unwrap().contains("Continue"));
        let mut input = frame(false, 1, b"a");
        input.extend(frame(true, 1, b"b"));
        let (_, error) = read_all(input, 10).await;
        assert!(error.unwrap().contains("Text"));
        let mut unmasked = frame(true, 1, b"a");
        unmasked[1] &= 0x7f;
        let (_, error) = read_all(unmasked, 10).await;
        assert_eq!(error.unwrap(), "unmasked client frame");
        let mut cut = frame(true, 1, b"abcdef");
        cut.truncate(cut.len() - 2);
        let (_, error) = read_all(cut, 10).await;
        assert_eq!(error.unwrap(), "the stream ended inside a message");
        let (items, error) = read_all(frame(false, 1, b"a"), 10).await;
        assert_eq!(
            (items, error.as_deref()),
            (vec![], Some("the stream ended inside a message"))
        );
    }

    proptest::proptest! {
        /// Random bytes never panic the reader, and no message it yields exceeds the limit.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (items, _) = rt.block_on(read_all(bytes, 100));
            for item in items {
                if let Incoming::Data(d) = item {
                    proptest::prop_assert!(d.len() <= 100);
                }
            }
        }

        /// Messages of random sizes cut into random fragments come out whole, in order;
        /// those over the limit as `TooLarge` with their size.
        #[test]
        fn fragmented_messages_round_trip(
            messages in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1usize..5, proptest::prelude::any::<bool>()),
                1..12,
            )
        ) {
            let max = 200;
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for (i, (payload, parts, ping)) in messages.iter().enumerate() {
                let step = payload.len().div_ceil(*parts).max(1);
                let mut pieces: Vec<&[u8]> = payload.chunks(step).collect();
                if pieces.is_empty() {
                    pieces.push(&[]);
                }
                let last = pieces.len() - 1;
                for (j, piece) in pieces.iter().enumerate() {
                    let opcode = if j == 0 { 1 + (i as u8 % 2) } else { 0 };
                    input.extend(frame(j == last, opcode, piece));
                    if *ping && j == 0 {
                        input.extend(frame(true, 9, b"p"));
                    }
                }
                let whole = if payload.len() > max {
                    Incoming::TooLarge(payload.len())
                } else {
                    Incoming::Data(payload.clone())
                };
                // A ping inside a fragmented message comes out before it, a ping after a
                // single-frame message after it.
                match (*ping, last) {
                    (false, _) => expected.push(whole),
                    (true, 0) => expected.extend([whole, Incoming::Ping(b"p".to_vec())]),
                    (true, _) => expected.extend([Incoming::Ping(b"p".to_vec()), whole]),
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (items, error) = rt.block_on(read_all(input, max));
            proptest::prop_assert_eq!(error, None);
            proptest::prop_assert_eq!(items, expected);
        }
    }
}
