//! Crash loop at scale (issue 6 part 2): spoold is SIGKILLed and restarted
//! [`cycles`] times under load (4 clients), with acknowledgements between
//! every two kills; afterwards 0 lost and 0 recorded twice at the ledger.
//! The ledger link is cut during every other cycle, so half the kills hit a
//! spool with a backlog and the others hit batches in flight.
//! The default suite runs 20 cycles, `OFFGRID_SLOW_TESTS=1` the full 200.

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::proxy::{Mode, Proxy};
use test_support::spoold::Spoold;

use super::{drain, forwarding, pending, Load, Outcome, Shape};

fn cycles() -> usize {
    if crate::ingest::slow_tests() {
        200
    } else {
        20
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_crash_loop() {
    let cycles = cycles();
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let proxy = Proxy::start(format!("127.0.0.1:{}", ledger.port).parse().expect("addr")).await.expect("proxy");
    let mut s = Spoold::start(forwarding(&[&proxy.url()])).await.expect("start spoold");
    let load = Load::start(&s, "loop", Shape { clients: 4, batch: 10, pause: Duration::from_millis(10) });
    let started = Instant::now();
    let mut with_backlog = 0usize;
    for cycle in 0..cycles {
        proxy.set_mode(if cycle % 2 == 0 { Mode::Pass } else { Mode::Partition });
        // Under load: some events acknowledged since the last restart.
        load.flows(50, Duration::from_secs(20)).await;
        if pending(&s).await > 0 {
            with_backlog += 1;
        }
        s.kill9();
        s.restart().await.expect("spoold after SIGKILL");
    }
    assert!(with_backlog >= cycles / 2, "only {with_backlog} of {cycles} kills hit a backlog");
    proxy.set_mode(Mode::Pass);
    let recovered = Instant::now();
    load.flows(50, Duration::from_secs(20)).await;
    let report = load.stop().await;
    let drain = drain(&[&s], recovered).await;
    let unanswered = report.retried.get(&0).copied().unwrap_or(0);
    let scale = format!(
        "{cycles} kill -9 cycles of spoold in {:.1} s ({with_backlog} with events pending), {unanswered} requests cut or refused and retried",
        started.elapsed().as_secs_f64()
    );
    Outcome::new("crash_loop", report, drain, "proxy + SIGKILL", scale)
        .check(&ledger)
        .await;
}
