//! Incident: a slow-loris attack on the ingest port. Hundreds of connections
//! trickle header bytes while a normal client keeps sending one event per
//! request: every one of its requests is answered 202 and every event reaches
//! the ledger.

use std::time::{Duration, Instant};

use test_support::events::spec_example;
use test_support::ledgerd::Ledgerd;
use test_support::loris::Loris;
use test_support::spoold::{Spoold, TEST_TOKEN};

use super::{drain, forwarding, LoadReport, Outcome};

const SLOW_CONNECTIONS: usize = 500;
const TRICKLE_FOR: Duration = Duration::from_secs(6);
const NORMAL_FOR: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_slowloris() {
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let opts = forwarding(&[&ledger.url]).limits("header_read_timeout = \"2s\"");
    let s = Spoold::start(opts).await.expect("start spoold");
    let slow = Loris::start(&s.addr(), SLOW_CONNECTIONS, Duration::from_millis(250), TRICKLE_FOR);

    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let (mut sent, mut acked) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    let mut other = Vec::new();
    let started = Instant::now();
    while started.elapsed() < NORMAL_FOR {
        let id = format!("loris-{}", sent.len());
        sent.insert(id.clone());
        let r = c.post(s.url("/v1/events")).bearer_auth(TEST_TOKEN).json(&spec_example(&id)).send().await;
        match r.map(|r| r.status().as_u16()) {
            Ok(202) => {
                acked.insert(id);
            }
            other_answer => other.push(format!("{id}: {other_answer:?}")),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let loris = slow.finish().await;
    let recovered = Instant::now();
    assert!(other.is_empty(), "the normal client got other answers than 202: {other:?}");
    assert!(loris.connected >= SLOW_CONNECTIONS * 95 / 100, "only {} slow connections", loris.connected);
    assert!(loris.cut >= loris.connected * 99 / 100, "only {} of {} trickling connections cut", loris.cut, loris.connected);
    let drain = drain(&[&s], recovered).await;
    let scale = format!(
        "{} trickling connections ({} cut by the 2 s header timeout, trickling up to {} s); normal client {} of {} answered 202",
        loris.connected,
        loris.cut,
        TRICKLE_FOR.as_secs(),
        acked.len(),
        sent.len()
    );
    Outcome::new("slowloris", LoadReport { sent, acked, ..LoadReport::default() }, drain, "none (client side)", scale).check(&ledger).await;
}
