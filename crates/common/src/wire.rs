//! JSON bodies of the HTTP APIs (SPEC §2, §3). Both sides use these types, so a
//! field cannot drift between client and server.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `{"error":{"code":…,"message":…,"field":…}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorDetail {
    pub fn new(code: &str, message: impl Into<String>) -> ErrorDetail {
        ErrorDetail { code: code.to_owned(), message: message.into(), field: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ErrorDetail {
        self.field = Some(field.into());
        self
    }
}

/// Body of a 202 / 200 answer to `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestAck {
    pub id: String,
    pub seq: u64,
    /// "accepted" or "duplicate".
    pub status: String,
}

/// One entry of the `POST /v1/events/batch` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItemResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub http_status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `{"results":[…]}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResults<T> {
    pub results: Vec<T>,
}

/// `POST /v1/batches` body: what a spool forwards to a ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerBatch {
    pub node: String,
    pub events: Vec<LedgerBatchEvent>,
}

/// One forwarded event. `event` stays raw JSON here so that the ledger can
/// validate each event on its own and reject only the bad one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerBatchEvent {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub event: serde_json::Value,
}

/// Per-event outcome at the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerStatus {
    Accepted,
    Duplicate,
    Conflict,
    Rejected,
}

impl LedgerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerStatus::Accepted => "accepted",
            LedgerStatus::Duplicate => "duplicate",
            LedgerStatus::Conflict => "conflict",
            LedgerStatus::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerResult {
    /// The event id; empty when the ledger could not read one from the input.
    pub id: String,
    pub status: LedgerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// An event as the ledger stores and serves it (`GET /v1/events/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEvent {
    pub ledger_seq: u64,
    /// The edge node that forwarded it first, and its seq there.
    pub node: String,
    pub node_seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    pub event: spool_format::Event,
}

/// Most entries of one `POST /v1/reconcile` (SPEC §3, offgrid addition):
/// 10,000 ids of at most 128 bytes plus a digest are at most ~2 MiB of JSON,
/// one indexed lookup each; a reconcile of a million events is 100 requests.
pub const RECONCILE_ENTRIES_MAX: usize = 10_000;

/// `POST /v1/reconcile`: which of these events does the ledger hold?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    pub events: Vec<ReconcileEntry>,
}

/// One event as the node knows it: its id and `Event::digest` (hex, lower-case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileEntry {
    pub id: String,
    pub digest: String,
}

/// What the ledger holds under an id, compared with the node's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileStatus {
    /// The same event (same digest).
    Present,
    /// Another event under this id (a conflict the ledger kept).
    Different,
    /// Nothing under this id.
    Missing,
}

impl ReconcileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileStatus::Present => "present",
            ReconcileStatus::Different => "different",
            ReconcileStatus::Missing => "missing",
        }
    }
}

/// One answer of `POST /v1/reconcile`, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileResult {
    pub id: String,
    pub status: ReconcileStatus,
}
