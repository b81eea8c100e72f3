//! Batches sized for the link, sans-IO: a pure state machine per ledger URL,
//! fed with what each request took, tested without sockets or clocks.
//!
//! On a thin link (a 1 Mbit/s backup line) a fixed 500-event batch takes
//! seconds to send, four of them in flight share the line, and a request that
//! times out used to be sent again whole, competing with the ones about to
//! succeed. [`LinkSizer`] keeps each request well within its timeout instead:
//!
//! - it measures, per ledger URL, the round-trip time (a slowly rising
//!   minimum of request durations), the delivered bytes/s of the link (wire
//!   bytes of the requests in flight over the time beyond the RTT, EWMA) and
//!   the wire bytes per event (EWMA);
//! - it sizes the next batch (events) and the in-flight window so that the
//!   predicted duration, `rtt + events × bytes_per_event × window / rate`,
//!   stays under [`TARGET_FRACTION`] of the request timeout;
//! - AIMD between measurements: a fast answer (under half the target) doubles
//!   the batch and, once the batch is at its cap, widens the window by one; a
//!   slow answer (over the target) shrinks the batch in proportion and
//!   narrows the window by one; a **timeout halves** the batch that timed out
//!   and the window (the forwarder also splits that batch in two halves
//!   instead of sending it again whole);
//! - always within the configured maxima (`batch_events_max`,
//!   `inflight_batches_max`) and at least one event and one batch.

use std::time::Duration;

/// A request should take at most this fraction of the request timeout: a
/// link that gets twice slower still answers in time (4× headroom).
pub const TARGET_FRACTION: f64 = 0.25;
/// First batch of a new link: small enough to cross a 1 Mbit/s line (~45 KB
/// of JSON) in well under a second, doubled after each fast answer, so a fast
/// LAN reaches the configured maximum within a few batches.
pub const INITIAL_EVENTS: usize = 100;
/// Weight of a new sample in the moving averages.
const EWMA_WEIGHT: f64 = 0.25;

/// The configured bounds of a [`LinkSizer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizingLimits {
    pub events_max: usize,
    pub inflight_max: usize,
    pub request_timeout: Duration,
}

/// What the link has shown so far (for logs and `/v1/status`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkEstimate {
    pub rtt: Option<Duration>,
    pub bytes_per_second: Option<f64>,
    pub bytes_per_event: Option<f64>,
}

/// Batch size and in-flight window for one ledger URL.
#[derive(Debug, Clone)]
pub struct LinkSizer {
    limits: SizingLimits,
    events: usize,
    inflight: usize,
    est: LinkEstimate,
}

fn ewma(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(o) => o + EWMA_WEIGHT * (sample - o),
        None => sample,
    }
}

impl LinkSizer {
    pub fn new(limits: SizingLimits) -> LinkSizer {
        let limits = SizingLimits { events_max: limits.events_max.max(1), inflight_max: limits.inflight_max.max(1), ..limits };
        LinkSizer { events: INITIAL_EVENTS.clamp(1, limits.events_max), inflight: 1, limits, est: LinkEstimate::default() }
    }

    /// Events of the next batch.
    pub fn batch_events(&self) -> usize {
        self.events
    }

    /// Batches that may be in flight now.
    pub fn window(&self) -> usize {
        self.inflight
    }

    pub fn estimate(&self) -> LinkEstimate {
        self.est
    }

    fn target(&self) -> Duration {
        self.limits.request_timeout.mul_f64(TARGET_FRACTION)
    }

    /// The most events a batch may hold for the predicted duration at the
    /// current window to stay within the target (`None` before the link is
    /// measured).
    fn predicted_cap(&self) -> Option<usize> {
        let (rtt, rate, bpe) = (self.est.rtt?, self.est.bytes_per_second?, self.est.bytes_per_event?);
        let budget = self.target().as_secs_f64() - rtt.as_secs_f64();
        if budget <= 0.0 {
            return Some(1);
        }
        let per_event = bpe * self.inflight as f64 / rate.max(1.0);
        let n = budget / per_event.max(1e-9);
        // Float to count: clamped first, so the cast cannot overflow.
        Some(n.clamp(1.0, self.limits.events_max as f64) as usize)
    }

