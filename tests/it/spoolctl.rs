//! spoolctl against real spools: every verb offline (`--spool-dir`), online
//! through an admin socket served by `admin::serve_unix`, exit codes, and a
//! locked spool. Needs `cargo build -p spoolctl` first.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};
use spool::{Spool, SpoolConfig};
use spool_format::{Event, Record};

/// What one spoolctl run gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// stdout as JSONL: every line one JSON object.
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l:?} in {self:?}")))
            .collect()
    }

    /// The seqs of a `--json` list, whose last line must be its summary.
    fn seqs(&self) -> Vec<u64> {
        let lines = self.lines();
        let (summary, records) = lines.split_last().unwrap_or_else(|| panic!("no summary line: {self:?}"));
        assert!(summary.get("summary").is_some(), "last line is the summary: {self:?}");
        assert_eq!(summary["summary"]["records"].as_u64(), Some(records.len() as u64), "{self:?}");
        records.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
    }

    /// The `--json` error line on stderr.
    fn json_error(&self) -> Value {
        let v: Value = serde_json::from_str(self.stderr.trim()).unwrap_or_else(|e| panic!("stderr is not one JSON line ({e}): {self:?}"));
        assert_eq!(v["error"]["exit_code"].as_i64(), Some(i64::from(self.code)), "{self:?}");
        v
    }

    #[track_caller]
    fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code; run: {self:#?}");
        self
    }
}

