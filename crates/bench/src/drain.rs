//! `bench drain`: how fast the forwarder drains a spool backlog into ledgerd,
//! on the sled store and on PostgreSQL, against a baseline measured in the same
//! run on the same PostgreSQL:
//! - *direct single-row INSERTs*: `inflight` connections each inserting one
//!   event per autocommit statement (`INSERT … ON CONFLICT (id) DO NOTHING`)
//!   into a table shaped like ledgerd's (same columns and indexes). This is
//!   what a client writing straight to the database, one payment at a time,
//!   would get.
//!
//! The spool and the forwarder run in this process; ledgerd is the real
//! release binary (`cargo build --release -p ledger` first). The RSS figures
//! are this process's (spool + forwarder + the spool's sled cache), sampled
//! during the drain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forwarder::{ForwardMetrics, ForwarderConfig, Secret};
use serde_json::json;
use spool::{Spool, SpoolConfig};
use spool_format::Event;
use test_support::ledgerd::{Ledgerd, NODE_TOKEN};

/// Options of `bench drain`.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// Events in the backlog (1000000 for the full run).
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Forwarder batch size, in events (the spoold default).
    #[arg(long, default_value_t = 500)]
    pub batch_events: usize,
    /// Batches in flight (the spoold default).
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    /// PostgreSQL for the ledgerd/PostgreSQL run and the baseline.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg_url: String,
    /// Skip the PostgreSQL runs.
    #[arg(long)]
    pub skip_pg: bool,
    /// Seconds of direct single-row INSERTs for the baseline.
    #[arg(long, default_value_t = 10)]
    pub baseline_seconds: u64,
    /// Directory for the spool and the sled ledger (default: a temp dir).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

fn event(i: u64) -> Event {
    Event::from_json_value(&json!({
        "id": format!("drain-{i}"),
        "kind": "purchase",
        "amount": 250,
        "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "recipient": "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0",
        "occurred_at": "2026-11-24T12:00:00Z",
        "item": "Mesh Sofa Deluxe (copy/mod)",
        "region": "Casper Isle",
        "terminal": "vendor-42",
        "attributes": {"rental_period_days": "7"}
    }))
    .expect("valid bench event")
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn fill(dir: &std::path::Path, n: u64) -> anyhow::Result<Spool> {
    let mut cfg = SpoolConfig::for_dir(dir);
    cfg.node_id = "bench-node".into();
    let spool = Spool::open(cfg)?;
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        for r in spool.append_batch((i..end).map(event).collect()).await {
            r?;
        }
        i = end;
    }
    println!("  backlog: {n} events spooled in {:.1} s", started.elapsed().as_secs_f64());
    Ok(spool)
}

struct DrainResult {
    events_per_sec: f64,
    rss_start_kib: u64,
    rss_max_kib: u64,
}

