//! Incident: fiber cut, one slow backup line (issue 15). The internal link
//! is cut for [`CUT_FOR`] while payments keep arriving (they pile up in the
//! spool), then only a backup line is up: 1 Mbit/s each way and 200 ms round
//! trip (the proxy's [`Mode::Thin`]), while events keep arriving at a steady
//! rate. Then arrivals stop and the spool drains over the thin link.
//!
//! The same script runs twice in one test, on fresh daemons: with the
//! forwarder of this release (adaptive batch sizing, zstd) and with the old
//! behaviour (`batch_sizing = "fixed"`, `compression = "off"`: 500-event
//! batches, 4 in flight, plain JSON), so the figures compare on the same
//! machine and load. Each run must end with every acknowledged event at the
//! ledger exactly once ([`Outcome::check`]); the figures are printed, never
//! asserted: delivered events/s (events over the time from the backup line
//! coming up to an empty spool), wire bytes per event (request bytes through
//! the proxy), batches timed out (`spoold_forward_timeouts_total`), and the
//! largest number of sends of any one event that arrived after the line came
//! up (`attempts` of its acked record: a fixed batch that times out is sent
//! again whole, so its events count every timeout; the adaptive forwarder
//! never resends a timed-out batch whole, it cuts its records again at half
//! the size, so there only the sends of the batch that got the answer count).
//!
//! Scaled: 3 s cut and 6 s of thin link at 800 ev/s (~7,200 events);
//! `OFFGRID_SLOW_TESTS=1`: 20 s cut and 60 s of thin link (~64,000 events).

use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::ledgerd::{Ledgerd, NODE_TOKEN};
use test_support::proxy::{Mode, Proxy};
use test_support::spoold::{Spoold, SpooldOptions};

use super::{post_until_acked, spoold_status, LoadReport, Outcome};

/// The backup line: 1 Mbit/s each way, 100 ms each way (200 ms round trip).
const THIN: Mode = Mode::Thin { bytes_per_second: 125_000, one_way_delay: Duration::from_millis(100) };
/// Steady arrivals: 800 events/s, in batches of 40 every 50 ms.
const ARRIVAL_BATCH: u64 = 40;
const ARRIVAL_EVERY: Duration = Duration::from_millis(50);

fn slow() -> bool {
    std::env::var("OFFGRID_SLOW_TESTS").is_ok_and(|v| v == "1")
}

/// Figures of one run.
#[derive(Debug)]
struct Figures {
    events: usize,
    drain_from_link_up: Duration,
    wire_bytes_per_event: f64,
    timeouts: u64,
    max_sends: u64,
}

impl Figures {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.drain_from_link_up.as_secs_f64().max(1e-3)
    }
}

