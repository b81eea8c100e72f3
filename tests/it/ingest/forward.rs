//! The whole path with real binaries: events posted to spoold reach ledgerd;
//! while ledgerd is down (SIGKILL) spoold keeps accepting, reports the ledger
//! down, and delivers everything once it is back.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_support::ledgerd::{Ledgerd, NODE_TOKEN};
use test_support::spoold::{Spoold, SpooldOptions};

use super::{client, event, post_json, status};

/// Polls `/v1/status` until `pred` holds or `timeout` passes; returns the last status.
async fn wait_status(c: &reqwest::Client, s: &Spoold, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = status(c, s).await;
        if pred(&st) || Instant::now() > deadline {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_events_reach_ledgerd_across_a_ledger_outage() {
    let mut ledger = Ledgerd::start().await.expect("start ledgerd");
    let s = Spoold::start(
        SpooldOptions::default()
            .forward_to(&ledger.url, NODE_TOKEN)
            .retry("initial = \"50ms\"")
            .retry("max = \"500ms\""),
    )
    .await
    .expect("start spoold");
    let c = client();

    let batch: Vec<Value> = (0..200).map(|i| event(&format!("fwd-{i}"))).collect();
    let r = post_json(&c, &s, "/v1/events/batch", &Value::Array(batch)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let st = wait_status(&c, &s, Duration::from_secs(30), |st| st["spool"]["pending_events"] == 0).await;
    assert_eq!(st["spool"]["pending_events"], 0, "not drained: {st}\n{}", s.log());
    assert_eq!(st["spool"]["acked_events"], 200, "{st}");
    assert_eq!(st["ledger"]["forwarding"], true);
    assert_eq!(st["ledger"]["up"], true, "{st}");
    for id in ["fwd-0", "fwd-199"] {
        let ev = ledger.get_event(id).await.expect("ledger read").expect("event at the ledger");
        assert_eq!(ev["event"]["id"], id, "{ev}");
        assert_eq!(ev["node"], "test-node", "{ev}");
    }

    // Ledger down: spoold keeps accepting (durably) and says the ledger is down.
    ledger.kill9();
    for i in 0..50 {
        let r = post_json(&c, &s, "/v1/events", &event(&format!("outage-{i}"))).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    let st = wait_status(&c, &s, Duration::from_secs(20), |st| st["ledger"]["up"] == false).await;
    assert_eq!(st["ledger"]["up"], false, "{st}");
    assert!(st["ledger"]["last_error"].is_string(), "{st}");
    assert_eq!(st["spool"]["pending_events"], 50, "{st}");
    assert!(st["spool"]["oldest_pending_age_seconds"].as_f64().is_some(), "{st}");

    // Back up: everything arrives, nothing twice.
    ledger.spawn().await.expect("restart ledgerd");
    let st = wait_status(&c, &s, Duration::from_secs(30), |st| st["spool"]["pending_events"] == 0).await;
    assert_eq!(st["spool"]["pending_events"], 0, "not drained after the outage: {st}\n{}", s.log());
    assert_eq!(st["spool"]["acked_events"], 250, "{st}");
    assert_eq!(st["dead_letters"], 0, "{st}");
    let all = ledger.all_events().await.expect("ledger events");
    assert_eq!(all.len(), 250, "the ledger holds each event once");
    let r = post_json(&c, &s, "/v1/events", &event("outage-7")).await;
    assert_eq!((r.status, r.body["status"].clone()), (200, json!("duplicate")), "dedupe after forwarding");
}
