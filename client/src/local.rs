//! [`LocalBackend`]: the backend trait on an in-process `exec_server_core::Session` (feature `local`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use exec_server_core::{Event, EventSink, Files, FsConfig, Session, SessionConfig, SinkClosed};
use exec_server_protocol::{
    Base64Bytes, FsChmodParams, FsEntry, FsListParams, FsMkdirParams, FsReadParams, FsReadResult,
    FsRemoveParams, FsRenameParams, FsStatParams, FsStatResult, ProcessCloseStdinParams,
    ProcessInfo, ProcessReadParams, ProcessReadResult, ProcessResizeParams, ProcessSignalParams,
    ProcessTerminateParams, ProcessWriteParams, Signal, TerminalSize, WriteStatus,
};

use crate::backend::IdGenerator;
use crate::event::{Fetch, Route};
use crate::{
    Error, EventStream, ExecBackend, ExecFiles, ExecProcess, ProcessEvent, ReadOptions,
    StartOptions, WriteOptions,
};

type Routes = Mutex<HashMap<String, Arc<Route>>>;

fn lock(routes: &Routes) -> MutexGuard<'_, HashMap<String, Arc<Route>>> {
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`ExecBackend`] that runs processes in this process, on exec-server's own core: the
/// same semantics as a server (process groups, ptys, seq, retention, lossless events)
/// without a connection. Its processes are killed when the backend and every handle are
/// dropped; [`LocalBackend::shutdown`] terminates and reaps them gracefully.
#[derive(Clone)]
pub struct LocalBackend {
    inner: Arc<LocalInner>,
}

struct LocalInner {
    session: Arc<Session>,
    files: Files,
    routes: Arc<Routes>,
    ids: IdGenerator,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend").finish_non_exhaustive()
    }
}

impl LocalBackend {
    /// A backend with the server's default limits. Call it inside a tokio runtime.
    pub fn new() -> Self {
        LocalBackend::with_config(SessionConfig::default())
    }

    /// A backend with these limits. Call it inside a tokio runtime.
    pub fn with_config(config: SessionConfig) -> Self {
        let session = Session::new(config);
        let routes: Arc<Routes> = Arc::new(Mutex::new(HashMap::new()));
        session.attach(Arc::new(RoutingSink {
            routes: Arc::downgrade(&routes),
        }));
        LocalBackend {
            inner: Arc::new(LocalInner {
                session,
                files: Files::new(FsConfig::default()),
                routes,
                ids: IdGenerator::new("local-"),
            }),
        }
    }

    /// Terminates every process (SIGTERM, SIGKILL after the default grace) and waits until
    /// each is reaped.
    pub async fn shutdown(&self) {
        self.inner.session.shutdown().await;
    }
}

impl Default for LocalBackend {
    fn default() -> Self {
        LocalBackend::new()
    }
}

/// Delivers core's events to the routes by `processId`.
struct RoutingSink {
    routes: Weak<Routes>,
}

#[async_trait::async_trait]
impl EventSink for RoutingSink {
    async fn send(&self, event: Event) -> Result<(), SinkClosed> {
        let Some(routes) = self.routes.upgrade() else {
            return Err(SinkClosed);
        };
        let (process_id, event) = match event {
            Event::Output(n) => (
                n.process_id,
                ProcessEvent::Output {
                    seq: n.seq,
                    stream: n.stream,
                    chunk: Bytes::from_owner(n.chunk.shared().clone()),
                },
            ),
            Event::Exited(n) => (
                n.process_id,
                ProcessEvent::Exited {
                    seq: n.seq,
                    exit_code: n.exit_code,
                    signal: n.signal,
                    timed_out: n.timed_out,
                },
            ),
            Event::Closed(n) => (n.process_id, ProcessEvent::Closed { seq: n.seq }),
        };
        let route = lock(&routes).get(&process_id).cloned();
        if let Some(route) = route {
            route.push(event, &|| false).await;
            if route.finished() {
                let mut map = lock(&routes);
                if map.get(&process_id).is_some_and(|r| Arc::ptr_eq(r, &route)) {
                    map.remove(&process_id);
                }
            }
        }
        Ok(())
    }
}

/// Catch-up reads straight from the session.
struct LocalFetch(Weak<Session>);

#[async_trait::async_trait]
impl Fetch for LocalFetch {
    async fn fetch(
        &self,
        process_id: &str,
        after_seq: u64,
        max_bytes: Option<u64>,
    ) -> Result<ProcessReadResult, Error> {
        let session = self.0.upgrade().ok_or(Error::Closed)?;
        Ok(session
            .read(ProcessReadParams {
                process_id: process_id.to_owned(),
                after_seq,
                max_bytes,
                wait_ms: 0,
            })
            .await?)
    }
}

