//! The embedded store: one sled tree, a sled write per ~25 events.
//!
//! # Layout (store layout 2)
//!
//! ```text
//! c <first ledger_seq u64 BE>          -> chunk: the rows of consecutive ledger_seqs of one batch
//! x <partition u64 BE>, r <partition> <chunk u64 BE>, f <partition> <chunk>
//!                                      -> the id index's sealed partitions (crate `idindex`)
//! g <partition u64 BE>, h <partition> <chunk u64 BE>, j <partition> <chunk>
//!                                      -> the party index's sealed partitions (`idindex::postings`)
//! p <party uuid 16 bytes> <group first ledger_seq u64 BE>
//!                                      -> postings of a store written before the party index
//!                                         (read, never written): [seq - group first u16 LE ‖ roles u8]*
//!                                         (roles: 1 payee, 2 recipient, 4 payer; one entry per
//!                                          row of the group the party takes part in, in row order)
//! mcount                               -> u64 LE (events recorded)
//! mparty_from                          -> u64 LE: the first ledger_seq of the party index
//! mstore_id                            -> the store id (durable::guard)
//! ```
//!
//! A chunk (all integers little-endian):
//!
//! ```text
//! "OGLC" | version u8 = 1 | flags u8 = 0 | rows u16 | first ledger_seq u64
//! | recorded_at: unix secs i64, nanos u32 | node length u8 | node (1..=128 bytes UTF-8)
//! | rows × (length u32 | row)  | CRC32C u32 of every byte before it
//! ```
//!
//! A row is the bincode 1.3.3 encoding (fixed-width little-endian integers,
//! u64 string lengths) of [`RowV2`]: the node's seq, `received_at`, and the
//! canonical event's fields. The node and `recorded_at` are the batch's, so
//! they are stored once per chunk. A batch is cut into chunks of at most
//! [`CHUNK_BYTES_TARGET`] (one row alone may be larger: a valid event is at
//! most ~41 KiB): sled keeps up to 17 items in a leaf and writes a leaf larger
//! than [`durable::SLED_BLOB_THRESHOLD_BYTES`] to a blob file of its own (one
//! more file and fsync per commit), so 17 chunks must stay under that.
//!
//! **The id index** (crate `idindex`, the spool's, under the prefixes
//! [`ID_INDEX`]): an id is reduced to a 64-bit fingerprint; the latest ids
//! (at most [`idindex::OPEN_IDS_MAX`]) are held in memory, exact, and rebuilt
//! at open from the chunks after the last sealed partition; when that *open
//! partition* is full it is sealed, in the batch that fills it, into sorted
//! runs of (fingerprint, ledger_seq) and a binary fuse filter kept in memory
//! (~1.1 bytes per id ever recorded; a lookup probes every sealed partition's
//! filter). A lookup gives candidate ledger_seqs; each is confirmed against
//! its row (same id?), so neither a filter's false positive nor two ids with
//! one fingerprint can answer for the wrong event. There is no sled key per
//! id: a store written by a development build of layout 2 still holds `i<id>`
//! entries (id → ledger_seq, chunk), which are read, never written.
//!
//! **The party index** (`idindex::postings`, under the prefixes
//! [`PARTY_INDEX`]): the same partitions with many entries per key. A row
//! posts one entry per distinct party (payee, recipient, payer; a party in
//! two roles is one entry with both): key the party's fingerprint
//! ([`party_fp`]), value `ledger_seq << 3 | roles`. The latest entries (at
//! most [`idindex::postings::OPEN_ENTRIES_MAX`], about 100k rows) are held in
//! memory and rebuilt at open from the chunks; when full they are sealed, in
//! the batch that fills them, into runs sorted by (key, seq) — a party's
//! entries contiguous and in ledger order — and a filter kept in memory (~1.1
//! bytes per distinct party per partition). Partitions cover consecutive
//! ledger_seq ranges from `mparty_from`. A store written before the party index
//! (with `p` postings, one key per distinct party per batch) gets it from its
//! next ledger_seq on; its older rows keep their `p` postings, read, never
//! written.
//!
//! **Writes per event**: a chunk per ~[`CHUNK_BYTES_TARGET`] of rows (about 25
//! rows of a typical event), the event count per batch, and each index's runs
//! and filter once per open partition (a few hundred 7 KiB values per 100k
//! rows): about 0.05 sled keys per event. Layout 1 wrote five (row, ledger
//! order, payee, recipient, payer) and every row repeated the node and the
//! time as JSON; layout 2 with `p` postings wrote about 1.4 (one per payer:
//! most payers are distinct within a batch).
//!
//! **Reads**: by id, the id index's candidates, each confirmed by reading its
//! chunk (its CRC32C checked, the one row decoded and validated). In ledger
//! order, the chunks from the one holding `after + 1`. By
//! payee/recipient/payer: below `mparty_from`, that party's `p` postings from
//! the groups that can hold `after + 1` (those starting at most
//! [`GROUP_ROWS_MAX`] − 1 before it); from it on, the party index's entries
//! from `after + 1` (every sealed partition's filter probed, the run chunk
//! holding the start found by bisection, then the open partition), taken under
//! the index's read lock, the rows read after it. An entry of the party in
//! another role is walked past without reading the row; every other is
//! confirmed against its row (two parties can share a key), each row's chunk
//! found by its seq (the last chunk read is kept, so consecutive rows of one
//! chunk read it once). Every query walks at most [`QUERY_SCAN_ENTRIES_MAX`]
//! rows or postings and then returns what it found with a cursor, so a query
//! costs the same in a 10M-event ledger as in a small one.
//!
//! # Layout 1 (read, never written)
//!
//! A store written before layout 2 holds `e<id>` → row (JSON with the digest,
//! checked on every read), `s<seq BE>` → id, `P/R/Y<uuid><seq BE>` → id. It
//! opens as it is: its ledger_seqs (all below the first layout-2 chunk) are read
//! through those keys, the new ones through the chunks, and a query walks the
//! old range first, then the new, with one scan budget. Nothing is rewritten.
//!
//! # Invariants
//!
//! **Invariant:** a batch's chunks (and a sealed id or party partition) go in
//! one atomic `apply_batch`, under the write lock, so no index entry is ever
//! durable without its row; an id or a posting enters its in-memory index only
//! after its row is applied, and a sealed partition's runs are applied before
//! its filter is used (the index stays locked from the seal to the end of the
//! apply); and two batches
//! carrying the same id never both create it:
//! a batch looks its ids up *before* taking the lock (noting the
//! generation of the last batch applied), then, under the lock, checks the
//! ids it did not find against the ids created by every batch applied since
//! (kept in memory for the latest [`RECENT_IDS_MAX`] ids; if those batches are
//! no longer all there, it looks the ids up again under the lock).
//! (The first `apply_batch` makes sled put every later operation of the process
//! behind one global `RwLock`; ledgerd's writes are serialised by the write lock
//! anyway, and reads wait only while a batch is applied.)
//!
//! **Invariant:** `record_batch` returns only after a durable commit (`Db::flush()`
//! plus the fdatasync of sled's files, [`durable::Committer::commit`]: a flush
//! alone does not survive a power cut) that began after its batch (and every
//! batch it saw, for duplicates) was applied. Commits are serialised and
//! shared: one covers every batch applied before it started (group commit).
//! `flush_async` is never called.
//!
//! **Invariant:** every chunk is CRC32C-checked and every row validated as an
//! event when read; a layout-1 row's digest is checked against its event.
//!
//! **Invariant:** a store that holds less than its state file
//! (`<dir>/offgrid-state`, [`durable::guard`]) says was made durable refuses to
//! open ([`StoreError::Regressed`]) unless the operator accepts it; even then
//! no `ledger_seq` is reused.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bincode::Options as _;
use serde::{Deserialize, Serialize};
use spool_format::{Event, Kind, OffsetDateTime, Uuid};

use crate::store::{outcomes, Filter, IncomingEvent, Outcome, Page, Store, StoreError, StoreStats, StoredEvent};

/// Index entries (rows or postings) a single query may walk past before it
/// returns what it found (with a cursor): bounds the work one read request can cause.
pub const QUERY_SCAN_ENTRIES_MAX: usize = 100_000;
/// A chunk is closed before a row would take it over this many bytes (a single
/// row may be larger). 7 KiB: a sled leaf of 17 chunks stays under sled's blob
/// threshold (~128 KiB), and ~25 rows of a typical 250-byte event share one key.
pub const CHUNK_BYTES_TARGET: usize = 7 * 1024;
/// Rows in one chunk, at most (row indexes are u16 on disk).
pub const CHUNK_ROWS_MAX: usize = 1024;
/// Ids of the latest batches kept in memory (with digest and ledger_seq,
/// ~100 bytes each: ~6 MiB): a batch looks its ids up before it takes the
/// write lock, then checks them only against the batches applied meanwhile
/// (four in flight per node: a few thousand ids), not sled again.
const RECENT_IDS_MAX: usize = 65_536;
/// Rows in one posting group of a store written before the party index, at
/// most (a posting entry's offset is a u16): a query by party looks back this
/// many seqs for the groups that can hold its first row.
pub const GROUP_ROWS_MAX: u64 = 4096;
/// sled page cache, in bytes: keeps recent rows and indexes hot; memory does not
/// grow with the number of events beyond this.
const SLED_CACHE_BYTES: u64 = 128 << 20;