    fn clamp(&mut self) {
        if let Some(cap) = self.predicted_cap() {
            self.events = self.events.min(cap);
        }
        self.events = self.events.clamp(1, self.limits.events_max);
        self.inflight = self.inflight.clamp(1, self.limits.inflight_max);
    }

    /// A request of `events` events and `wire_bytes` bytes on the wire got an
    /// answer after `elapsed`, with `inflight` requests (itself included) on
    /// the link when it was sent.
    pub fn on_answer(&mut self, events: usize, wire_bytes: u64, inflight: usize, elapsed: Duration) {
        let t = elapsed.as_secs_f64();
        // RTT: the smallest duration seen, rising slowly so that a route
        // change is followed (a request can never be faster than the RTT).
        let rtt = match self.est.rtt {
            Some(r) if r <= elapsed => r + (elapsed - r).mul_f64(1.0 / 64.0),
            _ => elapsed,
        };
        self.est.rtt = Some(rtt);
        if events > 0 && wire_bytes > 0 {
            self.est.bytes_per_event = Some(ewma(self.est.bytes_per_event, wire_bytes as f64 / events as f64));
            // Time spent moving bytes, beyond the round trip; all requests in
            // flight shared the link meanwhile. At least a millisecond or 10%
            // of the request, so a request faster than the RTT estimate does
            // not claim an infinite rate.
            let transfer = (t - rtt.as_secs_f64()).max(0.001).max(t * 0.1);
            let sample = wire_bytes as f64 * inflight.max(1) as f64 / transfer;
            self.est.bytes_per_second = Some(ewma(self.est.bytes_per_second, sample));
        }
        let target = self.target();
        if elapsed > target {
            // Multiplicative decrease, in proportion to how late it was.
            let scaled = (events.max(1) as f64 * target.as_secs_f64() / t.max(1e-9)).floor();
            self.events = self.events.min((scaled.max(1.0)) as usize).min(events.max(1));
            self.inflight = self.inflight.saturating_sub(1);
        } else if elapsed < target / 2 {
            self.events = self.events.saturating_mul(2);
            if self.events >= self.limits.events_max || self.predicted_cap().is_some_and(|c| self.events >= c) {
                self.inflight = self.inflight.saturating_add(1);
            }
        } else {
            self.events = self.events.saturating_add((self.events / 8).max(1));
        }
        self.clamp();
    }

