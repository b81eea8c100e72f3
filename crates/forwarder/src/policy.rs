//! The retry policy and the bisection of refused batches, sans-IO: pure
//! functions and a plain data structure, tested without sockets or clocks.

use std::collections::VecDeque;
use std::time::Duration;

/// Longest `Retry-After` honoured. A ledger asking for more is misconfigured;
/// capping it keeps one bad header from stalling forwarding for hours, and we
/// still never retry sooner than it asked, up to this cap.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// What one request to a ledger produced, reduced to what the policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An HTTP answer. For a 2xx, the caller has already checked that the body
    /// holds exactly one well-formed result per event (else it is [`Reply::BadBody`]).
    Status { code: u16, retry_after: Option<Duration> },
    /// A 2xx whose body was truncated, did not parse, or did not hold one
    /// result per event, in order.
    BadBody(String),
    /// No HTTP answer: connection refused or reset, DNS failure, timeout.
    Transport(String),
}

/// Why a batch is retried; decides the metric label and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// Network error, timeout, 5xx, 408, bad body: the ledger is (partly) down.
    Transient,
    /// 429 or 503 with Retry-After: the ledger is up and asks us to slow down.
    Throttled,
    /// 401/403 or another 4xx that bisection cannot fix (404, 405, 415, 3xx…):
    /// misconfiguration (token, URL). Everything is kept; a human must act.
    Misconfigured,
}

/// What to do after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The ledger answered with per-event results: apply them.
    Apply,
    /// Send the same batch again after `delay`.
    Retry { delay: Duration, kind: RetryKind },
    /// The ledger refused the batch as a whole (400/413/422): some event in it
    /// is poison. Split it; a single-event batch is dead-lettered.
    Bisect,
}

/// Classifies a reply and picks the delay before the next attempt.
///
/// `ceiling` is the current exponential backoff ceiling (see [`Ceiling`]),
/// `retry_max` the configured cap, `sample` a uniform random number in [0, 1).
/// Full jitter: the delay is drawn uniformly in `[0, ceiling]`; a
/// `Retry-After` (capped at [`RETRY_AFTER_MAX`]) is a floor. Misconfiguration
/// retries slowly, in `[retry_max / 2, retry_max]`, so a bad token does not
/// hammer the ledger but is retried as soon as it is fixed.
pub fn decide(reply: &Reply, ceiling: Duration, retry_max: Duration, sample: f64) -> Decision {
    let sample = if sample.is_finite() { sample.clamp(0.0, 1.0) } else { 0.5 };
    let jitter = ceiling.mul_f64(sample);
    let transient = |retry_after: Option<Duration>| {
        let floor = retry_after.map_or(Duration::ZERO, |r| r.min(RETRY_AFTER_MAX));
        Decision::Retry {
            delay: jitter.max(floor),
            kind: if retry_after.is_some() { RetryKind::Throttled } else { RetryKind::Transient },
        }
    };
    match reply {
        Reply::Transport(_) | Reply::BadBody(_) => transient(None),
        Reply::Status { code, retry_after } => match code {
            200..=299 => Decision::Apply,
            400 | 413 | 422 => Decision::Bisect,
            408 => transient(*retry_after),
            429 | 500..=599 => transient(*retry_after),
            _ => Decision::Retry {
                delay: retry_max / 2 + (retry_max / 2).mul_f64(sample),
                kind: RetryKind::Misconfigured,
            },
        },
    }
}

/// Parses a `Retry-After` value. Only the delta-seconds form is understood; an
/// HTTP-date (or garbage) gives `None`, and the normal backoff applies.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The exponential backoff ceiling of one batch: `initial`, doubling per
/// retry, capped at `max`, from the `backoff` crate (randomisation off: the
/// jitter is drawn by [`decide`]).
#[derive(Debug)]
pub struct Ceiling {
    inner: backoff::ExponentialBackoff,
    max: Duration,
}

impl Ceiling {
    pub fn new(initial: Duration, max: Duration) -> Ceiling {
        let initial = initial.min(max);
        let inner = backoff::ExponentialBackoff {
            current_interval: initial,
            initial_interval: initial,
            randomization_factor: 0.0,
            multiplier: 2.0,
            max_interval: max,
            // Never give up: a retryable failure is retried forever.
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        Ceiling { inner, max }
    }

    /// The ceiling for the next retry (and advance).
    pub fn next_ceiling(&mut self) -> Duration {
        use backoff::backoff::Backoff as _;
        self.inner.next_backoff().unwrap_or(self.max).min(self.max)
    }
}

/// Sub-batches still to send, front first, in seq order. Bisection replaces a
/// refused sub-batch by its two halves, so good events keep their relative
/// order and the poison ones are isolated in about `2 · p · log2(n)` requests
/// for `p` poison events among `n`.
#[derive(Debug)]
pub struct WorkQueue<T> {
    queue: VecDeque<Vec<T>>,
}

impl<T> WorkQueue<T> {
    pub fn new(batch: Vec<T>) -> WorkQueue<T> {
        let mut queue = VecDeque::new();
        if !batch.is_empty() {
            queue.push_back(batch);
        }
        WorkQueue { queue }
    }