const P_CHUNK: u8 = b'c';
/// Id entries of stores written by development builds of layout 2 before the
/// id index (read, never written).
const P_ID: u8 = b'i';
const P_PARTY: u8 = b'p';
/// Where the id index (`idindex`) keeps its partitions, runs and filters.
const ID_INDEX: idindex::Prefixes = idindex::Prefixes { partition: b'x', run: b'r', filter: b'f' };
const ROLE_PAYEE: u8 = 1;
const ROLE_RECIPIENT: u8 = 2;
const ROLE_PAYER: u8 = 4;
const META_COUNT: &[u8] = b"mcount";
/// The first ledger_seq the party index covers (u64 LE): rows before it (a
/// store written before the party index) are found through `p` postings.
const META_PARTY_FROM: &[u8] = b"mparty_from";
/// Where the party index (`idindex::postings`) keeps its partitions, runs and filters.
const PARTY_INDEX: idindex::Prefixes = idindex::Prefixes { partition: b'g', run: b'h', filter: b'j' };
/// Layout 1 (read only).
const V1_EVENT: u8 = b'e';
const V1_SEQ: u8 = b's';
const V1_PAYEE: u8 = b'P';
const V1_RECIPIENT: u8 = b'R';
const V1_PAYER: u8 = b'Y';

const CHUNK_MAGIC: [u8; 4] = *b"OGLC";
const CHUNK_VERSION: u8 = 1;
/// Bytes before the node: magic, version, flags, rows, first seq, secs, nanos, node length.
const CHUNK_FIXED_BYTES: usize = 4 + 1 + 1 + 2 + 8 + 8 + 4 + 1;
/// Largest row accepted when reading, in bytes: a valid event encodes to ~41 KiB.
const ROW_BYTES_MAX: u32 = 1 << 20;
/// The regression guard's state file, inside the store's directory (sled
/// ignores files it does not know).
const STATE_FILE: &str = "offgrid-state";

/// Layout-1 row (JSON), read only.
#[derive(Serialize, Deserialize)]
struct RowV1 {
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

/// One row of a chunk: what is not shared with the rest of the batch.
#[derive(Serialize, Deserialize)]
struct RowV2 {
    node_seq: u64,
    received_at: (i64, u32),
    id: String,
    kind: Kind,
    amount: u64,
    currency: String,
    payer: [u8; 16],
    payee: [u8; 16],
    recipient: [u8; 16],
    occurred_at: (i64, u32),
    item: Option<String>,
    region: Option<String>,
    terminal: Option<String>,
    attributes: Vec<(String, String)>,
}

fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(u64::from(ROW_BYTES_MAX))
        .reject_trailing_bytes()
}

fn time_parts(t: OffsetDateTime) -> (i64, u32) {
    (t.unix_timestamp(), t.nanosecond())
}

