//! The admin socket protocol between spoold and spoolctl: one JSON request per
//! line on a Unix socket (mode 0600), one JSON response per line back.

use serde::{Deserialize, Serialize};

/// Most records one `list`/`tail` request returns; clients page with `from_seq`.
pub const ADMIN_PAGE_RECORDS_MAX: u32 = 10_000;
/// Longest request line accepted by the daemon, in bytes (an import chunk of
/// 1,000 events at the 64 KiB body limit fits comfortably).
pub const ADMIN_LINE_BYTES_MAX: usize = 64 << 20;

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
}

impl AdminResponse {
    pub fn ok(data: serde_json::Value) -> AdminResponse {
        AdminResponse { ok: true, data: Some(data), error: None }
    }

    pub fn err(msg: impl Into<String>) -> AdminResponse {
        AdminResponse { ok: false, data: None, error: Some(msg.into()) }
    }
}