fn spoolctl(args: &[&str]) -> Run {
    let out = Command::new(test_support::bin_path("spoolctl"))
        .args(args)
        .env_remove("SPOOLCTL_SOCKET")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// spoolctl with `--spool-dir dir` in front of `args`.
fn offline(dir: &Path, args: &[&str]) -> Run {
    let d = dir.to_str().unwrap();
    let mut all = vec!["--spool-dir", d];
    all.extend_from_slice(args);
    spoolctl(&all)
}

fn event_json(id: &str, amount: u64) -> Value {
    json!({
        "id": id,
        "kind": "gift",
        "amount": amount,
        "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "recipient": "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0",
        "occurred_at": "2026-11-24T12:00:00Z",
        "item": "Mesh Sofa Deluxe (copy/mod)",
    })
}

/// Creates a spool in `dir` with events `ev-1..=ev-n` at seq 1..=n, the given
/// seqs dead (reason "ledger says no") or acked, and closes it.
async fn make_spool(dir: &Path, n: u64, dead: &[u64], acked: &[u64]) {
    let mut cfg = SpoolConfig::for_dir(dir);
    cfg.node_id = "front-1".into();
    let spool = Spool::open(cfg).unwrap();
    let events: Vec<Event> =
        (1..=n).map(|i| Event::from_json_value(&event_json(&format!("ev-{i}"), i * 100)).unwrap()).collect();
    for r in spool.append_batch(events).await {
        r.unwrap();
    }
    for &seq in dead {
        assert!(spool.mark_dead(seq, 2, "rejected", "ledger says no").unwrap());
    }
    let acks: Vec<(u64, u32, Option<u64>)> = acked.iter().map(|&s| (s, 1, Some(1000 + s))).collect();
    spool.mark_acked(&acks).unwrap();
    spool.wait_durable().await.unwrap();
    spool.close();
}

#[tokio::test]
async fn offline_status_ls_show_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    // Acks are by position: seq 1 acked is durable (the watermark passes it);
    // an ack out of order would be held in memory only.
    make_spool(&dir, 6, &[2, 5], &[1]).await;

    let s = offline(&dir, &["--json", "status"]).expect(0).json();
    assert_eq!((s["spool"]["pending_events"].as_u64(), s["spool"]["dead_events"].as_u64(), s["spool"]["acked_events"].as_u64()), (Some(3), Some(2), Some(1)));
    assert_eq!(s["mode"], "offline");
    assert_eq!(s["node_id"], "front-1", "offline, the node is read from the records");
    assert!(s["spool"]["oldest_pending_at"].is_string());
    let human = offline(&dir, &["status"]).expect(0);
    assert!(human.stdout.contains("pending         3 events"), "{human:?}");
    assert!(human.stdout.contains("dead letters    2"), "{human:?}");
    assert!(human.stdout.contains("offline"), "{human:?}");

    assert_eq!(offline(&dir, &["--json", "ls"]).expect(0).seqs(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(offline(&dir, &["--json", "ls", "--pending"]).expect(0).seqs(), vec![3, 4, 6]);
    assert_eq!(offline(&dir, &["--json", "ls", "--dead"]).expect(0).seqs(), vec![2, 5]);
    assert_eq!(offline(&dir, &["--json", "ls", "--acked"]).expect(0).seqs(), vec![1]);
    assert_eq!(offline(&dir, &["--json", "ls", "--limit", "2", "--from-seq", "3"]).expect(0).seqs(), vec![3, 4]);
    let table = offline(&dir, &["ls", "--limit", "2"]).expect(0);
    assert_eq!(table.stdout.lines().count(), 3, "header and two rows: {table:?}");
    assert!(table.stderr.contains("more records from seq 3"), "{table:?}");
    let dead_table = offline(&dir, &["ls", "--dead"]).expect(0);
    assert!(dead_table.stdout.contains("ledger says no"), "{dead_table:?}");

    let r = offline(&dir, &["--json", "show", "5"]).expect(0).json();
    let rec: Record = serde_json::from_value(r.clone()).unwrap();
    assert_eq!((rec.seq, rec.event.id.as_str(), rec.attempts), (5, "ev-5", 2));
    assert_eq!(r["state"], "dead");
    assert_eq!(r["reason"], "ledger says no");
    let by_id = offline(&dir, &["show", "ev-1"]).expect(0);
    assert!(by_id.stdout.contains("acked"), "{by_id:?}");
    let missing = offline(&dir, &["show", "99"]).expect(1);
    assert!(missing.stderr.contains("no record"), "{missing:?}");
    offline(&dir, &["show", "no-such-id"]).expect(1);

    assert_eq!(offline(&dir, &["--json", "tail", "-n", "2"]).expect(0).seqs(), vec![5, 6]);
}

/// Flips the middle byte of the spool's only block: inside the third of the
/// five records `make_spool` appends in one batch.
fn corrupt_middle_record(dir: &Path) {
    let spool = Spool::open(SpoolConfig::for_dir(dir)).unwrap();
    let db = spool::raw_db(&spool);
    let mut raw = db.get(spool::block_key(1)).unwrap().unwrap().to_vec();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    db.insert(spool::block_key(1), raw).unwrap();
    db.flush().unwrap();
    drop(db);
    spool.close();
}

#[tokio::test]
async fn verify_passes_clean_and_names_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    make_spool(&dir, 5, &[1], &[2]).await;
    let ok = offline(&dir, &["verify"]).expect(0);
    assert!(ok.stdout.contains("verified 5 records: no faults"), "{ok:?}");

    corrupt_middle_record(&dir);
    let bad = offline(&dir, &["verify"]).expect(1);
    assert!(bad.stdout.contains("seq 3:"), "{bad:?}");
    assert!(bad.stdout.contains("checksum"), "{bad:?}");
    assert!(!bad.stdout.contains("seq 4:"), "only the flipped record is named: {bad:?}");
    // JSONL: one fault a line, then the summary.
    let j = offline(&dir, &["--json", "verify"]).expect(1).lines();
    assert_eq!(j.len(), 2, "{j:?}");
    assert_eq!(j[0]["seq"], 3);
    assert_eq!(j[1]["summary"]["faults"], 1);
    assert_eq!(j[1]["summary"]["records"], 5, "records read whole; the flipped one is the fault");
}

#[tokio::test]
async fn export_then_import_into_another_spool_dedupes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    make_spool(&a, 5, &[2, 3], &[]).await;
    make_spool(&b, 0, &[], &[]).await;

    let file = tmp.path().join("export.jsonl");
    let f = file.to_str().unwrap();
    offline(&a, &["export", "-o", f]).expect(0);
    let text = std::fs::read_to_string(&file).unwrap();
    let records: Vec<Record> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert!(!tmp.path().join("export.jsonl.partial").exists());

    let dead_file = tmp.path().join("dead.jsonl");
    offline(&a, &["export", "--state", "dead", "-o", dead_file.to_str().unwrap()]).expect(0);
    assert_eq!(std::fs::read_to_string(&dead_file).unwrap().lines().count(), 2);
    let future = tmp.path().join("future.jsonl");
    offline(&a, &["export", "--since", "2999-01-01T00:00:00Z", "-o", future.to_str().unwrap()]).expect(0);
    assert_eq!(std::fs::read_to_string(&future).unwrap().lines().count(), 0);
    let recent = tmp.path().join("recent.jsonl");
    offline(&a, &["export", "--since", "1h", "-o", recent.to_str().unwrap()]).expect(0);
    assert_eq!(std::fs::read_to_string(&recent).unwrap().lines().count(), 5);
    offline(&a, &["export", "--since", "yesterday-ish", "-o", recent.to_str().unwrap()]).expect(2);

    // Offline import must name the node it stamps on records.
    offline(&b, &["import", f]).expect(2);
    // By default only the pending records come back; the dead ones are counted, not re-spooled.
    let first = offline(&b, &["--node-id", "front-2", "--json", "import", f]).expect(0).json();
    assert_eq!((first["accepted"].as_u64(), first["skipped_dead"].as_u64(), first["skipped_acked"].as_u64()), (Some(3), Some(2), Some(0)), "{first}");
    let human = offline(&b, &["--node-id", "front-2", "import", f]).expect(0);
    assert!(human.stdout.contains("skipped 0 acked and 2 dead record(s)"), "{human:?}");
    let first = offline(&b, &["--node-id", "front-2", "--json", "import", "--include-dead", f]).expect(0).json();
    assert_eq!((first["accepted"].as_u64(), first["duplicate"].as_u64(), first["skipped_dead"].as_u64()), (Some(2), Some(3), Some(0)), "{first}");
    let again = offline(&b, &["--node-id", "front-2", "import", "--include-dead", f]).expect(0);
    assert!(again.stdout.contains("accepted 0, duplicate 5"), "{again:?}");
    let s = offline(&b, &["--json", "status"]).expect(0).json();
    assert_eq!(s["spool"]["pending_events"], 5);
    let imported: Record = serde_json::from_value(offline(&b, &["--json", "show", "ev-3"]).expect(0).json()).unwrap();
    assert_eq!(imported.event, records[2].event, "the event survives the round trip byte for byte");
    assert_eq!(imported.node, "front-2");

    // A file with a conflict, an invalid event and a non-JSON line: exit 1, every line accounted for.
    let mut conflicting = event_json("ev-1", 1);
    conflicting["amount"] = json!(7);
    let mixed = [
        serde_json::to_string(&event_json("fresh-1", 42)).unwrap(),
        serde_json::to_string(&conflicting).unwrap(),
        r#"{"id":"broken","kind":"purchase","amount":"12"}"#.to_owned(),
        "this is not json".to_owned(),
        r#"{"id":"dup-1","kind":"gift","amount":5,"amount":500,"currency":"L$","payer":"9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d","payee":"2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b","occurred_at":"2026-11-24T12:00:00Z"}"#.to_owned(),
    ]
    .join("\n");
    let mixed_file = tmp.path().join("mixed.jsonl");
    std::fs::write(&mixed_file, mixed).unwrap();
    let rep = offline(&b, &["--node-id", "front-2", "import", mixed_file.to_str().unwrap()]).expect(1);
    assert!(rep.stdout.contains("accepted 1, duplicate 0, conflict 1, invalid 3, failed 0"), "{rep:?}");
    assert!(rep.stdout.contains("line 2: conflict (id ev-1)"), "{rep:?}");
    assert!(rep.stdout.contains("line 3: invalid"), "{rep:?}");
    assert!(rep.stdout.contains("line 4: invalid: not JSON"), "{rep:?}");
    assert!(rep.stdout.contains("line 5: invalid: not JSON: duplicate key \"amount\""), "{rep:?}");
    offline(&b, &["show", "dup-1"]).expect(1);
}

