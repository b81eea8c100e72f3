//! The embedded store: one sled tree.
//!
//! ```text
//! e <event id>                 -> row (JSON: ledger_seq, node, node_seq, times, digest, event)
//! s <ledger_seq u64 BE>        -> event id          (all events in ledger order)
//! P <payee 16 bytes> <seq BE>  -> event id          (by payee)
//! R <recipient 16> <seq BE>    -> event id          (by recipient)
//! Y <payer 16> <seq BE>        -> event id          (by payer)
//! mcount                       -> u64 LE            (events recorded)
//! ```
//!
//! **Invariant:** a batch's rows and index entries go in one atomic
//! `apply_batch`, under the write lock, so two batches carrying the same id can
//! never both create it.
//! **Invariant:** `record_batch` returns only after a durable commit (`Db::flush()`
//! plus the fdatasync of sled's files, [`durable::Committer::commit`]: a flush
//! alone does not survive a power cut) that began after its batch (and every
//! batch it saw, for duplicates) was applied. Commits are serialised and
//! shared: one covers every batch applied before it started (group commit).
//! `flush_async` is never called.
//!
//! **Invariant:** a store that holds less than its state file
//! (`<dir>/offgrid-state`, [`durable::guard`]) says was made durable refuses to
//! open ([`StoreError::Regressed`]) unless the operator accepts it; even then
//! no `ledger_seq` is reused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_format::{Event, OffsetDateTime, Uuid};

use crate::store::{outcomes, Filter, IncomingEvent, Outcome, Page, Store, StoreError, StoreStats, StoredEvent};

/// Index entries a single query may walk past before it returns what it found
/// (with a cursor): bounds the work one read request can cause.
pub const QUERY_SCAN_ENTRIES_MAX: usize = 100_000;
/// sled page cache, in bytes: keeps recent rows and indexes hot; memory does not
/// grow with the number of events beyond this.
const SLED_CACHE_BYTES: u64 = 128 << 20;

const P_EVENT: u8 = b'e';
const P_SEQ: u8 = b's';
const P_PAYEE: u8 = b'P';
const P_RECIPIENT: u8 = b'R';
const P_PAYER: u8 = b'Y';
const META_COUNT: &[u8] = b"mcount";
/// The regression guard's state file, inside the store's directory (sled
/// ignores files it does not know).
const STATE_FILE: &str = "offgrid-state";

#[derive(Serialize, Deserialize)]
struct Row {
    ledger_seq: u64,
    node: String,
    node_seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    recorded_at: OffsetDateTime,
    digest: String,
    event: serde_json::Value,
}

struct Inner {
    db: sled::Db,
    /// Serialises check-then-insert of ids and ledger_seq allocation.
    write: Mutex<WriteState>,
    committer: durable::Committer,
    /// Serialises commits; holds the highest generation known durable and the
    /// state file (advanced to the last ledger_seq a commit covered).
    flush: Mutex<(u64, durable::StateFile)>,
    /// Highest ledger_seq applied (taken under `write`, read before a commit).
    applied_seq: AtomicU64,
    /// The problem the operator accepted at open, if any.
    regression: Option<String>,
    /// Generation of the last applied batch (taken under `write`).
    applied: AtomicU64,
    /// Set once a flush failed: nothing can be acknowledged any more.
    failed: Mutex<Option<String>>,
}

struct WriteState {
    next_seq: u64,
    count: u64,
}

/// Embedded sled store; cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn uuid_key(prefix: u8, u: &Uuid, seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = prefix;
    k[1..17].copy_from_slice(u.as_bytes());
    k[17..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn id_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.push(P_EVENT);
    k.extend_from_slice(id.as_bytes());
    k
}

fn tail_seq(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if k.len() >= 8 {
        b.copy_from_slice(&k[k.len() - 8..]);
    }
    u64::from_be_bytes(b)
}

fn sled_err(e: sled::Error) -> StoreError {
    StoreError::Unavailable(format!("sled: {e}"))
}

