//! The admin socket protocol between spoold and spoolctl: one JSON request per
//! line on a Unix socket (mode 0600), one JSON response per line back.
//!
//! Versioned: a connection starts with `{"verb":"hello","protocol":N,…}`;
//! the daemon answers with its own protocol and version, or, when N differs,
//! a `version_mismatch` error naming both. A request before `hello` (a
//! spoolctl older than versioning) gets the same error, so neither side ever
//! sees an opaque "bad response".

use serde::{Deserialize, Serialize};

/// Where spoold's admin socket is by default and where spoolctl looks first:
/// systemd's `RuntimeDirectory=spoold`. Defined here only.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/spoold/admin.sock";

/// The admin protocol this build speaks. 1 was the unversioned protocol (no
/// `hello`); 2 added `hello`, the nested status document and `seq:`/`id:` keys.
pub const ADMIN_PROTOCOL_VERSION: u32 = 2;

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
    /// Client and daemon speak different admin protocol versions.
    pub const VERSION_MISMATCH: &str = "version_mismatch";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum AdminRequest {
    /// First request of a connection: the client's protocol version and name.
    Hello { protocol: u32, client: String },
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
    /// Requeue one dead letter or all; each is written to the spool's audit
    /// log first (`reason`: the operator's why; `user`: who spoolctl runs as).
    DlqRetry {
        seq: Option<u64>,
        all: bool,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        user: Option<String>,
    },
    /// Drop one dead letter; written to the audit log (with the event) first.
    DlqDrop {
        seq: u64,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        user: Option<String>,
    },
    /// The newest `limit` entries of the spool's audit log.
    Audit { limit: u32 },
    /// Acked records for reconciliation (`spoolctl reconcile`): seq, id,
    /// digest and received time of at most `limit` acked records from
    /// `from_seq`, received in `[since, until)` (RFC 3339; either open).
    ReconcileScan {
        from_seq: u64,
        limit: u32,
        #[serde(default)]
        since: Option<String>,
        #[serde(default)]
        until: Option<String>,
    },
    /// Puts acked records the ledger lacks back to pending (`reconcile
    /// --requeue`); written to the audit log first.
    RequeueAcked {
        seqs: Vec<u64>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        user: Option<String>,
    },
    /// Writes the report totals of a finished reconcile to the audit log.
    ReconcileAudit {
        summary: serde_json::Value,
        #[serde(default)]
        user: Option<String>,
    },
}

/// `data` of `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloData {
    pub protocol: u32,
    /// e.g. "spoold 0.1.0".
    pub server: String,
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
