//! The offgrid spool: a durable, checksummed, group-committed log of payment
//! events over embedded sled, acknowledged by position, with an idempotency
//! index that costs about a byte of memory per id.
//!
//! The daemon speaks to [`Spool`], never to sled. The API is narrow: append (one
//! or a batch, durable before it returns), dedupe lookup, read pending records in
//! seq order from a cursor, mark acked / dead, requeue, drop, list, counts,
//! compaction, verify.
//!
//! # Layout (format version 2)
//! One writer thread (`spool-writer`, [`write`]) takes every append of a group
//! commit, assigns their seqs in commit order, packs their entry frames into
//! *blocks* (spool-format v2: sled values of at most 7 KiB, keyed by their
//! first seq), and writes the blocks, the state changes queued since the
//! last commit and the [`layout::Meta`] value (counters, seq high-water mark,
//! acked watermark) in **one** `apply_batch`, then makes it durable. The keys
//! are listed in [`layout`]; docs/spool-format.md has every byte.
//!
//! ```text
//! <dir>/sled/     the sled store (files: db, conf, snap.*; blobs/ stays empty)
//! <dir>/state     the state file of the regression guard (crates/durable)
//! ```
//!
//! Roles, one module each (after Vector's `disk_v2`): [`layout`] (keys, meta),
//! [`write`] (the writer thread: packing, dedupe, limits, commit), [`read`]
//! (pending reads from a cursor, get, list), [`acks`] (the watermark,
//! out-of-order acks, dead letters, requeue, drop), [`index`] (the idempotency
//! index), [`open`] (recovery at open), [`upgrade`] (v1 spools, in place),
//! [`verify`], [`compact`].
//!
//! # What we assume of sled 0.34.7 and the media
//! - `Db::flush()` is not an fsync: a commit is `Db::flush()` plus the fsyncs
//!   of [`durable::Committer::commit`] (the media assumptions are in the
//!   `durable` crate's docs).
//! - `Tree::apply_batch` is atomic across a crash and a power cut: recovery
//!   replays all of a batch or none of it. The first `apply_batch` puts every
//!   sled operation of the process behind one global RwLock (batches take it
//!   exclusively); here only the writer thread writes, once per group commit,
//!   so readers wait at most for one batch to be applied.
//! - A leaf holds up to 17 values and a leaf over a quarter of a segment goes
//!   to `blobs/` (written without fsync): values are at most 7 KiB, so no leaf
//!   of a 512 KiB-segment store reaches the threshold ([`layout`]).
//! - sled keeps values it has read in its cache: the read path holds only the
//!   block it decodes, and the cache is small ([`SLED_CACHE_BYTES`]).
//!
//! # Acknowledgement by position
//! Every seq at or below the durable *acked watermark* is done. Acks above it
//! (out of order: batches in flight answer in any order) are held in memory
//! until the gap closes; an ack lost in a crash only means the record is sent
//! again, and the ledger dedupes it. Dead letters, requeued records and dropped
//! ones have small trees of their own; blocks are never rewritten, and are
//! removed whole by compaction once below the watermark for `acked_retention`.
//!
//! # Invariants
//! - **Invariant:** [`Spool::append`] / [`Spool::append_batch`] return only after
//!   the commit (`apply_batch`, `Db::flush()`, the fdatasyncs) that holds the
//!   write has completed. A duplicate answers after a commit too.
//! - **Invariant:** nothing calls sled's `flush_async`; one thread
//!   (`spool-writer`) writes and commits.
//! - **Invariant:** seqs are assigned in commit order and become visible to
//!   readers in order, only once durable ([`Spool::read_pending`] never returns
//!   a record a crash could take away). Seqs only grow and are never reused.
//! - **Invariant:** the counters, the seq high-water mark and the watermark are
//!   written in the same batch as the records they count: an open never scans
//!   the backlog.
//! - **Invariant:** the capacity check and the seq assignment are one step of
//!   the writer thread: the limits are exact, and a refused append burns no seq.
//! - **Invariant:** every block and entry read is checksum-verified; a corrupt
//!   block is moved to quarantine, reported, counted, and never forwarded.
//! - **Invariant:** an append that would pass `bytes_max` / `events_max` or dig
//!   into the disk reserve (bytes or inodes) fails whole with a typed error.

