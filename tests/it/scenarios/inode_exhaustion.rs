//! Incident: inode exhaustion with free disk. The spool lives on a small
//! tmpfs with few inodes; something else on the box uses them up while bytes
//! stay free. spoold answers 507 `insufficient_storage` under its
//! `disk_free_inodes_min` reserve (acknowledging nothing), the clients retry,
//! and once inodes are freed ingest resumes by itself; nothing acknowledged is
//! lost.
//!
//! Needs root (to mount the tmpfs); otherwise it prints why and skips.

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::spoold::{Spoold, SpooldOptions};
use test_support::tmpfs::Tmpfs;

use super::{drain, forwarding, spoold_status, Load, Outcome, Shape};

/// 64 MiB (bytes never run out here) and 1,024 inodes.
const TMPFS_OPTS: &str = "size=64m,nr_inodes=1024";
const RESERVE_INODES: u64 = 300;
const EXHAUSTED_FOR: Duration = Duration::from_secs(3);

async fn free_inodes(s: &Spoold) -> u64 {
    let st = spoold_status(s).await.expect("status");
    st["disk"]["free_inodes"].as_u64().expect("free_inodes")
}

async fn wait_ready(s: &Spoold, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = reqwest::get(s.url("/readyz")).await.map(|r| r.status().as_u16()).unwrap_or(0);
        if code == want {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz answered {code}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_inode_exhaustion() {
    let Some(tmpfs) = Tmpfs::mount_or_skip(TMPFS_OPTS, "scenario_inode_exhaustion") else { return };
    let mnt = tmpfs.path();
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let opts = SpooldOptions { spool_dir: Some(mnt.join("spool")), ..forwarding(&[&ledger.url]) }
        .spool(&format!("disk_free_inodes_min = {RESERVE_INODES}"))
        .spool("disk_free_bytes_min = 0");
    let s = Spoold::start(opts).await.expect("start spoold");
    let load = Load::start(&s, "inode", Shape::default());
    load.flows(300, Duration::from_secs(10)).await;

    let filler = mnt.join("inode-filler");
    let made = Tmpfs::fill_inodes(&filler, free_inodes(&s).await, RESERVE_INODES - 10).expect("fill inodes");
    wait_ready(&s, 503).await;
    // What was in flight when the reserve was crossed settles; then nothing
    // more is acknowledged until inodes are freed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = load.acked();
    tokio::time::sleep(EXHAUSTED_FOR).await;
    assert_eq!(load.acked(), before, "nothing is acknowledged without inodes");
    let st = spoold_status(&s).await.expect("status");
    assert!(st["disk"]["free_bytes"].as_u64().unwrap_or(0) > 32 << 20, "bytes are free, only inodes ran out: {st}");

    std::fs::remove_dir_all(&filler).expect("free the inodes");
    wait_ready(&s, 200).await;
    let recovered = Instant::now();
    load.flows(300, Duration::from_secs(10)).await;
    let report = load.stop().await;
    let refused = report.retried.get(&507).copied().unwrap_or(0);
    assert!(refused > 0, "clients were answered 507 while inodes were exhausted: {:?}", report.retried);
    let drain = drain(&[&s], recovered).await;
    let scale = format!(
        "{made} inodes taken for {} s (reserve {RESERVE_INODES}), {refused} answers 507 retried by the clients",
        EXHAUSTED_FOR.as_secs()
    );
    Outcome::new("inode_exhaustion", report, drain, "none (tmpfs)", scale)
        .check(&ledger)
        .await;
    // spoold must stop before the tmpfs goes away.
    drop(s);
}
