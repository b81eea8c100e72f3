//! Incident: the ledger's store is restored from an older backup (issue 15).
//! The edge forwarded and saw acknowledged everything; the restored ledger
//! lacks what came after its backup. `spoolctl reconcile` must name exactly
//! the missing events, and `--requeue` must bring every acknowledged event
//! back to the ledger exactly once.
//!
//! Script: drain `BEFORE` events; stop ledgerd cleanly and copy its sled
//! store (the backup); restart it, drain `AFTER` more; stop it, put the
//! backup back (a consistent older store: no regression is detected, as with
//! a real restore), restart. Then: `reconcile` (report only) lists exactly
//! the `AFTER` ids as missing and exits 1; `reconcile --requeue` requeues
//! them, the spool drains, a third `reconcile` finds everything present, and
//! the ledger holds every acknowledged event exactly once. The audit log has
//! an entry per reconcile and per requeued chunk.
//!
//! Scaled: 2,000 + 1,000 events; `OFFGRID_SLOW_TESTS=1`: 900,000 + 100,000
//! (the goal figure: reconcile of 1M acked events, report and requeue, within
//! 60 s, printed as `reconcile_seconds`).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::ledgerd::{Ledgerd, NODE_TOKEN};
use test_support::spoold::Spoold;
use tokio::task::JoinSet;

use super::{drain, forwarding, post_until_acked, spoold_status, LoadReport, Outcome};

