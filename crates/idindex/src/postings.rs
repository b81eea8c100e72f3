//! Postings: a key (a party's fingerprint) → every (seq, roles) it takes
//! part in, in seq order, without a sled write per entry. ledgerd's sled
//! store keeps its payee/recipient/payer index here.
//!
//! Same partitions as the id index (crate docs), with many entries per
//! fingerprint:
//! - the **open partition**, in memory: the entries in seq order, each linked
//!   to the previous entry of its fingerprint (a chain per fingerprint,
//!   ≈ 40 bytes per entry with its hash map slot), at most [`OPEN_ENTRIES_MAX`] entries before it
//!   is sealed (plus one batch), rebuilt at open from the records it covers;
//! - **sealed partitions**, written with the commit that fills the open one:
//!   (fingerprint, `seq << ROLE_BITS | roles`) pairs sorted, so a
//!   fingerprint's entries are contiguous and in seq order, with a binary
//!   fuse filter over the partition's distinct fingerprints kept in memory.
//!   Partitions cover consecutive seq ranges (`first_seq` is the open
//!   partition's start when it was sealed).
//!
//! A walk visits the entries of a fingerprint from a seq on: the sealed
//! partitions in seq order (those whose filter may hold it; the run chunk
//! holding the start found by bisection), then the open partition. Entries are
//! *candidates*: two parties can share a fingerprint, so the caller confirms
//! each against its record.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;

use crate::{key, load_partitions, IdentityHasher, Prefixes, Sealed, Writes};

/// Entries in the open partition before it is sealed (≈ 9 MiB at ~40 bytes
/// an entry; the ledger writes two or three a row, so a partition holds about
/// 100k rows): bounds the memory of the open partition and the work of an open
/// against the number of filters a walk probes (one per sealed partition).
pub const OPEN_ENTRIES_MAX: usize = 229_376;
/// Low bits of an entry's value that hold its roles (so roles < 8).
pub const ROLE_BITS: u32 = 3;
const ROLE_MASK: u64 = (1 << ROLE_BITS) - 1;
const NONE: u32 = u32::MAX;

/// The hash map's hasher: a key here need not be a uniform hash (the ledger's
/// is a UUID's halves XORed, and vendors' UUIDs may share their high bits), so
/// it is mixed (MurmurHash3's 64-bit finalizer) before the map uses its top
/// bits as tags and its low bits as the slot; without it, structured keys
/// made insertion the largest cost of a drain. In memory only: the stored
/// keys are unchanged.
#[derive(Default)]
pub struct MixHasher(IdentityHasher);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0.finish();
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
    fn write_u64(&mut self, n: u64) {
        self.0.write_u64(n);
    }
}

/// Why a walk stopped short.
#[derive(Debug)]
pub enum WalkError {
    Sled(sled::Error),
    /// A run chunk is missing or does not decode: named (partition, chunk).
    Corrupt(String),
}

impl From<sled::Error> for WalkError {
    fn from(e: sled::Error) -> WalkError {
        WalkError::Sled(e)
    }
}

/// What [`Postings::load`] found damaged.
pub struct Damaged {
    /// The keys of every damaged partition, to remove.
    pub removals: Vec<Vec<u8>>,
    /// Seq ranges (inclusive) that a damaged partition held between two good
    /// ones: rebuild each with [`Postings::rebuild`]. (A damaged partition
    /// after the last good one needs nothing: its seqs are the open
    /// partition's now.)
    pub ranges: Vec<(u64, u64)>,
}

pub struct Postings {
    prefixes: Prefixes,
    /// The open partition in seq order: (fingerprint, `seq << ROLE_BITS | roles`).
    open: Vec<(u64, u64)>,
    /// For each entry of `open`, the previous entry of its fingerprint.
    prev: Vec<u32>,
    /// Fingerprint → its latest entry in `open`.
    heads: HashMap<u64, u32, BuildHasherDefault<MixHasher>>,
    /// First seq of the open partition.
    open_from: u64,
    /// In seq order.
    sealed: Vec<Sealed>,
    next_partition: u64,
}

impl Postings {
    /// An empty index whose first seq is `base`.
    pub fn new(prefixes: Prefixes, base: u64) -> Postings {
        Postings {
            prefixes,
            open: Vec::new(),
            prev: Vec::new(),
            heads: HashMap::default(),
            open_from: base,
            sealed: Vec::new(),
            next_partition: 0,
        }
    }

