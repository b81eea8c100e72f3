//! `bench commit`: durable appends per second through `Spool::append` at 1, 16,
//! 64 and 256 concurrent writers, against two baselines measured in the same run
//! on the same disk:
//! - *bare group flush*: writers insert a record-sized value straight into sled and
//!   wait for a flush generation of a minimal flusher thread calling
//!   `Db::flush()` (no framing, no checksum, no id index). This is the ceiling the
//!   spool's group commit is measured against.
//! - *flush per write*: one writer that inserts and calls `Db::flush()` for each
//!   event — what a spool without group commit would get.
//!
//! And a peer in the same run: NATS JetStream publish + ack at
//! `--jetstream-publishers` (64) concurrent publishers ([`crate::jetstream`]),
//! skipped with a printed reason when no server answers. Every figure comes
//! with its p99 latency (one append / publish until its ack). Event ids are
//! random (`sl-<uuid4>`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crate::jetstream::JetStreamOutcome;
use crate::stats::{ms, Rate};
use spool::{AppendOutcome, Spool, SpoolConfig};
use spool_format::Event;
use tokio::sync::watch;

/// Options of `bench commit`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommitArgs {
    /// Seconds to measure each point.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Writer counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub writers: Vec<usize>,
    /// Directory for the test spools (default: a temp dir; pick the disk the
    /// spool will really live on).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// The NATS server of the JetStream peer.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Concurrent publishers of the JetStream peer (0: skip the peer).
    #[arg(long, default_value_t = 64)]
    pub jetstream_publishers: usize,
}

fn event(id: &str) -> Event {
    test_support::events::spec_event(id)
}

/// Events per second that `writers` tasks achieve for `secs` with `op`, and
/// the latency of one `op`.
async fn measure_rate<F, Fut>(writers: usize, secs: u64, op: F) -> Rate
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                op(w, i).await;
                lat.push(t0.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    Rate::from_latencies(all, 0, started.elapsed())
}

/// A minimal group flush over a bare sled `Db`, for the baseline.
struct BareGroupFlush {
    db: sled::Db,
    /// With a committer, each group commit is the durable one (flush plus
    /// fdatasync); without, `Db::flush()` alone (what the spool did before the
    /// power-loss fix, and what does not survive a power cut).
    committer: Option<durable::Committer>,
    requested: AtomicU64,
    durable: watch::Sender<u64>,
    wake: (std::sync::Mutex<()>, std::sync::Condvar),
}

impl BareGroupFlush {
    fn start(db: sled::Db, committer: Option<durable::Committer>) -> Arc<BareGroupFlush> {
        let (durable, _) = watch::channel(0);
        let g = Arc::new(BareGroupFlush {
            db,
            committer,
            requested: AtomicU64::new(0),
            durable,
            wake: (std::sync::Mutex::new(()), std::sync::Condvar::new()),
        });
        let worker = Arc::clone(&g);
        std::thread::spawn(move || {
            let mut done = 0;
            loop {
                let target = worker.requested.load(Ordering::SeqCst);
                if target == u64::MAX {
                    return;
                }
                if target <= done {
                    let guard = worker.wake.0.lock().expect("lock");
                    if worker.requested.load(Ordering::SeqCst) <= done {
                        let _ = worker.wake.1.wait_timeout(guard, Duration::from_millis(1)).expect("wait");
                    }
                    continue;
                }
                match &worker.committer {
                    Some(c) => {
                        c.commit().expect("durable commit");
                    }
                    None => {
                        worker.db.flush().expect("flush");
                    }
                }
                done = target;
                worker.durable.send_replace(target);
            }
        });
        g
    }

    async fn write(&self, key: u64, value: &[u8]) {
        self.db.insert(key.to_be_bytes(), value).expect("insert");
        let t = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let _guard = self.wake.0.lock().expect("lock");
            self.wake.1.notify_one();
        }
        let mut rx = self.durable.subscribe();
        rx.wait_for(|d| *d >= t).await.expect("flusher alive");
    }

    fn stop(&self) {
        self.requested.store(u64::MAX, Ordering::SeqCst);
        let _guard = self.wake.0.lock().expect("lock");
        self.wake.1.notify_one();
    }
}