pub mod acks;
pub mod compact;
mod disk;
pub use idindex as index;
pub mod layout;
pub mod open;
pub mod read;
pub mod upgrade;
pub mod verify;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use spool_format::{Event, OffsetDateTime};

pub use disk::{DiskFree, DISK_CHECK_INTERVAL};
pub use verify::{Fault, VerifyReport, FAULTS_KEPT_MAX};
pub use write::{CommitInfo, CommitObserver};

use disk::DiskGuard;

/// sled page cache, in bytes. Small on purpose: blocks are read once, in
/// order, by the forwarder; what stays hot is the tail of the log and the id
/// index's run chunks. sled's accounting undercounts what it holds, so a large
/// cache would let a drain of a big backlog grow the process without bound.
pub const SLED_CACHE_BYTES: u64 = 32 << 20;
/// How long [`Spool::open`] waits for a lock that is being released, in time.
/// sled's IO threads of a handle dropped a moment ago in this process can hold
/// the file lock briefly; a daemon holding it holds it for much longer.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Limits and identity of a spool. Built from the validated daemon config.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory holding the spool; sled lives in `<dir>/sled`.
    pub dir: PathBuf,
    /// This node's id, written into every block.
    pub node_id: String,
    /// Most bytes of pending and dead records (encoded frames), in bytes.
    pub bytes_max: u64,
    /// Most pending and dead records, in events.
    pub events_max: u64,
    /// Appends fail with [`SpoolError::InsufficientStorage`] below this, in bytes.
    pub disk_free_bytes_min: u64,
    /// Appends fail with [`SpoolError::InsufficientStorage`] below this, in inodes.
    pub disk_free_inodes_min: u64,
    /// How long an acked record is kept for dedupe and audit before compaction.
    pub acked_retention: Duration,
    /// Open even if the store holds less than its state file says was made
    /// durable (an operator's explicit decision after a loss; logged at ERROR,
    /// see [`Spool::regression`]). Seqs are still never reused.
    pub accept_regression: bool,
}

impl SpoolConfig {
    /// A config with generous limits, for tests and tools.
    pub fn for_dir(dir: impl Into<PathBuf>) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            node_id: "test".into(),
            bytes_max: 10 << 30,
            events_max: 50_000_000,
            disk_free_bytes_min: 0,
            disk_free_inodes_min: 0,
            acked_retention: Duration::from_secs(7 * 24 * 3600),
            accept_regression: false,
        }
    }
}

/// The outcome of one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// New event, now durable at `seq`.
    Accepted { seq: u64 },
    /// Same id and same event already spooled at `seq` (durable).
    Duplicate { seq: u64 },
    /// Same id, a different event, spooled at `seq`; nothing was written.
    Conflict { seq: u64 },
}

/// Operating errors of the spool. Bugs are panics, not variants.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full: {what} at its limit of {limit}")]
    Full { what: &'static str, limit: u64 },
    #[error("insufficient storage: {what} free is {free}, the reserve is {min}")]
    InsufficientStorage { what: &'static str, free: u64, min: u64 },
    #[error("spool is locked by another process (is the daemon running?): {0}")]
    Locked(String),
    #[error("spool storage error: {0}")]
    Storage(String),
    /// The store's own files are damaged (sled's log, or a value the engine
    /// relies on); named, never a panic. See docs/operations.md.
    #[error("spool store is damaged: {0} (run `spoolctl verify`; see docs/operations.md, \"corrupt spool\")")]
    Corrupt(String),
    #[error("spool is unusable after a failed flush: {0}")]
    FlushFailed(Arc<str>),
    #[error("spool is closed")]
    Closed,
    /// The disk or the quota is full (ENOSPC, EDQUOT): answered like the reserve.
    #[error("no space left for the spool: {0}")]
    NoSpace(String),
    /// The store holds less than its state file says was made durable, or is
    /// another store's; the spool refuses to open (see docs/operations.md).
    #[error("{0}")]
    Regressed(String),
}

impl SpoolError {
    /// Whether the same request may succeed later without operator action
    /// (space frees up as the forwarder drains).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SpoolError::Full { .. } | SpoolError::InsufficientStorage { .. } | SpoolError::NoSpace(_))
    }
}

