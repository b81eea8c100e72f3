//! The idempotency index: event id → seq, without a sled entry per event.
//! Used by the spool (format 2) and by ledgerd's sled store, each under key
//! prefixes of its own ([`Prefixes`]).
//!
//! An id is reduced to a 64-bit *fingerprint* (the first 8 bytes of SHA-256 of
//! the id, little-endian: fixed forever, it is stored). Ids are kept in
//! *partitions* by seq:
//! - the **open partition**, in memory and exact: a hash map fingerprint → seq
//!   holding at most [`OPEN_IDS_MAX`] ids (≈17 bytes per id, preallocated:
//!   4.3 MiB), rebuilt at open from the blocks it covers (at most that many
//!   entries, never the whole backlog);
//! - **sealed partitions**, written once with the group commit that fills the
//!   open one: the (fingerprint, seq) pairs sorted, in run chunks of at most
//!   [`RUN_CHUNK_ENTRIES`] pairs (7 KiB values, read one at a time), and a
//!   binary fuse filter (`xorf::BinaryFuse8`, ≈9 bits per id, false positives
//!   ≈0.4%) kept in memory with the first fingerprint of every chunk (8 bytes
//!   per 4,000 ids). Memory per sealed id: ≈1.13 bytes.
//!
//! A lookup returns *candidate* seqs: every seq whose fingerprint matches. The
//! caller confirms each against the stored record (same id?) before answering
//! `duplicate` or `conflict`, so neither a filter false positive (one chunk
//! read) nor a fingerprint collision (two ids, one fingerprint: both kept,
//! both confirmed) can turn a new event away.
//!
//! Expiry (the spool): a sealed partition is dropped whole once compaction has
//! removed every block it points into (its ids could no longer be confirmed
//! anyway). The dedupe window is therefore exactly the records' retention: an
//! id dedupes as long as its record is kept (`acked_retention` after its ack).
//! The ledger never expires a partition.

pub mod postings;

/// Sled writes (key, value) to go into a caller's batch.
pub type Writes = Vec<(Vec<u8>, Vec<u8>)>;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};
use xorf::{BinaryFuse8, BinaryFuse8Ref, DmaSerializable, Filter, FilterRef};

use spool_format::DecodeError;

/// The key prefixes of an index's three kinds of sled entries: `partition
/// <id u64 BE>` → header, `run <id> <chunk>` → sorted (fingerprint, seq)
/// pairs, `filter <id> <chunk>` → the filter's bytes and the chunk fences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefixes {
    pub partition: u8,
    pub run: u8,
    pub filter: u8,
}

/// Largest sled value the index writes, in bytes: sled 0.34.7 keeps up to 17
/// values in one leaf and writes a leaf over its blob threshold to a file of
/// its own (one more fsync per commit); 17 values of 7 KiB stay under it.
pub const VALUE_BYTES_MAX: usize = 7 << 10;

const _: () = assert!(17 * VALUE_BYTES_MAX < durable::SLED_BLOB_THRESHOLD_BYTES);

/// `prefix ‖ n` (u64 BE).
pub fn key(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// `prefix ‖ a ‖ b` (u64 BE each).
pub fn key2(prefix: u8, a: u64, b: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = prefix;
    k[1..9].copy_from_slice(&a.to_be_bytes());
    k[9..].copy_from_slice(&b.to_be_bytes());
    k
}

/// The u64 at bytes 1..9 of a key.
pub fn key_u64(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if k.len() >= 9 {
        b.copy_from_slice(&k[1..9]);
    }
    u64::from_be_bytes(b)
}

pub fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Appends the CRC32C of `out` to it.
pub fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks and strips the trailing CRC32C of a value.
pub fn unseal(b: &[u8]) -> Result<&[u8], DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::Truncated { len: b.len() });
    }
    let (body, crc) = b.split_at(b.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(body)
}

/// Ids in the open partition before it is sealed: 7/8 of 2^18, so that the
/// preallocated hash map (2^18 slots of 17 bytes: 4.3 MiB) never grows. It
/// bounds the work of an open (the open partition is rebuilt from at most
/// this many entries) against the number of filters an append probes (one a
/// sealed partition: 44 at 10M ids).
pub const OPEN_IDS_MAX: usize = 229_376;
/// (fingerprint, seq) pairs per run chunk: 440 × 16 bytes stays under the
/// 7 KiB value limit with its count and checksum.
pub const RUN_CHUNK_ENTRIES: usize = 440;

const _: () = assert!(RUN_CHUNK_ENTRIES * 16 + 8 <= VALUE_BYTES_MAX);

