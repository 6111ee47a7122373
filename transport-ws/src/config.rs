//! Settings of the WebSocket server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{Auth, Tls};

/// Settings of the WebSocket server (the dispatch's own limits live in `RpcConfig`).
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Token authentication, or none (loopback only).
    pub auth: Auth,
    /// Origins allowed to connect; any other `Origin` header is refused with 403.
    pub allowed_origins: Vec<String>,
    /// Maximum number of simultaneous WebSocket connections.
    pub max_connections: usize,
    /// Maximum number of TCP connections not yet upgraded (reading request headers,
    /// `/healthz`, refused requests); a connection past it is closed at once.
    pub max_pending_connections: usize,
    /// Interval between pings to a connection.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is dropped.
    pub idle_timeout: Duration,
    /// TLS (`wss://`): every accepted connection is wrapped before HTTP sees it.
    pub tls: Option<Arc<Tls>>,
    /// Serve `/metrics` without the token.
    pub metrics_public: bool,
    /// The host to print in the URL instead of the bound IP address (the name a TLS
    /// certificate is issued for).
    pub url_host: Option<String>,
}

impl WsConfig {
    /// Defaults for everything but the address and the authentication.
    pub fn new(listen: SocketAddr, auth: Auth) -> Self {
        WsConfig {
            listen,
            auth,
            allowed_origins: Vec::new(),
            max_connections: 256,
            max_pending_connections: 64,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            tls: None,
            metrics_public: false,
            url_host: None,
        }
    }
}