fn sled_db(path: &std::path::Path) -> sled::Db {
    sled::Config::new().path(path).flush_every_ms(None).open().expect("open sled")
}

/// The figures of `bench commit`.
#[derive(Debug, Clone)]
pub struct CommitReport {
    /// Seconds measured per point.
    pub seconds: u64,
    /// Encoded frame of the bench event, in bytes.
    pub record_bytes: usize,
    /// One writer, `Db::flush()` after every insert: events/s without group commit.
    pub flush_per_write: f64,
    pub points: Vec<CommitPoint>,
    /// The JetStream peer, measured after the points.
    pub jetstream: JetStreamOutcome,
}

/// Durable appends/s at one writer count.
#[derive(Debug, Clone, Copy)]
pub struct CommitPoint {
    pub writers: usize,
    /// Bare sled group flush, `Db::flush()` only (not durable against a
    /// power cut), events/s.
    pub bare: f64,
    /// Bare sled group flush with the durable commit (flush plus fdatasync),
    /// events/s: the baseline.
    pub bare_fsync: f64,
    /// `Spool::append`, events/s.
    pub spool: f64,
    /// p99 latency of one bare durable insert + group commit.
    pub bare_fsync_p99: Duration,
    /// p99 latency of one `Spool::append`.
    pub spool_p99: Duration,
}

/// The encoded frame of the bench's record, in bytes.
pub fn record_frame() -> Vec<u8> {
    spool_format::encode_record(&spool_format::Record {
        seq: 1,
        received_at: spool_format::OffsetDateTime::now_utc(),
        node: "front-1".into(),
        state: spool_format::State::Pending,
        attempts: 0,
        event: event("sl-8f14e45f-ceea-467a-9f1d-1b1b3c7e2e11"),
    })
}

pub fn run(args: CommitArgs) -> anyhow::Result<()> {
    let report = measure(&args)?;
    println!();
    println!("| writers | bare flush only | bare flush + fdatasync | fsync cost | Spool::append (durable) | vs bare + fdatasync |");
    println!("|--:|--:|--:|--:|--:|--:|");
    for p in &report.points {
        println!(
            "| {} | {:.0} | {:.0} | {:+.0}% | {:.0} | {:.2} |",
            p.writers,
            p.bare,
            p.bare_fsync,
            (p.bare_fsync / p.bare.max(1.0) - 1.0) * 100.0,
            p.spool,
            p.spool / p.bare_fsync.max(1.0)
        );
    }
    match &report.jetstream {
        JetStreamOutcome::Skipped(why) => println!("\nJetStream peer: SKIPPED: {why}"),
        JetStreamOutcome::Done { publishers, rate, server_version } => {
            println!("\nJetStream peer (nats-server {server_version}, file stream, {publishers} publishers, publish + ack):");
            println!("| figure | events/s | p99 ms | events/s ÷ JetStream | p99 ÷ JetStream |");
            println!("|---|--:|--:|--:|--:|");
            println!("| JetStream publish + ack | {:.0} | {:.2} | 1.00 | 1.00 |", rate.per_sec, ms(rate.p99));
            if let Some(p) = report.points.iter().find(|p| p.writers == *publishers) {
                for (name, per_sec, p99) in [
                    ("bare sled group flush + fdatasync", p.bare_fsync, p.bare_fsync_p99),
                    ("Spool::append (durable)", p.spool, p.spool_p99),
                ] {
                    println!(
                        "| {name} | {per_sec:.0} | {:.2} | {:.2} | {:.2} |",
                        ms(p99),
                        per_sec / rate.per_sec.max(1.0),
                        p99.as_secs_f64() / rate.p99.as_secs_f64().max(1e-9)
                    );
                }
            }
            if rate.errors > 0 {
                println!("JetStream publish errors: {}", rate.errors);
            }
        }
    }
    Ok(())
}

