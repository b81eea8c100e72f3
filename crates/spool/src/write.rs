//! The write path: one thread (`spool-writer`) takes every append and every
//! queued state change, and makes them durable in group commits.
//!
//! One round of the writer:
//! 1. take the queued requests (appends and barriers);
//! 2. for each event, in order: look its id up (the open partition in memory,
//!    the sealed ones' filters, confirming a hit against the stored record);
//!    a duplicate or conflict is answered with the original seq; a new event
//!    is checked against the limits and only then gets the next seq (so a
//!    refused append burns none) and its entry frame goes into the current
//!    block (a new block once it would pass [`BLOCK_PAYLOAD_BYTES_TARGET`]);
//! 3. under the acks lock: add the new events to the counters, take the
//!    state changes queued by acks/dead letters/requeues, and snapshot the
//!    [`Meta`] (counters, watermark, next seq);
//! 4. one `apply_batch`: blocks, a sealed id partition when the open one is
//!    full, the queued changes, the ack-time log, the meta;
//! 5. the durable commit (`Db::flush()` + fsyncs, and the state file's
//!    high-water mark), then the new seqs become visible to readers and every
//!    request of the round is answered.
//!
//! Nothing calls `flush_async`; this thread is the only one that writes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spool_format::{encode_entry_prepared, BlockBuilder, Event, OffsetDateTime, Prepared};
use tokio::sync::{oneshot, Semaphore};

use crate::index::{fingerprint, OPEN_IDS_MAX};
use crate::layout::{key, len_u64, Meta, META_KEY, P_ACK_LOG, P_BLOCK, VALUE_BYTES_MAX};
use crate::{check_disk, check_limits, AppendOutcome, Inner, SpoolError};

/// Payload bytes of a block before the writer starts the next one: the value
/// limit less the largest header (37 bytes and a 128-byte node id).
pub const BLOCK_PAYLOAD_BYTES_TARGET: usize = VALUE_BYTES_MAX - 256;
/// Events queued for the writer at most; an append waits for room. 262,144:
/// hundreds of full HTTP batches, several group commits' worth at any rate
/// this machine reaches, and at ~300 bytes an event about 80 MiB at worst.
pub const QUEUE_EVENTS_MAX: usize = 1 << 18;
/// How often, at most, the ack-time log gets an entry, in time: `acked_at`
/// of acked records (and so their compaction) is known to within this.
pub const ACK_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// What one group commit did, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct CommitInfo {
    /// Wall time of the commit (`apply_batch`, `Db::flush()` and the fsyncs).
    pub duration: Duration,
    /// Requests (appends, batches, barriers) this commit answered.
    pub tickets: u64,
    /// Events appended (accepted, duplicate or conflict) in this commit.
    pub events: u64,
    /// sled writes (inserts and removes) in this commit's batch.
    pub sled_writes: u64,
}

/// Callback invoked by the writer thread after every successful commit.
pub type CommitObserver = Arc<dyn Fn(CommitInfo) + Send + Sync>;

type Results = Vec<Result<AppendOutcome, SpoolError>>;
type Kv = (Vec<u8>, Vec<u8>);

enum Request {
    /// Events prepared by the caller (encoded, digested, fingerprinted), so
    /// that the writer thread only decides and copies.
    Append { events: Vec<(Prepared, u64)>, now: OffsetDateTime, reply: oneshot::Sender<Results> },
    Barrier { reply: oneshot::Sender<Result<(), SpoolError>> },
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<Request>,
    /// State changes or acks are waiting for a commit.
    poked: bool,
    stop: bool,
}

/// Handle shared between callers and the writer thread.
pub(crate) struct Writer {
    queue: Mutex<Queue>,
    wake: Condvar,
    room: Arc<Semaphore>,
    failed: Mutex<Option<Arc<str>>>,
    closed: AtomicBool,
    next_seq: AtomicU64,
    commits: AtomicU64,
    /// sled writes (inserts and removes) applied by all commits.
    sled_writes: AtomicU64,
    /// Rounds that have taken the queued state changes (counted under the
    /// acks lock) and rounds committed: see [`Writer::wait_round`].
    taken: AtomicU64,
    done: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn closed_or(failed: &Option<Arc<str>>) -> SpoolError {
    match failed {
        Some(f) => SpoolError::FlushFailed(Arc::clone(f)),
        None => SpoolError::Closed,
    }
}

impl Writer {
    pub(crate) fn new(next_seq: u64) -> Arc<Writer> {
        Arc::new(Writer {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            room: Arc::new(Semaphore::new(QUEUE_EVENTS_MAX)),
            failed: Mutex::new(None),
            closed: AtomicBool::new(false),
            next_seq: AtomicU64::new(next_seq),
            commits: AtomicU64::new(0),
            sled_writes: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            done: AtomicU64::new(0),
            thread: Mutex::new(None),
        })
    }

