//! The report of `bench all`: the figures as data ([`AllReport`]), the goals
//! of the issues checked against them, and their rendering as markdown and as
//! an SVG chart. Rendering is pure (no I/O), so it is tested on fixed figures.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::backlog::{mib, BacklogReport, BacklogStage};
use crate::commit::CommitReport;
use crate::drain::{DrainReport, PgDrain};
use crate::ingest::IngestReport;
use crate::jetstream::JetStreamOutcome;

/// The machine the figures were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub ram_bytes: u64,
    pub cpu: String,
    pub kernel: String,
    pub bench_dir: String,
    /// Device, filesystem type and mount point of `bench_dir`.
    pub disk: String,
}

/// Every figure of one `bench all` run.
#[derive(Debug, Clone)]
pub struct AllReport {
    pub machine: Machine,
    /// RFC 3339, UTC.
    pub date: String,
    pub command: String,
    pub quick: bool,
    pub ingest: IngestReport,
    pub commit: CommitReport,
    pub drain: DrainReport,
    pub backlog: BacklogReport,
}

/// One goal of the issues, against this run's figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub goal: String,
    pub figure: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

/// RSS "flat": the largest backlog's RSS within this factor of the RSS at a
/// tenth of that backlog (10x the events, at most 25% more memory).
const RSS_FLAT_FACTOR: f64 = 1.25;

