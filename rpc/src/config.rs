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

/// Default byte budget of a connection's outbound queue: about 45 output notifications
/// of 64 KiB chunks, or two full `process/read` responses of the default retention.
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Default number of requests in flight per connection (SPEC section 8).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

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
    /// Bytes each connection's outbound queue may hold (a larger message still passes,
    /// alone).
    pub outbound_queue_bytes: usize,
    /// Requests read but not yet answered per connection; past it the connection is not
    /// read until a response is queued.
    pub max_in_flight: usize,
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
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_wait: Duration::from_millis(MAX_WAIT_MS),
        }
    }
}