    /// Starts the writer thread over an opened spool.
    pub(crate) fn start(
        inner: std::sync::Weak<Inner>,
        writer: &Arc<Writer>,
        state: durable::StateFile,
        observer: Option<CommitObserver>,
    ) {
        let w = Arc::clone(writer);
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || w.run(&inner, state, observer))
            .expect("spawn the spool writer thread");
        *writer.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub(crate) fn sled_writes(&self) -> u64 {
        self.sled_writes.load(Ordering::Relaxed)
    }

    /// Rounds that took queued changes so far (read under the acks lock: the
    /// changes queued now are taken by round `rounds_taken() + 1`).
    pub(crate) fn rounds_taken(&self) -> u64 {
        self.taken.load(Ordering::SeqCst)
    }

    /// Blocks until round `n` is committed (for callers outside async code).
    pub(crate) fn wait_round(&self, n: u64) -> Result<(), SpoolError> {
        while self.done.load(Ordering::SeqCst) < n {
            self.check_usable()?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    pub(crate) fn check_usable(&self) -> Result<(), SpoolError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if failed.is_some() || self.closed.load(Ordering::SeqCst) {
            return Err(closed_or(&failed));
        }
        Ok(())
    }

    fn push(&self, r: Request) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.stop {
            return false;
        }
        q.requests.push_back(r);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// Wakes the writer: state changes wait for a commit.
    pub(crate) fn poke(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.poked = true;
        drop(q);
        self.wake.notify_one();
    }

    /// Appends `events` in the next group commit; results in input order.
    pub(crate) async fn submit(&self, events: Vec<Event>, now: OffsetDateTime) -> Results {
        let n = events.len();
        if let Err(e) = self.check_usable() {
            return vec![Err(e); n];
        }
        let permits = u32::try_from(n.clamp(1, QUEUE_EVENTS_MAX)).unwrap_or(u32::MAX);
        let Ok(_permit) = Arc::clone(&self.room).acquire_many_owned(permits).await else {
            return vec![Err(SpoolError::Closed); n];
        };
        let events: Vec<(Prepared, u64)> = events
            .into_iter()
            .map(|e| {
                let fp = fingerprint(&e.id);
                (Prepared::new(e), fp)
            })
            .collect();
        let (tx, rx) = oneshot::channel();
        if !self.push(Request::Append { events, now, reply: tx }) {
            return vec![Err(SpoolError::Closed); n];
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => {
                let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
                vec![Err(closed_or(&failed)); n]
            }
        }
    }

    /// Resolves once a commit that started after this call has completed.
    pub(crate) async fn barrier(&self) -> Result<(), SpoolError> {
        self.check_usable()?;
        let (tx, rx) = oneshot::channel();
        if !self.push(Request::Barrier { reply: tx }) {
            return Err(SpoolError::Closed);
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(closed_or(&self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone())),
        }
    }

    /// Commits what is outstanding and stops the thread (idempotent).
    pub(crate) fn shutdown(&self) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.stop = true;
        }
        self.wake.notify_one();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        self.closed.store(true, Ordering::SeqCst);
    }

