//! Incident: table locks make the ledger slow. ledgerd runs on PostgreSQL
//! (`OFFGRID_PG_URL`, a schema of its own); a second connection holds
//! `LOCK TABLE … IN ACCESS EXCLUSIVE MODE` on the ledger's events table for
//! [`LOCKED_FOR`] while traffic flows. Batches block in the ledger, the
//! forwarder times out and retries (the ledger then answers `duplicate` for
//! what a blocked request recorded late); ingest at the edge never waits for
//! the ledger.

use std::time::{Duration, Instant};

use test_support::ledgerd::Ledgerd;
use test_support::spoold::Spoold;

use super::{drain, forwarding, Load, Outcome, Shape};
use crate::ledger_pg::{drop_schema, pg_base, schema};

const LOCKED_FOR: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_table_locks() {
    let schema = schema("locks");
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = format!("{}?schema={schema}", pg_base());
    let ledger = Ledgerd::start_with(tmp.path(), &store, test_support::free_port()).await.expect("ledgerd on postgres");
    let s = Spoold::start(forwarding(&[&ledger.url])).await.expect("start spoold");
    let load = Load::start(&s, "lock", Shape::default());
    load.flows(300, Duration::from_secs(10)).await;

    let (pg, conn) = tokio_postgres::connect(&pg_base(), tokio_postgres::NoTls).await.expect("connect postgres");
    tokio::spawn(conn);
    pg.batch_execute(&format!("BEGIN; LOCK TABLE {schema}.ledger_events IN ACCESS EXCLUSIVE MODE")).await.expect("lock");
    let locked_at = Instant::now();
    let before = load.acked();
    tokio::time::sleep(LOCKED_FOR).await;
    let during = load.acked() - before;
    pg.batch_execute("COMMIT").await.expect("unlock");
    let recovered = Instant::now();
    let locked_for = locked_at.elapsed();
    assert!(during > 0, "ingest does not wait for a locked ledger");
    let report = load.stop().await;
    let drain = drain(&[&s], recovered).await;

    // The database's own count, besides the ledger's listing.
    let row = pg
        .query_one(&format!("SELECT count(*), count(DISTINCT id) FROM {schema}.ledger_events"), &[])
        .await
        .expect("count rows");
    let (rows, ids): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(rows, ids, "one row per id in the table");
    let scale = format!(
        "ACCESS EXCLUSIVE lock held {:.1} s, {during} events acknowledged meanwhile; {rows} rows",
        locked_for.as_secs_f64()
    );
    Outcome::new("table_locks", report, drain, "none (postgres lock)", scale)
        .check(&ledger)
        .await;
    drop(ledger);
    drop_schema(&schema).await;
}
