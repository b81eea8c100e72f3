//! Slow-loris: 1,000 connections trickle header bytes; the server cuts each at
//! the header read timeout, and a normal client keeps getting answers all along.

use std::time::{Duration, Instant};

use test_support::loris::Loris;
use test_support::spoold::{Spoold, SpooldOptions};

use super::{client_for, event, post_json};

const SLOW_CONNECTIONS: usize = 1000;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the slow clients keep trickling if nobody cuts them.
const TRICKLE_FOR: Duration = Duration::from_secs(9);
const TRICKLE_EVERY: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_slowloris_does_not_stall_others() {
    slowloris(false).await;
}

/// The same over TLS: each slow client completes its handshake and then
/// trickles its headers inside the TLS stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_slowloris_does_not_stall_others_over_tls() {
    slowloris(true).await;
}

async fn slowloris(tls: bool) {
    let s = Spoold::start(SpooldOptions::default().tls(tls).limits("header_read_timeout = \"3s\""))
        .await
        .expect("start spoold");
    let slow = Loris::start_with(&s.connector(), &s.addr(), SLOW_CONNECTIONS, TRICKLE_EVERY, TRICKLE_FOR);

    // Meanwhile, a normal client sends events on fresh connections.
    let c = client_for(&s);
    let mut ok = 0usize;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let r = post_json(&c, &s, "/v1/events", &event(&format!("loris-{i}"))).await;
        let took = t.elapsed();
        slowest = slowest.max(took);
        if r.status == 202 {
            ok += 1;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = slow.finish().await;
    let (connected, cut) = (report.connected, report.cut);
    eprintln!("slowloris (TLS {tls}): {connected} slow connections, {cut} cut by the server; normal client {ok} ok, slowest {slowest:?}");
    assert!(connected >= SLOW_CONNECTIONS * 95 / 100, "only {connected} slow connections were established");
    assert!(
        cut >= connected * 99 / 100,
        "the server cut only {cut} of {connected} trickling connections within {TRICKLE_FOR:?}"
    );
    assert!(ok >= 20, "the normal client got only {ok} answers while slow clients trickled");
    assert!(
        slowest < HEADER_READ_TIMEOUT,
        "a normal request took {slowest:?}, as long as the header timeout: slow clients stalled it"
    );
    assert!(s.log().is_empty() || !s.log().contains("panicked"), "{}", s.log());
}