fn decode_row(raw: &[u8]) -> Result<(StoredEvent, [u8; 32]), StoreError> {
    let row: Row = serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt(format!("row: {e}")))?;
    let event = Event::from_json_value(&row.event)
        .map_err(|e| StoreError::Corrupt(format!("row {}: event invalid: {e}", row.ledger_seq)))?;
    let digest = event.digest();
    // Pair assertion: the digest written with the row must be the digest of the
    // event read back.
    if hex(&digest) != row.digest {
        return Err(StoreError::Corrupt(format!("row {}: digest mismatch", row.ledger_seq)));
    }
    Ok((
        StoredEvent {
            ledger_seq: row.ledger_seq,
            node: row.node,
            node_seq: row.node_seq,
            received_at: row.received_at,
            recorded_at: row.recorded_at,
            event,
        },
        digest,
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. With `accept_regression`, a store
    /// that lost data opens anyway (logged at ERROR, see [`SledStore::regression`]).
    pub fn open(dir: &Path, accept_regression: bool) -> Result<SledStore, StoreError> {
        let (db, committer) = durable::open(dir, SLED_CACHE_BYTES, Duration::from_secs(2))
            .map_err(|e| StoreError::Unavailable(format!("open {}: {e}", dir.display())))?;
        let next_seq = match db.scan_prefix([P_SEQ]).keys().next_back() {
            Some(k) => tail_seq(&k.map_err(sled_err)?) + 1,
            None => 1,
        };
        let count = match db.get(META_COUNT).map_err(sled_err)? {
            Some(v) if v.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v);
                u64::from_le_bytes(b)
            }
            Some(_) => return Err(StoreError::Corrupt("event count has a bad length".into())),
            None => 0,
        };
        let label = format!("ledger store {}", dir.display());
        let guarded = durable::guard(&db, &committer, &dir.join(STATE_FILE), &label, next_seq - 1, accept_regression)
            .map_err(|e| match e {
                durable::GuardError::Io { .. } => StoreError::Unavailable(e.to_string()),
                _ => StoreError::Regressed(e.to_string()),
            })?;
        let next_seq = next_seq.max(guarded.seq_floor + 1);
        Ok(SledStore {
            inner: Arc::new(Inner {
                db,
                committer,
                write: Mutex::new(WriteState { next_seq, count }),
                flush: Mutex::new((0, guarded.state)),
                applied_seq: AtomicU64::new(next_seq - 1),
                regression: guarded.accepted,
                applied: AtomicU64::new(0),
                failed: Mutex::new(None),
            }),
        })
    }

    /// The problem the operator accepted at open (`--accept-store-regression`), if any.
    pub fn regression(&self) -> Option<&str> {
        self.inner.regression.as_deref()
    }

    fn check_failed(&self) -> Result<(), StoreError> {
        match &*self.inner.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(f) => Err(StoreError::Unavailable(format!("an earlier flush failed: {f}"))),
            None => Ok(()),
        }
    }

    /// Waits until generation `gen` is durable, flushing if no flush that
    /// started after it has completed yet.
    fn wait_durable(&self, gen: u64) -> Result<(), StoreError> {
        let mut guard = self.inner.flush.lock().unwrap_or_else(|p| p.into_inner());
        let (durable, state) = &mut *guard;
        self.check_failed()?;
        if *durable >= gen {
            return Ok(());
        }
        // Both read before the commit starts: everything they count was
        // applied before it, so the commit covers it.
        let target = self.inner.applied.load(Ordering::SeqCst);
        let applied_seq = self.inner.applied_seq.load(Ordering::SeqCst);
        match self.inner.committer.commit_and_advance(state, applied_seq) {
            Ok(()) => {
                *durable = target;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger store commit failed; refusing further writes");
                *self.inner.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                Err(StoreError::Unavailable(format!("commit: {e}")))
            }
        }
    }

    /// Commits what is outstanding and records the final high-water mark in
    /// the state file (a clean close). Later writes still work.
    pub fn close(&self) -> Result<(), StoreError> {
        let mut guard = self.inner.flush.lock().unwrap_or_else(|p| p.into_inner());
        let (_, state) = &mut *guard;
        let applied_seq = self.inner.applied_seq.load(Ordering::SeqCst);
        self.inner.committer.commit().map_err(|e| StoreError::Unavailable(format!("commit: {e}")))?;
        state
            .advance(applied_seq, true)
            .map_err(|e| StoreError::Unavailable(format!("write state file: {e}")))?;
        Ok(())
    }

    fn record_blocking(&self, node: &str, events: Vec<IncomingEvent>) -> Result<Vec<Outcome>, StoreError> {
        self.check_failed()?;
        let db = &self.inner.db;
        let digests: Vec<[u8; 32]> = events.iter().map(|e| e.event.digest()).collect();
        let mut stored: Vec<Option<([u8; 32], u64)>> = vec![None; events.len()];
        let mut created = vec![false; events.len()];
        let gen = {
            let mut w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
            let mut batch = sled::Batch::default();
            let mut in_batch: HashMap<&str, ([u8; 32], u64)> = HashMap::new();
            let now = OffsetDateTime::now_utc();
            let mut next_seq = w.next_seq;
            let mut added = 0u64;
            for (i, ev) in events.iter().enumerate() {
                let id = ev.event.id.as_str();
                if let Some(s) = in_batch.get(id) {
                    stored[i] = Some(*s);
                    continue;
                }
                if let Some(raw) = db.get(id_key(id)).map_err(sled_err)? {
                    let (row, digest) = decode_row(&raw)?;
                    stored[i] = Some((digest, row.ledger_seq));
                    continue;
                }
                let seq = next_seq;
                next_seq += 1;
                added += 1;
                let row = Row {
                    ledger_seq: seq,
                    node: node.to_owned(),
                    node_seq: ev.node_seq,
                    received_at: ev.received_at,
                    recorded_at: now,
                    digest: hex(&digests[i]),
                    event: ev.event.to_json_value(),
                };
                let raw = serde_json::to_vec(&row).map_err(|e| StoreError::Corrupt(format!("encode row: {e}")))?;
                // Pair assertion: what is written must read back as the same event.
                debug_assert!(decode_row(&raw).is_ok());
                batch.insert(id_key(id), raw);
                batch.insert(&seq_key(P_SEQ, seq), id.as_bytes());
                let e = &ev.event;
                batch.insert(&uuid_key(P_PAYEE, &e.payee, seq), id.as_bytes());
                batch.insert(&uuid_key(P_RECIPIENT, &e.recipient, seq), id.as_bytes());
                batch.insert(&uuid_key(P_PAYER, &e.payer, seq), id.as_bytes());
                in_batch.insert(id, (digests[i], seq));
                stored[i] = Some((digests[i], seq));
                created[i] = true;
            }
            if added > 0 {
                batch.insert(META_COUNT, &(w.count + added).to_le_bytes());
                db.apply_batch(batch).map_err(sled_err)?;
                w.next_seq = next_seq;
                w.count += added;
                self.inner.applied_seq.fetch_max(next_seq - 1, Ordering::SeqCst);
            }
            // Taken under the write lock after the apply: a later batch that sees
            // this batch's rows (as duplicates) gets a higher generation and so
            // waits for a flush that covers them too.
            self.inner.applied.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.wait_durable(gen)?;
        outcomes(&digests, |i| stored[i], |i| created[i])
    }

    fn get_blocking(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        match self.inner.db.get(id_key(id)).map_err(sled_err)? {
            None => Ok(None),
            Some(raw) => Ok(Some(decode_row(&raw)?.0)),
        }
    }

    /// The digest stored with the row of `id` (the row's `digest` field, which
    /// `decode_row` checks against the event on every full read).
    fn digest_blocking(&self, id: &str) -> Result<Option<[u8; 32]>, StoreError> {
        #[derive(Deserialize)]
        struct DigestOnly {
            digest: String,
        }
        let Some(raw) = self.inner.db.get(id_key(id)).map_err(sled_err)? else { return Ok(None) };
        let row: DigestOnly = serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt(format!("row of {id:?}: {e}")))?;
        unhex(&row.digest).map(Some).ok_or_else(|| StoreError::Corrupt(format!("row of {id:?}: digest is not 64 hex digits")))
    }

    fn query_blocking(&self, f: Filter, scan_max: usize) -> Result<Page, StoreError> {
        let db = &self.inner.db;
        let start_seq = f.after.saturating_add(1);
        let (start, end): (Vec<u8>, Vec<u8>) = if let Some(u) = f.payee {
            (uuid_key(P_PAYEE, &u, start_seq).to_vec(), uuid_key(P_PAYEE, &u, u64::MAX).to_vec())
        } else if let Some(u) = f.recipient {
            (uuid_key(P_RECIPIENT, &u, start_seq).to_vec(), uuid_key(P_RECIPIENT, &u, u64::MAX).to_vec())
        } else if let Some(u) = f.payer {
            (uuid_key(P_PAYER, &u, start_seq).to_vec(), uuid_key(P_PAYER, &u, u64::MAX).to_vec())
        } else {
            (seq_key(P_SEQ, start_seq).to_vec(), seq_key(P_SEQ, u64::MAX).to_vec())
        };
        let mut out: Vec<StoredEvent> = Vec::new();
        let mut last_scanned = None;
        for (scanned, item) in db.range(start..=end).enumerate() {
            if out.len() >= f.limit {
                return Ok(Page { next_after: out.last().map(|e| e.ledger_seq), events: out });
            }
            if scanned >= scan_max {
                // Bounded work per request: hand back a cursor past what was walked.
                return Ok(Page { events: out, next_after: last_scanned });
            }
            let (k, id) = item.map_err(sled_err)?;
            last_scanned = Some(tail_seq(&k));
            let id = std::str::from_utf8(&id).map_err(|_| StoreError::Corrupt("index holds a non-UTF-8 id".into()))?;
            let Some(ev) = self.get_blocking(id)? else {
                return Err(StoreError::Corrupt(format!("index points to missing event {id:?}")));
            };
            let e = &ev.event;
            if f.payee.is_some_and(|u| u != e.payee)
                || f.recipient.is_some_and(|u| u != e.recipient)
                || f.payer.is_some_and(|u| u != e.payer)
                || f.since.is_some_and(|t| ev.recorded_at < t)
            {
                continue;
            }
            out.push(ev);
        }
        Ok(Page { events: out, next_after: None })
    }
}

