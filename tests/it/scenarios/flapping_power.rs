//! Incident: flapping power. Both the front node and the ledger lose power
//! again and again while traffic flows: [`FLAPS`] rounds of SIGKILL of spoold
//! AND ledgerd, a moment dark, then both restart on their own data.

use std::time::{Duration, Instant};

use rand::Rng;
use test_support::ledgerd::Ledgerd;
use test_support::spoold::Spoold;

use super::{drain, forwarding, Load, Outcome, Shape};

const FLAPS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_flapping_power() {
    let mut ledger = Ledgerd::start().await.expect("start ledgerd");
    let mut s = Spoold::start(forwarding(&[&ledger.url])).await.expect("start spoold");
    let load = Load::start(&s, "flap", Shape::default());
    let started = Instant::now();
    for _ in 0..FLAPS {
        load.flows(100, Duration::from_secs(20)).await;
        let (up, dark) = {
            let mut rng = rand::thread_rng();
            (Duration::from_millis(rng.gen_range(100..600)), Duration::from_millis(rng.gen_range(50..300)))
        };
        tokio::time::sleep(up).await;
        s.kill9();
        ledger.kill9();
        tokio::time::sleep(dark).await;
        ledger.spawn().await.expect("ledgerd back");
        s.restart().await.expect("spoold back");
    }
    let recovered = Instant::now();
    load.flows(100, Duration::from_secs(20)).await;
    let report = load.stop().await;
    let drain = drain(&[&s], recovered).await;
    let scale = format!("{FLAPS} power cuts of both daemons over {:.1} s", started.elapsed().as_secs_f64());
    Outcome::new("flapping_power", report, drain, "none (SIGKILL)", scale)
        .check(&ledger)
        .await;
}
