//! Typed async Rust client for exec-server, and one backend trait for processes that run
//! locally or on a server.
//!
//! - [`Client`] speaks the exec-server protocol over a WebSocket ([`Client::connect`],
//!   with the URL `exec-server serve` prints) or over the stdio of a server it starts as
//!   its child ([`Client::spawn`]). It has a typed method per protocol method, errors
//!   carry the SPEC code ([`Error::code`]), binary output frames are used when the
//!   server grants them, and a lost WebSocket can be resumed ([`Client::resume`], or
//!   automatically with [`ConnectOptions::reconnect`]) without losing or repeating an event.
//! - [`ExecBackend`] / [`ExecProcess`] are the one interface code above should use:
//!   [`RemoteBackend`] runs processes through a [`Client`], [`LocalBackend`] (feature
//!   `local`) runs them in this process on exec-server's own core.
//! - [`ExecBackend::files`] gives the files of the host the processes run on
//!   ([`ExecFiles`]: read and write in chunks, stat, list, mkdir, remove, rename), for
//!   either backend; a file error names its errno ([`Error::errno`]).
//! - Each process's [`EventStream`] is lossless and bounded: when its consumer lags, the
//!   client stops reading the connection and the server stops reading the process's output.
//!
//! ```no_run
//! use exec_server_client::{Client, ConnectOptions, ExecBackend, RemoteBackend, StartOptions};
//!
//! # async fn demo() -> Result<(), exec_server_client::Error> {
//! let client = Client::connect("ws://127.0.0.1:41641/?token=3f9c", ConnectOptions::default()).await?;
//! let backend = RemoteBackend::new(client);
//! let process = backend.start(StartOptions::new(["sh", "-c", "echo hi; exit 3"])).await?;
//! let output = process.events()?.collect().await;
//! assert_eq!((output.stdout, output.exit_code), (b"hi\n".to_vec(), Some(3)));
//! # Ok(())
//! # }
//! ```

mod backend;
mod error;
mod event;
mod files;
mod link;
#[cfg(feature = "local")]
mod local;
mod remote;
mod remote_process;

pub use backend::{DEFAULT_GRACE, ExecBackend, ExecProcess, ReadOptions, StartOptions};
pub use error::Error;
pub use event::{EventStream, Output, ProcessEvent};
pub use files::{ExecFiles, WriteOptions};
#[cfg(feature = "local")]
pub use local::LocalBackend;
pub use remote::{Client, ConnectOptions, ReconnectPolicy};
pub use remote_process::{RemoteBackend, RemoteProcess};

/// The protocol's types that appear in this crate's API.
pub use exec_server_protocol::{
    Base64Bytes, ErrorCode, FileKind, FsEntry, FsReadResult, FsStatResult, ProcessInfo,
    ProcessReadResult, Signal, SpawnErrorData, SpawnStep, Stream, TerminalSize, WriteStatus,
};
