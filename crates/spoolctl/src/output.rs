//! Human tables and JSON output.

use std::io::Write;

use admin::StatusData;
use common::units::Bytes;
use spool_format::{OffsetDateTime, Record, State};

pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Whole seconds, UTC: what a table column needs.
fn short_time(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC).format(&f).unwrap_or_else(|_| t.to_string())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn age(secs: f64) -> String {
    let s = Duration::from_secs_f64(secs.max(0.0));
    // Whole seconds are enough for an operator.
    humantime_like(s.as_secs())
}

use std::time::Duration;

fn humantime_like(mut s: u64) -> String {
    let d = s / 86_400;
    s %= 86_400;
    let h = s / 3600;
    s %= 3600;
    let m = s / 60;
    s %= 60;
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn percent(n: u64, max: u64) -> String {
    if max == 0 {
        return "-".into();
    }
    // Display only; precision loss of u64 -> f64 is irrelevant here.
    #[allow(clippy::cast_precision_loss)]
    let p = n as f64 * 100.0 / max as f64;
    format!("{p:.1}%")
}

pub fn print_status(s: &StatusData, mode: &str) -> anyhow::Result<()> {
    let sp = &s.spool;
    // Ages are against the document's own time, so they agree with each other.
    let ago = |t: Option<OffsetDateTime>| t.map(|t| format!("{} ago", age((s.generated_at - t).as_seconds_f64())));
    outln!("{:<16}{mode}", "mode");
    outln!("{:<16}{}", "node", s.node_id);
    outln!("{:<16}{}", "spool dir", sp.dir);
    outln!("{:<16}{} events", "pending", sp.pending_events);
    outln!("{:<16}{}", "dead letters", sp.dead_events);
    outln!("{:<16}{} events (kept for dedupe/audit)", "acked", sp.acked_events);
    outln!("{:<16}{} of {} events ({})", "spool depth", sp.events, sp.events_max, percent(sp.events, sp.events_max));
    outln!("{:<16}{} of {} ({})", "spool bytes", Bytes(sp.bytes), Bytes(sp.bytes_max), percent(sp.bytes, sp.bytes_max));
    match (sp.oldest_pending_at, ago(sp.oldest_pending_at)) {
        (Some(at), Some(ago)) => outln!("{:<16}{} ({ago})", "oldest pending", rfc3339(at)),
        _ => outln!("{:<16}none", "oldest pending"),
    }
    if let Some(false) = s.ready {
        outln!("{:<16}NOT READY: {}", "ready", s.not_ready_reason.as_deref().unwrap_or("unknown"));
    }
    let l = &s.ledger;
    let ledger = match (s.mode.as_str(), l.forwarding, l.up) {
        ("offline", _, _) => "unknown (offline: the daemon is not running)".to_owned(),
        (_, false, _) => "forwarding off (no ledger.urls configured)".to_owned(),
        (_, true, None) => "unknown (no answer or probe yet)".to_owned(),
        (_, true, Some(up)) => {
            let word = if up { "up" } else { "DOWN" };
            match l.current_url.as_deref() {
                Some(u) => format!("{word} ({u})"),
                None => word.to_owned(),
            }
        }
    };
    outln!("{:<16}{ledger}", "ledger");
    if l.forwarding {
        outln!("{:<16}{}", "last success", ago(l.last_success_at).unwrap_or_else(|| "never (since start)".into()));
        match (&l.last_error, ago(l.last_error_at)) {
            (Some(e), Some(ago)) => outln!("{:<16}{ago}: {e}", "last error"),
            (Some(e), None) => outln!("{:<16}{e}", "last error"),
            (None, _) => outln!("{:<16}none (since start)", "last error"),
        }
    }
    match s.disk.free_bytes {
        Some(b) => outln!("{:<16}{}", "disk free", Bytes(b)),
        None => outln!("{:<16}unknown", "disk free"),
    }
    match s.disk.free_inodes {
        Some(i) => outln!("{:<16}{i}", "inodes free"),
        None => outln!("{:<16}not reported by the filesystem", "inodes free"),
    }
    if sp.quarantined_events > 0 {
        outln!("{:<16}{} (corrupt records set aside; run spoolctl verify)", "QUARANTINED", sp.quarantined_events);
    }
    if s.dead_letters_dropped_total > 0 {
        outln!("{:<16}{}", "dlq dropped", s.dead_letters_dropped_total);
    }
    Ok(())
}

fn state_text(state: &State) -> String {
    match state {
        State::Pending => "pending".into(),
        State::Acked { ledger_seq: Some(l), .. } => format!("acked (ledger {l})"),
        State::Acked { .. } => "acked".into(),
        State::Dead { code, .. } => format!("dead ({code})"),
    }
}

/// Prints records: a table, or JSONL (one record object a line; the caller
/// ends a finite list with [`print_summary`]).
pub fn print_records(records: &[Record], json: bool, _follow: bool) -> anyhow::Result<()> {
    if json {
        return print_lines(records);
    }
    print_rows(records, true)
}

/// One JSON value on one line.
pub fn print_line<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// JSONL: each value on its own line.
pub fn print_lines<T: serde::Serialize>(values: &[T]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for v in values {
        serde_json::to_writer(&mut out, v)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// The last line of a `--json` list: `{"summary":{"records":N,"next":SEQ}}`,
/// `next` present only when more records exist (pass it to `--from-seq`).
pub fn print_summary(records: usize, next: Option<u64>) -> anyhow::Result<()> {
    let mut summary = serde_json::json!({"records": records});
    if let Some(n) = next {
        summary["next"] = n.into();
    }
    print_line(&serde_json::json!({ "summary": summary }))
}

pub fn print_rows(records: &[Record], header: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if header {
        writeln!(
            out,
            "{:>10}  {:<20}  {:>8}  {:<20}  {:<10}  {:>14}  {:<8}  ID / REASON",
            "SEQ", "STATE", "ATTEMPTS", "RECEIVED_AT", "KIND", "AMOUNT", "CURRENCY"
        )?;
    }
    for r in records {
        let reason = match &r.state {
            State::Dead { reason, .. } => format!("  {reason}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:>10}  {:<20}  {:>8}  {:<20}  {:<10}  {:>14}  {:<8}  {}{reason}",
            r.seq,
            state_text(&r.state),
            r.attempts,
            short_time(r.received_at),
            r.event.kind.as_str(),
            r.event.amount,
            r.event.currency,
            r.event.id,
        )?;
    }
    out.flush()?;
    Ok(())
}

pub fn print_record(r: &Record) -> anyhow::Result<()> {
    outln!("{:<14}{}", "seq", r.seq);
    outln!("{:<14}{}", "id", r.event.id);
    outln!("{:<14}{}", "state", r.state.name());
    match &r.state {
        State::Pending => {}
        State::Acked { acked_at, ledger_seq } => {
            outln!("{:<14}{}", "acked_at", rfc3339(*acked_at));
            if let Some(l) = ledger_seq {
                outln!("{:<14}{l}", "ledger_seq");
            }
        }
        State::Dead { dead_at, code, reason } => {
            outln!("{:<14}{}", "dead_at", rfc3339(*dead_at));
            outln!("{:<14}{code}", "dead code");
            outln!("{:<14}{reason}", "dead reason");
        }
    }
    outln!("{:<14}{}", "attempts", r.attempts);
    outln!("{:<14}{}", "received_at", rfc3339(r.received_at));
    outln!("{:<14}{}", "node", r.node);
    outln!("event:");
    print_json(&r.event.to_json_value())
}
