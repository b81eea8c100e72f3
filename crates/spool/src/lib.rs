//! The offgrid spool: a durable, checksummed, group-committed log of payment
//! events, with an idempotency index, over embedded sled.
//!
//! The daemon speaks to [`Spool`], never to sled. The API is narrow: append (one
//! or a batch, durable before it returns), dedupe lookup, read pending records in
//! seq order from a cursor, mark acked / dead, requeue, drop, list, counts, and
//! compaction of acked records after their retention.
//!
//! # Layout in sled
//! One sled tree. Keys start with a one-byte prefix; seq numbers are u64
//! big-endian so that keys sort in seq order. The record is the source of truth;
//! the indexes are derived from it. Changes are plain ordered writes, record
//! first (see `Ops` for why not `sled::Batch`), and an open after a crash repairs
//! the indexes from the records.
//!
//! ```text
//! r <seq>             -> record frame (spool-format: magic, version, len, CRC32C, body)
//! p <seq>             -> ()              pending index: what the forwarder still owes
//! d <seq>             -> ()              dead-letter index
//! a <acked_secs> <seq>-> ()              acked index by ack time, for compaction
//! i <event id>        -> IdEntry         idempotency index: seq + SHA-256 of the event
//! q <seq>             -> raw bytes       quarantine: records that failed their checksum
//! m next_seq          -> u64 LE          seq high-water mark (survives compaction)
//! ```
//!
//! ```text
//! <dir>/sled/         the sled store (files: db, conf, snap.*, blobs/)
//! <dir>/state         the state file of the regression guard (crates/durable)
//! ```
//!
//! # Durability
//! `Db::flush()` is not an fsync (sled 0.34.7 ends it in `sync_file_range`,
//! which a power cut does not respect); a commit here is `Db::flush()` plus the
//! fsyncs of [`durable::Committer::commit`]. The media assumptions are in the
//! docs of the `durable` crate. At open, [`durable::guard`] compares the seq
//! high-water mark sled holds with the state file: a spool that lost
//! acknowledged records refuses to open ([`SpoolError::Regressed`]) unless
//! [`SpoolConfig::accept_regression`] is set, and even then never reuses a seq.
//!
//! # Invariants
//! - **Invariant:** [`Spool::append`] / [`Spool::append_batch`] return only after a
//!   commit (`Db::flush()` and the fdatasync of sled's files) that started after
//!   the write was applied has completed. No caller can acknowledge a write that
//!   is not on stable storage. This holds for duplicates too: a duplicate of a
//!   not-yet-durable event waits for the same commit as the original.
//! - **Invariant:** nothing on a request path calls sled's `flush_async`; exactly
//!   one thread (`spool-flusher`) calls `Db::flush()` (see [`commit`]).
//! - **Invariant:** seq numbers only grow, across restarts and compaction; none is
//!   reused (the high-water mark is stored before anything is removed).
//! - **Invariant:** the record is written before its indexes and removed before
//!   them; after a crash, [`Spool::open`] makes the indexes agree with the records
//!   before anything reads them. An id entry is never durable without its record
//!   (so a resend of a lost event is never mistaken for a duplicate).
//! - **Invariant:** every record read is checksum-verified; a corrupt one is moved
//!   to quarantine, reported, counted, and never returned as valid.
//! - **Invariant:** an append that would pass `bytes_max` / `events_max` or dig into
//!   the disk reserve (bytes or inodes) fails whole with a typed error; nothing is
//!   half-written.

pub mod commit;
mod disk;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spool_format::{decode_record, encode_record, Event, IdEntry, OffsetDateTime, Record, State};

pub use commit::{CommitInfo, CommitObserver};
pub use disk::{DiskFree, DISK_CHECK_INTERVAL};

use commit::{CommitError, GroupCommit};
use disk::DiskGuard;

/// Stripes of the per-id lock that makes "look up id, then insert" atomic
/// between concurrent appenders in this process. 256: contention on one stripe is
/// then rare at thousands of concurrent writers, and the array is 256 mutexes.
const ID_LOCK_STRIPES: usize = 256;
/// Records removed per batch by compaction; bounds the size of one sled batch.
const COMPACT_BATCH_RECORDS: usize = 1024;
/// sled page cache, in bytes. 256 MiB keeps a working set of recent records hot;
/// the spool's memory use does not grow with the backlog beyond this.
const SLED_CACHE_BYTES: u64 = 256 << 20;

const P_RECORD: u8 = b'r';
const P_PENDING: u8 = b'p';
const P_DEAD: u8 = b'd';
const P_ACKED: u8 = b'a';
const P_ID: u8 = b'i';
const P_QUARANTINE: u8 = b'q';
const META_NEXT_SEQ: &[u8] = b"mnext_seq";
/// Present only while the spool is closed cleanly ([`Spool::close`]), holding the
/// counters at close; its absence at open means the last run crashed: the
/// records are scanned, the counters rebuilt and the indexes repaired.
const META_CLEAN: &[u8] = b"mclean";

/// Limits and identity of a spool. Built from the validated daemon config.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory holding the spool; sled lives in `<dir>/sled`.
    pub dir: PathBuf,
    /// This node's id, written into every record.
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