    /// Loads the sealed partitions of an index whose first seq is `base`; the
    /// open partition starts after the last one that loads (fill it with
    /// [`Postings::push`] from the records from [`Postings::open_from`] on).
    pub fn load(prefixes: Prefixes, base: u64, db: &sled::Db) -> Result<(Postings, Damaged), sled::Error> {
        let (mut sealed, damaged_ids) = load_partitions(&prefixes, db)?;
        sealed.sort_by_key(|p| p.first_seq);
        let mut me = Postings::new(prefixes, base);
        me.next_partition = sealed.iter().map(|p| p.id + 1).chain(damaged_ids.iter().map(|id| id + 1)).max().unwrap_or(0);
        let mut removals = Vec::new();
        for id in &damaged_ids {
            removals.push(key(prefixes.partition, *id).to_vec());
            for prefix in [prefixes.run, prefixes.filter] {
                for k in db.scan_prefix(key(prefix, *id)).keys() {
                    removals.push(k?.to_vec());
                }
            }
        }
        // Gaps between consecutive good partitions were a damaged one's.
        let mut ranges = Vec::new();
        let mut expect = base;
        for p in &sealed {
            if p.first_seq > expect {
                ranges.push((expect, p.first_seq - 1));
            }
            expect = p.last_seq + 1;
        }
        me.open_from = expect;
        me.sealed = sealed;
        Ok((me, Damaged { removals, ranges }))
    }

    /// First seq of the open partition.
    pub fn open_from(&self) -> u64 {
        self.open_from
    }

    /// Adds an entry to the open partition; seqs come in order.
    pub fn push(&mut self, fp: u64, seq: u64, roles: u8) {
        debug_assert!(roles != 0 && u64::from(roles) <= ROLE_MASK, "roles {roles}");
        debug_assert!(seq >= self.open_from && self.open.last().is_none_or(|(_, v)| v >> ROLE_BITS <= seq), "seq {seq} out of order");
        let i = u32::try_from(self.open.len()).expect("an open partition fits u32 entries");
        self.prev.push(self.heads.insert(fp, i).unwrap_or(NONE));
        self.open.push((fp, seq << ROLE_BITS | u64::from(roles)));
    }

    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    pub fn sealed_count(&self) -> usize {
        self.sealed.len()
    }

    /// Memory held by the sealed partitions' filters and fences, in bytes.
    pub fn sealed_bytes(&self) -> usize {
        self.sealed.iter().map(Sealed::bytes).sum()
    }

    /// Seals the open partition: returns the sled writes that store it (to go
    /// into the same batch as the commit that filled it).
    pub fn seal(&mut self) -> Writes {
        let Some(&(_, last)) = self.open.last() else { return Vec::new() };
        let last_seq = last >> ROLE_BITS;
        let pairs = std::mem::take(&mut self.open);
        self.prev.clear();
        self.heads.clear();
        let writes = self.seal_pairs(pairs, self.open_from, last_seq);
        self.open_from = last_seq + 1;
        writes
    }

    /// Seals the entries of a damaged partition's range `first_seq..=last_seq`
    /// (from [`Damaged::ranges`]) as a new partition; returns its writes.
    pub fn rebuild(&mut self, first_seq: u64, last_seq: u64, entries: impl IntoIterator<Item = (u64, u64, u8)>) -> Writes {
        let pairs = entries.into_iter().map(|(fp, seq, roles)| (fp, seq << ROLE_BITS | u64::from(roles))).collect();
        self.seal_pairs(pairs, first_seq, last_seq)
    }

    /// Seals `pairs` as a new partition covering `first_seq..=last_seq`, kept
    /// in seq order among the others; returns its writes.
    fn seal_pairs(&mut self, mut pairs: Vec<(u64, u64)>, first_seq: u64, last_seq: u64) -> Writes {
        pairs.sort_unstable();
        let id = self.next_partition;
        self.next_partition += 1;
        let (sealed, writes) = Sealed::build(&self.prefixes, id, &pairs, first_seq, last_seq);
        let at = self.sealed.partition_point(|p| p.first_seq < first_seq);
        self.sealed.insert(at, sealed);
        writes
    }