/// A counter's value in spoold's `/metrics` (0 when absent).
async fn counter(s: &Spoold, name: &str) -> u64 {
    let text = reqwest::get(s.url("/metrics")).await.expect("metrics").text().await.expect("metrics body");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The largest `attempts` of the acked records of events numbered `from_n`
/// or later (spoolctl over the admin socket): those that arrived after the
/// backup line came up, so that the retries against the cut link do not
/// count. Ids are `NAME-N-xxxxxxxx`.
fn max_sends(s: &Spoold, from_n: u64) -> u64 {
    let out = std::process::Command::new(test_support::bin_path("spoolctl"))
        .args(["--socket", s.admin_socket.to_str().expect("socket path"), "--json", "ls", "--acked", "--limit", "1000000"])
        .output()
        .expect("run spoolctl");
    assert!(out.status.success(), "spoolctl ls: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let id = v["event"]["id"].as_str().unwrap_or("");
            id.split('-').nth(1).and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= from_n)
        })
        .filter_map(|v| v["attempts"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Steady arrivals for `how_long`: a batch of [`ARRIVAL_BATCH`] new events
/// every [`ARRIVAL_EVERY`], each acknowledged before the next.
async fn arrive(client: &reqwest::Client, url: &str, name: &str, next: &mut u64, how_long: Duration) -> LoadReport {
    let mut r = LoadReport::default();
    let until = Instant::now() + how_long;
    let mut tick = tokio::time::interval(ARRIVAL_EVERY);
    while Instant::now() < until {
        tick.tick().await;
        let events = (*next..*next + ARRIVAL_BATCH).map(|i| test_support::events::payment(name, i)).collect();
        *next += ARRIVAL_BATCH;
        r.merge(post_until_acked(client, url, events, Instant::now() + Duration::from_secs(30)).await);
    }
    r
}

async fn run(name: &'static str, new_forwarder: bool, cut_for: Duration, thin_for: Duration) -> Figures {
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let proxy = Proxy::start(format!("127.0.0.1:{}", ledger.port).parse().expect("addr")).await.expect("proxy");
    // The release defaults for the link (10 s request timeout, 500 × 4),
    // with a short retry cap so that the scenario's recovery is not a
    // backoff sleep.
    let mut opts = SpooldOptions::default().forward_to(&proxy.url(), NODE_TOKEN).retry("max = \"1s\"");
    if new_forwarder {
        // The proxy listens on loopback, where `auto` would send plain
        // batches (same host); a real thin link is to another host.
        opts = opts.ledger("compression = \"zstd\"");
    } else {
        opts = opts.ledger("batch_sizing = \"fixed\"").ledger("compression = \"off\"");
    }
    let s = Spoold::start(opts).await.expect("start spoold");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let url = s.url("/v1/events/batch");
    let mut report = LoadReport::default();
    let mut next = 0u64;
    // The fiber is cut: nothing reaches the ledger, events pile up.
    proxy.set_mode(Mode::Partition);
    report.merge(arrive(&client, &url, name, &mut next, cut_for).await);
    // Only the backup line is up; events keep arriving.
    proxy.set_mode(THIN);
    let link_up = Instant::now();
    let bytes_before = proxy.bytes().0;
    let first_after_cut = next;
    report.merge(arrive(&client, &url, name, &mut next, thin_for).await);
    // Arrivals stop; the spool drains over the thin link.
    let deadline = Instant::now() + Duration::from_secs(if slow() { 1800 } else { 300 });
    loop {
        let st = spoold_status(&s).await;
        if st.as_ref().and_then(|v| v["spool"]["pending_events"].as_u64()) == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "{name}: not drained: {st:?}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = link_up.elapsed();
    let events = report.acked.len();
    let figures = Figures {
        events,
        drain_from_link_up: drain,
        wire_bytes_per_event: (proxy.bytes().0 - bytes_before) as f64 / events.max(1) as f64,
        timeouts: counter(&s, "spoold_forward_timeouts_total").await,
        max_sends: max_sends(&s, first_after_cut),
    };
    let scale = format!(
        "{:.0} s cut then {:.0} s at 1 Mbit/s / 200 ms RTT, {} ev/s arriving",
        cut_for.as_secs_f64(),
        thin_for.as_secs_f64(),
        ARRIVAL_BATCH * 1000 / ARRIVAL_EVERY.as_millis() as u64
    );
    Outcome::new(name, report, drain, "proxy thin", scale).check(&ledger).await;
    eprintln!(
        "scenario {name}: events={} delivered_events_per_s={:.0} wire_bytes_per_event={:.0} batches_timed_out={} max_sends_per_event_after_link_up={}",
        figures.events,
        figures.events_per_second(),
        figures.wire_bytes_per_event,
        figures.timeouts,
        figures.max_sends
    );
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_thin_link() {
    let (cut_for, thin_for) = if slow() { (Duration::from_secs(20), Duration::from_secs(60)) } else { (Duration::from_secs(3), Duration::from_secs(6)) };
    let new = run("thin_link", true, cut_for, thin_for).await;
    let old = run("thin_link_baseline", false, cut_for, thin_for).await;
    eprintln!(
        "scenario thin_link vs baseline (fixed 500x4, no compression), same run: delivered {:.0} vs {:.0} ev/s ({:.1}x, goal >= 3x), \
         wire {:.0} vs {:.0} B/event, timeouts {} vs {}, max sends of an event arrived after link-up {} vs {} (goal <= 2)",
        new.events_per_second(),
        old.events_per_second(),
        new.events_per_second() / old.events_per_second().max(1e-9),
        new.wire_bytes_per_event,
        old.wire_bytes_per_event,
        new.timeouts,
        old.timeouts,
        new.max_sends,
        old.max_sends
    );
}