#[tokio::test]
async fn import_sends_chunks_of_at_most_1000() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    make_spool(&dir, 0, &[], &[]).await;
    let lines: Vec<String> =
        (0..2500).map(|i| serde_json::to_string(&event_json(&format!("bulk-{i}"), 5)).unwrap()).collect();
    let file = tmp.path().join("bulk.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let rep = offline(&dir, &["--node-id", "n", "--json", "import", file.to_str().unwrap()]).expect(0).json();
    assert_eq!(rep["accepted"], 2500);
    let s = offline(&dir, &["--json", "status"]).expect(0).json();
    assert_eq!(s["spool"]["pending_events"], 2500);
}

#[tokio::test]
async fn dlq_ls_retry_and_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    make_spool(&dir, 6, &[2, 4, 5], &[]).await;

    assert_eq!(offline(&dir, &["--json", "dlq", "ls"]).expect(0).seqs(), vec![2, 4, 5]);
    let human = offline(&dir, &["dlq", "ls"]).expect(0);
    assert!(human.stdout.contains("dead (rejected)") && human.stdout.contains("ledger says no"), "{human:?}");

    let refused = offline(&dir, &["dlq", "drop", "2"]).expect(2);
    assert!(refused.stderr.contains("--yes"), "{refused:?}");
    assert_eq!(offline(&dir, &["--json", "dlq", "ls"]).expect(0).seqs(), vec![2, 4, 5], "nothing dropped without --yes");

    let dropped = offline(&dir, &["dlq", "drop", "2", "--yes"]).expect(0);
    assert!(dropped.stdout.contains("dropped dead letter 2 (id ev-2)"), "{dropped:?}");
    assert!(dropped.stderr.contains("WARN") && dropped.stderr.contains("dead letter dropped"), "{dropped:?}");
    offline(&dir, &["show", "2"]).expect(1);
    // Not a dead letter: pending records are never dropped.
    offline(&dir, &["dlq", "drop", "1", "--yes"]).expect(1);
    offline(&dir, &["show", "1"]).expect(0);

    offline(&dir, &["dlq", "retry", "ev-4"]).expect(0);
    let r = offline(&dir, &["--json", "show", "4"]).expect(0).json();
    assert_eq!((r["state"].as_str(), r["attempts"].as_u64()), (Some("pending"), Some(0)));
    offline(&dir, &["dlq", "retry", "1"]).expect(1);
    let all = offline(&dir, &["--json", "dlq", "retry", "--all"]).expect(0).json();
    assert_eq!(all["requeued"], json!([5]));
    assert_eq!(offline(&dir, &["--json", "dlq", "ls"]).expect(0).seqs(), Vec::<u64>::new());
    offline(&dir, &["dlq", "retry"]).expect(2);
}

