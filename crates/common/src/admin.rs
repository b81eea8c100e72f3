//! The admin socket protocol between spoold and spoolctl: one JSON request per
//! line on a Unix socket (mode 0600), one JSON response per line back.

use serde::{Deserialize, Serialize};

/// Most records one `list`/`tail` request returns; clients page with `from_seq`.
pub const ADMIN_PAGE_RECORDS_MAX: u32 = 10_000;
/// Longest request line accepted by the daemon, in bytes (an import chunk of
/// 1,000 events at the 64 KiB body limit fits comfortably).
pub const ADMIN_LINE_BYTES_MAX: usize = 64 << 20;
/// Most bytes of record JSON in one `list`/`tail` response; a page stops
/// early (and says where to go on) rather than pass it. 16 MiB: a full page of
/// typical records (~700 bytes of JSON each) is ~7 MiB, while 10,000 records
/// with maximal attributes (~40 KB each) would pass the line limit.
pub const ADMIN_PAGE_BYTES_MAX: usize = 16 << 20;
/// Most events in one `import` request; spoolctl sends bigger files in chunks.
/// 1,000 matches the ingest API's `batch_events_max` default: one group commit.
pub const ADMIN_IMPORT_EVENTS_MAX: usize = 1000;

/// Machine-readable error codes of an [`AdminResponse`] (`code`), so that a
/// client can map them to exit codes without parsing messages.
pub mod codes {
    /// No record / dead letter with that id or seq.
    pub const NOT_FOUND: &str = "not_found";
    /// The request is malformed or out of bounds (a usage error).
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// The spool failed (storage error, closed, flush failed).
    pub const SPOOL_ERROR: &str = "spool_error";
    /// The admin socket is at its connection limit; try again.
    pub const BUSY: &str = "busy";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum AdminRequest {
    Status,
    List {
        /// "all", "pending", "dead" or "acked".
        state: String,
        from_seq: u64,
        limit: u32,
    },
    /// An event id, or a seq number.
    Show { key: String },
    Tail { limit: u32 },
    /// Re-spool events (from an export); dedupe applies.
    Import { events: Vec<serde_json::Value> },
    Verify,
    DlqRetry { seq: Option<u64>, all: bool },
    DlqDrop { seq: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One of [`codes`] when `ok` is false (absent in old responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl AdminResponse {
    pub fn ok(data: serde_json::Value) -> AdminResponse {
        AdminResponse { ok: true, data: Some(data), error: None, code: None }
    }

    pub fn err(msg: impl Into<String>) -> AdminResponse {
        AdminResponse { ok: false, data: None, error: Some(msg.into()), code: None }
    }

    /// An error with a machine-readable code (see [`codes`]).
    pub fn err_code(code: &str, msg: impl Into<String>) -> AdminResponse {
        AdminResponse { ok: false, data: None, error: Some(msg.into()), code: Some(code.to_owned()) }
    }
}
