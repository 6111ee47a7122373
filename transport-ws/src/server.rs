//! The listening side: bind (refusing an unauthenticated non-loopback bind), accept, serve HTTP with upgrades, and shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use exec_server_rpc::Server;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{Auth, Error, WsConfig};

/// A client must send its request headers within this time, and a connection must be
/// upgraded within it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// State shared by the accept loop and every connection.
pub(crate) struct Shared {
    pub(crate) rpc: Arc<Server>,
    pub(crate) config: WsConfig,
    /// One permit per allowed WebSocket connection.
    pub(crate) connections: Arc<Semaphore>,
    /// Cancelled when the server stops: every connection closes.
    pub(crate) stop: CancellationToken,
}

/// A bound WebSocket server, not yet accepting.
pub struct WsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl WsServer {
    /// Binds the listening socket. Refuses `Auth::Disabled` unless the address is loopback,
    /// and an empty token.
    pub async fn bind(config: WsConfig, rpc: Arc<Server>) -> Result<WsServer, Error> {
        match &config.auth {
            Auth::Disabled if !config.listen.ip().is_loopback() => {
                return Err(Error::InsecureBind {
                    addr: config.listen,
                });
            }
            Auth::Token(token) if token.is_empty() => return Err(Error::EmptyToken),
            _ => {}
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let shared = Arc::new(Shared {
            rpc,
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config,
            stop: CancellationToken::new(),
        });
        Ok(WsServer {
            listener,
            local_addr,
            shared,
        })
    }

    /// The address actually bound (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL a client can use as-is, including `?token=` when authentication is on.
    pub fn url(&self) -> String {
        format!(
            "ws://{}/{}",
            self.local_addr,
            self.shared.config.auth.url_query()
        )
    }

    /// Accepts connections until `shutdown` resolves; then closes every connection and
    /// shuts every session down (terminating and reaping every process).
    pub async fn run<S: Future<Output = ()>>(self, shutdown: S) {
        let WsServer {
            listener, shared, ..
        } = self;
        tokio::pin!(shutdown);
        let pending = Arc::new(Semaphore::new(shared.config.max_pending_connections.max(1)));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Until it is upgraded (or answered), a connection holds a pending slot: a
            // flood of connections that never send a request cannot grow the server.
            let Ok(slot) = pending.clone().try_acquire_owned() else {
                tracing::warn!(
                    %peer,
                    max = shared.config.max_pending_connections,
                    "closed a connection: too many connections not yet upgraded"
                );
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = {
                    let shared = shared.clone();
                    service_fn(move |request| crate::http::route(shared.clone(), request))
                };
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::select! {
                    served = connection => {
                        if let Err(e) = served {
                            tracing::debug!(%peer, "HTTP connection error: {e}");
                        }
                    }
                    // Kept alive between requests, a connection could hold its slot
                    // without a header timeout: every connection gets this long in all
                    // to be upgraded.
                    () = tokio::time::sleep(HEADER_READ_TIMEOUT) => {
                        tracing::debug!(%peer, "HTTP connection not upgraded in time");
                    }
                    () = shared.stop.cancelled() => {}
                }
                drop(slot);
            });
        }
        tracing::info!("shutting down");
        drop(listener);
        shared.stop.cancel();
        shared.rpc.shutdown().await;
    }
}
