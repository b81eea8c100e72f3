//! `bench backlog`: the real `spoold` on a spool with a large pending backlog,
//! against the same measurements on an (almost) empty spool in the same run,
//! and against a bare sled open of the same data:
//!
//! - RSS of the spoold process (`VmRSS` of `/proc/<pid>/status`) when `/readyz`
//!   first answers 200; its peak during a traffic burst (batches, then single
//!   events; `VmRSS` sampled every 20 ms, and `VmHWM`), and after it;
//! - restart-to-ready time: spoold started on the spool until `/readyz`
//!   answers 200, after a clean shutdown (SIGTERM) and after SIGKILL; next to
//!   it, after another SIGKILL, the time a bare `sled::Config::new().path(..)
//!   .open()` of the spool's store (`spool::store_dir`) takes on the same data;
//! - disk bytes per pending event: allocated bytes of the spool dir (as `du`
//!   counts them) over pending events, next to the encoded record frames'
//!   average size (the spool's pending and dead bytes over its events, from
//!   `GET /v1/status`), and the number of files under the store's `blobs/`;
//! - a full drain of the backlog into a null ledger (an in-process HTTP server
//!   that answers `accepted` for every event, so that only spoold's side
//!   costs): the peak RSS while spoold drains, and the drain's events/s.
//!
//! The backlog is written in-process with `Spool::append_batch` (the fast
//! path; random ids `sl-<uuid4>`) into a fresh spool for each size: empty, a
//! tenth of the backlog, the full backlog. Until the drain, spoold forwards to
//! a loopback port nobody listens on, so the backlog stays pending. Only the
//! spool's public API, spoold's HTTP API and `spool::store_dir` are used, so
//! the bench runs unchanged on another spool engine.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use test_support::DaemonProcess;

use crate::ingest::{run_batch, run_single, spoold_target};
use crate::procs::{spawn_spoold, status_kib, write_spoold_config, BENCH_TOKEN};

/// Options of `bench backlog`.
#[derive(Debug, Clone, clap::Args)]
pub struct BacklogArgs {
    /// Pending events of the large backlog (it is also measured at a tenth of
    /// this, and empty). Scaled down by default; `--events 10000000` is the
    /// full-size run of issue 11 (a 16-hour outage at a busy node).
    #[arg(long = "events", alias = "backlog-events", default_value_t = 1_000_000)]
    pub backlog_events: u64,
    /// Seconds of each half of the traffic burst (batches, then single events).
    #[arg(long, default_value_t = 5)]
    pub burst_seconds: u64,
    /// Skip the full drain of each stage's backlog.
    #[arg(long)]
    pub no_drain: bool,
    /// Directory for the spool (default: a temp dir; pick the disk the spool
    /// will really live on).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The figures of spoold at one backlog size.
#[derive(Debug, Clone, Copy, Default)]
pub struct BacklogStage {
    /// Pending events when spoold started.
    pub pending_events: u64,
    /// `VmRSS` at the first 200 from `/readyz`, in KiB.
    pub rss_ready_kib: u64,
    /// Highest `VmRSS` sampled during the burst, in KiB.
    pub rss_burst_peak_kib: u64,
    /// `VmRSS` after the burst, in KiB.
    pub rss_burst_kib: u64,
    /// `VmHWM` (peak RSS since start) after the burst, in KiB.
    pub rss_peak_kib: u64,
    /// Start to ready after SIGTERM.
    pub restart_clean: Duration,
    /// Start to ready after SIGKILL.
    pub restart_crash: Duration,
    /// After another SIGKILL: a bare sled open of the spool's store (the baseline of `restart_crash`).
    pub bare_sled_open: Duration,
    /// `VmRSS` at ready after the SIGKILL restart, in KiB.
    pub rss_crash_ready_kib: u64,
    /// Before the drain: allocated bytes of the spool dir.
    pub disk_bytes: u64,
    /// Before the drain: files under the store's `blobs/` directory.
    pub blob_files: u64,
    /// Before the drain: pending events, and pending + dead events and their
    /// frame bytes (`GET /v1/status`: `spool.events`, `spool.bytes`).
    pub pending_after: u64,
    pub live_events: u64,
    pub live_bytes: u64,
    /// The full drain, unless `--no-drain`.
    pub drain: Option<StageDrain>,
}

/// A full drain of a stage's backlog into the null ledger.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageDrain {
    pub events: u64,
    pub seconds: f64,
    /// Highest `VmRSS` of spoold sampled during the drain, in KiB.
    pub rss_peak_kib: u64,
}

