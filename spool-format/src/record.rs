//! Spool records and their framing on disk. See the crate docs for the layout.

use std::collections::BTreeMap;

use bincode::Options as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::event::{Event, Kind};

/// Magic bytes at the start of every record frame: "OGSR" (offgrid spool record).
pub const MAGIC: [u8; 4] = *b"OGSR";
/// The record format version this build writes and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the fixed frame header, in bytes.
pub const HEADER_BYTES: usize = 16;
/// Largest record body, in bytes. The largest valid event encodes to about
/// 40 KiB (32 attributes of 64 + 1024 bytes plus the fixed fields) and a dead-letter
/// reason is capped at [`REASON_BYTES_MAX`], so 1 MiB is far above any honest
/// record and bounds what a corrupt length field can make a reader allocate.
pub const RECORD_BODY_BYTES_MAX: u32 = 1 << 20;
/// Longest dead-letter reason kept, in bytes (longer reasons are cut at a char
/// boundary by [`State::dead`]); enough for any ledger error message.
pub const REASON_BYTES_MAX: usize = 1024;
/// Longest dead-letter code kept, in bytes.
pub const CODE_BYTES_MAX: usize = 64;
/// Longest node id, in bytes.
pub const NODE_BYTES_MAX: usize = 128;
/// Size of an encoded [`IdEntry`], in bytes.
pub const ID_ENTRY_BYTES: usize = 44;

/// Where a record is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    /// Durable at the edge, not yet accepted by the ledger.
    Pending,
    /// The ledger answered `accepted` or `duplicate`; kept for dedupe and audit
    /// until `acked_retention` has passed.
    Acked {
        #[serde(with = "time::serde::rfc3339")]
        acked_at: OffsetDateTime,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ledger_seq: Option<u64>,
    },
    /// The ledger refused it (`conflict` or `rejected`); waits for an operator.
    Dead {
        #[serde(with = "time::serde::rfc3339")]
        dead_at: OffsetDateTime,
        code: String,
        reason: String,
    },
}

impl State {
    /// A dead-letter state, with code and reason cut to their limits.
    pub fn dead(dead_at: OffsetDateTime, code: &str, reason: &str) -> State {
        State::Dead {
            dead_at,
            code: truncate(code, CODE_BYTES_MAX).to_owned(),
            reason: truncate(reason, REASON_BYTES_MAX).to_owned(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Acked { .. } => "acked",
            State::Dead { .. } => "dead",
        }
    }
}

/// One spooled event with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in this node's spool; strictly increasing, never reused.
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The node that first accepted the event.
    pub node: String,
    #[serde(flatten)]
    pub state: State,
    /// How many times a batch holding this record was sent to a ledger.
    pub attempts: u32,
    pub event: Event,
}

/// Why bytes could not be decoded as a record. Never a panic: every input maps to
/// `Ok` or one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {len} bytes, a frame needs at least {HEADER_BYTES}")]
    Truncated { len: usize },
    #[error("bad magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported format version {found} for this frame")]
    UnsupportedVersion { found: u16 },
    #[error("reserved flags set: {found:#06x}")]
    BadFlags { found: u16 },
    #[error("body length {declared} does not match the {actual} bytes present")]
    LengthMismatch { declared: u32, actual: usize },
    #[error("body length {declared} is over the {RECORD_BODY_BYTES_MAX} byte limit")]
    TooLarge { declared: u32 },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("body does not decode: {0}")]
    Body(String),
    #[error("decoded record is invalid: {0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------
// The on-disk shapes. Only primitive types, so that the bytes depend on nothing
// but these definitions and bincode 1.3.3's legacy encoding. Changing any of them
// changes the format: bump FORMAT_VERSION and add golden vectors.

#[derive(Serialize, Deserialize)]
pub(crate) struct TimeV1 {
    pub(crate) unix_secs: i64,
    pub(crate) nanos: u32,
}

#[derive(Serialize, Deserialize)]
enum StateV1 {
    Pending,
    Acked { at: TimeV1, ledger_seq: Option<u64> },
    Dead { at: TimeV1, code: String, reason: String },
}

