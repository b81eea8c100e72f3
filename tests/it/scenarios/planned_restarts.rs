//! Incident class: planned restarts (deploys). A rolling restart during
//! traffic: SIGTERM spoold (it drains and exits 0), start it again, then
//! SIGTERM ledgerd (exits 0), start it again. Nothing is lost.

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::spoold::Spoold;

use super::{drain, forwarding, Load, Outcome, Shape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_planned_restarts() {
    let mut ledger = Ledgerd::start().await.expect("start ledgerd");
    let mut s = Spoold::start(forwarding(&[&ledger.url])).await.expect("start spoold");
    let load = Load::start(&s, "rolling", Shape::default());
    load.flows(500, Duration::from_secs(20)).await;

    let status = s.terminate(Duration::from_secs(20)).expect("spoold stops on SIGTERM");
    assert!(status.success(), "spoold exit status {status:?}\n{}", s.log());
    s.restart().await.expect("spoold back");
    load.flows(500, Duration::from_secs(20)).await;

    let status = ledger.terminate().expect("ledgerd stops on SIGTERM");
    assert!(status.success(), "ledgerd exit status {status:?}\n{}", ledger.log());
    ledger.spawn().await.expect("ledgerd back");
    let recovered = Instant::now();
    load.flows(500, Duration::from_secs(20)).await;
    let report = load.stop().await;
    let drain = drain(&[&s], recovered).await;
    let scale = "rolling restart: SIGTERM spoold, then SIGTERM ledgerd, under ~1k ev/s".to_owned();
    Outcome::new("planned_restarts", report, drain, "none (SIGTERM)", scale)
        .check(&ledger)
        .await;
}
