//! Spool operations for operators, shared by spoold's admin socket (online) and
//! `spoolctl --spool-dir` (offline), so that both modes behave identically.
//!
//! - [`execute`] runs one [`AdminRequest`] against an open [`Spool`]: status,
//!   list with a state filter and paging, show by id or seq, tail, import (dedupe
//!   applies), verify, dead-letter retry and drop.
//! - [`server::serve_unix`] serves the protocol of `common::admin` on a Unix socket:
//!   one JSON request per line, one JSON response per line.
//! - [`client::Client`] is the other end, used by `spoolctl` and tests.
//!
//! The `data` of a successful response is one of the typed shapes in this crate
//! ([`NodeStatus`] built by [`node_status`], [`ListData`], [`ImportReport`], [`VerifyData`],
//! [`RetryData`], [`DropData`], or a single [`Record`] for `show`), so clients
//! decode exactly what the server encodes.
//!
//! # Constraints
//! - Every request is bounded: at most `ADMIN_PAGE_RECORDS_MAX` records per
//!   list/tail, at most `ADMIN_IMPORT_EVENTS_MAX` events per import; bigger jobs
//!   are paged or chunked by the client.
//! - Blocking spool calls (sled reads, verify) run on tokio's blocking pool,
//!   never on the async workers that serve ingest.
//!
//! # Invariants
//! - **Invariant:** nothing is removed from a spool except by an explicit
//!   `DlqDrop` of one dead letter; every drop is logged at WARN with the record's
//!   seq, id and dead-letter reason, and counted ([`dead_letters_dropped_total`]).
//! - **Invariant:** import never bypasses validation or dedupe: every event goes
//!   through `Event::from_json_value` and `Spool::append_batch`, and is reported
//!   as accepted, duplicate, conflict, invalid or failed — never silently skipped.

pub mod audit;
pub mod reconcile;
pub mod client;
pub mod server;

use std::sync::atomic::{AtomicU64, Ordering};

use common::admin::{
    codes, AdminRequest, AdminResponse, HelloData, ADMIN_PROTOCOL_VERSION, ADMIN_IMPORT_EVENTS_MAX, ADMIN_PAGE_BYTES_MAX, ADMIN_PAGE_RECORDS_MAX,
};
use common::status::{DaemonStatus, DiskStatus, NodeStatus, SpoolStatus};
use serde::{Deserialize, Serialize};
use spool::{AppendOutcome, Spool, SpoolError, StateFilter};
use spool_format::{Event, OffsetDateTime, Record, State};

pub use client::Client;
pub use server::{default_socket_path, serve_unix, Daemon, ExtraStatus, ADMIN_CONNECTIONS_MAX, ADMIN_IDLE_TIMEOUT};

/// Dead letters dropped by operators since this process started.
static DEAD_LETTERS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many dead letters operators dropped through this process (for status
/// pages and metrics; the daemon may export it).
pub fn dead_letters_dropped_total() -> u64 {
    DEAD_LETTERS_DROPPED.load(Ordering::Relaxed)
}

/// Errors of the admin server and client (not of individual requests: those
/// are [`AdminResponse`]s with an error code).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("admin socket {0} is in use by a running process")]
    InUse(String),
    #[error("admin socket path {0} exists and is not a socket; refusing to remove it")]
    NotASocket(String),
    #[error("admin protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    VersionMismatch(String),
}

/// `data` of `status`: the node's one status document (also `GET /v1/status`).
pub use common::status::NodeStatus as StatusData;

/// `data` of `list` and `tail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListData {
    pub records: Vec<Record>,
    /// Where the next page starts, when this page was full.
    pub next_from_seq: Option<u64>,
}

/// What happened to one import input that was not accepted as new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportIssue {
    /// Position in the request's `events`.
    pub index: usize,
    pub id: Option<String>,
    /// "duplicate" is not an issue; this is "conflict", "invalid" or "failed".
    pub status: String,
    pub message: String,
    /// For a conflict: the seq of the record already spooled under that id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `data` of `import`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    pub accepted: u64,
    pub duplicate: u64,
    /// Same id, a different event already spooled: not imported.
    pub conflict: u64,
    /// Not a valid SPEC §1 event: not imported.
    pub invalid: u64,
    /// The spool refused (full, disk reserve, storage error): not imported, retry.
    pub failed: u64,
    pub issues: Vec<ImportIssue>,
}