#[derive(Serialize, Deserialize)]
pub(crate) struct EventV1 {
    id: String,
    kind: u8,
    amount: u64,
    currency: String,
    payer: [u8; 16],
    payee: [u8; 16],
    recipient: [u8; 16],
    occurred_at: TimeV1,
    item: Option<String>,
    region: Option<String>,
    terminal: Option<String>,
    attributes: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct RecordV1 {
    seq: u64,
    received_at: TimeV1,
    node: String,
    state: StateV1,
    attempts: u32,
    event: EventV1,
}

/// bincode 1.3's legacy layout (little-endian, fixed-width integers, u64 length
/// prefixes, u32 enum tags), with a size limit so that a corrupt length inside a
/// body can never make the decoder allocate more than the body holds, and trailing
/// bytes refused. Byte-for-byte the same as `bincode::serialize`.
pub(crate) fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(u64::from(RECORD_BODY_BYTES_MAX))
        .reject_trailing_bytes()
}

pub(crate) fn time_to_v1(t: OffsetDateTime) -> TimeV1 {
    TimeV1 { unix_secs: t.unix_timestamp(), nanos: t.nanosecond() }
}

pub(crate) fn time_from_v1(t: &TimeV1) -> Result<OffsetDateTime, DecodeError> {
    let nanos = i128::from(t.unix_secs) * 1_000_000_000 + i128::from(t.nanos);
    if t.nanos >= 1_000_000_000 {
        return Err(DecodeError::Invalid(format!("timestamp nanos {} out of range", t.nanos)));
    }
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|e| DecodeError::Invalid(format!("timestamp: {e}")))
}

pub(crate) fn event_to_v1(e: &Event) -> EventV1 {
    EventV1 {
        id: e.id.clone(),
        kind: e.kind.to_u8(),
        amount: e.amount,
        currency: e.currency.clone(),
        payer: *e.payer.as_bytes(),
        payee: *e.payee.as_bytes(),
        recipient: *e.recipient.as_bytes(),
        occurred_at: time_to_v1(e.occurred_at),
        item: e.item.clone(),
        region: e.region.clone(),
        terminal: e.terminal.clone(),
        attributes: e.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

pub(crate) fn event_from_v1(e: EventV1) -> Result<Event, DecodeError> {
    let kind = Kind::from_u8(e.kind)
        .ok_or_else(|| DecodeError::Invalid(format!("unknown kind tag {}", e.kind)))?;
    let attributes_len = e.attributes.len();
    let attributes: BTreeMap<String, String> = e.attributes.into_iter().collect();
    if attributes.len() != attributes_len {
        return Err(DecodeError::Invalid("duplicate attribute key".into()));
    }
    let event = Event {
        id: e.id,
        kind,
        amount: e.amount,
        currency: e.currency,
        payer: Uuid::from_bytes(e.payer),
        payee: Uuid::from_bytes(e.payee),
        recipient: Uuid::from_bytes(e.recipient),
        occurred_at: time_from_v1(&e.occurred_at)?,
        item: e.item,
        region: e.region,
        terminal: e.terminal,
        attributes,
    };
    event.validate().map_err(|e| DecodeError::Invalid(e.to_string()))?;
    Ok(event)
}

pub(crate) fn encode_event(e: &Event) -> Vec<u8> {
    // Infallible for these types (no maps with non-string keys, no sequences of
    // unknown length); a failure here is a bug, not an operating error.
    codec().serialize(&event_to_v1(e)).expect("bincode encodes EventV1")
}

/// Frames a record: header, then the bincode body. Panics only on a broken
/// invariant (a record over the body limit, which valid events cannot reach).
pub fn encode_record(r: &Record) -> Vec<u8> {
    assert!(r.node.len() <= NODE_BYTES_MAX, "node id over {NODE_BYTES_MAX} bytes");
    let state = match &r.state {
        State::Pending => StateV1::Pending,
        State::Acked { acked_at, ledger_seq } => {
            StateV1::Acked { at: time_to_v1(*acked_at), ledger_seq: *ledger_seq }
        }
        State::Dead { dead_at, code, reason } => StateV1::Dead {
            at: time_to_v1(*dead_at),
            code: truncate(code, CODE_BYTES_MAX).to_owned(),
            reason: truncate(reason, REASON_BYTES_MAX).to_owned(),
        },
    };
    let body = RecordV1 {
        seq: r.seq,
        received_at: time_to_v1(r.received_at),
        node: r.node.clone(),
        state,
        attempts: r.attempts,
        event: event_to_v1(&r.event),
    };
    let body = codec().serialize(&body).expect("bincode encodes RecordV1");
    frame(FORMAT_VERSION, &body)
}

/// The 16-byte frame header (magic, `version`, flags 0, length, CRC32C of
/// bytes 4..12 and the body) followed by `body`: the record frame of format 1
/// and the entry frame of format 2. Panics on a body over the limit (a bug).
pub(crate) fn frame(version: u16, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("frame body fits u32");
    assert!(len <= RECORD_BODY_BYTES_MAX, "frame body {len} over the limit");
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[4..12]), body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

pub(crate) fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks a frame's header and checksum for format `version`: magic,
/// length, CRC32C, version, flags. Returns the body.
pub(crate) fn check_frame(bytes: &[u8], version: u16) -> Result<&[u8], DecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::Truncated { len: bytes.len() });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let declared = le_u32(&bytes[8..12]);
    if declared > RECORD_BODY_BYTES_MAX {
        return Err(DecodeError::TooLarge { declared });
    }
    let body = &bytes[HEADER_BYTES..];
    if usize::try_from(declared).ok() != Some(body.len()) {
        return Err(DecodeError::LengthMismatch { declared, actual: body.len() });
    }
    let stored = le_u32(&bytes[12..16]);
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[4..12]), body);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    // Version and flags are covered by the checksum, so they are checked after it:
    // a flipped version bit reads as corruption, not as a future format.
    let found = le_u16(&bytes[4..6]);
    if found != version {
        return Err(DecodeError::UnsupportedVersion { found });
    }
    let flags = le_u16(&bytes[6..8]);
    if flags != 0 {
        return Err(DecodeError::BadFlags { found: flags });
    }
    Ok(body)
}

