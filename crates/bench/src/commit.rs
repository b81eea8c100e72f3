//! `bench commit`: durable appends per second through `Spool::append` at 1, 16,
//! 64 and 256 concurrent writers, against two baselines measured in the same run
//! on the same disk:
//! - *bare group flush*: writers insert a record-sized value straight into sled and
//!   wait for a flush generation of a minimal flusher thread calling
//!   `Db::flush()` (no framing, no checksum, no id index). This is the ceiling the
//!   spool's group commit is measured against.
//! - *flush per write*: one writer that inserts and calls `Db::flush()` for each
//!   event — what a spool without group commit would get.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
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
}

fn event(id: &str) -> Event {
    test_support::events::spec_event(id)
}

/// Events per second that `writers` tasks achieve for `secs` with `op`.
async fn measure_rate<F, Fut>(writers: usize, secs: u64, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let op = Arc::clone(&op);
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                op(w, i).await;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
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
        let bare = bare_run(BareGroupFlush::start(sled_db(&base.path().join(format!("bare-{writers}"))), None));
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
            let rate = rt.block_on(measure_rate(writers, args.seconds, move |w, i| {
                let s = s.clone();
                async move {
                    let out = s.append(event(&format!("w{w}-{i}"))).await.expect("append");
                    assert!(matches!(out, AppendOutcome::Accepted { .. }));
                }
            }));
            spool.close();
            rate
        };
        println!(
            "  {writers:>3} writers: bare group flush {bare:.0} events/s, with fdatasync {bare_fsync:.0} events/s \
             ({:+.0}%), Spool::append (durable) {spooled:.0} events/s",
            (bare_fsync / bare.max(1.0) - 1.0) * 100.0
        );
        points.push(CommitPoint { writers, bare, bare_fsync, spool: spooled });
    }
    Ok(CommitReport {
        seconds: args.seconds,
        record_bytes: record_bytes.len(),
        flush_per_write: serial,
        points,
    })
}
