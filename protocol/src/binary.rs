//! Binary output frames (SPEC section 11): one `process/output` event as raw bytes in one
//! WebSocket binary frame, for connections that negotiated `capabilities.binaryOutput`.
//!
//! Layout: kind (1 byte, `1`), stream (1 byte: `0` stdout, `1` stderr, `2` pty), seq (8
//! bytes, big-endian), N (2 bytes, big-endian), processId (N bytes, UTF-8), then the chunk.

use crate::Stream;

/// The kind byte of a process output frame.
pub const OUTPUT_FRAME_KIND: u8 = 1;

/// Bytes of an output frame before its processId.
pub const OUTPUT_FRAME_HEADER_BYTES: usize = 12;

/// One decoded output frame, borrowing from the frame's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputFrame<'a> {
    /// The process that wrote the chunk.
    pub process_id: &'a str,
    /// The event's sequence number.
    pub seq: u64,
    /// The stream the chunk came from.
    pub stream: Stream,
    /// The bytes, exactly as read.
    pub chunk: &'a [u8],
}

/// Why a binary frame is not a valid output frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than its header says.
    Truncated,
    /// A kind other than `1` (reserved).
    UnknownKind(u8),
    /// A stream byte other than 0, 1 or 2.
    UnknownStream(u8),
    /// The processId is not UTF-8.
    ProcessIdNotUtf8,
    /// The processId is longer than 65535 bytes (encoding only).
    ProcessIdTooLong,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("binary frame shorter than its header"),
            FrameError::UnknownKind(k) => write!(f, "binary frame of unknown kind {k}"),
            FrameError::UnknownStream(s) => write!(f, "binary frame with unknown stream {s}"),
            FrameError::ProcessIdNotUtf8 => f.write_str("binary frame processId is not UTF-8"),
            FrameError::ProcessIdTooLong => f.write_str("processId longer than 65535 bytes"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The stream's byte in a binary frame.
pub const fn stream_byte(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Pty => 2,
    }
}

/// The stream a binary frame's byte names.
pub const fn stream_from_byte(byte: u8) -> Option<Stream> {
    match byte {
        0 => Some(Stream::Stdout),
        1 => Some(Stream::Stderr),
        2 => Some(Stream::Pty),
        _ => None,
    }
}

/// Appends the header of an output frame (everything before the chunk) to `out`.
/// The chunk's bytes follow it, in `out` or in a later write of the same frame.
pub fn write_output_header(
    out: &mut Vec<u8>,
    process_id: &str,
    seq: u64,
    stream: Stream,
) -> Result<(), FrameError> {
    let id_len = u16::try_from(process_id.len()).map_err(|_| FrameError::ProcessIdTooLong)?;
    out.reserve(OUTPUT_FRAME_HEADER_BYTES + process_id.len());
    out.push(OUTPUT_FRAME_KIND);
    out.push(stream_byte(stream));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(process_id.as_bytes());
    Ok(())
}

/// A whole output frame.
pub fn encode_output_frame(
    process_id: &str,
    seq: u64,
    stream: Stream,
    chunk: &[u8],
) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(OUTPUT_FRAME_HEADER_BYTES + process_id.len() + chunk.len());
    write_output_header(&mut out, process_id, seq, stream)?;
    out.extend_from_slice(chunk);
    Ok(out)
}

/// Decodes an output frame.
pub fn decode_output_frame(frame: &[u8]) -> Result<OutputFrame<'_>, FrameError> {
    let header = frame
        .get(..OUTPUT_FRAME_HEADER_BYTES)
        .ok_or(FrameError::Truncated)?;
    if header[0] != OUTPUT_FRAME_KIND {
        return Err(FrameError::UnknownKind(header[0]));
    }
    let stream = stream_from_byte(header[1]).ok_or(FrameError::UnknownStream(header[1]))?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[2..10]);
    let id_len = usize::from(u16::from_be_bytes([header[10], header[11]]));
    let id_end = OUTPUT_FRAME_HEADER_BYTES + id_len;
    let id = frame
        .get(OUTPUT_FRAME_HEADER_BYTES..id_end)
        .ok_or(FrameError::Truncated)?;
    let process_id = std::str::from_utf8(id).map_err(|_| FrameError::ProcessIdNotUtf8)?;
    Ok(OutputFrame {
        process_id,
        seq: u64::from_be_bytes(seq),
        stream,
        chunk: &frame[id_end..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_match_the_spec_layout() {
        let frame = encode_output_frame("p1", 0x0102_0304_0506_0708, Stream::Stderr, b"hi\n")
            .expect("encodes");
        assert_eq!(
            frame,
            [
                1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 2, b'p', b'1', b'h', b'i', b'\n'
            ]
        );
        assert_eq!(
            decode_output_frame(&frame),
            Ok(OutputFrame {
                process_id: "p1",
                seq: 0x0102_0304_0506_0708,
                stream: Stream::Stderr,
                chunk: b"hi\n",
            })
        );
        for stream in [Stream::Stdout, Stream::Stderr, Stream::Pty] {
            let frame = encode_output_frame("é", 1, stream, &[]).expect("encodes");
            let decoded = decode_output_frame(&frame).expect("decodes");
            assert_eq!((decoded.stream, decoded.chunk), (stream, &[][..]));
        }
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(decode_output_frame(&[1, 0]), Err(FrameError::Truncated));
        let mut frame = encode_output_frame("abc", 1, Stream::Stdout, b"x").expect("encodes");
        assert_eq!(
            decode_output_frame(&frame[..13]),
            Err(FrameError::Truncated)
        );
        frame[0] = 2;
        assert_eq!(decode_output_frame(&frame), Err(FrameError::UnknownKind(2)));
        frame[0] = 1;
        frame[1] = 3;
        assert_eq!(
            decode_output_frame(&frame),
            Err(FrameError::UnknownStream(3))
        );
        frame[1] = 0;
        frame[12] = 0xff;
        assert_eq!(
            decode_output_frame(&frame),
            Err(FrameError::ProcessIdNotUtf8)
        );
        let long = "x".repeat(70_000);
        assert_eq!(
            encode_output_frame(&long, 1, Stream::Stdout, b""),
            Err(FrameError::ProcessIdTooLong)
        );
    }
}