/// Names a sled error: its corruption report says where in which file, not a
/// `Debug` dump of sled's internal pointer type.
pub(crate) fn describe_sled(e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { at, .. } => match at {
            Some(ptr) => format!("sled's log is corrupt at {}", describe_ptr(&format!("{ptr:?}"))),
            None => "sled's log is corrupt".to_owned(),
        },
        sled::Error::Io(io) => format!("I/O error: {io}"),
        other => other.to_string(),
    }
}

fn describe_ptr(debug: &str) -> String {
    // DiskPtr is `Inline(offset)` or `Blob(offset, blob lsn)`.
    let digits: Vec<u64> = debug
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    match (debug.starts_with("Blob"), digits.as_slice()) {
        (false, [offset, ..]) => format!("offset {offset} of file `db`"),
        (true, [offset, lsn, ..]) => format!("offset {offset} of file `db` (blob blobs/{lsn})"),
        _ => "an unknown position".to_owned(),
    }
}

impl From<sled::Error> for SpoolError {
    fn from(e: sled::Error) -> SpoolError {
        match (&e, durable::sled_io_kind(&e)) {
            (_, Some(k)) if durable::is_no_space(k) => SpoolError::NoSpace(e.to_string()),
            (sled::Error::Corruption { .. }, _) => SpoolError::Corrupt(describe_sled(&e)),
            _ => SpoolError::Storage(describe_sled(&e)),
        }
    }
}

impl From<durable::OpenError> for SpoolError {
    fn from(e: durable::OpenError) -> SpoolError {
        match e {
            durable::OpenError::Locked(m) => SpoolError::Locked(m),
            durable::OpenError::Sled(s) => SpoolError::from(s),
            other => match other.io_kind() {
                Some(k) if durable::is_no_space(k) => SpoolError::NoSpace(other.to_string()),
                _ => SpoolError::Storage(other.to_string()),
            },
        }
    }
}

/// Which records to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    All,
    Pending,
    Dead,
    Acked,
}

/// Counts and sizes, for status pages and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub pending_events: u64,
    pub dead_events: u64,
    pub acked_events: u64,
    /// Bytes of pending and dead frames (what `bytes_max` limits).
    pub live_bytes: u64,
    /// Bytes of acked frames kept for retention.
    pub acked_bytes: u64,
    /// Records in quarantined blocks.
    pub quarantined: u64,
    /// `received_at` of the oldest pending record.
    pub oldest_pending: Option<OffsetDateTime>,
    pub next_seq: u64,
    /// Every seq at or below this is done (acked, dead or gone).
    pub acked_watermark: u64,
    pub commits: u64,
    /// sled writes (inserts and removes) made by all commits since open.
    pub sled_writes: u64,
    pub bytes_max: u64,
    pub events_max: u64,
    /// Ids in the open (in-memory, exact) partition of the id index.
    pub index_open_ids: u64,
    /// Sealed partitions of the id index, and the memory their filters hold.
    pub index_sealed_partitions: u64,
    pub index_sealed_bytes: u64,
}

/// A block moved aside because it failed verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quarantined {
    /// The first seq the block held (its key).
    pub seq: u64,
    /// The last seq it held, when its header could still be read.
    pub last_seq: Option<u64>,
    pub bytes: usize,
}

pub(crate) struct Inner {
    pub(crate) cfg: SpoolConfig,
    pub(crate) db: sled::Db,
    pub(crate) committer: Arc<durable::Committer>,
    pub(crate) writer: Arc<write::Writer>,
    /// Set when the spool was opened over a regression the operator accepted.
    pub(crate) regression: Option<String>,
    /// Highest seq made durable: readers never look past it.
    pub(crate) visible: AtomicU64,
    pub(crate) acks: Mutex<acks::AckState>,
    pub(crate) index: RwLock<index::Index>,
    pub(crate) disk: DiskGuard,
    /// Requeues so far: a reader's cursor must go back when this moves.
    pub(crate) requeues: AtomicU64,
    /// The newest entry of the ack-time log: (watermark, time).
    pub(crate) last_ack_log: Mutex<Option<(u64, OffsetDateTime)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.writer.shutdown();
    }
}

