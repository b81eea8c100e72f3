//! The one status document of a spool node: what `GET /v1/status` answers and
//! what the admin socket's `status` (and so `spoolctl status`) returns. One
//! type, built in one place (`admin::node_status`), so the HTTP and admin
//! views cannot drift apart.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The whole status of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    /// `online` (the running daemon) or `offline` (`spoolctl --spool-dir`).
    pub mode: String,
    /// When this document was built (the ages below are relative to it).
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// Online only: the spool is writable, the disk reserve holds and the
    /// daemon is not draining (what `/readyz` says).
    pub ready: Option<bool>,
    pub not_ready_reason: Option<String>,
    /// Online only: shutting down, refusing new events.
    pub draining: Option<bool>,
    pub spool: SpoolStatus,
    /// Records in the dead-letter queue (= `spool.dead_events`).
    pub dead_letters: u64,
    /// Dead letters dropped by an operator since the process started.
    pub dead_letters_dropped_total: u64,
    pub ledger: LedgerStatus,
    pub disk: DiskStatus,
}

/// The spool's counters and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolStatus {
    pub dir: String,
    /// Pending plus dead records (what `events_max` limits).
    pub events: u64,
    pub pending_events: u64,
    pub dead_events: u64,
    pub acked_events: u64,
    pub quarantined_events: u64,
    /// Bytes of pending and dead records (what `bytes_max` limits).
    pub bytes: u64,
    pub acked_bytes: u64,
    pub bytes_max: u64,
    pub events_max: u64,
    pub next_seq: u64,
    /// Group commits since the spool was opened.
    pub commits: u64,
    /// Online only: seconds spent in group commits (flush + fsync) since the
    /// daemon started; its change over `commits`' change is the mean commit
    /// latency (`spoolctl top`).
    pub commit_seconds_total: Option<f64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub oldest_pending_at: Option<OffsetDateTime>,
    pub oldest_pending_age_seconds: Option<f64>,
}

/// What the forwarder knows of the ledger. Offline, or with forwarding off,
/// `forwarding` is false and the rest is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerStatus {
    pub forwarding: bool,
    /// `None` until the first request or probe.
    pub up: Option<bool>,
    /// The last failure, kept after recovery; read it with `last_error_at`.
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_error_at: Option<OffsetDateTime>,
    /// When a ledger last answered a batch with results.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    pub current_url: Option<String>,
    pub inflight_batches: Option<usize>,
    pub events_acked_total: Option<u64>,
    pub events_dead_total: Option<u64>,
}

/// Free space on the spool's filesystem.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskStatus {
    pub free_bytes: Option<u64>,
    /// `None` when the filesystem does not report inodes.
    pub free_inodes: Option<u64>,
}

/// The daemon's part of the status (the spool's part is read from the spool).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonStatus {
    pub draining: bool,
    pub commit_seconds_total: f64,
    pub ledger: LedgerStatus,
}
