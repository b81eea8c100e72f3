//! The two ways `PgStore` can write a batch, measured side by side on the
//! same PostgreSQL without HTTP in front (issue 12): binary COPY into the
//! staging table + one INSERT … SELECT (ledgerd's method) against one INSERT
//! from `unnest` of typed arrays. Rounds alternate the methods (A B A B …) so
//! that other load on the machine hits both alike; each round writes fresh
//! ids into its own schema. Prints events/s per round; asserts nothing.
//!
//! `cargo run --release -p ledger --example pg_ingest_methods -- [ROUNDS] [BATCHES] [BATCH_EVENTS] [INFLIGHT]`
//! (defaults 3, 200, 500, 4), `OFFGRID_PG_URL` as for the tests.

use std::time::Instant;

use ledger::pg_store::{IngestMethod, PgStore};
use ledger::{IncomingEvent, Store};
use spool_format::{Event, OffsetDateTime};

fn arg(n: usize, default: usize) -> usize {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn event(id: &str) -> Event {
    Event::from_json_value(&serde_json::json!({
        "id": id, "kind": "purchase", "amount": 250, "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "recipient": "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0",
        "occurred_at": "2026-11-24T12:00:00Z",
        "item": "Mesh Sofa Deluxe (copy/mod)", "region": "Casper Isle", "terminal": "vendor-42"
    }))
    .expect("valid event")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (rounds, batches, batch_events, inflight) = (arg(1, 3), arg(2, 200), arg(3, 500), arg(4, 4));
    let base = std::env::var("OFFGRID_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    println!("{rounds} rounds × 2 methods, {batches} batches of {batch_events} events, {inflight} in flight");
    for round in 0..rounds {
        for method in [IngestMethod::Copy, IngestMethod::Unnest] {
            let url = format!("{base}?schema=bench_ingest_{}_{round}_{}", std::process::id(), format!("{method:?}").to_lowercase());
            let store = PgStore::new(&url)?.with_ingest_method(method);
            store.health().await?;
            // Build every batch before the clock starts.
            let all: Vec<Vec<IncomingEvent>> = (0..batches)
                .map(|b| {
                    (0..batch_events)
                        .map(|i| IncomingEvent {
                            node_seq: (b * batch_events + i) as u64,
                            received_at: OffsetDateTime::now_utc(),
                            event: event(&format!("ev-{b}-{i}")),
                        })
                        .collect()
                })
                .collect();
            let queue = std::sync::Arc::new(tokio::sync::Mutex::new(all));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..inflight {
                let (store, queue) = (store.clone(), std::sync::Arc::clone(&queue));
                tasks.push(tokio::spawn(async move {
                    loop {
                        let Some(batch) = queue.lock().await.pop() else { return anyhow::Ok(()) };
                        store.record_batch("bench", batch).await?;
                    }
                }));
            }
            for t in tasks {
                t.await??;
            }
            let secs = started.elapsed().as_secs_f64();
            println!("round {round} {method:?}: {:.0} events/s", (batches * batch_events) as f64 / secs);
            store.drop_schema().await?;
        }
    }
    Ok(())
}
