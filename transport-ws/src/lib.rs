//! The WebSocket transport: token auth, Origin checks, /healthz, limits and session resume, over the shared dispatch.
//!
//! The HTTP layer (hyper) answers `/healthz`, refuses a foreign `Origin` (403) and a
//! missing or wrong token (401) before any upgrade; each upgraded connection is framed
//! by soketto (the WebSocket codec jsonrpsee's server uses) and driven by a loop of
//! ours that feeds [`exec_server_rpc::Connection`] in receipt order.

mod auth;
mod config;
mod connection;
mod error;
mod frames;
mod http;
mod server;

pub use auth::Auth;
pub use config::WsConfig;
pub use error::Error;
pub use server::WsServer;