fn slow() -> bool {
    std::env::var("OFFGRID_SLOW_TESTS").is_ok_and(|v| v == "1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Posts events `prefix-first..prefix-(first+n)` with 4 clients in batches of 1,000.
async fn ingest(s: &Spoold, prefix: &str, first: u64, n: u64) -> LoadReport {
    let url = s.url("/v1/events/batch");
    let mut tasks = JoinSet::new();
    let chunks: Vec<(u64, u64)> = (first..first + n).step_by(1000).map(|a| (a, (a + 1000).min(first + n))).collect();
    for part in chunks.chunks(chunks.len().div_ceil(4).max(1)) {
        let (url, prefix, part) = (url.clone(), prefix.to_owned(), part.to_vec());
        tasks.spawn(async move {
            let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
            let mut r = LoadReport::default();
            for (a, b) in part {
                let events = (a..b).map(|i| test_support::events::payment(&prefix, i)).collect();
                r.merge(post_until_acked(&c, &url, events, Instant::now() + Duration::from_secs(120)).await);
            }
            r
        });
    }
    let mut report = LoadReport::default();
    while let Some(r) = tasks.join_next().await {
        report.merge(r.expect("ingest task"));
    }
    report
}

/// Waits until the spool has nothing pending: the scenarios' `drain`, with
/// room for the full size (a million events forwarded by debug builds).
async fn drained(s: &Spoold) {
    if !slow() {
        drain(&[s], Instant::now()).await;
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        let st = spoold_status(s).await;
        if st.as_ref().and_then(|v| v["spool"]["pending_events"].as_u64()) == Some(0) {
            return;
        }
        assert!(Instant::now() < deadline, "not drained: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Reconciled {
    code: Option<i32>,
    findings: Vec<Value>,
    summary: Value,
    seconds: f64,
}

fn reconcile(s: &Spoold, ledger: &Ledgerd, token_file: &Path, requeue: bool) -> Reconciled {
    let mut args = vec![
        "--socket".to_owned(),
        s.admin_socket.display().to_string(),
        "--json".into(),
        "reconcile".into(),
        "--ledger-url".into(),
        ledger.url.clone(),
        "--ledger-token-file".into(),
        token_file.display().to_string(),
    ];
    if requeue {
        args.extend(["--requeue".into(), "--reason".into(), "ledger restored from backup".into()]);
    }
    let t = Instant::now();
    let out = Command::new(test_support::bin_path("spoolctl")).args(&args).output().expect("run spoolctl");
    let seconds = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSONL line")).collect();
    let (summary, findings): (Vec<Value>, Vec<Value>) = lines.into_iter().partition(|v| v.get("summary").is_some());
    assert_eq!(summary.len(), 1, "one summary line: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    Reconciled { code: out.status.code(), findings, summary: summary[0]["summary"].clone(), seconds }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_ledger_restored_from_backup() {
    let (before, after) = if slow() { (900_000u64, 100_000u64) } else { (2_000, 1_000) };
    let mut ledger = Ledgerd::start().await.expect("start ledgerd");
    let s = Spoold::start(forwarding(&[&ledger.url]).spool("acked_retention = \"30d\"")).await.expect("start spoold");
    let token_file = s.dir.path().join("reconcile.token");
    std::fs::write(&token_file, format!("{NODE_TOKEN}\n")).expect("token file");

    let t = Instant::now();
    let mut report = ingest(&s, "restore", 0, before).await;
    drained(&s).await;
    eprintln!("ledger_restored: {before} events ingested and forwarded in {:.1} s", t.elapsed().as_secs_f64());
    // The backup: a clean copy of the ledger's store.
    ledger.terminate().expect("stop ledgerd");
    let store = ledger.dir.join("store");
    let backup = ledger.dir.join("backup");
    copy_dir(&store, &backup);
    ledger.spawn().await.expect("restart ledgerd");
    let later = ingest(&s, "restore", before, after).await;
    let lost: HashSet<String> = later.acked.clone();
    report.merge(later);
    drained(&s).await;
    // The restore: the ledger is back to the backup.
    ledger.terminate().expect("stop ledgerd");
    std::fs::remove_dir_all(&store).expect("remove store");
    std::fs::rename(&backup, &store).expect("restore backup");
    ledger.spawn().await.expect("start the restored ledgerd");

    // Report only: exactly the lost ids are missing; nothing else changes.
    let r = reconcile(&s, &ledger, &token_file, false);
    let named: HashSet<String> = r.findings.iter().map(|f| f["id"].as_str().expect("id").to_owned()).collect();
    assert!(r.findings.iter().all(|f| f["status"] == "missing" && f["requeued"] == false), "{:?}", &r.findings[..3.min(r.findings.len())]);
    assert_eq!(named.len(), r.findings.len(), "each record once");
    assert_eq!(named, lost, "the report names exactly the events the restore lost");
    assert_eq!(r.summary["checked"], before + after);
    assert_eq!((r.summary["present"].as_u64(), r.summary["missing"].as_u64()), (Some(before), Some(after)));
    assert_eq!(r.code, Some(1), "missing events and no --requeue: exit 1");

    // Requeue: the forwarder sends them again; the ledger ends with each once.
    let r = reconcile(&s, &ledger, &token_file, true);
    assert_eq!(r.summary["requeued"], after, "{}", r.summary);
    assert_eq!(r.code, Some(0));
    let reconcile_seconds = r.seconds;
    let since = Instant::now();
    drained(&s).await;
    let drained = since.elapsed();
    let r = reconcile(&s, &ledger, &token_file, false);
    assert!(r.findings.is_empty(), "after the requeue everything is present: {:?}", &r.findings[..3.min(r.findings.len())]);
    assert_eq!((r.summary["present"].as_u64(), r.code), (Some(before + after), Some(0)));

    // The audit log: three reconciles, and the requeued seqs.
    let audit = std::fs::read_to_string(s.spool_dir.join("audit.jsonl")).expect("audit log");
    let entries: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).expect("audit line")).collect();
    assert_eq!(entries.iter().filter(|e| e["action"] == "reconcile").count(), 3);
    let requeued: usize = entries
        .iter()
        .filter(|e| e["action"] == "reconcile_requeue")
        .map(|e| e["seqs"].as_array().expect("seqs").len())
        .sum();
    assert_eq!(requeued as u64, after);

    eprintln!(
        "scenario ledger_restored: acked={} lost_by_restore={} reconcile_seconds={reconcile_seconds:.2} (report + requeue of {} acked events, goal <= 60 s for 1M) resend_drain_ms={}",
        report.acked.len(),
        lost.len(),
        before + after,
        drained.as_millis()
    );
    let scale = format!("{before} events before the backup, {after} after it");
    Outcome::new("ledger_restored", report, drained, "none", scale).check(&ledger).await;
}

/// The same on PostgreSQL: rows of the ledger's table are lost (deleted, as a
/// failover to a lagging replica would); reconcile names exactly them,
/// `--requeue` brings them back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_ledger_pg_rolled_back_reconciled() {
    let schema = crate::ledger_pg::schema("reconcile");
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = format!("{}?schema={schema}", crate::ledger_pg::pg_base());
    let ledger = Ledgerd::start_with(tmp.path(), &url, test_support::free_port()).await.expect("ledgerd on postgres");
    test_support::wait_http_ok(&format!("{}/readyz", ledger.url), Duration::from_secs(10)).await.expect("ready");
    let s = Spoold::start(forwarding(&[&ledger.url])).await.expect("start spoold");
    let token_file = s.dir.path().join("reconcile.token");
    std::fs::write(&token_file, format!("{NODE_TOKEN}\n")).expect("token file");
    let report = ingest(&s, "pgrec", 0, 1_500).await;
    drained(&s).await;
    // The rollback: the last 300 rows the ledger recorded are gone.
    let (client, conn) = tokio_postgres::connect(&crate::ledger_pg::pg_base(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let rows = client
        .query(&format!("DELETE FROM {schema}.ledger_events WHERE ledger_seq > (SELECT max(ledger_seq) - 300 FROM {schema}.ledger_events) RETURNING id"), &[])
        .await
        .expect("delete");
    let lost: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    assert_eq!(lost.len(), 300);

    let r = reconcile(&s, &ledger, &token_file, false);
    let named: HashSet<String> = r.findings.iter().map(|f| f["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(named, lost, "the report names exactly the rows the rollback lost");
    assert_eq!((r.summary["missing"].as_u64(), r.code), (Some(300), Some(1)));
    let r = reconcile(&s, &ledger, &token_file, true);
    assert_eq!(r.summary["requeued"], 300);
    let since = Instant::now();
    drained(&s).await;
    let r = reconcile(&s, &ledger, &token_file, false);
    assert_eq!((r.summary["present"].as_u64(), r.code), (Some(1_500), Some(0)));
    Outcome::new("ledger_pg_rolled_back", report, since.elapsed(), "postgres delete", "1500 events, 300 rows lost".into())
        .check(&ledger)
        .await;
    drop(ledger);
    crate::ledger_pg::drop_schema(&schema).await;
}
