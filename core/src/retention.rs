//! Output retention (SPEC 7.3): each process keeps its most recent output events up to
//! `--retain-bytes`, and all processes of all sessions together up to
//! `--max-retained-bytes`; past either, the oldest events are evicted whole and counted.
//!
//! Each retained event counts its bytes plus [`EVENT_OVERHEAD`] (the bookkeeping it costs
//! the server), so a flood of one-byte chunks is bounded by memory, not only by bytes.
//!
//! The output path takes no lock shared by processes: a chunk gets a global stamp (its
//! age) and adds its weight to the pool's total with atomics. Only when that total passes
//! the limit is the pool's lock taken, to evict. The pool indexes each process that
//! retains something under the key (closed first, stamp of its oldest event), so eviction
//! takes the oldest event of a closed process, or of a running one when no closed process
//! retains anything. A key is written when a process starts retaining and re-keyed lazily:
//! a process's own eviction (past `--retain-bytes`) only makes its oldest event newer, so
//! an indexed key is never newer than the truth; the evictor re-keys a process whose key
//! turns out stale and looks again.
//!
//! Lock order: the pool's lock, then a process's state lock, never the other way round.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use exec_server_protocol::OutputChunk;

use crate::lock::lock;

/// What one retained event costs besides its bytes, about: its place in the process's
/// queue (40 bytes: seq, stream, stamp, the shared pointer), the shared allocation's
/// counts (16) and the allocator's header and rounding (8 to 16).
pub const EVENT_OVERHEAD: usize = 64;

/// Default of `--max-retained-bytes` (SPEC section 8).
pub const DEFAULT_MAX_RETAINED_BYTES: usize = 256 * 1024 * 1024;

/// Where a process stands in the eviction order: closed processes first, then by the
/// stamp of their oldest retained event (lower is older).
type Key = (u8, u64);

fn class(closed: bool) -> u8 {
    if closed { 0 } else { 1 }
}

/// Something whose retention the pool can evict from: a process.
pub(crate) trait Holder: Send + Sync {
    /// Runs `f` on the holder's retention under its lock, with whether it is closed.
    fn with_retained(&self, f: &mut dyn FnMut(&mut Retained, bool));
}

/// The retained bytes of every process of every session of a server, bounded together.
/// Clones share the pool.
#[derive(Clone)]
pub struct RetentionPool {
    inner: Arc<Pool>,
}

struct Pool {
    max: usize,
    /// Weight retained now, by every process together.
    total: AtomicUsize,
    /// Next stamp: the age of an event across every process.
    stamps: AtomicU64,
    /// Every process that retains something, by its key.
    index: Mutex<BTreeMap<Key, Weak<dyn Holder>>>,
}

impl std::fmt::Debug for RetentionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionPool")
            .field("max_bytes", &self.inner.max)
            .field("retained_bytes", &self.retained_bytes())
            .finish()
    }
}

impl Default for RetentionPool {
    fn default() -> Self {
        RetentionPool::new(DEFAULT_MAX_RETAINED_BYTES)
    }
}

