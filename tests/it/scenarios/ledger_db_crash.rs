//! Incident: the ledger's database crashed and stayed down for hours.
//! Compressed: ledgerd is SIGKILLed and stays down for [`DOWN`] while ~1k
//! ev/s keep arriving at spoold, then it comes back on the same store.

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::spoold::Spoold;

use super::{compressed, drain, forwarding, pending, Load, Outcome, Shape};

const DOWN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_ledger_db_crash() {
    let mut ledger = Ledgerd::start().await.expect("start ledgerd");
    let s = Spoold::start(forwarding(&[&ledger.url])).await.expect("start spoold");
    let load = Load::start(&s, "dbcrash", Shape::default());
    load.flows(200, Duration::from_secs(10)).await;

    ledger.kill9();
    let down_at = Instant::now();
    let before = load.acked();
    tokio::time::sleep(DOWN).await;
    let during = load.acked() - before;
    assert!(during > 0, "ingest goes on while the ledger is down");
    assert!(pending(&s).await > 0, "the events wait in the spool");
    let down_for = down_at.elapsed();
    let report = load.stop().await;

    ledger.spawn().await.expect("ledgerd back");
    let drain = drain(&[&s], Instant::now()).await;
    let scale = compressed("4 h ledger down", 4.0, 1000, usize::try_from(during).expect("count"), down_for);
    Outcome::new("ledger_db_crash", report, drain, "none (ledgerd killed)", scale)
        .check(&ledger)
        .await;
}
