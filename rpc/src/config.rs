//! Configuration of the dispatch: session limits, the detached-session TTL, message size and queue depth.

use std::time::Duration;

use exec_server_core::SessionConfig;
use exec_server_protocol::MAX_WAIT_MS;

/// The `serverName` reported by `initialize`.
pub const SERVER_NAME: &str = "exec-server";

/// Default depth of a connection's outbound queue, in messages.
///
/// An output notification carries at most one 64 KiB chunk (about 88 KiB once
/// base64-encoded), so 32 queued messages pin under 3 MiB per connection.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 32;

/// Settings of the dispatch shared by every connection of one server.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Limits of every session this server creates.
    pub session: SessionConfig,
    /// How long a detached session lives before its processes are terminated.
    pub session_ttl: Duration,
    /// Largest message accepted or produced, in bytes (SPEC section 8).
    pub max_message_bytes: usize,
    /// Depth of each connection's outbound queue, in messages.
    pub outbound_queue: usize,
    /// Ceiling of `waitMs` of `process/read` (at most the protocol's 300 s).
    pub max_wait: Duration,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            session: SessionConfig::default(),
            session_ttl: Duration::from_secs(30),
            max_message_bytes: 16 * 1024 * 1024,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            max_wait: Duration::from_millis(MAX_WAIT_MS),
        }
    }
}
