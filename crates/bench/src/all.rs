//! `bench all`: every benchmark in one run (ingest, group commit, drain, the
//! large-backlog spoold), then the report: `docs/benchmarks.md` with the
//! machine, the date, the command line, a table per section (figure, same-run
//! baseline, ratio) and the goals of the issues marked met / not met, and the
//! chart `docs/benchmarks.svg` next to it.
//!
//! `--quick` shrinks every scale and run so that the whole thing takes a couple
//! of minutes, for checking the tool; the report says so in its header.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::backlog::BacklogArgs;
use crate::commit::CommitArgs;
use crate::drain::DrainArgs;
use crate::ingest::IngestArgs;
use crate::report::{AllReport, Machine};

/// Options of `bench all`.
#[derive(Debug, Clone, clap::Args)]
pub struct AllArgs {
    /// Small scales and short runs (about two minutes), for checking the tool.
    #[arg(long)]
    pub quick: bool,
    /// Where the markdown report goes; the SVG chart goes next to it, with the
    /// extension `.svg`.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// Skip the PostgreSQL drain and its baseline.
    #[arg(long)]
    pub skip_pg: bool,
    /// Pending events of the large backlog (default 10000000; 100000 with --quick).
    #[arg(long)]
    pub backlog_events: Option<u64>,
    /// PostgreSQL for the ledgerd/PostgreSQL drain and its baseline.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg_url: String,
    /// Directory for every spool and store (default: the system temp dir; pick
    /// the disk the spool will really live on).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The arguments of each benchmark at the chosen scale.
struct Plan {
    ingest: IngestArgs,
    commit: CommitArgs,
    drain: DrainArgs,
    backlog: BacklogArgs,
}

impl Plan {
    fn new(a: &AllArgs) -> Plan {
        let q = a.quick;
        Plan {
            ingest: IngestArgs {
                connections: 64,
                seconds: if q { 2 } else { 5 },
                batch_size: 1000,
                batch_connections: 8,
                dir: a.dir.clone(),
                echo_server: None,
            },
            commit: CommitArgs {
                seconds: if q { 1 } else { 3 },
                writers: vec![1, 16, 64, 256],
                dir: a.dir.clone(),
                nats_url: "nats://127.0.0.1:4222".into(),
                jetstream_publishers: 64,
            },
            drain: DrainArgs {
                events: if q { 20_000 } else { 1_000_000 },
                batch_events: 500,
                inflight: 4,
                pg_url: a.pg_url.clone(),
                skip_pg: a.skip_pg,
                baseline_seconds: if q { 3 } else { 10 },
                dir: a.dir.clone(),
                spoold: true,
                spoold_only: false,
                ledgerd_before: None,
                repeats: 1,
                pg_cpus: None,
                app_cpus: None,
            },
            backlog: BacklogArgs {
                backlog_events: a.backlog_events.unwrap_or(if q { 100_000 } else { 10_000_000 }),
                burst_seconds: if q { 1 } else { 5 },
                no_drain: false,
                dir: a.dir.clone(),
            },
        }
    }
}

pub fn run(args: AllArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args);
    let bench_dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let machine = machine(&bench_dir);
    let date = spool_format::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .context("round the date")?
        .format(&time::format_description::well_known::Rfc3339)
        .context("format the date")?;
    let command = format!("cargo run --release -p bench -- {}", std::env::args().skip(1).collect::<Vec<_>>().join(" "));

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the runtime")?;
    println!("== ingest");
    let ingest = rt.block_on(crate::ingest::measure(&plan.ingest))?;
    println!("== group commit");
    let commit = crate::commit::measure(&plan.commit)?;
    println!("== drain");
    let drain = rt.block_on(crate::drain::measure(&plan.drain))?;
    println!("== backlog");
    let backlog = rt.block_on(crate::backlog::measure(&plan.backlog))?;

    let report = AllReport { machine, date, command, quick: args.quick, ingest, commit, drain, backlog };
    let svg_path = args.out.with_extension("svg");
    let svg_name = svg_path.file_name().and_then(|n| n.to_str()).context("name the SVG file")?.to_owned();
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::write(&svg_path, crate::report::render_svg(&report)?).with_context(|| format!("write {}", svg_path.display()))?;
    let markdown = crate::report::render_markdown(&report, &svg_name);
    std::fs::write(&args.out, &markdown).with_context(|| format!("write {}", args.out.display()))?;
    println!();
    println!("{markdown}");
    println!("wrote {} and {}", args.out.display(), svg_path.display());
    Ok(())
}

/// What the report says about this machine; "unknown" for what cannot be read.
fn machine(bench_dir: &Path) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let ram_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    // `df -PT DIR`: the device and filesystem type of the bench dir.
    let disk = Command::new("df")
        .arg("-PT")
        .arg(bench_dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| {
            let line = t.lines().nth(1)?.to_owned();
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(format!("{} ({}) mounted on {}", f.first()?, f.get(1)?, f.last()?))
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cores: crate::cores(),
        ram_bytes: ram_kib * 1024,
        cpu,
        kernel: if kernel.is_empty() { "unknown".into() } else { kernel },
        bench_dir: bench_dir.display().to_string(),
        disk,
    }
}