/// The fingerprint of an event id.
pub fn fingerprint(id: &str) -> u64 {
    let d = Sha256::digest(id.as_bytes());
    le_u64(&d[..8])
}

/// The fingerprint is already a hash: use it as the hash map's hash.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type OpenMap = HashMap<u64, u64, BuildHasherDefault<IdentityHasher>>;

/// A sealed partition as kept in memory.
pub struct Sealed {
    pub id: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    /// `BinaryFuse8` descriptor and fingerprints; empty when the filter could
    /// not be built (then every lookup reads the chunk).
    descriptor: Vec<u8>,
    fingerprints: Box<[u8]>,
    /// First fingerprint of every run chunk.
    fences: Vec<u64>,
}

impl Sealed {
    /// Seals `pairs` (sorted by fingerprint, then value) as partition `id`
    /// covering seqs `first_seq..=last_seq`: the partition as kept in memory
    /// and the sled writes that store it (run chunks, filter chunks, header).
    pub(crate) fn build(p: &Prefixes, id: u64, pairs: &[(u64, u64)], first_seq: u64, last_seq: u64) -> (Sealed, Writes) {
        debug_assert!(pairs.windows(2).all(|w| w[0] <= w[1]), "pairs must be sorted");
        let mut keys: Vec<u64> = pairs.iter().map(|(f, _)| *f).collect();
        keys.dedup();
        let (descriptor, fingerprints) = match BinaryFuse8::try_from(&keys) {
            Ok(f) => {
                let mut d = vec![0u8; BinaryFuse8::DESCRIPTOR_LEN];
                f.dma_copy_descriptor_to(&mut d);
                (d, f.fingerprints)
            }
            Err(e) => {
                tracing::warn!(partition = id, error = e, "no filter for this index partition; its lookups read the runs");
                (Vec::new(), Box::default())
            }
        };
        let mut writes = Vec::new();
        let mut fences = Vec::new();
        for (c, chunk) in pairs.chunks(RUN_CHUNK_ENTRIES).enumerate() {
            fences.push(chunk[0].0);
            writes.push((key2(p.run, id, c as u64).to_vec(), encode_chunk(chunk)));
        }
        let mut stream = fingerprints.to_vec();
        for f in &fences {
            stream.extend_from_slice(&f.to_le_bytes());
        }
        for (c, chunk) in stream.chunks(VALUE_BYTES_MAX - 4).enumerate() {
            writes.push((key2(p.filter, id, c as u64).to_vec(), seal(chunk.to_vec())));
        }
        let sealed = Sealed { id, first_seq, last_seq, count: pairs.len() as u64, descriptor, fingerprints, fences };
        writes.push((key(p.partition, id).to_vec(), encode_header(&sealed)));
        (sealed, writes)
    }

    /// Run chunk `c` of this partition: `Ok(Err(_))` names what is wrong with
    /// it (missing or corrupt).
    pub(crate) fn run_chunk(&self, db: &sled::Db, p: &Prefixes, c: usize) -> Result<Result<Vec<(u64, u64)>, String>, sled::Error> {
        Ok(match db.get(key2(p.run, self.id, c as u64))? {
            Some(raw) => decode_chunk(&raw),
            None => Err("missing".into()),
        })
    }

    fn may_contain(&self, fp: u64) -> bool {
        if self.descriptor.is_empty() {
            return true;
        }
        BinaryFuse8Ref::from_dma(&self.descriptor, &self.fingerprints).contains(&fp)
    }

    /// Memory held, in bytes.
    fn bytes(&self) -> usize {
        self.descriptor.len() + self.fingerprints.len() + self.fences.len() * 8
    }

    /// The chunks that can hold `fp`.
    fn chunks_for(&self, fp: u64) -> std::ops::Range<usize> {
        // Chunks whose fence is <= fp, and the last one whose fence is < fp
        // (equal fingerprints can straddle a chunk boundary).
        let hi = self.fences.partition_point(|f| *f <= fp);
        let lo = self.fences.partition_point(|f| *f < fp).saturating_sub(1);
        lo..hi.max(lo + 1).min(self.fences.len())
    }

    fn keys(&self, p: &Prefixes) -> Vec<Vec<u8>> {
        let mut out = vec![key(p.partition, self.id).to_vec()];
        for c in 0..self.fences.len() {
            out.push(key2(p.run, self.id, c as u64).to_vec());
        }
        for c in 0..filter_chunks(self.fingerprints.len() + self.fences.len() * 8) {
            out.push(key2(p.filter, self.id, c as u64).to_vec());
        }
        out
    }
}

fn filter_chunks(bytes: usize) -> usize {
    bytes.div_ceil(VALUE_BYTES_MAX - 4)
}