fn time_from_parts((secs, nanos): (i64, u32)) -> Result<OffsetDateTime, StoreError> {
    if nanos >= 1_000_000_000 {
        return Err(StoreError::Corrupt(format!("timestamp nanos {nanos} out of range")));
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
        .map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
}

fn encode_row(node_seq: u64, received_at: OffsetDateTime, e: &Event) -> Vec<u8> {
    let row = RowV2 {
        node_seq,
        received_at: time_parts(received_at),
        id: e.id.clone(),
        kind: e.kind,
        amount: e.amount,
        currency: e.currency.clone(),
        payer: *e.payer.as_bytes(),
        payee: *e.payee.as_bytes(),
        recipient: *e.recipient.as_bytes(),
        occurred_at: time_parts(e.occurred_at),
        item: e.item.clone(),
        region: e.region.clone(),
        terminal: e.terminal.clone(),
        attributes: e.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    // Infallible for these types; a failure is a bug, not an operating error.
    codec().serialize(&row).expect("bincode encodes RowV2")
}

/// Decodes a row and validates its event (pair assertion with the validation
/// every event passed before it was written).
fn decode_row(raw: &[u8]) -> Result<(u64, OffsetDateTime, Event), StoreError> {
    let r: RowV2 = codec().deserialize(raw).map_err(|e| StoreError::Corrupt(format!("row: {e}")))?;
    let attributes_len = r.attributes.len();
    let attributes: BTreeMap<String, String> = r.attributes.into_iter().collect();
    if attributes.len() != attributes_len {
        return Err(StoreError::Corrupt("row: duplicate attribute key".into()));
    }
    let event = Event {
        id: r.id,
        kind: r.kind,
        amount: r.amount,
        currency: r.currency,
        payer: Uuid::from_bytes(r.payer),
        payee: Uuid::from_bytes(r.payee),
        recipient: Uuid::from_bytes(r.recipient),
        occurred_at: time_from_parts(r.occurred_at)?,
        item: r.item,
        region: r.region,
        terminal: r.terminal,
        attributes,
    };
    event.validate().map_err(|e| StoreError::Corrupt(format!("row {}: event invalid: {e}", event.id)))?;
    Ok((r.node_seq, time_from_parts(r.received_at)?, event))
}

/// A chunk read back: header checked, CRC32C verified, row offsets known.
struct Chunk {
    first_seq: u64,
    recorded_at: OffsetDateTime,
    node: String,
    /// (start, end) of each row in `bytes`.
    rows: Vec<(usize, usize)>,
    bytes: sled::IVec,
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}
fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl Chunk {
    fn decode(key_seq: u64, bytes: sled::IVec) -> Result<Chunk, StoreError> {
        let bad = |what: &str| StoreError::Corrupt(format!("chunk {key_seq}: {what}"));
        let b = &bytes[..];
        if b.len() < CHUNK_FIXED_BYTES + 4 {
            return Err(bad("truncated"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        let computed = crc32c::crc32c(body);
        if le_u32(crc) != computed {
            return Err(bad(&format!("checksum {:08x} != {computed:08x}", le_u32(crc))));
        }
        if body[..4] != CHUNK_MAGIC || body[4] != CHUNK_VERSION || body[5] != 0 {
            return Err(bad("bad magic, version or flags"));
        }
        let n = usize::from(le_u16(&body[6..8]));
        let first_seq = le_u64(&body[8..16]);
        if first_seq != key_seq || n == 0 {
            return Err(bad("header does not match its key"));
        }
        let secs = i64::from_le_bytes(body[16..24].try_into().map_err(|_| bad("time"))?);
        let recorded_at = time_from_parts((secs, le_u32(&body[24..28])))?;
        let node_len = usize::from(body[28]);
        let mut at = CHUNK_FIXED_BYTES + node_len;
        if node_len == 0 || body.len() < at {
            return Err(bad("node"));
        }
        let node = std::str::from_utf8(&body[CHUNK_FIXED_BYTES..at]).map_err(|_| bad("node is not UTF-8"))?.to_owned();
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            if body.len() < at + 4 {
                return Err(bad("row truncated"));
            }
            let len = le_u32(&body[at..at + 4]);
            if len > ROW_BYTES_MAX {
                return Err(bad("row too large"));
            }
            let start = at + 4;
            let end = start + usize::try_from(len).map_err(|_| bad("row length"))?;
            if body.len() < end {
                return Err(bad("row truncated"));
            }
            rows.push((start, end));
            at = end;
        }
        if at != body.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(Chunk { first_seq, recorded_at, node, rows, bytes })
    }

    fn last_seq(&self) -> u64 {
        // rows.len() <= u16::MAX: checked by decode.
        self.first_seq + self.rows.len() as u64 - 1
    }

    /// The row of `seq`, decoded and validated.
    fn event(&self, seq: u64) -> Result<StoredEvent, StoreError> {
        let idx = seq
            .checked_sub(self.first_seq)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.rows.len())
            .ok_or_else(|| StoreError::Corrupt(format!("chunk {} has no row for seq {seq}", self.first_seq)))?;
        let (s, e) = self.rows[idx];
        let (node_seq, received_at, event) = decode_row(&self.bytes[s..e])?;
        Ok(StoredEvent { ledger_seq: seq, node: self.node.clone(), node_seq, received_at, recorded_at: self.recorded_at, event })
    }
}

/// A chunk being filled while a batch is applied.
struct ChunkBuilder {
    first_seq: u64,
    rows: Vec<Vec<u8>>,
    bytes: usize,
}

impl ChunkBuilder {
    fn new(first_seq: u64) -> ChunkBuilder {
        ChunkBuilder { first_seq, rows: Vec::new(), bytes: 0 }
    }

    fn fits(&self, row_len: usize) -> bool {
        self.rows.is_empty() || (self.rows.len() < CHUNK_ROWS_MAX && self.bytes + 4 + row_len <= CHUNK_BYTES_TARGET)
    }

    fn push(&mut self, row: Vec<u8>) {
        self.bytes += 4 + row.len();
        self.rows.push(row);
    }
    /// Writes the chunk into `batch`.
    fn seal(self, node: &str, recorded_at: OffsetDateTime, batch: &mut sled::Batch) {
        let (secs, nanos) = time_parts(recorded_at);
        let node_len = u8::try_from(node.len()).expect("node is 1..=128 bytes (checked by the server)");
        let mut out = Vec::with_capacity(CHUNK_FIXED_BYTES + node.len() + self.bytes + 4);
        out.extend_from_slice(&CHUNK_MAGIC);
        out.push(CHUNK_VERSION);
        out.push(0);
        out.extend_from_slice(&u16::try_from(self.rows.len()).expect("CHUNK_ROWS_MAX fits u16").to_le_bytes());
        out.extend_from_slice(&self.first_seq.to_le_bytes());
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&nanos.to_le_bytes());
        out.push(node_len);
        out.extend_from_slice(node.as_bytes());
        for r in &self.rows {
            out.extend_from_slice(&u32::try_from(r.len()).expect("a row fits u32").to_le_bytes());
            out.extend_from_slice(r);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        // Pair assertion: what is written must read back as the same rows.
        debug_assert!(Chunk::decode(self.first_seq, sled::IVec::from(out.clone())).is_ok());
        batch.insert(&seq_key(P_CHUNK, self.first_seq), out);
    }
}

/// The postings of one posting group (module docs) as releases before the
/// party index wrote them: kept to write such a store in tests.
#[cfg(test)]
struct GroupBuilder {
    first_seq: u64,
    rows: u64,
    /// party → postings value.
    postings: BTreeMap<[u8; 16], Vec<u8>>,
}

#[cfg(test)]
impl GroupBuilder {
    fn new(first_seq: u64) -> GroupBuilder {
        GroupBuilder { first_seq, rows: 0, postings: BTreeMap::new() }
    }

    fn full(&self) -> bool {
        self.rows >= GROUP_ROWS_MAX
    }

    /// Posts the row of `seq` (the group's next) for each of its parties.
    fn push(&mut self, seq: u64, e: &Event) {
        debug_assert_eq!(seq, self.first_seq + self.rows);
        let offset = u16::try_from(seq - self.first_seq).expect("GROUP_ROWS_MAX fits u16");
        for (party, roles) in parties(e) {
            let v = self.postings.entry(party).or_default();
            v.extend_from_slice(&offset.to_le_bytes());
            v.push(roles);
        }
        self.rows += 1;
    }

    /// Writes the group's postings into `batch`.
    fn seal(self, batch: &mut sled::Batch) {
        for (party, postings) in self.postings {
            batch.insert(&uuid_key(P_PARTY, &Uuid::from_bytes(party), self.first_seq), postings);
        }
    }
}


/// The distinct parties of a row, each with every role it plays in it (the
/// recipient defaults to the payer: then one party, two roles).
fn parties(e: &Event) -> impl Iterator<Item = ([u8; 16], u8)> {
    let mut parties: [([u8; 16], u8); 3] =
        [(*e.payee.as_bytes(), ROLE_PAYEE), (*e.recipient.as_bytes(), ROLE_RECIPIENT), (*e.payer.as_bytes(), ROLE_PAYER)];
    for i in 0..3 {
        for j in 0..i {
            if parties[j].0 == parties[i].0 && parties[j].1 != 0 {
                parties[j].1 |= parties[i].1;
                parties[i].1 = 0;
                break;
            }
        }
    }
    parties.into_iter().filter(|(_, roles)| *roles != 0)
}

/// A party's key in the party index: the UUID's halves XORed (little-endian).
/// Stored: never change it. Two parties may share one (UUIDs are chosen by
/// vendors); that costs reads, never a wrong answer, as every entry is
/// confirmed against its row.
fn party_fp(party: &[u8; 16]) -> u64 {
    le_u64(&party[..8]) ^ le_u64(&party[8..])
}

/// Calls `f` with every row of the chunks in `lo..=hi` (layout 2), in order.
fn for_each_row(db: &sled::Db, lo: u64, hi: u64, mut f: impl FnMut(u64, &Event)) -> Result<(), StoreError> {
    let from = chunk_start_at_or_before(db, lo)?.unwrap_or(lo);
    for item in db.range(seq_key(P_CHUNK, from)..=seq_key(P_CHUNK, hi)) {
        let (k, v) = item.map_err(sled_err)?;
        let chunk = Chunk::decode(tail_seq(&k), v)?;
        for seq in chunk.first_seq.max(lo)..=chunk.last_seq().min(hi) {
            f(seq, &chunk.event(seq)?.event);
        }
    }
    Ok(())
}

/// Seals an index's open partition into `batch` when it holds `max` entries
/// or more, and then returns the index still write-locked: it must stay
/// locked until the batch is applied (its runs must be in sled before anyone
/// reads them). `None` (and no lock held) when it is not full.
fn seal_if_full<'a, T>(
    index: &'a std::sync::RwLock<T>,
    max: usize,
    batch: &mut sled::Batch,
    open_len: fn(&T) -> usize,
    seal: fn(&mut T) -> idindex::Writes,
) -> Option<std::sync::RwLockWriteGuard<'a, T>> {
    let mut guard = index.write().unwrap_or_else(|p| p.into_inner());
    if open_len(&guard) < max {
        return None;
    }
    for (k, v) in seal(&mut guard) {
        batch.insert(k, v);
    }
    Some(guard)
}

fn walk_err(e: idindex::postings::WalkError) -> StoreError {
    match e {
        idindex::postings::WalkError::Sled(e) => sled_err(e),
        idindex::postings::WalkError::Corrupt(m) => StoreError::Corrupt(format!("party index: {m}")),
    }
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
    /// Highest ledger_seq held in layout 1 (0: none, the store was created with
    /// layout 2 and no layout-1 key is ever looked up).
    v1_seq_max: u64,
    /// The id index: event id → ledger_seq candidates (module docs).
    index: std::sync::RwLock<idindex::Index>,
    /// Ids in the index's open partition before it is sealed
    /// ([`idindex::OPEN_IDS_MAX`]; smaller in tests).
    open_ids_max: std::sync::atomic::AtomicUsize,
    /// The store holds `i<id>` entries (a development build of layout 2
    /// wrote them): lookups read them too.
    has_id_keys: bool,
    /// The party index: payee/recipient/payer → ledger_seqs from
    /// `party_from` on (module docs).
    postings: std::sync::RwLock<idindex::postings::Postings>,
    /// First ledger_seq of the party index; rows before it have `p` postings.
    party_from: u64,
    /// Entries in the party index's open partition before it is sealed
    /// ([`idindex::postings::OPEN_ENTRIES_MAX`]; smaller in tests).
    open_postings_max: std::sync::atomic::AtomicUsize,
}

/// The ids a batch created: id → (digest, ledger_seq).
type CreatedIds = HashMap<String, ([u8; 32], u64)>;

struct WriteState {
    next_seq: u64,
    count: u64,
    /// The ids created by the most recent batches, by generation (every
    /// generation has an entry, in order, the latest always kept), at most
    /// [`RECENT_IDS_MAX`] ids in all: what a batch whose ids were looked up
    /// before it took the lock checks them against.
    recent: std::collections::VecDeque<(u64, CreatedIds)>,
    /// Ids held in `recent`.
    recent_ids: usize,
    /// [`RECENT_IDS_MAX`] (smaller in tests, to reach the look-again path).
    recent_ids_max: usize,
}

impl WriteState {
    /// The ids created by batches of generation above `gen`, when `recent`
    /// still holds all of those batches.
    fn created_since(&self, gen: u64) -> Option<Vec<&CreatedIds>> {
        match self.recent.front() {
            Some((oldest, _)) if *oldest <= gen + 1 => Some(self.recent.iter().filter(|(g, _)| *g > gen).map(|(_, m)| m).collect()),
            Some(_) => None,
            // No batch since the store opened.
            None => Some(Vec::new()),
        }
    }

    fn remember(&mut self, gen: u64, created: CreatedIds) {
        self.recent_ids += created.len();
        self.recent.push_back((gen, created));
        while self.recent_ids > self.recent_ids_max && self.recent.len() > 1 {
            if let Some((_, m)) = self.recent.pop_front() {
                self.recent_ids -= m.len();
            }
        }
    }
}

/// Embedded sled store; cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `prefix ‖ seq` (u64 BE): the chunk keys (and layout 1's `s`).
use idindex::key as seq_key;
use idindex::le_u64;

/// The first seq of the chunk holding `seq`, if a chunk starts at or before it.
fn chunk_start_at_or_before(db: &sled::Db, seq: u64) -> Result<Option<u64>, StoreError> {
    match db.range(seq_key(P_CHUNK, 0)..=seq_key(P_CHUNK, seq)).keys().next_back() {
        Some(k) => Ok(Some(tail_seq(&k.map_err(sled_err)?))),
        None => Ok(None),
    }
}

fn uuid_key(prefix: u8, u: &Uuid, seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = prefix;
    k[1..17].copy_from_slice(u.as_bytes());
    k[17..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn str_key(prefix: u8, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.push(prefix);
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

fn decode_row_v1(raw: &[u8]) -> Result<StoredEvent, StoreError> {
    let row: RowV1 = serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt(format!("row: {e}")))?;
    let event = Event::from_json_value(&row.event)
        .map_err(|e| StoreError::Corrupt(format!("row {}: event invalid: {e}", row.ledger_seq)))?;
    // Pair assertion: the digest written with the row must be the digest of the
    // event read back.
    if hex(&event.digest()) != row.digest {
        return Err(StoreError::Corrupt(format!("row {}: digest mismatch", row.ledger_seq)));
    }
    Ok(StoredEvent {
        ledger_seq: row.ledger_seq,
        node: row.node,
        node_seq: row.node_seq,
        received_at: row.received_at,
        recorded_at: row.recorded_at,
        event,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

/// A query's progress: the page so far and the entries walked.
struct Walk {
    f: Filter,
    out: Vec<StoredEvent>,
    scanned: usize,
    last_scanned: Option<u64>,
    scan_max: usize,
}

impl Walk {
    /// Called before walking one more entry: the page, when it is complete.
    fn full(&mut self) -> Option<Page> {
        if self.out.len() >= self.f.limit {
            let next_after = self.out.last().map(|e| e.ledger_seq);
            return Some(Page { events: std::mem::take(&mut self.out), next_after });
        }
        if self.scanned >= self.scan_max {
            // Bounded work per request: hand back a cursor past what was walked.
            return Some(Page { events: std::mem::take(&mut self.out), next_after: self.last_scanned });
        }
        None
    }

    fn walked(&mut self, seq: u64) {
        self.scanned += 1;
        self.last_scanned = Some(seq);
    }

    fn offer(&mut self, ev: StoredEvent) {
        let f = &self.f;
        let e = &ev.event;
        if f.payee.is_some_and(|u| u != e.payee)
            || f.recipient.is_some_and(|u| u != e.recipient)
            || f.payer.is_some_and(|u| u != e.payer)
            || f.since.is_some_and(|t| ev.recorded_at < t)
        {
            return;
        }
        self.out.push(ev);
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. With `accept_regression`, a store
    /// that lost data opens anyway (logged at ERROR, see [`SledStore::regression`]).
    /// A layout-1 store opens as it is (module docs).
    pub fn open(dir: &Path, accept_regression: bool) -> Result<SledStore, StoreError> {
        let (db, committer) = durable::open(dir, SLED_CACHE_BYTES, Duration::from_secs(2))
            .map_err(|e| StoreError::Unavailable(format!("open {}: {e}", dir.display())))?;
        let v1_seq_max = match db.scan_prefix([V1_SEQ]).keys().next_back() {
            Some(k) => tail_seq(&k.map_err(sled_err)?),
            None => 0,
        };
        let v2_last = match db.scan_prefix([P_CHUNK]).next_back() {
            Some(kv) => {
                let (k, v) = kv.map_err(sled_err)?;
                Chunk::decode(tail_seq(&k), v)?.last_seq()
            }
            None => 0,
        };
        let next_seq = v1_seq_max.max(v2_last) + 1;
        let count = match db.get(META_COUNT).map_err(sled_err)? {
            Some(v) if v.len() == 8 => le_u64(&v),
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
        if v1_seq_max > 0 {
            tracing::info!(v1_seq_max, "ledger store holds layout-1 events; they are read as they are");
        }
        let has_id_keys = db.scan_prefix([P_ID]).next().is_some();
        let index = Self::open_index(&db, v1_seq_max)?;
        let (postings, party_from) = Self::open_postings(&db, &committer, next_seq)?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                db,
                committer,
                write: Mutex::new(WriteState { next_seq, count, recent: Default::default(), recent_ids: 0, recent_ids_max: RECENT_IDS_MAX }),
                flush: Mutex::new((0, guarded.state)),
                applied_seq: AtomicU64::new(next_seq - 1),
                regression: guarded.accepted,
                applied: AtomicU64::new(0),
                failed: Mutex::new(None),
                v1_seq_max,
                index: std::sync::RwLock::new(index),
                open_ids_max: std::sync::atomic::AtomicUsize::new(idindex::OPEN_IDS_MAX),
                has_id_keys,
                postings: std::sync::RwLock::new(postings),
                party_from,
                open_postings_max: std::sync::atomic::AtomicUsize::new(idindex::postings::OPEN_ENTRIES_MAX),
            }),
        })
    }

    /// Loads the id index's sealed partitions and rebuilds its open partition
    /// from the chunks after them (at most [`idindex::OPEN_IDS_MAX`] rows, plus
    /// the rows of a partition whose filter is damaged).
    fn open_index(db: &sled::Db, v1_seq_max: u64) -> Result<idindex::Index, StoreError> {
        let started = std::time::Instant::now();
        let mut index = idindex::Index::new(ID_INDEX, 0, 0);
        // A damaged partition's rows are put back into the open partition
        // (the last one's, if it is the damaged one, by the open range below).
        let mut ranges = index.load_sealed(db).map_err(sled_err)?;
        let open_from = index.sealed_last_seq().unwrap_or(v1_seq_max).max(v1_seq_max) + 1;
        index.open_from = open_from;
        ranges.push((open_from, u64::MAX));
        for (lo, hi) in ranges {
            for_each_row(db, lo.max(v1_seq_max + 1), hi, |seq, e| index.insert(idindex::fingerprint(&e.id), seq))?;
        }
        tracing::info!(
            sealed_partitions = index.sealed_count(),
            filter_bytes = index.sealed_bytes(),
            open_ids = index.open_len(),
            ms = started.elapsed().as_millis() as u64,
            "id index loaded"
        );
        Ok(index)
    }

    /// Loads the party index: its sealed partitions, a damaged one rebuilt
    /// from the chunks (its keys replaced), and the open partition filled from
    /// the chunks after the last (sealing as it fills, so that memory stays
    /// bounded whatever was damaged). A store written before the party index
    /// gets it from `next_seq` on; its older rows keep their `p` postings.
    /// What it writes is committed before the store opens.
    fn open_postings(db: &sled::Db, committer: &durable::Committer, next_seq: u64) -> Result<(idindex::postings::Postings, u64), StoreError> {
        use idindex::postings::{Postings, OPEN_ENTRIES_MAX};
        let started = std::time::Instant::now();
        let mut batch = sled::Batch::default();
        let mut writes = 0usize;
        let party_from = match db.get(META_PARTY_FROM).map_err(sled_err)? {
            Some(v) if v.len() == 8 => le_u64(&v),
            Some(_) => return Err(StoreError::Corrupt("party index start has a bad length".into())),
            None if db.scan_prefix([PARTY_INDEX.partition]).next().is_some() => {
                // Its rows would have no postings at all: refuse, loudly.
                return Err(StoreError::Corrupt("party index start (mparty_from) is missing but the index has partitions".into()));
            }
            None => {
                batch.insert(META_PARTY_FROM, &next_seq.to_le_bytes());
                writes += 1;
                next_seq
            }
        };
        let (mut post, damaged) = Postings::load(PARTY_INDEX, party_from, db).map_err(sled_err)?;
        for k in damaged.removals {
            batch.remove(k);
            writes += 1;
        }
        for (lo, hi) in damaged.ranges {
            tracing::warn!(lo, hi, "party index partition damaged; rebuilding it from the chunks");
            let mut entries = Vec::new();
            for_each_row(db, lo, hi, |seq, e| entries.extend(parties(e).map(|(p, roles)| (party_fp(&p), seq, roles))))?;
            for (k, v) in post.rebuild(lo, hi, entries) {
                batch.insert(k, v);
                writes += 1;
            }
        }
        let mut sealed = Vec::new();
        for_each_row(db, post.open_from(), u64::MAX, |seq, e| {
            if post.open_len() >= OPEN_ENTRIES_MAX {
                sealed.extend(post.seal());
            }
            for (p, roles) in parties(e) {
                post.push(party_fp(&p), seq, roles);
            }
        })?;
        for (k, v) in sealed {
            batch.insert(k, v);
            writes += 1;
        }
        if writes > 0 {
            db.apply_batch(batch).map_err(sled_err)?;
            committer.commit().map_err(|e| StoreError::Unavailable(format!("commit: {e}")))?;
        }
        tracing::info!(
            party_from,
            sealed_partitions = post.sealed_count(),
            filter_bytes = post.sealed_bytes(),
            open_entries = post.open_len(),
            ms = started.elapsed().as_millis() as u64,
            "party index loaded"
        );
        Ok((post, party_from))
    }

    /// The chunk holding `seq` (layout 2), which an index says exists.
    fn chunk_holding(&self, seq: u64) -> Result<Chunk, StoreError> {
        match chunk_start_at_or_before(&self.inner.db, seq)? {
            Some(first) => self.chunk(first),
            None => Err(StoreError::Corrupt(format!("an index points to seq {seq}, before every chunk"))),
        }
    }

    /// The event recorded as `seq` (layout 2).
    fn event_at(&self, seq: u64) -> Result<StoredEvent, StoreError> {
        self.chunk_holding(seq)?.event(seq)
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

    fn chunk(&self, first_seq: u64) -> Result<Chunk, StoreError> {
        match self.inner.db.get(seq_key(P_CHUNK, first_seq)).map_err(sled_err)? {
            Some(v) => Chunk::decode(first_seq, v),
            None => Err(StoreError::Corrupt(format!("an index points to missing chunk {first_seq}"))),
        }
    }


    fn get_blocking(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let fp = idindex::fingerprint(id);
        let candidates = self.inner.index.read().unwrap_or_else(|p| p.into_inner()).candidates(&self.inner.db, fp).map_err(sled_err)?;
        // Confirmed against the row: a fingerprint shared by two ids (or a
        // filter's false positive) never answers for the wrong event.
        for seq in candidates {
            let ev = self.event_at(seq)?;
            if ev.event.id == id {
                return Ok(Some(ev));
            }
        }
        if self.inner.has_id_keys {
            if let Some(v) = self.inner.db.get(str_key(P_ID, id)).map_err(sled_err)? {
                if v.len() != 16 {
                    return Err(StoreError::Corrupt(format!("id entry of {id:?} has a bad length")));
                }
                let (seq, first) = (be_u64(&v[..8]), be_u64(&v[8..]));
                let ev = self.chunk(first)?.event(seq)?;
                // Pair assertion: the row found is the one the id entry names.
                if ev.event.id != id {
                    return Err(StoreError::Corrupt(format!("id entry of {id:?} points to event {:?}", ev.event.id)));
                }
                return Ok(Some(ev));
            }
        }
        if self.inner.v1_seq_max > 0 {
            if let Some(raw) = self.inner.db.get(str_key(V1_EVENT, id)).map_err(sled_err)? {
                return Ok(Some(decode_row_v1(&raw)?));
            }
        }
        Ok(None)
    }

    fn record_blocking(&self, node: &str, events: Vec<IncomingEvent>) -> Result<Vec<Outcome>, StoreError> {
        self.check_failed()?;
        let digests: Vec<[u8; 32]> = events.iter().map(|e| e.event.digest()).collect();
        let mut stored: Vec<Option<([u8; 32], u64)>> = vec![None; events.len()];
        let mut created = vec![false; events.len()];
        // The ids are looked up before the write lock (the costly part, done
        // beside other batches' writes): every batch of generation <= seen
        // had been applied before, so its ids are found here; those applied
        // since are checked under the lock against `recent`.
        let seen = self.inner.applied.load(Ordering::SeqCst);
        let mut looked_up = Vec::with_capacity(events.len());
        for ev in &events {
            looked_up.push(self.stored_blocking(&ev.event.id)?);
        }
        let rows: Vec<Vec<u8>> = events.iter().map(|ev| encode_row(ev.node_seq, ev.received_at, &ev.event)).collect();
        let gen = {
            let mut w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
            // Stable under the lock: generations are only taken under it.
            let latest = self.inner.applied.load(Ordering::SeqCst);
            let since = if latest == seen { Some(Vec::new()) } else { w.created_since(seen) };
            let mut mine = CreatedIds::new();
            let mut batch = sled::Batch::default();
            let now = OffsetDateTime::now_utc();
            let mut next_seq = w.next_seq;
            let mut added = 0u64;
            let mut chunk: Option<ChunkBuilder> = None;
            // (event index, ledger_seq) of each row this batch creates.
            let mut new_rows: Vec<(usize, u64)> = Vec::with_capacity(events.len());
            for ((i, ev), row) in events.iter().enumerate().zip(rows) {
                let id = ev.event.id.as_str();
                // An id repeated inside the batch is judged against its first entry.
                if let Some(s) = mine.get(id) {
                    stored[i] = Some(*s);
                    continue;
                }
                let old = match (looked_up[i], &since) {
                    (Some(found), _) => Some(found),
                    (None, Some(maps)) => maps.iter().find_map(|m| m.get(id).copied()),
                    // `recent` no longer reaches back to the lookup: look again.
                    (None, None) => self.stored_blocking(id)?,
                };
                if let Some(found) = old {
                    stored[i] = Some(found);
                    continue;
                }
                let seq = next_seq;
                next_seq += 1;
                added += 1;
                if !chunk.as_ref().is_some_and(|c| c.fits(row.len())) {
                    if let Some(full) = chunk.take() {
                        full.seal(node, now, &mut batch);
                    }
                    chunk = Some(ChunkBuilder::new(seq));
                }
                let c = chunk.as_mut().expect("a chunk was just opened");
                c.push(row);
                new_rows.push((i, seq));
                mine.insert(id.to_owned(), (digests[i], seq));
                stored[i] = Some((digests[i], seq));
                created[i] = true;
            }
            if let Some(c) = chunk.take() {
                c.seal(node, now, &mut batch);
            }
            if added > 0 {
                batch.insert(META_COUNT, &(w.count + added).to_le_bytes());
                // Ids and postings go into their indexes only once their rows
                // are applied (a lookup must never find a seq whose row is not
                // there). When an index's open partition is full, it is sealed
                // into this same batch, holding that index locked until the
                // apply: its runs must be in sled before anyone reads them.
                let sealing = seal_if_full(
                    &self.inner.index,
                    self.inner.open_ids_max.load(Ordering::SeqCst),
                    &mut batch,
                    idindex::Index::open_len,
                    idindex::Index::seal,
                );
                let sealing_postings = seal_if_full(
                    &self.inner.postings,
                    self.inner.open_postings_max.load(Ordering::SeqCst),
                    &mut batch,
                    idindex::postings::Postings::open_len,
                    idindex::postings::Postings::seal,
                );
                if let Err(e) = self.inner.db.apply_batch(batch) {
                    // The in-memory index may be ahead of sled now: no more writes.
                    let msg = format!("apply: {}", sled_err(e));
                    *self.inner.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                    return Err(StoreError::Unavailable(msg));
                }
                let mut index = sealing.unwrap_or_else(|| self.inner.index.write().unwrap_or_else(|p| p.into_inner()));
                for (id, (_, seq)) in &mine {
                    index.insert(idindex::fingerprint(id), *seq);
                }
                drop(index);
                let mut post = sealing_postings.unwrap_or_else(|| self.inner.postings.write().unwrap_or_else(|p| p.into_inner()));
                for (i, seq) in &new_rows {
                    for (party, roles) in parties(&events[*i].event) {
                        post.push(party_fp(&party), *seq, roles);
                    }
                }
                drop(post);
                w.next_seq = next_seq;
                w.count += added;
                self.inner.applied_seq.fetch_max(next_seq - 1, Ordering::SeqCst);
            }
            // Taken under the write lock after the apply: a later batch that sees
            // this batch's rows (as duplicates) gets a higher generation and so
            // waits for a flush that covers them too.
            let gen = self.inner.applied.fetch_add(1, Ordering::SeqCst) + 1;
            w.remember(gen, mine);
            gen
        };
        self.wait_durable(gen)?;
        outcomes(&digests, |i| stored[i], |i| created[i])
    }

    fn query_blocking(&self, f: Filter, scan_max: usize) -> Result<Page, StoreError> {
        let start_seq = f.after.saturating_add(1);
        let party = if let Some(u) = f.payee {
            Some((u, V1_PAYEE, ROLE_PAYEE))
        } else if let Some(u) = f.recipient {
            Some((u, V1_RECIPIENT, ROLE_RECIPIENT))
        } else {
            f.payer.map(|u| (u, V1_PAYER, ROLE_PAYER))
        };
        let mut walk = Walk { f, out: Vec::new(), scanned: 0, last_scanned: None, scan_max };
        if start_seq <= self.inner.v1_seq_max {
            if let Some(page) = self.query_v1(&mut walk, start_seq, party.map(|(u, p, _)| (u, p)))? {
                return Ok(page);
            }
        }
        let start_seq = start_seq.max(self.inner.v1_seq_max + 1);
        let page = match party {
            Some((u, _, role)) => self.query_party(&mut walk, start_seq, u, role)?,
            None => self.query_chunks(&mut walk, start_seq)?,
        };
        Ok(page.unwrap_or(Page { events: walk.out, next_after: None }))
    }

    /// The digest of the event recorded under `id`: the row is read and
    /// decoded (its chunk's CRC32C checked) and the canonical event digested,
    /// the same digest `record_batch` compares for duplicate and conflict.
    fn digest_blocking(&self, id: &str) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.stored_blocking(id)?.map(|(digest, _)| digest))
    }

    /// The digest and ledger_seq of the event recorded under `id`, if any.
    fn stored_blocking(&self, id: &str) -> Result<Option<([u8; 32], u64)>, StoreError> {
        Ok(self.get_blocking(id)?.map(|e| (e.event.digest(), e.ledger_seq)))
    }

    /// Layout 1: walks an index (`s` or `P/R/Y<uuid>`) up to the last layout-1 seq.
    fn query_v1(&self, walk: &mut Walk, start_seq: u64, party: Option<(Uuid, u8)>) -> Result<Option<Page>, StoreError> {
        let end_seq = self.inner.v1_seq_max;
        let (start, end): (Vec<u8>, Vec<u8>) = match party {
            Some((u, prefix)) => (uuid_key(prefix, &u, start_seq).to_vec(), uuid_key(prefix, &u, end_seq).to_vec()),
            None => (seq_key(V1_SEQ, start_seq).to_vec(), seq_key(V1_SEQ, end_seq).to_vec()),
        };
        for item in self.inner.db.range(start..=end) {
            if let Some(page) = walk.full() {
                return Ok(Some(page));
            }
            let (k, id) = item.map_err(sled_err)?;
            walk.walked(tail_seq(&k));
            let id = std::str::from_utf8(&id).map_err(|_| StoreError::Corrupt("index holds a non-UTF-8 id".into()))?;
            let Some(raw) = self.inner.db.get(str_key(V1_EVENT, id)).map_err(sled_err)? else {
                return Err(StoreError::Corrupt(format!("index points to missing event {id:?}")));
            };
            walk.offer(decode_row_v1(&raw)?);
        }
        Ok(None)
    }

    /// Layout 2, ledger order: the chunks from the one holding `start_seq`.
    fn query_chunks(&self, walk: &mut Walk, start_seq: u64) -> Result<Option<Page>, StoreError> {
        let from = chunk_start_at_or_before(&self.inner.db, start_seq)?.unwrap_or(start_seq);
        for item in self.inner.db.range(seq_key(P_CHUNK, from)..=seq_key(P_CHUNK, u64::MAX)) {
            let (k, v) = item.map_err(sled_err)?;
            let chunk = Chunk::decode(tail_seq(&k), v)?;
            for seq in chunk.first_seq.max(start_seq)..=chunk.last_seq() {
                if let Some(page) = walk.full() {
                    return Ok(Some(page));
                }
                walk.walked(seq);
                walk.offer(chunk.event(seq)?);
            }
        }
        Ok(None)
    }

    /// By party: the `p` postings of the rows before the party index (from
    /// the groups that can hold `start_seq`), then the party index's entries;
    /// an entry of the party in another role is walked past without reading
    /// its row.
    fn query_party(&self, walk: &mut Walk, start_seq: u64, party: Uuid, role: u8) -> Result<Option<Page>, StoreError> {
        let mut cached: Option<Chunk> = None;
        if start_seq < self.inner.party_from {
            // A group holds at most GROUP_ROWS_MAX rows, so one holding
            // start_seq starts at most GROUP_ROWS_MAX - 1 before it.
            let from = start_seq.saturating_sub(GROUP_ROWS_MAX - 1);
            let range = uuid_key(P_PARTY, &party, from)..=uuid_key(P_PARTY, &party, u64::MAX);
            for item in self.inner.db.range(range) {
                let (k, v) = item.map_err(sled_err)?;
                let first = tail_seq(&k);
                if v.is_empty() || v.len() % 3 != 0 {
                    return Err(StoreError::Corrupt(format!("postings of group {first} have a bad length")));
                }
                for p in v.chunks_exact(3) {
                    let seq = first + u64::from(le_u16(p));
                    if seq >= start_seq {
                        if let Some(page) = self.visit_posting(walk, &mut cached, seq, p[2], role)? {
                            return Ok(Some(page));
                        }
                    }
                }
            }
        }
        // The entries are taken under the index's read lock, the rows read
        // after it: a batch waits for the index walk, never for the rows.
        // One more than the scan budget allows, so that a page cut by the
        // budget still gets its cursor.
        let max = walk.scan_max.saturating_sub(walk.scanned).saturating_add(1);
        let mut entries: Vec<(u64, u8)> = Vec::new();
        self.inner
            .postings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .walk(&self.inner.db, party_fp(party.as_bytes()), start_seq.max(self.inner.party_from), |seq, roles| {
                entries.push((seq, roles));
                if entries.len() >= max {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            })
            .map_err(walk_err)?;
        for (seq, roles) in entries {
            if let Some(page) = self.visit_posting(walk, &mut cached, seq, roles, role)? {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }

    /// One posting of a query by party: its row offered if the party plays
    /// `role` in it (the row's chunk kept in `cached` for the next).
    fn visit_posting(&self, walk: &mut Walk, cached: &mut Option<Chunk>, seq: u64, roles: u8, role: u8) -> Result<Option<Page>, StoreError> {
        if let Some(page) = walk.full() {
            return Ok(Some(page));
        }
        walk.walked(seq);
        if roles & role != 0 {
            if cached.as_ref().is_none_or(|c| seq < c.first_seq || seq > c.last_seq()) {
                *cached = Some(self.chunk_holding(seq)?);
            }
            walk.offer(cached.as_ref().expect("cached above").event(seq)?);
        }
        Ok(None)
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

    /// Many batches at once with overlapping ids (each id's event the same
    /// everywhere, except a few sent different by one task): every id is
    /// created exactly once and every answer for it names that ledger_seq;
    /// both with the recent ids in memory and when they no longer reach back
    /// (each lookup done again under the lock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn overlapping_concurrent_batches_create_each_id_once() {
        for recent_max in [RECENT_IDS_MAX, 1] {
            let dir = tempfile::tempdir().expect("tempdir");
            let s = SledStore::open(dir.path(), false).expect("open");
            s.inner.write.lock().expect("lock").recent_ids_max = recent_max;
            let mut tasks = Vec::new();
            for t in 0..6u64 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for round in 0..30u64 {
                        // 40 ids of a pool of 300, a different window per task and round.
                        let batch: Vec<IncomingEvent> = (0..40u64)
                            .map(|k| {
                                let id = (t * 37 + round * 11 + k * 7) % 300;
                                // Task 5 sends ids divisible by 50 with another amount.
                                let amount = if t == 5 && id % 50 == 0 { 9 } else { 5 };
                                inc(k, event(&format!("ov-{id}"), amount, PAYEE_A))
                            })
                            .collect();
                        let ids: Vec<String> = batch.iter().map(|e| e.event.id.clone()).collect();
                        let amounts: Vec<u64> = batch.iter().map(|e| e.event.amount).collect();
                        let out = s.record_batch(&format!("n{t}"), batch).await.expect("batch");
                        answers.extend(ids.into_iter().zip(amounts).zip(out));
                    }
                    answers
                }));
            }
            let mut accepted: HashMap<String, (u64, u64)> = HashMap::new();
            let mut all = Vec::new();
            for t in tasks {
                for ((id, amount), o) in t.await.expect("join") {
                    if let Outcome::Accepted { ledger_seq } = o {
                        assert!(accepted.insert(id.clone(), (ledger_seq, amount)).is_none(), "{id} accepted twice (recent max {recent_max})");
                    }
                    all.push((id, amount, o));
                }
            }
            for (id, amount, o) in &all {
                let (seq, first_amount) = accepted[id];
                let want = match o {
                    Outcome::Accepted { .. } => Outcome::Accepted { ledger_seq: seq },
                    _ if *amount == first_amount => Outcome::Duplicate { ledger_seq: seq },
                    _ => Outcome::Conflict { ledger_seq: seq },
                };
                assert_eq!(*o, want, "{id} amount {amount} (recent max {recent_max})");
            }
            assert_eq!(s.stats().await.expect("stats").events, accepted.len() as u64);
            assert_eq!(accepted.len(), 300, "every id of the pool was sent");
        }
    }

    fn party_event(id: &str, payee: &Uuid, payer: &Uuid, recipient: Option<&Uuid>) -> Event {
        let mut v = serde_json::json!({
            "id": id, "kind": "purchase", "amount": 250, "currency": "L$",
            "payer": payer.to_string(), "payee": payee.to_string(),
            "occurred_at": "2026-11-24T12:00:00Z",
            "item": "Mesh Sofa Deluxe (copy/mod)", "region": "Casper Isle",
            "attributes": {"rental_period_days": "7"}
        });
        if let Some(r) = recipient {
            v["recipient"] = serde_json::json!(r.to_string());
        }
        Event::from_json_value(&v).expect("valid event")
    }

    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(0x1000_0000_0000_4000_8000_0000_0000_0000 | n)
    }

    fn ids(p: &Page) -> Vec<&str> {
        p.events.iter().map(|e| e.event.id.as_str()).collect()
    }

    /// Follows `next_after` until the end; every page bounded by `scan_max`.
    fn query_all(s: &SledStore, f: Filter, scan_max: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        let mut f = f;
        for _ in 0..10_000 {
            let p = s.query_blocking(f.clone(), scan_max).expect("query");
            assert!(p.events.len() <= f.limit);
            seqs.extend(p.events.iter().map(|e| e.ledger_seq));
            match p.next_after {
                Some(a) => f.after = a,
                None => return seqs,
            }
        }
        panic!("paging did not end");
    }

    /// A batch larger than one chunk: several chunks, the party index and the
    /// id index in memory; every read path finds exactly the right events, in
    /// order, through every page size and scan bound. The key count is the
    /// point of layout 2: a chunk per ~25 rows and nothing per event (layout
    /// 1 wrote five keys per event).
    #[tokio::test]
    async fn chunks_and_postings_answer_every_read_with_few_keys_per_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), false).expect("open");
        let merchants: Vec<Uuid> = (0..4).map(uuid).collect();
        let n = 600u64;
        let mut all = Vec::new();
        for b in 0..3u64 {
            let batch: Vec<IncomingEvent> = (0..n / 3)
                .map(|j| {
                    let i = b * (n / 3) + j;
                    // Payers repeat every 50 events; every 7th event names its
                    // recipient (someone else), the rest default to the payer.
                    let payer = uuid(1000 + u128::from(i % 50));
                    let recipient = (i % 7 == 0).then(|| uuid(5000 + u128::from(i)));
                    let e = party_event(&format!("sl-{i}"), &merchants[(i % 4) as usize], &payer, recipient.as_ref());
                    inc(i, e)
                })
                .collect();
            all.extend(batch.iter().map(|e| e.event.clone()));
            let r = s.record_batch("edge-1", batch).await.expect("batch");
            assert!(r.iter().all(|o| matches!(o, Outcome::Accepted { .. })));
        }
        let keys = s.inner.db.len() as u64;
        let chunks = s.inner.db.scan_prefix([P_CHUNK]).count();
        eprintln!("{n} events: {keys} sled keys, {chunks} chunks");
        assert!(chunks > 3, "a batch of 200 events spans several chunks");
        // The chunks and three meta keys (count, store id, party index
        // start): no key per party or per id (both indexes' open partitions
        // are in memory).
        assert_eq!(s.inner.db.scan_prefix([P_PARTY]).count(), 0, "no posting keys");
        assert!(keys <= chunks as u64 + 3, "{keys} keys for {n} events");
        assert_eq!(s.inner.db.scan_prefix([P_ID]).count(), 0, "no id entries");
        // By id, each one, exactly as sent.
        for (i, e) in all.iter().enumerate() {
            let got = s.get(&e.id).await.expect("get").expect("present");
            assert_eq!((&got.event, got.ledger_seq, got.node.as_str(), got.node_seq), (e, i as u64 + 1, "edge-1", i as u64));
        }
        // Every filter against a model, through small pages and small scan bounds.
        type Pick = fn(&Event) -> Uuid;
        let picks: [(&str, Pick); 3] = [("payee", |e| e.payee), ("recipient", |e| e.recipient), ("payer", |e| e.payer)];
        for (limit, scan_max) in [(1000, QUERY_SCAN_ENTRIES_MAX), (7, 1000), (3, 5), (1000, 1)] {
            let want: Vec<u64> = (1..=n).collect();
            assert_eq!(query_all(&s, Filter { limit, ..Filter::default() }, scan_max), want);
            for (name, pick) in picks {
                for who in [merchants[1], uuid(1000 + 7), uuid(5000 + 14), uuid(9999)] {
                    let want: Vec<u64> =
                        all.iter().enumerate().filter(|(_, e)| pick(e) == who).map(|(i, _)| i as u64 + 1).collect();
                    let mut f = Filter { limit, ..Filter::default() };
                    match name {
                        "payee" => f.payee = Some(who),
                        "recipient" => f.recipient = Some(who),
                        _ => f.payer = Some(who),
                    }
                    assert_eq!(query_all(&s, f, scan_max), want, "{name} {who} limit {limit} scan {scan_max}");
                }
            }
            // Two filters at once (payee scoped, payer inside it), and `after`.
            let who = uuid(1000 + 9);
            let want: Vec<u64> = all
                .iter()
                .enumerate()
                .filter(|(i, e)| e.payee == merchants[1] && e.payer == who && *i as u64 + 1 > 100)
                .map(|(i, _)| i as u64 + 1)
                .collect();
            let f = Filter { payee: Some(merchants[1]), payer: Some(who), after: 100, limit, ..Filter::default() };
            assert_eq!(query_all(&s, f, scan_max), want);
        }
        // A duplicate and a conflict of a row inside a chunk, after a reopen.
        drop(s);
        let s = SledStore::open(dir.path(), false).expect("reopen");
        let r = s
            .record_batch("edge-2", vec![inc(1, all[123].clone()), inc(2, party_event("sl-123", &merchants[0], &uuid(1), None))])
            .await
            .expect("batch");
        assert_eq!(r, vec![Outcome::Duplicate { ledger_seq: 124 }, Outcome::Conflict { ledger_seq: 124 }]);
        let st = s.stats().await.expect("stats");
        assert_eq!((st.events, st.ledger_seq_max), (n, n));
    }

    /// Rewrites the postings of a store as a release before the party index
    /// left them: `p` postings per group (the rows of one batch, at most
    /// GROUP_ROWS_MAX of them) for the batches `(first, last seq)`, no party
    /// index and no `mparty_from`.
    fn make_pre_party_index(dir: &Path, batches: &[(u64, u64)]) {
        let (db, committer) = durable::open(dir, SLED_CACHE_BYTES, Duration::from_secs(2)).expect("open");
        let mut batch = sled::Batch::default();
        for k in db.iter().keys() {
            let k = k.expect("key");
            if [PARTY_INDEX.partition, PARTY_INDEX.run, PARTY_INDEX.filter].contains(&k[0]) || &k[..] == META_PARTY_FROM {
                batch.remove(k);
            }
        }
        for &(lo, hi) in batches {
            let mut group: Option<GroupBuilder> = None;
            for_each_row(&db, lo, hi, |seq, e| {
                if group.as_ref().is_none_or(GroupBuilder::full) {
                    if let Some(g) = group.take() {
                        g.seal(&mut batch);
                    }
                    group = Some(GroupBuilder::new(seq));
                }
                group.as_mut().expect("a group is open").push(seq, e);
            })
            .expect("rows");
            if let Some(g) = group {
                g.seal(&mut batch);
            }
        }
        db.apply_batch(batch).expect("apply");
        committer.commit().expect("commit");
    }

    /// A store of the release before the party index (`p` postings, a batch
    /// of more than GROUP_ROWS_MAX rows in two groups) opens with the party
    /// index starting after its rows; new rows go into the index (sealed
    /// several times: a tiny open partition). Queries by party walk both, from
    /// any start, through small pages and scan bounds; the same after a
    /// reopen (the open partition rebuilt from the chunks) and after a sealed
    /// partition's header is damaged (rebuilt from the chunks at open). A
    /// damaged run chunk is reported as corruption, not skipped.
    #[tokio::test]
    async fn party_queries_walk_old_group_postings_then_the_party_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = GROUP_ROWS_MAX + 904;
        let (a, b) = (uuid(1), uuid(2));
        let ev = |i: u64| party_event(&format!("g-{i}"), if i % 3 == 0 { &a } else { &b }, &uuid(100 + u128::from(i % 11)), None);
        {
            let s = SledStore::open(dir.path(), false).expect("open");
            s.record_batch("edge-1", (0..n).map(|i| inc(i, ev(i))).collect()).await.expect("batch");
            s.close().expect("close");
        }
        make_pre_party_index(dir.path(), &[(1, n)]);
        let total = n + 2000;
        let check = |s: &SledStore| {
            for after in [0, 17, GROUP_ROWS_MAX - 2, GROUP_ROWS_MAX + 1, n - 3, n + 450, total - 3] {
                for (limit, scan_max) in [(1000, QUERY_SCAN_ENTRIES_MAX), (7, 50)] {
                    let f = Filter { payee: Some(a), after, limit, ..Filter::default() };
                    let want: Vec<u64> = (after + 1..=total).filter(|seq| (seq - 1) % 3 == 0).collect();
                    assert_eq!(query_all(s, f, scan_max), want, "payee, after {after} limit {limit}");
                    let f = Filter { payer: Some(uuid(105)), after, limit, ..Filter::default() };
                    let want: Vec<u64> = (after + 1..=total).filter(|seq| (seq - 1) % 11 == 5).collect();
                    assert_eq!(query_all(s, f, scan_max), want, "payer, after {after} limit {limit}");
                    let f = Filter { recipient: Some(a), after, limit, ..Filter::default() };
                    assert_eq!(query_all(s, f, scan_max), Vec::<u64>::new(), "a is never a recipient");
                }
            }
        };
        {
            let s = SledStore::open(dir.path(), false).expect("reopen");
            assert_eq!(s.inner.party_from, n + 1);
            assert_eq!(s.inner.db.scan_prefix(&uuid_key(P_PARTY, &a, 0)[..17]).count(), 2, "one posting key per group");
            s.inner.open_postings_max.store(500, Ordering::SeqCst);
            for b in 0..20u64 {
                let batch = (0..100).map(|k| inc(n + b * 100 + k, ev(n + b * 100 + k))).collect();
                s.record_batch("edge-2", batch).await.expect("batch");
            }
            assert_eq!(s.inner.db.scan_prefix(&uuid_key(P_PARTY, &a, 0)[..17]).count(), 2, "no new group postings");
            assert!(s.inner.db.scan_prefix([PARTY_INDEX.partition]).count() >= 3, "sealed partitions");
            check(&s);
            s.close().expect("close");
        }
        {
            let s = SledStore::open(dir.path(), false).expect("reopen");
            assert_eq!(s.inner.party_from, n + 1, "the start is kept");
            check(&s);
        }
        let header = idindex::key(PARTY_INDEX.partition, 1);
        {
            let (db, committer) = durable::open(dir.path(), SLED_CACHE_BYTES, Duration::from_secs(2)).expect("open");
            db.insert(header, b"garbage".to_vec()).expect("damage");
            committer.commit().expect("commit");
        }
        let s = SledStore::open(dir.path(), false).expect("reopen a damaged index");
        assert_ne!(s.inner.db.get(header).expect("get").as_deref(), Some(&b"garbage"[..]), "the damaged header was removed");
        check(&s);
        for k in s.inner.db.scan_prefix([PARTY_INDEX.run]).keys() {
            s.inner.db.insert(k.expect("key"), b"garbage".to_vec()).expect("damage");
        }
        match s.query(Filter { payee: Some(a), after: n, limit: 10, ..Filter::default() }).await {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("party index") && m.contains("run chunk"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    /// The id index sealed many times (a tiny open partition): every id is
    /// found, a resend is all `duplicate` with the first seqs and a changed
    /// event a `conflict`, before and after a reopen (sealed partitions loaded,
    /// the open one rebuilt from the chunks); no sled key per id.
    #[tokio::test]
    async fn ids_are_found_across_sealed_partitions_and_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batches: Vec<Vec<IncomingEvent>> =
            (0..20u64).map(|b| (0..50u64).map(|k| inc(k, event(&format!("ix-{}", b * 50 + k), 5, PAYEE_A))).collect()).collect();
        {
            let s = SledStore::open(dir.path(), false).expect("open");
            s.inner.open_ids_max.store(120, Ordering::SeqCst);
            for b in &batches {
                let out = s.record_batch("edge-1", b.clone()).await.expect("batch");
                assert!(out.iter().all(|o| matches!(o, Outcome::Accepted { .. })));
            }
            assert!(s.inner.db.scan_prefix([ID_INDEX.partition]).count() >= 5, "sealed partitions");
            assert_eq!(s.inner.db.scan_prefix([P_ID]).count(), 0);
            s.close().expect("close");
        }
        for round in 0..2 {
            let s = SledStore::open(dir.path(), false).expect("reopen");
            s.inner.open_ids_max.store(120, Ordering::SeqCst);
            for (b, batch) in batches.iter().enumerate() {
                let out = s.record_batch("edge-2", batch.clone()).await.expect("resend");
                let want: Vec<Outcome> = (0..50u64).map(|k| Outcome::Duplicate { ledger_seq: b as u64 * 50 + k + 1 }).collect();
                assert_eq!(out, want, "round {round} batch {b}");
            }
            let out = s.record_batch("edge-2", vec![inc(0, event("ix-777", 6, PAYEE_A))]).await.expect("conflict");
            assert_eq!(out, vec![Outcome::Conflict { ledger_seq: 778 }]);
            let got = s.get("ix-999").await.expect("get").expect("present");
            assert_eq!(got.ledger_seq, 1000);
            assert!(s.get("ix-1000").await.expect("get").is_none());
            // New ids after the reopen go on from there, and seal again.
            let fresh: Vec<IncomingEvent> = (0..130u64).map(|k| inc(k, event(&format!("ix-r{round}-{k}"), 5, PAYEE_A))).collect();
            let out = s.record_batch("edge-2", fresh).await.expect("fresh");
            assert!(out.iter().all(|o| matches!(o, Outcome::Accepted { .. })));
            s.close().expect("close");
        }
    }

    /// The party key is stored in the party index's runs: it must never
    /// change. The UUID's halves, read little-endian, XORed.
    #[test]
    fn party_keys_are_fixed() {
        let u: Uuid = "00112233-4455-6677-8899-aabbccddeeff".parse().expect("uuid");
        assert_eq!(party_fp(u.as_bytes()), 0x7766_5544_3322_1100 ^ 0xffee_ddcc_bbaa_9988);
        // A party in two roles of a row is one entry with both.
        let e = party_event("pk-1", &uuid(1), &uuid(2), None);
        let got: Vec<([u8; 16], u8)> = parties(&e).collect();
        assert_eq!(got, vec![(*uuid(1).as_bytes(), ROLE_PAYEE), (*uuid(2).as_bytes(), ROLE_RECIPIENT | ROLE_PAYER)]);
    }

    /// A flipped bit in a chunk is reported as corruption, not served.
    #[tokio::test]
    async fn a_corrupt_chunk_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), false).expect("open");
        s.record_batch("n1", vec![inc(1, event("a", 1, PAYEE_A)), inc(2, event("b", 2, PAYEE_A))]).await.expect("batch");
        let key = seq_key(P_CHUNK, 1);
        let mut v = s.inner.db.get(key).expect("get").expect("chunk").to_vec();
        let at = v.len() / 2;
        v[at] ^= 0x10;
        s.inner.db.insert(key, v).expect("insert");
        match s.get("b").await {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("chunk 1: checksum"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(matches!(s.query(Filter { limit: 10, ..Filter::default() }).await, Err(StoreError::Corrupt(_))));
    }

    /// Layout 1 as the previous release wrote it (`e`, `s`, `P/R/Y`, `mcount`),
    /// byte for byte: the row JSON with its digest, one apply_batch per batch.
    fn write_v1(dir: &Path, node: &str, events: &[(u64, Event)]) {
        let (db, committer) = durable::open(dir, SLED_CACHE_BYTES, Duration::from_secs(2)).expect("open");
        let mut batch = sled::Batch::default();
        let now = OffsetDateTime::now_utc();
        for (i, (node_seq, e)) in events.iter().enumerate() {
            let seq = i as u64 + 1;
            let row = RowV1 {
                ledger_seq: seq,
                node: node.to_owned(),
                node_seq: *node_seq,
                received_at: now,
                recorded_at: now,
                digest: hex(&e.digest()),
                event: e.to_json_value(),
            };
            batch.insert(str_key(V1_EVENT, &e.id), serde_json::to_vec(&row).expect("json"));
            batch.insert(&seq_key(V1_SEQ, seq), e.id.as_bytes());
            batch.insert(&uuid_key(V1_PAYEE, &e.payee, seq), e.id.as_bytes());
            batch.insert(&uuid_key(V1_RECIPIENT, &e.recipient, seq), e.id.as_bytes());
            batch.insert(&uuid_key(V1_PAYER, &e.payer, seq), e.id.as_bytes());
        }
        batch.insert(META_COUNT, &(events.len() as u64).to_le_bytes());
        db.apply_batch(batch).expect("apply");
        committer.commit().expect("commit");
    }

    /// A store of the previous release (layout 1) opens, reads and dedupes its
    /// events, takes new ones in layout 2 after its last ledger_seq, and every
    /// query walks both in ledger_seq order with one scan bound.
    #[tokio::test]
    async fn a_layout_1_store_opens_and_reads_with_new_events_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (m1, m2) = (uuid(1), uuid(2));
        let old: Vec<(u64, Event)> =
            (0..30u64).map(|i| (i, party_event(&format!("old-{i}"), if i % 2 == 0 { &m1 } else { &m2 }, &uuid(100 + u128::from(i % 3)), None))).collect();
        write_v1(dir.path(), "edge-old", &old);
        let s = SledStore::open(dir.path(), false).expect("open a layout-1 store");
        assert_eq!(s.inner.v1_seq_max, 30);
        let st = s.stats().await.expect("stats");
        assert_eq!((st.events, st.ledger_seq_max), (30, 30));
        let got = s.get("old-7").await.expect("get").expect("present");
        assert_eq!((got.ledger_seq, got.node.as_str(), got.node_seq, &got.event), (8, "edge-old", 7, &old[7].1));
        let new: Vec<IncomingEvent> = (0..30u64)
            .map(|i| inc(i, party_event(&format!("new-{i}"), if i % 2 == 0 { &m1 } else { &m2 }, &uuid(100 + u128::from(i % 3)), None)))
            .collect();
        let mut batch = new.clone();
        batch.push(inc(99, old[3].1.clone()));
        batch.push(inc(100, party_event("old-4", &m2, &uuid(1), None)));
        let r = s.record_batch("edge-new", batch).await.expect("batch");
        assert_eq!(r[0], Outcome::Accepted { ledger_seq: 31 });
        assert_eq!(r[29], Outcome::Accepted { ledger_seq: 60 });
        assert_eq!(r[30], Outcome::Duplicate { ledger_seq: 4 }, "a layout-1 event is a duplicate");
        assert_eq!(r[31], Outcome::Conflict { ledger_seq: 5 });
        drop(s);
        let s = SledStore::open(dir.path(), false).expect("reopen");
        assert_eq!(s.get("new-0").await.expect("get").expect("present").ledger_seq, 31);
        let st = s.stats().await.expect("stats");
        assert_eq!((st.events, st.ledger_seq_max), (60, 60));
        for (limit, scan_max) in [(100, QUERY_SCAN_ENTRIES_MAX), (4, 7), (1, 1)] {
            assert_eq!(query_all(&s, Filter { limit, ..Filter::default() }, scan_max), (1..=60).collect::<Vec<_>>());
            let want: Vec<u64> = (1..=60).filter(|q| (q - 1) % 30 % 2 == 0).collect();
            assert_eq!(query_all(&s, Filter { payee: Some(m1), limit, ..Filter::default() }, scan_max), want);
            let want: Vec<u64> = (1..=60).filter(|q| (q - 1) % 30 % 3 == 1).collect();
            assert_eq!(query_all(&s, Filter { payer: Some(uuid(101)), limit, ..Filter::default() }, scan_max), want.clone());
            assert_eq!(query_all(&s, Filter { recipient: Some(uuid(101)), limit, ..Filter::default() }, scan_max), want);
        }
        let p = s.query(Filter { payee: Some(m2), after: 25, limit: 3, ..Filter::default() }).await.expect("query");
        assert_eq!(ids(&p), vec!["old-25", "old-27", "old-29"]);
        assert_eq!(p.next_after, Some(30));
        let p = s.query(Filter { payee: Some(m2), after: 30, limit: 3, ..Filter::default() }).await.expect("query");
        assert_eq!(ids(&p), vec!["new-1", "new-3", "new-5"]);
    }
}