impl From<sled::Error> for SpoolError {
    fn from(e: sled::Error) -> SpoolError {
        match durable::sled_io_kind(&e) {
            Some(k) if durable::is_no_space(k) => SpoolError::NoSpace(e.to_string()),
            _ => SpoolError::Storage(e.to_string()),
        }
    }
}

impl From<durable::OpenError> for SpoolError {
    fn from(e: durable::OpenError) -> SpoolError {
        match e {
            durable::OpenError::Locked(m) => SpoolError::Locked(m),
            other => match other.io_kind() {
                Some(k) if durable::is_no_space(k) => SpoolError::NoSpace(other.to_string()),
                _ => SpoolError::Storage(other.to_string()),
            },
        }
    }
}

impl From<CommitError> for SpoolError {
    fn from(e: CommitError) -> SpoolError {
        match e {
            CommitError::Failed(m) => SpoolError::FlushFailed(m),
            CommitError::Closed => SpoolError::Closed,
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
    pub quarantined: u64,
    /// `received_at` of the oldest pending record.
    pub oldest_pending: Option<OffsetDateTime>,
    pub next_seq: u64,
    pub commits: u64,
    pub bytes_max: u64,
    pub events_max: u64,
}

/// One fault found by [`Spool::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fault {
    /// The record's seq where known.
    pub seq: Option<u64>,
    pub what: String,
}

/// The result of a full check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub faults: Vec<Fault>,
}

/// A record moved aside because it failed verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quarantined {
    pub seq: u64,
    pub bytes: usize,
}

/// The counters as saved in the clean-shutdown marker: seven u64 LE (pending,
/// dead, acked, live bytes, acked bytes, quarantined, next seq), then CRC32C.
struct CounterSnapshot {
    values: [u64; 6],
    next_seq: u64,
}

impl CounterSnapshot {
    const BYTES: usize = 7 * 8 + 4;

    fn take(c: &Counters, next_seq: u64) -> CounterSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        CounterSnapshot {
            values: [l(&c.pending), l(&c.dead), l(&c.acked), l(&c.live_bytes), l(&c.acked_bytes), l(&c.quarantined)],
            next_seq,
        }
    }

    fn restore(&self, c: &Counters) {
        let [pending, dead, acked, live_bytes, acked_bytes, quarantined] = self.values;
        c.pending.store(pending, Ordering::SeqCst);
        c.dead.store(dead, Ordering::SeqCst);
        c.acked.store(acked, Ordering::SeqCst);
        c.live_bytes.store(live_bytes, Ordering::SeqCst);
        c.acked_bytes.store(acked_bytes, Ordering::SeqCst);
        c.quarantined.store(quarantined, Ordering::SeqCst);
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BYTES);
        for v in self.values.iter().chain(std::iter::once(&self.next_seq)) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<CounterSnapshot> {
        if b.len() != Self::BYTES {
            return None;
        }
        let (body, crc) = b.split_at(Self::BYTES - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return None;
        }
        let mut v = [0u64; 7];
        for (i, chunk) in body.chunks_exact(8).enumerate() {
            v[i] = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        Some(CounterSnapshot { values: [v[0], v[1], v[2], v[3], v[4], v[5]], next_seq: v[6] })
    }
}

struct Counters {
    pending: AtomicU64,
    dead: AtomicU64,
    acked: AtomicU64,
    live_bytes: AtomicU64,
    acked_bytes: AtomicU64,
    quarantined: AtomicU64,
}

struct Inner {
    cfg: SpoolConfig,
    db: sled::Db,
    committer: Arc<durable::Committer>,
    commit: Arc<GroupCommit>,
    /// Set when the spool was opened over a regression the operator accepted.
    regression: Option<String>,
    next_seq: AtomicU64,
    id_locks: Vec<Mutex<()>>,
    /// Serialises state transitions (ack, dead, requeue, drop, quarantine,
    /// compaction) so that two of them never race on one record.
    transition: Mutex<()>,
    counters: Counters,
    disk: DiskGuard,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.commit.shutdown();
    }
}

/// A handle to an open spool; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.inner.cfg.dir).finish()
    }
}

fn key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn acked_key(at: OffsetDateTime, seq: u64) -> [u8; 17] {
    let secs = u64::try_from(at.unix_timestamp()).unwrap_or(0);
    let mut k = [0u8; 17];
    k[0] = P_ACKED;
    k[1..9].copy_from_slice(&secs.to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn id_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(P_ID);
    k.extend_from_slice(id.as_bytes());
    k
}

fn seq_of(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[k.len() - 8..]);
    u64::from_be_bytes(b)
}

fn state_index_key(state: &State, seq: u64) -> Vec<u8> {
    match state {
        State::Pending => key(P_PENDING, seq).to_vec(),
        State::Dead { .. } => key(P_DEAD, seq).to_vec(),
        State::Acked { acked_at, .. } => acked_key(*acked_at, seq).to_vec(),
    }
}

