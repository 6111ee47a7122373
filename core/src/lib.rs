//! Process lifecycle for exec-server: spawning with pipes or a pseudo-terminal, sequencing events, bounded retention, signals and cleanup. Knows nothing of JSON-RPC framing.

mod config;
mod error;
mod event;
mod process;
mod session;
mod sink;
mod spawn;
mod sys;

pub use config::SessionConfig;
pub use error::Error;
pub use event::{Event, EventSink, SinkClosed};
pub use session::{Session, Started, raise_fd_limit};
