//! `bench backlog`: the real `spoold` on a spool with a large pending backlog,
//! against the same measurements on an (almost) empty spool in the same run:
//!
//! - RSS of the spoold process (`VmRSS` of `/proc/<pid>/status`) when `/readyz`
//!   first answers 200, and after a burst of traffic (batches, then single
//!   events), with its peak (`VmHWM`);
//! - restart-to-ready time: spoold started on the spool until `/readyz`
//!   answers 200, after a clean shutdown (SIGTERM: the spool's counters are
//!   saved at close) and after SIGKILL (the spool scans every record to rebuild
//!   its counters and indexes);
//! - disk bytes per pending event: allocated bytes of the spool dir (as `du`
//!   counts them) over pending events, next to the encoded record frames'
//!   average size (the spool's `live_bytes` over its live events).
//!
//! The backlog is written in-process with `Spool::append_batch` (the fast
//! path) into a fresh spool for each size: empty, a tenth of the backlog, the
//! full backlog, so that RSS and restart times can be read against the
//! backlog's size. spoold forwards to a loopback port nobody listens on, so the
//! backlog stays pending.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use test_support::DaemonProcess;

use crate::ingest::{run_batch, run_single, spoold_target};
use crate::procs::{spawn_spoold, status_kib, write_spoold_config};

/// Options of `bench backlog`.
#[derive(Debug, Clone, clap::Args)]
pub struct BacklogArgs {
    /// Pending events of the large backlog (it is also measured at a tenth of
    /// this, and empty).
    #[arg(long, default_value_t = 10_000_000)]
    pub backlog_events: u64,
    /// Seconds of each half of the traffic burst (batches, then single events).
    #[arg(long, default_value_t = 5)]
    pub burst_seconds: u64,
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
    /// `VmRSS` after the burst, in KiB.
    pub rss_burst_kib: u64,
    /// `VmHWM` (peak RSS) after the burst, in KiB.
    pub rss_peak_kib: u64,
    /// Start to ready after SIGTERM.
    pub restart_clean: Duration,
    /// Start to ready after SIGKILL.
    pub restart_crash: Duration,
    /// `VmRSS` at ready after the SIGKILL restart (the recovery scan), in KiB.
    pub rss_crash_ready_kib: u64,
    /// After the stage: allocated bytes of the spool dir.
    pub disk_bytes: u64,
    /// After the stage: pending events and the bytes of their encoded frames.
    pub pending_after: u64,
    pub live_bytes: u64,
}

impl BacklogStage {
    /// Allocated disk bytes per pending event.
    pub fn disk_bytes_per_event(&self) -> f64 {
        self.disk_bytes as f64 / self.pending_after.max(1) as f64
    }

    /// Average encoded frame, in bytes.
    pub fn frame_bytes(&self) -> f64 {
        self.live_bytes as f64 / self.pending_after.max(1) as f64
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
    println!("| pending | RSS ready MiB | RSS after burst MiB | peak MiB | restart SIGTERM s | restart SIGKILL s | disk B/event | frame B |");
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|");
    for s in &r.stages {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {:.0} | {:.0} |",
            s.pending_events,
            mib(s.rss_ready_kib),
            mib(s.rss_burst_kib),
            mib(s.rss_peak_kib),
            s.restart_clean.as_secs_f64(),
            s.restart_crash.as_secs_f64(),
            s.disk_bytes_per_event(),
            s.frame_bytes()
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
        let mut stage = measure_stage(&stage_dir, &spool_dir, args.burst_seconds).await?;
        stage.pending_events = pending;
        println!(
            "    RSS {:.1} MiB at ready, {:.1} MiB after the burst; ready {:.3} s after SIGTERM, {:.3} s after SIGKILL; {:.0} disk bytes an event",
            mib(stage.rss_ready_kib),
            mib(stage.rss_burst_kib),
            stage.restart_clean.as_secs_f64(),
            stage.restart_crash.as_secs_f64(),
            stage.disk_bytes_per_event()
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
/// restart, SIGKILL and restart, SIGTERM; then the spool's disk use.
async fn measure_stage(dir: &Path, spool_dir: &Path, burst_seconds: u64) -> anyhow::Result<BacklogStage> {
    std::fs::create_dir_all(dir).context("create the stage dir")?;
    let port = test_support::free_port();
    // Nobody listens there: forwarding fails and retries, the backlog stays pending.
    let ledger = format!("http://127.0.0.1:{}", test_support::free_port());
    let config = write_spoold_config(dir, port, spool_dir, 1000, Some(&ledger))?;
    let log = dir.join("spoold.log");
    let ready_url = format!("http://127.0.0.1:{port}/readyz");
    let mut s = BacklogStage::default();

    let (mut p, _) = start_timed(&config, &log, &ready_url).await?;
    s.rss_ready_kib = status_kib(Some(p.child.id()), "VmRSS:")?;
    let target = Arc::new(spoold_target(port));
    let burst = Duration::from_secs(burst_seconds.max(1));
    run_batch(Arc::clone(&target), 4, 1000, burst).await?;
    run_single(Arc::clone(&target), 64, burst).await?;
    s.rss_burst_kib = status_kib(Some(p.child.id()), "VmRSS:")?;
    s.rss_peak_kib = status_kib(Some(p.child.id()), "VmHWM:")?;

    terminate(&mut p)?;
    let (mut p, t) = start_timed(&config, &log, &ready_url).await?;
    s.restart_clean = t;
    p.kill9();
    let (mut p, t) = start_timed(&config, &log, &ready_url).await?;
    s.restart_crash = t;
    s.rss_crash_ready_kib = status_kib(Some(p.child.id()), "VmRSS:")?;
    terminate(&mut p)?;

    s.disk_bytes = allocated_bytes(spool_dir)?;
    let spool = spool::Spool::open(spool::SpoolConfig::for_dir(spool_dir)).context("open the spool")?;
    let stats = spool.stats().context("read spool stats")?;
    tokio::task::spawn_blocking(move || spool.close()).await.context("close the spool")?;
    s.pending_after = stats.pending_events;
    s.live_bytes = stats.live_bytes;
    Ok(s)
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