/// Measures every point of `args`, printing progress.
pub fn measure(args: &CommitArgs) -> anyhow::Result<CommitReport> {
    let base = match &args.dir {
        Some(d) => tempfile::tempdir_in(d).context("create the commit bench dir")?,
        None => tempfile::tempdir().context("create the commit bench dir")?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let record_bytes = record_frame();
    println!("# bench commit: durable appends/s ({} s per point, record {} bytes)", args.seconds, record_bytes.len());
    println!("machine: {} cores; dir: {}", crate::cores(), base.path().display());

    // Flush per write, one writer: the no-group-commit figure.
    let serial = {
        let db = sled_db(&base.path().join("serial"));
        let value = record_bytes.clone();
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(args.seconds) {
            db.insert(n.to_be_bytes(), value.as_slice()).context("insert into sled")?;
            db.flush().context("flush sled")?;
            n += 1;
        }
        n as f64 / started.elapsed().as_secs_f64()
    };
    println!("flush per write (1 writer): {serial:.0} events/s");
    let mut points = Vec::new();
    for &writers in &args.writers {
        let bare_run = |g: Arc<BareGroupFlush>| {
            let value = Arc::new(record_bytes.clone());
            let gg = Arc::clone(&g);
            let rate = rt.block_on(measure_rate(writers, args.seconds, move |w, i| {
                let g = Arc::clone(&gg);
                let value = Arc::clone(&value);
                async move { g.write((w as u64) << 40 | i, &value).await }
            }));
            g.stop();
            rate
        };
        let bare = bare_run(BareGroupFlush::start(sled_db(&base.path().join(format!("bare-{writers}"))), None)).per_sec;
        let bare_fsync = {
            let (db, committer) =
                durable::open(&base.path().join(format!("bare-fsync-{writers}")), 1 << 30, Duration::from_secs(2))
                    .context("open sled for the durable bare flush")?;
            bare_run(BareGroupFlush::start(db, Some(committer)))
        };
        let spooled = {
            let spool = Spool::open(SpoolConfig::for_dir(base.path().join(format!("spool-{writers}"))))
                .context("open spool")?;
            let s = spool.clone();
            let rate = rt.block_on(measure_rate(writers, args.seconds, move |_, _| {
                let s = s.clone();
                async move {
                    let out = s.append(event(&crate::ids::random_id())).await.expect("append");
                    assert!(matches!(out, AppendOutcome::Accepted { .. }));
                }
            }));
            spool.close();
            rate
        };
        println!(
            "  {writers:>3} writers: bare group flush {bare:.0} events/s, with fdatasync {:.0} events/s \
             ({:+.0}%, p99 {:.2} ms), Spool::append (durable) {:.0} events/s (p99 {:.2} ms)",
            bare_fsync.per_sec,
            (bare_fsync.per_sec / bare.max(1.0) - 1.0) * 100.0,
            ms(bare_fsync.p99),
            spooled.per_sec,
            ms(spooled.p99),
        );
        points.push(CommitPoint {
            writers,
            bare,
            bare_fsync: bare_fsync.per_sec,
            spool: spooled.per_sec,
            bare_fsync_p99: bare_fsync.p99,
            spool_p99: spooled.p99,
        });
    }
    let jetstream = if args.jetstream_publishers == 0 {
        JetStreamOutcome::Skipped("--jetstream-publishers 0".into())
    } else {
        rt.block_on(crate::jetstream::measure(&args.nats_url, args.jetstream_publishers, args.seconds))
    };
    match &jetstream {
        JetStreamOutcome::Skipped(why) => println!("JetStream peer: SKIPPED: {why}"),
        JetStreamOutcome::Done { publishers, rate, .. } => println!(
            "  JetStream publish + ack, {publishers} publishers: {:.0} events/s (p99 {:.2} ms, {} errors)",
            rate.per_sec,
            ms(rate.p99),
            rate.errors
        ),
    }
    Ok(CommitReport {
        seconds: args.seconds,
        record_bytes: record_bytes.len(),
        flush_per_write: serial,
        points,
        jetstream,
    })
}