impl ImportReport {
    /// Adds another chunk's report to this one.
    pub fn merge(&mut self, other: ImportReport, index_offset: usize) {
        self.accepted += other.accepted;
        self.duplicate += other.duplicate;
        self.conflict += other.conflict;
        self.invalid += other.invalid;
        self.failed += other.failed;
        self.issues.extend(other.issues.into_iter().map(|mut i| {
            i.index += index_offset;
            i
        }));
    }

    /// Whether every input is now in the spool (new or duplicate).
    pub fn is_clean(&self) -> bool {
        self.conflict == 0 && self.invalid == 0 && self.failed == 0
    }
}

/// One fault found by verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultData {
    pub seq: Option<u64>,
    pub what: String,
}

/// `data` of `verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyData {
    pub records: u64,
    /// The first faults found (at most `spool::FAULTS_KEPT_MAX`).
    pub faults: Vec<FaultData>,
    /// Every fault found (more than `faults` holds on a badly damaged spool).
    #[serde(default)]
    pub faults_total: u64,
}

/// `data` of `dlq_retry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryData {
    /// Seqs moved back to pending.
    pub requeued: Vec<u64>,
}

/// `data` of `dlq_drop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropData {
    pub seq: u64,
    pub id: String,
}

/// Parses the `state` of a list request.
pub fn parse_state_filter(s: &str) -> Option<StateFilter> {
    match s {
        "all" => Some(StateFilter::All),
        "pending" => Some(StateFilter::Pending),
        "dead" => Some(StateFilter::Dead),
        "acked" => Some(StateFilter::Acked),
        _ => None,
    }
}

pub(crate) fn spool_err(e: &SpoolError) -> AdminResponse {
    AdminResponse::err_code(codes::SPOOL_ERROR, e.to_string())
}

pub(crate) fn to_data<T: Serialize>(v: &T) -> AdminResponse {
    match serde_json::to_value(v) {
        Ok(v) => AdminResponse::ok(v),
        Err(e) => AdminResponse::err_code(codes::SPOOL_ERROR, format!("encode response: {e}")),
    }
}

/// Runs a blocking spool call on the blocking pool.
pub(crate) async fn blocking<T, F>(spool: &Spool, f: F) -> Result<T, AdminResponse>
where
    T: Send + 'static,
    F: FnOnce(&Spool) -> Result<T, SpoolError> + Send + 'static,
{
    let s = spool.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(spool_err(&e)),
        Err(e) => Err(AdminResponse::err_code(codes::SPOOL_ERROR, format!("admin task failed: {e}"))),
    }
}

/// Runs one admin request against `spool`. `status` reports only what the
/// spool knows; the socket server merges the daemon's extra status into it.
pub async fn execute(spool: &Spool, req: AdminRequest) -> AdminResponse {
    execute_as(spool, req, None).await
}

/// [`execute`] on behalf of `peer_uid` (the admin socket's peer; `None`:
/// this process, offline), who is named in the audit log.
pub async fn execute_as(spool: &Spool, req: AdminRequest, peer_uid: Option<u32>) -> AdminResponse {
    let by = |user: &Option<String>| match peer_uid {
        Some(uid) => audit::caller(&format!("uid {uid}"), user.as_deref()),
        None => audit::offline_caller(user.as_deref()),
    };
    let r = match req {
        AdminRequest::Status => node_status(spool, None).await.map(|s| to_data(&s)),
        AdminRequest::List { state, from_seq, limit } => list(spool, &state, from_seq, limit).await,
        AdminRequest::Hello { protocol, .. } => Ok(hello(protocol)),
        AdminRequest::Show { key } => show(spool, key).await,
        AdminRequest::Tail { limit } => tail(spool, limit).await,
        AdminRequest::Import { events } => import(spool, events).await,
        AdminRequest::Verify => verify(spool).await,
        AdminRequest::DlqRetry { seq, all, reason, user } => dlq_retry(spool, seq, all, &by(&user), reason.as_deref()).await,
        AdminRequest::DlqDrop { seq, reason, user } => dlq_drop(spool, seq, &by(&user), reason.as_deref()).await,
        AdminRequest::Audit { limit } => audit_tail(spool, limit).await,
        AdminRequest::ReconcileScan { from_seq, limit, since, until } => {
            reconcile::scan(spool, from_seq, limit, since.as_deref(), until.as_deref()).await
        }
        AdminRequest::RequeueAcked { seqs, reason, user } => reconcile::requeue(spool, seqs, &by(&user), reason.as_deref()).await,
        AdminRequest::ReconcileAudit { summary, user } => reconcile::audit_summary(spool, summary, &by(&user)).await,
    };
    r.unwrap_or_else(|e| e)
}

