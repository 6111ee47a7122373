//! The remote client: a JSON-RPC connection to exec-server (WebSocket or a stdio child),
//! typed methods, per-process event routing, transport loss, resume and reconnect.
//!
//! One reader task per link reads every message: responses complete their pending call,
//! events go to their process's [`Route`] by `processId` (waiting while a consumer's
//! stream is full, which stops the reading of the socket: backpressure reaches the
//! server). One writer task per link writes requests in order.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use exec_server_protocol::{
    ClientCapabilities, ErrorCode, Initialize, InitializeParams, InitializeResult, Method,
    ProcessClosedNotification, ProcessExitedNotification, ProcessInfo, ProcessList,
    ProcessListParams, ProcessOutputNotification, ProcessRead, ProcessReadParams,
    ProcessReadResult, ProcessStart, ProcessStartParams, decode_output_frame, notification,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::backend::IdGenerator;
use crate::event::{Fetch, Route};
use crate::link::{self, Endpoint, Incoming, Reader, Writer};
use crate::{Error, ProcessEvent, RemoteProcess};

/// How a [`Client`] connects and behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// `clientName` sent in `initialize`.
    pub client_name: String,
    /// Ask for binary output frames on a WebSocket (SPEC section 11); default `true`.
    /// The client uses them when the server grants them, and JSON otherwise.
    pub binary_output: bool,
    /// Send this token as `Authorization: Bearer` (instead of, or besides, `?token=` in the URL).
    pub bearer_token: Option<String>,
    /// Reconnect on its own when a WebSocket drops (off by default).
    pub reconnect: Option<ReconnectPolicy>,
    /// Largest message accepted from the server, in bytes (default 64 MiB).
    pub max_message_bytes: usize,
    /// When a call's answer is held up behind a full event stream for longer than the
    /// call should take, let that stream's queue grow (to 32 MiB; past that its events are
    /// read back from the server's retention, a loss reported as `Truncated`) instead of
    /// waiting. This keeps a consumer that awaits a call while its own stream is full from
    /// deadlocking, at the cost of backpressure for that stream. Default `true`; turn it
    /// off when no stream's consumer ever awaits a call (then a full stream is pure
    /// backpressure, whatever else is in flight).
    pub unblock_stalled_calls: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            client_name: "exec-server-client".to_owned(),
            binary_output: true,
            bearer_token: None,
            reconnect: None,
            max_message_bytes: 64 * 1024 * 1024,
            unblock_stalled_calls: true,
        }
    }
}

impl ConnectOptions {
    /// Sets `clientName`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Whether to ask for binary output frames.
    pub fn binary_output(mut self, on: bool) -> Self {
        self.binary_output = on;
        self
    }

    /// Authenticates with `Authorization: Bearer TOKEN`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// See [`ConnectOptions::unblock_stalled_calls`].
    pub fn unblock_stalled_calls(mut self, on: bool) -> Self {
        self.unblock_stalled_calls = on;
        self
    }

    /// Reconnects automatically with this policy.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }
}

/// How automatic reconnection retries: exponential backoff from `initial_delay` up to
/// `max_delay`, giving up after `give_up_after` (a server forgets a detached session
/// after its TTL, 30 s by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Delay before the second attempt (the first is immediate).
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// Stop trying after this long.
    pub give_up_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            give_up_after: Duration::from_secs(30),
        }
    }
}

impl ReconnectPolicy {
    /// Gives up after `after`.
    pub fn give_up_after(mut self, after: Duration) -> Self {
        self.give_up_after = after;
        self
    }
}

/// A call waiting for its response.
struct Pending {
    /// When the call counts as stalled (its response overdue).
    overdue_at: tokio::time::Instant,
    /// The length of the request's text, to tell which call a server refused as too large.
    size: usize,
    waiter: oneshot::Sender<Result<Box<RawValue>, Error>>,
}

/// Pending calls by request id.
type PendingMap = HashMap<u64, Pending>;

/// How long after its expected answer a call counts as held up.
const STALL_GRACE: Duration = Duration::from_millis(200);