async fn drain(spool: &Spool, ledger_url: &str, args: &DrainArgs) -> anyhow::Result<DrainResult> {
    let mut cfg = ForwarderConfig::new("bench-node", vec![ledger_url.to_owned()], Secret::new(NODE_TOKEN));
    cfg.batch_events_max = args.batch_events;
    cfg.inflight_batches_max = args.inflight;
    cfg.request_timeout = Duration::from_secs(30);
    let metrics = ForwardMetrics::default();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let pending0 = spool.stats()?.pending_events;
    let started = Instant::now();
    let (_handle, task) = forwarder::spawn(spool.clone(), cfg, metrics.clone(), rx)?;
    let rss_start = rss_kib().0;
    let mut rss_max = rss_start;
    let mut last_report = Instant::now();
    loop {
        let pending = spool.stats()?.pending_events;
        rss_max = rss_max.max(rss_kib().0);
        if pending == 0 {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!("    … {pending} pending, {:.0} s", started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = tx.send(true);
    let _ = task.await;
    let retries = metrics.retries_total.get();
    if retries > 0 {
        println!("    ({retries} retries during the drain)");
    }
    Ok(DrainResult { events_per_sec: pending0 as f64 / secs, rss_start_kib: rss_start, rss_max_kib: rss_max })
}

async fn pg_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Direct single-row autocommit INSERTs from `conns` connections for `secs`.
async fn baseline(url: &str, schema: &str, conns: usize, secs: u64) -> anyhow::Result<f64> {
    let admin = pg_client(url).await?;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {schema}.direct_events (LIKE {schema}.ledger_events INCLUDING ALL)"
        ))
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let client = pg_client(url).await?;
        let done = Arc::clone(&done);
        let sql = format!(
            "INSERT INTO {schema}.direct_events (id, digest, node, node_seq, received_at, payer, payee, recipient, event)
             VALUES ($1, $2, 'bench-node', $3, now(), $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING ledger_seq"
        );
        tasks.push(tokio::spawn(async move {
            let stmt = client.prepare(&sql).await?;
            let mut i: u64 = 0;
            while Instant::now() < deadline {
                let e = event(i * 1000 + c as u64);
                let body = serde_json::to_string(&e.to_json_value())?;
                let digest = e.digest().to_vec();
                let seq = i64::try_from(i)?;
                client
                    .query(&stmt, &[&e.id, &digest, &seq, &e.payer.to_string(), &e.payee.to_string(), &e.recipient.to_string(), &body])
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

pub fn run(args: DrainArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: DrainArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    println!(
        "bench drain: {} events, batches of {}, {} in flight; ledgerd release binary; {} CPUs",
        args.events,
        args.batch_events,
        args.inflight,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );

    println!("ledgerd/sled:");
    let spool = fill(&tmp.path().join("spool-sled"), args.events).await?;
    let ledger = Ledgerd::start_with(
        &tmp.path().join("ledger-sled"),
        &format!("sled://{}", tmp.path().join("ledger-sled/store").display()),
        test_support::free_port(),
    )
    .await?;
    let sled = drain(&spool, &ledger.url, &args).await?;
    println!(
        "  drained at {:.0} events/s; process RSS {} MiB at drain start, {} MiB max during the drain",
        sled.events_per_sec,
        sled.rss_start_kib / 1024,
        sled.rss_max_kib / 1024
    );
    drop(ledger);
    spool.close();
    drop(spool);

    if args.skip_pg {
        return Ok(());
    }
    println!("ledgerd/PostgreSQL:");
    let schema = format!("bench_drain_{}", std::process::id());
    let spool = fill(&tmp.path().join("spool-pg"), args.events).await?;
    let ledger = Ledgerd::start_with(
        &tmp.path().join("ledger-pg"),
        &format!("{}?schema={schema}", args.pg_url),
        test_support::free_port(),
    )
    .await?;
    let pg = drain(&spool, &ledger.url, &args).await;
    drop(ledger);
    let result = async {
        let pg = pg?;
        println!(
            "  drained at {:.0} events/s; process RSS {} MiB at drain start, {} MiB max during the drain",
            pg.events_per_sec,
            pg.rss_start_kib / 1024,
            pg.rss_max_kib / 1024
        );
        println!("baseline: direct single-row INSERTs, {} connections, {} s:", args.inflight, args.baseline_seconds);
        let base = baseline(&args.pg_url, &schema, args.inflight, args.baseline_seconds).await?;
        println!("  {base:.0} events/s");
        println!(
            "ratio: ledgerd/PostgreSQL drain = {:.1}x direct single-row INSERTs; ledgerd/sled drain = {:.1}x",
            pg.events_per_sec / base,
            sled.events_per_sec / base
        );
        anyhow::Ok(())
    }
    .await;
    let admin = pg_client(&args.pg_url).await?;
    admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
    let (_, hwm) = rss_kib();
    println!("process peak RSS (VmHWM, includes the backlog fill): {} MiB", hwm / 1024);
    result
}