/// Header of a sealed partition, as stored under `P <id>`:
/// id, first seq, last seq, count (u64 LE each), fingerprint bytes (u64 LE),
/// descriptor length (u16 LE) and bytes, chunk count (u32 LE), the chunk
/// CRC32C. The chunk fences (the first fingerprint of each run chunk, u64 LE)
/// follow the filter's fingerprints in the `F` chunks, so that the header
/// stays small (a leaf of 17 headers must stay under sled's blob threshold).
fn encode_header(s: &Sealed) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + s.descriptor.len() + s.fences.len() * 8);
    for v in [s.id, s.first_seq, s.last_seq, s.count, s.fingerprints.len() as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&u16::try_from(s.descriptor.len()).expect("descriptor fits u16").to_le_bytes());
    out.extend_from_slice(&s.descriptor);
    out.extend_from_slice(&u32::try_from(s.fences.len()).expect("chunks fit u32").to_le_bytes());
    seal(out)
}

struct Header {
    id: u64,
    first_seq: u64,
    last_seq: u64,
    count: u64,
    fp_bytes: usize,
    descriptor: Vec<u8>,
    chunks: usize,
}

fn decode_header(b: &[u8]) -> Result<Header, String> {
    let body = unseal(b).map_err(|e| e.to_string())?;
    let take = |at: usize, n: usize| body.get(at..at + n).ok_or_else(|| "header truncated".to_string());
    let u = |at: usize| take(at, 8).map(le_u64);
    let (id, first_seq, last_seq, count, fp_bytes) = (u(0)?, u(8)?, u(16)?, u(24)?, u(32)?);
    let dl = take(40, 2).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))?;
    let descriptor = take(42, dl)?.to_vec();
    let at = 42 + dl;
    let nc = take(at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
    if nc > 1 << 20 {
        return Err(format!("{nc} chunks"));
    }
    if at + 4 != body.len() {
        return Err("header length".into());
    }
    let fp_bytes = usize::try_from(fp_bytes).map_err(|_| "fingerprint length".to_string())?;
    if fp_bytes > 1 << 32 || (fp_bytes == 0) != descriptor.is_empty() {
        return Err("filter length".into());
    }
    Ok(Header { id, first_seq, last_seq, count, fp_bytes, descriptor, chunks: nc })
}

/// Loads the headers and filters of every partition under `p`, in id order:
/// those that load, and the ids of those that do not (named at ERROR).
pub(crate) fn load_partitions(p: &Prefixes, db: &sled::Db) -> Result<(Vec<Sealed>, Vec<u64>), sled::Error> {
    let mut sealed = Vec::new();
    let mut damaged = Vec::new();
    for item in db.scan_prefix([p.partition]) {
        let (k, v) = item?;
        let pid = key_u64(&k);
        let h = match decode_header(&v) {
            Ok(h) if h.id == pid => h,
            Ok(_) | Err(_) => {
                tracing::error!(partition = pid, prefix = %char::from(p.partition), "index partition header corrupt; rebuilding it from the records");
                damaged.push(pid);
                continue;
            }
        };
        let total = h.fp_bytes + h.chunks * 8;
        let mut fingerprints = Vec::with_capacity(total);
        let mut ok = true;
        for c in 0..filter_chunks(total) {
            match db.get(key2(p.filter, pid, c as u64))?.as_deref().map(unseal) {
                Some(Ok(b)) => fingerprints.extend_from_slice(b),
                _ => ok = false,
            }
        }
        let fences: Vec<u64> = if ok && fingerprints.len() == total {
            let f = fingerprints[h.fp_bytes..].chunks_exact(8).map(le_u64).collect();
            fingerprints.truncate(h.fp_bytes);
            f
        } else {
            Vec::new()
        };
        if !ok || fingerprints.len() != h.fp_bytes || fences.len() != h.chunks || fences.windows(2).any(|w| w[0] > w[1]) {
            tracing::error!(partition = pid, prefix = %char::from(p.partition), "index filter corrupt; rebuilding its partition from the records");
            damaged.push(pid);
            continue;
        }
        sealed.push(Sealed {
            id: h.id,
            first_seq: h.first_seq,
            last_seq: h.last_seq,
            count: h.count,
            descriptor: h.descriptor,
            fingerprints: fingerprints.into_boxed_slice(),
            fences,
        });
    }
    Ok((sealed, damaged))
}

