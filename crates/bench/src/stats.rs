//! Latency percentiles of the benchmarks.

use std::time::Duration;

/// The `p` quantile (0..=1) of `sorted` (ascending), nearest rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Throughput and latency of one measured run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    /// Completed operations per second.
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Operations that failed (not counted in `per_sec` or the latencies).
    pub errors: u64,
}

impl Rate {
    /// From the latencies of the completed operations of a run that took `elapsed`.
    pub fn from_latencies(mut lat: Vec<Duration>, errors: u64, elapsed: Duration) -> Rate {
        lat.sort_unstable();
        Rate {
            per_sec: lat.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50: percentile(&lat, 0.50),
            p99: percentile(&lat, 0.99),
            errors,
        }
    }
}

/// Milliseconds, for tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
