//! [`RemoteBackend`] and [`RemoteProcess`]: the backend trait over a [`Client`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use exec_server_protocol::{
    Base64Bytes, FsChmod, FsChmodParams, FsEntry, FsListParams, FsMkdirParams, FsReadParams,
    FsReadResult, FsRemoveParams, FsRenameParams, FsStatParams, FsStatResult,
    ProcessCloseStdinParams, ProcessInfo, ProcessReadParams, ProcessReadResult,
    ProcessResizeParams, ProcessSignalParams, ProcessStartParams, ProcessTerminateParams,
    ProcessWriteParams, Signal, TerminalSize, WriteStatus,
};

use crate::event::Route;
use crate::{
    Client, Error, EventStream, ExecBackend, ExecFiles, ExecProcess, ReadOptions, StartOptions,
    WriteOptions,
};

/// Largest stdin chunk sent in one `process/write` (far below the server's message limit).
const MAX_WRITE_CHUNK: usize = 1024 * 1024;

/// [`ExecBackend`] on an exec-server, through a [`Client`].
#[derive(Debug, Clone)]
pub struct RemoteBackend {
    client: Client,
}

impl RemoteBackend {
    /// The backend of this client.
    pub fn new(client: Client) -> Self {
        RemoteBackend { client }
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait::async_trait]
impl ExecBackend for RemoteBackend {
    async fn start(&self, options: StartOptions) -> Result<Arc<dyn ExecProcess>, Error> {
        let id = options
            .process_id
            .clone()
            .unwrap_or_else(|| self.client.core().ids.next());
        let process = self.client.process_start(options.into_params(id)).await?;
        Ok(Arc::new(process))
    }

    async fn list(&self) -> Result<Vec<ProcessInfo>, Error> {
        self.client.process_list().await
    }

    fn files(&self) -> &dyn ExecFiles {
        self
    }
}

/// The server's files, through the `fs/*` calls.
#[async_trait::async_trait]
impl ExecFiles for RemoteBackend {
    async fn read(
        &self,
        path: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<FsReadResult, Error> {
        self.client
            .fs_read(FsReadParams {
                path: path.to_owned(),
                offset: Some(offset),
                max_bytes,
            })
            .await
    }

    async fn write(
        &self,
        path: &str,
        data: Base64Bytes,
        options: WriteOptions,
    ) -> Result<u64, Error> {
        Ok(self
            .client
            .fs_write(options.into_params(path, data))
            .await?
            .bytes_written)
    }

    async fn stat(&self, path: &str, follow_symlinks: bool) -> Result<FsStatResult, Error> {
        self.client
            .fs_stat(FsStatParams {
                path: path.to_owned(),
                follow_symlinks,
            })
            .await
    }

    async fn list(&self, path: &str) -> Result<Vec<FsEntry>, Error> {
        Ok(self
            .client
            .fs_list(FsListParams {
                path: path.to_owned(),
            })
            .await?
            .entries)
    }

    async fn mkdir(&self, path: &str, parents: bool, mode: Option<u32>) -> Result<(), Error> {
        self.client
            .fs_mkdir(FsMkdirParams {
                path: path.to_owned(),
                parents,
                mode,
            })
            .await?;
        Ok(())
    }

    async fn remove(&self, path: &str, recursive: bool) -> Result<(), Error> {
        self.client
            .fs_remove(FsRemoveParams {
                path: path.to_owned(),
                recursive,
            })
            .await?;
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        self.client
            .fs_rename(FsRenameParams {
                from: from.to_owned(),
                to: to.to_owned(),
            })
            .await?;
        Ok(())
    }

    async fn chmod(&self, path: &str, mode: u32) -> Result<(), Error> {
        let params = FsChmodParams {
            path: path.to_owned(),
            mode,
        };
        // Setting a mode twice leaves it as once: safe to send again after a reconnect.
        self.client
            .core()
            .call_retrying::<FsChmod>(&params, true, Duration::ZERO)
            .await?;
        Ok(())
    }
}

/// A process on an exec-server.
pub struct RemoteProcess {
    client: Client,
    route: Arc<Route>,
    id: String,
    pid: u32,
    tty: bool,
    next_write: AtomicU64,
}

impl std::fmt::Debug for RemoteProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteProcess")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl RemoteProcess {
    pub(crate) async fn start(client: Client, params: ProcessStartParams) -> Result<Self, Error> {
        let tty = params.tty;
        let (route, result) = client.start_routed(&params).await?;
        Ok(RemoteProcess {
            client,
            route,
            id: result.process_id,
            pid: result.pid,
            tty,
            next_write: AtomicU64::new(1),
        })
    }
}

impl Drop for RemoteProcess {
    fn drop(&mut self) {
        self.route.handle_dropped();
    }
}

#[async_trait::async_trait]
impl ExecProcess for RemoteProcess {
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
        self.client
            .process_read(ProcessReadParams {
                process_id: self.id.clone(),
                after_seq: options.after_seq,
                max_bytes: options.max_bytes,
                wait_ms: u64::try_from(options.wait.as_millis()).unwrap_or(u64::MAX),
            })
            .await
    }

    async fn write(&self, data: &[u8]) -> Result<WriteStatus, Error> {
        let mut status = WriteStatus::Accepted;
        for piece in data.chunks(MAX_WRITE_CHUNK) {
            // A write id makes a retry after a reconnect safe: the server writes it once.
            let write_id = self.next_write.fetch_add(1, Ordering::Relaxed);
            status = self
                .client
                .process_write(ProcessWriteParams {
                    wait_written: false,
                    process_id: self.id.clone(),
                    chunk: piece.into(),
                    write_id: Some(write_id.to_string()),
                })
                .await?
                .status;
            if status != WriteStatus::Accepted {
                break;
            }
        }
        Ok(status)
    }

    async fn close_stdin(&self) -> Result<WriteStatus, Error> {
        let params = ProcessCloseStdinParams {
            process_id: self.id.clone(),
        };
        if self.tty {
            // A repeat would type a second Ctrl-D: never retried once sent.
            return Ok(self.client.process_close_stdin(params).await?.status);
        }
        // On a pipe a repeat is harmless; a repeat's `stdinClosed` means the first one worked.
        let core = self.client.core();
        match core
            .call_retrying::<exec_server_protocol::ProcessCloseStdin>(&params, true, Duration::ZERO)
            .await
        {
            Ok(result) => Ok(result.status),
            Err(e) => Err(e),
        }
    }

    async fn signal(&self, signal: Signal) -> Result<bool, Error> {
        Ok(self
            .client
            .process_signal(ProcessSignalParams {
                process_id: self.id.clone(),
                signal,
            })
            .await?
            .delivered)
    }

    async fn resize(&self, size: TerminalSize) -> Result<(), Error> {
        self.client
            .process_resize(ProcessResizeParams {
                process_id: self.id.clone(),
                rows: size.rows,
                cols: size.cols,
            })
            .await?;
        Ok(())
    }

    async fn terminate(&self, grace: Duration) -> Result<bool, Error> {
        Ok(self
            .client
            .process_terminate(ProcessTerminateParams {
                process_id: self.id.clone(),
                grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            })
            .await?
            .running)
    }
}