/// Builds the node's status document, the one [`NodeStatus`] behind both
/// `GET /v1/status` and the admin `status`: the spool's counters read now,
/// plus the daemon's part (`daemon`: draining, the forwarder's view of the
/// ledger) when online. `None`: offline (`spoolctl --spool-dir`).
pub async fn node_status(spool: &Spool, daemon: Option<DaemonStatus>) -> Result<NodeStatus, AdminResponse> {
    let (stats, disk, writable) =
        blocking(spool, |s| Ok((s.stats()?, s.disk_free().ok(), s.check_writable().err().map(|e| e.to_string())))).await?;
    let now = OffsetDateTime::now_utc();
    let cfg = spool.config();
    let online = daemon.is_some();
    let daemon = daemon.unwrap_or_default();
    Ok(NodeStatus {
        node_id: cfg.node_id.clone(),
        mode: if online { "online" } else { "offline" }.to_owned(),
        generated_at: now,
        ready: online.then(|| writable.is_none() && !daemon.draining),
        not_ready_reason: if online {
            writable.or_else(|| daemon.draining.then(|| "draining for shutdown".to_owned()))
        } else {
            None
        },
        draining: online.then_some(daemon.draining),
        spool: SpoolStatus {
            dir: cfg.dir.display().to_string(),
            events: stats.pending_events + stats.dead_events,
            pending_events: stats.pending_events,
            dead_events: stats.dead_events,
            acked_events: stats.acked_events,
            quarantined_events: stats.quarantined,
            bytes: stats.live_bytes,
            acked_bytes: stats.acked_bytes,
            bytes_max: stats.bytes_max,
            events_max: stats.events_max,
            next_seq: stats.next_seq,
            commits: stats.commits,
            commit_seconds_total: online.then_some(daemon.commit_seconds_total),
            oldest_pending_at: stats.oldest_pending,
            oldest_pending_age_seconds: stats.oldest_pending.map(|t| (now - t).as_seconds_f64().max(0.0)),
        },
        dead_letters: stats.dead_events,
        dead_letters_dropped_total: dead_letters_dropped_total(),
        ledger: daemon.ledger,
        disk: DiskStatus { free_bytes: disk.map(|d| d.bytes), free_inodes: disk.and_then(|d| d.inodes) },
    })
}

pub(crate) fn check_limit(limit: u32) -> Result<usize, AdminResponse> {
    if limit == 0 || limit > ADMIN_PAGE_RECORDS_MAX {
        return Err(AdminResponse::err_code(
            codes::INVALID_REQUEST,
            format!("limit must be 1..={ADMIN_PAGE_RECORDS_MAX}, got {limit}"),
        ));
    }
    usize::try_from(limit).map_err(|_| AdminResponse::err_code(codes::INVALID_REQUEST, "limit too large"))
}

async fn list(spool: &Spool, state: &str, from_seq: u64, limit: u32) -> Result<AdminResponse, AdminResponse> {
    let filter = parse_state_filter(state).ok_or_else(|| {
        AdminResponse::err_code(
            codes::INVALID_REQUEST,
            format!("state must be all, pending, dead or acked, got {state:?}"),
        )
    })?;
    let n = check_limit(limit)?;
    let mut records = blocking(spool, move |s| s.list(filter, from_seq, n)).await?;
    let full = records.len() >= n;
    let cut = keep_within_bytes(&records, ADMIN_PAGE_BYTES_MAX);
    let next_from_seq = if cut < records.len() || full {
        records.truncate(cut);
        records.last().map(|r| r.seq.saturating_add(1))
    } else {
        None
    };
    Ok(to_data(&ListData { records, next_from_seq }))
}