#[tokio::test]
async fn locked_spool_exits_3_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    make_spool(&dir, 1, &[], &[]).await;
    let held = Spool::open(SpoolConfig::for_dir(&dir)).unwrap();
    let r = offline(&dir, &["status"]).expect(3);
    assert!(r.stderr.contains("locked") && r.stderr.contains("spoold is probably running"), "{r:?}");
    assert!(r.stderr.contains("--socket"), "{r:?}");
    held.close();
    drop(held);
    offline(&dir, &["status"]).expect(0);
    // SPOOLCTL_SOCKET is only a default: --spool-dir still works with it set.
    let out = Command::new(test_support::bin_path("spoolctl"))
        .args(["--spool-dir", dir.to_str().unwrap(), "status"])
        .env("SPOOLCTL_SOCKET", tmp.path().join("elsewhere.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // …and is used when neither flag is given.
    let out = Command::new(test_support::bin_path("spoolctl"))
        .arg("status")
        .env("SPOOLCTL_SOCKET", tmp.path().join("elsewhere.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("elsewhere.sock"));
    // No spool at all, and no daemon: also 3.
    offline(&tmp.path().join("nothing-here"), &["status"]).expect(3);
    spoolctl(&["--socket", tmp.path().join("no.sock").to_str().unwrap(), "status"]).expect(3);
}

#[test]
fn usage_errors_exit_2() {
    spoolctl(&["ls", "--pending", "--dead"]).expect(2);
    spoolctl(&["show"]).expect(2);
    spoolctl(&["export"]).expect(2);
    spoolctl(&["frobnicate"]).expect(2);
    spoolctl(&["--socket", "/x", "--spool-dir", "/y", "status"]).expect(2);
    spoolctl(&["--spool-dir", "/nonexistent-spool-dir", "import", "/nonexistent-file"]).expect(2);
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let c = spoolctl(&["completions", shell]).expect(0);
        for verb in ["status", "export", "import", "verify", "dlq"] {
            assert!(c.stdout.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let man = spoolctl(&["man"]).expect(0);
    assert!(man.stdout.starts_with(".ie") || man.stdout.contains(".TH spoolctl"), "not roff: {}", &man.stdout[..200.min(man.stdout.len())]);
    for word in ["spool\\-dir", "verify", "dlq", "Exit codes"] {
        assert!(man.stdout.contains(word), "man page lacks {word}");
    }
}

fn extra_status() -> admin::ExtraStatus {
    Arc::new(|| common::status::DaemonStatus {
        draining: false,
        commit_seconds_total: 0.0,
        ledger: common::status::LedgerStatus {
            forwarding: true,
            up: Some(false),
            last_error: Some("ledger http://127.0.0.1:1: connection refused".into()),
            last_error_at: Some(spool_format::OffsetDateTime::now_utc() - std::time::Duration::from_secs(125)),
            last_success_at: None,
            current_url: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        },
    })
}

/// Runs spoolctl off the async workers so the in-process server keeps serving.
async fn online(socket: &Path, args: &[&str]) -> Run {
    let mut all: Vec<String> = vec!["--socket".into(), socket.to_str().unwrap().into()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        spoolctl(&refs)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_verbs_through_the_admin_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    make_spool(&dir, 4, &[3], &[]).await;
    let mut cfg = SpoolConfig::for_dir(&dir);
    cfg.node_id = "front-1".into();
    let spool = Spool::open(cfg).unwrap();
    let socket: PathBuf = tmp.path().join("admin.sock");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn({
        let (socket, spool) = (socket.clone(), spool.clone());
        async move { admin::serve_unix(&socket, spool, extra_status(), rx).await }
    });
    while !socket.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let s = online(&socket, &["--json", "status"]).await.expect(0).json();
    assert_eq!((s["spool"]["pending_events"].as_u64(), s["spool"]["dead_events"].as_u64()), (Some(3), Some(1)));
    assert_eq!((s["ledger"]["up"].as_bool(), s["mode"].as_str()), (Some(false), Some("online")));
    assert!(s["ledger"]["last_error_at"].is_string() && s["generated_at"].is_string(), "{s}");
    let human = online(&socket, &["status"]).await.expect(0);
    assert!(human.stdout.contains("ledger          DOWN (http://127.0.0.1:1)"), "{human:?}");
    // The last error comes with its age, so a stale one is seen as stale.
    assert!(human.stdout.contains("last error      2m 5s ago: ledger http://127.0.0.1:1: connection refused")
        || human.stdout.contains("last error      2m 6s ago: ledger http://127.0.0.1:1: connection refused"), "{human:?}");
    assert!(human.stdout.contains("last success    never (since start)"), "{human:?}");
    assert_eq!(online(&socket, &["--json", "ls", "--pending"]).await.expect(0).seqs(), vec![1, 2, 4]);
    online(&socket, &["verify"]).await.expect(0);
    online(&socket, &["show", "404"]).await.expect(1);

    // The daemon holds the spool: offline access is refused with exit 3 while online works.
    offline(&dir, &["status"]).expect(3);

    let file = tmp.path().join("e.jsonl");
    std::fs::write(&file, serde_json::to_string(&event_json("online-1", 9)).unwrap() + "\n").unwrap();
    let rep = online(&socket, &["--json", "import", file.to_str().unwrap()]).await.expect(0).json();
    assert_eq!(rep["accepted"], 1);
    assert_eq!(spool.lookup("online-1").unwrap().unwrap().node, "front-1");

    online(&socket, &["dlq", "drop", "3"]).await.expect(2);
    online(&socket, &["dlq", "drop", "3", "--yes"]).await.expect(0);
    assert!(spool.get(3).unwrap().is_none());
    assert_eq!(spool.stats().unwrap().dead_events, 0);

    // tail -f prints the newest record, then follows new ones as they come.
    let mut child = Command::new(test_support::bin_path("spoolctl"))
        .args(["--socket", socket.to_str().unwrap(), "--json", "tail", "-f", "-n", "1", "--interval", "50ms"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let next_seq = |line: Option<String>| -> u64 {
        let v: Value = serde_json::from_str(&line.expect("tail -f line")).unwrap();
        v["seq"].as_u64().unwrap()
    };
    let wait = std::time::Duration::from_secs(20);
    assert_eq!(next_seq(tokio::time::timeout(wait, line_rx.recv()).await.unwrap()), 5);
    spool.append(Event::from_json_value(&event_json("followed-1", 1)).unwrap()).await.unwrap();
    assert_eq!(next_seq(tokio::time::timeout(wait, line_rx.recv()).await.unwrap()), 6);
    child.kill().unwrap();
    child.wait().unwrap();

    tx.send(true).unwrap();
    server.await.unwrap().unwrap();
    online(&socket, &["status"]).await.expect(3);
}

/// The real daemon: spoolctl reaches spoold's admin socket, sees what was
/// ingested over HTTP, and the spool directory is refused while spoold runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_against_a_running_spoold() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("spoold.tokens");
    std::fs::write(&tokens, "ops:spoolctl-test-secret-0123456789\n").unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let socket = tmp.path().join("run/admin.sock");
    let dir = tmp.path().join("spool");
    let port = test_support::free_port();
    let args: Vec<String> = [
        "--listen", &format!("127.0.0.1:{port}"),
        "--admin-socket", socket.to_str().unwrap(),
        "--spool-dir", dir.to_str().unwrap(),
        "--tokens-file", tokens.to_str().unwrap(),
        "--node-id", "front-7",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut daemon = test_support::DaemonProcess::spawn("spoold", &args, &tmp.path().join("spoold.log")).unwrap();
    test_support::wait_http_ok(&format!("http://127.0.0.1:{port}/readyz"), std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    for i in 1..=3 {
        let r = client
            .post(format!("http://127.0.0.1:{port}/v1/events"))
            .bearer_auth("spoolctl-test-secret-0123456789")
            .json(&event_json(&format!("live-{i}"), 10 * i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "admin socket mode");

    let s = online(&socket, &["--json", "status"]).await.expect(0).json();
    assert_eq!((s["spool"]["pending_events"].as_u64(), s["node_id"].as_str()), (Some(3), Some("front-7")));
    // The admin status and GET /v1/status are one document.
    let http: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/status"))
        .bearer_auth("spoolctl-test-secret-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&http), keys(&s), "same top-level keys");
    assert_eq!(keys(&http["spool"]), keys(&s["spool"]));
    assert_eq!(keys(&http["ledger"]), keys(&s["ledger"]));
    assert_eq!((http["mode"].as_str(), http["ready"].as_bool()), (Some("online"), Some(true)));
    assert_eq!(online(&socket, &["--json", "ls", "--pending"]).await.expect(0).seqs(), vec![1, 2, 3]);
    let r = online(&socket, &["--json", "show", "live-2"]).await.expect(0).json();
    assert_eq!((r["seq"].as_u64(), r["event"]["amount"].as_u64()), (Some(2), Some(20)));
    online(&socket, &["verify"]).await.expect(0);
    let locked = offline(&dir, &["status"]).expect(3);
    assert!(locked.stderr.contains("spoold is probably running"), "{locked:?}");

    let status = daemon.terminate(std::time::Duration::from_secs(20)).unwrap();
    assert!(status.success(), "spoold exit: {status:?}");
    assert!(!socket.exists(), "spoold removes its admin socket at shutdown");
    online(&socket, &["status"]).await.expect(3);
    // Stopped: the same spool now opens offline, with everything in it.
    let s = offline(&dir, &["--json", "status"]).expect(0).json();
    assert_eq!(s["spool"]["pending_events"], 3);
}

/// `spoolctl ls | head -1`: a closed pipe ends spoolctl quietly with 0, no panic.
#[tokio::test]
async fn a_closed_pipe_is_not_an_error() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    // ~2,000 table rows of ~140 bytes: far more than a pipe buffer (64 KiB).
    make_spool(&dir, 2000, &[], &[]).await;
    let mut child = Command::new(test_support::bin_path("spoolctl"))
        .args(["--spool-dir", dir.to_str().unwrap(), "ls", "--limit", "2000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("SEQ"), "{first}");
    // The reader is dropped here, closing the pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--json` is for scripts: lists are JSONL ending with a summary that carries
/// `next` when more exist; errors are one JSON line; a record is named
/// unambiguously (`seq:N` / `id:X`), and a bare number that is one record's
/// seq and another's id is refused, not guessed; file errors exit 1.
#[tokio::test]
async fn json_lists_errors_and_unambiguous_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    make_spool(&dir, 4, &[2], &[]).await;
    // An event whose id is "3" while seq 3 is another event (ev-3).
    {
        let mut cfg = SpoolConfig::for_dir(&dir);
        cfg.node_id = "front-1".into();
        let spool = Spool::open(cfg).unwrap();
        spool.append(Event::from_json_value(&event_json("3", 77)).unwrap()).await.unwrap();
        spool.wait_durable().await.unwrap();
        spool.close();
    }

    // A page with more behind it says where to go on; the last page does not.
    let page = offline(&dir, &["--json", "ls", "--limit", "2"]).expect(0);
    assert_eq!(page.seqs(), vec![1, 2]);
    assert_eq!(page.lines().last().unwrap()["summary"]["next"], 3, "{page:?}");
    let rest = offline(&dir, &["--json", "ls", "--from-seq", "3"]).expect(0);
    assert_eq!(rest.seqs(), vec![3, 4, 5]);
    assert!(rest.lines().last().unwrap()["summary"].get("next").is_none(), "{rest:?}");
    assert_eq!(offline(&dir, &["--json", "tail", "-n", "2"]).expect(0).seqs(), vec![4, 5]);
    assert_eq!(offline(&dir, &["--json", "dlq", "ls"]).expect(0).seqs(), vec![2]);

    // seq: and id: are unambiguous; the bare "3" is both, so it is refused.
    assert_eq!(offline(&dir, &["--json", "show", "seq:3"]).expect(0).json()["event"]["id"], "ev-3");
    assert_eq!(offline(&dir, &["--json", "show", "id:3"]).expect(0).json()["seq"], 5);
    let amb = offline(&dir, &["--json", "show", "3"]).expect(2);
    let e = amb.json_error();
    assert_eq!(e["error"]["code"], "invalid_request", "{amb:?}");
    assert!(e["error"]["message"].as_str().unwrap().contains("seq:3 or id:3"), "{amb:?}");
    assert!(amb.stdout.is_empty(), "nothing on stdout: {amb:?}");
    let plain = offline(&dir, &["show", "3"]).expect(2);
    assert!(plain.stderr.contains("ambiguous"), "{plain:?}");
    // A bare key with one meaning still works.
    assert_eq!(offline(&dir, &["--json", "show", "4"]).expect(0).json()["seq"], 4);
    assert_eq!(offline(&dir, &["--json", "show", "ev-1"]).expect(0).json()["seq"], 1);
    // dlq verbs resolve the same way: "3" is ambiguous, seq:2 is the dead letter.
    offline(&dir, &["dlq", "drop", "3", "--yes"]).expect(2);
    offline(&dir, &["dlq", "retry", "id:3"]).expect(1); // a pending record is not a dead letter
    offline(&dir, &["dlq", "retry", "seq:2"]).expect(0);
    offline(&dir, &["show", "seq:x"]).expect(2);

    // Errors under --json are JSON, with the exit code of SPEC §6.
    let nf = offline(&dir, &["--json", "show", "id:nope"]).expect(1);
    assert_eq!(nf.json_error()["error"]["code"], "not_found");
    let usage = spoolctl(&["--json", "ls", "--limit", "0"]).expect(2);
    assert_eq!(usage.json_error()["error"]["code"], "usage");
    let unreachable = spoolctl(&["--json", "--socket", "/nonexistent/admin.sock", "status"]).expect(3);
    assert_eq!(unreachable.json_error()["error"]["code"], "unreachable");
    // An unreadable import file or an unwritable export is a failed operation (1), not usage (2).
    let missing = offline(&dir, &["--node-id", "n", "--json", "import", "/nonexistent/file.jsonl"]).expect(1);
    assert!(missing.json_error()["error"]["message"].as_str().unwrap().contains("cannot open"), "{missing:?}");
    offline(&dir, &["export", "-o", "/nonexistent/dir/out.jsonl"]).expect(1);
}

/// `dlq retry` through the real spoold wakes the forwarder at once (it asks for
/// a rescan from the start, which a busy forwarder otherwise does every 5 s):
/// the requeued record is sent again, and refused again, within 2.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_retry_wakes_the_forwarder_at_once() {
    use test_support::ledgerd::{Ledgerd, NODE_TOKEN};
    use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN};
    let ledger = Ledgerd::start().await.unwrap();
    // The ledger already holds id "clash" with another amount: spoold's event conflicts.
    let pre = json!({"node": "other", "events": [{"seq": 1, "received_at": "2026-11-24T12:00:01Z", "event": event_json("clash", 1)}]});
    let r = reqwest::Client::new().post(format!("{}/v1/batches", ledger.url)).bearer_auth(NODE_TOKEN).json(&pre).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut opts = SpooldOptions::default().forward_to(&ledger.url, NODE_TOKEN);
    opts.args = vec!["--log-level".into(), "forwarder=debug,info".into()];
    let s = Spoold::start(opts).await.unwrap();
    let r = reqwest::Client::new().post(s.url("/v1/events")).bearer_auth(TEST_TOKEN).json(&event_json("clash", 2)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let socket = s.admin_socket.clone();
    let show = || {
        let socket = socket.clone();
        async move { online(&socket, &["--json", "show", "id:clash"]).await.expect(0).json() }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let first = loop {
        let r = show().await;
        if r["state"] == "dead" {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(first["code"], "conflict", "{first}");
    let first_dead_at = first["dead_at"].as_str().unwrap().to_owned();
    // Let the forwarder settle into idle polling past the record.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let retried = std::time::Instant::now();
    assert!(!s.log().contains("rescan requested"), "no rescan before the retry");
    online(&socket, &["dlq", "retry", "id:clash"]).await.expect(0);
    assert!(s.log().contains("rescan requested"), "dlq retry must wake the forwarder: {}", s.log());
    loop {
        let r = show().await;
        if r["state"] == "dead" && r["dead_at"].as_str() != Some(first_dead_at.as_str()) {
            break;
        }
        assert!(
            retried.elapsed() < std::time::Duration::from_millis(2500),
            "the retried dead letter was not sent again within 2.5 s (rescan is 5 s): {r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The admin protocol is versioned: the real spoold answers a `hello` of
/// another version, and any request before `hello` (a spoolctl from before
/// versioning), with `version_mismatch` naming both versions; spoolctl of the
/// same release says hello and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_protocol_version_mismatch_is_named() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let s = test_support::spoold::Spoold::start(Default::default()).await.unwrap();
    let ask = |lines: &'static str| {
        let socket = s.admin_socket.clone();
        async move {
            let mut raw = tokio::net::UnixStream::connect(&socket).await.unwrap();
            raw.write_all(lines.as_bytes()).await.unwrap();
            let mut rd = tokio::io::BufReader::new(raw).lines();
            let line = rd.next_line().await.unwrap().unwrap();
            serde_json::from_str::<Value>(&line).unwrap()
        }
    };
    let old = ask("{\"verb\":\"status\"}\n").await;
    assert_eq!((old["ok"].as_bool(), old["code"].as_str()), (Some(false), Some("version_mismatch")), "{old}");
    let msg = old["error"].as_str().unwrap();
    assert!(msg.contains("admin protocol 1") && msg.contains("speaks version 2") && msg.contains("spoold 0."), "{msg}");
    let future = ask("{\"verb\":\"hello\",\"protocol\":3,\"client\":\"spoolctl 9.0.0\"}\n").await;
    assert_eq!(future["code"], "version_mismatch", "{future}");
    let msg = future["error"].as_str().unwrap();
    assert!(msg.contains("client speaks version 3") && msg.contains("speaks version 2"), "{msg}");
    let same = ask("{\"verb\":\"hello\",\"protocol\":2,\"client\":\"test\"}\n").await;
    assert_eq!((same["ok"].as_bool(), same["data"]["protocol"].as_u64()), (Some(true), Some(2)), "{same}");
    online(&s.admin_socket, &["status"]).await.expect(0);
}

/// `spoolctl top --once --json` against the real spoold forwarding to ledgerd
/// under load: one frame with non-zero ingest, forward and commit rates, the
/// depth and the ledger up; offline it still gives the spool's side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_json_shows_rates_under_load() {
    use test_support::ledgerd::{Ledgerd, NODE_TOKEN};
    use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN};
    let ledger = Ledgerd::start().await.unwrap();
    let s = Spoold::start(SpooldOptions::default().forward_to(&ledger.url, NODE_TOKEN)).await.unwrap();
    let url = s.url("/v1/events");
    let load = tokio::spawn(async move {
        let c = reqwest::Client::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut i = 0u64;
        while std::time::Instant::now() < until {
            i += 1;
            let r = c.post(&url).bearer_auth(TEST_TOKEN).json(&event_json(&format!("top-{i}"), i)).send().await.unwrap();
            assert_eq!(r.status(), 202);
        }
        i
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let run = online(&s.admin_socket, &["--json", "top", "--once", "--interval", "1s"]).await.expect(0);
    let f = run.json();
    let posted = load.await.unwrap();
    assert!(posted > 5, "the load ran: {posted}");
    assert!(f["ingest_events_per_second"].as_f64().unwrap() > 1.0, "{f}");
    assert!(f["forward_events_per_second"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["commits_per_second"].as_f64().unwrap() > 0.0, "{f}");
    let ms = f["commit_latency_ms"].as_f64().unwrap();
    assert!(ms > 0.0 && ms < 5000.0, "mean commit latency: {f}");
    assert_eq!((f["ledger_forwarding"].as_bool(), f["ledger_up"].as_bool()), (Some(true), Some(true)), "{f}");
    assert!((0.9..3.0).contains(&f["interval_seconds"].as_f64().unwrap()), "{f}");
    let human = online(&s.admin_socket, &["top", "--once", "--interval", "100ms"]).await.expect(0);
    for word in ["ingest", "forward", "commits", "depth", "oldest pending", "ledger          up"] {
        assert!(human.stdout.contains(word), "{word}: {human:?}");
    }
}

/// Every `dlq drop` and `dlq retry` writes an audit entry (who, when, which
/// record, why; a drop keeps the event) before it acts; the entries survive
/// closing and reopening the spool, offline and online, and `dlq audit` lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_actions_leave_a_durable_audit_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    make_spool(&dir, 5, &[2, 3, 4], &[]).await;
    assert!(offline(&dir, &["dlq", "audit"]).expect(0).stdout.contains("no audit entries"));

    // Offline: a drop with a reason, a retry without one.
    offline(&dir, &["dlq", "drop", "seq:2", "--yes", "--reason", "TICKET-7: duplicate of ev-1"]).expect(0);
    offline(&dir, &["dlq", "retry", "id:ev-3"]).expect(0);
    // A refused action (not a dead letter) leaves no entry.
    offline(&dir, &["dlq", "drop", "seq:1", "--yes"]).expect(1);

    // Online, through the real spoold on the same spool, which is then stopped.
    let opts = test_support::spoold::SpooldOptions { spool_dir: Some(dir.clone()), ..Default::default() };
    let mut daemon = test_support::spoold::Spoold::start(opts).await.unwrap();
    online(&daemon.admin_socket, &["dlq", "retry", "seq:4", "--reason", "ledger fixed"]).await.expect(0);
    let online_view = online(&daemon.admin_socket, &["--json", "dlq", "audit"]).await.expect(0).lines();
    assert_eq!(online_view.len(), 4, "three entries and the summary: {online_view:?}");
    assert!(daemon.terminate(std::time::Duration::from_secs(20)).unwrap().success());

    // Reopened offline (once the server's last connection task let go of the
    // spool): all three, in order, with who, what and why.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let run = loop {
        let r = offline(&dir, &["--json", "dlq", "audit"]);
        if r.code != 3 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let lines = run.expect(0).lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let (drop, retry, retry_online) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!((drop["action"].as_str(), drop["seq"].as_u64(), drop["id"].as_str()), (Some("dlq_drop"), Some(2), Some("ev-2")));
    assert_eq!(drop["reason"], "TICKET-7: duplicate of ev-1");
    assert_eq!(drop["dead_code"], "rejected");
    assert_eq!(drop["event"]["id"], "ev-2", "a dropped event is kept in the audit log: {drop}");
    assert!(drop["by"].as_str().unwrap().contains("uid ") && drop["by"].as_str().unwrap().contains("offline"), "{drop}");
    assert!(drop["at"].is_string());
    assert_eq!((retry["action"].as_str(), retry["seq"].as_u64(), retry["reason"].is_null()), (Some("dlq_retry"), Some(3), true));
    assert!(retry["event"].is_null(), "a retry keeps the event in the spool, not in the log");
    assert_eq!((retry_online["action"].as_str(), retry_online["seq"].as_u64()), (Some("dlq_retry"), Some(4)));
    assert!(!retry_online["by"].as_str().unwrap().contains("offline"), "online: the socket peer's uid: {retry_online}");
    assert_eq!(lines[3]["summary"]["records"], 3);
    let human = offline(&dir, &["dlq", "audit"]).expect(0);
    assert!(human.stdout.contains("dlq_drop") && human.stdout.contains("reason: TICKET-7"), "{human:?}");
    // The log sits beside the spool and is not a fault to verify.
    offline(&dir, &["verify"]).expect(0);
}

/// Bytes flipped anywhere in sled's files of a 20,000-record spool:
/// `spoolctl verify` exits 1 with a named fault, or 0 when every record still
/// reads back intact (a flip in space sled no longer uses). Never a panic
/// (exit 101), never a raw `Debug` dump of sled's internals.
#[tokio::test]
async fn verify_names_flips_anywhere_in_sleds_files() {
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    make_spool(&template, 20_000, &[], &[]).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20_261_202);
    let (mut named, mut intact) = (0, 0);
    for round in 0..10 {
        let dir = tmp.path().join(format!("r{round}"));
        let cp = Command::new("cp").arg("-a").arg(&template).arg(&dir).status().unwrap();
        assert!(cp.success());
        let db = dir.join("sled/db");
        let mut bytes = std::fs::read(&db).unwrap();
        for _ in 0..3 {
            let i = rng.gen_range(0..bytes.len());
            bytes[i] ^= 1 << rng.gen_range(0..8);
        }
        std::fs::write(&db, &bytes).unwrap();
        let run = offline(&dir, &["verify"]);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(!all.contains("Inline(") && !all.contains("panicked"), "round {round}: {run:?}");
        match run.code {
            1 => {
                assert!(all.contains("fault") || all.contains("damaged") || all.contains("checksum"), "round {round}: {run:?}");
                named += 1;
            }
            0 => {
                // Nothing reported: then every record is there, intact.
                assert!(run.stdout.contains("verified 20000 records: no faults"), "round {round}: {run:?}");
                intact += 1;
            }
            other => panic!("round {round}: exit {other}: {run:?}"),
        }
    }
    eprintln!("sled file flips: {named} named a fault (exit 1), {intact} left every record intact (exit 0)");
}
