//! Format version 2: entry frames packed into block frames.
//!
//! A spool of format 2 stores the events of one group commit together, in one
//! *block*: a header with its own length and CRC32C, then the *entry frames*
//! of its events back to back. An entry frame is the record frame of version 1
//! (same magic, same 16-byte header, its own CRC32C) with a smaller body: the
//! seq, the arrival time and the event. What changes over a record's life
//! (acked, dead, attempts) is not in the block: blocks are written once and
//! removed whole (see the spool engine), never rewritten.
//!
//! ```text
//! entry frame (format version 2)
//! offset  size  field
//!      0     4  magic "OGSR" (4f 47 53 52)
//!      4     2  format version, u16 LE (2)
//!      6     2  flags, u16 LE, reserved: must be 0
//!      8     4  body length N, u32 LE, N <= RECORD_BODY_BYTES_MAX
//!     12     4  CRC32C of bytes 4..12 followed by the body, u32 LE
//!     16     N  body: EntryV2 { seq: u64, received_at: TimeV1, event: EventV1 }
//!               in bincode 1.3.3 legacy encoding (the v1 shapes)
//!
//! block frame (format version 2)
//! offset  size  field
//!      0     4  magic "OGSB" (4f 47 53 42)
//!      4     2  format version, u16 LE (2)
//!      6     2  flags, u16 LE, reserved: must be 0
//!      8     8  first seq, u64 LE (the seq of the first entry)
//!     16     8  last seq, u64 LE (the seq of the last entry)
//!     24     4  entry count C, u32 LE, 1 <= C
//!     28     4  payload length P, u32 LE, P <= BLOCK_PAYLOAD_BYTES_MAX
//!     32     1  node id length L, u8, L <= NODE_BYTES_MAX
//!     33     L  node id, UTF-8 (the node that accepted these events)
//!   33+L     4  CRC32C of bytes 4..33+L followed by the payload, u32 LE
//!   37+L     P  payload: C entry frames back to back, seqs strictly increasing
//! ```
//!
//! A block is checked whole (its CRC32C) and each entry again (its own CRC32C),
//! so a reader names exactly what is damaged.

use bincode::Options as _;
use sha2::Digest as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::Event;
use crate::record::{
    codec, event_from_v1, event_to_v1, le_u16, le_u32, time_from_v1, time_to_v1, DecodeError,
    EventV1, TimeV1, HEADER_BYTES, NODE_BYTES_MAX, RECORD_BODY_BYTES_MAX,
};

/// The format version of entry and block frames.
pub const BLOCK_FORMAT_VERSION: u16 = 2;
/// Magic bytes at the start of every block frame: "OGSB" (offgrid spool block).
pub const BLOCK_MAGIC: [u8; 4] = *b"OGSB";
/// Size of a block header without its node id, in bytes.
pub const BLOCK_HEADER_BYTES: usize = 37;
/// Largest block payload, in bytes: 16 MiB bounds what a corrupt length field
/// can make a reader allocate; the engine writes far smaller blocks.
pub const BLOCK_PAYLOAD_BYTES_MAX: u32 = 16 << 20;

/// One event as a block holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub received_at: OffsetDateTime,
    pub event: Event,
}

#[derive(Serialize, Deserialize)]
struct EntryV2 {
    seq: u64,
    received_at: TimeV1,
    event: EventV1,
}

/// An event encoded once, ahead of the spool's writer: its canonical
/// encoding (which is also the tail of its entry body) and its digest.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub event: Event,
    /// SHA-256 of the canonical encoding ([`Event::digest`]).
    pub digest: [u8; 32],
    canonical: Vec<u8>,
}

impl Prepared {
    pub fn new(event: Event) -> Prepared {
        let canonical = event.canonical_bytes();
        let digest = sha2::Sha256::digest(&canonical).into();
        Prepared { event, digest, canonical }
    }
}

/// Frames one entry (format version 2).
pub fn encode_entry(seq: u64, received_at: OffsetDateTime, event: &Event) -> Vec<u8> {
    let body = EntryV2 { seq, received_at: time_to_v1(received_at), event: event_to_v1(event) };
    let body = codec().serialize(&body).expect("bincode encodes EntryV2");
    frame_body(body)
}

