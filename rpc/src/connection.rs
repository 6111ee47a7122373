//! One transport connection: message classification, the handshake state machine, dispatch and the outbound queue.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use exec_server_core::Session;
use exec_server_protocol::{
    Initialize, InitializeParams, InitializeResult, Method, PROTOCOL_VERSION, ProcessRead,
    ServerCapabilities, notification,
};
use jsonrpsee_core::server::{ConnectionId, Extensions, MethodCallback, MethodResponse};
use jsonrpsee_types::error::OVERSIZED_RESPONSE_CODE;
use jsonrpsee_types::{Id, Params};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::methods::{InitExt, SessionExt};
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
    id: u64,
    server: Arc<Server>,
    tx: mpsc::Sender<Message>,
    /// The transport can carry binary frames (WebSocket), so binary output may be granted.
    binary_frames: bool,
    /// Cancelled when the server wants this connection closed (session takeover) and
    /// when the connection ends; in-flight long polls stop on it.
    close: CancellationToken,
    state: Mutex<Handshake>,
    /// Set by a successful `initialize`: the session to attach once the response is
    /// queued, and whether its output goes out as binary frames.
    pending_attach: Mutex<Option<(String, bool)>>,
}

impl ConnectionShared {
    pub(crate) fn new(
        id: u64,
        server: Arc<Server>,
        tx: mpsc::Sender<Message>,
        binary_frames: bool,
    ) -> Arc<Self> {
        Arc::new(ConnectionShared {
            id,
            server,
            tx,
            binary_frames,
            close: CancellationToken::new(),
            state: Mutex::new(Handshake::New),
            pending_attach: Mutex::new(None),
        })
    }

    fn state(&self) -> MutexGuard<'_, Handshake> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
                *self
                    .pending_attach
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some((attached.session_id.clone(), binary_output));
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
            capabilities: ServerCapabilities { binary_output },
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
        tracing::info!(
            conn = self.id,
            session = attached.session_id,
            client = params.client_name,
            version = params.client_version.as_deref().unwrap_or(""),
            resumed = params.resume_session_id.is_some(),
            "session opened"
        );
        Ok(attached)
    }

    /// Attaches the session of a just-answered `initialize`, so pushes start after its response.
    fn attach_pending(&self) {
        let pending = self
            .pending_attach
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((session_id, binary_output)) = pending {
            let sink = Arc::new(QueueSink::new(self.tx.clone(), binary_output));
            self.server.registry().attach(&session_id, self.id, sink);
        }
    }

    /// Checks the handshake for a call of `method` and builds the call's extensions.
    fn gate(self: &Arc<Self>, method: &str) -> Result<Extensions, Error> {
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

    fn on_notification(&self, method: &str) {
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

    fn session_id(&self) -> Option<String> {
        match &*self.state() {
            Handshake::Initialized(a) | Handshake::Ready(a) => Some(a.session_id.clone()),
            Handshake::New | Handshake::Initializing => None,
        }
    }
}

/// One outbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A complete JSON-RPC message (a response or a flat notification), without a
    /// trailing newline.
    Text(String),
    /// A binary output frame (SPEC section 11); only on a connection that was granted
    /// `binaryOutput`, which only a transport with binary frames can be.
    Binary(Vec<u8>),
}

/// The receiving end of a connection's outbound queue, in the order the messages must
/// be written.
#[derive(Debug)]
pub struct Outbound {
    rx: mpsc::Receiver<Message>,
}

impl Outbound {
    pub(crate) fn new(rx: mpsc::Receiver<Message>) -> Self {
        Outbound { rx }
    }

    /// The next message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next message if one is queued already (for batching writes before a flush).
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// [`Outbound::recv`] for a plain thread (it panics inside the async runtime).
    pub fn blocking_recv(&mut self) -> Option<Message> {
        self.rx.blocking_recv()
    }
}

/// One transport connection bound to the dispatch.
///
/// Dropping it detaches its session, which then expires after the session TTL unless
/// another connection resumes it.
pub struct Connection {
    shared: Arc<ConnectionShared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

/// `Some(raw)` for a field that is present, even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// The members of a JSON-RPC message this server looks at; the rest is ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

/// Just the id of a message, to answer an invalid request with its id when it has one.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    id: Id<'a>,
}

