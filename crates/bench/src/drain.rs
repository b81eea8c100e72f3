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

use anyhow::Context as _;
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

/// A bench event with a random id (`sl-<uuid4>`, [`crate::ids`]).
pub fn event() -> Event {
    Event::from_json_value(&json!({
        "id": crate::ids::random_id(),
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

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> anyhow::Result<u64> {
    crate::procs::status_kib(None, "VmRSS:")
}

/// Concurrent `append_batch` streams while filling a backlog: batches of
/// several streams share a group commit.
const FILL_STREAMS: u64 = 4;
/// Events per `append_batch` while filling (spoold's default batch limit).
const FILL_BATCH_EVENTS: u64 = 1000;

/// Opens the spool in `dir` (node `bench-node`) and appends `n` events to it
/// (random ids `sl-<uuid4>`), durably, in batches.
pub async fn fill(dir: &std::path::Path, n: u64) -> anyhow::Result<Spool> {
    let mut cfg = SpoolConfig::for_dir(dir);
    cfg.node_id = "bench-node".into();
    let spool = Spool::open(cfg).context("open the spool")?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for stream in 0..FILL_STREAMS {
        let spool = spool.clone();
        tasks.spawn(async move {
            // Stream `stream` takes every FILL_STREAMS-th batch.
            let mut i = stream * FILL_BATCH_EVENTS;
            while i < n {
                let end = (i + FILL_BATCH_EVENTS).min(n);
                for r in spool.append_batch((i..end).map(|_| event()).collect()).await {
                    r.context("append to the spool")?;
                }
                i += FILL_STREAMS * FILL_BATCH_EVENTS;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("  backlog: {n} events spooled in {secs:.1} s ({:.0} events/s)", n as f64 / secs.max(1e-9));
    Ok(spool)
}

/// One drain: throughput and this process's RSS (spool + forwarder).
#[derive(Debug, Clone, Copy)]
pub struct DrainResult {
    pub events_per_sec: f64,
    pub rss_start_kib: u64,
    pub rss_max_kib: u64,
}

/// The PostgreSQL half of `bench drain`.
#[derive(Debug, Clone)]
pub enum PgDrain {
    /// `--skip-pg`.
    Skipped,
    /// It could not run (PostgreSQL down, …): why.
    Failed(String),
    Done {
        drain: DrainResult,
        /// Direct single-row INSERTs, events/s.
        baseline: f64,
    },
}

/// The figures of `bench drain`.
#[derive(Debug, Clone)]
pub struct DrainReport {
    pub events: u64,
    pub batch_events: usize,
    pub inflight: usize,
    pub baseline_seconds: u64,
    pub sled: DrainResult,
    pub pg: PgDrain,
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
    let rss_start = rss_kib()?;
    let mut rss_max = rss_start;
    let mut last_report = Instant::now();
    loop {
        let pending = spool.stats()?.pending_events;
        rss_max = rss_max.max(rss_kib()?);
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
    for _ in 0..conns {
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
                let e = event();
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
    let r = rt.block_on(measure(&args))?;
    print_drain("ledgerd/sled", &r.sled);
    match &r.pg {
        PgDrain::Skipped => {}
        PgDrain::Failed(why) => anyhow::bail!("the PostgreSQL runs failed: {why}"),
        PgDrain::Done { drain, baseline } => {
            print_drain("ledgerd/PostgreSQL", drain);
            println!("baseline: direct single-row INSERTs, {} connections, {} s: {baseline:.0} events/s", r.inflight, r.baseline_seconds);
            println!(
                "ratio: ledgerd/PostgreSQL drain = {:.1}x direct single-row INSERTs; ledgerd/sled drain = {:.1}x",
                drain.events_per_sec / baseline,
                r.sled.events_per_sec / baseline
            );
        }
    }
    println!("process peak RSS (VmHWM, includes the backlog fill): {} MiB", crate::procs::status_kib(None, "VmHWM:")? / 1024);
    Ok(())
}

fn print_drain(name: &str, d: &DrainResult) {
    println!(
        "{name}: drained at {:.0} events/s; process RSS {} MiB at drain start, {} MiB max during the drain",
        d.events_per_sec,
        d.rss_start_kib / 1024,
        d.rss_max_kib / 1024
    );
}

/// Runs `bench drain`, printing progress; the figures as data. A PostgreSQL
/// failure is reported in [`DrainReport::pg`], after the sled figures.
pub async fn measure(args: &DrainArgs) -> anyhow::Result<DrainReport> {
    let tmp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir)).context("create the drain bench dir")?;
    println!(
        "bench drain: {} events, batches of {}, {} in flight; ledgerd release binary; {} CPUs",
        args.events,
        args.batch_events,
        args.inflight,
        crate::cores()
    );

    println!("ledgerd/sled:");
    let spool = fill(&tmp.path().join("spool-sled"), args.events).await?;
    let ledger = Ledgerd::start_with(
        &tmp.path().join("ledger-sled"),
        &format!("sled://{}", tmp.path().join("ledger-sled/store").display()),
        test_support::free_port(),
    )
    .await
    .context("start ledgerd/sled")?;
    let sled = drain(&spool, &ledger.url, args).await?;
    print_drain("  ledgerd/sled", &sled);
    drop(ledger);
    spool.close();
    drop(spool);

    let pg = if args.skip_pg {
        PgDrain::Skipped
    } else {
        match drain_pg(args, tmp.path()).await {
            Ok((drain, baseline)) => PgDrain::Done { drain, baseline },
            Err(e) => {
                println!("  PostgreSQL runs failed: {e:#}");
                PgDrain::Failed(format!("{e:#}"))
            }
        }
    };
    Ok(DrainReport {
        events: args.events,
        batch_events: args.batch_events,
        inflight: args.inflight,
        baseline_seconds: args.baseline_seconds,
        sled,
        pg,
    })
}

/// The ledgerd/PostgreSQL drain and the direct-INSERT baseline, in a schema of
/// their own that is dropped afterwards.
async fn drain_pg(args: &DrainArgs, tmp: &std::path::Path) -> anyhow::Result<(DrainResult, f64)> {
    println!("ledgerd/PostgreSQL:");
    // Fail early, before the fill, when PostgreSQL is down.
    pg_client(&args.pg_url).await.with_context(|| format!("connect to {}", args.pg_url))?;
    let schema = format!("bench_drain_{}", std::process::id());
    let spool = fill(&tmp.join("spool-pg"), args.events).await?;
    let result = async {
        let ledger = Ledgerd::start_with(
            &tmp.join("ledger-pg"),
            &format!("{}?schema={schema}", args.pg_url),
            test_support::free_port(),
        )
        .await
        .context("start ledgerd/PostgreSQL")?;
        let pg = drain(&spool, &ledger.url, args).await?;
        drop(ledger);
        print_drain("  ledgerd/PostgreSQL", &pg);
        println!("baseline: direct single-row INSERTs, {} connections, {} s:", args.inflight, args.baseline_seconds);
        let base = baseline(&args.pg_url, &schema, args.inflight, args.baseline_seconds).await?;
        println!("  {base:.0} events/s");
        anyhow::Ok((pg, base))
    }
    .await;
    spool.close();
    let admin = pg_client(&args.pg_url).await?;
    admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.context("drop the bench schema")?;
    result
}
