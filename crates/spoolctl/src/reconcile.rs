//! `spoolctl reconcile` (issue 15): walks the acked records still kept,
//! asks the ledger (`POST /v1/reconcile`, this node's token) which of them it
//! holds, prints what it lacks or holds differently, and with `--requeue`
//! puts the missing ones back to pending.
//!
//! Report (docs/operations.md, "Ledger restored from an older backup"):
//! - `--json`: JSONL, one line per record the ledger does not hold as sent,
//!   `{"seq":N,"id":"…","received_at":"…","status":"missing"|"different","requeued":bool}`,
//!   then `{"summary":{"checked":N,"present":N,"missing":N,"different":N,"requeued":N,"seconds":S,…}}`;
//! - otherwise a table of those records and a totals table; a progress bar on
//!   a terminal (stderr).
//!
//! The walk pages through the spool ([`AdminRequest::ReconcileScan`],
//! 10,000 records a page) while the ledger answers the previous page, so the
//! two overlap.

use std::io::IsTerminal as _;
use std::path::Path;
use std::time::Instant;

use admin::reconcile::{RequeueData, ScanData, ScanItem};
use common::admin::{AdminRequest, ADMIN_PAGE_RECORDS_MAX};
use common::wire::{BatchResults, ReconcileEntry, ReconcileRequest, ReconcileResult, ReconcileStatus, RECONCILE_ENTRIES_MAX};
use serde::Serialize;
use spool_format::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::ReconcileArgs;
use crate::{fail, parse_since, user_name, Backend, StatusData, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE};

/// How long one ledger request may take: 10,000 lookups are milliseconds on a
/// healthy ledger; a slow link gets a minute.
const LEDGER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One line of the report: a record the ledger does not hold as sent.
#[derive(Debug, Serialize)]
struct Finding<'a> {
    seq: u64,
    id: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    status: &'static str,
    requeued: bool,
}

/// The report's totals (also the audit entry's summary).
#[derive(Debug, Default, Serialize)]
struct Summary {
    checked: u64,
    present: u64,
    missing: u64,
    different: u64,
    requeued: u64,
    seconds: f64,
    ledger: String,
    since: Option<String>,
    until: Option<String>,
    requeue: bool,
}

struct Ledger {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Ledger {
    async fn ask(&self, items: &[ScanItem]) -> anyhow::Result<Vec<ReconcileResult>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(RECONCILE_ENTRIES_MAX) {
            let body = ReconcileRequest {
                events: chunk.iter().map(|i| ReconcileEntry { id: i.id.clone(), digest: i.digest.clone() }).collect(),
            };
            let resp = self
                .client
                .post(format!("{}/v1/reconcile", self.url))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await
                .map_err(|e| fail(EXIT_UNREACHABLE, format!("ask the ledger at {}: {e}", self.url)))?;
            let status = resp.status();
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                return Err(fail(EXIT_FAILED, format!("the ledger at {} answered {status}: {}", self.url, spool_format::truncate(&text, 512))));
            }
            let r: BatchResults<ReconcileResult> =
                resp.json().await.map_err(|e| fail(EXIT_FAILED, format!("the ledger's answer: {e}")))?;
            if r.results.len() != chunk.len() || r.results.iter().zip(chunk).any(|(r, i)| r.id != i.id) {
                return Err(fail(EXIT_FAILED, "the ledger's answer does not match the question (count or ids)"));
            }
            out.extend(r.results);
        }
        Ok(out)
    }
}

fn parse_bound(flag: &str, v: Option<&str>) -> anyhow::Result<Option<String>> {
    v.map(|s| {
        parse_since(s)
            .map_err(|_| fail(EXIT_USAGE, format!("--{flag} {s:?}: expected an RFC 3339 time or an age (2h, 7d)")))
            .and_then(|t| t.format(&Rfc3339).map_err(|e| fail(EXIT_USAGE, e.to_string())))
    })
    .transpose()
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| fail(EXIT_USAGE, format!("--ledger-token-file {}: {e}", path.display())))?;
    let t = t.lines().next().unwrap_or("").trim().to_owned();
    if t.is_empty() {
        return Err(fail(EXIT_USAGE, format!("--ledger-token-file {}: empty", path.display())));
    }
    Ok(t)
}

