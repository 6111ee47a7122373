//! One transport connection: the dispatch of inbound messages in receipt order, and its end.
//!
//! Message classification is in `envelope`, the handshake state and what a connection
//! shares with its calls in `shared`, the outbound side in `outbound`.

mod envelope;
mod outbound;
mod shared;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use exec_server_core::lock;
use exec_server_protocol::{
    FsRead, Initialize, Method, ProcessList, ProcessRead, ProcessReadParams, ProcessRelease,
    ProcessReleaseParams, ProcessResize, ProcessResizeParams, ProcessSignal, ProcessSignalParams,
    ProcessStart, ProcessStartParams, ProcessTerminate, ProcessTerminateParams, ProcessWrite,
    ProcessWriteParams, SessionClose, SessionCloseParams,
};
use jsonrpsee_core::server::{ConnectionId, Extensions, MethodCallback, MethodResponse};
use jsonrpsee_types::error::OVERSIZED_RESPONSE_CODE;
use jsonrpsee_types::{Id, Params};
use serde_json::value::RawValue;
use tokio::sync::OwnedSemaphorePermit;

use crate::Error;
use crate::methods::{CloseExt, DrainExt, Prepared, ReadExt, SessionExt, check_process_id, parse};
use crate::queue::OutTx;
use envelope::{Inbound, classify, clip, error_json};
pub use outbound::{Message, Outbound};
pub(crate) use shared::ConnectionShared;

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

    /// Resolves once the client closed its session (`session/close`, SPEC 5.10) and the
    /// response is queued. The transport then ends the connection as at the end of input:
    /// [`Connection::finish`], write out everything queued, close.
    pub async fn session_closed(&self) {
        self.shared.session_closed.cancelled().await;
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
            Inbound::Notification { method, params } => {
                shared.on_notification(&method, params);
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
                let mut call = callback(
                    id.clone(),
                    params,
                    ConnectionId(shared.id as usize),
                    max,
                    extensions,
                );
                if name == ProcessWrite::NAME {
                    // A write whose answer is known now (no `waitWritten`, or written at
                    // once) is answered here, without a task: the interactive path.
                    let polled = {
                        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                        call.as_mut().poll(&mut cx)
                    };
                    if let std::task::Poll::Ready(response) = polled {
                        send_response(&shared.tx, id, response, max, None).await;
                        drop(permit);
                        return;
                    }
                }
                let tx = shared.tx.clone();
                let close = shared.close.clone();
                // A long poll and a write waiting to be written are abandoned with their
                // connection (nobody is left to answer); other calls finish (a start must
                // not be abandoned half way).
                let cancellable = name == ProcessRead::NAME || name == ProcessWrite::NAME;
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

    /// Parses the params of `process/start`, `process/read` and `process/write` into their
    /// extensions (a start reserves its `processId` here, a write queues its bytes); other
    /// asynchronous methods parse theirs in their task. Returns the slot where a read leaves the room it reserved in the
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
        if name == SessionClose::NAME {
            // Checked here, on the read loop: from this message on, the connection answers
            // nothing but `session/close`.
            let _: SessionCloseParams = parse(raw)?;
            let first = self.shared.begin_close()?;
            ext.insert(CloseExt {
                conn: self.shared.clone(),
                first,
            });
            return Ok((None, true));
        }
        if name != ProcessStart::NAME && name != ProcessRead::NAME && name != ProcessWrite::NAME {
            return Ok((None, false));
        }
        let session = ext
            .get::<SessionExt>()
            .map(|s| s.0.clone())
            .ok_or_else(|| Error::Internal("call dispatched without a session".into()))?;
        if name == ProcessWrite::NAME {
            // Queued here, in receipt order; only the answer may wait (`waitWritten`).
            let params: ProcessWriteParams = parse(raw)?;
            check_process_id(&params.process_id)?;
            let pending = session.write_then(params).map_err(Error::from)?;
            ext.insert(Prepared::new(pending));
            ext.insert(DrainExt(self.shared.drain.clone()));
            Ok((None, true))
        } else if name == ProcessStart::NAME {
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
        } else if name == ProcessRelease::NAME {
            parse::<ProcessReleaseParams>(raw)
                .ok()
                .map(|p| p.process_id)
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
    ///
    /// Output windows (SPEC section 13) no longer hold anything back from here on: no
    /// acknowledgement can come any more, and the last events must still go out.
    pub async fn finish(&self) {
        self.shared.lift_windows();
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

/// Counts an answered request in the metrics (`method` is a protocol name, never the
/// client's text).
fn record(method: &'static str, error: Option<i32>, read_at: Instant) {
    exec_server_metrics::metrics().request(method, error, read_at.elapsed());
}
