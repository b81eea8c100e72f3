//! Incident: a datacentre power incident. The front node and the ledger share
//! the power: [`CUTS`] times, under traffic, both daemons die (SIGKILL) and
//! every write that was not fsynced is lost (the power-cut file system holds
//! both the spool and the ledger's sled store), then both come back on what
//! survived. Needs root and /dev/fuse (SKIPPED with the reason otherwise).

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::powercut::PowerCutFs;
use test_support::spoold::{Spoold, SpooldOptions};

use super::{drain, forwarding, Load, Outcome, Shape};

const CUTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_power_incident() {
    let Some(fs) = PowerCutFs::mount_or_skip("scenario_power_incident") else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = format!("sled://{}", fs.path().join("ledger").display());
    let mut ledger = Ledgerd::start_with(tmp.path(), &store, test_support::free_port()).await.expect("start ledgerd");
    let opts = SpooldOptions { spool_dir: Some(fs.path().join("spool")), ..forwarding(&[&ledger.url]) };
    let mut s = Spoold::start(opts).await.expect("start spoold");
    let load = Load::start(&s, "power", Shape::default());
    let started = Instant::now();
    let mut pages_lost = 0;
    for _ in 0..CUTS {
        load.flows(200, Duration::from_secs(30)).await;
        s.kill9();
        ledger.kill9();
        pages_lost += fs.cut().pages_lost;
        tokio::time::sleep(Duration::from_millis(200)).await;
        ledger.spawn().await.expect("ledgerd back on what survived");
        s.restart().await.expect("spoold back on what survived");
    }
    let recovered = Instant::now();
    load.flows(100, Duration::from_secs(30)).await;
    let report = load.stop().await;
    let drain = drain(&[&s], recovered).await;
    let scale = format!(
        "{CUTS} power cuts of both daemons over {:.1} s, {pages_lost} unsynced 4 KiB pages dropped",
        started.elapsed().as_secs_f64()
    );
    Outcome::new("power_incident", report, drain, "none (SIGKILL + power cut)", scale).check(&ledger).await;
}
