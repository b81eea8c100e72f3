//! Power-cut tests (issue 10): the spool and ledgerd's sled store on the
//! project's own power-cut file system (`test_support::powercut`), the real
//! binaries SIGKILLed and the power cut (everything not fsynced thrown away),
//! then restarted on what survived.
//!
//! - `fs_*`: the file system itself keeps exactly what was synced.
//! - `spoold`: acknowledged events survive cuts under 16 concurrent clients,
//!   with their seqs; no seq is reused; `spoolctl verify` is clean. The control
//!   run with the fdatasync skipped (a failpoint) loses events, and the state
//!   file makes spoold refuse to start over the loss.
//! - `ledgerd`: cuts of the ledger mid-drain; every acknowledged event ends up
//!   at the ledger exactly once.
//! - `storage`: a failing fsync answers 503 `storage_failed` end to end.
//!
//! Needs root and `/dev/fuse`: without them each test prints `SKIPPED` with
//! the reason (and fails where `CI` is set, since CI has both). The daemons
//! must be built with the `failpoints` feature (scripts/test.sh does).
//! `OFFGRID_SLOW_TESTS=1` runs more cycles.

mod fs;
mod ledgerd;
mod spoold;
mod storage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use test_support::spoold::{Spoold, TEST_TOKEN};

/// Cycles of load, SIGKILL + cut, restart and check.
pub fn cycles() -> usize {
    if std::env::var("OFFGRID_SLOW_TESTS").map(|v| v == "1").unwrap_or(false) {
        40
    } else {
        10
    }
}

/// A SPEC §1 event with a random id, as a vendor would send it.
pub fn random_event() -> Value {
    test_support::events::spec_example(&format!("sl-{}", uuid::Uuid::new_v4()))
}

/// An event spoold acknowledged: its id, the seq it was answered with, the body.
#[derive(Debug, Clone)]
pub struct Acked {
    pub seq: u64,
    pub event: Value,
}

/// `clients` tasks posting fresh random events one by one until stopped; every
/// 2xx answer is recorded with its seq. Connection errors (spoold killed) and
/// 503s are not answers and are not recorded.
pub struct Clients {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    pub acked: Arc<Mutex<HashMap<String, Acked>>>,
}

impl Clients {
    pub fn start(s: &Spoold, clients: usize) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (url, stop, acked) = (s.url("/v1/events"), Arc::clone(&stop), Arc::clone(&acked));
            tasks.spawn(async move {
                let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
                while !stop.load(Ordering::Relaxed) {
                    let event = random_event();
                    let sent = c.post(&url).bearer_auth(TEST_TOKEN).json(&event).send().await;
                    let Ok(r) = sent else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let status = r.status().as_u16();
                    let Ok(body) = r.json::<Value>().await else { continue };
                    match status {
                        202 => {
                            let seq = body["seq"].as_u64().expect("seq in a 202");
                            let id = event["id"].as_str().expect("id").to_owned();
                            acked.lock().expect("lock").insert(id, Acked { seq, event });
                        }
                        503 => tokio::time::sleep(Duration::from_millis(10)).await,
                        other => panic!("unexpected answer {other}: {body}"),
                    }
                }
            });
        }
        Clients { stop, tasks, acked }
    }

    pub fn count(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// Waits until `n` events are acknowledged (or `timeout`).
    pub async fn until(&self, n: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.count() < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) -> HashMap<String, Acked> {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(r) = self.tasks.join_next().await {
            r.expect("client task");
        }
        let acked = self.acked.lock().expect("lock").clone();
        acked
    }
}

/// What resending acknowledged events found.
#[derive(Debug, Default)]
pub struct Resent {
    /// Answered 200 duplicate with the original seq: it survived.
    pub survived: usize,
    /// Answered 202: spoold had lost it and took it as new.
    pub lost: Vec<String>,
    /// Answered 200 with another seq.
    pub wrong_seq: Vec<String>,
}

/// Resends every acknowledged event (16 at a time) and sorts the answers.
pub async fn resend(s: &Spoold, acked: &HashMap<String, Acked>) -> Resent {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let url = s.url("/v1/events");
    let items: Vec<(String, Acked)> = acked.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut out = Resent::default();
    for chunk in items.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for (id, a) in chunk.iter().cloned() {
            let (c, url) = (c.clone(), url.clone());
            set.spawn(async move {
                let r = c.post(&url).bearer_auth(TEST_TOKEN).json(&a.event).send().await.expect("resend");
                let status = r.status().as_u16();
                let body: Value = r.json().await.expect("resend body");
                (id, a.seq, status, body)
            });
        }
        while let Some(r) = set.join_next().await {
            let (id, seq, status, body) = r.expect("resend task");
            match (status, body["seq"].as_u64()) {
                (200, Some(s)) if s == seq => out.survived += 1,
                (200, _) => out.wrong_seq.push(format!("{id}: acked at {seq}, now {body}")),
                (202, _) => out.lost.push(id),
                (other, _) => panic!("resend of {id} answered {other}: {body}"),
            }
        }
    }
    out
}

/// Posts one new event; its seq.
pub async fn new_seq(s: &Spoold) -> u64 {
    let c = reqwest::Client::new();
    let r = c.post(s.url("/v1/events")).bearer_auth(TEST_TOKEN).json(&random_event()).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 202);
    let body: Value = r.json().await.expect("body");
    body["seq"].as_u64().expect("seq")
}