/// [`encode_entry`] from a [`Prepared`] event, byte for byte the same: the
/// legacy bincode encoding of `EntryV2` is its fields one after the other, so
/// the body is the seq, the time, then the event's canonical encoding.
pub fn encode_entry_prepared(seq: u64, received_at: OffsetDateTime, p: &Prepared) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + 12 + p.canonical.len());
    body.extend_from_slice(&seq.to_le_bytes());
    let t = time_to_v1(received_at);
    body.extend_from_slice(&t.unix_secs.to_le_bytes());
    body.extend_from_slice(&t.nanos.to_le_bytes());
    body.extend_from_slice(&p.canonical);
    frame_body(body)
}

fn frame_body(body: Vec<u8>) -> Vec<u8> {
    crate::record::frame(BLOCK_FORMAT_VERSION, &body)
}

/// The length of the entry frame at the start of `bytes` (header plus the
/// declared body), checked against what is there; no checksum is verified.
pub fn entry_frame_len(bytes: &[u8]) -> Result<usize, DecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::Truncated { len: bytes.len() });
    }
    let declared = le_u32(&bytes[8..12]);
    if declared > RECORD_BODY_BYTES_MAX {
        return Err(DecodeError::TooLarge { declared });
    }
    let n = HEADER_BYTES + usize::try_from(declared).map_err(|_| DecodeError::TooLarge { declared })?;
    if n > bytes.len() {
        return Err(DecodeError::LengthMismatch { declared, actual: bytes.len() - HEADER_BYTES });
    }
    Ok(n)
}

/// Decodes and verifies one entry frame (exactly `bytes`).
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let body = crate::record::check_frame(bytes, BLOCK_FORMAT_VERSION)?;
    let v2: EntryV2 = codec().deserialize(body).map_err(|e| DecodeError::Body(e.to_string()))?;
    Ok(Entry { seq: v2.seq, received_at: time_from_v1(&v2.received_at)?, event: event_from_v1(v2.event)? })
}

/// The seq of an entry frame, read without decoding the event (the checksum
/// is verified).
pub fn entry_seq(bytes: &[u8]) -> Result<u64, DecodeError> {
    let body = crate::record::check_frame(bytes, BLOCK_FORMAT_VERSION)?;
    body.get(..8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .ok_or_else(|| DecodeError::Body("entry body shorter than its seq".into()))
}

/// Why bytes are not a valid block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block truncated: {len} bytes")]
    Truncated { len: usize },
    #[error("block has bad magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("block payload length {declared} is over the limit or does not match the {actual} bytes present")]
    Length { declared: u32, actual: usize },
    #[error("block checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("unsupported block format version {found}")]
    UnsupportedVersion { found: u16 },
    #[error("block header invalid: {0}")]
    Header(String),
    #[error("entry {index} of the block (seq ~{seq}): {error}")]
    Entry { index: u32, seq: u64, error: DecodeError },
}

/// A block's header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u32,
    pub node: String,
}

/// Collects entry frames into one block.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    payload: Vec<u8>,
    first_seq: Option<u64>,
    last_seq: u64,
    count: u32,
}

impl BlockBuilder {
    pub fn new() -> BlockBuilder {
        BlockBuilder::default()
    }

