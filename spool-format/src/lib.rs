//! The offgrid spool record format. Sans-IO: this crate turns values into bytes and
//! bytes into values, and does nothing else (no files, no clocks, no sockets).
//!
//! # What lives here
//! - [`Event`]: the payment event of SPEC §1, built only by validation
//!   ([`Event::parse_json`], [`Event::from_json_value`]) so every `Event` value is
//!   valid and canonical. A refusal names the field ([`FieldError`]).
//! - [`json`]: strict JSON parsing (duplicate keys at any depth refused and
//!   named), the only way untrusted bytes become a `serde_json::Value`.
//! - [`Record`]: a spooled event with its sequence number, arrival time, node,
//!   [`State`] (pending / acked / dead) and attempt count.
//! - The frame every record is stored in ([`encode_record`], [`decode_record`]) and
//!   the idempotency index entry ([`IdEntry`]).
//!
//! # Byte layout of a record frame (format version 1)
//!
//! ```text
//! offset  size  field
//!      0     4  magic "OGSR" (4f 47 53 52)
//!      4     2  format version, u16 little-endian (1)
//!      6     2  flags, u16 little-endian, reserved: must be 0
//!      8     4  body length N, u32 little-endian, N <= 1 MiB
//!     12     4  CRC32C (Castagnoli) of bytes 4..12 followed by the body, u32 LE
//!     16     N  body: RecordV1 in bincode 1.3.3 legacy encoding
//! ```
//!
//! The body is `RecordV1 { seq: u64, received_at: TimeV1, node: String,
//! state: StateV1, attempts: u32, event: EventV1 }` with, in bincode's legacy
//! encoding, integers little-endian fixed-width, strings and vectors as a u64 length
//! then the bytes, `Option` as a u8 tag (0 none, 1 some) then the value, enums as
//! a u32 variant index then the fields, and `[u8; 16]` (UUIDs) as 16 raw bytes.
//! `docs/spool-format.md` spells out every field.
//!
//! # Invariants
//! - **Invariant:** every record is checksummed (CRC32C) and `decode_record`
//!   verifies the checksum before it looks at the body; a record that fails any
//!   check is an error, never a value.
//! - **Invariant:** decoding never panics and never allocates more than the frame
//!   holds, whatever the input (fuzzed in `spool-format/fuzz`).
//! - **Invariant:** a decoded record passes the same validation as a freshly parsed
//!   event (pair assertion: validate before writing, validate after reading).
//! - **Invariant:** the encoding of format version 1 never changes. bincode is
//!   pinned to `=1.3.3` for that reason, and `tests/golden.rs` checks bytes that
//!   are committed to the repository.

mod block;
mod event;
pub mod json;
mod record;

pub use event::{
    Event, FieldError, Kind, ParseError, AMOUNT_MAX, AMOUNT_MIN, ATTRIBUTES_MAX,
    ATTRIBUTE_KEY_BYTES_MAX, ATTRIBUTE_VALUE_BYTES_MAX, CURRENCY_BYTES_MAX, ID_BYTES_MAX,
    ITEM_BYTES_MAX, LABEL_BYTES_MAX,
};
pub use block::{
    decode_block, decode_entry, encode_entry, encode_entry_prepared, entry_frame_len, entry_seq, peek_block_header, salvage_block, Block,
    BlockBuilder, BlockError, BlockHeader, Entry, Frames, Prepared, Salvage, BLOCK_FORMAT_VERSION, BLOCK_HEADER_BYTES,
    BLOCK_MAGIC, BLOCK_PAYLOAD_BYTES_MAX,
};
pub use json::JsonError;
pub use record::{
    decode_record, encode_record, truncate, DecodeError, IdEntry, Record, State,
    CODE_BYTES_MAX, FORMAT_VERSION, HEADER_BYTES, ID_ENTRY_BYTES, MAGIC, NODE_BYTES_MAX,
    REASON_BYTES_MAX, RECORD_BODY_BYTES_MAX,
};

/// Re-exported so that users name the same UUID and time types as the format.
pub use time::OffsetDateTime;
pub use uuid::Uuid;