impl BacklogStage {
    /// Allocated disk bytes per pending event.
    pub fn disk_bytes_per_event(&self) -> f64 {
        self.disk_bytes as f64 / self.pending_after.max(1) as f64
    }

    /// Average encoded frame, in bytes.
    pub fn frame_bytes(&self) -> f64 {
        self.live_bytes as f64 / self.live_events.max(1) as f64
    }
}

/// The figures of `bench backlog`: one stage per backlog size, smallest first.
#[derive(Debug, Clone)]
pub struct BacklogReport {
    pub backlog_events: u64,
    pub burst_seconds: u64,
    /// Events/s of the in-process fill.
    pub fill_events_per_sec: f64,
    pub stages: Vec<BacklogStage>,
}

pub fn run(args: BacklogArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let r = rt.block_on(measure(&args))?;
    println!();
    println!(
        "| pending | RSS ready MiB | peak in burst MiB | peak in drain MiB | restart SIGTERM s | restart SIGKILL s | bare sled open s | SIGKILL ÷ bare | disk B/event | frame B | disk ÷ frame | blob files | drain events/s |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for s in &r.stages {
        println!(
            "| {} | {:.1} | {:.1} | {} | {:.3} | {:.3} | {:.3} | {:.2} | {:.0} | {:.0} | {:.2} | {} | {} |",
            s.pending_events,
            mib(s.rss_ready_kib),
            mib(s.rss_burst_peak_kib),
            s.drain.map_or("–".into(), |d| format!("{:.1}", mib(d.rss_peak_kib))),
            s.restart_clean.as_secs_f64(),
            s.restart_crash.as_secs_f64(),
            s.bare_sled_open.as_secs_f64(),
            s.restart_crash.as_secs_f64() / s.bare_sled_open.as_secs_f64().max(1e-6),
            s.disk_bytes_per_event(),
            s.frame_bytes(),
            s.disk_bytes_per_event() / s.frame_bytes().max(1.0),
            s.blob_files,
            s.drain.map_or("–".into(), |d| format!("{:.0}", d.events as f64 / d.seconds.max(1e-9))),
        );
    }
    Ok(())
}

/// KiB to MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs `bench backlog`, printing progress; the figures as data.
pub async fn measure(args: &BacklogArgs) -> anyhow::Result<BacklogReport> {
    let tmp = match &args.dir {
        Some(d) => tempfile::Builder::new().prefix("bench-backlog").tempdir_in(d),
        None => tempfile::Builder::new().prefix("bench-backlog").tempdir(),
    }
    .context("create the backlog bench dir")?;
    println!("bench backlog: spoold on a spool of up to {} pending events; dir {}", args.backlog_events, tmp.path().display());
    let mut sizes = vec![0, args.backlog_events / 10, args.backlog_events];
    sizes.dedup();
    let mut stages = Vec::new();
    let (mut filled, mut fill_secs) = (0u64, 0.0f64);
    for (i, &size) in sizes.iter().enumerate() {
        // A spool of its own for each size, so that one stage's burst does not
        // add to the next one's backlog.
        let stage_dir = tmp.path().join(format!("stage-{i}"));
        let spool_dir = stage_dir.join("spool");
        let started = Instant::now();
        let spool = crate::drain::fill(&spool_dir, size).await?;
        fill_secs += started.elapsed().as_secs_f64();
        filled += size;
        let pending = spool.stats().context("read spool stats")?.pending_events;
        tokio::task::spawn_blocking(move || spool.close()).await.context("close the spool")?;
        println!("  stage {}: {pending} pending events", i + 1);
        let mut stage = measure_stage(&stage_dir, &spool_dir, args.burst_seconds, !args.no_drain).await?;
        stage.pending_events = pending;
        println!(
            "    RSS {:.1} MiB at ready, peak {:.1} MiB in the burst{}; ready {:.3} s after SIGTERM, {:.3} s after SIGKILL \
             (bare sled open {:.3} s); {:.0} disk bytes an event (frame {:.0}); {} blob files",
            mib(stage.rss_ready_kib),
            mib(stage.rss_burst_peak_kib),
            stage.drain.map_or(String::new(), |d| format!(
                ", peak {:.1} MiB draining {} events at {:.0}/s",
                mib(d.rss_peak_kib),
                d.events,
                d.events as f64 / d.seconds.max(1e-9)
            )),
            stage.restart_clean.as_secs_f64(),
            stage.restart_crash.as_secs_f64(),
            stage.bare_sled_open.as_secs_f64(),
            stage.disk_bytes_per_event(),
            stage.frame_bytes(),
            stage.blob_files,
        );
        stages.push(stage);
        std::fs::remove_dir_all(&spool_dir).context("remove the stage's spool")?;
    }
    Ok(BacklogReport {
        backlog_events: args.backlog_events,
        burst_seconds: args.burst_seconds,
        fill_events_per_sec: filled as f64 / fill_secs.max(1e-9),
        stages,
    })
}