/// How many of `records`, from the front, fit in `bytes_max` bytes of JSON
/// (at least one, so that paging always moves on).
fn keep_within_bytes<'a>(records: impl IntoIterator<Item = &'a Record>, bytes_max: usize) -> usize {
    let mut total = 0usize;
    let mut kept = 0usize;
    for r in records {
        total = total.saturating_add(serde_json::to_vec(r).map_or(0, |v| v.len()));
        if kept > 0 && total > bytes_max {
            break;
        }
        kept += 1;
    }
    kept
}

async fn tail(spool: &Spool, limit: u32) -> Result<AdminResponse, AdminResponse> {
    let n = check_limit(limit)?;
    let mut records = blocking(spool, move |s| s.tail(n)).await?;
    // Keep the newest records that fit.
    let keep = keep_within_bytes(records.iter().rev(), ADMIN_PAGE_BYTES_MAX);
    records.drain(..records.len() - keep);
    Ok(to_data(&ListData { records, next_from_seq: None }))
}

/// What this build calls itself in `hello`.
pub fn server_name() -> String {
    format!("spoold {}", env!("CARGO_PKG_VERSION"))
}

/// Answers `hello`: our protocol, or a mismatch naming both versions.
pub fn hello(protocol: u32) -> AdminResponse {
    if protocol == ADMIN_PROTOCOL_VERSION {
        return to_data(&HelloData { protocol: ADMIN_PROTOCOL_VERSION, server: server_name() });
    }
    AdminResponse::err_code(
        codes::VERSION_MISMATCH,
        format!(
            "admin protocol mismatch: the client speaks version {protocol}, {} speaks version {ADMIN_PROTOCOL_VERSION}; \
             use the spoolctl of the same release as spoold",
            server_name()
        ),
    )
}

/// How a record is named on the command line and in `show`: `seq:N`,
/// `id:X`, or a bare key (see [`RecordKey::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Seq(u64),
    Id(String),
    /// A bare key: an id, or, when all digits, a seq *or* an id; resolved only
    /// when exactly one record matches.
    Bare(String),
}

impl RecordKey {
    /// `seq:263` is seq 263, `id:263` the event whose id is `263` (and
    /// `id:seq:1` the event whose id is `seq:1`); anything else is bare.
    pub fn parse(key: &str) -> Result<RecordKey, String> {
        if let Some(n) = key.strip_prefix("seq:") {
            return n.parse().map(RecordKey::Seq).map_err(|_| format!("{key:?}: seq:N needs a number"));
        }
        if let Some(id) = key.strip_prefix("id:") {
            if id.is_empty() {
                return Err(format!("{key:?}: id:X needs an id"));
            }
            return Ok(RecordKey::Id(id.to_owned()));
        }
        if key.is_empty() {
            return Err("empty record key: use seq:N or id:X".into());
        }
        Ok(RecordKey::Bare(key.to_owned()))
    }
}

/// `show`: by `seq:N`, `id:X`, or a bare key. A bare all-digit key that is
/// both an existing seq and another record's id is refused as ambiguous
/// (`invalid_request`), never guessed: `seq:`/`id:` say which.
async fn show(spool: &Spool, key: String) -> Result<AdminResponse, AdminResponse> {
    let parsed = RecordKey::parse(&key).map_err(|m| AdminResponse::err_code(codes::INVALID_REQUEST, m))?;
    let p = parsed.clone();
    let found = blocking(spool, move |s| match p {
        RecordKey::Seq(seq) => Ok(Ok(s.get(seq)?)),
        RecordKey::Id(id) => Ok(Ok(s.lookup(&id)?)),
        RecordKey::Bare(k) => {
            let by_id = s.lookup(&k)?;
            let by_seq = match k.parse::<u64>() {
                Ok(seq) => s.get(seq)?,
                Err(_) => None,
            };
            match (by_seq, by_id) {
                (Some(a), Some(b)) if a.seq != b.seq => Ok(Err((a.seq, b.seq))),
                (a, b) => Ok(Ok(a.or(b))),
            }
        }
    })
    .await?;
    let found = found.map_err(|(seq, other)| {
        AdminResponse::err_code(
            codes::INVALID_REQUEST,
            format!("{key:?} is ambiguous: seq {seq} and the record with id {key:?} (seq {other}) differ; write seq:{key} or id:{key}"),
        )
    })?;
    if let Some(r) = found {
        return Ok(to_data(&r));
    }
    let seq = match &parsed {
        RecordKey::Seq(seq) => Some(*seq),
        RecordKey::Bare(k) => k.parse::<u64>().ok(),
        RecordKey::Id(_) => None,
    };
    if let Some(seq) = seq {
        let q = blocking(spool, |s| s.quarantined()).await?;
        if q.iter().any(|q| q.seq == seq) {
            return Ok(AdminResponse::err_code(
                codes::NOT_FOUND,
                format!("record {seq} is in quarantine: it failed its checksum and will not be forwarded"),
            ));
        }
    }
    let what = match parsed {
        RecordKey::Seq(seq) => format!("no record with seq {seq}"),
        RecordKey::Id(id) => format!("no record with id {id:?}"),
        RecordKey::Bare(k) => format!("no record with seq or id {k:?}"),
    };
    Ok(AdminResponse::err_code(codes::NOT_FOUND, what))
}

