//! The real binaries end to end: events posted to spoold reach ledgerd exactly
//! once through random 500s, a partition, a dead first ledger URL, a SIGKILL of
//! spoold mid-forwarding and a SIGKILL of ledgerd.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_support::ledgerd::{Ledgerd, NODE_TOKEN};
use test_support::proxy::{Mode, Proxy};
use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN};

fn event(id: &str) -> Value {
    json!({
        "id": id, "kind": "purchase", "amount": 250, "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "occurred_at": "2026-11-24T12:00:00Z"
    })
}

async fn post_batch(s: &Spoold, ids: &[String]) {
    let body = Value::Array(ids.iter().map(|id| event(id)).collect());
    let r = reqwest::Client::new()
        .post(s.url("/v1/events/batch"))
        .bearer_auth(TEST_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("post batch");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    for res in v["results"].as_array().expect("results") {
        assert_eq!(res["http_status"], 202, "{res}");
    }
}

async fn status(s: &Spoold) -> Value {
    let r = reqwest::Client::new().get(s.url("/v1/status")).bearer_auth(TEST_TOKEN).send().await.expect("status");
    r.json().await.expect("status json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_spoold_to_ledgerd_exactly_once_through_faults_and_sigkills() {
    let mut ledger = Ledgerd::start().await.expect("start ledgerd");
    let proxy = Proxy::start(format!("127.0.0.1:{}", ledger.port).parse().expect("addr")).await.expect("proxy");
    proxy.set_mode(Mode::Http500 { percent: 30 });
    let dead = format!("http://127.0.0.1:{}", test_support::free_port());
    let mut opts = SpooldOptions::default()
        .ledger("batch_events_max = 40")
        .ledger("request_timeout = \"700ms\"")
        .retry("initial = \"20ms\"")
        .retry("max = \"300ms\"");
    opts.forward_to = Some((vec![dead, proxy.url()], NODE_TOKEN.to_owned()));
    let mut s = Spoold::start(opts).await.expect("start spoold");

    let ids: Vec<String> = (0..600).map(|i| format!("e2e-{i}")).collect();
    for chunk in ids[..300].chunks(100) {
        post_batch(&s, chunk).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    // spoold dies mid-forwarding: whatever was sent but not yet marked acked is
    // sent again after the restart; the ledger answers duplicate.
    s.kill9();
    s.restart().await.expect("restart spoold");
    proxy.set_mode(Mode::Partition);
    for chunk in ids[300..].chunks(100) {
        post_batch(&s, chunk).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = status(&s).await;
    assert!(st["spool"]["pending_events"].as_u64().unwrap_or(0) > 0, "partitioned: events wait in the spool: {st}");
    proxy.set_mode(Mode::Pass);
    tokio::time::sleep(Duration::from_millis(100)).await;
    ledger.kill9();
    tokio::time::sleep(Duration::from_millis(200)).await;
    ledger.spawn().await.expect("restart ledgerd");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(&s).await;
        if st["spool"]["pending_events"] == 0 {
            assert_eq!(st["dead_letters"], 0, "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "not drained: {st}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = ledger.all_events().await.expect("ledger events");
    let seen: HashSet<&str> = all.iter().filter_map(|e| e["event"]["id"].as_str()).collect();
    assert_eq!(all.len(), 600, "each event once at the ledger");
    assert_eq!(seen.len(), 600);
    assert!(ids.iter().all(|id| seen.contains(id.as_str())));
    assert!(all.iter().all(|e| e["node"] == "test-node"));
    let metrics = reqwest::get(s.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("spoold_ledger_up 1"), "{metrics}");
    assert!(metrics.contains("spoold_forward_retries_total"), "{metrics}");
}

/// `spoold_ledger_up` of a node with nothing to forward follows the ledger:
/// 1 while ledgerd runs, 0 soon after it dies, 1 again when it is back (the
/// forwarder probes `/readyz` while idle), and the probe's failure is the
/// status's last error, with its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_up_follows_an_idle_ledger() {
    async fn ledger_up(s: &Spoold) -> Option<i64> {
        let text = reqwest::get(s.url("/metrics")).await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix("spoold_ledger_up ")).and_then(|v| v.trim().parse().ok())
    }
    async fn wait_up(s: &Spoold, want: i64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if ledger_up(s).await == Some(want) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
    let mut ledger = Ledgerd::start().await.expect("start ledgerd");
    let s = Spoold::start(SpooldOptions::default().forward_to(&ledger.url, NODE_TOKEN)).await.expect("start spoold");
    assert!(wait_up(&s, 1).await, "idle node, ledger up: spoold_ledger_up must be 1; log:\n{}", s.log());
    ledger.kill9();
    assert!(wait_up(&s, 0).await, "ledger killed: spoold_ledger_up must drop to 0 with nothing to forward");
    let st = status(&s).await;
    let err = st.pointer("/ledger/last_error").and_then(Value::as_str).unwrap_or("");
    assert!(err.contains("/readyz"), "the probe's failure is the last error: {st}");
    ledger.spawn().await.expect("restart ledgerd");
    assert!(wait_up(&s, 1).await, "ledger back: spoold_ledger_up must return to 1");
}

/// A spool written by the format-1 engine (the fixture, made by it) under the
/// new spoold: upgraded in place at start, every pending record reaches the
/// ledger exactly once, nothing acked is sent again, and an acked id still
/// answers `duplicate` with its original seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_spool_is_upgraded_by_spoold_and_drains_exactly_once() {
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/spool/tests/fixtures/v1-spool.tar.gz");
    let status_tar = std::process::Command::new("tar").arg("-xzf").arg(&fixture).arg("-C").arg(tmp.path()).status().expect("tar");
    assert!(status_tar.success());
    let spool_dir = tmp.path().join("spool");
    let mut opts = SpooldOptions::default().forward_to(&ledger.url, NODE_TOKEN);
    opts.spool_dir = Some(spool_dir.clone());
    let s = Spoold::start(opts).await.expect("start spoold on the v1 spool");
    assert!(!spool_dir.join("sled-v1").exists(), "upgrade finished");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(&s).await;
        if st["spool"]["pending_events"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not drained: {st}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = ledger.all_events().await.expect("ledger events");
    let mut got: Vec<String> = all.iter().filter_map(|e| e["event"]["id"].as_str().map(str::to_owned)).collect();
    got.sort();
    let mut want: Vec<String> = [10, 11, 13, 14, 15, 16, 17, 18, 19, 20].iter().map(|i| format!("v1-{i}")).collect();
    want.sort();
    assert_eq!(got, want, "exactly the pending records, each once");
    // The acked v1-3 (amount 103, as the fixture wrote it) is still a duplicate.
    let body = json!({
        "id": "v1-3", "kind": "purchase", "amount": 103, "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "recipient": "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0",
        "occurred_at": "2026-11-24T12:00:00Z"
    });
    let r = reqwest::Client::new().post(s.url("/v1/events")).bearer_auth(TEST_TOKEN).json(&body).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!((v["status"].as_str(), v["seq"].as_u64()), (Some("duplicate"), Some(3)), "{v}");
    assert_eq!(status(&s).await["dead_letters"], 1, "the v1 dead letter is kept");
}
