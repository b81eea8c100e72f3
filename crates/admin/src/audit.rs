//! The operator audit log of a spool: one JSON line per `dlq retry` and `dlq
//! drop`, per chunk of acked records a reconcile put back to pending
//! (`reconcile_requeue`, naming their seqs) and per finished reconcile
//! (`reconcile`, with the report's totals), in `audit.jsonl` next to the spool's sled files, fsynced before the
//! action it records is carried out (write-ahead), so every change an
//! operator made to the dead letters survives a crash or a restart, online
//! or offline. A dropped event's content is kept in its entry.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spool_format::{OffsetDateTime, Record, State};

/// File name of the audit log inside the spool directory.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// Longest operator reason kept, in bytes (longer ones are cut).
pub const AUDIT_REASON_BYTES_MAX: usize = 512;
/// Longest audit line read back, in bytes: an entry holds one event (≤ ~40 KiB
/// of JSON) or the seqs of one requeue chunk (≤ 10,000 × 21 bytes).
const AUDIT_LINE_BYTES_MAX: usize = 1 << 20;

/// One operator action on a dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `dlq_retry` or `dlq_drop`.
    pub action: String,
    pub seq: u64,
    pub id: String,
    /// Who: the Unix uid of the caller (the admin socket's peer, or the
    /// offline spoolctl process), and the user name spoolctl reported.
    pub by: String,
    /// Why: the operator's `--reason`, if given.
    pub reason: Option<String>,
    /// The ledger's code and reason for the dead letter.
    pub dead_code: String,
    pub dead_reason: String,
    /// For a drop: the event that left the spool.
    pub event: Option<serde_json::Value>,
    /// For `reconcile_requeue`: the seqs put back to pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seqs: Option<Vec<u64>>,
    /// For `reconcile`: the report's totals and bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
}

impl AuditEntry {
    pub fn new(action: &str, record: &Record, by: &str, reason: Option<&str>) -> AuditEntry {
        let (code, why) = match &record.state {
            State::Dead { code, reason, .. } => (code.clone(), reason.clone()),
            _ => (String::new(), String::new()),
        };
        AuditEntry {
            at: OffsetDateTime::now_utc(),
            action: action.to_owned(),
            seq: record.seq,
            id: record.event.id.clone(),
            by: by.to_owned(),
            reason: reason.map(|r| spool_format::truncate(r, AUDIT_REASON_BYTES_MAX).to_owned()),
            dead_code: code,
            dead_reason: why,
            event: (action == "dlq_drop").then(|| record.event.to_json_value()),
            seqs: None,
            summary: None,
        }
    }

    /// An entry about many records or none (`reconcile_requeue`, `reconcile`):
    /// `seq` 0 and `id` empty; the records are in `seqs`.
    pub fn bulk(action: &str, by: &str, reason: Option<&str>, seqs: Option<Vec<u64>>, summary: Option<serde_json::Value>) -> AuditEntry {
        AuditEntry {
            at: OffsetDateTime::now_utc(),
            action: action.to_owned(),
            seq: 0,
            id: String::new(),
            by: by.to_owned(),
            reason: reason.map(|r| spool_format::truncate(r, AUDIT_REASON_BYTES_MAX).to_owned()),
            dead_code: String::new(),
            dead_reason: String::new(),
            event: None,
            seqs,
            summary,
        }
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(AUDIT_FILE)
}

/// Appends `entry` and fsyncs it (and the directory when the file is new).
pub fn append(dir: &Path, entry: &AuditEntry) -> std::io::Result<()> {
    let p = path(dir);
    let created = !p.exists();
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p)?;
    f.write_all(&line)?;
    f.sync_data()?;
    if created {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads the newest `limit` entries (oldest first). A damaged line is skipped
/// and counted in the second value.
pub fn read_tail(dir: &Path, limit: usize) -> std::io::Result<(Vec<AuditEntry>, u64)> {
    let f = match std::fs::File::open(path(dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut out = std::collections::VecDeque::with_capacity(limit.min(4096));
    let mut damaged = 0u64;
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match (line.len() <= AUDIT_LINE_BYTES_MAX).then(|| serde_json::from_slice::<AuditEntry>(&line)) {
            Some(Ok(e)) => {
                if out.len() == limit {
                    out.pop_front();
                }
                out.push_back(e);
            }
            _ => damaged += 1,
        }
    }
    Ok((out.into_iter().collect(), damaged))
}

/// Who runs this process, for offline entries: `uid N (offline)`.
pub fn offline_caller(user: Option<&str>) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid().to_string()).unwrap_or_else(|_| "?".into());
    caller(&format!("uid {uid} (offline)"), user)
}

/// `uid N` plus the user name the client reported, if any.
pub fn caller(uid: &str, user: Option<&str>) -> String {
    match user.filter(|u| !u.is_empty()) {
        Some(u) => format!("{uid}, user {}", spool_format::truncate(u, 64)),
        None => uid.to_owned(),
    }
}
