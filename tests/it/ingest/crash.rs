//! Crash proof: 64 concurrent clients send 10,000 events while spoold is
//! killed with SIGKILL several times (and restarted). Afterwards, every event
//! that was answered 202/200 is in the spool exactly once, under the seq it
//! was answered with, and no seq is used twice.
//!
//! `OFFGRID_SLOW_TESTS=1` sends 50,000 events and kills 8 times.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN};

use super::{event, slow_tests};

const CLIENTS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_acknowledged_events_survive_sigkill() {
    let (events, kills) = if slow_tests() { (50_000usize, 8usize) } else { (10_000, 3) };
    let mut s = Spoold::start(SpooldOptions::default()).await.expect("start spoold");
    let url = s.url("/v1/events");
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::new(Mutex::new(Vec::with_capacity(events)));
    let conn_errors = Arc::new(AtomicUsize::new(0));

    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (url, next, acked, conn_errors) = (url.clone(), next.clone(), acked.clone(), conn_errors.clone());
        clients.spawn(async move {
            let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return;
                }
                let id = format!("crash-{i}");
                let body = serde_json::to_vec(&event(&id)).expect("encode");
                // Retry until answered: connection errors while spoold is down,
                // 503 while it drains or starts.
                loop {
                    let sent = c
                        .post(&url)
                        .bearer_auth(TEST_TOKEN)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 200 => {
                            let v: serde_json::Value = match r.json().await {
                                Ok(v) => v,
                                // The body was cut by the kill: not an answer.
                                Err(_) => continue,
                            };
                            let seq = v["seq"].as_u64().expect("seq in a 2xx answer");
                            acked.lock().expect("lock").push((id, seq));
                            break;
                        }
                        Ok(r) => {
                            let code = r.status().as_u16();
                            assert!(code == 503, "unexpected status {code} for {id}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => {
                            conn_errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        });
    }

    // The killer: SIGKILL at evenly spaced points of progress, restart at once.
    for k in 1..=kills {
        let at = events * k / (kills + 1);
        while acked.lock().expect("lock").len() < at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.kill9();
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.restart().await.expect("restart after SIGKILL");
    }
    while let Some(r) = clients.join_next().await {
        r.expect("client task");
    }
    // A last SIGKILL, then check the spool offline.
    s.kill9();

    let acked = acked.lock().expect("lock").clone();
    eprintln!(
        "crash test: {} events acknowledged, {kills} SIGKILLs, {} connection errors retried",
        acked.len(),
        conn_errors.load(Ordering::Relaxed)
    );
    assert_eq!(acked.len(), events, "every event was eventually acknowledged");

    let spool = spool::Spool::open(spool::SpoolConfig::for_dir(&s.spool_dir)).expect("open spool offline");
    let mut seen_ids = HashSet::new();
    let mut seen_seqs = HashSet::new();
    let mut by_id = HashMap::new();
    let mut from = 0u64;
    loop {
        let page = spool.list(spool::StateFilter::All, from, 10_000).expect("list");
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for r in page {
            assert!(seen_seqs.insert(r.seq), "seq {} used twice", r.seq);
            assert!(seen_ids.insert(r.event.id.clone()), "id {} spooled twice", r.event.id);
            by_id.insert(r.event.id.clone(), r.seq);
        }
    }
    let mut missing = Vec::new();
    let mut wrong_seq = Vec::new();
    for (id, seq) in &acked {
        match by_id.get(id) {
            None => missing.push(id.clone()),
            Some(s) if s != seq => wrong_seq.push(format!("{id}: answered {seq}, spooled {s}")),
            Some(_) => {}
        }
        // The index agrees with the records.
        let rec = spool.lookup(id).expect("lookup").map(|r| r.seq);
        assert_eq!(rec, Some(*seq), "lookup({id})");
    }
    assert!(missing.is_empty(), "{} acknowledged events lost: {:?}", missing.len(), &missing[..missing.len().min(10)]);
    assert!(wrong_seq.is_empty(), "{:?}", &wrong_seq[..wrong_seq.len().min(10)]);
    assert_eq!(by_id.len(), events, "the spool holds exactly the sent events");
    let report = spool.verify(|_| {}).expect("verify");
    assert!(report.faults.is_empty(), "faults: {:?}", report.faults);
    spool.close();
}
