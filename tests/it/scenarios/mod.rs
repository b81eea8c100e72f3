//! Outage scenarios (issue 6): each incident class offgrid exists for,
//! replayed against the real `spoold` and `ledgerd` binaries on loopback.
//! Faults come from the test-support proxy between spoold and ledgerd
//! (partition, loss, resets), from killing the processes, from a tmpfs out of
//! inodes and from a PostgreSQL table lock. Long outages are compressed in
//! time, never skipped: each scenario states its scale.
//!
//! Every scenario is a short script ending in [`Outcome::check`], which counts
//! and asserts the same things for all of them:
//! - `acked`: events spoold answered 202/200;
//! - `at_ledger`: events recorded by ledgerd (read back with the admin token);
//! - `missing`: acknowledged but not at the ledger — must be 0;
//! - `twice`: recorded more than once (ids or ledger_seqs repeated in the
//!   ledger's own listing) — must be 0;
//! - `leaked`: reads that returned what the reader must not see — must be 0;
//! - `drain_ms`: from the recovery to an empty spool, measured, not asserted;
//!
//! and prints one line:
//! `scenario NAME: sent=.. acked=.. at_ledger=.. missing=0 twice=0 leaked=0 drain_ms=.. net=proxy scale=".."`.
//!
//! The network faults use the proxy only (`net=proxy`): no network
//! namespaces, so the suite needs no privileges except where a scenario says.
//!
//! `OFFGRID_SLOW_TESTS=1` runs the long variants (the full 200-cycle crash
//! loop, the 80 s thin link).

mod crash_loop;
mod dns_failure;
mod flapping_power;
mod inode_exhaustion;
mod kernel_panic;
mod ledger_db_crash;
mod ledger_restore;
mod packet_loss;
mod planned_restarts;
mod power_incident;
mod read_leak;
mod slowloris;
mod table_locks;
mod thin_link;
mod two_edges_isolated;
mod vrack_partition;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::ledgerd::{Ledgerd, NODE_TOKEN};
use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a drain may take before the scenario fails.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// spoold forwarding to `urls` with short retries, so that drains after a
/// recovery take a fraction of a second instead of the 30 s default cap.
pub fn forwarding(urls: &[&str]) -> SpooldOptions {
    let mut opts = SpooldOptions::default()
        .ledger("request_timeout = \"1s\"")
        .retry("initial = \"20ms\"")
        .retry("max = \"250ms\"");
    opts.forward_to = Some((urls.iter().map(|u| (*u).to_owned()).collect(), NODE_TOKEN.to_owned()));
    opts
}

/// "16 h at 1k ev/s (57.6M events) compressed to 6,000 events over 6.0 s".
pub fn compressed(real: &str, real_hours: f64, real_rate: u64, events: usize, window: Duration) -> String {
    // Display only: the rounding of an f64 product does not matter here.
    let real_events = real_hours * 3600.0 * real_rate as f64;
    format!(
        "{real} at {real_rate} ev/s ({:.1}M events) compressed to {events} events over {:.1} s",
        real_events / 1e6,
        window.as_secs_f64()
    )
}

/// The shape of the traffic a [`Load`] sends.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Concurrent clients.
    pub clients: usize,
    /// Events per `POST /v1/events/batch`.
    pub batch: usize,
    /// Pause of each client between two batches.
    pub pause: Duration,
}

impl Default for Shape {
    /// About 1,000 ev/s: 2 clients × 25 events every 50 ms.
    fn default() -> Shape {
        Shape { clients: 2, batch: 25, pause: Duration::from_millis(50) }
    }
}

/// What a [`Load`] (or [`post_until_acked`]) saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Every id sent at least once.
    pub sent: HashSet<String>,
    /// Every id answered 202 or 200.
    pub acked: HashSet<String>,
    /// Answers that were retried, by status (0 = no answer: connection
    /// refused, reset, cut body).
    pub retried: BTreeMap<u16, u64>,
}

impl LoadReport {
    pub fn merge(&mut self, other: LoadReport) {
        self.sent.extend(other.sent);
        self.acked.extend(other.acked);
        for (k, v) in other.retried {
            *self.retried.entry(k).or_default() += v;
        }
    }
}