impl Store for SledStore {
    async fn record_batch(&self, node: &str, events: Vec<IncomingEvent>) -> Result<Vec<Outcome>, StoreError> {
        let this = self.clone();
        let node = node.to_owned();
        blocking(move || this.record_blocking(&node, events)).await
    }

    async fn get(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let this = self.clone();
        let id = id.to_owned();
        blocking(move || this.get_blocking(&id)).await
    }

    async fn query(&self, filter: Filter) -> Result<Page, StoreError> {
        let this = self.clone();
        blocking(move || this.query_blocking(filter, QUERY_SCAN_ENTRIES_MAX)).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
        Ok(StoreStats { backend: "sled", events: w.count, ledger_seq_max: w.next_seq.saturating_sub(1) })
    }

    async fn digests(&self, ids: Vec<String>) -> Result<Vec<Option<[u8; 32]>>, StoreError> {
        let this = self.clone();
        blocking(move || ids.iter().map(|id| this.digest_blocking(id)).collect()).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.check_failed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(id: &str, amount: u64, payee: &str) -> Event {
        Event::from_json_value(&serde_json::json!({
            "id": id, "kind": "purchase", "amount": amount, "currency": "L$",
            "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
            "payee": payee,
            "occurred_at": "2026-11-24T12:00:00Z"
        }))
        .expect("valid event")
    }

    fn inc(seq: u64, e: Event) -> IncomingEvent {
        IncomingEvent { node_seq: seq, received_at: OffsetDateTime::now_utc(), event: e }
    }

    const PAYEE_A: &str = "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b";

    #[tokio::test]
    async fn digests_are_those_of_the_recorded_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), false).expect("open");
        let (a, b) = (event("a", 1, PAYEE_A), event("b", 2, PAYEE_A));
        s.record_batch("n1", vec![inc(1, a.clone()), inc(2, b.clone())]).await.expect("batch");
        let got = s.digests(vec!["b".into(), "nope".into(), "a".into()]).await.expect("digests");
        assert_eq!(got, vec![Some(b.digest()), None, Some(a.digest())]);
        assert_ne!(a.digest(), event("a", 9, PAYEE_A).digest(), "another event under the same id differs");
        assert_eq!(s.digests(Vec::new()).await.expect("empty"), Vec::<Option<[u8; 32]>>::new());
    }
    const PAYEE_B: &str = "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0";

    /// A store that holds less than its state file says was durable refuses to
    /// open; with the operator's override it opens and never reuses a ledger_seq.
    #[tokio::test]
    async fn a_regressed_store_refuses_to_open_unless_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = SledStore::open(dir.path(), false).expect("open");
            s.record_batch("n1", vec![inc(1, event("a", 1, PAYEE_A)), inc(2, event("b", 2, PAYEE_A))]).await.expect("batch");
            s.close().expect("close");
        }
        // The state file says ledger_seq 500 was durable, as if the store had
        // lost everything after seq 2 (a disk that lied, an old backup).
        let path = dir.path().join(STATE_FILE);
        let (mut f, st) = durable::StateFile::open(&path).expect("read").expect("present");
        assert_eq!(st.high_water, 2, "the clean close recorded the last ledger_seq");
        f.advance_to(durable::StoreState { high_water: 500, reserved: 600, ..st }).expect("write");
        match SledStore::open(dir.path(), false) {
            Err(StoreError::Regressed(m)) => {
                assert!(m.contains("holds seq <= 2 but seq 500 was made durable"), "{m}");
            }
            Err(e) => panic!("expected Regressed, got {e}"),
            Ok(_) => panic!("a regressed store opened"),
        }
        let s = SledStore::open(dir.path(), true).expect("open with the override");
        assert!(s.regression().is_some());
        let r = s.record_batch("n1", vec![inc(3, event("c", 3, PAYEE_A))]).await.expect("batch");
        match r.as_slice() {
            [Outcome::Accepted { ledger_seq }] => assert!(*ledger_seq > 600, "ledger_seq {ledger_seq} reused"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn accepted_duplicate_conflict_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = SledStore::open(dir.path(), false).expect("open");
            let r = s
                .record_batch("n1", vec![
                    inc(1, event("a", 1, PAYEE_A)),
                    inc(2, event("b", 2, PAYEE_B)),
                    inc(3, event("a", 1, PAYEE_A)),
                    inc(4, event("a", 9, PAYEE_A)),
                ])
                .await
                .expect("batch");
            assert_eq!(r, vec![
                Outcome::Accepted { ledger_seq: 1 },
                Outcome::Accepted { ledger_seq: 2 },
                Outcome::Duplicate { ledger_seq: 1 },
                Outcome::Conflict { ledger_seq: 1 },
            ]);
            let r = s.record_batch("n2", vec![inc(7, event("b", 2, PAYEE_B)), inc(8, event("c", 3, PAYEE_A))]).await.expect("batch");
            assert_eq!(r, vec![Outcome::Duplicate { ledger_seq: 2 }, Outcome::Accepted { ledger_seq: 3 }]);
        }
        let s = SledStore::open(dir.path(), false).expect("reopen");
        let st = s.stats().await.expect("stats");
        assert_eq!((st.events, st.ledger_seq_max), (3, 3));
        let got = s.get("c").await.expect("get").expect("present");
        assert_eq!((got.node.as_str(), got.node_seq, got.ledger_seq), ("n2", 8, 3));
        assert_eq!(got.event, event("c", 3, PAYEE_A));
        assert!(s.get("zzz").await.expect("get").is_none());
        let r = s.record_batch("n1", vec![inc(9, event("d", 4, PAYEE_B))]).await.expect("batch");
        assert_eq!(r, vec![Outcome::Accepted { ledger_seq: 4 }], "seq continues after reopen");

        let payee_a = Uuid::parse_str(PAYEE_A).expect("uuid");
        let q = s.query(Filter { payee: Some(payee_a), limit: 10, ..Filter::default() }).await.expect("query");
        assert_eq!(q.events.iter().map(|e| e.event.id.as_str()).collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(q.next_after, None);
        let q = s.query(Filter { payee: Some(payee_a), after: 1, limit: 10, ..Filter::default() }).await.expect("query");
        assert_eq!(q.events.iter().map(|e| e.event.id.as_str()).collect::<Vec<_>>(), vec!["c"]);
        let q = s.query(Filter { limit: 2, ..Filter::default() }).await.expect("query");
        assert_eq!(q.events.iter().map(|e| e.ledger_seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(q.next_after, Some(2));
        let future = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let q = s.query(Filter { since: Some(future), limit: 10, ..Filter::default() }).await.expect("query");
        assert!(q.events.is_empty());
        // The scan bound: nothing matches in the first 3 entries walked, so the
        // page is empty but carries a cursor past them; following it finds the rest.
        let q = s.query_blocking(Filter { since: Some(future), ..Filter { limit: 10, ..Filter::default() } }, 3).expect("query");
        assert_eq!((q.events.len(), q.next_after), (0, Some(3)));
        let q = s.query_blocking(Filter { after: 3, limit: 10, ..Filter::default() }, 3).expect("query");
        assert_eq!(q.events.iter().map(|e| e.ledger_seq).collect::<Vec<_>>(), vec![4]);
        assert_eq!(q.next_after, None);
    }

    #[tokio::test]
    async fn concurrent_batches_with_the_same_id_create_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), false).expect("open");
        let mut tasks = Vec::new();
        for n in 0..8u64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.record_batch(&format!("n{n}"), vec![inc(n, event("same", 5, PAYEE_A))]).await
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            match t.await.expect("join").expect("batch")[0] {
                Outcome::Accepted { .. } => accepted += 1,
                Outcome::Duplicate { ledger_seq } => assert_eq!(ledger_seq, 1),
                Outcome::Conflict { .. } => panic!("same event must not conflict"),
            }
        }
        assert_eq!(accepted, 1);
        assert_eq!(s.stats().await.expect("stats").events, 1);
    }
}
