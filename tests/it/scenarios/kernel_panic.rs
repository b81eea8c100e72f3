//! Incident: a front node's kernel panics. spoold dies mid-stream with no
//! chance to shut down (SIGKILL while 4 clients post), the node reboots,
//! spoold starts again on the same spool directory. So that the spool holds
//! a backlog at the panic (the case that matters), the ledger link is cut
//! shortly before it. Every event acknowledged before the panic reaches the
//! ledger exactly once.

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::proxy::{Mode, Proxy};
use test_support::spoold::Spoold;

use super::{drain, forwarding, pending, Load, Outcome, Shape};

const REBOOT: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_kernel_panic() {
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let proxy = Proxy::start(format!("127.0.0.1:{}", ledger.port).parse().expect("addr")).await.expect("proxy");
    let mut s = Spoold::start(forwarding(&[&proxy.url()])).await.expect("start spoold");
    let load = Load::start(&s, "panic", Shape { clients: 4, ..Shape::default() });
    load.flows(1000, Duration::from_secs(20)).await;
    proxy.set_mode(Mode::Partition);
    load.flows(1000, Duration::from_secs(20)).await;
    let backlog = pending(&s).await;
    assert!(backlog > 0, "the spool holds a backlog at the panic");

    s.kill9();
    let acked_at_panic = load.acked();
    tokio::time::sleep(REBOOT).await;
    s.restart().await.expect("spoold after the reboot");
    proxy.set_mode(Mode::Pass);
    let recovered = Instant::now();
    load.flows(500, Duration::from_secs(20)).await;
    let report = load.stop().await;
    let drain = drain(&[&s], recovered).await;
    let scale = format!("1 SIGKILL mid-stream after {acked_at_panic} acks with {backlog} pending, {} s down", REBOOT.as_secs());
    Outcome::new("kernel_panic", report, drain, "proxy + SIGKILL", scale)
        .check(&ledger)
        .await;
}
