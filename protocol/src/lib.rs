//! Wire types of the exec-server protocol, version 1: JSON-RPC 2.0 params, results and
//! notifications, their names, the error codes, and the JSON Schema bundle derived from them.
//!
//! This crate depends on serde, serde_json, schemars and base64 only, so a program
//! that needs just the wire types pulls in no runtime, transport or terminal code.

mod binary;
mod bundle;
mod bytes;
mod examples;
mod fs;
mod names;
mod table;
mod types;

pub use binary::{
    FrameError, OUTPUT_FRAME_HEADER_BYTES, OUTPUT_FRAME_KIND, OutputFrame, decode_output_frame,
    encode_output_frame, stream_byte, stream_from_byte, write_output_header,
};
pub use bundle::{SCHEMA_DIALECT, schema_bundle, schema_bundle_text};
pub use bytes::Base64Bytes;
pub use examples::{ExampleKind, ExampleMessage, examples};
pub use fs::*;
pub use names::{ErrorCode, method, notification};
pub use table::{
    Direction, Example, FsChmod, FsList, FsMkdir, FsRead, FsRemove, FsRename, FsStat, FsWrite,
    Initialize, Initialized, Method, Notification, ProcessAck, ProcessCloseStdin, ProcessClosed,
    ProcessExited, ProcessList, ProcessOutput, ProcessRead, ProcessRelease, ProcessResize,
    ProcessSignal, ProcessStart, ProcessTerminate, ProcessWrite, SessionClose, TableVisitor,
    WireType, method_names, visit,
};
pub use types::*;
