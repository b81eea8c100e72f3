//! Slow-loris: 1,000 connections trickle header bytes; the server cuts each at
//! the header read timeout, and a normal client keeps getting answers all along.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use test_support::spoold::{Spoold, SpooldOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{client, event, post_json};

const SLOW_CONNECTIONS: usize = 1000;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the slow clients keep trickling if nobody cuts them.
const TRICKLE_FOR: Duration = Duration::from_secs(9);
const TRICKLE_EVERY: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_slowloris_does_not_stall_others() {
    let s = Spoold::start(SpooldOptions::default().limits("header_read_timeout = \"3s\""))
        .await
        .expect("start spoold");
    let addr = s.addr();
    let cut = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(AtomicUsize::new(0));
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..SLOW_CONNECTIONS {
        let addr = addr.clone();
        let cut = Arc::clone(&cut);
        let connected = Arc::clone(&connected);
        slow.spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(&addr).await else { return };
            connected.fetch_add(1, Ordering::Relaxed);
            let (mut rd, mut wr) = stream.into_split();
            let started = Instant::now();
            let head = format!("POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ");
            if wr.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 512];
            loop {
                tokio::select! {
                    // The server closing the connection (EOF or reset) is the cut.
                    _ = rd.read(&mut buf) => {
                        cut.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    _ = tokio::time::sleep(TRICKLE_EVERY) => {
                        if started.elapsed() > TRICKLE_FOR {
                            return;
                        }
                        if wr.write_all(b"a").await.is_err() {
                            cut.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        });
    }

    // Meanwhile, a normal client sends events on fresh connections.
    let c = client();
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
    while slow.join_next().await.is_some() {}

    let connected = connected.load(Ordering::Relaxed);
    let cut = cut.load(Ordering::Relaxed);
    eprintln!("slowloris: {connected} slow connections, {cut} cut by the server; normal client {ok} ok, slowest {slowest:?}");
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