/// Posts `events` to spoold's batch endpoint until every one is answered
/// 202/200, retrying what is not answered (spoold down, 503, 507, a body cut
/// by a kill). Gives up after `deadline`; what was not acknowledged by then
/// is simply not in `acked`. Any other answer (400, 401, 409) is a test bug
/// and panics.
pub async fn post_until_acked(c: &reqwest::Client, url: &str, events: Vec<Value>, deadline: Instant) -> LoadReport {
    let mut report = LoadReport::default();
    let mut todo = events;
    for e in &todo {
        report.sent.insert(e["id"].as_str().expect("event id").to_owned());
    }
    while !todo.is_empty() && Instant::now() < deadline {
        let answer = c.post(url).bearer_auth(TEST_TOKEN).json(&todo).send().await;
        let body: Option<Value> = match answer {
            Ok(r) if r.status().as_u16() == 200 => r.json().await.ok(),
            Ok(r) => {
                let code = r.status().as_u16();
                assert!(matches!(code, 503 | 507), "batch answered {code}: {:?}", r.text().await);
                *report.retried.entry(code).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(_) => None,
        };
        let Some(body) = body else {
            // No answer, or a body cut short: spoold is down or was killed.
            *report.retried.entry(0).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let results = body["results"].as_array().cloned().unwrap_or_default();
        assert_eq!(results.len(), todo.len(), "one result per event: {body}");
        let mut again = Vec::new();
        for (ev, res) in todo.into_iter().zip(results) {
            match res["http_status"].as_u64() {
                Some(200 | 202) => {
                    report.acked.insert(ev["id"].as_str().expect("event id").to_owned());
                }
                Some(code @ (503 | 507)) => {
                    *report.retried.entry(u16::try_from(code).expect("status")).or_default() += 1;
                    again.push(ev);
                }
                other => panic!("event {} answered {other:?}: {res}", ev["id"]),
            }
        }
        todo = again;
        if !todo.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    report
}

/// Background traffic: [`Shape::clients`] clients posting batches of fresh
/// events `PREFIX-N` to one spoold until [`Load::stop`], each batch retried
/// until acknowledged (across kills and restarts of spoold).
pub struct Load {
    stop: watch::Sender<bool>,
    tasks: JoinSet<LoadReport>,
    acked: Arc<AtomicU64>,
}

impl Load {
    pub fn start(s: &Spoold, prefix: &str, shape: Shape) -> Load {
        let url = s.url("/v1/events/batch");
        let (stop, stop_rx) = watch::channel(false);
        let next = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..shape.clients {
            let (url, prefix, stop_rx, next, acked) =
                (url.clone(), prefix.to_owned(), stop_rx.clone(), Arc::clone(&next), Arc::clone(&acked));
            tasks.spawn(async move {
                let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("http client");
                let mut report = LoadReport::default();
                while !*stop_rx.borrow() {
                    let first = next.fetch_add(shape.batch as u64, Ordering::Relaxed);
                    let events = (first..first + shape.batch as u64)
                        .map(|n| test_support::events::spec_example(&format!("{prefix}-{n}")))
                        .collect();
                    let r = post_until_acked(&c, &url, events, Instant::now() + DRAIN_TIMEOUT).await;
                    acked.fetch_add(r.acked.len() as u64, Ordering::Relaxed);
                    report.merge(r);
                    tokio::time::sleep(shape.pause).await;
                }
                report
            });
        }
        Load { stop, tasks, acked }
    }

    /// Events acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` more events than now were acknowledged (traffic flows).
    pub async fn flows(&self, n: u64, timeout: Duration) {
        let (start, deadline) = (self.acked(), Instant::now() + timeout);
        while self.acked() < start + n {
            assert!(Instant::now() < deadline, "traffic stalled: {n} events not acknowledged within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the clients; each finishes (acknowledges) its current batch.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.send_replace(true);
        let mut report = LoadReport::default();
        while let Some(r) = self.tasks.join_next().await {
            report.merge(r.expect("load client"));
        }
        report
    }
}

/// `GET /v1/status` of spoold, or `None` if it does not answer.
pub async fn spoold_status(s: &Spoold) -> Option<Value> {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    let r = c.get(s.url("/v1/status")).bearer_auth(TEST_TOKEN).send().await.ok()?;
    r.json().await.ok()
}

/// Pending events in spoold's spool (panics if spoold does not answer).
pub async fn pending(s: &Spoold) -> u64 {
    let st = spoold_status(s).await.expect("spoold answers /v1/status");
    st["spool"]["pending_events"].as_u64().expect("pending_events")
}

/// Waits until every spool is empty (no pending event, no dead letter);
/// returns how long that took from `since` (the recovery).
pub async fn drain(spoolds: &[&Spoold], since: Instant) -> Duration {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for s in spoolds {
        loop {
            let st = spoold_status(s).await;
            let st = st.as_ref();
            let pending = st.and_then(|v| v["spool"]["pending_events"].as_u64());
            if pending == Some(0) {
                let dead = st.and_then(|v| v["dead_letters"].as_u64());
                assert_eq!(dead, Some(0), "nothing becomes a dead letter: {st:?}");
                break;
            }
            assert!(Instant::now() < deadline, "spool not drained within {DRAIN_TIMEOUT:?}: {st:?}\n{}", s.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    since.elapsed()
}

/// What a scenario saw, checked against the ledger by [`Outcome::check`].
#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    /// Every id sent to any spoold.
    pub sent: HashSet<String>,
    /// Every id answered 202/200.
    pub acked: HashSet<String>,
    /// Reads that returned what the reader must not see.
    pub leaked: u64,
    pub drain: Duration,
    /// `proxy`, `none` (a process fault only), `tmpfs`, `postgres lock`…
    pub net: &'static str,
    pub scale: String,
}

/// The ledger's own count: the distinct ids it holds, and how many of its
/// rows repeat an id or a ledger_seq already seen.
#[derive(Debug)]
pub struct LedgerCount {
    pub ids: HashSet<String>,
    pub twice: usize,
}

/// Reads every event at the ledger (admin) and counts ids recorded more than
/// once and ledger_seqs used more than once.
pub async fn ledger_count(ledger: &Ledgerd) -> LedgerCount {
    let all = ledger.all_events().await.expect("read the ledger as admin");
    let mut ids = HashSet::new();
    let mut seqs = HashSet::new();
    let mut twice = 0;
    for e in &all {
        let id = e["event"]["id"].as_str().expect("stored event id").to_owned();
        let seq = e["ledger_seq"].as_u64().expect("ledger_seq");
        let (new_id, new_seq) = (ids.insert(id), seqs.insert(seq));
        if !(new_id && new_seq) {
            twice += 1;
        }
    }
    LedgerCount { ids, twice }
}

impl Outcome {
    /// What `report` saw, with no leaked read.
    pub fn new(name: &'static str, report: LoadReport, drain: Duration, net: &'static str, scale: String) -> Outcome {
        Outcome { name, sent: report.sent, acked: report.acked, leaked: 0, drain, net, scale }
    }

    /// Counts, prints the summary line, and asserts: nothing acknowledged is
    /// missing, nothing is recorded twice, nothing leaked, and the ledger
    /// holds nothing that was never sent.
    pub async fn check(self, ledger: &Ledgerd) {
        let count = ledger_count(ledger).await;
        let missing: Vec<&String> = self.acked.iter().filter(|id| !count.ids.contains(*id)).collect();
        let unsent: Vec<&String> = count.ids.iter().filter(|id| !self.sent.contains(*id)).collect();
        eprintln!(
            "scenario {}: sent={} acked={} at_ledger={} missing={} twice={} leaked={} drain_ms={} net={} scale=\"{}\"",
            self.name,
            self.sent.len(),
            self.acked.len(),
            count.ids.len(),
            missing.len(),
            count.twice,
            self.leaked,
            self.drain.as_millis(),
            self.net,
            self.scale
        );
        assert!(!self.acked.is_empty(), "{}: nothing was acknowledged, the scenario proves nothing", self.name);
        assert!(missing.is_empty(), "{}: acknowledged but not at the ledger: {:?}", self.name, &missing[..missing.len().min(10)]);
        assert_eq!(count.twice, 0, "{}: events recorded twice at the ledger", self.name);
        assert!(unsent.is_empty(), "{}: at the ledger but never sent: {:?}", self.name, &unsent[..unsent.len().min(10)]);
        assert_eq!(self.leaked, 0, "{}: leaked reads", self.name);
    }
}
