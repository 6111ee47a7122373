//! Per-session limits (SPEC section 8) with their defaults.

use std::time::Duration;

use crate::RetentionPool;

/// The environment variable that may carry the WebSocket token. It is removed from the
/// environment children inherit (`inheritEnv`), so no child ever sees the token.
pub const TOKEN_ENV: &str = "EXEC_SERVER_TOKEN";

/// Limits of one session (SPEC section 8). `Default` gives the SPEC defaults.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Retained output per process, in bytes (default 1 MiB).
    pub retain_bytes: usize,
    /// How long a closed process is retained before it is forgotten (default 30 s).
    pub retain_closed: Duration,
    /// Processes retained per session (default 1024).
    pub max_processes: usize,
    /// Queued-but-unwritten stdin bytes per process (default 16 MiB).
    pub max_pending_stdin_bytes: usize,
    /// What all processes retain together (`--max-retained-bytes`, default 256 MiB).
    /// Clones share it: give every session of a server a clone of one pool.
    pub retention: RetentionPool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            retain_bytes: 1024 * 1024,
            retain_closed: Duration::from_secs(30),
            max_processes: 1024,
            max_pending_stdin_bytes: 16 * 1024 * 1024,
            retention: RetentionPool::default(),
        }
    }
}