    fn run(&self, inner: &std::sync::Weak<Inner>, mut state: durable::StateFile, observer: Option<CommitObserver>) {
        loop {
            let (requests, stop) = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                while q.requests.is_empty() && !q.poked && !q.stop {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                q.poked = false;
                (std::mem::take(&mut q.requests), q.stop)
            };
            let Some(inner) = inner.upgrade() else { return };
            match self.round(&inner, requests, &mut state, observer.as_ref()) {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "spool commit failed; refusing further writes");
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(format!("commit failed: {e}")));
                    self.fail_queued();
                    return;
                }
            }
            if stop {
                let more = !self.queue.lock().unwrap_or_else(|p| p.into_inner()).requests.is_empty();
                let dirty = inner.acks.lock().map(|a| a.dirty || !a.writes.is_empty()).unwrap_or(false);
                if more || dirty {
                    continue;
                }
                if let Err(e) = state.advance(self.next_seq().saturating_sub(1), true) {
                    tracing::error!(error = %e, path = %state.path().display(), "could not write the spool's state file at close");
                }
                self.closed.store(true, Ordering::SeqCst);
                return;
            }
        }
    }

    /// Answers everything still queued after a failure.
    fn fail_queued(&self) {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.stop = true;
        for r in q.requests.drain(..) {
            match r {
                Request::Append { events, reply, .. } => {
                    let _ = reply.send(vec![Err(closed_or(&failed)); events.len()]);
                }
                Request::Barrier { reply } => {
                    let _ = reply.send(Err(closed_or(&failed)));
                }
            }
        }
    }

    /// One group commit; returns the events appended.
    fn round(
        &self,
        inner: &Inner,
        requests: VecDeque<Request>,
        state: &mut durable::StateFile,
        observer: Option<&CommitObserver>,
    ) -> Result<(), SpoolError> {
        let started = Instant::now();
        let tickets = len_u64(requests.len());
        let mut group = Group::new(self.next_seq(), &inner.cfg.node_id);
        let (mut used_events, mut used_bytes) = inner.acks.lock().unwrap_or_else(|p| p.into_inner()).live();
        let disk = check_disk(&inner.cfg, &inner.disk);
        let mut replies = Vec::with_capacity(requests.len());
        let mut events_total = 0u64;
        let mut seal_writes = Vec::new();
        {
            let mut index = inner.index.write().unwrap_or_else(|p| p.into_inner());
            for r in requests {
                match r {
                    Request::Barrier { reply } => replies.push(Reply::Barrier(reply)),
                    Request::Append { events, now, reply } => {
                        events_total += len_u64(events.len());
                        let mut results = Vec::with_capacity(events.len());
                        for (event, fp) in events {
                            results.push(self.append_one(inner, &mut index, &mut group, event, fp, now, &disk, &mut used_events, &mut used_bytes));
                        }
                        replies.push(Reply::Append(reply, results));
                    }
                }
            }
            if index.open_len() >= OPEN_IDS_MAX {
                seal_writes = index.seal();
            }
        }
        let (blocks, next_seq, added_events, added_bytes) = group.finish();
        let mut batch = sled::Batch::default();
        let mut writes = len_u64(blocks.len() + seal_writes.len()) + 1;
        for (k, v) in blocks {
            batch.insert(k, v);
        }
        for (k, v) in seal_writes {
            batch.insert(k, v);
        }
        let meta = {
            let mut a = inner.acks.lock().unwrap_or_else(|p| p.into_inner());
            if writes == 1 && added_events == 0 && a.writes.is_empty() && !a.dirty {
                // Nothing new since the last commit (barriers, duplicates of
                // durable events): everything asked about is durable already.
                self.taken.fetch_add(1, Ordering::SeqCst);
                drop(a);
                self.done.fetch_add(1, Ordering::SeqCst);
                answer_all(replies);
                return Ok(());
            }
            a.counts.pending += added_events;
            a.counts.live_bytes += added_bytes;
            self.taken.fetch_add(1, Ordering::SeqCst);
            writes += len_u64(a.writes.len());
            for (k, v) in std::mem::take(&mut a.writes) {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            // The ack-time log: when the watermark passed which seq.
            if a.dirty {
                if let Some(at) = a.last_advance {
                    let due = match inner.last_ack_log.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                        None => true,
                        Some((w, t)) => *w < a.watermark && (at - *t) >= ACK_LOG_INTERVAL,
                    };
                    if due {
                        writes += 1;
                        batch.insert(&key(P_ACK_LOG, a.watermark), &at.unix_timestamp().to_le_bytes());
                        *inner.last_ack_log.lock().unwrap_or_else(|p| p.into_inner()) = Some((a.watermark, at));
                    }
                }
            }
            a.dirty = false;
            let c = a.meta_counts();
            let index = inner.index.read().unwrap_or_else(|p| p.into_inner());
            Meta {
                next_seq,
                watermark: a.watermark,
                compacted_below: a.compacted_below,
                open_from: index.open_from,
                pending: c.pending,
                dead: c.dead,
                acked: c.acked,
                live_bytes: c.live_bytes,
                acked_bytes: c.acked_bytes,
                quarantined: c.quarantined,
                next_partition: index.next_partition,
            }
        };
        debug_assert!(meta.watermark < meta.next_seq, "the watermark is below every seq not yet assigned");
        batch.insert(META_KEY, meta.encode());
        let result = inner
            .db
            .apply_batch(batch)
            .map_err(SpoolError::from)
            .and_then(|()| inner.committer.commit_and_advance(state, next_seq - 1).map_err(SpoolError::Storage));
        match result {
            Ok(()) => {
                self.next_seq.store(next_seq, Ordering::SeqCst);
                self.done.fetch_add(1, Ordering::SeqCst);
                // Visible only now that it is durable, and in order.
                inner.visible.store(next_seq - 1, Ordering::SeqCst);
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.sled_writes.fetch_add(writes, Ordering::Relaxed);
                if let Some(observe) = observer {
                    observe(CommitInfo { duration: started.elapsed(), tickets, events: events_total, sled_writes: writes });
                }
                answer_all(replies);
                Ok(())
            }
            Err(e) => {
                let msg: Arc<str> = Arc::from(format!("commit failed: {e}"));
                // Failed before anyone hears of it: a client answered
                // `storage_failed` must not then find the spool ready.
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&msg));
                for r in replies {
                    match r {
                        Reply::Append(tx, results) => {
                            let _ = tx.send(results.into_iter().map(|r| r.and(Err(SpoolError::FlushFailed(Arc::clone(&msg))))).collect());
                        }
                        Reply::Barrier(tx) => {
                            let _ = tx.send(Err(SpoolError::FlushFailed(Arc::clone(&msg))));
                        }
                    }
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn append_one(
        &self,
        inner: &Inner,
        index: &mut crate::index::Index,
        group: &mut Group,
        event: Prepared,
        fp: u64,
        now: OffsetDateTime,
        disk: &Result<(), SpoolError>,
        used_events: &mut u64,
        used_bytes: &mut u64,
    ) -> Result<AppendOutcome, SpoolError> {
        let digest = event.digest;
        for seq in index.candidates(&inner.db, fp)? {
            let known = match group.get(seq) {
                Some((id, d)) => Some((id.to_owned(), *d)),
                None => crate::read::identity(inner, seq)?,
            };
            if let Some((id, d)) = known {
                if id == event.event.id {
                    return Ok(if d == digest { AppendOutcome::Duplicate { seq } } else { AppendOutcome::Conflict { seq } });
                }
            }
        }
        disk.clone()?;
        let seq = group.next_seq;
        let frame = encode_entry_prepared(seq, now, &event);
        let n = len_u64(frame.len());
        check_limits(&inner.cfg, *used_events, *used_bytes, 1, n)?;
        *used_events += 1;
        *used_bytes += n;
        index.insert(fp, seq);
        group.push(seq, frame, event.event.id, digest);
        Ok(AppendOutcome::Accepted { seq })
    }
}

enum Reply {
    Append(oneshot::Sender<Results>, Results),
    Barrier(oneshot::Sender<Result<(), SpoolError>>),
}

/// Answers every request of a round whose writes are durable.
fn answer_all(replies: Vec<Reply>) {
    for r in replies {
        match r {
            Reply::Append(tx, results) => {
                let _ = tx.send(results);
            }
            Reply::Barrier(tx) => {
                let _ = tx.send(Ok(()));
            }
        }
    }
}

/// The blocks of one group commit being built.
struct Group<'a> {
    node: &'a str,
    next_seq: u64,
    first_seq: u64,
    blocks: Vec<Kv>,
    current: BlockBuilder,
    /// (seq, id, digest) of this round's new events, for dedupe inside the round.
    ids: Vec<(u64, String, [u8; 32])>,
    bytes: u64,
}