    /// Adds an entry frame made by [`encode_entry`] for `seq`; seqs must grow.
    pub fn push(&mut self, seq: u64, frame: &[u8]) {
        assert!(self.first_seq.is_none() || seq > self.last_seq, "block seqs must grow");
        self.first_seq.get_or_insert(seq);
        self.last_seq = seq;
        self.count += 1;
        self.payload.extend_from_slice(frame);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of entry frames so far.
    pub fn payload_bytes(&self) -> usize {
        self.payload.len()
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.first_seq
    }

    /// The block frame; panics when empty (a bug).
    pub fn finish(self, node: &str) -> Vec<u8> {
        let first = self.first_seq.expect("a block holds at least one entry");
        assert!(node.len() <= NODE_BYTES_MAX, "node id over {NODE_BYTES_MAX} bytes");
        let payload_len = u32::try_from(self.payload.len()).expect("block payload fits u32");
        assert!(payload_len <= BLOCK_PAYLOAD_BYTES_MAX, "block payload over the limit");
        let node_len = u8::try_from(node.len()).expect("node id fits u8");
        let mut out = Vec::with_capacity(BLOCK_HEADER_BYTES + node.len() + self.payload.len());
        out.extend_from_slice(&BLOCK_MAGIC);
        out.extend_from_slice(&BLOCK_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&self.last_seq.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&payload_len.to_le_bytes());
        out.push(node_len);
        out.extend_from_slice(node.as_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[4..]), &self.payload);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// A verified block: its header and its payload (entry frames, not yet decoded).
#[derive(Debug, Clone)]
pub struct Block<'a> {
    pub header: BlockHeader,
    payload: &'a [u8],
}

/// Reads a block's header fields without verifying anything (for naming what
/// a damaged block held); `None` when not even the fixed fields are there.
pub fn peek_block_header(bytes: &[u8]) -> Option<(u64, u64, u32)> {
    if bytes.len() < BLOCK_HEADER_BYTES || bytes[..4] != BLOCK_MAGIC {
        return None;
    }
    Some((le_u64(&bytes[8..16]), le_u64(&bytes[16..24]), le_u32(&bytes[24..28])))
}

/// Verifies a block frame (magic, length, CRC32C, version, flags, header
/// sanity); the entries are checked as they are read ([`Block::entries`]).
pub fn decode_block(bytes: &[u8]) -> Result<Block<'_>, BlockError> {
    if bytes.len() < BLOCK_HEADER_BYTES {
        return Err(BlockError::Truncated { len: bytes.len() });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != BLOCK_MAGIC {
        return Err(BlockError::BadMagic { found: magic });
    }
    let node_len = usize::from(bytes[32]);
    let header_len = BLOCK_HEADER_BYTES + node_len;
    let declared = le_u32(&bytes[28..32]);
    let actual = bytes.len().saturating_sub(header_len);
    if bytes.len() < header_len || declared > BLOCK_PAYLOAD_BYTES_MAX || usize::try_from(declared).ok() != Some(actual) {
        return Err(BlockError::Length { declared, actual });
    }
    let crc_at = 33 + node_len;
    let stored = le_u32(&bytes[crc_at..crc_at + 4]);
    let payload = &bytes[header_len..];
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[4..crc_at]), payload);
    if stored != computed {
        return Err(BlockError::Checksum { stored, computed });
    }
    let version = le_u16(&bytes[4..6]);
    if version != BLOCK_FORMAT_VERSION {
        return Err(BlockError::UnsupportedVersion { found: version });
    }
    if le_u16(&bytes[6..8]) != 0 {
        return Err(BlockError::Header("reserved flags set".into()));
    }
    let first_seq = le_u64(&bytes[8..16]);
    let last_seq = le_u64(&bytes[16..24]);
    let count = le_u32(&bytes[24..28]);
    if count == 0 || last_seq < first_seq || u64::from(count) > last_seq - first_seq + 1 {
        return Err(BlockError::Header(format!("seqs {first_seq}..={last_seq} cannot hold {count} entries")));
    }
    if node_len > NODE_BYTES_MAX {
        return Err(BlockError::Header("node id too long".into()));
    }
    let node = std::str::from_utf8(&bytes[33..33 + node_len])
        .map_err(|_| BlockError::Header("node id is not UTF-8".into()))?
        .to_owned();
    Ok(Block { header: BlockHeader { first_seq, last_seq, count, node }, payload })
}

