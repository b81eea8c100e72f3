//! Incident: packet loss on the internal link. For [`LOSSY_FOR`] the proxy
//! switches at random every 50–300 ms between passing, losing chunks (the
//! connection stalls until the forwarder's request timeout), resetting
//! connections and refusing them, while ~1k ev/s arrive.

use std::time::{Duration, Instant};

use rand::Rng;
use test_support::ledgerd::Ledgerd;
use test_support::proxy::{Mode, Proxy};
use test_support::spoold::Spoold;

use super::{drain, forwarding, Load, Outcome, Shape};

const LOSSY_FOR: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_packet_loss() {
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let proxy = Proxy::start(format!("127.0.0.1:{}", ledger.port).parse().expect("addr")).await.expect("proxy");
    let opts = forwarding(&[&proxy.url()]).ledger("batch_events_max = 50");
    let s = Spoold::start(opts).await.expect("start spoold");
    let load = Load::start(&s, "loss", Shape::default());

    let started = Instant::now();
    let mut switches = 0u32;
    while started.elapsed() < LOSSY_FOR {
        let (mode, hold) = {
            let mut rng = rand::thread_rng();
            let mode = match rng.gen_range(0..4) {
                0 => Mode::Pass,
                1 => Mode::Lossy { percent: rng.gen_range(10..60) },
                2 => Mode::Reset,
                _ => Mode::Refuse,
            };
            (mode, Duration::from_millis(rng.gen_range(50..300)))
        };
        proxy.set_mode(mode);
        switches += 1;
        tokio::time::sleep(hold).await;
    }
    let report = load.stop().await;
    proxy.set_mode(Mode::Pass);
    let drain = drain(&[&s], Instant::now()).await;
    let scale = format!("{switches} random switches of pass/lossy/reset/refuse over {:.1} s", started.elapsed().as_secs_f64());
    Outcome::new("packet_loss", report, drain, "proxy", scale)
        .check(&ledger)
        .await;
}
