//! Keys and small values of the spool's sled tree (format version 2).
//!
//! One sled tree (the default one), so that one `apply_batch` makes a whole
//! group commit atomic. Keys start with a one-byte prefix; seqs and ids are
//! u64 big-endian so keys sort numerically. Every value carries a CRC32C.
//!
//! ```text
//! M                     -> Meta                    counters, watermark, next seq (one value)
//! B <first seq>         -> block frame             spool-format v2: the entries of one commit
//! D <seq>               -> record frame (v1)       a dead letter, with the ledger's reason
//! Q <seq>               -> record frame (v1)       a record put back to pending (requeue)
//! T <seq>               -> ()                      a dead letter dropped by an operator
//! K <seq>               -> ()                      acked above the watermark (upgrade from v1)
//! X <first seq>         -> raw bytes               a block that failed verification
//! A <watermark>         -> u64 LE unix seconds     when the acked watermark passed this seq
//! P <partition>         -> PartitionHeader         a sealed partition of the id index
//! R <partition> <chunk> -> run chunk               sorted (fingerprint, seq) pairs
//! F <partition> <chunk> -> filter chunk            the partition's binary fuse filter
//! mstore_id             -> u128 LE                 the store id (crates/durable)
//! ```

use spool_format::DecodeError;

pub(crate) const P_BLOCK: u8 = b'B';
pub(crate) const P_DEAD: u8 = b'D';
pub(crate) const P_REQUEUE: u8 = b'Q';
pub(crate) const P_TOMBSTONE: u8 = b'T';
pub(crate) const P_ACKED_ABOVE: u8 = b'K';
pub(crate) const P_QUARANTINE: u8 = b'X';
pub(crate) const P_ACK_LOG: u8 = b'A';
pub(crate) const P_PARTITION: u8 = b'P';
pub(crate) const P_RUN: u8 = b'R';
pub(crate) const P_FILTER: u8 = b'F';
pub(crate) const META_KEY: &[u8] = b"M";

/// The spool layout version this engine writes (and the only one it opens;
/// version 1 is upgraded, see `upgrade`).
pub(crate) const LAYOUT_VERSION: u16 = 2;

/// Largest sled value the engine writes, in bytes. sled 0.34.7 keeps up to 17
/// values in one leaf and writes a leaf over its blob threshold (a quarter of
/// a segment, less headers: 131,020 bytes) to a file of its own under
/// `blobs/` (without fsync); 17 values of 7 KiB are 121,856 bytes, under it,
/// so nothing goes to `blobs/`. Why not bigger segments (and blocks): sled
/// allocates and zeroes a segment-sized buffer at every flush, a cost per
/// group commit that grows with the segment (measured: 8 MiB segments cost as
/// much CPU as they saved in keys, and more memory).
pub(crate) const VALUE_BYTES_MAX: usize = 7 << 10;
/// Entries a sled leaf holds before it splits (sled 0.34.7 `Node::should_split`).
pub(crate) const SLED_LEAF_ENTRIES_MAX: usize = 17;

const _: () = assert!(SLED_LEAF_ENTRIES_MAX * VALUE_BYTES_MAX < durable::SLED_BLOB_THRESHOLD_BYTES);

pub(crate) use idindex::{key, key_u64, le_u64, seal, unseal};

/// Where the spool's id index keeps its partitions, runs and filters.
pub(crate) const ID_INDEX: idindex::Prefixes = idindex::Prefixes { partition: P_PARTITION, run: P_RUN, filter: P_FILTER };

/// The counters and positions written with every group commit, so that an
/// open (after a clean close, a crash or a power cut) reads them instead of
/// scanning the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Meta {
    /// The next seq to hand out; every seq below it was assigned (or skipped).
    pub next_seq: u64,
    /// Every seq at or below this is done (acked, dead, dropped, quarantined).
    pub watermark: u64,
    /// Blocks whose last seq is below this have been compacted away.
    pub compacted_below: u64,
    /// First seq of the open (in-memory) partition of the id index.
    pub open_from: u64,
    pub pending: u64,
    pub dead: u64,
    pub acked: u64,
    pub live_bytes: u64,
    pub acked_bytes: u64,
    pub quarantined: u64,
    pub next_partition: u64,
}

impl Meta {
    const FIELDS: usize = 11;
    const BYTES: usize = 2 + Self::FIELDS * 8 + 4;

    pub(crate) fn fresh() -> Meta {
        Meta { next_seq: 1, open_from: 1, ..Meta::default() }
    }

    fn fields(&self) -> [u64; Self::FIELDS] {
        [
            self.next_seq,
            self.watermark,
            self.compacted_below,
            self.open_from,
            self.pending,
            self.dead,
            self.acked,
            self.live_bytes,
            self.acked_bytes,
            self.quarantined,
            self.next_partition,
        ]
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BYTES);
        out.extend_from_slice(&LAYOUT_VERSION.to_le_bytes());
        for v in self.fields() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        seal(out)
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Meta, DecodeError> {
        if b.len() != Self::BYTES {
            return Err(DecodeError::LengthMismatch { declared: Self::BYTES as u32, actual: b.len() });
        }
        let body = unseal(b)?;
        let version = u16::from_le_bytes([body[0], body[1]]);
        if version != LAYOUT_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        let v: Vec<u64> = body[2..].chunks_exact(8).map(le_u64).collect();
        Ok(Meta {
            next_seq: v[0],
            watermark: v[1],
            compacted_below: v[2],
            open_from: v[3],
            pending: v[4],
            dead: v[5],
            acked: v[6],
            live_bytes: v[7],
            acked_bytes: v[8],
            quarantined: v[9],
            next_partition: v[10],
        })
    }
}

pub(crate) fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_every_flip_is_caught() {
        let m = Meta { next_seq: 9, watermark: 3, pending: 5, acked: 3, live_bytes: 1234, ..Meta::fresh() };
        let b = m.encode();
        assert_eq!(Meta::decode(&b), Ok(m));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 1;
            assert!(Meta::decode(&c).is_err(), "flip at {i}");
        }
    }
}
