//! The listening side: bind or take an inherited socket (refusing an unauthenticated non-loopback address), accept, wrap in TLS, serve HTTP with upgrades, and shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use exec_server_rpc::Server;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{Auth, Error, WsConfig};

/// A client must finish its TLS handshake and send its request headers within this
/// time, and a connection must be upgraded within it.
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
        check_auth(&config.auth, config.listen)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        Self::on(listener, config, rpc)
    }

    /// Serves on a listening socket the server inherited (socket activation: systemd
    /// passes it as `LISTEN_FDS`); `config.listen` is not used. Refuses `Auth::Disabled`
    /// unless the socket's address is loopback, and an empty token. Must run inside the
    /// tokio runtime.
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: WsConfig,
        rpc: Arc<Server>,
    ) -> Result<WsServer, Error> {
        let addr = listener.local_addr().map_err(Error::Inherited)?;
        check_auth(&config.auth, addr)?;
        listener.set_nonblocking(true).map_err(Error::Inherited)?;
        let listener = TcpListener::from_std(listener).map_err(Error::Inherited)?;
        Self::on(listener, config, rpc)
    }

    fn on(listener: TcpListener, config: WsConfig, rpc: Arc<Server>) -> Result<WsServer, Error> {
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

    /// The URL a client can use as-is (`wss://` with TLS), including `?token=` when
    /// authentication is on.
    pub fn url(&self) -> String {
        let config = &self.shared.config;
        let scheme = if config.tls.is_some() { "wss" } else { "ws" };
        let authority = match &config.url_host {
            Some(host) => format!("{host}:{}", self.local_addr.port()),
            None => self.local_addr.to_string(),
        };
        format!("{scheme}://{authority}/{}", config.auth.url_query())
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
                exec_server_metrics::metrics().refused("pending");
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
                // TLS wraps the stream before HTTP sees it; the acceptor is the one
                // current now, so a reload changes only later connections.
                let connection = async {
                    match &shared.config.tls {
                        None => serve_http(shared.clone(), stream, peer).await,
                        Some(tls) => match tls.acceptor().accept(stream).await {
                            Ok(stream) => serve_http(shared.clone(), stream, peer).await,
                            Err(e) => {
                                exec_server_metrics::metrics().refused("tls");
                                tracing::debug!(%peer, "TLS handshake failed: {e}");
                            }
                        },
                    }
                };
                tokio::select! {
                    () = connection => {}
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

/// Refuses `Auth::Disabled` on an address that is not loopback, and an empty token.
fn check_auth(auth: &Auth, addr: SocketAddr) -> Result<(), Error> {
    match auth {
        Auth::Disabled if !addr.ip().is_loopback() => Err(Error::InsecureBind { addr }),
        Auth::Token(token) if token.is_empty() => Err(Error::EmptyToken),
        _ => Ok(()),
    }
}

/// Serves HTTP (with upgrades) on one accepted stream, plain or TLS, until it is upgraded
/// or done.
async fn serve_http<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| crate::http::route(shared.clone(), request));
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, "HTTP connection error: {e}");
    }
}