/// One live transport link.
struct Link {
    generation: u64,
    out: mpsc::Sender<String>,
    /// `None` once the link is down: calls fail at once.
    pending: Mutex<Option<PendingMap>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Link {
    fn pending(&self) -> MutexGuard<'_, Option<PendingMap>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail_all(&self, reason: &str) {
        let pending = self.pending().take();
        for (_, call) in pending.into_iter().flatten() {
            let _ = call
                .waiter
                .send(Err(Error::Disconnected(reason.to_owned())));
        }
    }

    /// Whether a call's response is overdue (it may be behind a full event stream).
    fn call_overdue(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.pending()
            .as_ref()
            .is_some_and(|p| p.values().any(|call| now > call.overdue_at))
    }

    fn abort(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

enum Slot {
    Up(Arc<Link>),
    /// Down, with the reason; `reconnecting` while the automatic reconnect runs.
    Down {
        reason: String,
        reconnecting: bool,
    },
    Closed,
}

/// A failed call, and whether its request may have reached the server.
pub(crate) struct CallFailure {
    pub(crate) error: Error,
    pub(crate) maybe_sent: bool,
}

impl From<CallFailure> for Error {
    fn from(f: CallFailure) -> Self {
        f.error
    }
}

/// State shared by the client handles, its link tasks and its routes.
pub(crate) struct Core {
    endpoint: Endpoint,
    options: ConnectOptions,
    slot: Mutex<Slot>,
    /// Bumped whenever the slot changes, for calls waiting on a reconnect.
    changed: watch::Sender<u64>,
    routes: Mutex<HashMap<String, Arc<Route>>>,
    session_id: Mutex<String>,
    binary: AtomicBool,
    next_request: AtomicU64,
    next_generation: AtomicU64,
    resume_lock: tokio::sync::Mutex<()>,
    child: Mutex<Option<Child>>,
    pub(crate) ids: IdGenerator,
    me: Weak<Core>,
}

#[derive(Serialize)]
struct Request<'a, P> {
    jsonrpc: &'static str,
    id: u64,
    method: &'static str,
    params: &'a P,
}

#[derive(Serialize)]
struct Notify<'a, P> {
    jsonrpc: &'static str,
    method: &'static str,
    params: &'a P,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: i32,
    message: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

/// The members of an incoming message this client looks at.
#[derive(Deserialize)]
struct InMessage<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Core {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        lock(&self.slot)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn routes(&self) -> MutexGuard<'_, HashMap<String, Arc<Route>>> {
        lock(&self.routes)
    }

    pub(crate) fn fetcher(&self) -> Arc<dyn Fetch> {
        Arc::new(RemoteFetch(self.me.clone()))
    }

    fn reconnects(&self) -> bool {
        self.options.reconnect.is_some() && self.endpoint.is_ws()
    }

    fn current_link(&self) -> Result<Arc<Link>, Error> {
        match &*self.slot() {
            Slot::Up(link) => Ok(link.clone()),
            Slot::Down { reason, .. } => Err(Error::Disconnected(reason.clone())),
            Slot::Closed => Err(Error::Closed),
        }
    }

    /// One request on the current link.
    pub(crate) async fn call<M: Method>(
        &self,
        params: &M::Params,
        patience: Duration,
    ) -> Result<M::Result, CallFailure> {
        let link = self.current_link().map_err(|error| CallFailure {
            error,
            maybe_sent: false,
        })?;
        call_on::<M>(self, &link, params, patience).await
    }

    /// [`Core::call`], waiting out a reconnect and trying again when the request cannot have
    /// reached the server, or when `idempotent` says a repeat is harmless.
    pub(crate) async fn call_retrying<M: Method>(
        &self,
        params: &M::Params,
        idempotent: bool,
        patience: Duration,
    ) -> Result<M::Result, Error> {
        loop {
            match self.call::<M>(params, patience).await {
                Err(CallFailure {
                    error: Error::Disconnected(reason),
                    maybe_sent,
                }) if self.reconnects() && (idempotent || !maybe_sent) => {
                    self.wait_for_link(reason).await?;
                }
                other => return other.map_err(Error::from),
            }
        }
    }

