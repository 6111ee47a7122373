//! The handshake state of SPEC section 4 and the state a connection shares with the calls it dispatched.

use std::sync::{Arc, Mutex, MutexGuard};

use exec_server_core::{Session, lock};
use exec_server_protocol::{
    Initialize, InitializeParams, InitializeResult, Method, PROTOCOL_VERSION, ServerCapabilities,
    notification,
};
use jsonrpsee_core::server::Extensions;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::methods::{InitExt, SessionExt};
use crate::queue::OutTx;
use crate::sink::QueueSink;
use crate::{Error, SERVER_NAME, Server};

/// The handshake of SPEC section 4.
enum Handshake {
    /// Nothing yet: only `initialize` is allowed.
    New,
    /// `initialize` is being handled.
    Initializing,
    /// `initialize` answered; waiting for the `initialized` notification.
    Initialized(Attached),
    /// Ready for `process/*`.
    Ready(Attached),
}

#[derive(Clone)]
struct Attached {
    session_id: String,
    session: Arc<Session>,
}

/// State shared by a connection and the calls it dispatched.
pub(crate) struct ConnectionShared {
    pub(super) id: u64,
    pub(super) server: Arc<Server>,
    pub(super) tx: OutTx,
    /// The transport can carry binary frames (WebSocket), so binary output may be granted.
    binary_frames: bool,
    /// Cancelled when the server wants this connection closed (session takeover) and
    /// when the connection ends; in-flight long polls are then abandoned (nobody is
    /// left to answer).
    pub(super) close: CancellationToken,
    /// Cancelled when the transport finishes the connection (end of input, server
    /// shutdown): pending long polls answer at once with what they have.
    pub(super) drain: CancellationToken,
    /// One permit per request in flight (read, not yet answered): `--max-in-flight`.
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) max_in_flight: u32,
    state: Mutex<Handshake>,
    /// Set by a successful `initialize`: the session to attach once the response is
    /// queued, and whether its output goes out as binary frames.
    pending_attach: Mutex<Option<(String, bool)>>,
}

impl ConnectionShared {
    pub(crate) fn new(id: u64, server: Arc<Server>, tx: OutTx, binary_frames: bool) -> Arc<Self> {
        // acquire_many takes a u32; 2^20 requests in flight is far past any sane limit.
        let max_in_flight = server.config().max_in_flight.clamp(1, 1 << 20) as u32;
        Arc::new(ConnectionShared {
            id,
            server,
            tx,
            binary_frames,
            close: CancellationToken::new(),
            drain: CancellationToken::new(),
            in_flight: Arc::new(Semaphore::new(max_in_flight as usize)),
            max_in_flight,
            state: Mutex::new(Handshake::New),
            pending_attach: Mutex::new(None),
        })
    }

    fn state(&self) -> MutexGuard<'_, Handshake> {
        lock(&self.state)
    }

    /// The body of `initialize` (the dispatch already moved the state to `Initializing`).
    pub(crate) fn initialize(
        &self,
        params: Result<InitializeParams, Error>,
    ) -> Result<InitializeResult, Error> {
        // SPEC section 11: granted when asked for on a transport with binary frames; a
        // resume decides it afresh, since it is a new connection's `initialize`.
        let binary_output = self.binary_frames
            && params
                .as_ref()
                .is_ok_and(|p| p.capabilities.is_some_and(|c| c.binary_output));
        let result = self.open_session(params);
        let mut state = self.state();
        match &result {
            Ok(attached) => {
                *lock(&self.pending_attach) = Some((attached.session_id.clone(), binary_output));
                *state = Handshake::Initialized(attached.clone());
            }
            Err(_) => *state = Handshake::New,
        }
        drop(state);
        result.map(|attached| InitializeResult {
            session_id: attached.session_id,
            protocol_version: PROTOCOL_VERSION,
            server_name: SERVER_NAME.to_owned(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: ServerCapabilities {
                output_window_bytes: None,
                binary_output,
            },
        })
    }

    fn open_session(&self, params: Result<InitializeParams, Error>) -> Result<Attached, Error> {
        let params = params?;
        let registry = self.server.registry();
        let attached = match &params.resume_session_id {
            Some(id) => Attached {
                session: registry.resume(id, self.id, self.close.clone())?,
                session_id: id.clone(),
            },
            None => {
                let (session_id, session) = registry.create(self.id, self.close.clone())?;
                Attached {
                    session_id,
                    session,
                }
            }
        };
        tracing::debug!(conn = self.id, session = attached.session_id, "the session");
        tracing::info!(
            conn = self.id,
            client = params.client_name,
            version = params.client_version.as_deref().unwrap_or(""),
            resumed = params.resume_session_id.is_some(),
            "session opened"
        );
        Ok(attached)
    }

    /// Attaches the session of a just-answered `initialize`, so pushes start after its response.
    pub(super) fn attach_pending(&self) {
        let pending = lock(&self.pending_attach).take();
        if let Some((session_id, binary_output)) = pending {
            let sink = Arc::new(QueueSink::new(self.tx.clone(), binary_output));
            self.server.registry().attach(&session_id, self.id, sink);
        }
    }

    /// Checks the handshake for a call of `method` and builds the call's extensions.
    pub(super) fn gate(self: &Arc<Self>, method: &str) -> Result<Extensions, Error> {
        let mut ext = Extensions::new();
        let mut state = self.state();
        if method == Initialize::NAME {
            return match *state {
                Handshake::New => {
                    *state = Handshake::Initializing;
                    drop(state);
                    ext.insert(InitExt(self.clone()));
                    Ok(ext)
                }
                _ => Err(Error::InvalidRequest(format!(
                    "`{}` was already called on this connection",
                    Initialize::NAME
                ))),
            };
        }
        match &*state {
            Handshake::New | Handshake::Initializing => Err(Error::InvalidRequest(format!(
                "call `{}` first",
                Initialize::NAME
            ))),
            Handshake::Initialized(_) => Err(Error::InvalidRequest(format!(
                "send the `{}` notification first",
                notification::INITIALIZED
            ))),
            Handshake::Ready(attached) => {
                ext.insert(SessionExt(attached.session.clone()));
                Ok(ext)
            }
        }
    }

    pub(super) fn on_notification(&self, method: &str) {
        if method != notification::INITIALIZED {
            tracing::debug!(conn = self.id, method, "ignoring unknown notification");
            return;
        }
        let mut state = self.state();
        if let Handshake::Initialized(attached) = &*state {
            *state = Handshake::Ready(attached.clone());
        } else {
            tracing::debug!(conn = self.id, "ignoring `initialized` out of order");
        }
    }

    pub(super) fn session_id(&self) -> Option<String> {
        match &*self.state() {
            Handshake::Initialized(a) | Handshake::Ready(a) => Some(a.session_id.clone()),
            Handshake::New | Handshake::Initializing => None,
        }
    }
}