impl RetentionPool {
    /// A pool that retains at most `max_bytes` (each event counted with
    /// [`EVENT_OVERHEAD`]).
    pub fn new(max_bytes: usize) -> Self {
        RetentionPool {
            inner: Arc::new(Pool {
                max: max_bytes,
                total: AtomicUsize::new(0),
                stamps: AtomicU64::new(1),
                index: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The limit.
    pub fn max_bytes(&self) -> usize {
        self.inner.max
    }

    /// What every process retains now, each event counted with [`EVENT_OVERHEAD`].
    pub fn retained_bytes(&self) -> usize {
        self.inner.total.load(Ordering::Acquire)
    }

    /// The retention of one new process.
    pub(crate) fn retained(&self, limit: usize) -> Retained {
        Retained {
            pool: self.clone(),
            limit,
            chunks: VecDeque::new(),
            weight: 0,
            evicted_bytes: 0,
            evicted_through: 0,
            listed: None,
        }
    }

    /// Indexes `holder` if it retains something and is not indexed yet (after
    /// [`Retained::push`] said so, outside the holder's lock).
    pub(crate) fn list(&self, holder: &Arc<dyn Holder>) {
        let mut index = lock(&self.inner.index);
        holder.with_retained(&mut |r, closed| {
            if r.listed.is_none()
                && let Some(key) = r.key(closed)
            {
                index.insert(key, Arc::downgrade(holder));
                r.listed = Some(key);
            }
        });
    }

    /// Re-keys `holder` after it closed, so it is evicted before running processes.
    pub(crate) fn closed(&self, holder: &Arc<dyn Holder>) {
        let mut index = lock(&self.inner.index);
        holder.with_retained(&mut |r, closed| {
            if let Some(old) = r.listed
                && let Some(key) = r.key(closed)
                && key != old
            {
                index.remove(&old);
                index.insert(key, Arc::downgrade(holder));
                r.listed = Some(key);
            }
        });
    }

    /// Drops everything `holder` retains (it is forgotten).
    pub(crate) fn forget(&self, holder: &Arc<dyn Holder>) {
        let mut index = lock(&self.inner.index);
        holder.with_retained(&mut |r, _| {
            if let Some(old) = r.listed.take() {
                index.remove(&old);
            }
            r.clear();
        });
    }

    /// Evicts the oldest events, from closed processes first, until the pool holds no
    /// more than its limit. Cheap when it does not: one atomic load.
    pub(crate) fn enforce(&self) {
        if self.retained_bytes() <= self.inner.max {
            return;
        }
        // Processes whose last reference the eviction held die after the lock is
        // released (dropping one takes the lock to unindex it).
        let mut graveyard: Vec<Arc<dyn Holder>> = Vec::new();
        let mut index = lock(&self.inner.index);
        while self.retained_bytes() > self.inner.max {
            let Some((key, weak)) = index.pop_first() else {
                // What is left is being indexed right now by its process, which enforces
                // the limit itself right after.
                break;
            };
            let Some(holder) = weak.upgrade() else {
                continue;
            };
            let next = index.first_key_value().map(|(k, _)| *k);
            holder.with_retained(&mut |r, closed| {
                if r.listed != Some(key) {
                    // Indexed under another key since: that entry stands.
                    return;
                }
                r.listed = None;
                let Some(mut now) = r.key(closed) else {
                    return;
                };
                if now == key {
                    loop {
                        r.evict_oldest();
                        let Some(k) = r.key(closed) else {
                            return;
                        };
                        now = k;
                        if self.retained_bytes() <= self.inner.max || next.is_some_and(|n| now > n)
                        {
                            break;
                        }
                    }
                }
                // A stale key (its own eviction made its oldest event newer), or more left
                // after its turn: indexed again under its key now.
                index.insert(now, Arc::downgrade(&holder));
                r.listed = Some(now);
            });
            graveyard.push(holder);
        }
        drop(index);
        drop(graveyard);
    }

    fn unlist(&self, key: Key) {
        lock(&self.inner.index).remove(&key);
    }
}

/// One retained event and its age.
struct Kept {
    stamp: u64,
    chunk: OutputChunk,
}

/// The retained output events of one process (kept under the process's state lock).
pub(crate) struct Retained {
    pool: RetentionPool,
    /// `--retain-bytes`.
    limit: usize,
    chunks: VecDeque<Kept>,
    /// Bytes retained plus [`EVENT_OVERHEAD`] per event.
    weight: usize,
    /// Output bytes evicted so far.
    pub(crate) evicted_bytes: u64,
    /// Highest seq of an evicted output event (0 = none).
    pub(crate) evicted_through: u64,
    /// The key this process is indexed under in the pool, if it is.
    listed: Option<Key>,
}

fn weight(chunk: &OutputChunk) -> usize {
    chunk.chunk.len().saturating_add(EVENT_OVERHEAD)
}

impl Retained {
    /// Keeps `chunk`, evicting this process's oldest events past its own limit. Returns
    /// whether the process must be indexed in the pool ([`RetentionPool::list`], to call
    /// outside the lock; then [`RetentionPool::enforce`]).
    #[must_use]
    pub(crate) fn push(&mut self, chunk: OutputChunk) -> bool {
        let w = weight(&chunk);
        let stamp = self.pool.inner.stamps.fetch_add(1, Ordering::Relaxed);
        self.weight = self.weight.saturating_add(w);
        self.pool.inner.total.fetch_add(w, Ordering::AcqRel);
        exec_server_metrics::metrics()
            .retained_bytes
            .inc_by(chunk.chunk.len() as i64);
        self.chunks.push_back(Kept { stamp, chunk });
        while self.weight > self.limit && !self.chunks.is_empty() {
            self.evict_oldest();
        }
        self.listed.is_none() && !self.chunks.is_empty()
    }

    /// The retained events with seq > `after_seq`, oldest first.
    pub(crate) fn after(&self, after_seq: u64) -> impl Iterator<Item = &OutputChunk> {
        let start = self.chunks.partition_point(|k| k.chunk.seq <= after_seq);
        self.chunks.range(start..).map(|k| &k.chunk)
    }

    fn key(&self, closed: bool) -> Option<Key> {
        self.chunks.front().map(|k| (class(closed), k.stamp))
    }

    fn evict_oldest(&mut self) {
        let Some(old) = self.chunks.pop_front() else {
            return;
        };
        let w = weight(&old.chunk);
        self.weight = self.weight.saturating_sub(w);
        self.pool.inner.total.fetch_sub(w, Ordering::AcqRel);
        let metrics = exec_server_metrics::metrics();
        metrics.retained_bytes.dec_by(old.chunk.chunk.len() as i64);
        metrics.evicted_bytes.inc_by(old.chunk.chunk.len() as u64);
        self.evicted_bytes += old.chunk.chunk.len() as u64;
        self.evicted_through = old.chunk.seq;
    }

    fn clear(&mut self) {
        self.pool
            .inner
            .total
            .fetch_sub(self.weight, Ordering::AcqRel);
        // The metric counts output bytes alone, without the bookkeeping in `weight`.
        let raw = self
            .weight
            .saturating_sub(self.chunks.len().saturating_mul(EVENT_OVERHEAD));
        exec_server_metrics::metrics()
            .retained_bytes
            .dec_by(raw as i64);
        self.weight = 0;
        self.chunks = VecDeque::new();
    }
}

impl Drop for Retained {
    fn drop(&mut self) {
        self.clear();
        if let Some(key) = self.listed.take() {
            self.pool.unlist(key);
        }
    }
}