    /// Waits until a link is up again, or fails once reconnecting stopped.
    async fn wait_for_link(&self, mut reason: String) -> Result<(), Error> {
        let mut changed = self.changed.subscribe();
        loop {
            match &*self.slot() {
                Slot::Up(_) => return Ok(()),
                Slot::Closed => return Err(Error::Closed),
                Slot::Down {
                    reason: r,
                    reconnecting,
                } => {
                    reason.clone_from(r);
                    if !reconnecting {
                        return Err(Error::Disconnected(reason));
                    }
                }
            }
            if changed.changed().await.is_err() {
                return Err(Error::Disconnected(reason));
            }
        }
    }

    async fn notify<P: Serialize>(
        &self,
        link: &Link,
        method: &'static str,
        params: &P,
    ) -> Result<(), Error> {
        let text = serde_json::to_string(&Notify {
            jsonrpc: "2.0",
            method,
            params,
        })
        .map_err(|e| Error::Protocol(format!("cannot encode {method}: {e}")))?;
        link.out
            .send(text)
            .await
            .map_err(|_| Error::Disconnected("the connection closed".into()))
    }

    /// Opens a link and runs `initialize` (resuming the session when `resume` is set).
    async fn establish(self: &Arc<Self>, resume: Option<String>) -> Result<(), Error> {
        let (reader, writer, child) =
            link::open(&self.endpoint, self.options.max_message_bytes).await?;
        if let Some(child) = child {
            *lock(&self.child) = Some(child);
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        // Hold every route's pushes from now on: what they missed is read once attached.
        let held: Vec<(Arc<Route>, u64)> = if resume.is_some() {
            self.routes()
                .values()
                .filter_map(|r| r.hold().map(|g| (r.clone(), g)))
                .collect()
        } else {
            Vec::new()
        };
        let link = self.spawn_link(reader, writer, generation);
        let params = InitializeParams {
            client_name: self.options.client_name.clone(),
            client_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            resume_session_id: resume,
            capabilities: Some(ClientCapabilities {
                output_window_bytes: None,
                binary_output: self.options.binary_output && self.endpoint.is_ws(),
            }),
        };
        let init: Result<InitializeResult, Error> =
            call_on::<Initialize>(self, &link, &params, Duration::ZERO)
                .await
                .map_err(Error::from);
        let init = match init {
            Ok(init) => init,
            Err(e) => {
                link.abort();
                link.fail_all("initialize failed");
                return Err(e);
            }
        };
        if let Err(e) = self
            .notify(&link, notification::INITIALIZED, &serde_json::json!({}))
            .await
        {
            link.abort();
            return Err(e);
        }
        *lock(&self.session_id) = init.session_id;
        self.binary
            .store(init.capabilities.binary_output, Ordering::Relaxed);
        {
            let mut slot = self.slot();
            if matches!(*slot, Slot::Closed) {
                link.abort();
                return Err(Error::Closed);
            }
            *slot = Slot::Up(link);
        }
        self.bump();
        for (route, generation) in held {
            route.spawn_held_catch_up(generation);
        }
        Ok(())
    }

    fn spawn_link(self: &Arc<Self>, reader: Reader, writer: Writer, generation: u64) -> Arc<Link> {
        let (out, rx) = mpsc::channel::<String>(256);
        let link = Arc::new(Link {
            generation,
            out,
            pending: Mutex::new(Some(HashMap::new())),
            tasks: Mutex::new(Vec::new()),
        });
        let read = tokio::spawn(read_loop(self.clone(), link.clone(), reader));
        let write = tokio::spawn(write_loop(self.clone(), Arc::downgrade(&link), writer, rx));
        lock(&link.tasks).extend([read.abort_handle(), write.abort_handle()]);
        link
    }

    /// The link of `generation` is gone.
    fn link_lost(self: &Arc<Self>, link: &Link, reason: String) {
        link.fail_all(&reason);
        {
            let mut slot = self.slot();
            match &*slot {
                Slot::Up(current) if current.generation == link.generation => {}
                _ => return,
            }
            *slot = Slot::Down {
                reason: reason.clone(),
                reconnecting: self.reconnects(),
            };
        }
        link.abort();
        self.bump();
        tracing::debug!(%reason, "connection lost");
        if self.reconnects() {
            let core = self.clone();
            tokio::spawn(async move { core.reconnect_loop(reason).await });
        } else {
            for route in self.routes().values() {
                route.disconnected(&reason);
            }
        }
    }

    async fn reconnect_loop(self: Arc<Self>, reason: String) {
        let Some(policy) = self.options.reconnect else {
            return;
        };
        let deadline = tokio::time::Instant::now() + policy.give_up_after;
        let mut delay = policy.initial_delay;
        tracing::debug!(%reason, "reconnecting");
        let last = loop {
            match self.resume_inner().await {
                Ok(()) | Err(Error::Closed) => return,
                Err(e) if e.code() == Some(ErrorCode::SessionNotFound) => break e.to_string(),
                Err(e) => {
                    if tokio::time::Instant::now() + delay > deadline {
                        break e.to_string();
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(policy.max_delay);
        };
        let reason = format!("reconnecting failed: {last}");
        {
            let mut slot = self.slot();
            if let Slot::Down { .. } = &*slot {
                *slot = Slot::Down {
                    reason: reason.clone(),
                    reconnecting: false,
                };
            } else {
                return;
            }
        }
        self.bump();
        for route in self.routes().values() {
            route.end(&reason);
        }
    }

    async fn resume_inner(self: &Arc<Self>) -> Result<(), Error> {
        let _one = self.resume_lock.lock().await;
        match &*self.slot() {
            Slot::Up(_) => return Ok(()),
            Slot::Closed => return Err(Error::Closed),
            Slot::Down { .. } => {}
        }
        if !self.endpoint.is_ws() {
            return Err(Error::Unsupported(
                "a stdio session ends with its server; only WebSocket sessions can be resumed"
                    .into(),
            ));
        }
        let session = lock(&self.session_id).clone();
        self.establish(Some(session)).await
    }

    /// Delivers an event to its process's route.
    async fn route_event(&self, link: &Link, process_id: &str, event: ProcessEvent) {
        let route = self.routes().get(process_id).cloned();
        let Some(route) = route else {
            tracing::trace!(process_id, "event of a process nobody listens to");
            return;
        };
        let unblock = self.options.unblock_stalled_calls;
        let stalled = || unblock && link.call_overdue();
        route.push(event, &stalled).await;
        if route.finished() {
            let mut routes = self.routes();
            if routes
                .get(process_id)
                .is_some_and(|r| Arc::ptr_eq(r, &route))
            {
                routes.remove(process_id);
            }
        }
    }

    async fn handle(&self, link: &Link, incoming: Incoming) -> Result<(), String> {
        match incoming {
            Incoming::Binary(frame) => {
                let decoded = decode_output_frame(&frame).map_err(|e| e.to_string())?;
                let start = frame.len() - decoded.chunk.len();
                let event = ProcessEvent::Output {
                    seq: decoded.seq,
                    stream: decoded.stream,
                    chunk: frame.slice(start..),
                };
                let process_id = decoded.process_id.to_owned();
                self.route_event(link, &process_id, event).await;
                Ok(())
            }
            Incoming::Json(text) => self.handle_json(link, &text).await,
        }
    }

    async fn handle_json(&self, link: &Link, text: &[u8]) -> Result<(), String> {
        let message: InMessage<'_> =
            serde_json::from_slice(text).map_err(|e| format!("unreadable message: {e}"))?;
        if let Some(method) = message.method.as_deref() {
            let params = message.params.map_or("{}", RawValue::get);
            let parse_error = |e: serde_json::Error| format!("bad {method} params: {e}");
            match method {
                notification::PROCESS_OUTPUT => {
                    let n: ProcessOutputNotification =
                        serde_json::from_str(params).map_err(parse_error)?;
                    let event = ProcessEvent::Output {
                        seq: n.seq,
                        stream: n.stream,
                        chunk: Bytes::from_owner(n.chunk.shared().clone()),
                    };
                    self.route_event(link, &n.process_id, event).await;
                }
                notification::PROCESS_EXITED => {
                    let n: ProcessExitedNotification =
                        serde_json::from_str(params).map_err(parse_error)?;
                    let event = ProcessEvent::Exited {
                        seq: n.seq,
                        exit_code: n.exit_code,
                        signal: n.signal,
                        timed_out: n.timed_out,
                    };
                    self.route_event(link, &n.process_id, event).await;
                }
                notification::PROCESS_CLOSED => {
                    let n: ProcessClosedNotification =
                        serde_json::from_str(params).map_err(parse_error)?;
                    self.route_event(link, &n.process_id, ProcessEvent::Closed { seq: n.seq })
                        .await;
                }
                other => tracing::debug!(method = other, "ignoring unknown notification"),
            }
            return Ok(());
        }
        let id = message.id.and_then(|raw| raw.get().parse::<u64>().ok());
        let outcome = match (message.result, message.error) {
            (_, Some(e)) => Err(Error::Rpc {
                code: e.code,
                message: e.message,
                data: e.data.map(|d| d.get().to_owned()),
            }),
            (Some(result), None) => Ok(result),
            (None, None) => return Err("a response with neither result nor error".into()),
        };
        let Some(id) = id else {
            // Only errors about unreadable requests have no id.
            match outcome {
                Err(error) if error.code() == Some(ErrorCode::LimitReached) => {
                    // A request over the server's message size limit: the server could
                    // not read its id. Every request over the limit is refused and none
                    // under it is, so the largest call still waiting is one of the
                    // refused (one such error per refused request): it gets the error
                    // instead of waiting forever.
                    let largest = link.pending().as_mut().and_then(|p| {
                        let id = p
                            .iter()
                            .max_by_key(|(_, call)| call.size)
                            .map(|(id, _)| *id)?;
                        p.remove(&id)
                    });
                    if let Some(call) = largest {
                        let _ = call.waiter.send(Err(error));
                    }
                }
                other => tracing::warn!(error = ?other.err(), "server error without a request id"),
            }
            return Ok(());
        };
        let call = link.pending().as_mut().and_then(|p| p.remove(&id));
        if let Some(call) = call {
            let _ = call.waiter.send(outcome);
        }
        Ok(())
    }

    /// Ends everything: the link, the routes, the stdio server (stdin EOF lets it clean up).
    fn shut(&self) -> Option<Child> {
        let old = std::mem::replace(&mut *self.slot(), Slot::Closed);
        if let Slot::Up(link) = old {
            link.fail_all("the client is closed");
            // Dropping the sender ends the writer, which closes the link.
            let tasks: Vec<AbortHandle> = lock(&link.tasks).drain(..).collect();
            if let Some(reader) = tasks.first() {
                reader.abort();
            }
        }
        self.bump();
        let routes: Vec<Arc<Route>> = self.routes().drain().map(|(_, r)| r).collect();
        for route in routes {
            route.end("the client was closed");
        }
        lock(&self.child).take()
    }
}

/// One request on `link`; `patience` is how long the server may legitimately take (a long poll's wait).
async fn call_on<M: Method>(
    core: &Core,
    link: &Link,
    params: &M::Params,
    patience: Duration,
) -> Result<M::Result, CallFailure> {
    let not_sent = |error| CallFailure {
        error,
        maybe_sent: false,
    };
    let id = core.next_request.fetch_add(1, Ordering::Relaxed) + 1;
    let text = serde_json::to_string(&Request {
        jsonrpc: "2.0",
        id,
        method: M::NAME,
        params,
    })
    .map_err(|e| not_sent(Error::Protocol(format!("cannot encode {}: {e}", M::NAME))))?;
    let (tx, rx) = oneshot::channel();
    match link.pending().as_mut() {
        Some(pending) => {
            pending.insert(
                id,
                Pending {
                    overdue_at: tokio::time::Instant::now() + patience + STALL_GRACE,
                    size: text.len(),
                    waiter: tx,
                },
            );
        }
        None => {
            return Err(not_sent(Error::Disconnected(
                "the connection closed".into(),
            )));
        }
    }
    if link.out.send(text).await.is_err() {
        if let Some(p) = link.pending().as_mut() {
            p.remove(&id);
        }
        return Err(not_sent(Error::Disconnected(
            "the connection closed".into(),
        )));
    }
    let raw = match rx.await {
        Ok(Ok(raw)) => raw,
        Ok(Err(error)) => {
            let maybe_sent = error.is_disconnected();
            return Err(CallFailure { error, maybe_sent });
        }
        Err(_) => {
            return Err(CallFailure {
                error: Error::Disconnected("the connection closed".into()),
                maybe_sent: true,
            });
        }
    };
    serde_json::from_str(raw.get()).map_err(|e| CallFailure {
        error: Error::Protocol(format!("bad {} result: {e}", M::NAME)),
        maybe_sent: true,
    })
}

async fn read_loop(core: Arc<Core>, link: Arc<Link>, mut reader: Reader) {
    let reason = loop {
        match reader.next().await {
            Ok(Some(incoming)) => {
                if let Err(e) = core.handle(&link, incoming).await {
                    break e;
                }
            }
            Ok(None) => break "the server closed the connection".to_owned(),
            Err(e) => break e,
        }
    };
    core.link_lost(&link, reason);
}

/// Writes requests in order. Holds the link weakly: dropping the link's sender ends it.
async fn write_loop(
    core: Arc<Core>,
    link: Weak<Link>,
    mut writer: Writer,
    mut rx: mpsc::Receiver<String>,
) {
    let result: Result<(), String> = async {
        while let Some(text) = rx.recv().await {
            writer.feed(text).await?;
            while let Ok(text) = rx.try_recv() {
                writer.feed(text).await?;
            }
            writer.flush().await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => writer.close().await,
        Err(e) => {
            if let Some(link) = link.upgrade() {
                core.link_lost(&link, e);
            }
        }
    }
}

/// Catch-up reads for routes.
struct RemoteFetch(Weak<Core>);

#[async_trait::async_trait]
impl Fetch for RemoteFetch {
    async fn fetch(
        &self,
        process_id: &str,
        after_seq: u64,
        max_bytes: Option<u64>,
    ) -> Result<ProcessReadResult, Error> {
        let core = self.0.upgrade().ok_or(Error::Closed)?;
        let params = ProcessReadParams {
            process_id: process_id.to_owned(),
            after_seq,
            max_bytes,
            wait_ms: 0,
        };
        core.call::<ProcessRead>(&params, Duration::ZERO)
            .await
            .map_err(Error::from)
    }
}

/// A connection to an exec-server: typed methods for every `process/*` call, process
/// handles with lossless event streams, resume and optional automatic reconnect.
///
/// Cheap to clone; the connection closes when the last clone and the last process
/// handle are gone (or at [`Client::close`]).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    core: Arc<Core>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // The stdio server sees stdin EOF, terminates its processes and exits; tokio
        // reaps it in the background.
        drop(self.core.shut());
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &self.session_id())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to a WebSocket URL as printed by `exec-server serve` (token included).
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Client, Error> {
        let endpoint = Endpoint::WebSocket {
            url: url.to_owned(),
            bearer: options.bearer_token.clone(),
        };
        Client::open(endpoint, options).await
    }

    /// Starts `program` with `args` (e.g. `exec-server`, `["serve", "--listen", "stdio"]`)
    /// and speaks to it over its stdin and stdout. The child belongs to the client: when
    /// the client is closed or dropped, its stdin ends and it terminates its processes.
    pub async fn spawn<I, S>(
        program: impl Into<PathBuf>,
        args: I,
        options: ConnectOptions,
    ) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let endpoint = Endpoint::Stdio {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        };
        Client::open(endpoint, options).await
    }

    async fn open(endpoint: Endpoint, options: ConnectOptions) -> Result<Client, Error> {
        let core = Arc::new_cyclic(|me| Core {
            endpoint,
            options,
            slot: Mutex::new(Slot::Down {
                reason: "not connected yet".into(),
                reconnecting: false,
            }),
            changed: watch::Sender::new(0),
            routes: Mutex::new(HashMap::new()),
            session_id: Mutex::new(String::new()),
            binary: AtomicBool::new(false),
            next_request: AtomicU64::new(0),
            next_generation: AtomicU64::new(0),
            resume_lock: tokio::sync::Mutex::new(()),
            child: Mutex::new(None),
            ids: IdGenerator::new(id_prefix()),
            me: me.clone(),
        });
        let client = Client {
            inner: Arc::new(ClientInner { core }),
        };
        client.inner.core.establish(None).await?;
        Ok(client)
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    /// The session id (the one to resume).
    pub fn session_id(&self) -> String {
        lock(&self.inner.core.session_id).clone()
    }

    /// Whether this connection receives output as binary frames (SPEC section 11).
    pub fn binary_output(&self) -> bool {
        self.inner.core.binary.load(Ordering::Relaxed)
    }

    /// Whether a link is up.
    pub fn is_connected(&self) -> bool {
        matches!(*self.inner.core.slot(), Slot::Up(_))
    }

    /// After a transport loss: connects again, re-attaches the session and continues
    /// every process's event stream from the last seq it delivered (reading what was
    /// missed with `process/read`; a loss to retention shows as
    /// [`ProcessEvent::Truncated`]). Does nothing while connected.
    pub async fn resume(&self) -> Result<(), Error> {
        self.inner.core.resume_inner().await
    }

    /// Closes the connection. A stdio server is given its stdin EOF and awaited (it
    /// terminates its processes first); every event stream ends.
    pub async fn close(self) {
        let child = self.inner.core.shut();
        if let Some(mut child) = child {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    /// `process/start`: starts a process and returns its handle, whose events are
    /// buffered from the first one on (take them with [`crate::ExecProcess::events`]).
    pub async fn process_start(&self, params: ProcessStartParams) -> Result<RemoteProcess, Error> {
        RemoteProcess::start(self.clone(), params).await
    }

    /// `process/read` by `processId`. On a lost transport the result's `failure` says so.
    pub async fn process_read(
        &self,
        params: ProcessReadParams,
    ) -> Result<ProcessReadResult, Error> {
        let after = params.after_seq;
        let patience = Duration::from_millis(params.wait_ms.min(exec_server_protocol::MAX_WAIT_MS));
        match self
            .inner
            .core
            .call_retrying::<ProcessRead>(&params, true, patience)
            .await
        {
            Err(Error::Disconnected(reason)) => Ok(ProcessReadResult {
                chunks: Vec::new(),
                next_seq: after + 1,
                exited: false,
                exit_code: None,
                signal: None,
                closed: false,
                timed_out: false,
                truncated: false,
                evicted_bytes: 0,
                failure: Some(format!("connection lost: {reason}")),
            }),
            other => other,
        }
    }

    /// `process/write` by `processId`.
    pub async fn process_write(
        &self,
        params: exec_server_protocol::ProcessWriteParams,
    ) -> Result<exec_server_protocol::ProcessWriteResult, Error> {
        let idempotent = params.write_id.is_some();
        self.inner
            .core
            .call_retrying::<exec_server_protocol::ProcessWrite>(
                &params,
                idempotent,
                Duration::ZERO,
            )
            .await
    }

    /// `process/closeStdin` by `processId`.
    pub async fn process_close_stdin(
        &self,
        params: exec_server_protocol::ProcessCloseStdinParams,
    ) -> Result<exec_server_protocol::ProcessCloseStdinResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::ProcessCloseStdin>(
                &params,
                false,
                Duration::ZERO,
            )
            .await
    }

    /// `process/signal` by `processId`.
    pub async fn process_signal(
        &self,
        params: exec_server_protocol::ProcessSignalParams,
    ) -> Result<exec_server_protocol::ProcessSignalResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::ProcessSignal>(&params, false, Duration::ZERO)
            .await
    }

    /// `process/resize` by `processId`.
    pub async fn process_resize(
        &self,
        params: exec_server_protocol::ProcessResizeParams,
    ) -> Result<exec_server_protocol::ProcessResizeResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::ProcessResize>(&params, true, Duration::ZERO)
            .await
    }

    /// `process/terminate` by `processId`.
    pub async fn process_terminate(
        &self,
        params: exec_server_protocol::ProcessTerminateParams,
    ) -> Result<exec_server_protocol::ProcessTerminateResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::ProcessTerminate>(&params, false, Duration::ZERO)
            .await
    }

    /// `process/list`.
    pub async fn process_list(&self) -> Result<Vec<ProcessInfo>, Error> {
        let result = self
            .inner
            .core
            .call_retrying::<ProcessList>(&ProcessListParams::default(), true, Duration::ZERO)
            .await?;
        Ok(result.processes)
    }

    /// `fs/read`: a range of a file's bytes (at most 4 MiB per call). Failures are -32020 with the errno name in the error's `data`.
    pub async fn fs_read(
        &self,
        params: exec_server_protocol::FsReadParams,
    ) -> Result<exec_server_protocol::FsReadResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::FsRead>(&params, true, Duration::ZERO)
            .await
    }