    /// Visits the entries of `fp` with seq ≥ `from`, in seq order, as
    /// `(seq, roles)`, until `visit` breaks.
    pub fn walk(&self, db: &sled::Db, fp: u64, from: u64, mut visit: impl FnMut(u64, u8) -> ControlFlow<()>) -> Result<(), WalkError> {
        let start = (fp, from.min(u64::MAX >> ROLE_BITS) << ROLE_BITS);
        for p in &self.sealed {
            if p.last_seq < from || !p.may_contain(fp) {
                continue;
            }
            let chunks = p.chunks_for(fp);
            let read = |c: usize| -> Result<Vec<(u64, u64)>, WalkError> {
                p.run_chunk(db, &self.prefixes, c)?
                    .map_err(|e| WalkError::Corrupt(format!("index partition {} run chunk {c}: {e}", p.id)))
            };
            // The first chunk whose last entry is at or past `start` (a large
            // party spans many chunks; a cursor deep into it reads a few).
            // The last chunk read that may be that one is kept, not read again.
            let (mut lo, mut hi) = (chunks.start, chunks.end);
            let mut candidate: Option<(usize, Vec<(u64, u64)>)> = None;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let pairs = read(mid)?;
                if pairs.last().is_some_and(|last| *last < start) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                    candidate = Some((mid, pairs));
                }
            }
            for c in lo..chunks.end {
                let pairs = match candidate.take() {
                    Some((at, pairs)) if at == c => pairs,
                    _ => read(c)?,
                };
                let at = pairs.partition_point(|pair| *pair < start);
                for (f, v) in &pairs[at..] {
                    if *f != fp {
                        break;
                    }
                    if visit(v >> ROLE_BITS, (v & ROLE_MASK) as u8).is_break() {
                        return Ok(());
                    }
                }
            }
        }
        // The open partition: its chain for `fp`, newest first, back to `from`.
        let mut found = Vec::new();
        let mut at = self.heads.get(&fp).copied().unwrap_or(NONE);
        while at != NONE {
            // A chain links only entries of `fp`.
            let (_, v) = self.open[at as usize];
            if v >> ROLE_BITS < from {
                break;
            }
            found.push(v);
            at = self.prev[at as usize];
        }
        for v in found.iter().rev() {
            if visit(v >> ROLE_BITS, (v & ROLE_MASK) as u8).is_break() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Prefixes = Prefixes { partition: b'X', run: b'Y', filter: b'Z' };

    fn collect(p: &Postings, db: &sled::Db, fp: u64, from: u64, max: usize) -> Vec<(u64, u8)> {
        let mut out = Vec::new();
        p.walk(db, fp, from, |seq, roles| {
            out.push((seq, roles));
            if out.len() >= max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("walk");
        out
    }

    /// A party every 3rd seq (a merchant, spanning many run chunks), a party
    /// per seq (payers), across two sealed partitions and the open one:
    /// every walk gives exactly the model's entries in seq order, from any
    /// start, after a reload too, and after a damaged partition is rebuilt.
    #[test]
    fn walks_match_a_model_across_partitions_reloads_and_a_rebuild() {
        let dir = tempfile::tempdir().expect("test");
        let db = sled::Config::new().path(dir.path()).open().expect("test");
        let mut post = Postings::new(TEST, 10);
        let mut model: Vec<(u64, u64, u8)> = Vec::new();
        let entries_of = |seq: u64| {
            let mut e = vec![(1_000_000 + seq, seq, 4u8)];
            if seq % 3 == 0 {
                e.push((7, seq, 1));
            }
            e
        };
        for seq in 10..10_000u64 {
            for (fp, s, r) in entries_of(seq) {
                post.push(fp, s, r);
                model.push((fp, s, r));
            }
            if seq == 3_000 || seq == 7_000 {
                for (k, v) in post.seal() {
                    db.insert(k, v).expect("test");
                }
            }
        }
        assert_eq!(post.sealed_count(), 2);
        let check = |post: &Postings| {
            for fp in [7u64, 1_000_010, 1_002_999, 1_003_001, 1_009_999, 5] {
                for from in [0u64, 10, 2_999, 3_001, 5_000, 7_001, 9_999, 20_000] {
                    let want: Vec<(u64, u8)> =
                        model.iter().filter(|(f, s, _)| *f == fp && *s >= from).map(|(_, s, r)| (*s, *r)).collect();
                    assert_eq!(collect(post, &db, fp, from, usize::MAX), want, "fp {fp} from {from}");
                    let first: Vec<_> = want.iter().take(5).copied().collect();
                    assert_eq!(collect(post, &db, fp, from, 5), first, "fp {fp} from {from}, 5");
                }
            }
        };
        check(&post);
        // Reload: the open partition is refilled from the records after the
        // sealed ones.
        let (mut again, damaged) = Postings::load(TEST, 10, &db).expect("test");
        assert!(damaged.removals.is_empty() && damaged.ranges.is_empty());
        assert_eq!(again.open_from(), 7_001);
        for seq in 7_001..10_000 {
            for (fp, s, r) in entries_of(seq) {
                again.push(fp, s, r);
            }
        }
        check(&again);
        // The first partition's header damaged: its keys are removed, its
        // range rebuilt from the records, and every walk is the same again.
        db.insert(key(TEST.partition, 0), b"garbage".to_vec()).expect("test");
        let (mut third, damaged) = Postings::load(TEST, 10, &db).expect("test");
        assert_eq!(damaged.ranges, vec![(10, 3_000)]);
        assert!(damaged.removals.len() >= 3, "{:?}", damaged.removals.len());
        assert_eq!(third.open_from(), 7_001);
        for k in &damaged.removals {
            db.remove(k).expect("test");
        }
        let writes = third.rebuild(10, 3_000, (10..=3_000).flat_map(entries_of));
        for (k, v) in writes {
            db.insert(k, v).expect("test");
        }
        for seq in 7_001..10_000 {
            for (fp, s, r) in entries_of(seq) {
                third.push(fp, s, r);
            }
        }
        check(&third);
        // A damaged run chunk is named, not skipped.
        db.insert(crate::key2(TEST.run, 1, 0), b"garbage".to_vec()).expect("test");
        let err = third.walk(&db, 7, 0, |_, _| ControlFlow::Continue(())).expect_err("corrupt chunk");
        assert!(matches!(&err, WalkError::Corrupt(m) if m.contains("partition 1 run chunk 0")), "{err:?}");
    }
}
