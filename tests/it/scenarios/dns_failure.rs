//! Incident: DNS failures. The ledger's name does not resolve. First spoold's
//! only ledger URL is unresolvable (`ledger.invalid`, RFC 6761): events spool
//! up, nothing is lost, the error is visible in `/v1/status`. Then the
//! operator adds a working URL behind the broken one (a config change across a
//! planned restart, given as `--ledger-url` flags): the forwarder tries the
//! unresolvable URL, moves on to the working one, and everything drains.

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::spoold::Spoold;

use super::{drain, forwarding, ledger_count, spoold_status, Load, Outcome, Shape};

const UNRESOLVABLE: &str = "http://ledger.invalid:8800";
const BROKEN_FOR: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_dns_failure() {
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let mut s = Spoold::start(forwarding(&[UNRESOLVABLE])).await.expect("start spoold");
    let load = Load::start(&s, "dns1", Shape::default());
    tokio::time::sleep(BROKEN_FOR).await;
    let mut report = load.stop().await;
    let st = spoold_status(&s).await.expect("status");
    assert_eq!(st["spool"]["pending_events"].as_u64(), Some(report.acked.len() as u64), "{st}");
    assert_eq!(st["ledger"]["up"], false, "{st}");
    let err = st["ledger"]["last_error"].as_str().unwrap_or("");
    assert!(!err.is_empty(), "the resolution failure is reported: {st}");
    eprintln!("dns_failure: /v1/status ledger.last_error = {err:?}");
    assert!(ledger_count(&ledger).await.ids.is_empty());

    let status = s.terminate(Duration::from_secs(20)).expect("SIGTERM");
    assert!(status.success(), "{status:?}\n{}", s.log());
    let flags = ["--ledger-url", UNRESOLVABLE, "--ledger-url", &ledger.url].map(str::to_owned);
    s.restart_with(&flags).await.expect("restart with a working URL");
    let recovered = Instant::now();
    let load = Load::start(&s, "dns2", Shape::default());
    load.flows(500, Duration::from_secs(20)).await;
    report.merge(load.stop().await);
    let drain = drain(&[&s], recovered).await;
    let st = spoold_status(&s).await.expect("status");
    assert_eq!(st["ledger"]["current_url"], ledger.url.as_str(), "moved on past the unresolvable URL: {st}");
    let scale = format!("{} s with only {UNRESOLVABLE}, then restarted with urls [that, a working ledger]", BROKEN_FOR.as_secs());
    Outcome::new("dns_failure", report, drain, "dns (.invalid)", scale)
        .check(&ledger)
        .await;
}
