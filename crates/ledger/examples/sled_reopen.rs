//! How long ledgerd's sled store takes to open as it grows (issue 12: the id
//! index loads its sealed partitions' filters and rebuilds its open partition
//! from the chunks after the last sealed one). Fills a store in
//! `[DIR]` with `[EVENTS]` random-id events in batches of 500 (4 in flight),
//! closes it, then opens it `[OPENS]` times and prints each open's time, the
//! indexes' sizes (from their log lines) and a lookup check: every 1000th id
//! is found again, a resend of a batch is all `duplicate`, and a merchant's
//! sales (payee) and a payer's purchases read back by party, page by page,
//! are exactly the events sent (with each query's time). Prints figures;
//! asserts only what a wrong index would break.
//!
//! `cargo run --release -p ledger --example sled_reopen -- DIR [EVENTS] [OPENS]`
//! (defaults 1000000, 3).

use std::time::Instant;

use ledger::sled_store::SledStore;
use ledger::{Filter, IncomingEvent, Outcome, Store};
use spool_format::{Event, OffsetDateTime};

fn payer(i: u64) -> String {
    format!("9c8b7a6d-5e4f-4a3b-2c1d-{:012x}", i % 100_000)
}

fn payee(i: u64) -> String {
    format!("2b6f0d1e-4c1a-4f9e-9a6b-{:012x}", i % 200)
}

/// Reads every event of `f`'s party page by page; checks they come in
/// ledger order and are exactly the events `want` (indexes into the events
/// sent; batches went in four at a time, so not in that order).
async fn read_back(s: &SledStore, f: Filter, want: Vec<u64>, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut seqs = Vec::new();
    let mut f = f;
    loop {
        let page = s.query(f.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        for e in page.events {
            seqs.push(e.ledger_seq);
            got.push(e.event.id);
        }
        match page.next_after {
            Some(a) => f.after = a,
            None => break,
        }
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "{what}: not in ledger order");
    let mut want: Vec<String> = want.into_iter().map(|i| event(i).id).collect();
    want.sort();
    got.sort();
    anyhow::ensure!(got == want, "{what}: {} events read back, {} sent, not the same", got.len(), want.len());
    println!("{what}: {} events in {:.1} ms", got.len(), elapsed.as_secs_f64() * 1e3);
    Ok(())
}

fn event(i: u64) -> Event {
    Event::from_json_value(&serde_json::json!({
        "id": format!("sl-{:016x}-{i}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "kind": "purchase", "amount": 250, "currency": "L$",
        "payer": payer(i),
        "payee": payee(i),
        "occurred_at": "2026-11-24T12:00:00Z",
        "item": "Mesh Sofa Deluxe (copy/mod)", "region": "Casper Isle", "terminal": "vendor-42"
    }))
    .expect("valid event")
}

fn batch(first: u64, n: u64) -> Vec<IncomingEvent> {
    (first..first + n).map(|i| IncomingEvent { node_seq: i, received_at: OffsetDateTime::now_utc(), event: event(i) }).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("usage: sled_reopen DIR [EVENTS] [OPENS]"))?);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let opens: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    {
        let s = SledStore::open(&dir, false).map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        let mut next = 0u64;
        while next < events {
            let mut tasks = Vec::new();
            for _ in 0..4 {
                if next >= events {
                    break;
                }
                let n = 500.min(events - next);
                let s = s.clone();
                let b = batch(next, n);
                tasks.push(tokio::spawn(async move { s.record_batch("edge-1", b).await }));
                next += n;
            }
            for t in tasks {
                t.await?.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        println!("filled {events} events in {:.1} s", started.elapsed().as_secs_f64());
        s.close().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    for _ in 0..opens {
        let started = Instant::now();
        let s = SledStore::open(&dir, false).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("open: {:.3} s", started.elapsed().as_secs_f64());
        for i in (0..events).step_by(1000) {
            let want = event(i);
            let got = s.get(&want.id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(got.is_some_and(|g| g.event == want), "id {i} not found");
        }
        let out = s.record_batch("edge-2", batch(events / 2, 500)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(out.iter().all(|o| matches!(o, Outcome::Duplicate { .. })), "a resend was not all duplicate");
        let uuid = |s: String| s.parse().expect("uuid");
        let f = Filter { payee: Some(uuid(payee(7))), limit: 1000, ..Filter::default() };
        read_back(&s, f, (0..events).filter(|i| i % 200 == 7).collect(), "payee 7").await?;
        let f = Filter { payer: Some(uuid(payer(12_345))), limit: 1000, ..Filter::default() };
        read_back(&s, f, (0..events).filter(|i| i % 100_000 == 12_345).collect(), "payer 12345").await?;
    }
    Ok(())
}