/// What one inbound message is.
enum Inbound<'a> {
    /// Answer this error and do nothing else.
    Invalid(Id<'a>, Error),
    /// A notification.
    Notification(Cow<'a, str>),
    /// A request.
    Request {
        id: Id<'a>,
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
}

fn classify(message: &[u8]) -> Inbound<'_> {
    let first = message.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(message) {
            Ok(_) => Inbound::Invalid(
                Id::Null,
                Error::InvalidRequest(
                    "batch requests are not supported; send one request per message".into(),
                ),
            ),
            Err(e) => Inbound::Invalid(Id::Null, Error::Parse(e.to_string())),
        };
    }
    let envelope: Envelope<'_> = match serde_json::from_slice(message) {
        Ok(envelope) => envelope,
        Err(e) if e.is_data() => {
            let id = serde_json::from_slice::<IdOnly<'_>>(message)
                .map(|i| i.id)
                .unwrap_or(Id::Null);
            return Inbound::Invalid(
                id,
                Error::InvalidRequest(format!("not a JSON-RPC request: {e}")),
            );
        }
        Err(e) => return Inbound::Invalid(Id::Null, Error::Parse(e.to_string())),
    };
    let id = match envelope
        .id
        .map(|raw| serde_json::from_str::<Id<'_>>(raw.get()))
    {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return Inbound::Invalid(
                Id::Null,
                Error::InvalidRequest(
                    "`id` must be a string, a non-negative integer or null".into(),
                ),
            );
        }
    };
    if envelope.jsonrpc.as_deref() != Some("2.0") {
        return Inbound::Invalid(
            id.unwrap_or(Id::Null),
            Error::InvalidRequest("`jsonrpc` must be \"2.0\"".into()),
        );
    }
    let Some(method) = envelope.method else {
        return Inbound::Invalid(
            id.unwrap_or(Id::Null),
            Error::InvalidRequest("`method` is missing".into()),
        );
    };
    match id {
        None => Inbound::Notification(method),
        Some(id) => Inbound::Request {
            id,
            method,
            params: envelope.params,
        },
    }
}

/// The JSON text of an error response.
fn error_json(id: Id<'_>, error: &Error) -> String {
    json_text(MethodResponse::error(id, error.to_error_object()))
}

fn json_text(response: MethodResponse) -> String {
    String::from(Box::<str>::from(response.into_json()))
}

/// Queues a method's response, replacing jsonrpsee's oversized-response error with
/// the SPEC's limit error, then tells a waiting `notify_on_completion` that it is queued.
async fn send_response(
    tx: &mpsc::Sender<Message>,
    id: Id<'_>,
    response: MethodResponse,
    max: usize,
) {
    let text = if response.as_error_code() == Some(OVERSIZED_RESPONSE_CODE) {
        let error = Error::LimitReached(format!(
            "the response exceeds the maximum message size ({max} bytes); read with a smaller maxBytes"
        ));
        Some(error_json(id, &error))
    } else {
        None
    };
    let success = response.is_success();
    let (json, notify, _) = response.into_parts();
    let text = text.unwrap_or_else(|| String::from(Box::<str>::from(json)));
    if tx.send(Message::Text(text)).await.is_err() {
        // The connection is gone; dropping `notify` tells the waiter so.
        return;
    }
    if let Some(notify) = notify {
        notify.notify(success);
    }
}

impl Connection {
    pub(crate) fn new(shared: Arc<ConnectionShared>) -> Self {
        Connection { shared }
    }

    /// This connection's number, for logs.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Resolves when the server wants this connection closed: its session was taken
    /// over by another connection (SPEC 7.7). The transport then closes it.
    pub async fn close_requested(&self) {
        self.shared.close.cancelled().await;
    }

