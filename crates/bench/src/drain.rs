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
//!
//! With `--spoold`, the same backlog is also drained end to end by the real
//! `spoold` binary: the spool is filled in-process (ids `sl-<uuid4>`, as
//! vendors send them; 200 merchants, 100 000 payers), ledgerd is started, then
//! spoold is started on the full spool with `[ledger] batch_events_max` and
//! `inflight_batches_max` from `--batch-events`/`--inflight`, and the drain is
//! timed from spoold's start until its `GET /v1/status` counts no pending
//! event. Reported: events/s, ledgerd's and spoold's CPU per event
//! (utime + stime of `/proc/<pid>/stat` over the drain), the mean batch
//! ledgerd saw (`ledgerd_events_total` over `ledgerd_batch_duration_seconds`
//! count) and the most batches spoold reported in flight. `--ledgerd-before
//! NAME` drains the same way into another ledgerd binary next to the bench
//! (an earlier build copied there, e.g. `target/release/ledgerd-before`), in
//! the same run, for a before/after. `--repeats N` runs everything N times,
//! interleaved, and prints medians: the machine is shared and noisy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use forwarder::{ForwardMetrics, ForwarderConfig, Secret};
use serde_json::json;
use spool::{Spool, SpoolConfig};
use rand::{Rng, SeedableRng};
use spool_format::{Event, Uuid};
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
    /// Also drain through the real spoold binary (end to end).
    #[arg(long)]
    pub spoold: bool,
    /// Only the real-spoold drains (no in-process forwarder, no baseline).
    #[arg(long)]
    pub spoold_only: bool,
    /// Another ledgerd binary next to the bench (file name) to drain into with
    /// spoold in the same run: the "before" of a before/after.
    #[arg(long)]
    pub ledgerd_before: Option<String>,
    /// Runs of everything, interleaved; medians are reported.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// CPUs (`taskset -c` list) for every `postgres` process during the run,
    /// given back afterwards: a database with cores of its own, as when it is
    /// another machine. Needs root; with `--app-cpus`.
    #[arg(long, requires = "app_cpus", value_parser = crate::procs::parse_cpu_list)]
    pub pg_cpus: Option<crate::procs::CpuList>,
    /// CPUs for the bench and the spoold and ledgerd it starts (with `--pg-cpus`).
    #[arg(long, requires = "pg_cpus", value_parser = crate::procs::parse_cpu_list)]
    pub app_cpus: Option<crate::procs::CpuList>,
}

/// Merchants (payees) of the bench's events.
const MERCHANTS: u64 = 200;
/// Avatars (payers, and so recipients) of the bench's events.
const AVATARS: u64 = 100_000;

/// A party UUID (version 4 layout) numbered `n` in group `group`.
fn party(group: u64, n: u64) -> Uuid {
    Uuid::from_u128(0x2b6f_0d1e_4c1a_4f9e_9a6b_0000_0000_0000 | (u128::from(group) << 32) | u128::from(n))
}

