//! JSON-RPC method dispatch shared by the stdio and WebSocket transports: the handshake state of a connection, the session registry, and the mapping of core errors to wire errors.
//!
//! A transport owns the framing. For every inbound message it calls
//! [`Connection::handle`] in the order the messages arrived, and it writes every
//! [`Message`] it receives from the connection's [`Outbound`] queue as one message
//! (binary ones only on a transport that said it carries binary frames).
//! Responses and flat notifications share that one bounded queue, which is what
//! orders a `process/start` response before the process's first notification and
//! what turns a slow reader into backpressure on the child's output.
//!
//! jsonrpsee (pinned) provides the method table ([`jsonrpsee_core::server::RpcModule`]),
//! the params and id types, response serialization and `notify_on_completion`; this
//! crate calls the registered callbacks itself instead of running jsonrpsee's server,
//! because that server spawns a task per inbound message (so `process/write` calls
//! could reach core out of order), has no flat-notification API, and cannot close one
//! chosen connection. Synchronous callbacks run on the connection's read loop in
//! receipt order; asynchronous ones (`process/start`, `process/read`) run in tasks.

mod config;
mod connection;
mod error;
mod methods;
mod queue;
mod random;
mod registry;
mod sink;
mod window;

pub use config::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_OUTBOUND_QUEUE, DEFAULT_OUTBOUND_QUEUE_BYTES, RpcConfig,
    SERVER_NAME,
};
pub use connection::{Connection, Message, Outbound};
pub use error::Error;
pub use methods::Server;
pub use random::random_hex;