/// Writes applied one by one, in the order they were added.
///
/// Not `sled::Batch`: in sled 0.34.7 the first `apply_batch` switches the whole
/// process into a mode where every operation takes a global `RwLock` and every
/// batch takes it exclusively, which serialises all appenders behind each other
/// and behind every ack (measured: durable appends at 64 writers fell from ~25k/s
/// to ~4k/s). Instead each change writes the record (the source of truth) first
/// and its indexes after, so every prefix a crash can leave is repaired from the
/// records when the spool is opened ([`Spool::open`]).
#[derive(Default)]
struct Ops {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Ops {
    fn insert(&mut self, k: impl AsRef<[u8]>, v: impl Into<Vec<u8>>) {
        self.ops.push((k.as_ref().to_vec(), Some(v.into())));
    }

    fn remove(&mut self, k: impl AsRef<[u8]>) {
        self.ops.push((k.as_ref().to_vec(), None));
    }

    fn apply(self, db: &sled::Db) -> Result<(), SpoolError> {
        for (k, v) in self.ops {
            match v {
                Some(v) => db.insert(k, v)?,
                None => db.remove(k)?,
            };
        }
        Ok(())
    }
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir` and starts its flusher thread.
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        Self::open_with(cfg, None)
    }

    /// Like [`Spool::open`], with a callback run after every group commit.
    pub fn open_with(cfg: SpoolConfig, observer: Option<CommitObserver>) -> Result<Spool, SpoolError> {
        durable::create_dir_all(&cfg.dir)
            .map_err(|e| SpoolError::Storage(format!("create {}: {e}", cfg.dir.display())))?;
        let (db, committer) = durable::open(&store_dir(&cfg.dir), SLED_CACHE_BYTES, LOCK_WAIT)?;
        let committer = Arc::new(committer);
        let counters = Counters {
            pending: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
        };
        // Rebuild counters and the seq high-water mark from what is on disk.
        let mut next_seq = match db.get(META_NEXT_SEQ)? {
            Some(v) if v.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v);
                u64::from_le_bytes(b)
            }
            _ => 1,
        };
        let marker = db.remove(META_CLEAN)?;
        // Make the marker's removal durable before anything else is written:
        // from here on, a crash (or a power cut) must lead to the repair pass.
        committer.commit().map_err(|e| SpoolError::Storage(format!("commit at open: {e}")))?;
        let clean = marker.is_some();
        if let Some(snapshot) = marker.as_deref().and_then(CounterSnapshot::decode) {
            // Closed cleanly: the counters saved at close are exact, and no
            // scan of the records is needed (restart time does not grow with
            // the backlog).
            snapshot.restore(&counters);
            next_seq = next_seq.max(snapshot.next_seq);
            return Spool::finish_open(cfg, db, committer, next_seq, counters, observer);
        }
        let mut repairs = 0u64;
        for item in db.scan_prefix([P_RECORD]) {
            let (k, v) = item?;
            let seq = seq_of(&k);
            next_seq = next_seq.max(seq + 1);
            let n = len_u64(v.len());
            let decoded = decode_record(&v);
            if let (false, Ok(record)) = (clean, &decoded) {
                repairs += repair_record_indexes(&db, seq, record)?;
            }
            // Only the state is needed here; a record that does not decode is
            // counted as live (it is still in the way) and quarantined on read.
            match decoded.map(|r| r.state) {
                Ok(State::Acked { .. }) => {
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                    counters.acked_bytes.fetch_add(n, Ordering::Relaxed);
                }
                Ok(State::Dead { .. }) => {
                    counters.dead.fetch_add(1, Ordering::Relaxed);
                    counters.live_bytes.fetch_add(n, Ordering::Relaxed);
                }
                Ok(State::Pending) | Err(_) => {
                    counters.pending.fetch_add(1, Ordering::Relaxed);
                    counters.live_bytes.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        for item in db.scan_prefix([P_QUARANTINE]) {
            let (k, _) = item?;
            next_seq = next_seq.max(seq_of(&k) + 1);
            counters.quarantined.fetch_add(1, Ordering::Relaxed);
        }
        if !clean {
            repairs += remove_stray_index_entries(&db)?;
        }
        if repairs > 0 {
            tracing::warn!(repairs, "spool was not closed cleanly; repaired index entries from the records");
        }
        Spool::finish_open(cfg, db, committer, next_seq, counters, observer)
    }

    /// The regression guard, then the flusher: the last steps of an open.
    fn finish_open(
        cfg: SpoolConfig,
        db: sled::Db,
        committer: Arc<durable::Committer>,
        next_seq: u64,
        counters: Counters,
        observer: Option<CommitObserver>,
    ) -> Result<Spool, SpoolError> {
        let state_path = cfg.dir.join("state");
        let label = format!("spool {}", cfg.dir.display());
        let held = next_seq.saturating_sub(1);
        let guarded = durable::guard(&db, &committer, &state_path, &label, held, cfg.accept_regression)
            .map_err(|e| match e {
                durable::GuardError::Io { .. } => SpoolError::Storage(e.to_string()),
                _ => SpoolError::Regressed(e.to_string()),
            })?;
        // Never hand out a seq the state file says was used.
        let next_seq = next_seq.max(guarded.seq_floor + 1);
        let regression = guarded.accepted.clone();
        let commit = GroupCommit::start(Arc::clone(&committer), guarded.state, observer);
        let disk = DiskGuard::new(cfg.dir.clone());
        Ok(Spool {
            inner: Arc::new(Inner {
                cfg,
                db,
                committer,
                commit,
                regression,
                next_seq: AtomicU64::new(next_seq),
                id_locks: (0..ID_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
                transition: Mutex::new(()),
                counters,
                disk,
            }),
        })
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
        let outcome = self.apply_append(event, OffsetDateTime::now_utc())?;
        self.wait_durable_counting(1).await?;
        Ok(outcome)
    }

    /// Appends many events under one group commit. Results are in input order;
    /// every `Ok` is durable when this returns.
    pub async fn append_batch(
        &self,
        events: Vec<Event>,
    ) -> Vec<Result<AppendOutcome, SpoolError>> {
        let now = OffsetDateTime::now_utc();
        let mut results: Vec<Result<AppendOutcome, SpoolError>> =
            events.into_iter().map(|e| self.apply_append(e, now)).collect();
        let applied = len_u64(results.iter().filter(|r| r.is_ok()).count());
        if let Err(e) = self.wait_durable_counting(applied).await {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        results
    }

    /// Waits until everything applied so far (by any thread) is on disk.
    pub async fn wait_durable(&self) -> Result<(), SpoolError> {
        self.wait_durable_counting(0).await
    }

    /// [`Spool::wait_durable`], counting `events` in the commit metrics.
    async fn wait_durable_counting(&self, events: u64) -> Result<(), SpoolError> {
        if let Some(f) = self.inner.commit.failure() {
            return Err(SpoolError::FlushFailed(f));
        }
        let ticket = self.inner.commit.ticket(events);
        self.inner.commit.wait(ticket).await?;
        Ok(())
    }

    fn id_lock(&self, id: &str) -> std::sync::MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        let stripe = usize::try_from(h.finish() % len_u64(ID_LOCK_STRIPES)).unwrap_or(0);
        self.inner.id_locks[stripe].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the capacity limits and the disk reserve for `frame_bytes` more.
    fn check_room(&self, frame_bytes: u64) -> Result<(), SpoolError> {
        let cfg = &self.inner.cfg;
        let c = &self.inner.counters;
        let events = c.pending.load(Ordering::Relaxed) + c.dead.load(Ordering::Relaxed);
        if events >= cfg.events_max {
            return Err(SpoolError::Full { what: "events", limit: cfg.events_max });
        }
        if c.live_bytes.load(Ordering::Relaxed) + frame_bytes > cfg.bytes_max {
            return Err(SpoolError::Full { what: "bytes", limit: cfg.bytes_max });
        }
        self.check_disk()
    }

    /// Checks the disk reserve (bytes and inodes) against a recent reading.
    pub fn check_disk(&self) -> Result<(), SpoolError> {
        let cfg = &self.inner.cfg;
        let free = self
            .inner
            .disk
            .free()
            .map_err(|e| SpoolError::Storage(format!("statvfs: {e}")))?;
        if free.bytes < cfg.disk_free_bytes_min {
            return Err(SpoolError::InsufficientStorage {
                what: "bytes",
                free: free.bytes,
                min: cfg.disk_free_bytes_min,
            });
        }
        if let Some(inodes) = free.inodes {
            if inodes < cfg.disk_free_inodes_min {
                return Err(SpoolError::InsufficientStorage {
                    what: "inodes",
                    free: inodes,
                    min: cfg.disk_free_inodes_min,
                });
            }
        }
        Ok(())
    }

    /// Whether appends can currently succeed: open, not failed, under the
    /// limits, disk reserve holding. For `/readyz`.
    pub fn check_writable(&self) -> Result<(), SpoolError> {
        if let Some(f) = self.inner.commit.failure() {
            return Err(SpoolError::FlushFailed(f));
        }
        self.check_room(0)
    }

    /// Free disk bytes and inodes right now.
    pub fn disk_free(&self) -> Result<DiskFree, SpoolError> {
        self.inner
            .disk
            .free_now()
            .map_err(|e| SpoolError::Storage(format!("statvfs: {e}")))
    }

    /// Applies an append to sled (not yet durable).
    fn apply_append(&self, event: Event, now: OffsetDateTime) -> Result<AppendOutcome, SpoolError> {
        if let Some(f) = self.inner.commit.failure() {
            return Err(SpoolError::FlushFailed(f));
        }
        if self.inner.commit.is_closed() {
            return Err(SpoolError::Closed);
        }
        let digest = event.digest();
        let ikey = id_key(&event.id);
        let _guard = self.id_lock(&event.id);
        if let Some(existing) = self.inner.db.get(&ikey)? {
            match IdEntry::decode(&existing) {
                Ok(entry) if self.inner.db.contains_key(key(P_RECORD, entry.seq))? => {
                    return Ok(if entry.digest == digest {
                        AppendOutcome::Duplicate { seq: entry.seq }
                    } else {
                        AppendOutcome::Conflict { seq: entry.seq }
                    });
                }
                Ok(entry) => {
                    // The record behind this id was quarantined or removed: the
                    // event was never forwarded from here (or is safe at the
                    // ledger, which dedupes), so the resend is taken as new.
                    tracing::warn!(id = %event.id, old_seq = entry.seq, "id entry without record; accepting the event again");
                }
                Err(e) => {
                    tracing::error!(id = %event.id, error = %e, "corrupt id entry; accepting the event again");
                }
            }
        }
        let seq = self.inner.next_seq.fetch_add(1, Ordering::SeqCst);
        let record = Record {
            seq,
            received_at: now,
            node: self.inner.cfg.node_id.clone(),
            state: State::Pending,
            attempts: 0,
            event,
        };
        let frame = encode_record(&record);
        let n = len_u64(frame.len());
        self.check_room(n)?;
        let mut batch = Ops::default();
        batch.insert(key(P_RECORD, seq), frame);
        batch.insert(key(P_PENDING, seq), Vec::new());
        batch.insert(ikey, IdEntry { seq, digest }.encode().to_vec());
        batch.apply(&self.inner.db)?;
        self.inner.commit.note_applied(seq);
        self.inner.counters.pending.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.live_bytes.fetch_add(n, Ordering::Relaxed);
        Ok(AppendOutcome::Accepted { seq })
    }

    /// The record spooled under event id `id`, if any.
    pub fn lookup(&self, id: &str) -> Result<Option<Record>, SpoolError> {
        match self.inner.db.get(id_key(id))? {
            None => Ok(None),
            Some(v) => match IdEntry::decode(&v) {
                Ok(entry) => self.get(entry.seq),
                Err(_) => Ok(None),
            },
        }
    }

    /// The record at `seq`, verified. A corrupt record is quarantined and `None`.
    pub fn get(&self, seq: u64) -> Result<Option<Record>, SpoolError> {
        let Some(bytes) = self.inner.db.get(key(P_RECORD, seq))? else {
            return Ok(None);
        };
        match decode_record(&bytes) {
            Ok(r) if r.seq == seq => Ok(Some(r)),
            Ok(r) => {
                self.quarantine(seq, &format!("record under seq {seq} says seq {}", r.seq))?;
                Ok(None)
            }
            Err(e) => {
                self.quarantine(seq, &e.to_string())?;
                Ok(None)
            }
        }
    }

    /// Pending records with `seq > after`, in seq order, at most `events_max`
    /// records and (past the first) at most `bytes_max` bytes of frames.
    /// Corrupt records are quarantined and skipped.
    pub fn read_pending(
        &self,
        after: u64,
        events_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start = key(P_PENDING, after.saturating_add(1));
        let end = key(P_PENDING, u64::MAX);
        for item in self.inner.db.range(start..=end) {
            if out.len() >= events_max {
                break;
            }
            let (k, _) = item?;
            let seq = seq_of(&k);
            let Some(raw) = self.inner.db.get(key(P_RECORD, seq))? else {
                // Index without record: only possible after a quarantine raced
                // this read; the index entry is cleaned there.
                continue;
            };
            if !out.is_empty() && bytes + raw.len() > bytes_max {
                break;
            }
            match decode_record(&raw) {
                Ok(r) if r.seq == seq && r.state == State::Pending => {
                    bytes += raw.len();
                    out.push(r);
                }
                Ok(r) if r.seq == seq => {
                    // A transition raced this read; the record is no longer pending.
                    continue;
                }
                Ok(r) => self.quarantine(seq, &format!("record under seq {seq} says seq {}", r.seq))?,
                Err(e) => self.quarantine(seq, &e.to_string())?,
            }
        }
        Ok(out)
    }

    /// Moves a record that failed verification out of the way: its raw bytes go
    /// to the quarantine, its indexes are removed. Never forwarded.
    fn quarantine(&self, seq: u64, why: &str) -> Result<(), SpoolError> {
        let _t = self.inner.transition.lock().unwrap_or_else(|p| p.into_inner());
        let Some(raw) = self.inner.db.get(key(P_RECORD, seq))? else {
            return Ok(());
        };
        tracing::error!(seq, reason = why, "corrupt spool record quarantined; it will not be forwarded");
        let mut batch = Ops::default();
        batch.insert(key(P_QUARANTINE, seq), raw.to_vec());
        batch.remove(key(P_RECORD, seq));
        let was_pending = self.inner.db.contains_key(key(P_PENDING, seq))?;
        let was_dead = self.inner.db.contains_key(key(P_DEAD, seq))?;
        batch.remove(key(P_PENDING, seq));
        batch.remove(key(P_DEAD, seq));
        batch.apply(&self.inner.db)?;
        let c = &self.inner.counters;
        let n = len_u64(raw.len());
        if was_pending {
            saturating_sub(&c.pending, 1);
            saturating_sub(&c.live_bytes, n);
        } else if was_dead {
            saturating_sub(&c.dead, 1);
            saturating_sub(&c.live_bytes, n);
        }
        c.quarantined.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Moves records to a new state in one atomic batch. Records not found, or
    /// not in an allowed `from` state, are skipped and their seqs returned.
    fn transition(
        &self,
        changes: &[(u64, State, Option<u32>)],
        allowed_from: fn(&State) -> bool,
    ) -> Result<Vec<u64>, SpoolError> {
        let _t = self.inner.transition.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = Ops::default();
        let mut skipped = Vec::new();
        let mut deltas: Vec<(State, State, u64)> = Vec::new();
        for (seq, new_state, attempts) in changes {
            let Some(raw) = self.inner.db.get(key(P_RECORD, *seq))? else {
                skipped.push(*seq);
                continue;
            };
            let mut record = match decode_record(&raw) {
                Ok(r) => r,
                Err(_) => {
                    skipped.push(*seq);
                    continue;
                }
            };
            if !allowed_from(&record.state) {
                skipped.push(*seq);
                continue;
            }
            let old_index = state_index_key(&record.state, *seq);
            let old_state = std::mem::replace(&mut record.state, new_state.clone());
            if let Some(a) = attempts {
                record.attempts = *a;
            }
            let frame = encode_record(&record);
            deltas.push((old_state, new_state.clone(), len_u64(frame.len())));
            // Record first (the truth), then the new index, then the old one goes.
            batch.insert(key(P_RECORD, *seq), frame);
            batch.insert(state_index_key(new_state, *seq), Vec::new());
            batch.remove(old_index);
        }
        batch.apply(&self.inner.db)?;
        for (old, new, n) in deltas {
            self.count(&old, n, false);
            self.count(&new, n, true);
        }
        Ok(skipped)
    }

    fn count(&self, state: &State, bytes: u64, add: bool) {
        let c = &self.inner.counters;
        let (events, b) = match state {
            State::Pending => (&c.pending, &c.live_bytes),
            State::Dead { .. } => (&c.dead, &c.live_bytes),
            State::Acked { .. } => (&c.acked, &c.acked_bytes),
        };
        if add {
            events.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(bytes, Ordering::Relaxed);
        } else {
            saturating_sub(events, 1);
            saturating_sub(b, bytes);
        }
    }

    /// Marks pending records acked by the ledger: `(seq, attempts, ledger_seq)`.
    /// Not waited on: an ack lost in a crash only means the record is sent again,
    /// and the ledger dedupes it.
    pub fn mark_acked(&self, acks: &[(u64, u32, Option<u64>)]) -> Result<(), SpoolError> {
        let now = OffsetDateTime::now_utc();
        let changes: Vec<_> = acks
            .iter()
            .map(|(seq, attempts, ledger_seq)| {
                (*seq, State::Acked { acked_at: now, ledger_seq: *ledger_seq }, Some(*attempts))
            })
            .collect();
        self.transition(&changes, |s| *s == State::Pending)?;
        Ok(())
    }

    /// Moves a pending record to the dead-letter queue with the ledger's reason.
    pub fn mark_dead(&self, seq: u64, attempts: u32, code: &str, reason: &str) -> Result<bool, SpoolError> {
        let state = State::dead(OffsetDateTime::now_utc(), code, reason);
        let skipped = self.transition(&[(seq, state, Some(attempts))], |s| *s == State::Pending)?;
        Ok(skipped.is_empty())
    }

    /// Puts a dead letter back in the pending queue (after the ledger is fixed).
    /// Durable when it returns. `false` if `seq` is not a dead letter.
    pub async fn requeue(&self, seq: u64) -> Result<bool, SpoolError> {
        let skipped = self.transition(&[(seq, State::Pending, Some(0))], |s| {
            matches!(s, State::Dead { .. })
        })?;
        self.wait_durable().await?;
        Ok(skipped.is_empty())
    }

    /// Moves acked records back to the pending queue (attempts 0), so the
    /// forwarder sends them again: reconciliation found them missing at the
    /// ledger (`spoolctl reconcile --requeue`; the ledger's dedupe keeps the
    /// effect exactly once). Seqs that are not acked (pending, dead, unknown)
    /// are skipped. Durable when it returns. Returns how many moved.
    pub async fn requeue_acked(&self, seqs: &[u64]) -> Result<u64, SpoolError> {
        // Each seq once: a transition batch reads every record before any
        // change is applied, so a repeated seq would be moved (and counted) twice.
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        let changes: Vec<_> = seqs.iter().map(|seq| (*seq, State::Pending, Some(0))).collect();
        let skipped = self.transition(&changes, |s| matches!(s, State::Acked { .. }))?;
        self.wait_durable().await?;
        Ok(len_u64(seqs.len().saturating_sub(skipped.len())))
    }

    /// Removes a dead letter for good (operator decision). Durable when it
    /// returns. `false` if `seq` is not a dead letter.
    pub async fn drop_dead(&self, seq: u64) -> Result<bool, SpoolError> {
        let removed = {
            let _t = self.inner.transition.lock().unwrap_or_else(|p| p.into_inner());
            match self.get_raw_state(seq)? {
                Some((record, n)) if matches!(record.state, State::Dead { .. }) => {
                    self.store_next_seq()?;
                    let mut batch = Ops::default();
                    batch.remove(key(P_RECORD, seq));
                    batch.remove(key(P_DEAD, seq));
                    self.remove_id_if_points_to(&mut batch, &record.event.id, seq)?;
                    batch.apply(&self.inner.db)?;
                    self.count(&record.state, n, false);
                    true
                }
                _ => false,
            }
        };
        self.wait_durable().await?;
        Ok(removed)
    }

    fn get_raw_state(&self, seq: u64) -> Result<Option<(Record, u64)>, SpoolError> {
        let Some(raw) = self.inner.db.get(key(P_RECORD, seq))? else {
            return Ok(None);
        };
        Ok(decode_record(&raw).ok().map(|r| (r, len_u64(raw.len()))))
    }

    fn remove_id_if_points_to(&self, batch: &mut Ops, id: &str, seq: u64) -> Result<(), SpoolError> {
        let ikey = id_key(id);
        if let Some(v) = self.inner.db.get(&ikey)? {
            if IdEntry::decode(&v).map(|e| e.seq == seq).unwrap_or(true) {
                batch.remove(ikey);
            }
        }
        Ok(())
    }

    /// Persists the seq high-water mark; called before anything is removed so
    /// that seqs are never reused after a restart.
    fn store_next_seq(&self) -> Result<(), SpoolError> {
        let next = self.inner.next_seq.load(Ordering::SeqCst);
        self.inner.db.insert(META_NEXT_SEQ, &next.to_le_bytes())?;
        Ok(())
    }

    /// Removes acked records whose ack is older than `acked_retention` at `now`.
    /// Returns how many were removed.
    pub fn compact(&self, now: OffsetDateTime) -> Result<u64, SpoolError> {
        let cutoff = now - self.inner.cfg.acked_retention;
        let cutoff_key = acked_key(cutoff, 0);
        let mut removed = 0u64;
        loop {
            let _t = self.inner.transition.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<sled::IVec> = self
                .inner
                .db
                .range(vec![P_ACKED]..cutoff_key.to_vec())
                .keys()
                .take(COMPACT_BATCH_RECORDS)
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                return Ok(removed);
            }
            self.store_next_seq()?;
            let mut batch = Ops::default();
            let mut freed = Vec::new();
            for k in &keys {
                let seq = seq_of(k);
                if let Some((record, n)) = self.get_raw_state(seq)? {
                    batch.remove(key(P_RECORD, seq));
                    self.remove_id_if_points_to(&mut batch, &record.event.id, seq)?;
                    freed.push((record.state, n));
                }
                // The index entry goes last: a crash before it leaves an entry
                // without a record, which the next compaction removes.
                batch.remove(k);
            }
            batch.apply(&self.inner.db)?;
            for (state, n) in freed {
                self.count(&state, n, false);
            }
            removed += len_u64(keys.len());
        }
    }

    /// Records in seq order starting at `from_seq`, filtered by state, at most
    /// `limit`. Corrupt ones are skipped (and quarantined).
    pub fn list(&self, filter: StateFilter, from_seq: u64, limit: usize) -> Result<Vec<Record>, SpoolError> {
        let prefix = match filter {
            StateFilter::All => P_RECORD,
            StateFilter::Pending => P_PENDING,
            StateFilter::Dead => P_DEAD,
            StateFilter::Acked => P_RECORD,
        };
        let mut out = Vec::new();
        for item in self.inner.db.range(key(prefix, from_seq)..=key(prefix, u64::MAX)) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item?;
            if let Some(r) = self.get(seq_of(&k))? {
                if filter != StateFilter::Acked || matches!(r.state, State::Acked { .. }) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// The newest `limit` records (any state), oldest first.
    pub fn tail(&self, limit: usize) -> Result<Vec<Record>, SpoolError> {
        let mut out = Vec::new();
        for item in self.inner.db.range(key(P_RECORD, 0)..=key(P_RECORD, u64::MAX)).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item?;
            if let Some(r) = self.get(seq_of(&k))? {
                out.push(r);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Quarantined records (raw bytes kept in the spool for forensics).
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, SpoolError> {
        self.inner
            .db
            .scan_prefix([P_QUARANTINE])
            .map(|item| {
                let (k, v) = item?;
                Ok(Quarantined { seq: seq_of(&k), bytes: v.len() })
            })
            .collect()
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Result<Stats, SpoolError> {
        let c = &self.inner.counters;
        let oldest_pending = match self.inner.db.scan_prefix([P_PENDING]).keys().next() {
            Some(k) => self.get_raw_state(seq_of(&k?))?.map(|(r, _)| r.received_at),
            None => None,
        };
        Ok(Stats {
            pending_events: c.pending.load(Ordering::Relaxed),
            dead_events: c.dead.load(Ordering::Relaxed),
            acked_events: c.acked.load(Ordering::Relaxed),
            live_bytes: c.live_bytes.load(Ordering::Relaxed),
            acked_bytes: c.acked_bytes.load(Ordering::Relaxed),
            quarantined: c.quarantined.load(Ordering::Relaxed),
            oldest_pending,
            next_seq: self.inner.next_seq.load(Ordering::SeqCst),
            commits: self.inner.commit.commits(),
            bytes_max: self.inner.cfg.bytes_max,
            events_max: self.inner.cfg.events_max,
        })
    }

    /// Checks every record's checksum and the indexes, read-only. Nothing is
    /// quarantined or repaired; the report names every fault.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport, SpoolError> {
        let db = &self.inner.db;
        let mut report = VerifyReport::default();
        let mut faults = Vec::new();
        let mut records = 0u64;
        for item in db.scan_prefix([P_RECORD]) {
            let (k, v) = item?;
            let seq = seq_of(&k);
            records += 1;
            progress(records);
            match decode_record(&v) {
                Err(e) => faults.push(Fault { seq: Some(seq), what: format!("record: {e}") }),
                Ok(r) => {
                    if r.seq != seq {
                        faults.push(Fault { seq: Some(seq), what: format!("record says seq {}", r.seq) });
                    }
                    if !db.contains_key(state_index_key(&r.state, seq))? {
                        faults.push(Fault { seq: Some(seq), what: format!("{} record missing from its index", r.state.name()) });
                    }
                    match db.get(id_key(&r.event.id))? {
                        None => faults.push(Fault { seq: Some(seq), what: format!("id {:?} missing from the id index", r.event.id) }),
                        Some(e) => match IdEntry::decode(&e) {
                            Err(err) => faults.push(Fault { seq: Some(seq), what: format!("id entry: {err}") }),
                            Ok(entry) if entry.seq == seq && entry.digest != r.event.digest() => {
                                faults.push(Fault { seq: Some(seq), what: "id entry digest does not match the event".into() })
                            }
                            Ok(_) => {}
                        },
                    }
                }
            }
        }
        for prefix in [P_PENDING, P_DEAD, P_ACKED] {
            for k in db.scan_prefix([prefix]).keys() {
                let seq = seq_of(&k?);
                if !db.contains_key(key(P_RECORD, seq))? {
                    faults.push(Fault { seq: Some(seq), what: format!("index {:?} entry without a record", prefix as char) });
                }
            }
        }
        for item in db.scan_prefix([P_ID]) {
            let (k, v) = item?;
            if let Err(e) = IdEntry::decode(&v) {
                let id = String::from_utf8_lossy(&k[1..]).into_owned();
                faults.push(Fault { seq: None, what: format!("id entry {id:?}: {e}") });
            }
        }
        for q in self.quarantined()? {
            faults.push(Fault { seq: Some(q.seq), what: "record is in quarantine".into() });
        }
        report.records = records;
        report.faults = faults;
        Ok(report)
    }

    /// Flushes, stops the flusher and marks the spool closed cleanly (so the
    /// next open skips the index repair pass). Further appends fail with `Closed`.
    pub fn close(&self) {
        self.inner.commit.shutdown();
        let db = &self.inner.db;
        let snapshot = {
            // No transition may run while the snapshot is taken.
            let _t = self.inner.transition.lock().unwrap_or_else(|p| p.into_inner());
            CounterSnapshot::take(&self.inner.counters, self.inner.next_seq.load(Ordering::SeqCst))
        };
        let marked = db
            .insert(META_CLEAN, snapshot.encode())
            .map_err(|e| e.to_string())
            .and_then(|_| self.inner.committer.commit().map_err(|e| e.to_string()));
        if let Err(e) = marked {
            tracing::warn!(error = %e, "could not mark the spool closed cleanly; the next open will check its indexes");
        }
    }
}

/// How long [`Spool::open`] waits for a lock that is being released, in time.
/// sled's IO threads of a handle dropped a moment ago in this process can hold
/// the file lock briefly; a daemon holding it holds it for much longer.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Makes the indexes agree with one record (the truth) after a crash: its state
/// index present, other state indexes absent, its id entry present.
fn repair_record_indexes(db: &sled::Db, seq: u64, record: &Record) -> Result<u64, SpoolError> {
    let mut fixes = 0;
    let want = state_index_key(&record.state, seq);
    if !db.contains_key(&want)? {
        db.insert(want.clone(), Vec::new())?;
        fixes += 1;
    }
    for other in [key(P_PENDING, seq), key(P_DEAD, seq)] {
        if other[..] != want[..] && db.remove(other)?.is_some() {
            fixes += 1;
        }
    }
    let ikey = id_key(&record.event.id);
    let owner = db.get(&ikey)?.and_then(|v| IdEntry::decode(&v).ok());
    let owned_elsewhere = match owner {
        Some(e) if e.seq == seq => return Ok(fixes),
        Some(e) => db.contains_key(key(P_RECORD, e.seq))?,
        None => false,
    };
    if !owned_elsewhere {
        db.insert(ikey, IdEntry { seq, digest: record.event.digest() }.encode().to_vec())?;
        fixes += 1;
    }
    Ok(fixes)
}

/// Removes pending and dead index entries whose record is gone (a crash in the
/// middle of a drop or a quarantine). Acked entries are left to compaction.
fn remove_stray_index_entries(db: &sled::Db) -> Result<u64, SpoolError> {
    let mut fixes = 0;
    for prefix in [P_PENDING, P_DEAD] {
        for k in db.scan_prefix([prefix]).keys() {
            let k = k?;
            if !db.contains_key(key(P_RECORD, seq_of(&k)))? {
                db.remove(k)?;
                fixes += 1;
            }
        }
    }
    Ok(fixes)
}

fn saturating_sub(a: &AtomicU64, n: u64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
}

/// Test hook: the raw sled tree, to inject corruption in tests.
#[doc(hidden)]
pub fn raw_db(spool: &Spool) -> sled::Db {
    spool.inner.db.clone()
}

/// Test hook: the sled key of a record.
#[doc(hidden)]
pub fn record_key(seq: u64) -> [u8; 9] {
    key(P_RECORD, seq)
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