impl<'a> Block<'a> {
    /// The entry frames, in order, each with its seq (checksum verified);
    /// an error names the entry and stops the iteration.
    pub fn frames(&self) -> Frames<'a> {
        Frames { rest: self.payload, index: 0, count: self.header.count, prev: None, first: self.header.first_seq, last: self.header.last_seq, failed: false }
    }

    /// Every entry, decoded; the first failure is returned.
    pub fn entries(&self) -> Result<Vec<Entry>, BlockError> {
        let mut out = Vec::with_capacity(usize::try_from(self.header.count).unwrap_or(0));
        for (i, item) in self.frames().enumerate() {
            let (seq, frame) = item?;
            let entry = decode_entry(frame).map_err(|error| BlockError::Entry { index: u32::try_from(i).unwrap_or(u32::MAX), seq, error })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// The entry with `seq`, decoded, if the block holds it.
    pub fn find(&self, seq: u64) -> Result<Option<Entry>, BlockError> {
        if seq < self.header.first_seq || seq > self.header.last_seq {
            return Ok(None);
        }
        for (i, item) in self.frames().enumerate() {
            let (s, frame) = item?;
            if s == seq {
                return decode_entry(frame)
                    .map(Some)
                    .map_err(|error| BlockError::Entry { index: u32::try_from(i).unwrap_or(u32::MAX), seq, error });
            }
            if s > seq {
                break;
            }
        }
        Ok(None)
    }
}

/// Iterator over a block's entry frames; see [`Block::frames`].
pub struct Frames<'a> {
    rest: &'a [u8],
    index: u32,
    count: u32,
    prev: Option<u64>,
    first: u64,
    last: u64,
    failed: bool,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<(u64, &'a [u8]), BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let guess = self.prev.map_or(self.first, |p| p + 1);
        let err = |index: u32, error: DecodeError| BlockError::Entry { index, seq: guess, error };
        if self.index == self.count {
            if self.rest.is_empty() {
                return None;
            }
            self.failed = true;
            return Some(Err(BlockError::Header(format!("{} bytes after the last of {} entries", self.rest.len(), self.count))));
        }
        let result = entry_frame_len(self.rest).and_then(|n| {
            let frame = &self.rest[..n];
            entry_seq(frame).map(|seq| (seq, frame, n))
        });
        match result {
            Err(e) => {
                self.failed = true;
                Some(Err(err(self.index, e)))
            }
            Ok((seq, frame, n)) => {
                let in_order = self.prev.map_or(seq == self.first, |p| seq > p) && seq <= self.last;
                let closes = self.index + 1 < self.count || seq == self.last;
                if !in_order || !closes {
                    self.failed = true;
                    return Some(Err(BlockError::Header(format!("entry {} has seq {seq}, out of the block's order", self.index))));
                }
                self.rest = &self.rest[n..];
                self.index += 1;
                self.prev = Some(seq);
                Some(Ok((seq, frame)))
            }
        }
    }
}

/// What can be read out of a block whose own checksum failed: the entries
/// that still pass their own checksum, and the ones that do not.
#[derive(Debug)]
pub struct Salvage<'a> {
    /// The block's first seq as its header says (unverified).
    pub first_seq: u64,
    /// The node id from the header, if it is still valid UTF-8.
    pub node: Option<String>,
    /// Entries whose own frame verifies: (seq, frame).
    pub good: Vec<(u64, &'a [u8])>,
    /// Entries that do not verify, by their position: (seq they should have,
    /// why). After a frame whose length cannot be trusted nothing more is
    /// read: `rest_lost` is then set.
    pub bad: Vec<(u64, DecodeError)>,
    pub rest_lost: bool,
}

/// Reads a block without trusting its checksum, entry by entry (each entry
/// has a checksum of its own), so that one damaged record does not take its
/// neighbours with it. `None` when the header is beyond use.
pub fn salvage_block(bytes: &[u8]) -> Option<Salvage<'_>> {
    if bytes.len() < BLOCK_HEADER_BYTES || bytes[..4] != BLOCK_MAGIC {
        return None;
    }
    let node_len = usize::from(bytes[32]);
    let header_len = BLOCK_HEADER_BYTES + node_len;
    if bytes.len() < header_len || node_len > NODE_BYTES_MAX {
        return None;
    }
    let first_seq = le_u64(&bytes[8..16]);
    let node = std::str::from_utf8(&bytes[33..33 + node_len]).ok().map(str::to_owned);
    let mut s = Salvage { first_seq, node, good: Vec::new(), bad: Vec::new(), rest_lost: false };
    let mut rest = &bytes[header_len..];
    let mut expect = first_seq;
    while !rest.is_empty() {
        let n = match entry_frame_len(rest) {
            Ok(n) => n,
            Err(e) => {
                s.bad.push((expect, e));
                s.rest_lost = true;
                break;
            }
        };
        let frame = &rest[..n];
        match entry_seq(frame) {
            Ok(seq) if seq >= expect => {
                s.good.push((seq, frame));
                expect = seq + 1;
            }
            Ok(seq) => {
                s.bad.push((expect, DecodeError::Invalid(format!("entry says seq {seq}, out of order"))));
                expect += 1;
            }
            Err(e) => {
                s.bad.push((expect, e));
                expect += 1;
            }
        }
        rest = &rest[n..];
    }
    Some(s)
}