/// A run chunk: count (u32 LE), then (fingerprint u64 LE, seq u64 LE) pairs
/// sorted by fingerprint then seq, then CRC32C.
fn encode_chunk(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + pairs.len() * 16 + 4);
    out.extend_from_slice(&u32::try_from(pairs.len()).expect("chunk fits u32").to_le_bytes());
    for (fp, seq) in pairs {
        out.extend_from_slice(&fp.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    seal(out)
}

pub fn decode_chunk(b: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let body = unseal(b).map_err(|e| e.to_string())?;
    if body.len() < 4 {
        return Err("chunk truncated".into());
    }
    let n = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if body.len() != 4 + n * 16 {
        return Err(format!("chunk says {n} pairs in {} bytes", body.len()));
    }
    let pairs: Vec<(u64, u64)> = body[4..].chunks_exact(16).map(|c| (le_u64(&c[..8]), le_u64(&c[8..]))).collect();
    if pairs.windows(2).any(|w| w[0] > w[1]) {
        return Err("chunk not sorted".into());
    }
    Ok(pairs)
}

/// The index; owned by the spool behind a lock (the writer thread inserts,
/// lookups from request paths read).
pub struct Index {
    prefixes: Prefixes,
    open: OpenMap,
    /// Further seqs of fingerprints already in `open` (a collision, or an id
    /// accepted again after its record was quarantined or dropped).
    overflow: Vec<(u64, u64)>,
    /// First seq of the open partition.
    pub open_from: u64,
    /// Highest seq in the open partition.
    open_last: u64,
    sealed: Vec<Sealed>,
    pub next_partition: u64,
}

impl Index {
    pub fn new(prefixes: Prefixes, open_from: u64, next_partition: u64) -> Index {
        Index {
            prefixes,
            open: OpenMap::with_capacity_and_hasher(OPEN_IDS_MAX, Default::default()),
            overflow: Vec::new(),
            open_from,
            open_last: 0,
            sealed: Vec::new(),
            next_partition,
        }
    }

    /// Adds an accepted id to the open partition.
    pub fn insert(&mut self, fp: u64, seq: u64) {
        if let Some(prev) = self.open.insert(fp, seq) {
            // Keep both: the newest in the map, the older one aside.
            self.overflow.push((fp, prev));
        }
        self.open_last = self.open_last.max(seq);
    }

    pub fn open_len(&self) -> usize {
        self.open.len() + self.overflow.len()
    }

    pub fn sealed_count(&self) -> usize {
        self.sealed.len()
    }

    /// Memory held by the sealed partitions' filters and fences, in bytes.
    pub fn sealed_bytes(&self) -> usize {
        self.sealed.iter().map(Sealed::bytes).sum()
    }

    /// Every seq whose id may be `fp`, newest first. Reads run chunks from
    /// `db` for sealed partitions whose filter says yes.
    pub fn candidates(&self, db: &sled::Db, fp: u64) -> Result<Vec<u64>, sled::Error> {
        let mut out = Vec::new();
        if let Some(seq) = self.open.get(&fp) {
            out.push(*seq);
            out.extend(self.overflow.iter().rev().filter(|(f, _)| *f == fp).map(|(_, s)| *s));
        }
        for p in self.sealed.iter().rev() {
            if !p.may_contain(fp) {
                continue;
            }
            let mut found = Vec::new();
            for c in p.chunks_for(fp) {
                match p.run_chunk(db, &self.prefixes, c)? {
                    Ok(pairs) => {
                        let lo = pairs.partition_point(|(f, _)| *f < fp);
                        found.extend(pairs[lo..].iter().take_while(|(f, _)| *f == fp).map(|(_, s)| *s));
                    }
                    Err(e) => tracing::error!(partition = p.id, chunk = c, error = %e, "id index run chunk corrupt; spoolctl verify names it"),
                }
            }
            found.sort_unstable_by(|a, b| b.cmp(a));
            out.extend(found);
        }
        Ok(out)
    }

    /// Seals the open partition: returns the sled writes that store it (to go
    /// into the same batch as the commit that filled it) and keeps its filter.
    pub fn seal(&mut self) -> Writes {
        let mut pairs: Vec<(u64, u64)> = self.open.drain().chain(self.overflow.drain(..)).collect();
        self.open_from = self.open_last.max(self.open_from.saturating_sub(1)) + 1;
        if pairs.is_empty() {
            return Vec::new();
        }
        // Usually the open partition's seqs; older ones when ids of dead
        // letters were carried over from an expired partition.
        let first_seq = pairs.iter().map(|(_, s)| *s).min().unwrap_or(0);
        let last_seq = pairs.iter().map(|(_, s)| *s).max().unwrap_or(0);
        pairs.sort_unstable();
        let id = self.next_partition;
        self.next_partition += 1;
        let (sealed, writes) = Sealed::build(&self.prefixes, id, &pairs, first_seq, last_seq);
        self.sealed.push(sealed);
        self.open_last = 0;
        writes
    }

    /// Drops the sealed partitions whose every seq is below `compacted_below`;
    /// returns the keys to remove and the seq ranges dropped (the caller
    /// carries over the ids of records that outlive their blocks: dead
    /// letters and requeued records).
    pub fn expire(&mut self, compacted_below: u64) -> (Vec<Vec<u8>>, Vec<(u64, u64)>) {
        let mut keys = Vec::new();
        let mut ranges = Vec::new();
        let prefixes = self.prefixes;
        self.sealed.retain(|p| {
            if p.last_seq < compacted_below {
                keys.extend(p.keys(&prefixes));
                ranges.push((p.first_seq, p.last_seq));
                false
            } else {
                true
            }
        });
        (keys, ranges)
    }

    /// The highest seq of any sealed partition.
    pub fn sealed_last_seq(&self) -> Option<u64> {
        self.sealed.iter().map(|p| p.last_seq).max()
    }

    /// Whether a sealed partition's seq range covers `seq`.
    pub fn sealed_covers(&self, seq: u64) -> bool {
        self.sealed.iter().any(|p| p.first_seq <= seq && seq <= p.last_seq)
    }

    /// Loads the sealed partitions' headers and filters. A partition that does
    /// not load is skipped and its seq range returned: the caller puts those
    /// ids into the open partition from the blocks (exact, if more memory).
    pub fn load_sealed(&mut self, db: &sled::Db) -> Result<Vec<(u64, u64)>, sled::Error> {
        let (sealed, damaged) = load_partitions(&self.prefixes, db)?;
        if let Some(last) = sealed.last() {
            self.next_partition = self.next_partition.max(last.id + 1);
        }
        self.sealed.extend(sealed);
        // Ranges of damaged partitions, from their neighbours: everything
        // between the previous good partition and the next.
        let mut ranges = Vec::new();
        for pid in damaged {
            let lo = self.sealed.iter().filter(|p| p.id < pid).map(|p| p.last_seq + 1).max().unwrap_or(0);
            let hi = self.sealed.iter().filter(|p| p.id > pid).map(|p| p.first_seq).min().unwrap_or(self.open_from);
            ranges.push((lo, hi.saturating_sub(1)));
        }
        Ok(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Prefixes = Prefixes { partition: b'P', run: b'R', filter: b'F' };

    #[test]
    fn fingerprints_are_fixed() {
        // Stored on disk: must never change. SHA-256("abc") starts ba 78 16 bf
        // 8f 01 cf ea, read little-endian.
        assert_eq!(fingerprint("abc"), 0xeacf_018f_bf16_78ba);
    }

    #[test]
    fn sealed_partitions_find_every_id_and_survive_a_reload() {
        let dir = tempfile::tempdir().expect("test");
        let db = sled::Config::new().path(dir.path()).open().expect("test");
        let mut idx = Index::new(TEST, 1, 0);
        for seq in 1..=10_000u64 {
            idx.insert(fingerprint(&format!("id-{seq}")), seq);
        }
        // A collision: two seqs with one fingerprint are both candidates.
        idx.insert(fingerprint("id-5"), 10_001);
        for (k, v) in idx.seal() {
            db.insert(k, v).expect("test");
        }
        assert_eq!(idx.open_len(), 0);
        assert_eq!(idx.open_from, 10_002);
        for seq in [1u64, 4_000, 4_001, 9_999, 10_000] {
            assert_eq!(idx.candidates(&db, fingerprint(&format!("id-{seq}"))).expect("test"), vec![seq]);
        }
        assert_eq!(idx.candidates(&db, fingerprint("id-5")).expect("test"), vec![10_001, 5]);
        let misses = (0..10_000).filter(|i| !idx.candidates(&db, fingerprint(&format!("new-{i}"))).expect("test").is_empty()).count();
        assert_eq!(misses, 0, "a fingerprint hit without its id");
        let mut again = Index::new(TEST, 10_002, 0);
        assert!(again.load_sealed(&db).expect("test").is_empty());
        assert_eq!(again.candidates(&db, fingerprint("id-777")).expect("test"), vec![777]);
        assert_eq!(again.next_partition, 1);
        // Expiry drops the partition once its blocks are gone.
        assert!(again.expire(10_001).0.is_empty());
        let (keys, ranges) = again.expire(10_002);
        assert_eq!(ranges, vec![(1, 10_001)]);
        assert!(keys.len() >= 4, "{keys:?}");
        assert!(again.candidates(&db, fingerprint("id-777")).expect("test").is_empty());
    }
}
