//! Errors of the stdio transport.

/// An error that ended the stdio transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the input failed (the processes were still cleaned up).
    #[error("cannot read the input: {0}")]
    Read(#[source] std::io::Error),
    /// Setting up the output writer failed.
    #[error("cannot set up the output: {0}")]
    Writer(#[source] std::io::Error),
}