/// A handle to an open spool; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Spool {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.inner.cfg.dir).finish()
    }
}

impl Spool {
    /// Opens (or creates, or upgrades from format 1) the spool in `cfg.dir`
    /// and starts its writer thread.
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        Self::open_with(cfg, None)
    }

    /// Like [`Spool::open`], with a callback run after every group commit.
    pub fn open_with(cfg: SpoolConfig, observer: Option<CommitObserver>) -> Result<Spool, SpoolError> {
        open::open(cfg, observer)
    }

    /// The problem the operator accepted at open (`accept_regression`), if any.
    pub fn regression(&self) -> Option<&str> {
        self.inner.regression.as_deref()
    }

    pub fn config(&self) -> &SpoolConfig {
        &self.inner.cfg
    }

    /// Appends one event; returns once the outcome is durable.
    pub async fn append(&self, event: Event) -> Result<AppendOutcome, SpoolError> {
        self.append_at(event, OffsetDateTime::now_utc()).await
    }

    /// [`Spool::append`] with the arrival time given (tests of the dedupe
    /// window, imports).
    #[doc(hidden)]
    pub async fn append_at(&self, event: Event, now: OffsetDateTime) -> Result<AppendOutcome, SpoolError> {
        let mut r = self.inner.writer.submit(vec![event], now).await;
        r.pop().unwrap_or(Err(SpoolError::Closed))
    }

    /// Appends many events under one group commit. Results are in input order;
    /// every `Ok` is durable when this returns.
    pub async fn append_batch(&self, events: Vec<Event>) -> Vec<Result<AppendOutcome, SpoolError>> {
        self.inner.writer.submit(events, OffsetDateTime::now_utc()).await
    }

    /// Waits until every change made so far (by any thread) is on disk.
    pub async fn wait_durable(&self) -> Result<(), SpoolError> {
        self.inner.writer.barrier().await
    }

    /// Checks the capacity limits and the disk reserve for `frame_bytes` more.
    pub(crate) fn check_room(&self, events: u64, frame_bytes: u64) -> Result<(), SpoolError> {
        let cfg = &self.inner.cfg;
        let (used_events, used_bytes) = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner()).live();
        check_limits(cfg, used_events, used_bytes, events, frame_bytes)?;
        self.check_disk()
    }

    /// Checks the disk reserve (bytes and inodes) against a recent reading.
    pub fn check_disk(&self) -> Result<(), SpoolError> {
        check_disk(&self.inner.cfg, &self.inner.disk)
    }

    /// Whether appends can currently succeed: open, not failed, under the
    /// limits, disk reserve holding. For `/readyz`.
    pub fn check_writable(&self) -> Result<(), SpoolError> {
        self.inner.writer.check_usable()?;
        self.check_room(0, 0)
    }

    /// Free disk bytes and inodes right now.
    pub fn disk_free(&self) -> Result<DiskFree, SpoolError> {
        self.inner.disk.free_now().map_err(|e| SpoolError::Storage(format!("statvfs: {e}")))
    }

    /// How many requeues (dead letters retried, acked records requeued) have
    /// happened since open. Records only ever become pending behind a reader's
    /// cursor by a requeue: a forwarder goes back to the start when this moves.
    pub fn requeue_count(&self) -> u64 {
        self.inner.requeues.load(Ordering::SeqCst)
    }

    /// Counts and sizes.
    ///
    /// The counts move under the acks lock when a record changes state, but
    /// a dead letter, a requeue or a new block reaches sled only in the
    /// writer's next round. So that a caller who sees a count also sees its
    /// records (`pending_events` 0, then `list(Dead)` holds the new dead
    /// letter), this waits for the round that carries the changes counted,
    /// at most one commit. A failed writer applies nothing more: then the
    /// counts are returned as they stand.
    ///
    /// Blocking: callers that must never wait on the disk (metrics, the fill
    /// monitor) use [`Spool::stats_now`].
    pub fn stats(&self) -> Result<Stats, SpoolError> {
        self.stats_inner(true)
    }

    /// [`Spool::stats`] without the wait: the counts as they stand, which may
    /// run up to one writer round ahead of what `list` and `get` show.
    pub fn stats_now(&self) -> Result<Stats, SpoolError> {
        self.stats_inner(false)
    }

    fn stats_inner(&self, settle: bool) -> Result<Stats, SpoolError> {
        let (c, watermark, round, queued) = {
            let a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
            // `taken` moves under this lock: writes still queued here go in
            // the next round, those already taken in the current one.
            let queued = !a.writes.is_empty();
            (a.counts, a.watermark, self.inner.writer.rounds_taken() + u64::from(queued), queued)
        };
        if settle {
            if queued {
                self.inner.writer.poke();
            }
            if self.inner.writer.wait_round(round).is_err() {
                tracing::debug!("stats: the writer is not usable; counts as they stand");
            }
        }
        let oldest_pending = self.oldest_pending()?;
        let (open_ids, sealed, sealed_bytes) = {
            let i = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
            (i.open_len(), i.sealed_count(), i.sealed_bytes())
        };
        Ok(Stats {
            pending_events: c.pending,
            dead_events: c.dead,
            acked_events: c.acked,
            live_bytes: c.live_bytes,
            acked_bytes: c.acked_bytes,
            quarantined: c.quarantined,
            oldest_pending,
            next_seq: self.inner.writer.next_seq(),
            acked_watermark: watermark,
            commits: self.inner.writer.commits(),
            sled_writes: self.inner.writer.sled_writes(),
            bytes_max: self.inner.cfg.bytes_max,
            events_max: self.inner.cfg.events_max,
            index_open_ids: layout::len_u64(open_ids),
            index_sealed_partitions: layout::len_u64(sealed),
            index_sealed_bytes: layout::len_u64(sealed_bytes),
        })
    }

    /// Commits what is outstanding, stops the writer thread and writes the
    /// final high-water mark. Further appends fail with `Closed`.
    pub fn close(&self) {
        self.inner.writer.shutdown();
    }
}

