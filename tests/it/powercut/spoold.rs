//! spoold on the power-cut file system: 16 clients send random events, spoold
//! is SIGKILLed and the power is cut, spoold restarts on what survived, and
//! every acknowledged event is resent: each must answer 200 duplicate with the
//! seq it was acknowledged with. New events get seqs above every acknowledged
//! one (no reuse), and `spoolctl verify` is clean at the end.
//!
//! The control: the same with the fdatasync of the commit skipped (failpoint
//! `durable::sync=return(skip)`): acknowledged events are lost, and the state
//! file makes spoold refuse to start (exit 4, naming what is missing) until
//! the operator passes `--accept-store-regression`; seqs are still not reused.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use test_support::powercut::PowerCutFs;
use test_support::spoold::{Spoold, SpooldOptions};

use super::{cycles, new_seq, resend, Acked, Clients};

const CLIENTS: usize = 16;

fn options(fs: &PowerCutFs) -> SpooldOptions {
    SpooldOptions { spool_dir: Some(fs.path().join("spool")), ..SpooldOptions::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powercut_spoold_acknowledged_events_survive() {
    let Some(fs) = PowerCutFs::mount_or_skip("powercut_spoold_acknowledged_events_survive") else { return };
    let mut s = Spoold::start(options(&fs)).await.expect("start spoold on the power-cut fs");
    let mut all: HashMap<String, Acked> = HashMap::new();
    let mut pages_lost = 0u64;
    let cycles = cycles();
    for cycle in 0..cycles {
        let clients = Clients::start(&s, CLIENTS);
        clients.until(200 + 50 * cycle, Duration::from_secs(30)).await;
        // The cut lands in the middle of the traffic.
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.kill9();
        let report = fs.cut();
        pages_lost += report.pages_lost;
        let acked = clients.stop().await;
        assert!(!acked.is_empty(), "cycle {cycle}: nothing was acknowledged");
        all.extend(acked);
        s.restart().await.unwrap_or_else(|e| panic!("cycle {cycle}: spoold restarts after the cut: {e}"));
        let r = resend(&s, &all).await;
        assert!(
            r.lost.is_empty() && r.wrong_seq.is_empty(),
            "cycle {cycle}: {} of {} acknowledged events lost ({:?}), wrong seqs {:?}\n{}",
            r.lost.len(),
            all.len(),
            &r.lost[..r.lost.len().min(5)],
            &r.wrong_seq[..r.wrong_seq.len().min(5)],
            s.log()
        );
        assert_eq!(r.survived, all.len());
        let max_acked = all.values().map(|a| a.seq).max().unwrap_or(0);
        let next = new_seq(&s).await;
        assert!(next > max_acked, "cycle {cycle}: new event got seq {next}, at or below acknowledged seq {max_acked}");
    }
    let seqs: HashSet<u64> = all.values().map(|a| a.seq).collect();
    assert_eq!(seqs.len(), all.len(), "no seq was acknowledged for two events");
    s.terminate(Duration::from_secs(20)).expect("stop spoold");
    let verify = std::process::Command::new(test_support::bin_path("spoolctl"))
        .arg("--spool-dir")
        .arg(&s.spool_dir)
        .arg("verify")
        .output()
        .expect("run spoolctl verify");
    assert!(
        verify.status.success(),
        "spoolctl verify after {cycles} cuts: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    eprintln!(
        "powercut spoold: cycles={cycles} clients={CLIENTS} acked={} survived={} lost=0 unsynced_pages_dropped={pages_lost}",
        all.len(),
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powercut_spoold_control_without_fsync_loses_events_and_refuses_to_start() {
    let Some(fs) = PowerCutFs::mount_or_skip("powercut_spoold_control_without_fsync_loses_events_and_refuses_to_start")
    else {
        return;
    };
    let opts = options(&fs).env("FAILPOINTS", "durable::sync=return(skip)");
    let mut s = Spoold::start(opts).await.expect("start spoold on the power-cut fs");
    assert!(
        s.log().contains("failpoints are compiled in"),
        "spoold must be built with --features failpoints (scripts/test.sh does): {}",
        s.log()
    );
    let clients = Clients::start(&s, CLIENTS);
    clients.until(500, Duration::from_secs(30)).await;
    // Past the state file's interval, so that it records part of what was acknowledged.
    tokio::time::sleep(durable::STATE_SYNC_INTERVAL + Duration::from_millis(300)).await;
    s.kill9();
    fs.cut();
    let acked = clients.stop().await;
    let max_acked = acked.values().map(|a| a.seq).max().expect("events were acknowledged");

    // The state file says more was durable than sled holds: refused, loudly.
    let (status, out) = s.run_to_exit(&[], Duration::from_secs(30)).expect("spoold exits by itself");
    assert_eq!(status.code(), Some(4), "exit 4 = store regressed: {out}");
    assert!(out.contains("acknowledged data was lost") && out.contains("was made durable"), "{out}");

    // The operator accepts the loss explicitly: spoold starts, says so, and
    // the resend shows what the missing fsync cost.
    s.restart_with(&["--accept-store-regression".to_owned()]).await.expect("start with the override");
    let metrics = reqwest::get(s.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("spoold_store_regression_accepted 1"), "{metrics}");
    let r = resend(&s, &acked).await;
    assert!(!r.lost.is_empty(), "without the fdatasync a power cut must lose acknowledged events; none lost of {}", acked.len());
    let next = new_seq(&s).await;
    assert!(next > max_acked, "seq {next} reused after the regression (acknowledged up to {max_acked})");
    eprintln!(
        "powercut spoold control (fdatasync skipped): acked={} lost={} survived={} refused_exit=4",
        acked.len(),
        r.lost.len(),
        r.survived
    );
}