/// Decodes and verifies a record frame: magic, version, flags, length, CRC32C,
/// body, and finally the record's own invariants.
pub fn decode_record(bytes: &[u8]) -> Result<Record, DecodeError> {
    let body = check_frame(bytes, FORMAT_VERSION)?;
    let v1: RecordV1 =
        codec().deserialize(body).map_err(|e| DecodeError::Body(e.to_string()))?;
    if v1.node.len() > NODE_BYTES_MAX {
        return Err(DecodeError::Invalid("node id too long".into()));
    }
    let state = match v1.state {
        StateV1::Pending => State::Pending,
        StateV1::Acked { at, ledger_seq } => {
            State::Acked { acked_at: time_from_v1(&at)?, ledger_seq }
        }
        StateV1::Dead { at, code, reason } => {
            if code.len() > CODE_BYTES_MAX || reason.len() > REASON_BYTES_MAX {
                return Err(DecodeError::Invalid("dead-letter code or reason too long".into()));
            }
            State::Dead { dead_at: time_from_v1(&at)?, code, reason }
        }
    };
    Ok(Record {
        seq: v1.seq,
        received_at: time_from_v1(&v1.received_at)?,
        node: v1.node,
        state,
        attempts: v1.attempts,
        event: event_from_v1(v1.event)?,
    })
}

/// The idempotency index entry for one event id: where the event sits in the
/// spool and the digest of its canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdEntry {
    pub seq: u64,
    pub digest: [u8; 32],
}

impl IdEntry {
    /// 44 bytes: seq (u64 LE), digest (32 bytes), CRC32C of the first 40 (u32 LE).
    pub fn encode(&self) -> [u8; ID_ENTRY_BYTES] {
        let mut out = [0u8; ID_ENTRY_BYTES];
        out[..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..40].copy_from_slice(&self.digest);
        let crc = crc32c::crc32c(&out[..40]);
        out[40..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<IdEntry, DecodeError> {
        if bytes.len() != ID_ENTRY_BYTES {
            return Err(DecodeError::LengthMismatch {
                declared: ID_ENTRY_BYTES as u32,
                actual: bytes.len(),
            });
        }
        let stored = le_u32(&bytes[40..]);
        let computed = crc32c::crc32c(&bytes[..40]);
        if stored != computed {
            return Err(DecodeError::Checksum { stored, computed });
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[..8]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[8..40]);
        Ok(IdEntry { seq: u64::from_le_bytes(seq), digest })
    }
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
