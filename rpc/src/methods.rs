//! The method table of the server as a jsonrpsee `RpcModule`, one typed handler per protocol method.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use exec_server_core::{
    DEFAULT_FS_CONCURRENCY, Files, FsConfig, PendingWrite, Session, StartReservation, lock,
};
use exec_server_protocol::{
    FS_READ_MAX_BYTES, FsChmod, FsList, FsMkdir, FsRead, FsReadParams, FsRemove, FsRename, FsStat,
    FsWrite, Initialize, MAX_PROCESS_ID_BYTES, Method, ProcessCloseStdin, ProcessList, ProcessRead,
    ProcessReadParams, ProcessReadResult, ProcessRelease, ProcessResize, ProcessSignal,
    ProcessStart, ProcessTerminate, ProcessWrite, ProcessWriteResult, SessionClose,
};
use jsonrpsee_core::server::{Extensions, Methods, ResponsePayload, RpcModule};
use jsonrpsee_types::ErrorObjectOwned;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, ConnectionShared, Outbound, RoomSlot};
use crate::queue::OutTx;
use crate::registry::Registry;
use crate::{Error, RpcConfig};

/// Put into a call's extensions once the handshake is complete: the connection's session.
#[derive(Clone)]
pub(crate) struct SessionExt(pub(crate) Arc<Session>);

/// Put into the extensions of an `initialize` call: the connection being initialized.
#[derive(Clone)]
pub(crate) struct InitExt(pub(crate) Arc<ConnectionShared>);

/// Put into the extensions of a `session/close` call by the read loop.
#[derive(Clone)]
pub(crate) struct CloseExt {
    /// The connection whose session closes.
    pub(crate) conn: Arc<ConnectionShared>,
    /// The first `session/close` of the connection (a later one waits for it).
    pub(crate) first: bool,
}

/// Put into the extensions of an asynchronous call by the read loop: its parsed params
/// (or, for `process/start`, its reservation), taken once by the handler.
pub(crate) struct Prepared<T>(Arc<Mutex<Option<T>>>);

impl<T> Clone for Prepared<T> {
    fn clone(&self) -> Self {
        Prepared(self.0.clone())
    }
}

impl<T> Prepared<T> {
    pub(crate) fn new(value: T) -> Self {
        Prepared(Arc::new(Mutex::new(Some(value))))
    }
}

fn take<T: Send + Sync + 'static>(ext: &Extensions) -> Result<T, Error> {
    ext.get::<Prepared<T>>()
        .and_then(|p| lock(&p.0).take())
        .ok_or_else(|| Error::Internal("call dispatched without its prepared params".into()))
}

/// Put into the extensions of a `process/write` call: cancelled when the connection
/// finishes (a write waiting to be written is answered at once).
#[derive(Clone)]
pub(crate) struct DrainExt(pub(crate) CancellationToken);

/// Put into the extensions of a `process/read` call.
#[derive(Clone)]
pub(crate) struct ReadExt {
    /// Cancelled when the connection finishes: answer now with what there is.
    pub(crate) drain: CancellationToken,
    /// The connection's outbound queue, to reserve room before serializing.
    pub(crate) tx: OutTx,
    /// Where the reserved room is left for the response.
    pub(crate) room: RoomSlot,
}

/// Parses `params` into the method's params type; absent params count as `{}`.
pub(crate) fn parse<T: DeserializeOwned>(params: Option<&str>) -> Result<T, Error> {
    serde_json::from_str(params.unwrap_or("{}")).map_err(|e| Error::InvalidParams(e.to_string()))
}

/// A `processId` longer than any process can have is refused before it is looked up
/// (and echoed in an error).
pub(crate) fn check_process_id(id: &str) -> Result<(), Error> {
    if id.len() > MAX_PROCESS_ID_BYTES {
        return Err(Error::InvalidParams(format!(
            "processId is {} bytes; at most {MAX_PROCESS_ID_BYTES} are allowed",
            id.len()
        )));
    }
    Ok(())
}

/// Params that name a process.
trait Target {
    fn process_id(&self) -> &str;
}

