//! Errors of the WebSocket transport.

use std::net::SocketAddr;

/// An error that stops the WebSocket server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--insecure-no-auth` on an address other than loopback.
    #[error(
        "refusing to serve without authentication on {addr}, which is not a loopback address: \
         bind 127.0.0.1 (or ::1) to use --insecure-no-auth, or drop --insecure-no-auth"
    )]
    InsecureBind {
        /// The requested bind address.
        addr: SocketAddr,
    },
    /// The token is empty.
    #[error("the authentication token is empty")]
    EmptyToken,
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested bind address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the bound address failed.
    #[error("cannot read the listening address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// An inherited listening socket (socket activation) cannot be used.
    #[error("cannot use the inherited listening socket: {0}")]
    Inherited(#[source] std::io::Error),
    /// The TLS certificate, key or client CAs cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}
