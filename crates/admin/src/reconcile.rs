//! Reconciliation (issue 15): does the ledger still hold every event this
//! spool saw acknowledged? A ledger restored from an older backup, or a store
//! that lost its last writes in a power cut, lacks events the edge marked
//! acked; the edge keeps them for `acked_retention`. `spoolctl reconcile`
//! walks them, asks the ledger (`POST /v1/reconcile`) in chunks and, with
//! `--requeue`, puts the missing ones back to pending so the forwarder sends
//! them again (the ledger's dedupe keeps the effect exactly once).
//!
//! The spool side runs here, for both the admin socket and offline spoolctl:
//! - [`scan`]: one page of acked records as `(seq, id, digest, received_at)`
//!   (the digest is `Event::digest`, the one the ledger compares for
//!   `duplicate`/`conflict`), received in `[since, until)`;
//! - [`requeue`]: `Spool::requeue_acked` of one chunk, written to the audit
//!   log first (`reconcile_requeue`, with the seqs);
//! - [`audit_summary`]: the finished reconcile's totals in the audit log.
//!
//! **Invariant:** a reconcile never removes or changes an event: it only moves
//! acked records back to pending, and only with `--requeue`, audited first.

use common::admin::{codes, AdminResponse};
use serde::{Deserialize, Serialize};
use spool::{Spool, StateFilter};
use spool_format::{OffsetDateTime, State};
use time::format_description::well_known::Rfc3339;

use crate::{audit, blocking, check_limit, spool_err, to_data};

/// One acked record, as reconciliation needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanItem {
    pub seq: u64,
    pub id: String,
    /// `Event::digest`, 64 lower-case hex digits.
    pub digest: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

/// `data` of `reconcile_scan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanData {
    pub items: Vec<ScanItem>,
    /// Where the next page starts; `None` when the walk is done.
    pub next_from_seq: Option<u64>,
}

/// `data` of `requeue_acked`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequeueData {
    /// How many records moved back to pending (not acked any more: skipped).
    pub requeued: u64,
}

/// Lower-case hex of a digest.
pub fn hex(d: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(64);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_time(what: &str, v: Option<&str>) -> Result<Option<OffsetDateTime>, AdminResponse> {
    v.map(|s| {
        OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|_| AdminResponse::err_code(codes::INVALID_REQUEST, format!("{what} must be an RFC 3339 time, got {s:?}")))
    })
    .transpose()
}

/// One page of acked records from `from_seq` (at most `limit` records looked
/// at), those received in `[since, until)`.
pub async fn scan(spool: &Spool, from_seq: u64, limit: u32, since: Option<&str>, until: Option<&str>) -> Result<AdminResponse, AdminResponse> {
    let n = check_limit(limit)?;
    let (since, until) = (parse_time("since", since)?, parse_time("until", until)?);
    let (items, next) = blocking(spool, move |s| {
        let records = s.list(StateFilter::Acked, from_seq, n)?;
        let next = if records.len() >= n { records.last().map(|r| r.seq.saturating_add(1)) } else { None };
        let items = records
            .into_iter()
            .filter(|r| matches!(r.state, State::Acked { .. }))
            .filter(|r| since.is_none_or(|t| r.received_at >= t) && until.is_none_or(|t| r.received_at < t))
            .map(|r| ScanItem { seq: r.seq, digest: hex(&r.event.digest()), id: r.event.id, received_at: r.received_at })
            .collect::<Vec<_>>();
        Ok((items, next))
    })
    .await?;
    Ok(to_data(&ScanData { items, next_from_seq: next }))
}

/// Puts the acked records among `seqs` back to pending, after writing one
/// `reconcile_requeue` audit entry naming them.
pub async fn requeue(spool: &Spool, seqs: Vec<u64>, by: &str, reason: Option<&str>) -> Result<AdminResponse, AdminResponse> {
    if seqs.len() > usize::try_from(common::admin::ADMIN_PAGE_RECORDS_MAX).unwrap_or(usize::MAX) {
        return Err(AdminResponse::err_code(
            codes::INVALID_REQUEST,
            format!("at most {} seqs per requeue_acked request", common::admin::ADMIN_PAGE_RECORDS_MAX),
        ));
    }
    if seqs.is_empty() {
        return Ok(to_data(&RequeueData { requeued: 0 }));
    }
    write_audit(spool, audit::AuditEntry::bulk("reconcile_requeue", by, reason, Some(seqs.clone()), None)).await?;
    let requeued = spool.requeue_acked(&seqs).await.map_err(|e| spool_err(&e))?;
    tracing::info!(requeued, asked = seqs.len(), "acked records the ledger lacks put back to pending by reconcile");
    Ok(to_data(&RequeueData { requeued }))
}

/// Writes a finished reconcile's totals to the audit log.
pub async fn audit_summary(spool: &Spool, summary: serde_json::Value, by: &str) -> Result<AdminResponse, AdminResponse> {
    write_audit(spool, audit::AuditEntry::bulk("reconcile", by, None, None, Some(summary.clone()))).await?;
    tracing::info!(%summary, "reconcile finished");
    Ok(to_data(&serde_json::json!({})))
}

async fn write_audit(spool: &Spool, entry: audit::AuditEntry) -> Result<(), AdminResponse> {
    let dir = spool.config().dir.clone();
    tokio::task::spawn_blocking(move || audit::append(&dir, &entry))
        .await
        .map_err(|e| AdminResponse::err_code(codes::SPOOL_ERROR, format!("audit task failed: {e}")))?
        .map_err(|e| AdminResponse::err_code(codes::SPOOL_ERROR, format!("write the audit log ({}): {e}; nothing was changed", audit::AUDIT_FILE)))
}
