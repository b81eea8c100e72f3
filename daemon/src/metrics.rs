//! spoold's Prometheus metrics, with exactly the SPEC §7 names.
//!
//! Counters and histograms are updated where things happen; the gauges that
//! describe the spool and the disk are refreshed from [`spool::Spool::stats`]
//! and `statvfs` when `/metrics` is scraped, so they are never stale.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Label = [(&'static str, &'static str); 1];

/// All of spoold's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    ingest_total: Family<Label, Counter>,
    pub ingest_duration_seconds: Histogram,
    spool_events: Family<Label, Gauge>,
    spool_bytes: Gauge,
    spool_oldest_pending_seconds: Gauge<f64, AtomicU64>,
    pub commit_duration_seconds: Histogram,
    pub commit_batch_events: Histogram,
    /// `spoold_forward_*` and `spoold_ledger_up`, owned by the forwarder crate.
    pub forward: forwarder::ForwardMetrics,
    dead_letters: Gauge,
    disk_free_bytes: Gauge,
    disk_free_inodes: Gauge,
    /// 1 when the spool was opened over a regression the operator accepted.
    pub store_regression_accepted: Gauge,
    /// The configured limits, so alert rules compare against the node's own
    /// values instead of numbers copied into Prometheus.
    spool_bytes_max: Gauge,
    spool_events_max: Gauge,
    /// Sum of group-commit durations, in microseconds, for the status
    /// document (a histogram's sum is not readable back).
    commit_micros_total: std::sync::atomic::AtomicU64,
    disk_free_bytes_min: Gauge,
    disk_free_inodes_min: Gauge,
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let ingest_total = Family::<Label, Counter>::default();
        // Counters get the `_total` suffix from the encoder.
        registry.register("spoold_ingest", "Ingest requests (and batch items) by result", ingest_total.clone());
        // 100 µs .. ~3.3 s: fsync latency on SSDs up to a struggling disk.
        let ingest_duration_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "spoold_ingest_duration_seconds",
            "Time from request to response of /v1/events and /v1/events/batch",
            ingest_duration_seconds.clone(),
        );
        let spool_events = Family::<Label, Gauge>::default();
        registry.register("spoold_spool_events", "Records in the spool by state", spool_events.clone());
        let spool_bytes = Gauge::default();
        registry.register("spoold_spool_bytes", "Bytes of pending and dead records (what spool.bytes_max limits)", spool_bytes.clone());
        let spool_oldest_pending_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "spoold_spool_oldest_pending_seconds",
            "Age of the oldest record not yet accepted by the ledger",
            spool_oldest_pending_seconds.clone(),
        );
        let commit_duration_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "spoold_commit_duration_seconds",
            "Duration of one group commit (sled flush + fsync)",
            commit_duration_seconds.clone(),
        );
        // 1 .. 8192 writers made durable by one flush.
        let commit_batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "spoold_commit_batch_events",
            "Write requests made durable by one group commit",
            commit_batch_events.clone(),
        );
        let forward = forwarder::ForwardMetrics::default();
        forward.register(&mut registry);
        let dead_letters = Gauge::default();
        registry.register("spoold_dead_letters", "Records in the dead-letter queue", dead_letters.clone());
        let disk_free_bytes = Gauge::default();
        registry.register("spoold_disk_free_bytes", "Free bytes on the spool's filesystem", disk_free_bytes.clone());
        let disk_free_inodes = Gauge::default();
        registry.register("spoold_disk_free_inodes", "Free inodes on the spool's filesystem", disk_free_inodes.clone());
        let store_regression_accepted = Gauge::default();
        registry.register(
            "spoold_store_regression_accepted",
            "1 when the spool was opened over a regression the operator accepted (--accept-store-regression)",
            store_regression_accepted.clone(),
        );
        let spool_bytes_max = Gauge::default();
        registry.register("spoold_spool_bytes_max", "Configured [spool] bytes_max: at this spoold_spool_bytes ingest answers 503 spool_full", spool_bytes_max.clone());
        let spool_events_max = Gauge::default();
        registry.register("spoold_spool_events_max", "Configured [spool] events_max: at this many pending+dead records ingest answers 503 spool_full", spool_events_max.clone());
        let disk_free_bytes_min = Gauge::default();
        registry.register("spoold_disk_free_bytes_min", "Configured [spool] disk_free_bytes_min: below it ingest answers 507", disk_free_bytes_min.clone());
        let disk_free_inodes_min = Gauge::default();
        registry.register("spoold_disk_free_inodes_min", "Configured [spool] disk_free_inodes_min: below it ingest answers 507", disk_free_inodes_min.clone());
        Arc::new(Metrics {
            store_regression_accepted,
            commit_micros_total: std::sync::atomic::AtomicU64::new(0),
            spool_bytes_max,
            spool_events_max,
            disk_free_bytes_min,
            disk_free_inodes_min,
            registry,
            ingest_total,
            ingest_duration_seconds,
            spool_events,
            spool_bytes,
            spool_oldest_pending_seconds,
            commit_duration_seconds,
            commit_batch_events,
            forward,
            dead_letters,
            disk_free_bytes,
            disk_free_inodes,
        })
    }

    /// Counts one ingest outcome (`result` is the error code, or
    /// `accepted` / `duplicate`).
    pub fn ingest(&self, result: &'static str) {
        self.ingest_total.get_or_create(&[("result", result)]).inc();
    }

    pub fn ingest_n(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.ingest_total.get_or_create(&[("result", result)]).inc_by(n);
        }
    }

    pub fn observe_ingest(&self, d: Duration) {
        self.ingest_duration_seconds.observe(d.as_secs_f64());
    }

    /// Records one group commit: the histograms and the running sum.
    pub fn observe_commit(&self, duration: Duration, events: u64) {
        self.commit_duration_seconds.observe(duration.as_secs_f64());
        // events: u64 → f64 is exact far beyond any real batch size.
        self.commit_batch_events.observe(events as f64);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.commit_micros_total.fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// Seconds spent in group commits since start.
    pub fn commit_seconds_total(&self) -> f64 {
        self.commit_micros_total.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6
    }

    /// Sets the gauges of the configured spool limits.
    pub fn limits(&self, cfg: &spool::SpoolConfig) {
        self.spool_bytes_max.set(i64_of(cfg.bytes_max));
        self.spool_events_max.set(i64_of(cfg.events_max));
        self.disk_free_bytes_min.set(i64_of(cfg.disk_free_bytes_min));
        self.disk_free_inodes_min.set(i64_of(cfg.disk_free_inodes_min));
    }

    /// Refreshes the spool and disk gauges.
    pub fn refresh(&self, stats: &spool::Stats, disk: Option<spool::DiskFree>, now: time::OffsetDateTime) {
        self.spool_events.get_or_create(&[("state", "pending")]).set(i64_of(stats.pending_events));
        self.spool_events.get_or_create(&[("state", "dead")]).set(i64_of(stats.dead_events));
        self.spool_events.get_or_create(&[("state", "acked")]).set(i64_of(stats.acked_events));
        self.spool_events.get_or_create(&[("state", "quarantined")]).set(i64_of(stats.quarantined));
        self.spool_bytes.set(i64_of(stats.live_bytes));
        let age = stats.oldest_pending.map(|t| (now - t).as_seconds_f64().max(0.0)).unwrap_or(0.0);
        self.spool_oldest_pending_seconds.set(age);
        self.dead_letters.set(i64_of(stats.dead_events));
        if let Some(d) = disk {
            self.disk_free_bytes.set(i64_of(d.bytes));
            self.disk_free_inodes.set(d.inodes.map(i64_of).unwrap_or(-1));
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encode metrics");
        }
        out
    }
}
