//! Incident: the internal network (vRack) between the front servers and the
//! ledger is cut for 16 hours. Compressed: the proxy partitions the link for
//! [`CUT`] while ~1k ev/s keep arriving; the ledger must see nothing during the
//! cut, and everything once the link is back.

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::proxy::{Mode, Proxy};
use test_support::spoold::Spoold;

use super::{compressed, drain, forwarding, ledger_count, pending, Load, Outcome, Shape};

const CUT: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_vrack_partition() {
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let proxy = Proxy::start(format!("127.0.0.1:{}", ledger.port).parse().expect("addr")).await.expect("proxy");
    let s = Spoold::start(forwarding(&[&proxy.url()])).await.expect("start spoold");
    let load = Load::start(&s, "vrack", Shape::default());
    load.flows(200, Duration::from_secs(10)).await;

    proxy.set_mode(Mode::Partition);
    let cut_at = Instant::now();
    // Let what was in flight when the link went down settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = (load.acked(), ledger_count(&ledger).await.ids.len());
    tokio::time::sleep(CUT).await;
    let during = load.acked() - before.0;
    assert!(during > 0, "ingest goes on while the vRack is cut");
    assert_eq!(ledger_count(&ledger).await.ids.len(), before.1, "nothing crosses a partition");
    assert!(pending(&s).await > 0, "the events wait in the spool");
    let cut_for = cut_at.elapsed();
    let report = load.stop().await;

    proxy.set_mode(Mode::Pass);
    let drain = drain(&[&s], Instant::now()).await;
    let scale = compressed("16 h", 16.0, 1000, usize::try_from(during).expect("count"), cut_for);
    Outcome::new("vrack_partition", report, drain, "proxy", scale)
        .check(&ledger)
        .await;
}
