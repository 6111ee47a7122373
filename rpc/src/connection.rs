//! One transport connection: message classification, the handshake state machine, dispatch and the outbound queue.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use exec_server_core::{Session, lock};
use exec_server_protocol::{
    FsRead, Initialize, InitializeParams, InitializeResult, Method, PROTOCOL_VERSION, ProcessList,
    ProcessRead, ProcessReadParams, ProcessResize, ProcessResizeParams, ProcessSignal,
    ProcessSignalParams, ProcessStart, ProcessStartParams, ProcessTerminate,
    ProcessTerminateParams, ServerCapabilities, notification,
};
use jsonrpsee_core::server::{ConnectionId, Extensions, MethodCallback, MethodResponse};
use jsonrpsee_types::error::OVERSIZED_RESPONSE_CODE;
use jsonrpsee_types::{Id, Params};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::methods::{InitExt, Prepared, ReadExt, SessionExt, check_process_id, parse};
use crate::queue::{OutTx, Queued};
use crate::sink::QueueSink;
use crate::{Error, SERVER_NAME, Server};

/// The longest request `id` accepted, as JSON text: the server holds the id while the
/// request is in flight and echoes it in the response.
pub(crate) const MAX_ID_BYTES: usize = 1024;

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
    tx: OutTx,
    /// The transport can carry binary frames (WebSocket), so binary output may be granted.
    binary_frames: bool,
    /// Cancelled when the server wants this connection closed (session takeover) and
    /// when the connection ends; in-flight long polls are then abandoned (nobody is
    /// left to answer).
    close: CancellationToken,
    /// Cancelled when the transport finishes the connection (end of input, server
    /// shutdown): pending long polls answer at once with what they have.
    drain: CancellationToken,
    /// One permit per request in flight (read, not yet answered): `--max-in-flight`.
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
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
    fn attach_pending(&self) {
        let pending = lock(&self.pending_attach).take();
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

impl Message {
    /// Its length in bytes (what it holds of the connection's byte budget).
    pub fn len(&self) -> usize {
        match self {
            Message::Text(text) => text.len(),
            Message::Binary(frame) => frame.len(),
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text of a text message (tests).
    #[cfg(test)]
    pub(crate) fn into_text(self) -> String {
        match self {
            Message::Text(text) => text,
            Message::Binary(_) => panic!("a binary message"),
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text)
    }
}

/// The receiving end of a connection's outbound queue, in the order the messages must
/// be written.
///
/// Taking a message gives the bytes it held back to the connection's byte budget.
#[derive(Debug)]
pub struct Outbound {
    rx: mpsc::Receiver<Queued>,
}

impl Outbound {
    pub(crate) fn new(rx: mpsc::Receiver<Queued>) -> Self {
        Outbound { rx }
    }

    /// The next message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await.map(Queued::into_message)
    }

    /// The next message if one is queued already (for batching writes before a flush).
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok().map(Queued::into_message)
    }

    /// [`Outbound::recv`] for a plain thread (it panics inside the async runtime).
    pub fn blocking_recv(&mut self) -> Option<Message> {
        self.rx.blocking_recv().map(Queued::into_message)
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
                .ok()
                .filter(|i| i.id.as_str().is_none_or(|s| s.len() <= MAX_ID_BYTES))
                .map_or(Id::Null, |i| i.id);
            return Inbound::Invalid(
                id,
                Error::InvalidRequest(format!("not a JSON-RPC request: {e}")),
            );
        }
        Err(e) => return Inbound::Invalid(Id::Null, Error::Parse(e.to_string())),
    };
    if envelope
        .id
        .is_some_and(|raw| raw.get().len() > MAX_ID_BYTES)
    {
        return Inbound::Invalid(
            Id::Null,
            Error::InvalidRequest(format!("`id` is longer than {MAX_ID_BYTES} bytes")),
        );
    }
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
    tx: &OutTx,
    id: Id<'_>,
    response: MethodResponse,
    max: usize,
    room: Option<OwnedSemaphorePermit>,
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
    let sent = match room {
        Some(room) => tx.send_reserved(text, room).await,
        None => tx.send(text).await,
    };
    if sent.is_err() {
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
    /// (`process/write`, `process/closeStdin`, …) reach core in that order, a
    /// `process/start` reserves its `processId` before the next message is handled, and
    /// other methods run in tasks of their own.
    ///
    /// It waits while `--max-in-flight` requests are unanswered and while the outbound
    /// queue is full, so a client that does not read its responses is not read either.
    pub async fn handle(&self, message: &[u8]) {
        let shared = &self.shared;
        // In flight from here until the response is queued. The semaphore is never
        // closed, so this only waits.
        let Ok(permit) = shared.in_flight.clone().acquire_owned().await else {
            return;
        };
        let read_at = Instant::now();
        let (id, method, params) = match classify(message) {
            Inbound::Invalid(id, error) => {
                tracing::debug!(conn = shared.id, %error, "invalid message");
                self.send(error_json(id, &error)).await;
                record("invalid", Some(error.code().code()), read_at);
                return;
            }
            Inbound::Notification(method) => {
                shared.on_notification(&method);
                return;
            }
            Inbound::Request { id, method, params } => (id, method, params),
        };
        let Some((name, callback)) = shared.server.methods().method_with_name(&method) else {
            let error = Error::MethodNotFound(format!("`{}`", clip(&method)));
            self.send(error_json(id, &error)).await;
            record("other", Some(error.code().code()), read_at);
            return;
        };
        let mut extensions = match shared.gate(name) {
            Ok(extensions) => extensions,
            Err(error) => {
                self.send(error_json(id, &error)).await;
                record(name, Some(error.code().code()), read_at);
                return;
            }
        };
        let max = shared.server.config().max_message_bytes;
        let raw = params.map(RawValue::get);
        match callback {
            MethodCallback::Sync(callback) => {
                self.settle_target(name, raw, &extensions).await;
                let response = callback(id.clone(), Params::new(raw), max, extensions);
                let code = response.as_error_code();
                send_response(&shared.tx, id, response, max, None).await;
                record(name, code, read_at);
                if name == Initialize::NAME {
                    shared.attach_pending();
                }
                drop(permit);
            }
            MethodCallback::Async(callback) => {
                // The params are parsed here, on the read loop: a start reserves its id in
                // receipt order, and a task holds typed params, not the request's text.
                let (room, parsed) = match self.prepare(name, raw, &mut extensions) {
                    Ok(prepared) => prepared,
                    Err(error) => {
                        self.send(error_json(id, &error)).await;
                        record(name, Some(error.code().code()), read_at);
                        return;
                    }
                };
                let id = id.into_owned();
                let params = if parsed {
                    Params::new(None)
                } else {
                    Params::new(raw).into_owned()
                };
                let call = callback(
                    id.clone(),
                    params,
                    ConnectionId(shared.id as usize),
                    max,
                    extensions,
                );
                let tx = shared.tx.clone();
                let close = shared.close.clone();
                // A long poll is abandoned with its connection (nobody is left to
                // answer); other calls finish (a start must not be abandoned half way).
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
                    let room = room.and_then(|r| lock(&r).take());
                    let code = response.as_error_code();
                    send_response(&tx, id, response, max, room).await;
                    record(name, code, read_at);
                    drop(permit);
                });
            }
            MethodCallback::Subscription(_) | MethodCallback::Unsubscription(_) => {
                let error = Error::Internal(format!("`{name}` has an unsupported callback kind"));
                self.send(error_json(id, &error)).await;
            }
        }
    }

    /// Parses the params of `process/start` and `process/read` into their extensions (a
    /// start reserves its `processId` here); other asynchronous methods parse theirs in
    /// their task. Returns the slot where a read leaves the room it reserved in the
    /// outbound queue, and whether the params were parsed here.
    fn prepare(
        &self,
        name: &str,
        raw: Option<&str>,
        ext: &mut Extensions,
    ) -> Result<(Option<RoomSlot>, bool), Error> {
        if name == FsRead::NAME {
            // Parsed in its task; it reserves room for its answer there (see `register_fs`).
            let room = RoomSlot::default();
            ext.insert(ReadExt {
                drain: self.shared.drain.clone(),
                tx: self.shared.tx.clone(),
                room: room.clone(),
            });
            return Ok((Some(room), false));
        }
        if name != ProcessStart::NAME && name != ProcessRead::NAME {
            return Ok((None, false));
        }
        let session = ext
            .get::<SessionExt>()
            .map(|s| s.0.clone())
            .ok_or_else(|| Error::Internal("call dispatched without a session".into()))?;
        if name == ProcessStart::NAME {
            let params: ProcessStartParams = parse(raw)?;
            let reservation = session.reserve(params).map_err(Error::from)?;
            ext.insert(Prepared::new(reservation));
            Ok((None, true))
        } else if name == ProcessRead::NAME {
            let params: ProcessReadParams = parse(raw)?;
            check_process_id(&params.process_id)?;
            ext.insert(Prepared::new(params));
            let room = RoomSlot::default();
            ext.insert(ReadExt {
                drain: self.shared.drain.clone(),
                tx: self.shared.tx.clone(),
                room: room.clone(),
            });
            Ok((Some(room), true))
        } else {
            Ok((None, false))
        }
    }

    /// A call that acts on a process waits, on the read loop, for that process's start
    /// to finish when it is still starting: it sees the process it names. `process/list`
    /// waits for every start of the session.
    async fn settle_target(&self, name: &str, raw: Option<&str>, ext: &Extensions) {
        let Some(session) = ext.get::<SessionExt>().map(|s| s.0.clone()) else {
            return;
        };
        let target = if name == ProcessSignal::NAME {
            parse::<ProcessSignalParams>(raw).ok().map(|p| p.process_id)
        } else if name == ProcessTerminate::NAME {
            parse::<ProcessTerminateParams>(raw)
                .ok()
                .map(|p| p.process_id)
        } else if name == ProcessResize::NAME {
            parse::<ProcessResizeParams>(raw).ok().map(|p| p.process_id)
        } else if name == ProcessList::NAME {
            session.all_settled().await;
            None
        } else {
            None
        };
        if let Some(id) = target {
            session.settled(&id).await;
        }
    }

    /// Answers every request read so far, then returns: pending long polls return at
    /// once with what they have, starts finish. Call it when the input has ended, before
    /// shutting the server down; handle nothing after it.
    pub async fn finish(&self) {
        self.shared.drain.cancel();
        let _ = self
            .shared
            .in_flight
            .acquire_many(self.shared.max_in_flight)
            .await;
    }

    /// Gives up on the output: every message not yet queued is dropped instead of waited
    /// for. For a transport whose writer can no longer make progress during shutdown.
    pub fn abandon_output(&self) {
        self.shared.tx.abandon();
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
        let _ = self.shared.tx.send(text).await;
    }
}

/// Where a `process/read` leaves the room it reserved in the outbound queue before its
/// response was serialized.
pub(crate) type RoomSlot = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

/// Counts an answered request in the metrics (`method` is a protocol name, never the
/// client's text).
fn record(method: &'static str, error: Option<i32>, read_at: Instant) {
    exec_server_metrics::metrics().request(method, error, read_at.elapsed());
}

/// At most 256 bytes of a client-supplied name, for messages.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