/// The goals of issues 1–6 (commit, ingest, drain, memory), checked.
pub fn goals(r: &AllReport) -> Vec<Goal> {
    let mut out = Vec::new();
    let commit64 = r.commit.points.iter().find(|p| p.writers == 64);
    out.push(Goal {
        goal: "group commit ≥ 80k durable appends/s at 64 writers".into(),
        figure: commit64.map_or("not measured at 64 writers".into(), |p| format!("{:.0}/s", p.spool)),
        met: commit64.map(|p| p.spool >= 80_000.0),
    });
    let (e, s) = (&r.ingest.echo_single, &r.ingest.spoold_single);
    let ratio = s.events_per_sec / e.events_per_sec.max(1.0);
    let p99_ms = s.p99.as_secs_f64() * 1e3;
    out.push(Goal {
        goal: "single-event ingest ≥ 0.6× echo with p99 ≤ 5 ms at 64 conns".into(),
        figure: format!("{ratio:.2}× echo, p99 {p99_ms:.2} ms at {} conns", r.ingest.connections),
        met: (r.ingest.connections == 64).then_some(ratio >= 0.6 && p99_ms <= 5.0),
    });
    out.push(Goal {
        goal: "batch ingest ≥ 250k events/s".into(),
        figure: format!("{:.0} events/s", r.ingest.spoold_batch),
        met: Some(r.ingest.spoold_batch >= 250_000.0),
    });
    out.push(Goal {
        goal: "drain ≥ 150k events/s into ledgerd/sled".into(),
        figure: format!("{:.0} events/s", r.drain.sled.events_per_sec),
        met: Some(r.drain.sled.events_per_sec >= 150_000.0),
    });
    let (figure, met) = match &r.drain.pg {
        PgDrain::Done { drain, .. } => (format!("{:.0} events/s", drain.events_per_sec), Some(drain.events_per_sec >= 60_000.0)),
        PgDrain::Skipped => ("skipped (--skip-pg)".into(), None),
        PgDrain::Failed(_) => ("failed to run".into(), None),
    };
    out.push(Goal { goal: "drain ≥ 60k events/s into ledgerd/PostgreSQL".into(), figure, met });
    let stages = &r.backlog.stages;
    let (figure, met) = match (stages.len() >= 2).then(|| (&stages[stages.len() - 2], &stages[stages.len() - 1])) {
        Some((small, large)) if small.pending_events > 0 => {
            let rss = |s: &BacklogStage| s.rss_ready_kib.max(s.rss_burst_kib) as f64;
            let growth = rss(large) / rss(small).max(1.0);
            (
                format!(
                    "{:.1} MiB at {} pending vs {:.1} MiB at {} ({growth:.2}×)",
                    rss(large) / 1024.0,
                    large.pending_events,
                    rss(small) / 1024.0,
                    small.pending_events
                ),
                Some(growth <= RSS_FLAT_FACTOR),
            )
        }
        _ => ("not measured at two backlog sizes".into(), None),
    };
    out.push(Goal {
        goal: format!("spoold RSS flat however large the backlog (10× the backlog: ≤ {RSS_FLAT_FACTOR}× the RSS)"),
        figure,
        met,
    });
    out
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

/// A markdown table.
fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(headers.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

fn ratio(figure: f64, baseline: f64) -> String {
    if baseline > 0.0 {
        format!("{:.2}×", figure / baseline)
    } else {
        "–".into()
    }
}

fn per_sec(v: f64) -> String {
    format!("{v:.0}")
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The whole report as markdown; `svg_name` is the chart's path relative to it.
pub fn render_markdown(r: &AllReport, svg_name: &str) -> String {
    let mut o = String::new();
    let m = &r.machine;
    let _ = writeln!(o, "# offgrid benchmarks\n");
    if r.quick {
        let _ = writeln!(
            o,
            "> **Quick run (`--quick`)**: small scales and short runs, to check the tool. These are not the figures \
             to quote; regenerate the report at full scale on a quiet machine with \
             `cargo build --release --workspace --bins && cargo run --release -p bench -- all`.\n"
        );
    }
    let _ = writeln!(o, "Generated by `{}` on {}.\n", r.command, r.date);
    let _ = writeln!(
        o,
        "Scale: ingest {} s a run; group commit {} s a point; drain of {} events; backlog of {} events \
         (also measured empty and at a tenth), bursts of {} s.\n",
        r.ingest.seconds, r.commit.seconds, r.drain.events, r.backlog.backlog_events, r.backlog.burst_seconds
    );
    let _ = writeln!(
        o,
        "Every figure is next to a baseline measured in the same run on the same machine; the ratio is figure ÷ \
         baseline. Other work on the machine makes the figures noisy: compare ratios, not absolute numbers, across \
         machines. Nothing here is a test.\n"
    );
    let _ = writeln!(o, "## Machine\n");
    table(
        &mut o,
        &["", ""],
        &[
            vec!["cores (available_parallelism)".into(), m.cores.to_string()],
            vec!["RAM".into(), format!("{:.1} GiB", m.ram_bytes as f64 / (1u64 << 30) as f64)],
            vec!["CPU".into(), m.cpu.clone()],
            vec!["kernel".into(), m.kernel.clone()],
            vec!["bench dir".into(), format!("`{}` on {}", m.bench_dir, m.disk)],
        ],
    );
    let _ = writeln!(o, "![figures vs baselines]({svg_name})\n");

    let _ = writeln!(o, "## Goals\n");
    let rows: Vec<Vec<String>> =
        goals(r).into_iter().map(|g| vec![g.goal, g.figure, met_text(g.met).into()]).collect();
    table(&mut o, &["goal", "this run", ""], &rows);
    let _ = writeln!(
        o,
        "Where the time goes, why the goals that are not met are not, and what the profile changed (with \
         before/after figures): [profile.md](profile.md).\n"
    );

    // Ingest.
    let i = &r.ingest;
    let _ = writeln!(o, "## HTTP ingest (`bench ingest`)\n");
    let _ = writeln!(
        o,
        "spoold (release binary, every 2xx after an fsync) against a bare hyper server that parses the JSON and \
         serialises it back, same client. Single events: {} keep-alive connections; batches: {} connections × {} \
         events; {} s a run.\n",
        i.connections, i.batch_connections, i.batch_size, i.seconds
    );
    let (e, s) = (&i.echo_single, &i.spoold_single);
    table(
        &mut o,
        &["figure", "spoold", "baseline: bare-hyper echo", "ratio"],
        &[
            vec![
                format!("single events, {} conns (events/s)", i.connections),
                per_sec(s.events_per_sec),
                per_sec(e.events_per_sec),
                ratio(s.events_per_sec, e.events_per_sec),
            ],
            vec!["single event p50 latency (ms)".into(), ms(s.p50), ms(e.p50), ratio(s.p50.as_secs_f64(), e.p50.as_secs_f64())],
            vec!["single event p99 latency (ms)".into(), ms(s.p99), ms(e.p99), ratio(s.p99.as_secs_f64(), e.p99.as_secs_f64())],
            vec![
                format!("batches of {}, {} conns (events/s)", i.batch_size, i.batch_connections),
                per_sec(i.spoold_batch),
                per_sec(i.echo_batch),
                ratio(i.spoold_batch, i.echo_batch),
            ],
        ],
    );
    let _ = writeln!(
        o,
        "The spool alone (in-process, no HTTP): {} events/s single, {} events/s in batches; spoold reaches {} and {} \
         of it. Errors: spoold {}, echo {}.\n",
        per_sec(i.direct_single),
        per_sec(i.direct_batch),
        ratio(s.events_per_sec, i.direct_single),
        ratio(i.spoold_batch, i.direct_batch),
        s.errors,
        e.errors
    );

    // Group commit.
    let c = &r.commit;
    let _ = writeln!(o, "## Group commit (`bench commit`)\n");
    let _ = writeln!(
        o,
        "Durable appends/s through `Spool::append` against writers inserting a record-sized value ({} bytes) straight \
         into sled and waiting for a minimal flusher thread (the bare group flush), once with `Db::flush()` alone \
         (not durable against a power cut) and once with the durable commit (flush plus fdatasync, \
         `durable::Committer`): the difference is the cost of the fsync; {} s a point.\n",
        c.record_bytes, c.seconds
    );
    let rows: Vec<Vec<String>> = c
        .points
        .iter()
        .map(|p| {
            vec![
                p.writers.to_string(),
                per_sec(p.spool),
                per_sec(p.bare_fsync),
                ratio(p.spool, p.bare_fsync),
                per_sec(p.bare),
                format!("{:+.0}%", (p.bare_fsync / p.bare.max(1.0) - 1.0) * 100.0),
            ]
        })
        .collect();
    table(
        &mut o,
        &[
            "writers",
            "Spool::append (appends/s)",
            "baseline: bare group flush + fdatasync",
            "ratio",
            "bare `Db::flush()` only",
            "cost of the fdatasync",
        ],
        &rows,
    );
    let _ = writeln!(o, "Without group commit (one writer, `Db::flush()` after every insert): {} appends/s.\n", per_sec(c.flush_per_write));
    match &c.jetstream {
        JetStreamOutcome::Skipped(why) => {
            let _ = writeln!(o, "Peer, NATS JetStream publish + ack: SKIPPED: {why}.\n");
        }
        JetStreamOutcome::Done { publishers, rate, server_version } => {
            let _ = writeln!(
                o,
                "Peer: NATS JetStream (nats-server {server_version}) publish + ack to a file-storage stream, {publishers} \
                 concurrent publishers, ~280-byte JSON events with random ids, in the same run. Its acks wait for the \
                 server's store, which fsyncs lazily (every 2 min by default), not for an fsync.\n"
            );
            let mut rows = vec![vec![
                "JetStream publish + ack".to_owned(),
                per_sec(rate.per_sec),
                ms(rate.p99),
                "1.00×".into(),
                "1.00×".into(),
            ]];
            if let Some(p) = c.points.iter().find(|p| p.writers == *publishers) {
                for (name, v, p99) in [
                    ("bare sled group flush + fdatasync", p.bare_fsync, p.bare_fsync_p99),
                    ("`Spool::append` (durable)", p.spool, p.spool_p99),
                ] {
                    rows.push(vec![
                        name.to_owned(),
                        per_sec(v),
                        ms(p99),
                        ratio(v, rate.per_sec),
                        ratio(p99.as_secs_f64(), rate.p99.as_secs_f64()),
                    ]);
                }
            }
            table(&mut o, &[&format!("{publishers} writers"), "events/s", "p99 (ms)", "events/s ÷ JetStream", "p99 ÷ JetStream"], &rows);
        }
    }

    // Drain.
    let d = &r.drain;
    let _ = writeln!(o, "## Drain (`bench drain`)\n");
    let _ = writeln!(
        o,
        "The forwarder (in-process, batches of {}, {} in flight) draining a backlog of {} events into the real \
         ledgerd; the baseline is {} connections each making direct single-row autocommit INSERTs into a table shaped \
         like ledgerd's, for {} s, on the same PostgreSQL.\n",
        d.batch_events, d.inflight, d.events, d.inflight, d.baseline_seconds
    );
    let base = match &d.pg {
        PgDrain::Done { baseline, .. } => Some(*baseline),
        _ => None,
    };
    let base_text = base.map_or("–".to_owned(), per_sec);
    let mut rows = vec![vec![
        "ledgerd/sled".into(),
        per_sec(d.sled.events_per_sec),
        base_text.clone(),
        base.map_or("–".into(), |b| ratio(d.sled.events_per_sec, b)),
        format!("{:.0}", mib(d.sled.rss_max_kib)),
    ]];
    rows.push(match &d.pg {
        PgDrain::Done { drain, baseline } => vec![
            "ledgerd/PostgreSQL".into(),
            per_sec(drain.events_per_sec),
            base_text,
            ratio(drain.events_per_sec, *baseline),
            format!("{:.0}", mib(drain.rss_max_kib)),
        ],
        PgDrain::Skipped => vec!["ledgerd/PostgreSQL".into(), "skipped (--skip-pg)".into(), "–".into(), "–".into(), "–".into()],
        PgDrain::Failed(why) => {
            vec!["ledgerd/PostgreSQL".into(), format!("failed: {}", why.replace('|', "/")), "–".into(), "–".into(), "–".into()]
        }
    });
    table(
        &mut o,
        &["into", "drain (events/s)", "baseline: direct single-row INSERTs (events/s)", "ratio", "bench process RSS max (MiB)"],
        &rows,
    );
    let spoold = crate::drain::spoold_medians(&d.spoold);
    if !spoold.is_empty() {
        let _ = writeln!(
            o,
            "The same backlog drained by the real spoold binary into a fresh real ledgerd (forwarder batches of {}, {} in \
             flight), timed from spoold's start until its status counts no pending event; CPU per event from \
             `/proc/<pid>/stat` over the drain (PostgreSQL's: every local `postgres` process); medians of {} run(s).\n",
            d.batch_events, d.inflight, d.repeats
        );
        if let Some(c) = &d.copy {
            let _ = writeln!(
                o,
                "Baseline, same run: a bare binary COPY of {} rows shaped like ledgerd's into a table built by ledgerd's \
                 migrations: {} events/s in COPYs of {} rows on {} connections (PostgreSQL CPU {:.1} µs/row), {} events/s in one COPY. \
                 This is the physical limit of this PostgreSQL on this machine.\n",
                d.events,
                per_sec(c.batched),
                d.batch_events,
                d.inflight,
                c.batched_pg_cpu_us,
                per_sec(c.single)
            );
        }
        let rows: Vec<Vec<String>> = spoold
            .iter()
            .map(|m| {
                vec![
                    format!("spoold → {} ({})", m.store, m.ledgerd),
                    per_sec(m.events_per_sec),
                    base.map_or("–".into(), |b| ratio(m.events_per_sec, b)),
                    match (&d.copy, m.store == "ledgerd/PostgreSQL") {
                        (Some(c), true) => ratio(m.events_per_sec, c.batched),
                        _ => "–".into(),
                    },
                    format!("{:.1}", m.ledgerd_cpu_us_per_event),
                    format!("{:.1}", m.spoold_cpu_us_per_event),
                    m.pg_cpu_us_per_event.map_or("–".into(), |c| format!("{c:.1}")),
                    format!("{:.0}", m.mean_batch_events),
                    m.inflight_max_seen.to_string(),
                ]
            })
            .collect();
        table(
            &mut o,
            &[
                "drain",
                "events/s",
                "ratio to direct INSERTs",
                "ratio to bare COPY (batched)",
                "ledgerd CPU µs/event",
                "spoold CPU µs/event",
                "PostgreSQL CPU µs/event",
                "mean batch (events)",
                "most batches in flight",
            ],
            &rows,
        );
    }

    // Backlog.
    let b = &r.backlog;
    let empty = b.stages.first();
    let _ = writeln!(o, "## spoold with a large pending backlog (`bench backlog`)\n");
    let _ = writeln!(
        o,
        "The real spoold on a spool filled in-process with `append_batch` ({} events/s), forwarding to a port \
         nobody listens on so the backlog stays pending. The baseline of each figure is the first row: the same \
         spoold on an empty spool, in the same run. The burst is {} s of batches (4 conns × 1000) then {} s of \
         single events (64 conns).\n",
        per_sec(b.fill_events_per_sec),
        b.burst_seconds,
        b.burst_seconds
    );
    let _ = writeln!(o, "### RSS of spoold (`VmRSS` of `/proc/<pid>/status`)\n");
    let rows: Vec<Vec<String>> = b
        .stages
        .iter()
        .map(|s| {
            vec![
                s.pending_events.to_string(),
                format!("{:.1}", mib(s.rss_ready_kib)),
                format!("{:.1}", mib(s.rss_burst_kib)),
                format!("{:.1}", mib(s.rss_peak_kib)),
                format!("{:.1}", mib(s.rss_crash_ready_kib)),
                empty.map_or("–".into(), |e| ratio(s.rss_burst_kib as f64, e.rss_burst_kib as f64)),
            ]
        })
        .collect();
    table(
        &mut o,
        &["pending events", "at ready (MiB)", "after the burst (MiB)", "peak, VmHWM (MiB)", "at ready after SIGKILL (MiB)", "after the burst ÷ empty spool"],
        &rows,
    );
    let _ = writeln!(
        o,
        "An open reads the meta value written with the last commit and rebuilds the id index's open partition \
         (at most 229,376 entries); it does not scan the backlog, after SIGKILL or not. What grows with the \
         backlog at ready is sled's page table (an entry per tree node) and the sealed partitions' filters \
         (about 1.1 bytes per id) ([spool-format.md](spool-format.md)).\n"
    );
    let _ = writeln!(o, "### Restart to ready (spoold started until `/readyz` answers 200)\n");
    let rows: Vec<Vec<String>> = b
        .stages
        .iter()
        .map(|s| {
            vec![
                s.pending_events.to_string(),
                format!("{:.3}", s.restart_clean.as_secs_f64()),
                empty.map_or("–".into(), |e| ratio(s.restart_clean.as_secs_f64(), e.restart_clean.as_secs_f64())),
                format!("{:.3}", s.restart_crash.as_secs_f64()),
                empty.map_or("–".into(), |e| ratio(s.restart_crash.as_secs_f64(), e.restart_crash.as_secs_f64())),
            ]
        })
        .collect();
    table(
        &mut o,
        &["pending events", "after SIGTERM (s)", "÷ empty spool", "after SIGKILL (s)", "÷ empty spool"],
        &rows,
    );
    let _ = writeln!(o, "### Disk bytes per pending event\n");
    let _ = writeln!(
        o,
        "Allocated bytes of the spool dir (512-byte blocks, as `du` counts them) over pending events, after each \
         stage; the baseline is the encoded record frame (the spool's live bytes over its live events).\n"
    );
    let rows: Vec<Vec<String>> = b
        .stages
        .iter()
        .map(|s| {
            vec![
                s.pending_after.to_string(),
                s.disk_bytes.to_string(),
                format!("{:.0}", s.disk_bytes_per_event()),
                format!("{:.0}", s.frame_bytes()),
                ratio(s.disk_bytes_per_event(), s.frame_bytes()),
            ]
        })
        .collect();
    table(
        &mut o,
        &["pending events (the burst's included)", "spool dir (bytes)", "bytes per event", "baseline: frame (bytes)", "ratio"],
        &rows,
    );
    let _ = writeln!(
        o,
        "### Against a bare sled open, during the burst and a full drain\n\n\
         Restart after SIGKILL next to a bare `sled::Config::new().path(..).open()` of the spool's store \
         (`spool::store_dir`) after another SIGKILL, on the same data in the same run; peak `VmRSS` sampled every \
         20 ms during the burst and during a full drain into a null ledger (an in-process server answering \
         `accepted` to every event); files under the store's `blobs/`.\n"
    );
    let rows: Vec<Vec<String>> = b
        .stages
        .iter()
        .map(|s| {
            vec![
                s.pending_after.to_string(),
                format!("{:.3}", s.restart_crash.as_secs_f64()),
                format!("{:.3}", s.bare_sled_open.as_secs_f64()),
                ratio(s.restart_crash.as_secs_f64(), s.bare_sled_open.as_secs_f64()),
                format!("{:.1}", mib(s.rss_burst_peak_kib)),
                s.drain.map_or("–".into(), |d| format!("{:.1}", mib(d.rss_peak_kib))),
                s.drain.map_or("–".into(), |d| per_sec(d.events as f64 / d.seconds.max(1e-9))),
                s.blob_files.to_string(),
            ]
        })
        .collect();
    table(
        &mut o,
        &[
            "pending events",
            "restart after SIGKILL (s)",
            "baseline: bare sled open (s)",
            "ratio",
            "peak RSS in the burst (MiB)",
            "peak RSS in the drain (MiB)",
            "drain (events/s)",
            "files in blobs/",
        ],
        &rows,
    );
    o
}

/// One group of the throughput chart: a figure and its baseline, events/s.
fn throughput_bars(r: &AllReport) -> Vec<(&'static str, f64, Option<f64>)> {
    let mut bars = vec![
        ("ingest, single", r.ingest.spoold_single.events_per_sec, Some(r.ingest.echo_single.events_per_sec)),
        ("ingest, batches", r.ingest.spoold_batch, Some(r.ingest.echo_batch)),
    ];
    let base = match &r.drain.pg {
        PgDrain::Done { baseline, .. } => Some(*baseline),
        _ => None,
    };
    bars.push(("drain, sled", r.drain.sled.events_per_sec, base));
    if let PgDrain::Done { drain, baseline } = &r.drain.pg {
        bars.push(("drain, PostgreSQL", drain.events_per_sec, Some(*baseline)));
    }
    bars
}

const FIGURE_COLOR: RGBColor = RGBColor(31, 119, 180);
const BASELINE_COLOR: RGBColor = RGBColor(255, 127, 14);

/// The chart: group commit rate vs writers (both curves), and grouped bars of
/// each throughput figure vs its baseline.
pub fn render_svg(r: &AllReport) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(520);

        let points = &r.commit.points;
        let ymax = points.iter().map(|p| p.spool.max(p.bare)).fold(1.0, f64::max) * 1.15;
        let xmax = points.iter().map(|p| p.writers).max().unwrap_or(1).max(2) as f64 * 1.3;
        let mut chart = ChartBuilder::on(&left)
            .caption("Group commit: durable appends/s", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0.8f64..xmax).log_scale(), 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_desc("writers")
            .y_desc("appends/s")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (name, color, spool) in [("Spool::append", FIGURE_COLOR, true), ("baseline: bare group flush", BASELINE_COLOR, false)] {
            let value = |p: &crate::commit::CommitPoint| if spool { p.spool } else { p.bare };
            let style = ShapeStyle::from(&color).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.writers as f64, value(p))), style))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(points.iter().map(|p| Circle::new((p.writers as f64, value(p)), 4, color.filled())))?;
        }
        chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE).border_style(BLACK).draw()?;

        let bars = throughput_bars(r);
        let n = bars.len();
        // Log scale: the figures span orders of magnitude (drain vs INSERTs).
        let ymax = bars.iter().map(|(_, f, b)| f.max(b.unwrap_or(0.0))).fold(1.0, f64::max) * 2.0;
        let ymin = bars.iter().flat_map(|(_, f, b)| [Some(*f), *b]).flatten().fold(ymax, f64::min).max(1.0) / 2.0;
        let labels: Vec<&str> = bars.iter().map(|(l, _, _)| *l).collect();
        let mut chart = ChartBuilder::on(&right)
            .caption("Throughput vs same-run baseline (events/s, log scale)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 {
                    labels.get(i as usize).map_or(String::new(), |l| (*l).to_owned())
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, f, _))| {
                Rectangle::new([(i as f64 - 0.38, ymin), (i as f64 - 0.02, *f)], FIGURE_COLOR.filled())
            }))?
            .label("figure")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], FIGURE_COLOR.filled()));
        chart
            .draw_series(bars.iter().enumerate().filter_map(|(i, (_, _, b))| {
                b.map(|b| Rectangle::new([(i as f64 + 0.02, ymin), (i as f64 + 0.38, b)], BASELINE_COLOR.filled()))
            }))?
            .label("baseline (echo; direct INSERTs)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BASELINE_COLOR.filled()));
        chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE).border_style(BLACK).draw()?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::commit::CommitPoint;
    use crate::drain::DrainResult;
    use crate::ingest::SingleResult;

    fn single(eps: f64, p99_ms: u64) -> SingleResult {
        SingleResult { events_per_sec: eps, p50: Duration::from_millis(1), p99: Duration::from_millis(p99_ms), errors: 0 }
    }

    fn stage(pending: u64, rss_mib: u64) -> BacklogStage {
        BacklogStage {
            pending_events: pending,
            rss_ready_kib: rss_mib * 1024,
            rss_burst_kib: rss_mib * 1024,
            rss_peak_kib: rss_mib * 1024,
            restart_clean: Duration::from_millis(20),
            restart_crash: Duration::from_millis(40),
            rss_crash_ready_kib: rss_mib * 1024,
            disk_bytes: (pending + 100) * 1000,
            pending_after: pending + 100,
            live_events: pending + 100,
            live_bytes: (pending + 100) * 450,
            ..BacklogStage::default()
        }
    }

    /// Fixed figures; nothing measured.
    fn fixture() -> AllReport {
        let drain = DrainResult { events_per_sec: 160_000.0, rss_start_kib: 10_240, rss_max_kib: 20_480, ..DrainResult::default() };
        AllReport {
            machine: Machine {
                cores: 2,
                ram_bytes: 4 << 30,
                cpu: "Test CPU".into(),
                kernel: "6.1.0".into(),
                bench_dir: "/tmp".into(),
                disk: "/dev/vda (ext4) mounted on /".into(),
            },
            date: "2026-01-01T00:00:00Z".into(),
            command: "cargo run --release -p bench -- all --quick".into(),
            quick: true,
            ingest: IngestReport {
                connections: 64,
                batch_size: 1000,
                batch_connections: 8,
                seconds: 2,
                echo_single: single(40_000.0, 3),
                spoold_single: single(30_000.0, 4),
                echo_batch: 400_000.0,
                spoold_batch: 200_000.0,
                direct_single: 50_000.0,
                direct_batch: 300_000.0,
            },
            commit: CommitReport {
                seconds: 1,
                record_bytes: 420,
                flush_per_write: 300.0,
                points: [(1, 400.0, 350.0), (16, 6_000.0, 5_000.0), (64, 90_000.0, 85_000.0), (256, 120_000.0, 100_000.0)]
                    .into_iter()
                    .map(|(writers, bare, spool)| CommitPoint {
                        writers,
                        bare,
                        bare_fsync: bare * 0.9,
                        spool,
                        bare_fsync_p99: Duration::from_millis(2),
                        spool_p99: Duration::from_millis(4),
                    })
                    .collect(),
                jetstream: JetStreamOutcome::Done {
                    publishers: 64,
                    rate: crate::stats::Rate { per_sec: 50_000.0, p50: Duration::from_millis(1), p99: Duration::from_millis(5), errors: 0 },
                    server_version: "2.9.10".into(),
                },
            },
            drain: DrainReport {
                events: 20_000,
                batch_events: 500,
                inflight: 4,
                baseline_seconds: 3,
                repeats: 1,
                sled: drain,
                pg: PgDrain::Done { drain: DrainResult { events_per_sec: 50_000.0, ..drain }, baseline: 5_000.0 },
                spoold: [(8_000.0, 60.0), (10_000.0, 50.0), (12_000.0, 40.0)]
                    .into_iter()
                    .map(|(eps, cpu)| crate::drain::SpooldDrain {
                        store: "ledgerd/sled",
                        ledgerd: "ledgerd".into(),
                        events_per_sec: eps,
                        ledgerd_cpu_us_per_event: cpu,
                        spoold_cpu_us_per_event: 30.0,
                        mean_batch_events: 500.0,
                        pg_cpu_us_per_event: None,
                        inflight_max_seen: 4,
                    })
                    .collect(),
                copy: Some(crate::drain::CopyBaseline { batched: 40_000.0, single: 35_000.0, batched_pg_cpu_us: 30.0 }),
                copy_ratios: Vec::new(),
            },
            backlog: BacklogReport {
                backlog_events: 100_000,
                burst_seconds: 1,
                fill_events_per_sec: 100_000.0,
                stages: vec![stage(0, 20), stage(10_000, 40), stage(100_000, 44)],
            },
        }
    }

    #[test]
    fn goals_are_checked_against_the_figures() {
        let g = goals(&fixture());
        let met: Vec<Option<bool>> = g.iter().map(|g| g.met).collect();
        // commit 85k ≥ 80k; single 0.75× but p99 4 ms ok; batch 200k < 250k;
        // sled 160k ≥ 150k; pg 50k < 60k; RSS 44 vs 40 MiB = 1.1× ≤ 1.25×.
        assert_eq!(met, vec![Some(true), Some(true), Some(false), Some(true), Some(false), Some(true)]);
        let mut r = fixture();
        r.drain.pg = PgDrain::Skipped;
        r.backlog.stages.truncate(1);
        let g = goals(&r);
        assert_eq!(g[4].met, None);
        assert_eq!(g[5].met, None);
    }

    #[test]
    fn markdown_has_the_header_tables_and_chart_link() {
        let md = render_markdown(&fixture(), "benchmarks.svg");
        assert!(md.contains("**Quick run (`--quick`)**"), "{md}");
        assert!(md.contains("Generated by `cargo run --release -p bench -- all --quick` on 2026-01-01T00:00:00Z"), "{md}");
        assert!(md.contains("![figures vs baselines](benchmarks.svg)"), "{md}");
        assert!(md.contains("| 64 | 85000 | 81000 | 1.05× | 90000 | -10% |"), "{md}");
        assert!(md.contains("| single events, 64 conns (events/s) | 30000 | 40000 | 0.75× |"), "{md}");
        assert!(md.contains("| ledgerd/PostgreSQL | 50000 | 5000 | 10.00× | 20 |"), "{md}");
        // The real-spoold drains: medians of the three runs.
        assert!(md.contains("| spoold → ledgerd/sled (ledgerd) | 10000 | 2.00× | – | 50.0 | 30.0 | – | 500 | 4 |"), "{md}");
        // The bare COPY baseline, stated next to the drains.
        assert!(md.contains("a bare binary COPY of 20000 rows"), "{md}");
        assert!(md.contains("40000 events/s in COPYs of 500 rows on 4 connections (PostgreSQL CPU 30.0 µs/row), 35000 events/s in one COPY"), "{md}");
        assert!(md.contains("| batch ingest ≥ 250k events/s | 200000 events/s | **not met** |"), "{md}");
        assert!(md.contains("| 100000 | 0.020 | 1.00× | 0.040 | 1.00× |"), "{md}");
        assert!(md.contains("| 100100 | 100100000 | 1000 | 450 | 2.22× |"), "{md}");
        assert!(md.contains("| CPU | Test CPU |"), "{md}");
        assert!(md.contains("| `Spool::append` (durable) | 85000 | 4.00 | 1.70× | 0.80× |"), "{md}");
        let full = AllReport { quick: false, ..fixture() };
        assert!(!render_markdown(&full, "b.svg").contains("Quick run"));
    }

    #[test]
    fn svg_has_both_charts() {
        let svg = render_svg(&fixture()).expect("render");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("Group commit: durable appends/s"));
        assert!(svg.contains("drain, PostgreSQL"));
        assert!(svg.contains("<rect"));
        assert!(svg.contains("<polyline"));
    }
}
