//! Process lifecycle for exec-server: spawning with pipes or a pseudo-terminal, sequencing events, bounded retention, signals and cleanup. Knows nothing of JSON-RPC framing.
//!
//! How a process lives (see `process.rs`):
//! - No thread per process. Output fds (pipes, or the non-blocking pty master) are driven
//!   by `tokio::io::unix::AsyncFd`; the exit by tokio's pidfd/SIGCHLD-driven `Child::wait`.
//! - Each process has one tokio mutex (the emitter) held from reading a chunk, through
//!   seq assignment and retention, to the end of the sink's `send`: events reach the sink
//!   strictly in seq order, and a full sink stops that process's reads (backpressure).
//! - Readers see a short std mutex (seq counter, retention, exit, close) and long-poll on a
//!   per-process `watch`, subscribed before the state is checked (no lost wake-ups).
//! - The session's sink is cached per process and re-read only when a session-wide
//!   generation counter moves: no session lock per event.
//! - Reaping and signalling share a per-process lock, so a group is never signalled
//!   through a pid that was already reaped and possibly reused.

mod account;
mod blocking;
mod config;
mod environ;
mod error;
mod event;
mod fs;
mod groups;
mod guardian;
#[cfg(test)]
mod hold;
mod lock;
mod process;
mod reaper;
mod retention;
mod session;
mod sink;
mod spawn;
mod sys;

pub use config::{SessionConfig, TOKEN_ENV};
pub use environ::take_env_secret;
pub use error::Error;
pub use event::{Event, EventSink, SinkClosed};
pub use fs::{DEFAULT_FS_CONCURRENCY, Files, FsConfig};
pub use guardian::{Guardian, guardian_main};
pub use lock::{lock, read_lock, write_lock};
pub use reaper::{become_subreaper, reap_orphans};
pub use retention::{DEFAULT_MAX_RETAINED_BYTES, EVENT_OVERHEAD, RetentionPool};
pub use session::{PendingWrite, Session, StartReservation, Started, raise_fd_limit};
