//! The sessions of one server: creation, takeover on resume, detach with a TTL, expiry and shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use exec_server_core::{EventSink, Session, SessionConfig, lock};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The connection a session is attached to.
struct Owner {
    conn_id: u64,
    /// Cancelled to close that connection when another one takes the session over.
    close: CancellationToken,
}

struct Entry {
    session: Arc<Session>,
    owner: Option<Owner>,
    /// Bumped on every attach and detach, so a TTL timer knows whether its detach is still current.
    generation: u64,
    /// The TTL ran out, or `session/close` was called, and the session is being shut
    /// down: it can no longer be resumed.
    expired: bool,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Entry>,
    shutting_down: bool,
}

/// Every live session of the server, by session id.
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    session_config: SessionConfig,
    ttl: Duration,
}

impl Registry {
    pub(crate) fn new(session_config: SessionConfig, ttl: Duration) -> Arc<Self> {
        Arc::new(Registry {
            inner: Mutex::new(Inner::default()),
            session_config,
            ttl,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Creates a session owned by `conn_id` (events are pushed once [`Registry::attach`] is called). Must run inside the tokio runtime.
    pub(crate) fn create(
        &self,
        conn_id: u64,
        close: CancellationToken,
    ) -> Result<(String, Arc<Session>), Error> {
        let id = crate::random_hex(16)
            .map_err(|e| Error::Internal(format!("cannot read /dev/urandom: {e}")))?;
        let session = Session::new(self.session_config.clone());
        let mut inner = self.lock();
        if inner.shutting_down {
            drop(inner);
            return Err(Error::Internal("the server is shutting down".into()));
        }
        exec_server_metrics::metrics().sessions_created.inc();
        inner.sessions.insert(
            id.clone(),
            Entry {
                session: session.clone(),
                owner: Some(Owner { conn_id, close }),
                generation: 0,
                expired: false,
            },
        );
        Ok((id, session))
    }

    /// Makes `conn_id` the owner of session `id`, closing the connection that held it.
    pub(crate) fn resume(
        &self,
        id: &str,
        conn_id: u64,
        close: CancellationToken,
    ) -> Result<Arc<Session>, Error> {
        let mut inner = self.lock();
        let entry = match inner.sessions.get_mut(id) {
            Some(entry) if !entry.expired => entry,
            _ => return Err(Error::SessionNotFound(format!("no live session {id:?}"))),
        };
        exec_server_metrics::metrics().sessions_resumed.inc();
        if let Some(old) = entry.owner.replace(Owner { conn_id, close })
            && old.conn_id != conn_id
        {
            // Session ids are credentials of a kind (with the token, they resume a
            // session): never logged at info.
            tracing::info!(old = old.conn_id, new = conn_id, "session taken over");
            tracing::debug!(session = id, "the session taken over");
            old.close.cancel();
        }
        entry.generation += 1;
        Ok(entry.session.clone())
    }

    /// Starts pushing the events of session `id` into `sink`, if `conn_id` still holds it.
    pub(crate) fn attach(&self, id: &str, conn_id: u64, sink: Arc<dyn EventSink>) {
        let inner = self.lock();
        if let Some(entry) = inner.sessions.get(id)
            && entry.owner.as_ref().map(|o| o.conn_id) == Some(conn_id)
        {
            entry.session.attach(sink);
        }
    }

    /// Detaches the session `id` from `conn_id` (if that connection still holds it) and
    /// expires it after the TTL unless a connection resumes it first.
    pub(crate) fn detach(self: &Arc<Self>, id: &str, conn_id: u64) {
        let generation = {
            let mut inner = self.lock();
            let Some(entry) = inner.sessions.get_mut(id) else {
                return;
            };
            if entry.owner.as_ref().map(|o| o.conn_id) != Some(conn_id) {
                return;
            }
            entry.owner = None;
            entry.generation += 1;
            entry.session.detach();
            entry.generation
        };
        tracing::info!(
            conn = conn_id,
            ttl_ms = self.ttl.as_millis() as u64,
            "session detached"
        );
        tracing::debug!(session = id, "the session detached");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                session = id,
                "detached outside the runtime: no expiry timer"
            );
            return;
        };
        let registry = self.clone();
        let id = id.to_owned();
        runtime.spawn(async move {
            tokio::time::sleep(registry.ttl).await;
            let expired = {
                let mut inner = registry.lock();
                match inner.sessions.get_mut(&id) {
                    Some(e) if e.owner.is_none() && e.generation == generation => {
                        e.expired = true;
                        Some(e.session.clone())
                    }
                    _ => None,
                }
            };
            if let Some(session) = expired {
                exec_server_metrics::metrics().sessions_expired.inc();
                tracing::info!("detached session expired; terminating its processes");
                tracing::debug!(session = id, "the session expired");
                // Kept in the registry until every child is reaped, so a server shutdown
                // meanwhile still waits for them.
                session.shutdown().await;
                registry.lock().sessions.remove(&id);
            }
        });
    }

    /// `session/close` from `conn_id`: session `id` can no longer be resumed (-32010).
    /// `false` when that connection does not hold it (it was taken over).
    pub(crate) fn begin_close(&self, id: &str, conn_id: u64) -> bool {
        let mut inner = self.lock();
        match inner.sessions.get_mut(id) {
            Some(entry) if entry.owner.as_ref().map(|o| o.conn_id) == Some(conn_id) => {
                entry.expired = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets session `id` (closed, every process reaped).
    pub(crate) fn remove(&self, id: &str) {
        self.lock().sessions.remove(id);
    }

    /// Refuses new sessions, then shuts every session down (terminating and reaping every process).
    pub(crate) async fn shutdown(&self) {
        let sessions: Vec<Arc<Session>> = {
            let mut inner = self.lock();
            inner.shutting_down = true;
            inner.sessions.drain().map(|(_, e)| e.session).collect()
        };
        futures::future::join_all(sessions.iter().map(|s| s.shutdown())).await;
    }

    /// The number of live sessions.
    pub(crate) fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether [`Registry::shutdown`] has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// The number of live sessions attached to a connection, and of those detached
    /// (awaiting a resume or their expiry).
    pub(crate) fn states(&self) -> (usize, usize) {
        let inner = self.lock();
        let attached = inner
            .sessions
            .values()
            .filter(|e| e.owner.is_some())
            .count();
        (attached, inner.sessions.len() - attached)
    }
}
