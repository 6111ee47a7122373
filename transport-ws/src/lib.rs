//! The WebSocket transport: TLS, token auth, Origin checks, health and metrics endpoints, limits and session resume, over the shared dispatch.
//!
//! An accepted connection is wrapped in TLS first when the server has it (`wss://`).
//! The HTTP layer (hyper) answers `/healthz`, `/livez`, `/readyz` and `/metrics`,
//! refuses a foreign `Origin` (403) and a missing or wrong token (401) before any
//! upgrade; each upgraded connection is framed
//! by soketto (the WebSocket codec jsonrpsee's server uses) and driven by a loop of
//! ours that feeds [`exec_server_rpc::Connection`] in receipt order.

mod auth;
mod config;
mod connection;
mod error;
mod frames;
mod http;
mod server;
mod tls;

pub use auth::Auth;
pub use config::WsConfig;
pub use error::Error;
pub use server::WsServer;
pub use tls::{Tls, TlsFiles};
