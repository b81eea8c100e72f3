//! ledgerd on PostgreSQL (127.0.0.1:5432, database `test`, a fresh schema per
//! test, dropped at the end): two ledgerd processes sharing one database while
//! two edge nodes forward the same events at the same moment, two ledgerd
//! taking the backlog drains of two spoold edge nodes at once (the scale-out
//! story: N stateless ledgerd behind a load balancer), and a database
//! outage (through the fault proxy) that ledgerd answers with 503 and recovers
//! from by itself.

use std::time::{Duration, Instant};

use forwarder::{ForwardMetrics, ForwarderConfig, Secret};
use serde_json::json;
use spool::{Spool, SpoolConfig};
use spool_format::Event;
use test_support::ledgerd::{Ledgerd, NODE_TOKEN};
use test_support::proxy::{Mode, Proxy};
use test_support::spoold::Spoold;

use crate::scenarios::{drain, forwarding, ledger_count, post_until_acked, Load, LoadReport, Outcome, Shape};

pub fn pg_base() -> String {
    std::env::var("OFFGRID_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema name; dropped by [`drop_schema`].
pub fn schema(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("it_{tag}_{}_{nanos}", std::process::id())
}

pub async fn drop_schema(schema: &str) {
    let (client, conn) = tokio_postgres::connect(&pg_base(), tokio_postgres::NoTls).await.expect("connect postgres");
    tokio::spawn(conn);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.expect("drop schema");
}

fn event(id: &str) -> Event {
    Event::from_json_value(&json!({
        "id": id, "kind": "purchase", "amount": 42, "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "occurred_at": "2026-11-24T12:00:00Z"
    }))
    .expect("valid event")
}

/// Two ledgerd (files under `dir/a`, `dir/b`) on the same PostgreSQL schema,
/// both answering `/readyz` 200.
async fn two_ready_ledgerd(dir: &std::path::Path, schema: &str) -> (Ledgerd, Ledgerd) {
    let url = format!("{}?schema={schema}", pg_base());
    let a = Ledgerd::start_with(&dir.join("a"), &url, test_support::free_port()).await.expect("ledgerd a");
    let b = Ledgerd::start_with(&dir.join("b"), &url, test_support::free_port()).await.expect("ledgerd b");
    for l in [&a, &b] {
        test_support::wait_http_ok(&format!("{}/readyz", l.url), Duration::from_secs(10)).await.expect("ready");
    }
    (a, b)
}

#[tokio::test]
async fn ledger_pg_two_processes_two_nodes_same_ids_recorded_once() {
    let schema = schema("two");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_ready_ledgerd(tmp.path(), &schema).await;
    let ids: Vec<String> = (0..400).map(|i| format!("same-{i}")).collect();
    let mut nodes = Vec::new();
    for (name, ledger) in [("front-1", &a), ("front-2", &b)] {
        let mut sc = SpoolConfig::for_dir(tmp.path().join(name));
        sc.node_id = name.into();
        let spool = Spool::open(sc).expect("spool");
        for r in spool.append_batch(ids.iter().map(|id| event(id)).collect()).await {
            r.expect("append");
        }
        nodes.push((name, spool, ledger.url.clone()));
    }
    // Both nodes start forwarding the same ids at the same moment, each to its
    // own ledgerd, both ledgerd on the same database.
    let mut running = Vec::new();
    for (name, spool, url) in &nodes {
        let mut cfg = ForwarderConfig::new(*name, vec![url.clone()], Secret::new(NODE_TOKEN));
        cfg.batch_events_max = 50;
        cfg.retry_initial = Duration::from_millis(20);
        cfg.retry_max = Duration::from_millis(200);
        let metrics = ForwardMetrics::default();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (_h, task) = forwarder::spawn(spool.clone(), cfg, metrics.clone(), rx).expect("spawn");
        running.push((spool.clone(), metrics, tx, task));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.iter().any(|(s, ..)| s.stats().expect("stats").pending_events > 0) {
        assert!(Instant::now() < deadline, "not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = |m: &ForwardMetrics, r: &'static str| m.events_total.get_or_create(&[("result", r)]).get();
    // The forwarder counts a batch's results just after marking its records,
    // so the last batches can be counted a moment after the spool is empty:
    // wait until every one of the 800 forwarded events has a result.
    let counted = || -> u64 {
        running
            .iter()
            .map(|(_, m, ..)| ["accepted", "duplicate", "conflict", "rejected"].iter().map(|r| count(m, r)).sum::<u64>())
            .sum()
    };
    while counted() < 800 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted: u64 = running.iter().map(|(_, m, ..)| count(m, "accepted")).sum();
    let duplicate: u64 = running.iter().map(|(_, m, ..)| count(m, "duplicate")).sum();
    assert_eq!((accepted, duplicate), (400, 400), "each id accepted exactly once across both ledgerd");
    for (_, m, ..) in &running {
        assert_eq!(count(m, "conflict"), 0);
    }
    let all = a.all_events().await.expect("read");
    assert_eq!(all.len(), 400);
    let mut seen: Vec<&str> = all.iter().filter_map(|e| e["event"]["id"].as_str()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 400);
    for (_, _, tx, task) in running {
        let _ = tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    drop((a, b));
    drop_schema(&schema).await;
}

#[tokio::test]
async fn ledger_pg_outage_gives_503_and_recovers_by_itself() {
    let schema = schema("outage");
    let pg = Proxy::start("127.0.0.1:5432".parse().expect("addr")).await.expect("proxy");
    let url = format!("postgres://postgres@127.0.0.1:{}/test?schema={schema}", pg.addr.port());
    let tmp = tempfile::tempdir().expect("tempdir");
    let l = Ledgerd::start_with(tmp.path(), &url, test_support::free_port()).await.expect("ledgerd");
    let client = reqwest::Client::new();
    let post = |id: &'static str| {
        let client = client.clone();
        let url = l.url.clone();
        async move {
            let r = client
                .post(format!("{url}/v1/batches"))
                .bearer_auth(NODE_TOKEN)
                .json(&json!({"node": "n", "events": [{"seq": 1, "received_at": "2026-11-24T12:00:00Z", "event": event(id).to_json_value()}]}))
                .send()
                .await
                .expect("post");
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }
    };
    let ready = || async { reqwest::get(format!("{}/readyz", l.url)).await.expect("readyz").status().as_u16() };
    assert_eq!(post("before").await, (200, false));
    assert_eq!(ready().await, 200);

    pg.set_mode(Mode::Partition);
    assert_eq!(post("during").await, (503, true), "database down: 503 with Retry-After");
    assert_eq!(ready().await, 503);

    pg.set_mode(Mode::Pass);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _) = post("after").await;
        if s == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "ledgerd did not recover after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready().await, 200);
    assert!(l.get_event("before").await.expect("get").is_some());
    assert!(l.get_event("after").await.expect("get").is_some());
    assert!(l.get_event("during").await.expect("get").is_none(), "a 503 recorded nothing");
    drop(l);
    drop_schema(&schema).await;
}

/// `ledgerd_events_total{status="accepted"}` of one ledgerd.
async fn accepted_by(l: &Ledgerd) -> u64 {
    let m = reqwest::get(format!("{}/metrics", l.url)).await.expect("metrics").text().await.expect("metrics body");
    m.lines()
        .find_map(|line| line.strip_prefix("ledgerd_events_total{status=\"accepted\"} "))
        .map_or(0, |v| v.trim().parse().expect("counter value"))
}

/// Two edge nodes cut off from the ledger pile up a backlog (their own events
/// plus ids sent to both); the links come back at the same moment and both
/// drain, under fresh traffic, into two ledgerd on one database, each edge
/// through its own ledgerd (as a load balancer would spread them; with a
/// fallback URL the forwarder may stay on the other one after the cut, and
/// then one ledgerd would take everything). The ids sent to both edges race
/// between the two processes. Every event is recorded once, and the two
/// processes' `accepted` counters add up to exactly the ledger's distinct ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_pg_two_ledgerd_take_two_edge_drains_at_once() {
    const OWN: usize = 3000;
    const BOTH: usize = 1000;
    let schema = schema("drains");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_ready_ledgerd(tmp.path(), &schema).await;
    let mut edges = Vec::new();
    for (node, own) in [("edge-a", &a), ("edge-b", &b)] {
        let mut links = Vec::new();
        for l in [own] {
            let p = Proxy::start(format!("127.0.0.1:{}", l.port).parse().expect("addr")).await.expect("proxy");
            p.set_mode(Mode::Partition);
            links.push(p);
        }
        let mut opts = forwarding(&[&links[0].url()]);
        opts.args = vec!["--node-id".into(), node.into()];
        let s = Spoold::start(opts).await.expect("start spoold");
        edges.push((node, links, s));
    }
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut report = LoadReport::default();
    for (node, _, s) in &edges {
        let u = s.url("/v1/events/batch");
        let own = (0..OWN).map(|i| test_support::events::spec_example(&format!("{node}-{i}")));
        let both = (0..BOTH).map(|i| test_support::events::spec_example(&format!("both-{i}")));
        let all: Vec<serde_json::Value> = own.chain(both).collect();
        for part in all.chunks(250) {
            report.merge(post_until_acked(&c, &u, part.to_vec(), deadline).await);
        }
    }
    assert!(ledger_count(&a).await.ids.is_empty(), "both edges are cut off");

    let loads: Vec<Load> = edges.iter().map(|(node, _, s)| Load::start(s, &format!("{node}-live"), Shape::default())).collect();
    let released = Instant::now();
    for (_, links, _) in &edges {
        for p in links {
            p.set_mode(Mode::Pass);
        }
    }
    for l in &loads {
        l.flows(200, Duration::from_secs(10)).await;
    }
    for l in loads {
        report.merge(l.stop().await);
    }
    let spoolds: Vec<&Spoold> = edges.iter().map(|(_, _, s)| s).collect();
    let drained = drain(&spoolds, released).await;

    let count = ledger_count(&b).await;
    assert_eq!(count.twice, 0, "recorded twice");
    assert_eq!(count.ids.len(), report.sent.len(), "every id sent is at the ledger, once");
    assert_eq!(count.ids.iter().filter(|i| i.starts_with("both-")).count(), BOTH);
    let (acc_a, acc_b) = (accepted_by(&a).await, accepted_by(&b).await);
    assert!(acc_a > 0 && acc_b > 0, "both ledgerd took part: {acc_a} + {acc_b}");
    assert_eq!(acc_a + acc_b, count.ids.len() as u64, "each id accepted by exactly one ledgerd");
    let scale = format!(
        "2 edges cut off with {OWN} own events each + {BOTH} ids sent to both, then drained under ~1k ev/s each into 2 ledgerd on one PostgreSQL"
    );
    Outcome::new("two_ledgerd_two_edge_drains", report, drained, "proxy", scale).check(&a).await;
    for (_, _, mut s) in edges {
        let _ = s.terminate(Duration::from_secs(10));
    }
    drop((a, b));
    drop_schema(&schema).await;
}