    /// Handles one inbound message. Call it for each message in the order they were
    /// received, and await it before reading the next: synchronous methods
    /// (`process/write`, `process/closeStdin`, …) reach core in that order, and
    /// other methods run in tasks of their own.
    ///
    /// It waits when the outbound queue is full, so a client that does not read its
    /// responses is eventually not read either.
    pub async fn handle(&self, message: &[u8]) {
        let shared = &self.shared;
        let (id, method, params) = match classify(message) {
            Inbound::Invalid(id, error) => {
                tracing::debug!(conn = shared.id, %error, "invalid message");
                self.send(error_json(id, &error)).await;
                return;
            }
            Inbound::Notification(method) => {
                shared.on_notification(&method);
                return;
            }
            Inbound::Request { id, method, params } => (id, method, params),
        };
        let Some((name, callback)) = shared.server.methods().method_with_name(&method) else {
            let error = Error::MethodNotFound(format!("`{method}`"));
            self.send(error_json(id, &error)).await;
            return;
        };
        let extensions = match shared.gate(name) {
            Ok(extensions) => extensions,
            Err(error) => {
                self.send(error_json(id, &error)).await;
                return;
            }
        };
        let max = shared.server.config().max_message_bytes;
        match callback {
            MethodCallback::Sync(callback) => {
                let params = Params::new(params.map(RawValue::get));
                let response = callback(id.clone(), params, max, extensions);
                send_response(&shared.tx, id, response, max).await;
                if name == Initialize::NAME {
                    shared.attach_pending();
                }
            }
            MethodCallback::Async(callback) => {
                let id = id.into_owned();
                let params = Params::new(params.map(RawValue::get)).into_owned();
                let call = callback(
                    id.clone(),
                    params,
                    ConnectionId(shared.id as usize),
                    max,
                    extensions,
                );
                let tx = shared.tx.clone();
                let close = shared.close.clone();
                // A long poll stops with its connection; other calls finish (a start
                // must not be abandoned half way).
                let cancellable = name == ProcessRead::NAME;
                tokio::spawn(async move {
                    let response = if cancellable {
                        tokio::select! {
                            response = call => response,
                            () = close.cancelled() => return,
                        }
                    } else {
                        call.await
                    };
                    send_response(&tx, id, response, max).await;
                });
            }
            MethodCallback::Subscription(_) | MethodCallback::Unsubscription(_) => {
                let error = Error::Internal(format!("`{name}` has an unsupported callback kind"));
                self.send(error_json(id, &error)).await;
            }
        }
    }

    /// Answers a message that exceeded the maximum message size (`size` when the
    /// transport knows it) with a -32001 error whose id is `null`.
    pub async fn reject_oversized(&self, size: Option<usize>) {
        let max = self.shared.server.config().max_message_bytes;
        let what = match size {
            Some(size) => format!("a message of {size} bytes"),
            None => "a message".to_owned(),
        };
        let error = Error::LimitReached(format!(
            "{what} exceeds the maximum message size ({max} bytes, --max-message-bytes)"
        ));
        self.send(error_json(Id::Null, &error)).await;
    }

    async fn send(&self, text: String) {
        let _ = self.shared.tx.send(Message::Text(text)).await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close.cancel();
        if let Some(session_id) = self.shared.session_id() {
            self.shared
                .server
                .registry()
                .detach(&session_id, self.shared.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(message: &str) -> (String, i32) {
        match classify(message.as_bytes()) {
            Inbound::Invalid(id, e) => (id.to_string(), e.code().code()),
            _ => panic!("{message} classified as valid"),
        }
    }

    #[test]
    fn malformed_messages_get_the_spec_codes() {
        assert_eq!(invalid("{\"jsonrpc\":").1, -32700);
        assert_eq!(invalid("not json").1, -32700);
        assert_eq!(invalid("{} x").1, -32700);
        assert_eq!(invalid("[1,2").1, -32700);
        assert_eq!(invalid("[]").1, -32600);
        assert_eq!(
            invalid("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}]").1,
            -32600
        );
        assert_eq!(invalid("5").1, -32600);
        assert_eq!(
            invalid("{\"jsonrpc\":\"2.0\",\"id\":7}"),
            ("7".into(), -32600)
        );
        assert_eq!(
            invalid("{\"jsonrpc\":\"1.0\",\"id\":7,\"method\":\"m\"}"),
            ("7".into(), -32600)
        );
        assert_eq!(
            invalid("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":5}"),
            ("a".into(), -32600)
        );
        assert_eq!(
            invalid("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"m\"}").1,
            -32600
        );
    }

    #[test]
    fn requests_and_notifications_are_told_apart() {
        match classify(br#"{"jsonrpc":"2.0","id":null,"method":"m","params":{"a":1}}"#) {
            Inbound::Request { id, method, params } => {
                assert_eq!(id, Id::Null);
                assert_eq!(method, "m");
                assert_eq!(params.map(RawValue::get), Some("{\"a\":1}"));
            }
            _ => panic!("not a request"),
        }
        let text = serde_json::json!({"jsonrpc": "2.0", "method": notification::INITIALIZED});
        match classify(text.to_string().as_bytes()) {
            Inbound::Notification(method) => assert_eq!(method, notification::INITIALIZED),
            _ => panic!("not a notification"),
        }
    }
}