    /// The next sub-batch to send.
    pub fn pop(&mut self) -> Option<Vec<T>> {
        self.queue.pop_front()
    }

    /// The ledger refused `sub` as a whole. A single event is returned: it is
    /// the poison, to dead-letter. A larger sub-batch is split in two halves
    /// that are sent next, before anything else.
    pub fn refused(&mut self, mut sub: Vec<T>) -> Option<T> {
        match sub.len() {
            0 => None,
            1 => sub.pop(),
            n => {
                let second = sub.split_off(n / 2);
                self.queue.push_front(second);
                self.queue.push_front(sub);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: Duration = Duration::from_secs(30);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn status(code: u16) -> Reply {
        Reply::Status { code, retry_after: None }
    }

    #[test]
    fn classification_follows_the_spec() {
        let c = ms(800);
        let check = |reply: Reply, want: Decision| assert_eq!(decide(&reply, c, MAX, 0.5), want, "{reply:?}");
        let transient = Decision::Retry { delay: ms(400), kind: RetryKind::Transient };
        check(status(200), Decision::Apply);
        check(status(400), Decision::Bisect);
        check(status(413), Decision::Bisect);
        check(status(422), Decision::Bisect);
        for code in [500, 502, 503, 504, 599, 408] {
            check(status(code), transient.clone());
        }
        check(Reply::Transport("connection refused".into()), transient.clone());
        check(Reply::Transport("dns error".into()), transient.clone());
        check(Reply::BadBody("3 results for 4 events".into()), transient.clone());
        for code in [401, 403, 404, 405, 409, 415, 302] {
            check(status(code), Decision::Retry { delay: Duration::from_millis(22_500), kind: RetryKind::Misconfigured });
        }
    }

    #[test]
    fn retry_after_is_a_floor_and_capped() {
        let r = |code, secs| Reply::Status { code, retry_after: Some(Duration::from_secs(secs)) };
        assert_eq!(decide(&r(503, 7), ms(100), MAX, 0.9), Decision::Retry { delay: Duration::from_secs(7), kind: RetryKind::Throttled });
        assert_eq!(decide(&r(429, 1), Duration::from_secs(20), MAX, 0.5), Decision::Retry { delay: Duration::from_secs(10), kind: RetryKind::Throttled });
        assert_eq!(decide(&r(503, 86_400), ms(100), MAX, 0.0), Decision::Retry { delay: RETRY_AFTER_MAX, kind: RetryKind::Throttled });
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn ceiling_doubles_to_the_cap_and_never_stops() {
        let mut c = Ceiling::new(ms(100), Duration::from_secs(1));
        let got: Vec<Duration> = (0..8).map(|_| c.next_ceiling()).collect();
        assert_eq!(got, vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000), ms(1000), ms(1000)]);
        for _ in 0..10_000 {
            assert_eq!(c.next_ceiling(), ms(1000));
        }
    }

    proptest! {
        #[test]
        fn full_jitter_stays_within_zero_and_the_ceiling(ceiling_ms in 0u64..60_000, sample in 0.0f64..1.0, code in 500u16..600) {
            let ceiling = ms(ceiling_ms);
            match decide(&status(code), ceiling, MAX, sample) {
                Decision::Retry { delay, kind: RetryKind::Transient } => prop_assert!(delay <= ceiling),
                other => prop_assert!(false, "{other:?}"),
            }
        }

        /// Any set of poison events among good ones: bisection against a ledger
        /// that refuses (400) any batch holding poison dead-letters exactly the
        /// poison ones, and every good one is accepted exactly once, in order.
        #[test]
        fn bisection_isolates_exactly_the_poison(poison in proptest::collection::vec(any::<bool>(), 1..200)) {
            let batch: Vec<usize> = (0..poison.len()).collect();
            let mut q = WorkQueue::new(batch);
            let (mut accepted, mut dead, mut requests) = (Vec::new(), Vec::new(), 0usize);
            while let Some(sub) = q.pop() {
                requests += 1;
                prop_assert!(requests <= 4 * poison.len() + 1, "too many requests");
                if sub.iter().any(|&i| poison[i]) {
                    if let Some(p) = q.refused(sub) {
                        dead.push(p);
                    }
                } else {
                    accepted.extend(sub);
                }
            }
            let want_dead: Vec<usize> = (0..poison.len()).filter(|&i| poison[i]).collect();
            let want_ok: Vec<usize> = (0..poison.len()).filter(|&i| !poison[i]).collect();
            prop_assert_eq!(dead, want_dead);
            prop_assert_eq!(accepted, want_ok);
        }
    }
}