#[async_trait::async_trait]
impl ExecBackend for LocalBackend {
    async fn start(&self, options: StartOptions) -> Result<Arc<dyn ExecProcess>, Error> {
        let inner = &self.inner;
        let id = options
            .process_id
            .clone()
            .unwrap_or_else(|| inner.ids.next());
        let route = Route::new(
            id.clone(),
            Arc::new(LocalFetch(Arc::downgrade(&inner.session))),
        );
        {
            let mut routes = lock(&inner.routes);
            if routes.get(&id).is_some_and(|r| !r.finished()) {
                return Err(Error::rpc(
                    exec_server_protocol::ErrorCode::InvalidRequest,
                    format!("processId {id:?} is already in use"),
                ));
            }
            routes.insert(id.clone(), route.clone());
        }
        // Events are held by core until `started` is dropped, after the route exists.
        let started = match inner.session.start(options.into_params(id.clone())).await {
            Ok(started) => started,
            Err(e) => {
                let mut routes = lock(&inner.routes);
                if routes.get(&id).is_some_and(|r| Arc::ptr_eq(r, &route)) {
                    routes.remove(&id);
                }
                return Err(e.into());
            }
        };
        let process = LocalProcess {
            backend: self.inner.clone(),
            route,
            id,
            pid: started.result.pid,
        };
        started.release();
        Ok(Arc::new(process))
    }

    async fn list(&self) -> Result<Vec<ProcessInfo>, Error> {
        Ok(self.inner.session.list().processes)
    }

    fn files(&self) -> &dyn ExecFiles {
        self
    }
}

/// This machine's files, through the server's own implementation of `fs/*` (the same
/// checks, errors and limits).
#[async_trait::async_trait]
impl ExecFiles for LocalBackend {
    async fn read(
        &self,
        path: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<FsReadResult, Error> {
        Ok(self
            .inner
            .files
            .read(FsReadParams {
                path: path.to_owned(),
                offset: Some(offset),
                max_bytes,
            })
            .await?)
    }

    async fn write(
        &self,
        path: &str,
        data: Base64Bytes,
        options: WriteOptions,
    ) -> Result<u64, Error> {
        Ok(self
            .inner
            .files
            .write(options.into_params(path, data))
            .await?
            .bytes_written)
    }

    async fn stat(&self, path: &str, follow_symlinks: bool) -> Result<FsStatResult, Error> {
        Ok(self
            .inner
            .files
            .stat(FsStatParams {
                path: path.to_owned(),
                follow_symlinks,
            })
            .await?)
    }

    async fn list(&self, path: &str) -> Result<Vec<FsEntry>, Error> {
        Ok(self
            .inner
            .files
            .list(FsListParams {
                path: path.to_owned(),
            })
            .await?
            .entries)
    }

    async fn mkdir(&self, path: &str, parents: bool, mode: Option<u32>) -> Result<(), Error> {
        self.inner
            .files
            .mkdir(FsMkdirParams {
                path: path.to_owned(),
                parents,
                mode,
            })
            .await?;
        Ok(())
    }

    async fn remove(&self, path: &str, recursive: bool) -> Result<(), Error> {
        self.inner
            .files
            .remove(FsRemoveParams {
                path: path.to_owned(),
                recursive,
            })
            .await?;
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        self.inner
            .files
            .rename(FsRenameParams {
                from: from.to_owned(),
                to: to.to_owned(),
            })
            .await?;
        Ok(())
    }

    async fn chmod(&self, path: &str, mode: u32) -> Result<(), Error> {
        self.inner
            .files
            .chmod(FsChmodParams {
                path: path.to_owned(),
                mode,
            })
            .await?;
        Ok(())
    }
}

/// A process of a [`LocalBackend`].
struct LocalProcess {
    backend: Arc<LocalInner>,
    route: Arc<Route>,
    id: String,
    pid: u32,
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        self.route.handle_dropped();
    }
}

#[async_trait::async_trait]
impl ExecProcess for LocalProcess {
    fn id(&self) -> &str {
        &self.id
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn events(&self) -> Result<EventStream, Error> {
        self.route.take()
    }

    async fn read(&self, options: ReadOptions) -> Result<ProcessReadResult, Error> {
        Ok(self
            .backend
            .session
            .read(ProcessReadParams {
                process_id: self.id.clone(),
                after_seq: options.after_seq,
                max_bytes: options.max_bytes,
                wait_ms: u64::try_from(options.wait.as_millis()).unwrap_or(u64::MAX),
            })
            .await?)
    }

    async fn write(&self, data: &[u8]) -> Result<WriteStatus, Error> {
        Ok(self
            .backend
            .session
            .write(ProcessWriteParams {
                wait_written: false,
                process_id: self.id.clone(),
                chunk: data.into(),
                write_id: None,
            })?
            .status)
    }

    async fn close_stdin(&self) -> Result<WriteStatus, Error> {
        Ok(self
            .backend
            .session
            .close_stdin(ProcessCloseStdinParams {
                process_id: self.id.clone(),
            })
            .status)
    }

    async fn signal(&self, signal: Signal) -> Result<bool, Error> {
        Ok(self
            .backend
            .session
            .signal(ProcessSignalParams {
                process_id: self.id.clone(),
                signal,
            })
            .delivered)
    }

    async fn resize(&self, size: TerminalSize) -> Result<(), Error> {
        self.backend.session.resize(ProcessResizeParams {
            process_id: self.id.clone(),
            rows: size.rows,
            cols: size.cols,
        })?;
        Ok(())
    }

    async fn terminate(&self, grace: Duration) -> Result<bool, Error> {
        Ok(self
            .backend
            .session
            .terminate(ProcessTerminateParams {
                process_id: self.id.clone(),
                grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            })
            .running)
    }
}
