//! The stdio transport: newline-delimited JSON-RPC on stdin and stdout, bound to the shared dispatch.

mod error;
mod lines;
mod serve;
mod stdin;

pub use error::Error;
pub use serve::{serve, serve_stdio};
