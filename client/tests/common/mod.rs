//! Helpers of the client's integration tests: an in-process WebSocket server, a TCP proxy
//! that can cut its connections, and deadline-bounded waits.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exec_server_core::SessionConfig;
use exec_server_rpc::{RpcConfig, Server};
use exec_server_ws::{Auth, WsConfig, WsServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod suite;

/// Every wait in these tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Awaits `fut`, failing the test with `what` after [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// An exec-server WebSocket server running in this process; stops when dropped.
pub struct TestServer {
    pub url: String,
    pub addr: SocketAddr,
    pub token: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with_config(RpcConfig::default()).await
    }

    /// A server with a small retention (to provoke truncation) and a given session TTL.
    pub async fn with_retention(retain_bytes: usize) -> TestServer {
        TestServer::with_config(RpcConfig {
            session: SessionConfig {
                retain_bytes,
                ..SessionConfig::default()
            },
            ..RpcConfig::default()
        })
        .await
    }

    pub async fn with_config(config: RpcConfig) -> TestServer {
        let token = "test-token-0123456789abcdef".to_owned();
        let rpc = Server::new(config).expect("dispatch");
        let ws = WsServer::bind(
            WsConfig::new("127.0.0.1:0".parse().unwrap(), Auth::Token(token.clone())),
            rpc,
        )
        .await
        .expect("bind");
        let url = ws.url();
        let addr = ws.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ws.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            url,
            addr,
            token,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The URL of this server as reached through `addr` (a proxy).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        self.url.replace(&self.addr.to_string(), &addr.to_string())
    }

    /// Stops the server and waits until every process is reaped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within("the server to stop", task).await.unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP proxy in front of a server; [`Proxy::cut`] drops every connection through it
/// (new ones are still accepted, so a client can reconnect).
pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
    accepting: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepting = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let accept = {
            let conns = conns.clone();
            let accepting = accepting.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut down, _)) = listener.accept().await else {
                        return;
                    };
                    if !accepting.load(std::sync::atomic::Ordering::SeqCst) {
                        drop(down);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        let Ok(mut up) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    });
                    conns.lock().unwrap().push(task);
                }
            })
        };
        Proxy {
            addr,
            conns,
            accept,
            accepting,
        }
    }

    /// Drops every current connection (both directions, at once).
    pub fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Refuses (closes at once) new connections while `false`.
    pub fn set_accepting(&self, on: bool) {
        self.accepting
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many connections were made through the proxy so far and are still open.
    pub fn open_connections(&self) -> usize {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .filter(|t| !t.is_finished())
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