impl<'a> Group<'a> {
    fn new(next_seq: u64, node: &'a str) -> Group<'a> {
        Group { node, next_seq, first_seq: next_seq, blocks: Vec::new(), current: BlockBuilder::new(), ids: Vec::new(), bytes: 0 }
    }

    fn get(&self, seq: u64) -> Option<(&str, &[u8; 32])> {
        if seq < self.first_seq {
            return None;
        }
        let i = self.ids.binary_search_by_key(&seq, |(s, _, _)| *s).ok()?;
        Some((self.ids[i].1.as_str(), &self.ids[i].2))
    }

    fn push(&mut self, seq: u64, frame: Vec<u8>, id: String, digest: [u8; 32]) {
        debug_assert_eq!(seq, self.next_seq, "seqs are assigned in commit order, without gaps");
        if !self.current.is_empty() && self.current.payload_bytes() + frame.len() > BLOCK_PAYLOAD_BYTES_TARGET {
            self.close_block();
        }
        self.bytes += len_u64(frame.len());
        self.current.push(seq, &frame);
        self.ids.push((seq, id, digest));
        self.next_seq += 1;
    }

    fn close_block(&mut self) {
        let b = std::mem::take(&mut self.current);
        if let Some(first) = b.first_seq() {
            let frame = b.finish(self.node);
            debug_assert!(frame.len() <= VALUE_BYTES_MAX || self.ids.len() == 1, "block over the value limit");
            self.blocks.push((key(P_BLOCK, first).to_vec(), frame));
        }
    }

    /// Blocks, the next seq, the events and bytes added.
    fn finish(mut self) -> (Vec<Kv>, u64, u64, u64) {
        self.close_block();
        (self.blocks, self.next_seq, len_u64(self.ids.len()), self.bytes)
    }
}