/// spoold on `spool_dir` (its files in `dir`): ready, burst, SIGTERM and
/// restart, SIGKILL and restart, SIGKILL and a bare sled open; then spoold
/// again: the spool's disk use, and (with `drain`) a full drain.
async fn measure_stage(dir: &Path, spool_dir: &Path, burst_seconds: u64, drain: bool) -> anyhow::Result<BacklogStage> {
    std::fs::create_dir_all(dir).context("create the stage dir")?;
    let port = test_support::free_port();
    // Nobody listens there until the drain: forwarding fails and retries, the
    // backlog stays pending. Retries at most a second apart, so the drain
    // starts at once when the null ledger comes up.
    let ledger_port = test_support::free_port();
    let ledger = format!("http://127.0.0.1:{ledger_port}");
    let config = write_spoold_config(dir, port, spool_dir, 1000, Some(&ledger))?;
    let mut text = std::fs::read_to_string(&config).context("read the spoold config")?;
    text.push_str("[retry]\ninitial = \"100ms\"\nmax = \"1s\"\n");
    std::fs::write(&config, text).context("write the spoold config")?;
    let log = dir.join("spoold.log");
    let base = format!("http://127.0.0.1:{port}");
    let ready_url = format!("{base}/readyz");
    let mut s = BacklogStage::default();

    let (mut p, _) = start_timed(&config, &log, &ready_url).await?;
    s.rss_ready_kib = status_kib(Some(p.child.id()), "VmRSS:")?;
    let target = Arc::new(spoold_target(port));
    let burst = Duration::from_secs(burst_seconds.max(1));
    let sampler = RssSampler::start(p.child.id());
    run_batch(Arc::clone(&target), 4, 1000, burst).await?;
    run_single(Arc::clone(&target), 64, burst).await?;
    s.rss_burst_peak_kib = sampler.stop().await;
    s.rss_burst_kib = status_kib(Some(p.child.id()), "VmRSS:")?;
    s.rss_peak_kib = status_kib(Some(p.child.id()), "VmHWM:")?;

    terminate(&mut p)?;
    let (mut p, t) = start_timed(&config, &log, &ready_url).await?;
    s.restart_clean = t;
    p.kill9();
    let (mut p, t) = start_timed(&config, &log, &ready_url).await?;
    s.restart_crash = t;
    s.rss_crash_ready_kib = status_kib(Some(p.child.id()), "VmRSS:")?;

    // The baseline of the SIGKILL restart: a bare sled open of the same data,
    // also after a SIGKILL.
    p.kill9();
    let store = spool::store_dir(spool_dir);
    s.bare_sled_open = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let db = sled::Config::new().path(&store).open().context("open the spool's store with bare sled")?;
        let took = started.elapsed();
        drop(db);
        anyhow::Ok(took)
    })
    .await
    .context("bare sled open")??;

    let (mut p, _) = start_timed(&config, &log, &ready_url).await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let status = spool_status(&client, &base).await?;
    s.pending_after = status.pending_events;
    s.live_events = status.events;
    s.live_bytes = status.bytes;
    s.disk_bytes = allocated_bytes(spool_dir)?;
    s.blob_files = count_files(&spool::store_dir(spool_dir).join("blobs"))?;

    if drain {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", ledger_port)).await.context("bind the null ledger")?;
        let sampler = RssSampler::start(p.child.id());
        let started = Instant::now();
        let ledger = tokio::spawn(crate::ingest::serve_json(listener, null_ledger_answer));
        let from = s.pending_after;
        loop {
            let st = spool_status(&client, &base).await?;
            if st.pending_events == 0 {
                break;
            }
            anyhow::ensure!(p.is_running(), "spoold exited while draining; see {}", log.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s.drain = Some(StageDrain { events: from, seconds: started.elapsed().as_secs_f64(), rss_peak_kib: sampler.stop().await });
        ledger.abort();
    }
    terminate(&mut p)?;
    Ok(s)
}

/// The null ledger's answer to `POST /v1/batches`: `accepted` for every
/// event, in order (and to the forwarder's `/readyz` probe: 200).
fn null_ledger_answer(body: &[u8]) -> Vec<u8> {
    let n = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("events").and_then(serde_json::Value::as_array).map(Vec::len))
        .unwrap_or(0);
    let one = serde_json::json!({"id": "", "status": "accepted"});
    serde_json::to_vec(&serde_json::json!({ "results": vec![one; n] })).unwrap_or_default()
}

