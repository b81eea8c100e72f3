//! A failing fsync, end to end: the failpoint `durable::sync` makes the
//! fdatasync of a commit fail (EIO) after the commits of the open. spoold
//! answers 503 `storage_failed` (never 2xx for what the failed commit
//! covered), `/readyz` stops answering 200, and spoold exits non-zero so that
//! systemd reopens the spool. Restarted without the fault, every event it
//! acknowledged before is still there.

use std::time::Duration;

use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN};

use super::random_event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powercut_failed_fsync_answers_storage_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Commits 1-2 are the open's (clean-marker removal, store id); the next
    // ten serve requests; then every fdatasync fails.
    let opts = SpooldOptions { spool_dir: Some(dir.path().join("spool")), ..SpooldOptions::default() }
        .env("FAILPOINTS", "durable::sync=12*off->return");
    let mut s = Spoold::start(opts).await.expect("start spoold");
    assert!(s.log().contains("failpoints are compiled in"), "build spoold with --features failpoints: {}", s.log());
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let mut acked = Vec::new();
    let mut refused = None;
    for _ in 0..100 {
        let e = random_event();
        let r = c.post(s.url("/v1/events")).bearer_auth(TEST_TOKEN).json(&e).send().await.expect("post");
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.expect("json body");
        match status {
            202 => acked.push(e),
            503 => {
                refused = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let refused = refused.expect("a failing fsync must be answered 503");
    assert_eq!(refused["error"]["code"], "storage_failed", "{refused}");
    assert!(!acked.is_empty(), "some events were acknowledged before the fault");
    // Never ready again; the process leaves so that it is restarted.
    let ready = c.get(s.url("/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
    assert_ne!(ready, 200, "/readyz must not be 200 after a failed fsync");
    let status = s.process.as_mut().expect("process").wait_exit(Duration::from_secs(30)).expect("spoold exits");
    assert!(!status.success(), "spoold exits non-zero after a failed fsync: {status:?}");
    // Restarted without the fault: what was acknowledged is there.
    s.env.clear();
    s.restart().await.expect("restart without the failpoint");
    for e in &acked {
        let r = c.post(s.url("/v1/events")).bearer_auth(TEST_TOKEN).json(e).send().await.expect("resend");
        assert_eq!(r.status().as_u16(), 200, "acknowledged before the fault, so a duplicate now");
    }
    eprintln!("powercut storage: acked_before_fault={} then 503 storage_failed, exit {status:?}", acked.len());
}