/// A random version-4 UUID.
fn uuid4(rng: &mut impl Rng) -> Uuid {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

/// An event as a vendor sends it: a random id `sl-<uuid4>`, one of
/// [`MERCHANTS`] payees, one of [`AVATARS`] payers (the recipient defaults to
/// the payer).
fn event(rng: &mut impl Rng) -> Event {
    Event::from_json_value(&json!({
        "id": format!("sl-{}", uuid4(rng)),
        "kind": "purchase",
        "amount": rng.gen_range(1..10_000u64),
        "currency": "L$",
        "payer": party(1, rng.gen_range(0..AVATARS)).to_string(),
        "payee": party(2, rng.gen_range(0..MERCHANTS)).to_string(),
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

/// Opens the spool in `dir` (node `bench-node`) and appends `n` random events
/// to it ([`event`]), durably, in batches.
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
            let mut rng = rand::rngs::StdRng::from_entropy();
            while i < n {
                let end = (i + FILL_BATCH_EVENTS).min(n);
                for r in spool.append_batch((i..end).map(|_| event(&mut rng)).collect()).await {
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

/// One drain: throughput, this process's RSS (spool + forwarder), and the
/// ledger side.
#[derive(Debug, Clone, Copy, Default)]
pub struct DrainResult {
    pub events_per_sec: f64,
    pub rss_start_kib: u64,
    pub rss_max_kib: u64,
    /// ledgerd's CPU time (user + system) over the drain, per event, in µs.
    pub ledgerd_cpu_us_per_event: f64,
    /// Events per batch as ledgerd saw them (mean).
    pub mean_batch_events: f64,
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

/// One drain by the real spoold binary into the real ledgerd.
#[derive(Debug, Clone)]
pub struct SpooldDrain {
    /// "ledgerd/sled", "ledgerd/PostgreSQL".
    pub store: &'static str,
    /// The ledgerd binary (file name).
    pub ledgerd: String,
    pub events_per_sec: f64,
    pub ledgerd_cpu_us_per_event: f64,
    pub spoold_cpu_us_per_event: f64,
    pub mean_batch_events: f64,
    /// CPU of the local PostgreSQL's processes per event (PostgreSQL store only).
    pub pg_cpu_us_per_event: Option<f64>,
    /// The most batches spoold's status showed in flight (sampled every 100 ms).
    pub inflight_max_seen: u64,
}

/// The figures of `bench drain` (medians over `repeats` for the in-process
/// drains; every real-spoold run in `spoold`).
#[derive(Debug, Clone)]
pub struct DrainReport {
    pub events: u64,
    pub batch_events: usize,
    pub inflight: usize,
    pub baseline_seconds: u64,
    pub repeats: usize,
    pub sled: DrainResult,
    pub pg: PgDrain,
    pub spoold: Vec<SpooldDrain>,
    /// The bare binary COPY baseline (medians), when PostgreSQL ran.
    pub copy: Option<CopyBaseline>,
    /// Each real-spoold PostgreSQL drain against the COPY baseline of its own
    /// repeat (ledgerd binary, × batched COPY, × one COPY): PostgreSQL's speed
    /// drifts between repeats, so a ratio within a repeat is the fairer one.
    pub copy_ratios: Vec<(String, f64, f64)>,
}

/// Clock ticks a second of `/proc/<pid>/stat` times (`getconf CLK_TCK`).
fn clock_ticks() -> anyhow::Result<f64> {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().context("run getconf CLK_TCK")?;
    let ticks: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().context("parse CLK_TCK")?;
    anyhow::ensure!(ticks > 0.0, "CLK_TCK is {ticks}");
    Ok(ticks)
}

/// CPU time (utime + stime) of process `pid` so far, in seconds.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).context("parse /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).context("utime/stime in /proc/<pid>/stat")
    };
    Ok((ticks(14)? + ticks(15)?) / clock_ticks()?)
}

/// CPU time (utime + stime) of every `postgres` process on this machine so
/// far, in seconds: the local PostgreSQL's share of a drain (other databases'
/// work on the same server counts too; the bench's are the only busy ones).
pub fn postgres_cpu_secs() -> anyhow::Result<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").context("read /proc")? {
        let name = entry?.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            // A backend may exit between the listing and the read.
            total += cpu_secs(pid).unwrap_or(0.0);
        }
    }
    Ok(total)
}

/// ledgerd's events and batches so far, from its `/metrics`.
async fn ledger_batches(ledger_url: &str) -> anyhow::Result<(f64, f64)> {
    let text = reqwest::get(format!("{ledger_url}/metrics")).await?.text().await?;
    let (mut events, mut batches) = (0.0, 0.0);
    for line in text.lines() {
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if line.starts_with("ledgerd_events_total{") {
            events += value();
        } else if line.starts_with("ledgerd_batch_duration_seconds_count") {
            batches += value();
        }
    }
    Ok((events, batches))
}

fn ledgerd_pid(l: &Ledgerd) -> anyhow::Result<u32> {
    Ok(l.process.as_ref().context("ledgerd is not running")?.child.id())
}

async fn drain(spool: &Spool, ledger: &Ledgerd, args: &DrainArgs) -> anyhow::Result<DrainResult> {
    let mut cfg = ForwarderConfig::new("bench-node", vec![ledger.url.clone()], Secret::new(NODE_TOKEN));
    cfg.batch_events_max = args.batch_events;
    cfg.inflight_batches_max = args.inflight;
    cfg.request_timeout = Duration::from_secs(30);
    let metrics = ForwardMetrics::default();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let pending0 = spool.stats()?.pending_events;
    let pid = ledgerd_pid(ledger)?;
    let (ev0, b0) = ledger_batches(&ledger.url).await?;
    let cpu0 = cpu_secs(pid)?;
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
    let cpu = cpu_secs(pid)? - cpu0;
    let (ev1, b1) = ledger_batches(&ledger.url).await?;
    let _ = tx.send(true);
    let _ = task.await;
    let retries = metrics.retries_total.get();
    if retries > 0 {
        println!("    ({retries} retries during the drain)");
    }
    Ok(DrainResult {
        events_per_sec: pending0 as f64 / secs,
        rss_start_kib: rss_start,
        rss_max_kib: rss_max,
        ledgerd_cpu_us_per_event: cpu * 1e6 / (pending0.max(1) as f64),
        mean_batch_events: (ev1 - ev0) / (b1 - b0).max(1.0),
    })
}

/// Where a drain's ledger keeps its events.
#[derive(Debug, Clone)]
enum LedgerStore {
    Sled,
    /// PostgreSQL URL and a schema of the run's own.
    Pg(String, String),
}

impl LedgerStore {
    fn name(&self) -> &'static str {
        match self {
            LedgerStore::Sled => "ledgerd/sled",
            LedgerStore::Pg(..) => "ledgerd/PostgreSQL",
        }
    }

    fn url(&self, dir: &Path) -> String {
        match self {
            LedgerStore::Sled => format!("sled://{}", dir.join("store").display()),
            LedgerStore::Pg(url, schema) => format!("{url}?schema={schema}"),
        }
    }
}

/// The real spoold drains a backlog of `args.events` (filled in-process into
/// its spool first) into a fresh ledgerd `bin` on `store`; files under `dir`.
async fn drain_spoold(args: &DrainArgs, dir: &Path, store: &LedgerStore, bin: &str) -> anyhow::Result<SpooldDrain> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let spool_dir = dir.join("spool");
    let spool = fill(&spool_dir, args.events).await?;
    spool.close();
    drop(spool);
    let ledger_dir = dir.join("ledger");
    let ledger = Ledgerd::start_bin(&ledger_dir, &store.url(&ledger_dir), test_support::free_port(), "", bin)
        .await
        .with_context(|| format!("start {bin} on {}", store.name()))?;
    let port = test_support::free_port();
    let config = crate::procs::write_spoold_config(dir, port, &spool_dir, 1000, Some(&ledger.url))?;
    // The ledger's node token, and the forwarder limits under test.
    std::fs::write(dir.join("ledger.token"), format!("{NODE_TOKEN}\n")).context("write the ledger token")?;
    let mut text = std::fs::read_to_string(&config).context("read the spoold config")?;
    text.push_str(&format!("batch_events_max = {}\ninflight_batches_max = {}\n", args.batch_events, args.inflight));
    std::fs::write(&config, text).context("write the spoold config")?;

    let lpid = ledgerd_pid(&ledger)?;
    let (ev0, b0) = ledger_batches(&ledger.url).await?;
    let lcpu0 = cpu_secs(lpid)?;
    let is_pg = matches!(store, LedgerStore::Pg(..));
    let pg_cpu0 = if is_pg { postgres_cpu_secs()? } else { 0.0 };
    let started = Instant::now();
    let mut spoold = crate::procs::spawn_spoold(&config, &dir.join("spoold.log"))?;
    let spid = spoold.child.id();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let status_url = format!("http://127.0.0.1:{port}/v1/status");
    let mut inflight_max = 0u64;
    let mut pending0 = None;
    let mut last_report = Instant::now();
    loop {
        let status = match client.get(&status_url).bearer_auth(crate::procs::BENCH_TOKEN).send().await {
            Ok(r) if r.status().is_success() => Some(r.json::<serde_json::Value>().await?),
            _ => None,
        };
        match status {
            Some(st) => {
                let pending = st["spool"]["pending_events"].as_u64().context("spool.pending_events in the status")?;
                pending0.get_or_insert(pending);
                inflight_max = inflight_max.max(st["ledger"]["inflight_batches"].as_u64().unwrap_or(0));
                if pending == 0 {
                    break;
                }
                if last_report.elapsed() > Duration::from_secs(10) {
                    println!("    … {pending} pending, {:.0} s", started.elapsed().as_secs_f64());
                    last_report = Instant::now();
                }
            }
            None => anyhow::ensure!(spoold.is_running(), "spoold exited; see {}", dir.join("spoold.log").display()),
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(3600), "the drain took over an hour");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let lcpu = cpu_secs(lpid)? - lcpu0;
    let scpu = cpu_secs(spid)?;
    let pg_cpu = if is_pg { Some(postgres_cpu_secs()? - pg_cpu0) } else { None };
    let (ev1, b1) = ledger_batches(&ledger.url).await?;
    let _ = spoold.terminate(Duration::from_secs(30));
    drop(ledger);
    // The first status can come after the first batches were acked (the
    // format-2 spool opens in well under a second): what counts is that the
    // ledger received every event that was filled.
    let received = (ev1 - ev0).round() as u64;
    anyhow::ensure!(
        received >= args.events && pending0.unwrap_or(0) <= args.events,
        "the ledger received {received} events, the fill wrote {}",
        args.events
    );
    let n = args.events;
    let n = n as f64;
    Ok(SpooldDrain {
        store: store.name(),
        ledgerd: bin.to_owned(),
        events_per_sec: n / secs,
        ledgerd_cpu_us_per_event: lcpu * 1e6 / n,
        spoold_cpu_us_per_event: scpu * 1e6 / n,
        mean_batch_events: (ev1 - ev0) / (b1 - b0).max(1.0),
        pg_cpu_us_per_event: pg_cpu.map(|c| c * 1e6 / n),
        inflight_max_seen: inflight_max,
    })
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
            let mut rng = rand::rngs::StdRng::from_entropy();
            while Instant::now() < deadline {
                let e = event(&mut rng);
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

/// The bare binary COPY baseline: the physical limit of this PostgreSQL for
/// rows shaped like ledgerd's.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyBaseline {
    /// `inflight` connections, each COPYing `batch_events` rows per statement
    /// (autocommit: durable per COPY, as a ledger batch is), events/s.
    pub batched: f64,
    /// One connection, one COPY of every row (one commit), events/s.
    pub single: f64,
    /// CPU of the local PostgreSQL's processes per row in the batched COPYs, µs.
    pub batched_pg_cpu_us: f64,
}

/// The rows of the COPY baseline, made before the clock starts: id, digest,
/// node_seq, payer, payee, recipient, canonical event JSON.
type CopyRow = (String, Vec<u8>, i64, String, String, String, String);

fn copy_rows(n: u64) -> anyhow::Result<Vec<CopyRow>> {
    let mut rng = rand::rngs::StdRng::from_entropy();
    (0..n)
        .map(|i| {
            let e = event(&mut rng);
            let body = serde_json::to_string(&e.to_json_value())?;
            Ok((e.id.clone(), e.digest().to_vec(), i64::try_from(i)?, e.payer.to_string(), e.payee.to_string(), e.recipient.to_string(), body))
        })
        .collect()
}

/// COPYs `rows` into `table` in binary, one statement per `batch` rows.
async fn copy_into(client: &tokio_postgres::Client, table: &str, rows: &[CopyRow], batch: usize) -> anyhow::Result<()> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    let sql = format!("COPY {table} (id, digest, node, node_seq, received_at, payer, payee, recipient, event) FROM STDIN (FORMAT binary)");
    let types = [Type::TEXT, Type::BYTEA, Type::TEXT, Type::INT8, Type::TIMESTAMPTZ, Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT];
    let now = std::time::SystemTime::now();
    for chunk in rows.chunks(batch.max(1)) {
        let sink = client.copy_in(&sql).await?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
        for (id, digest, seq, payer, payee, recipient, body) in chunk {
            writer.as_mut().write(&[id, digest, &"bench-node", seq, &now, payer, payee, recipient, body]).await?;
        }
        writer.as_mut().finish().await?;
    }
    Ok(())
}

/// Bare binary COPY of `n` rows shaped like ledgerd's (same columns and
/// indexes: a table `LIKE ledger_events INCLUDING ALL` in a schema of its own,
/// dropped afterwards): batched as the drain's batches, and as one COPY.
async fn copy_baseline(url: &str, n: u64, conns: usize, batch: usize, rep: usize) -> anyhow::Result<CopyBaseline> {
    let schema = schema_name("copy", rep);
    let admin = pg_client(url).await?;
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
    let result = async {
        // ledgerd's own table and indexes, from its migrations.
        for (_, sql) in ledger::pg_store::MIGRATIONS {
            admin.batch_execute(&format!("SET search_path TO {schema}; {sql}; RESET search_path")).await?;
        }
        let rows = copy_rows(n)?;
        let mut out = CopyBaseline::default();
        for (what, table) in [("batched", "copy_batched"), ("single", "copy_single")] {
            admin.batch_execute(&format!("CREATE TABLE {schema}.{table} (LIKE {schema}.ledger_events INCLUDING ALL)")).await?;
            let table = format!("{schema}.{table}");
            if what == "single" {
                let c = pg_client(url).await?;
                let started = Instant::now();
                copy_into(&c, &table, &rows, rows.len()).await?;
                out.single = n as f64 / started.elapsed().as_secs_f64();
            } else {
                // Connection k takes every conns-th batch; connected and
                // handed its rows before the clock starts.
                let conns = conns.max(1);
                let mut parts = Vec::new();
                for k in 0..conns {
                    let mine: Vec<CopyRow> =
                        rows.chunks(batch.max(1)).skip(k).step_by(conns).flat_map(|c| c.iter().cloned()).collect();
                    parts.push((pg_client(url).await?, mine));
                }
                let pg_cpu0 = postgres_cpu_secs()?;
                let started = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for (c, mine) in parts {
                    let table = table.clone();
                    tasks.spawn(async move { copy_into(&c, &table, &mine, batch).await.map(|()| c) });
                }
                // The connections stay open until their backends' CPU is read
                // (an exited backend's CPU no longer shows in /proc).
                let mut open = Vec::new();
                while let Some(r) = tasks.join_next().await {
                    open.push(r??);
                }
                out.batched = n as f64 / started.elapsed().as_secs_f64();
                out.batched_pg_cpu_us = (postgres_cpu_secs()? - pg_cpu0) * 1e6 / n as f64;
                drop(open);
            }
        }
        anyhow::Ok(out)
    }
    .await;
    drop_schema(url, &schema).await?;
    result
}

pub fn run(args: DrainArgs) -> anyhow::Result<()> {
    // Before the runtime: its threads inherit the placement.
    let _placement = match (&args.pg_cpus, &args.app_cpus) {
        (Some(pg), Some(app)) => Some(crate::procs::Placement::new(&pg.0, &app.0)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let r = rt.block_on(async {
        tokio::select! {
            r = measure(&args) => r,
            // Interrupted: return, so that the placement gives PostgreSQL its
            // CPUs back (the daemons started are killed when dropped).
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })?;
    println!("== bench drain: medians of {} run(s), {} events, forwarder batches of {}, {} in flight", r.repeats, r.events, r.batch_events, r.inflight);
    if !args.spoold_only {
        print_drain("in-process forwarder -> ledgerd/sled", &r.sled);
        match &r.pg {
            PgDrain::Skipped => {}
            PgDrain::Failed(why) => anyhow::bail!("the PostgreSQL runs failed: {why}"),
            PgDrain::Done { drain, baseline } => {
                print_drain("in-process forwarder -> ledgerd/PostgreSQL", drain);
                println!("baseline: direct single-row INSERTs, {} connections, {} s: {baseline:.0} events/s", r.inflight, r.baseline_seconds);
                println!(
                    "ratio: ledgerd/PostgreSQL drain = {:.1}x direct single-row INSERTs; ledgerd/sled drain = {:.1}x",
                    drain.events_per_sec / baseline,
                    r.sled.events_per_sec / baseline
                );
            }
        }
    }
    print_spoold(&r.spoold);
    if let Some(c) = &r.copy {
        println!(
            "baseline: bare binary COPY, {} connections x {} rows a COPY: {:.0} events/s (PostgreSQL CPU {:.1} us/row); one COPY of all rows: {:.0} events/s",
            r.inflight, r.batch_events, c.batched, c.batched_pg_cpu_us, c.single
        );
        for m in spoold_medians(&r.spoold).iter().filter(|m| m.store == "ledgerd/PostgreSQL") {
            let mine: Vec<&(String, f64, f64)> = r.copy_ratios.iter().filter(|(bin, ..)| *bin == m.ledgerd).collect();
            let each: Vec<String> = mine.iter().map(|(_, b, _)| format!("{b:.2}")).collect();
            println!(
                "ratio: spoold -> {} on ledgerd/PostgreSQL = {:.2}x batched bare COPY, {:.2}x one bare COPY (medians); \
                 within each repeat {:.2}x batched (runs: {}), {:.2}x one COPY",
                m.ledgerd,
                m.events_per_sec / c.batched,
                m.events_per_sec / c.single,
                median(mine.iter().map(|(_, b, _)| *b).collect()),
                each.join(", "),
                median(mine.iter().map(|(.., o)| *o).collect()),
            );
        }
    }
    println!("process peak RSS (VmHWM, includes the backlog fill): {} MiB", crate::procs::status_kib(None, "VmHWM:")? / 1024);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn median_drain(v: &[DrainResult]) -> DrainResult {
    let m = |f: fn(&DrainResult) -> f64| median(v.iter().map(f).collect());
    DrainResult {
        events_per_sec: m(|d| d.events_per_sec),
        rss_start_kib: m(|d| d.rss_start_kib as f64) as u64,
        rss_max_kib: m(|d| d.rss_max_kib as f64) as u64,
        ledgerd_cpu_us_per_event: m(|d| d.ledgerd_cpu_us_per_event),
        mean_batch_events: m(|d| d.mean_batch_events),
    }
}

/// Medians of the real-spoold runs of one store and ledgerd binary: the
/// figures of one run ([`SpooldDrain`], each the median over the runs; the
/// most batches in flight, the highest) and each run's events/s.
#[derive(Debug, Clone)]
pub struct SpooldMedian {
    pub median: SpooldDrain,
    pub runs: Vec<f64>,
}

impl std::ops::Deref for SpooldMedian {
    type Target = SpooldDrain;
    fn deref(&self) -> &SpooldDrain {
        &self.median
    }
}

/// Medians of the real-spoold runs, one per store and ledgerd binary, in
/// the order they first ran.
pub fn spoold_medians(runs: &[SpooldDrain]) -> Vec<SpooldMedian> {
    let mut keys: Vec<(&'static str, &str)> = Vec::new();
    for r in runs {
        if !keys.contains(&(r.store, r.ledgerd.as_str())) {
            keys.push((r.store, r.ledgerd.as_str()));
        }
    }
    keys.into_iter()
        .map(|(store, bin)| {
            let these: Vec<&SpooldDrain> = runs.iter().filter(|r| r.store == store && r.ledgerd == bin).collect();
            let m = |f: fn(&SpooldDrain) -> f64| median(these.iter().map(|r| f(r)).collect());
            SpooldMedian {
                median: SpooldDrain {
                    store,
                    ledgerd: bin.to_owned(),
                    events_per_sec: m(|r| r.events_per_sec),
                    ledgerd_cpu_us_per_event: m(|r| r.ledgerd_cpu_us_per_event),
                    spoold_cpu_us_per_event: m(|r| r.spoold_cpu_us_per_event),
                    mean_batch_events: m(|r| r.mean_batch_events),
                    pg_cpu_us_per_event: these[0].pg_cpu_us_per_event.map(|_| m(|r| r.pg_cpu_us_per_event.unwrap_or(f64::NAN))),
                    inflight_max_seen: these.iter().map(|r| r.inflight_max_seen).max().unwrap_or(0),
                },
                runs: these.iter().map(|r| r.events_per_sec).collect(),
            }
        })
        .collect()
}

/// Medians of the real-spoold runs, one line per store and ledgerd binary.
fn print_spoold(runs: &[SpooldDrain]) {
    for m in spoold_medians(runs) {
        let each: Vec<String> = m.runs.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "spoold -> {} on {}: {:.0} events/s (runs: {}); ledgerd CPU {:.1} us/event, spoold CPU {:.1} us/event{}; \
             mean batch {:.0} events, up to {} in flight",
            m.ledgerd,
            m.store,
            m.events_per_sec,
            each.join(", "),
            m.ledgerd_cpu_us_per_event,
            m.spoold_cpu_us_per_event,
            m.pg_cpu_us_per_event.map(|c| format!(", PostgreSQL CPU {c:.1} us/event")).unwrap_or_default(),
            m.mean_batch_events,
            m.inflight_max_seen,
        );
    }
}

fn print_drain(name: &str, d: &DrainResult) {
    println!(
        "{name}: drained at {:.0} events/s; ledgerd CPU {:.1} us/event; mean batch {:.0}; process RSS {} MiB at drain start, {} MiB max during the drain",
        d.events_per_sec,
        d.ledgerd_cpu_us_per_event,
        d.mean_batch_events,
        d.rss_start_kib / 1024,
        d.rss_max_kib / 1024
    );
}

/// Runs `bench drain`, printing progress; the figures as data. A PostgreSQL
/// failure is reported in [`DrainReport::pg`], after the sled figures.
pub async fn measure(args: &DrainArgs) -> anyhow::Result<DrainReport> {
    let tmp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir)).context("create the drain bench dir")?;
    println!(
        "bench drain: {} events, batches of {}, {} in flight, {} repeat(s); ledgerd release binary; {} CPUs",
        args.events,
        args.batch_events,
        args.inflight,
        args.repeats,
        crate::cores()
    );
    let mut bins = vec!["ledgerd".to_owned()];
    bins.extend(args.ledgerd_before.clone());
    let (mut sled_runs, mut pg_runs, mut base_runs, mut spoold_runs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut copy_runs: Vec<CopyBaseline> = Vec::new();
    let mut copy_ratios: Vec<(String, f64, f64)> = Vec::new();
    let mut pg_failed = None;
    for rep in 0..args.repeats.max(1) {
        let run_dir = tmp.path().join(format!("run-{rep}"));
        if !args.spoold_only {
            println!("[{rep}] in-process forwarder -> ledgerd/sled:");
            let d = run_dir.join("inproc-sled");
            let spool = fill(&d.join("spool"), args.events).await?;
            let ledger = Ledgerd::start_with(&d.join("ledger"), &LedgerStore::Sled.url(&d.join("ledger")), test_support::free_port())
                .await
                .context("start ledgerd/sled")?;
            let r = drain(&spool, &ledger, args).await?;
            print_drain("  ledgerd/sled", &r);
            sled_runs.push(r);
            drop(ledger);
            spool.close();
            drop(spool);
        }
        if args.spoold || args.spoold_only {
            for bin in &bins {
                println!("[{rep}] spoold -> {bin} on ledgerd/sled:");
                let r = drain_spoold(args, &run_dir.join(format!("spoold-sled-{bin}")), &LedgerStore::Sled, bin).await?;
                print_spoold(std::slice::from_ref(&r));
                spoold_runs.push(r);
            }
        }
        if args.skip_pg || pg_failed.is_some() {
            continue;
        }
        println!("[{rep}] baseline: bare binary COPY of {} rows shaped like ledgerd's:", args.events);
        match copy_baseline(&args.pg_url, args.events, args.inflight, args.batch_events, rep).await {
            Ok(c) => {
                println!(
                    "  {:.0} events/s in COPYs of {} rows on {} connections (PostgreSQL CPU {:.1} us/row); {:.0} events/s in one COPY",
                    c.batched, args.batch_events, args.inflight, c.batched_pg_cpu_us, c.single
                );
                copy_runs.push(c);
            }
            Err(e) => {
                println!("  PostgreSQL runs failed: {e:#}");
                pg_failed = Some(format!("{e:#}"));
                continue;
            }
        }
        match drain_pg(args, &run_dir, &bins, rep).await {
            Ok((inproc, base, spoold)) => {
                pg_runs.extend(inproc);
                base_runs.extend(base);
                if let Some(c) = copy_runs.last() {
                    copy_ratios.extend(spoold.iter().map(|s| (s.ledgerd.clone(), s.events_per_sec / c.batched, s.events_per_sec / c.single)));
                }
                spoold_runs.extend(spoold);
            }
            Err(e) => {
                println!("  PostgreSQL runs failed: {e:#}");
                pg_failed = Some(format!("{e:#}"));
            }
        }
    }
    let pg = match pg_failed {
        _ if args.skip_pg => PgDrain::Skipped,
        Some(why) => PgDrain::Failed(why),
        None => PgDrain::Done { drain: median_drain(&pg_runs), baseline: median(base_runs) },
    };
    Ok(DrainReport {
        events: args.events,
        batch_events: args.batch_events,
        inflight: args.inflight,
        baseline_seconds: args.baseline_seconds,
        repeats: args.repeats.max(1),
        sled: median_drain(&sled_runs),
        pg,
        spoold: spoold_runs,
        copy: (!copy_runs.is_empty()).then(|| CopyBaseline {
            batched: median(copy_runs.iter().map(|c| c.batched).collect()),
            single: median(copy_runs.iter().map(|c| c.single).collect()),
            batched_pg_cpu_us: median(copy_runs.iter().map(|c| c.batched_pg_cpu_us).collect()),
        }),
        copy_ratios,
    })
}

/// A fresh schema name for one PostgreSQL drain.
fn schema_name(what: &str, rep: usize) -> String {
    format!("bench_drain_{}_{what}_{rep}", std::process::id())
}

async fn drop_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let admin = pg_client(url).await?;
    admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.context("drop the bench schema")
}

/// The PostgreSQL drains of one repeat (in-process and real spoold, each in a
/// schema of its own, dropped afterwards) and the direct-INSERT baseline.
async fn drain_pg(
    args: &DrainArgs,
    tmp: &Path,
    bins: &[String],
    rep: usize,
) -> anyhow::Result<(Option<DrainResult>, Option<f64>, Vec<SpooldDrain>)> {
    // Fail early, before the fill, when PostgreSQL is down.
    pg_client(&args.pg_url).await.with_context(|| format!("connect to {}", args.pg_url))?;
    let (mut inproc, mut base, mut spoold) = (None, None, Vec::new());
    if !args.spoold_only {
        println!("[{rep}] in-process forwarder -> ledgerd/PostgreSQL:");
        let schema = schema_name("inproc", rep);
        let spool = fill(&tmp.join("spool-pg"), args.events).await?;
        let result = async {
            let d = tmp.join("ledger-pg");
            let ledger = Ledgerd::start_with(&d, &LedgerStore::Pg(args.pg_url.clone(), schema.clone()).url(&d), test_support::free_port())
                .await
                .context("start ledgerd/PostgreSQL")?;
            let pg = drain(&spool, &ledger, args).await?;
            drop(ledger);
            print_drain("  ledgerd/PostgreSQL", &pg);
            println!("[{rep}] baseline: direct single-row INSERTs, {} connections, {} s:", args.inflight, args.baseline_seconds);
            let b = baseline(&args.pg_url, &schema, args.inflight, args.baseline_seconds).await?;
            println!("  {b:.0} events/s");
            anyhow::Ok((pg, b))
        }
        .await;
        spool.close();
        drop(spool);
        drop_schema(&args.pg_url, &schema).await?;
        let (pg, b) = result?;
        inproc = Some(pg);
        base = Some(b);
    }
    if args.spoold || args.spoold_only {
        for bin in bins {
            println!("[{rep}] spoold -> {bin} on ledgerd/PostgreSQL:");
            let schema = schema_name(&format!("spoold_{}", bin.replace('-', "_")), rep);
            let store = LedgerStore::Pg(args.pg_url.clone(), schema.clone());
            let r = drain_spoold(args, &tmp.join(format!("spoold-pg-{bin}")), &store, bin).await;
            drop_schema(&args.pg_url, &schema).await?;
            let r = r?;
            print_spoold(std::slice::from_ref(&r));
            spoold.push(r);
        }
    }
    Ok((inproc, base, spoold))
}