macro_rules! target {
    ($($t:ty),*) => {$(
        impl Target for $t {
            fn process_id(&self) -> &str {
                &self.process_id
            }
        }
    )*};
}
target!(
    exec_server_protocol::ProcessReleaseParams,
    exec_server_protocol::ProcessCloseStdinParams,
    exec_server_protocol::ProcessSignalParams,
    exec_server_protocol::ProcessResizeParams,
    exec_server_protocol::ProcessTerminateParams
);

impl Target for exec_server_protocol::ProcessListParams {
    fn process_id(&self) -> &str {
        ""
    }
}

/// An upper bound of the JSON length of a `process/read` result (its id aside).
fn read_json_bound(result: &ProcessReadResult) -> usize {
    let chunks: usize = result
        .chunks
        .iter()
        .map(|c| c.chunk.len().div_ceil(3) * 4 + 64)
        .sum();
    chunks + 512
}

fn session(ext: &Extensions) -> Result<Arc<Session>, Error> {
    ext.get::<SessionExt>()
        .map(|s| s.0.clone())
        .ok_or_else(|| Error::Internal("call dispatched without a session".into()))
}

/// Registers `M` as a synchronous method: it runs on the connection's read loop,
/// so such calls reach core in the order the requests were received.
fn sync_method<M, F>(module: &mut RpcModule<()>, f: F) -> Result<(), Error>
where
    M: Method,
    M::Params: Target,
    M::Result: Clone,
    F: Fn(&Session, M::Params) -> Result<M::Result, Error> + Send + Sync + 'static,
{
    module
        .register_method(M::NAME, move |params, _, ext| {
            let session = session(ext)?;
            let params: M::Params = parse(params.as_str())?;
            check_process_id(params.process_id())?;
            f(&session, params)
        })
        .map(|_| ())
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Registers `M` as an asynchronous method whose params are parsed in its task: each
/// call runs in its own task, so a long call never delays another request.
fn async_method<M, F, Fut>(module: &mut RpcModule<()>, f: F) -> Result<(), Error>
where
    M: Method,
    M::Result: Clone,
    F: Fn(Arc<Session>, M::Params) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<M::Result, Error>> + Send,
{
    module
        .register_async_method(M::NAME, move |params, _, ext| {
            let f = f.clone();
            async move {
                let session = session(&ext)?;
                f(session, parse(params.as_str())?).await
            }
        })
        .map(|_| ())
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Builds the method table: one entry per method of `exec_server_protocol::visit`.
pub(crate) fn build_methods(config: &RpcConfig) -> Result<Methods, Error> {
    let mut module = RpcModule::new(());
    let max_wait_ms = u64::try_from(config.max_wait.as_millis()).unwrap_or(u64::MAX);

    module
        .register_method(Initialize::NAME, |params, _, ext| {
            let conn = ext.get::<InitExt>().ok_or_else(|| {
                Error::Internal("initialize dispatched without its connection".into())
            })?;
            conn.0.initialize(parse(params.as_str()))
        })
        .map_err(|e| Error::Internal(e.to_string()))?;

    // process/start: the response carries a completion notifier; the `Started` gate of
    // core is dropped only once the response is queued ahead of any notification.
    // The read loop reserved the id (`Session::reserve`); the task spawns.
    module
        .register_async_method(ProcessStart::NAME, |_, _, ext| async move {
            let started = match take::<StartReservation>(&ext) {
                Ok(reservation) => reservation.spawn().await.map_err(Error::from),
                Err(e) => Err(e),
            };
            match started {
                Ok(started) => {
                    let (payload, written) =
                        ResponsePayload::success(started.result.clone()).notify_on_completion();
                    tokio::spawn(async move {
                        // Resolves when the response was queued, or when the connection is gone.
                        let _ = written.await;
                        started.release();
                    });
                    payload
                }
                Err(e) => ResponsePayload::error(ErrorObjectOwned::from(e)),
            }
        })
        .map_err(|e| Error::Internal(e.to_string()))?;

    // The read loop parsed the params. A finishing connection answers a pending long
    // poll at once; room for the response is reserved in the outbound queue before it is
    // serialized, so waiting responses hold typed results (sharing the retained chunks),
    // not their JSON.
    module
        .register_async_method(ProcessRead::NAME, move |_, _, ext| async move {
            let session = session(&ext)?;
            let mut params: ProcessReadParams = take(&ext)?;
            params.wait_ms = params.wait_ms.min(max_wait_ms);
            let read = ext
                .get::<ReadExt>()
                .cloned()
                .ok_or_else(|| Error::Internal("read dispatched without its queue".into()))?;
            let now = ProcessReadParams {
                wait_ms: 0,
                ..params.clone()
            };
            let result = tokio::select! {
                result = session.read(params) => result,
                () = read.drain.cancelled() => session.read(now).await,
            }
            .map_err(Error::from)?;
            if let Ok(room) = read.tx.reserve(read_json_bound(&result)).await {
                *lock(&read.room) = Some(room);
            }
            Ok::<ProcessReadResult, Error>(result)
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
    // The read loop parsed the params and queued the bytes (`Session::write_then`), in
    // receipt order; only the answer waits here: at once, or with `waitWritten` once the
    // chunk is written. A finishing connection answers a waiting write at once.
    module
        .register_async_method(ProcessWrite::NAME, |_, _, ext| async move {
            let pending: PendingWrite = take(&ext)?;
            let drain = ext
                .get::<DrainExt>()
                .map(|d| d.0.clone())
                .ok_or_else(|| Error::Internal("write dispatched without its drain".into()))?;
            Ok::<ProcessWriteResult, Error>(pending.result_unless(drain.cancelled_owned()).await)
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
    sync_method::<ProcessRelease, _>(&mut module, |session, p| {
        session.release(p).map_err(Error::from)
    })?;
    // session/close: parsed and begun on the read loop (see `Connection::prepare`). The
    // transport learns that the session is closed once the response is queued.
    module
        .register_async_method(SessionClose::NAME, |_, _, ext| async move {
            let Some(close) = ext.get::<CloseExt>().cloned() else {
                return ResponsePayload::error(ErrorObjectOwned::from(Error::Internal(
                    "session/close dispatched without its connection".into(),
                )));
            };
            let result = close.conn.close_session(close.first).await;
            let conn = close.conn;
            match result {
                Ok(result) if close.first => {
                    let (payload, written) =
                        ResponsePayload::success(result).notify_on_completion();
                    tokio::spawn(async move {
                        // Resolves when the response was queued, or when the connection is gone.
                        let _ = written.await;
                        conn.close_answered();
                    });
                    payload
                }
                Ok(result) => ResponsePayload::success(result),
                Err(e) => {
                    if close.first {
                        conn.close_answered();
                    }
                    ResponsePayload::error(ErrorObjectOwned::from(e))
                }
            }
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
    sync_method::<ProcessCloseStdin, _>(&mut module, |session, p| Ok(session.close_stdin(p)))?;
    sync_method::<ProcessSignal, _>(&mut module, |session, p| Ok(session.signal(p)))?;
    sync_method::<ProcessResize, _>(&mut module, |session, p| {
        session.resize(p).map_err(Error::from)
    })?;
    sync_method::<ProcessTerminate, _>(&mut module, |session, p| Ok(session.terminate(p)))?;
    sync_method::<ProcessList, _>(&mut module, |session, _p| Ok(session.list()))?;

    register_fs(&mut module, config)?;
    Ok(module.into())
}

/// Registers the `fs/*` methods (SPEC section 12). They need a session like `process/*`
/// but act on the server's file system with its own permissions; each call runs in a task
/// of its own and its file I/O on the blocking pool, a bounded number at a time (per server).
fn register_fs(module: &mut RpcModule<()>, config: &RpcConfig) -> Result<(), Error> {
    let files = Files::new(FsConfig {
        max_concurrent: DEFAULT_FS_CONCURRENCY,
        max_message_bytes: config.max_message_bytes,
    });
    macro_rules! fs_method {
        ($method:ty, $call:ident) => {{
            let files = files.clone();
            async_method::<$method, _, _>(module, move |_session, p| {
                let files = files.clone();
                async move { files.$call(p).await.map_err(Error::from) }
            })?;
        }};
    }
    // Like `process/read`: room in the outbound queue for the largest answer is reserved
    // before the file is read, so reads whose answers the client does not take wait
    // instead of each holding its data.
    {
        let files = files.clone();
        module
            .register_async_method(FsRead::NAME, move |params, _, ext| {
                let files = files.clone();
                async move {
                    let p: FsReadParams = parse(params.as_str())?;
                    let read = ext.get::<ReadExt>().cloned().ok_or_else(|| {
                        Error::Internal("fs/read dispatched without its queue".into())
                    })?;
                    // As much as the file now holds past the offset, up to the read's
                    // limit: a file that grew by the time it is read takes the rest of its
                    // room when its answer is queued.
                    let size = tokio::fs::metadata(&p.path)
                        .await
                        .map(|m| m.len())
                        .unwrap_or(0);
                    let most = size
                        .saturating_sub(p.offset.unwrap_or(0))
                        .min(p.max_bytes.unwrap_or(FS_READ_MAX_BYTES))
                        .min(FS_READ_MAX_BYTES) as usize;
                    if let Ok(room) = read.tx.reserve(most.div_ceil(3) * 4 + 512).await {
                        *lock(&read.room) = Some(room);
                    }
                    files.read(p).await.map_err(Error::from)
                }
            })
            .map_err(|e| Error::Internal(e.to_string()))?;
    }
    fs_method!(FsWrite, write);
    fs_method!(FsStat, stat);
    fs_method!(FsList, list);
    fs_method!(FsMkdir, mkdir);
    fs_method!(FsRemove, remove);
    fs_method!(FsRename, rename);
    fs_method!(FsChmod, chmod);
    Ok(())
}

/// The dispatch of one server: its method table, its sessions and its configuration.
pub struct Server {
    methods: Methods,
    registry: Arc<Registry>,
    config: RpcConfig,
    next_connection: AtomicU64,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("sessions", &self.registry.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with no session yet.
    pub fn new(config: RpcConfig) -> Result<Arc<Server>, Error> {
        Ok(Arc::new(Server {
            methods: build_methods(&config)?,
            registry: Registry::new(config.session.clone(), config.session_ttl),
            config,
            next_connection: AtomicU64::new(1),
        }))
    }

    /// The configuration this server was built with.
    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    /// The names of every method the dispatch registers.
    pub fn method_names(&self) -> Vec<&'static str> {
        self.methods.method_names().collect()
    }

    /// The number of live sessions (attached or detached).
    pub fn session_count(&self) -> usize {
        self.registry.len()
    }

    /// The number of live sessions attached to a connection, and of detached ones.
    pub fn session_states(&self) -> (usize, usize) {
        self.registry.states()
    }

    /// Whether the server has begun shutting down (it then refuses new sessions).
    pub fn is_shutting_down(&self) -> bool {
        self.registry.is_shutting_down()
    }

    /// Opens a connection: the transport feeds it inbound messages and writes out what
    /// its [`Outbound`] queue yields. `binary_frames`: the transport can send binary
    /// frames besides text (WebSocket), so a client that asks for binary output
    /// (SPEC section 11) gets it; over stdio it is `false`.
    pub fn connect(self: &Arc<Self>, binary_frames: bool) -> (Connection, Outbound) {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = OutTx::new(self.config.outbound_queue, self.config.outbound_queue_bytes);
        let shared = ConnectionShared::new(id, self.clone(), tx, binary_frames);
        (Connection::new(shared), Outbound::new(rx))
    }

    /// Refuses new sessions and shuts every session down: every process is terminated
    /// and every child reaped.
    pub async fn shutdown(&self) {
        self.registry.shutdown().await;
    }

    pub(crate) fn methods(&self) -> &Methods {
        &self.methods
    }

    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn dispatch_registers_exactly_the_protocol_methods() {
        let methods = build_methods(&RpcConfig::default()).unwrap();
        let registered: BTreeSet<&str> = methods.method_names().collect();
        let table: BTreeSet<&str> = exec_server_protocol::method_names().into_iter().collect();
        assert_eq!(registered, table);
        assert_eq!(registered.len(), exec_server_protocol::method_names().len());
    }
}