    /// `fs/write`: write (or append to, or atomically replace) a file. Failures are -32020 with the errno name in the error's `data`.
    pub async fn fs_write(
        &self,
        params: exec_server_protocol::FsWriteParams,
    ) -> Result<exec_server_protocol::FsWriteResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::FsWrite>(&params, false, Duration::ZERO)
            .await
    }

    /// `fs/stat`: a path's kind, size, mode and mtime. Failures are -32020 with the errno name in the error's `data`.
    pub async fn fs_stat(
        &self,
        params: exec_server_protocol::FsStatParams,
    ) -> Result<exec_server_protocol::FsStatResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::FsStat>(&params, true, Duration::ZERO)
            .await
    }

    /// `fs/list`: a directory's entries, sorted by name. Failures are -32020 with the errno name in the error's `data`.
    pub async fn fs_list(
        &self,
        params: exec_server_protocol::FsListParams,
    ) -> Result<exec_server_protocol::FsListResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::FsList>(&params, true, Duration::ZERO)
            .await
    }

    /// `fs/mkdir`: create a directory (with `parents`, like `mkdir -p`). Failures are -32020 with the errno name in the error's `data`.
    pub async fn fs_mkdir(
        &self,
        params: exec_server_protocol::FsMkdirParams,
    ) -> Result<exec_server_protocol::FsMkdirResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::FsMkdir>(&params, false, Duration::ZERO)
            .await
    }

    /// `fs/remove`: remove a file or (with `recursive`) a directory tree. Failures are -32020 with the errno name in the error's `data`.
    pub async fn fs_remove(
        &self,
        params: exec_server_protocol::FsRemoveParams,
    ) -> Result<exec_server_protocol::FsRemoveResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::FsRemove>(&params, false, Duration::ZERO)
            .await
    }

    /// `fs/rename`: rename a path. Failures are -32020 with the errno name in the error's `data`.
    pub async fn fs_rename(
        &self,
        params: exec_server_protocol::FsRenameParams,
    ) -> Result<exec_server_protocol::FsRenameResult, Error> {
        self.inner
            .core
            .call_retrying::<exec_server_protocol::FsRename>(&params, false, Duration::ZERO)
            .await
    }

    /// Registers a route for `process_id` (refusing one that is still in use), runs
    /// `process/start`, and forgets the route again if the start fails.
    pub(crate) async fn start_routed(
        &self,
        params: &ProcessStartParams,
    ) -> Result<(Arc<Route>, exec_server_protocol::ProcessStartResult), Error> {
        let core = &self.inner.core;
        let id = params.process_id.clone();
        let route = Route::new(id.clone(), core.fetcher());
        {
            let mut routes = core.routes();
            if routes.get(&id).is_some_and(|r| !r.finished()) {
                return Err(Error::rpc(
                    ErrorCode::InvalidRequest,
                    format!("processId {id:?} is already in use by this client"),
                ));
            }
            routes.insert(id.clone(), route.clone());
        }
        match core.call::<ProcessStart>(params, Duration::ZERO).await {
            Ok(result) => Ok((route, result)),
            Err(failure) => {
                let mut routes = core.routes();
                if routes.get(&id).is_some_and(|r| Arc::ptr_eq(r, &route)) {
                    routes.remove(&id);
                }
                Err(failure.error)
            }
        }
    }
}

/// A prefix for generated process ids that differs between client instances.
fn id_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("p{:x}{:05x}-", std::process::id() & 0xfff, nanos & 0xfffff)
}