/// The spool part of spoold's `GET /v1/status`.
async fn spool_status(client: &reqwest::Client, base: &str) -> anyhow::Result<common::status::SpoolStatus> {
    let st: common::status::NodeStatus = client
        .get(format!("{base}/v1/status"))
        .bearer_auth(BENCH_TOKEN)
        .send()
        .await
        .context("GET /v1/status")?
        .error_for_status()
        .context("GET /v1/status")?
        .json()
        .await
        .context("read /v1/status")?;
    Ok(st.spool)
}

/// Samples a process's `VmRSS` every 20 ms until stopped; the highest value.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (st, pk) = (Arc::clone(&stop), Arc::clone(&peak));
        let task = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                if let Ok(kib) = status_kib(Some(pid), "VmRSS:") {
                    pk.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssSampler { stop, peak, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// Files under `dir`, recursively (0 if it does not exist).
fn count_files(dir: &Path) -> anyhow::Result<u64> {
    if !dir.exists() {
        return Ok(0);
    }
    let mut n = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry.context("read a dir entry")?;
        n += if entry.file_type().context("stat")?.is_dir() { count_files(&entry.path())? } else { 1 };
    }
    Ok(n)
}

/// SIGTERM, and a clean exit within a minute (the spool is closed cleanly).
fn terminate(p: &mut DaemonProcess) -> anyhow::Result<()> {
    let status = p.terminate(Duration::from_secs(60)).context("stop spoold")?;
    anyhow::ensure!(status.success(), "spoold exited with {status} after SIGTERM");
    Ok(())
}

/// How long a spoold needs to recover a very large spool, at most.
const READY_TIMEOUT: Duration = Duration::from_secs(1800);
/// Poll interval of `/readyz`: fine enough for the ~10 ms start of an empty spool.
const READY_POLL: Duration = Duration::from_millis(5);

/// Starts spoold and times it until `/readyz` answers 200.
async fn start_timed(config: &Path, log: &Path, ready_url: &str) -> anyhow::Result<(DaemonProcess, Duration)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let started = Instant::now();
    let mut p = spawn_spoold(config, log)?;
    loop {
        if let Ok(r) = client.get(ready_url).send().await {
            if r.status().is_success() {
                return Ok((p, started.elapsed()));
            }
        }
        if !p.is_running() {
            anyhow::bail!("spoold exited before it was ready; see {}", log.display());
        }
        anyhow::ensure!(started.elapsed() < READY_TIMEOUT, "spoold not ready within {READY_TIMEOUT:?}");
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Allocated bytes (512-byte blocks, as `du` counts them) of the files under `dir`.
pub fn allocated_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry.context("read a dir entry")?;
        let meta = entry.metadata().context("stat a spool file")?;
        total += if meta.is_dir() { allocated_bytes(&entry.path())? } else { meta.blocks() * 512 };
    }
    Ok(total)
}
