//! ledgerd on its sled store on the power-cut file system: spoold (on a
//! normal disk) forwards while clients send; the ledger is SIGKILLed and its
//! power cut in the middle of the drain, again and again. spoold marks an
//! event acked only on the ledger's 200, so if the ledger's commit were not
//! durable, acked events would be missing afterwards. After the drain every
//! event spoold acknowledged is at the ledger exactly once.
//!
//! Control (by hand): `OFFGRID_POWERCUT_LEDGER_CONTROL=1` runs ledgerd with
//! the fdatasync skipped (`FAILPOINTS=durable::sync=return(skip)`) and
//! `--accept-store-regression` (else it refuses to restart after the first
//! cut): the test must then fail, counting the missing events.

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::powercut::PowerCutFs;
use test_support::spoold::Spoold;

use super::{cycles, Clients};
use crate::scenarios::{drain, forwarding, ledger_count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powercut_ledgerd_mid_drain_keeps_every_acknowledged_event_once() {
    let Some(fs) = PowerCutFs::mount_or_skip("powercut_ledgerd_mid_drain_keeps_every_acknowledged_event_once") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = format!("sled://{}", fs.path().join("ledger").display());
    let mut ledger = Ledgerd::start_with(tmp.path(), &store, test_support::free_port()).await.expect("start ledgerd");
    if std::env::var_os("OFFGRID_POWERCUT_LEDGER_CONTROL").is_some() {
        ledger.env = vec![("FAILPOINTS".into(), "durable::sync=return(skip)".into())];
        ledger.extra_args = vec!["--accept-store-regression".into()];
        ledger.kill9();
        ledger.spawn().await.expect("ledgerd with the fdatasync skipped");
    }
    let s = Spoold::start(forwarding(&[&ledger.url])).await.expect("start spoold");
    let clients = Clients::start(&s, 8);
    let mut pages_lost = 0;
    let cycles = cycles();
    for cycle in 0..cycles {
        clients.until(300 * (cycle + 1), Duration::from_secs(60)).await;
        ledger.kill9();
        pages_lost += fs.cut().pages_lost;
        ledger.spawn().await.unwrap_or_else(|e| panic!("cycle {cycle}: ledgerd restarts after the cut: {e}\n{}", ledger.log()));
    }
    let acked = clients.stop().await;
    let recovered = Instant::now();
    drain(&[&s], recovered).await;
    let count = ledger_count(&ledger).await;
    let missing: Vec<&String> = acked.keys().filter(|id| !count.ids.contains(*id)).collect();
    eprintln!(
        "powercut ledgerd: cycles={cycles} acked={} at_ledger={} missing={} twice={} unsynced_pages_dropped={pages_lost}",
        acked.len(),
        count.ids.len(),
        missing.len(),
        count.twice
    );
    assert!(missing.is_empty(), "acknowledged but not at the ledger after power cuts: {:?}", &missing[..missing.len().min(10)]);
    assert_eq!(count.twice, 0, "recorded twice");
    assert_eq!(count.ids.len(), acked.len(), "the ledger holds exactly what was acknowledged");
    // How much unsynced data the cuts dropped depends on where each landed
    // (between two commits there is none); the control run in the module docs
    // is what shows that this test fails without the fdatasync.
}