async fn import(spool: &Spool, events: Vec<serde_json::Value>) -> Result<AdminResponse, AdminResponse> {
    if events.len() > ADMIN_IMPORT_EVENTS_MAX {
        return Err(AdminResponse::err_code(
            codes::INVALID_REQUEST,
            format!("at most {ADMIN_IMPORT_EVENTS_MAX} events per import request, got {}", events.len()),
        ));
    }
    let mut report = ImportReport::default();
    let mut valid = Vec::with_capacity(events.len());
    let mut positions = Vec::with_capacity(events.len());
    for (index, value) in events.iter().enumerate() {
        match Event::from_json_value(value) {
            Ok(e) => {
                valid.push(e);
                positions.push(index);
            }
            Err(e) => {
                report.invalid += 1;
                report.issues.push(ImportIssue {
                    index,
                    id: value.get("id").and_then(|v| v.as_str()).map(str::to_owned),
                    status: "invalid".into(),
                    message: e.to_string(),
                    seq: None,
                });
            }
        }
    }
    let ids: Vec<String> = valid.iter().map(|e| e.id.clone()).collect();
    let results = spool.append_batch(valid).await;
    for ((result, index), id) in results.into_iter().zip(positions).zip(ids) {
        match result {
            Ok(AppendOutcome::Accepted { .. }) => report.accepted += 1,
            Ok(AppendOutcome::Duplicate { .. }) => report.duplicate += 1,
            Ok(AppendOutcome::Conflict { seq }) => {
                report.conflict += 1;
                report.issues.push(ImportIssue {
                    index,
                    id: Some(id),
                    status: "conflict".into(),
                    message: format!("a different event with this id is spooled at seq {seq}"),
                    seq: Some(seq),
                });
            }
            Err(e) => {
                report.failed += 1;
                report.issues.push(ImportIssue {
                    index,
                    id: Some(id),
                    status: "failed".into(),
                    message: e.to_string(),
                    seq: None,
                });
            }
        }
    }
    tracing::info!(
        accepted = report.accepted,
        duplicate = report.duplicate,
        conflict = report.conflict,
        invalid = report.invalid,
        failed = report.failed,
        "import chunk applied"
    );
    Ok(to_data(&report))
}

async fn verify(spool: &Spool) -> Result<AdminResponse, AdminResponse> {
    let report = blocking(spool, |s| s.verify(|_| {})).await?;
    if !report.faults.is_empty() {
        tracing::error!(faults = report.faults_total, records = report.records, "spool verify found faults");
    }
    Ok(to_data(&verify_data(report)))
}

/// The admin answer for a verify report.
pub fn verify_data(report: spool::VerifyReport) -> VerifyData {
    VerifyData {
        records: report.records,
        faults_total: report.faults_total,
        faults: report.faults.into_iter().map(|f| FaultData { seq: f.seq, what: f.what }).collect(),
    }
}

/// Dead letters read per page by `dlq retry --all`.
const RETRY_PAGE_RECORDS: usize = 1000;

/// Writes an audit entry for `record` before the action (write-ahead): no
/// audit entry, no action.
async fn audit_first(spool: &Spool, action: &str, record: &Record, by: &str, reason: Option<&str>) -> Result<(), AdminResponse> {
    let entry = audit::AuditEntry::new(action, record, by, reason);
    let dir = spool.config().dir.clone();
    tokio::task::spawn_blocking(move || audit::append(&dir, &entry))
        .await
        .map_err(|e| AdminResponse::err_code(codes::SPOOL_ERROR, format!("audit task failed: {e}")))?
        .map_err(|e| AdminResponse::err_code(codes::SPOOL_ERROR, format!("write the audit log ({}): {e}; nothing was changed", audit::AUDIT_FILE)))
}