pub(crate) fn check_limits(cfg: &SpoolConfig, used_events: u64, used_bytes: u64, events: u64, bytes: u64) -> Result<(), SpoolError> {
    if used_events.saturating_add(events) > cfg.events_max || (events == 0 && used_events >= cfg.events_max) {
        return Err(SpoolError::Full { what: "events", limit: cfg.events_max });
    }
    if used_bytes.saturating_add(bytes) > cfg.bytes_max {
        return Err(SpoolError::Full { what: "bytes", limit: cfg.bytes_max });
    }
    Ok(())
}

pub(crate) fn check_disk(cfg: &SpoolConfig, disk: &DiskGuard) -> Result<(), SpoolError> {
    let free = disk.free().map_err(|e| SpoolError::Storage(format!("statvfs: {e}")))?;
    if free.bytes < cfg.disk_free_bytes_min {
        return Err(SpoolError::InsufficientStorage { what: "bytes", free: free.bytes, min: cfg.disk_free_bytes_min });
    }
    if let Some(inodes) = free.inodes {
        if inodes < cfg.disk_free_inodes_min {
            return Err(SpoolError::InsufficientStorage { what: "inodes", free: inodes, min: cfg.disk_free_inodes_min });
        }
    }
    Ok(())
}

/// Test hook: the raw sled tree, to inject corruption in tests.
#[doc(hidden)]
pub fn raw_db(spool: &Spool) -> sled::Db {
    spool.inner.db.clone()
}

/// Test hook: the sled key of the block whose first seq is `seq` (with one
/// append per commit, the block of record `seq`).
#[doc(hidden)]
pub fn block_key(seq: u64) -> [u8; 9] {
    layout::key(layout::P_BLOCK, seq)
}

/// The sled store of the spool in `dir` (what a bare sled open of the same
/// data opens, for benchmarks and tools).
pub fn store_dir(dir: &Path) -> PathBuf {
    dir.join("sled")
}

/// Whether a spool directory exists and holds a sled database.
pub fn exists(dir: &Path) -> bool {
    store_dir(dir).exists()
}

pub(crate) fn seq_visible(inner: &Inner) -> u64 {
    inner.visible.load(Ordering::SeqCst)
}