pub async fn run(b: &mut Backend, args: &ReconcileArgs, json: bool) -> anyhow::Result<u8> {
    let started = Instant::now();
    let since = parse_bound("since", args.since.as_deref())?;
    let until = parse_bound("until", args.until.as_deref())?;
    let status: StatusData = b.call_ok(AdminRequest::Status).await?;
    let url = match (&args.ledger_url, &status.ledger.current_url) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) if !u.is_empty() => u.clone(),
        _ => {
            return Err(fail(
                EXIT_USAGE,
                "no ledger to ask: give --ledger-url URL (offline, or when the daemon does not forward)",
            ))
        }
    };
    let url = forwarder_url(&url)?;
    let ledger = Ledger {
        client: reqwest::Client::builder()
            .timeout(LEDGER_TIMEOUT)
            .build()
            .map_err(|e| fail(EXIT_FAILED, format!("http client: {e}")))?,
        url,
        token: read_token(&args.ledger_token_file)?,
    };
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(status.spool.acked_events);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} acked records checked {elapsed}") {
            bar.set_style(style);
        }
        bar
    });
    let mut sum = Summary {
        ledger: ledger.url.clone(),
        since: since.clone(),
        until: until.clone(),
        requeue: args.requeue,
        ..Summary::default()
    };
    let mut findings_human: Vec<(u64, String, OffsetDateTime, &'static str, bool)> = Vec::new();
    let scan = |from_seq: u64| AdminRequest::ReconcileScan { from_seq, limit: ADMIN_PAGE_RECORDS_MAX, since: since.clone(), until: until.clone() };
    let mut page: ScanData = b.call_ok(scan(0)).await?;
    loop {
        // Ask the ledger about this page while the spool reads the next one.
        let next_req = page.next_from_seq.map(scan);
        let (answers, next) = match next_req {
            Some(req) => {
                let (a, n) = tokio::join!(ledger.ask(&page.items), b.call_ok::<ScanData>(req));
                (a?, Some(n?))
            }
            None => (ledger.ask(&page.items).await?, None),
        };
        let mut missing = Vec::new();
        for (item, ans) in page.items.iter().zip(&answers) {
            match ans.status {
                ReconcileStatus::Present => sum.present += 1,
                ReconcileStatus::Missing => {
                    sum.missing += 1;
                    missing.push(item.seq);
                }
                ReconcileStatus::Different => sum.different += 1,
            }
        }
        sum.checked += u64::try_from(page.items.len()).unwrap_or(u64::MAX);
        if args.requeue && !missing.is_empty() {
            let r: RequeueData = b
                .call_ok(AdminRequest::RequeueAcked { seqs: missing.clone(), reason: args.reason.clone(), user: user_name() })
                .await?;
            sum.requeued += r.requeued;
        }
        for (item, ans) in page.items.iter().zip(&answers) {
            if ans.status == ReconcileStatus::Present {
                continue;
            }
            let requeued = args.requeue && ans.status == ReconcileStatus::Missing;
            if json {
                crate::output::print_line(&Finding {
                    seq: item.seq,
                    id: &item.id,
                    received_at: item.received_at,
                    status: ans.status.as_str(),
                    requeued,
                })?;
            } else {
                findings_human.push((item.seq, item.id.clone(), item.received_at, ans.status.as_str(), requeued));
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(sum.checked);
        }
        match next {
            Some(n) => page = n,
            None => break,
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    sum.seconds = started.elapsed().as_secs_f64();
    let summary = serde_json::to_value(&sum).unwrap_or_default();
    b.call_ok::<serde_json::Value>(AdminRequest::ReconcileAudit { summary: summary.clone(), user: user_name() }).await?;
    if json {
        crate::output::print_line(&serde_json::json!({ "summary": summary }))?;
    } else {
        if !findings_human.is_empty() {
            outln!("{:>10}  {:<10}  {:<9}  {:<25}  ID", "SEQ", "STATUS", "REQUEUED", "RECEIVED");
            for (seq, id, at, st, rq) in &findings_human {
                let at = at.format(&Rfc3339).unwrap_or_default();
                outln!("{seq:>10}  {st:<10}  {:<9}  {at:<25}  {id}", if *rq { "yes" } else { "no" });
            }
            outln!();
        }
        outln!("reconcile against {} ({:.1} s)", sum.ledger, sum.seconds);
        outln!("{:<10}{:>12}", "checked", sum.checked);
        outln!("{:<10}{:>12}", "present", sum.present);
        outln!("{:<10}{:>12}", "missing", sum.missing);
        outln!("{:<10}{:>12}", "different", sum.different);
        if args.requeue {
            outln!("{:<10}{:>12}  (back to pending: the forwarder sends them again)", "requeued", sum.requeued);
        } else if sum.missing > 0 {
            outln!("the missing events are still acked here: run again with --requeue to send them again");
        }
        if sum.different > 0 {
            outln!("different: the ledger holds another event under these ids (see docs/operations.md)");
        }
    }
    let unresolved = sum.different > 0 || (sum.missing > 0 && !args.requeue);
    Ok(if unresolved { EXIT_FAILED } else { 0 })
}

/// A ledger base URL as the forwarder posts to it (no trailing `/`).
fn forwarder_url(u: &str) -> anyhow::Result<String> {
    let t = u.trim().trim_end_matches('/');
    if !(t.starts_with("http://") || t.starts_with("https://")) {
        return Err(fail(EXIT_USAGE, format!("--ledger-url {u:?}: expected an http:// or https:// URL")));
    }
    Ok(t.to_owned())
}