/// The dead letter at `seq`, or `not_found`.
async fn dead_record(spool: &Spool, seq: u64) -> Result<Record, AdminResponse> {
    let record = blocking(spool, move |s| s.get(seq)).await?;
    record
        .filter(|r| matches!(r.state, State::Dead { .. }))
        .ok_or_else(|| AdminResponse::err_code(codes::NOT_FOUND, format!("seq {seq} is not a dead letter")))
}

/// `data` of `audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditData {
    pub entries: Vec<audit::AuditEntry>,
    /// Lines of the log that could not be read (reported, never hidden).
    pub damaged_lines: u64,
}

async fn audit_tail(spool: &Spool, limit: u32) -> Result<AdminResponse, AdminResponse> {
    let n = check_limit(limit)?;
    let dir = spool.config().dir.clone();
    let (entries, damaged_lines) = tokio::task::spawn_blocking(move || audit::read_tail(&dir, n))
        .await
        .map_err(|e| AdminResponse::err_code(codes::SPOOL_ERROR, format!("audit task failed: {e}")))?
        .map_err(|e| AdminResponse::err_code(codes::SPOOL_ERROR, format!("read the audit log: {e}")))?;
    Ok(to_data(&AuditData { entries, damaged_lines }))
}

async fn dlq_retry(spool: &Spool, seq: Option<u64>, all: bool, by: &str, reason: Option<&str>) -> Result<AdminResponse, AdminResponse> {
    match (seq, all) {
        (Some(seq), false) => {
            let record = match dead_record(spool, seq).await {
                Ok(r) => r,
                Err(e) => return Ok(e),
            };
            audit_first(spool, "dlq_retry", &record, by, reason).await?;
            let requeued = spool.requeue(seq).await.map_err(|e| spool_err(&e))?;
            if !requeued {
                return Ok(AdminResponse::err_code(codes::NOT_FOUND, format!("seq {seq} is not a dead letter")));
            }
            tracing::info!(seq, "dead letter requeued by operator");
            Ok(to_data(&RetryData { requeued: vec![seq] }))
        }
        (None, true) => {
            let mut requeued = Vec::new();
            let mut from = 0u64;
            loop {
                let page = blocking(spool, move |s| s.list(StateFilter::Dead, from, RETRY_PAGE_RECORDS)).await?;
                let Some(last) = page.last() else { break };
                from = last.seq.saturating_add(1);
                for r in &page {
                    audit_first(spool, "dlq_retry", r, by, reason).await?;
                    if spool.requeue(r.seq).await.map_err(|e| spool_err(&e))? {
                        requeued.push(r.seq);
                    }
                }
                if page.len() < RETRY_PAGE_RECORDS {
                    break;
                }
            }
            tracing::info!(count = requeued.len(), "all dead letters requeued by operator");
            Ok(to_data(&RetryData { requeued }))
        }
        _ => Err(AdminResponse::err_code(codes::INVALID_REQUEST, "dlq_retry needs exactly one of seq or all")),
    }
}

async fn dlq_drop(spool: &Spool, seq: u64, by: &str, reason: Option<&str>) -> Result<AdminResponse, AdminResponse> {
    let record = match dead_record(spool, seq).await {
        Ok(r) => r,
        Err(e) => return Ok(e),
    };
    audit_first(spool, "dlq_drop", &record, by, reason).await?;
    if !spool.drop_dead(seq).await.map_err(|e| spool_err(&e))? {
        return Ok(AdminResponse::err_code(codes::NOT_FOUND, format!("seq {seq} is not a dead letter")));
    }
    DEAD_LETTERS_DROPPED.fetch_add(1, Ordering::Relaxed);
    let (code, reason) = match &record.state {
        State::Dead { code, reason, .. } => (code.as_str(), reason.as_str()),
        _ => ("", ""),
    };
    tracing::warn!(
        seq,
        id = %record.event.id,
        amount = record.event.amount,
        currency = %record.event.currency,
        code,
        reason,
        "dead letter dropped by operator; the event is gone from this spool"
    );
    Ok(to_data(&DropData { seq, id: record.event.id }))
}

#[cfg(test)]
mod tests;
