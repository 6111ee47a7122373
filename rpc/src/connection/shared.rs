//! The handshake state of SPEC section 4 and the state a connection shares with the calls it dispatched.

use std::sync::{Arc, Mutex, MutexGuard};

use exec_server_core::{Session, lock};
use exec_server_protocol::{
    Initialize, InitializeParams, InitializeResult, MAX_OUTPUT_WINDOW_BYTES,
    MIN_OUTPUT_WINDOW_BYTES, Method, PROTOCOL_VERSION, ProcessAckNotification, ServerCapabilities,
    SessionClose, SessionCloseResult, notification,
};
use jsonrpsee_core::server::Extensions;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::methods::{InitExt, SessionExt, parse};
use crate::queue::OutTx;
use crate::sink::QueueSink;
use crate::window::Windows;
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
    /// `session/close` was read and is under way: only another `session/close` is
    /// answered (once the close is done); every other request gets -32600.
    Closing(Attached),
    /// The session was closed by `session/close`.
    Closed,
}

/// What a successful `initialize` leaves for [`ConnectionShared::attach_pending`].
struct PendingAttach {
    session_id: String,
    /// Output goes out as binary frames (SPEC section 11).
    binary_output: bool,
    /// The output window granted per process (SPEC section 13).
    window: Option<u64>,
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
    /// queued, and how its events go out.
    pending_attach: Mutex<Option<PendingAttach>>,
    /// The windows of this connection's processes, when flow control was granted.
    windows: Mutex<Option<Arc<Windows>>>,
    /// Cancelled once the response of `session/close` is queued: the transport then ends
    /// the connection.
    pub(super) session_closed: CancellationToken,
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
            windows: Mutex::new(None),
            session_closed: CancellationToken::new(),
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
        // SPEC section 13: granted as asked (see protocol/README.md), checked before a
        // session is opened.
        let window = params
            .as_ref()
            .ok()
            .and_then(|p| p.capabilities)
            .and_then(|c| c.output_window_bytes);
        let result = check_window(window).and_then(|()| self.open_session(params));
        let mut state = self.state();
        match &result {
            Ok(attached) => {
                *lock(&self.pending_attach) = Some(PendingAttach {
                    session_id: attached.session_id.clone(),
                    binary_output,
                    window,
                });
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
                output_window_bytes: window,
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
        if let Some(pending) = pending {
            // Every window starts empty, on a resumed session too.
            let windows = pending.window.map(Windows::new);
            lock(&self.windows).clone_from(&windows);
            let sink = Arc::new(QueueSink::new(
                self.tx.clone(),
                pending.binary_output,
                windows,
            ));
            self.server
                .registry()
                .attach(&pending.session_id, self.id, sink);
        }
    }

    /// Lets every window go: nothing is held back for acknowledgements any more.
    pub(super) fn lift_windows(&self) {
        if let Some(windows) = lock(&self.windows).as_ref() {
            windows.lift();
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
            Handshake::Closing(_) | Handshake::Closed if method == SessionClose::NAME => Ok(ext),
            Handshake::Closing(_) | Handshake::Closed => Err(Error::InvalidRequest(format!(
                "the session is closed (`{}` was called on this connection)",
                SessionClose::NAME
            ))),
        }
    }

    /// Starts a `session/close` the gate let through, on the read loop: from here on the
    /// connection answers nothing but `session/close`, and the session cannot be resumed.
    /// Returns whether this is the first one (a later one only waits for the first).
    pub(super) fn begin_close(&self) -> Result<bool, Error> {
        let mut state = self.state();
        let attached = match &*state {
            Handshake::Ready(attached) => attached.clone(),
            Handshake::Closing(_) | Handshake::Closed => return Ok(false),
            _ => {
                return Err(Error::Internal(format!(
                    "`{}` dispatched before the handshake",
                    SessionClose::NAME
                )));
            }
        };
        if !self
            .server
            .registry()
            .begin_close(&attached.session_id, self.id)
        {
            return Err(Error::InvalidRequest(
                "the session was taken over by another connection".into(),
            ));
        }
        *state = Handshake::Closing(attached);
        Ok(true)
    }

    /// The body of `session/close` (SPEC 5.10). The first one lifts the windows (a client
    /// that closes its session wants the last events, and may no longer ack), terminates
    /// every process and waits until each is reaped and its last event pushed, then
    /// forgets the session. A later one answers once the first one's response is queued.
    pub(crate) async fn close_session(&self, first: bool) -> Result<SessionCloseResult, Error> {
        if !first {
            self.session_closed.cancelled().await;
            return Ok(SessionCloseResult {});
        }
        let attached = match &*self.state() {
            Handshake::Closing(attached) => attached.clone(),
            _ => return Err(Error::Internal("the session is not closing".into())),
        };
        tracing::info!(
            conn = self.id,
            session = attached.session_id,
            "closing the session"
        );
        self.lift_windows();
        attached.session.close().await;
        attached.session.detach();
        self.server.registry().remove(&attached.session_id);
        *self.state() = Handshake::Closed;
        tracing::info!(
            conn = self.id,
            session = attached.session_id,
            "session closed"
        );
        Ok(SessionCloseResult {})
    }

    /// The first `session/close` was answered (its response queued, or the connection is
    /// gone): the transport may end the connection, and later ones answer.
    pub(crate) fn close_answered(&self) {
        self.session_closed.cancel();
    }

    pub(super) fn on_notification(&self, method: &str, params: Option<&RawValue>) {
        if method == notification::PROCESS_ACK {
            self.on_ack(params);
            return;
        }
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

    /// `process/ack` (SPEC section 13): never answered; without windows, or with params
    /// that do not parse, it changes nothing.
    fn on_ack(&self, params: Option<&RawValue>) {
        let Some(windows) = lock(&self.windows).clone() else {
            tracing::debug!(
                conn = self.id,
                "ignoring an ack: no output window was granted"
            );
            return;
        };
        match parse::<ProcessAckNotification>(params.map(RawValue::get)) {
            Ok(ack) => windows.ack(&ack.process_id, ack.seq),
            Err(e) => tracing::debug!(conn = self.id, %e, "ignoring a malformed ack"),
        }
    }

    pub(super) fn session_id(&self) -> Option<String> {
        match &*self.state() {
            Handshake::Initialized(a) | Handshake::Ready(a) | Handshake::Closing(a) => {
                Some(a.session_id.clone())
            }
            Handshake::New | Handshake::Initializing | Handshake::Closed => None,
        }
    }
}

/// An `outputWindowBytes` outside the SPEC's range is invalid params.
fn check_window(window: Option<u64>) -> Result<(), Error> {
    match window {
        Some(w) if !(MIN_OUTPUT_WINDOW_BYTES..=MAX_OUTPUT_WINDOW_BYTES).contains(&w) => {
            Err(Error::InvalidParams(format!(
                "outputWindowBytes must be {MIN_OUTPUT_WINDOW_BYTES} to {MAX_OUTPUT_WINDOW_BYTES}, got {w}"
            )))
        }
        _ => Ok(()),
    }
}