    /// A request of `events` events timed out: the next batch is at most half
    /// of it, and the window is halved.
    pub fn on_timeout(&mut self, events: usize) {
        self.events = self.events.min((events / 2).max(1));
        self.inflight = (self.inflight / 2).max(1);
        self.clamp();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(events_max: usize, inflight_max: usize, timeout_ms: u64) -> SizingLimits {
        SizingLimits { events_max, inflight_max, request_timeout: Duration::from_millis(timeout_ms) }
    }

    /// A simulated link: `window` requests of `events × bpe` bytes share
    /// `rate` bytes/s after a round trip of `rtt`. Returns each round's
    /// (events, window, duration, timed out).
    fn simulate(s: &mut LinkSizer, rate: f64, rtt: Duration, bpe: f64, rounds: usize) -> Vec<(usize, usize, Duration, bool)> {
        let timeout = s.limits.request_timeout;
        (0..rounds)
            .map(|_| {
                let (n, w) = (s.batch_events(), s.window());
                let bytes = n as f64 * bpe;
                let t = rtt + Duration::from_secs_f64(bytes * w as f64 / rate);
                let timed_out = t > timeout;
                if timed_out {
                    s.on_timeout(n);
                } else {
                    for _ in 0..w {
                        s.on_answer(n, bytes as u64, w, t);
                    }
                }
                (n, w, t, timed_out)
            })
            .collect()
    }

    #[test]
    fn a_fast_link_reaches_the_configured_maxima() {
        let mut s = LinkSizer::new(limits(500, 4, 10_000));
        assert_eq!((s.batch_events(), s.window()), (100, 1));
        let rounds = simulate(&mut s, 100e6, Duration::from_millis(1), 450.0, 20);
        assert_eq!((s.batch_events(), s.window()), (500, 4), "{rounds:?}");
    }

    #[test]
    fn a_thin_link_gets_batches_that_finish_well_within_the_timeout() {
        // 1 Mbit/s, 200 ms RTT, uncompressed events (~450 B), 10 s timeout.
        let mut s = LinkSizer::new(limits(500, 4, 10_000));
        let rounds = simulate(&mut s, 125_000.0, Duration::from_millis(200), 450.0, 60);
        assert!(rounds.iter().all(|r| !r.3), "no timeouts: {rounds:?}");
        let (_, _, t, _) = rounds[rounds.len() - 1];
        assert!(t <= Duration::from_millis(2_500) + Duration::from_millis(400), "{rounds:?}");
    }

    #[test]
    fn a_timeout_halves_the_batch_and_the_window() {
        let mut s = LinkSizer::new(limits(500, 8, 10_000));
        simulate(&mut s, 100e6, Duration::from_millis(1), 450.0, 20);
        assert_eq!((s.batch_events(), s.window()), (500, 8));
        s.on_timeout(500);
        assert_eq!((s.batch_events(), s.window()), (250, 4));
        s.on_timeout(1);
        assert_eq!((s.batch_events(), s.window()), (1, 2));
    }

    proptest! {
        /// Whatever happens, the sizes stay within 1 and the configured maxima.
        #[test]
        fn sizes_stay_within_the_bounds(
            events_max in 1usize..5000, inflight_max in 1usize..64, timeout_ms in 10u64..60_000,
            ops in proptest::collection::vec((any::<bool>(), 0usize..10_000, 0u64..10_000_000, 1usize..64, 0u64..120_000), 0..200),
        ) {
            let mut s = LinkSizer::new(limits(events_max, inflight_max, timeout_ms));
            for (timeout, n, bytes, inflight, ms) in ops {
                if timeout {
                    s.on_timeout(n);
                    prop_assert!(s.batch_events() <= (n / 2).max(1), "a timeout halves the next batch");
                } else {
                    s.on_answer(n, bytes, inflight, Duration::from_millis(ms));
                }
                prop_assert!((1..=events_max).contains(&s.batch_events()));
                prop_assert!((1..=inflight_max).contains(&s.window()));
            }
        }

        /// On any steady link that can carry one event well within the
        /// timeout, the sizer converges: after a warm-up, no request times out
        /// and none takes more than half the timeout.
        #[test]
        fn converges_on_any_steady_link(
            rate in 5_000.0f64..50e6, rtt_ms in 1u64..400, bpe in 30.0f64..2000.0,
            events_max in 1usize..2000, inflight_max in 1usize..16,
        ) {
            let timeout = Duration::from_secs(10);
            let rtt = Duration::from_millis(rtt_ms);
            prop_assume!(rtt.as_secs_f64() + bpe * inflight_max as f64 / rate < timeout.as_secs_f64() * TARGET_FRACTION / 2.0);
            let mut s = LinkSizer::new(limits(events_max, inflight_max, 10_000));
            let rounds = simulate(&mut s, rate, rtt, bpe, 200);
            for (n, w, t, timed_out) in &rounds[100..] {
                prop_assert!(!timed_out, "timed out at {n} events × {w}: {:?}", &rounds[90..]);
                prop_assert!(*t <= timeout / 2, "{n} events × {w} took {t:?}");
            }
        }

        /// Never the same large batch twice: after a timeout of `n` events, the
        /// next batch holds at most half of them, and sizes only grow again on
        /// answers.
        #[test]
        fn a_timeout_never_repeats_the_batch(n in 2usize..5000, events_max in 2usize..5000) {
            let mut s = LinkSizer::new(limits(events_max, 4, 10_000));
            s.on_timeout(n);
            prop_assert!(s.batch_events() <= n / 2);
            let b = s.batch_events();
            s.on_timeout(b);
            prop_assert!(s.batch_events() <= (b / 2).max(1));
        }
    }
}
