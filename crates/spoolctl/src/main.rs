//! spoolctl: inspect and repair an offgrid spool (SPEC §6), online through
//! spoold's admin socket or offline on a stopped daemon's spool directory.
//!
//! Both modes run the same operations (`admin::execute`); only the transport
//! differs. Exit codes: 0 ok, 1 check failed / not found, 2 usage or config
//! error, 3 cannot reach the daemon or open the spool.

/// `println!` that returns the write error (e.g. a closed pipe) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

mod cli;
mod output;
mod reconcile;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use admin::{ImportReport, ListData, RetryData, StatusData, VerifyData};
use anyhow::Context;
use clap::{CommandFactory, Parser};
use common::admin::{codes, AdminRequest, AdminResponse, ADMIN_IMPORT_EVENTS_MAX, ADMIN_PAGE_RECORDS_MAX};
use serde::de::DeserializeOwned;
use spool_format::{OffsetDateTime, Record};

use cli::{Cli, Cmd, DlqCmd, ExportArgs, StateArg, DEFAULT_SOCKET};

/// Exit codes (SPEC §6).
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;

/// Longest import line accepted, in bytes. A record's JSON is at most a few
/// times its frame (frames are at most 1 MiB); 4 MiB leaves room for escaping.
const IMPORT_LINE_BYTES_MAX: usize = 4 << 20;

/// A failure with its exit code; the message is printed as `spoolctl: …`.
#[derive(Debug)]
struct Fail {
    code: u8,
    /// Machine-readable kind for `--json` errors: the daemon's error code
    /// (`not_found`, `invalid_request`, …) or one named after the exit code.
    kind: String,
    msg: String,
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Fail {}

fn fail(code: u8, msg: impl Into<String>) -> anyhow::Error {
    let kind = match code {
        EXIT_USAGE => "usage",
        EXIT_UNREACHABLE => "unreachable",
        _ => "failed",
    };
    anyhow::Error::new(Fail { code, kind: kind.to_owned(), msg: msg.into() })
}

/// An error as one JSON line on stderr (under `--json`):
/// `{"error":{"code":"not_found","message":"…","exit_code":1}}`.
fn print_json_error(kind: &str, msg: &str, exit_code: u8) {
    let v = serde_json::json!({"error": {"code": kind, "message": msg, "exit_code": exit_code}});
    eprintln!("{v}");
}

fn main() -> ExitCode {
    // sled panics on some damaged files; the spool catches those and names
    // them as faults, so the default hook's backtrace banner would only be
    // noise. An uncaught panic still ends the process (exit 101).
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        eprintln!("spoolctl: internal fault{at}: {msg}");
    }));
    let json = std::env::args_os().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Usage errors under --json: a JSON line, exit 2.
        Err(e) if json && e.use_stderr() => {
            let msg = e.kind().to_string();
            let detail = e.to_string();
            let first = detail.lines().next().unwrap_or(&msg).trim_start_matches("error: ");
            print_json_error("usage", first, EXIT_USAGE);
            return ExitCode::from(EXIT_USAGE);
        }
        // Help and version exit 0; usage errors exit 2.
        Err(e) => e.exit(),
    };
    init_logging();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spoolctl: start runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`spoolctl ls | head`): stop quietly, like any filter.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Fail>() {
            Some(f) if json => {
                print_json_error(&f.kind, &f.msg, f.code);
                ExitCode::from(f.code)
            }
            Some(f) => {
                eprintln!("spoolctl: {}", f.msg);
                ExitCode::from(f.code)
            }
            None if json => {
                print_json_error("failed", &format!("{e:#}"), EXIT_FAILED);
                ExitCode::from(EXIT_FAILED)
            }
            None => {
                eprintln!("spoolctl: {e:#}");
                ExitCode::from(EXIT_FAILED)
            }
        },
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Warnings (e.g. a dropped dead letter, offline) go to stderr; RUST_LOG overrides.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Where requests go: the daemon's admin socket, or a spool opened here.
enum Backend {
    Online { client: admin::Client, path: PathBuf },
    Offline { spool: spool::Spool },
}

impl Backend {
    async fn open(cli: &Cli) -> anyhow::Result<Backend> {
        if let Some(dir) = &cli.spool_dir {
            return Self::open_offline(dir, cli.node_id.clone());
        }
        // The environment is only a default: an explicit --spool-dir wins over it.
        let path = cli
            .socket
            .clone()
            .or_else(|| std::env::var_os("SPOOLCTL_SOCKET").filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        match admin::Client::connect(&path).await {
            Ok(client) => Ok(Backend::Online { client, path }),
            Err(e @ admin::AdminError::VersionMismatch(_)) => {
                Err(anyhow::Error::new(Fail { code: EXIT_UNREACHABLE, kind: "version_mismatch".into(), msg: e.to_string() }))
            }
            Err(e) => Err(fail(
                EXIT_UNREACHABLE,
                format!(
                    "cannot reach spoold: {e}\n  is the daemon running? to open a stopped daemon's spool use --spool-dir DIR"
                ),
            )),
        }
    }

    fn open_offline(dir: &Path, node_id: Option<String>) -> anyhow::Result<Backend> {
        if !spool::exists(dir) {
            return Err(fail(EXIT_UNREACHABLE, format!("no spool at {} (expected {}/sled)", dir.display(), dir.display())));
        }
        let mut cfg = spool::SpoolConfig::for_dir(dir);
        cfg.node_id = node_id.unwrap_or_else(|| "unknown".into());
        match spool::Spool::open(cfg) {
            Ok(spool) => Ok(Backend::Offline { spool }),
            Err(spool::SpoolError::Locked(detail)) => Err(fail(
                EXIT_UNREACHABLE,
                format!(
                    "the spool at {} is locked by another process; spoold is probably running.\n  \
                     use the daemon's admin socket instead (--socket PATH, default {DEFAULT_SOCKET}), \
                     or stop spoold first ({detail})",
                    dir.display()
                ),
            )),
            // A damaged store is a finding (exit 1, like a verify fault),
            // named, not a failure to reach the spool.
            Err(e @ (spool::SpoolError::Corrupt(_) | spool::SpoolError::Regressed(_))) => {
                Err(fail(EXIT_FAILED, format!("fault: the spool at {}: {e}", dir.display())))
            }
            Err(e) => Err(fail(EXIT_UNREACHABLE, format!("cannot open the spool at {}: {e}", dir.display()))),
        }
    }

    fn describe(&self) -> String {
        match self {
            Backend::Online { path, .. } => format!("online ({})", path.display()),
            Backend::Offline { spool } => format!("offline ({})", spool.config().dir.display()),
        }
    }

    async fn call(&mut self, req: AdminRequest) -> anyhow::Result<AdminResponse> {
        match self {
            Backend::Online { client, path } => client
                .call(&req)
                .await
                .map_err(|e| fail(EXIT_UNREACHABLE, format!("admin socket {}: {e}", path.display()))),
            Backend::Offline { spool } => Ok(admin::execute(spool, req).await),
        }
    }

    /// Calls and decodes a successful answer; maps error codes to exit codes.
    async fn call_ok<T: DeserializeOwned>(&mut self, req: AdminRequest) -> anyhow::Result<T> {
        let resp = self.call(req).await?;
        if !resp.ok {
            let msg = resp.error.unwrap_or_else(|| "request failed".into());
            let code = match resp.code.as_deref() {
                Some(codes::NOT_FOUND) => EXIT_FAILED,
                Some(codes::INVALID_REQUEST) => EXIT_USAGE,
                Some(codes::BUSY) => EXIT_UNREACHABLE,
                _ => EXIT_FAILED,
            };
            let kind = resp.code.unwrap_or_else(|| "failed".into());
            return Err(anyhow::Error::new(Fail { code, kind, msg }));
        }
        let data = resp.data.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(data).context("decode the daemon's answer")
    }

    fn close(self) {
        if let Backend::Offline { spool } = self {
            spool.close();
        }
    }
}

/// `verify` on an opened spool, with a progress bar on a terminal.
async fn verify_offline(spool: &spool::Spool) -> anyhow::Result<VerifyData> {
    let spool = spool.clone();
    let report = tokio::task::spawn_blocking(move || {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} verified {pos} records {elapsed}") {
                bar.set_style(style);
            }
            bar
        });
        let report = spool.verify(|n| {
            if let Some(b) = &bar {
                if n % 4096 == 0 {
                    b.set_position(n);
                }
            }
        });
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        report
    })
    .await
    .context("verify task")?
    .map_err(|e| fail(EXIT_FAILED, format!("fault: {e}")))?;
    Ok(admin::verify_data(report))
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    // Verbs that need no spool.
    match &cli.cmd {
        Cmd::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "spoolctl", &mut script);
            std::io::stdout().write_all(&script)?;
            return Ok(0);
        }
        Cmd::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()).context("render man page")?;
            return Ok(0);
        }
        Cmd::Dlq { cmd: DlqCmd::Drop { key, yes: false, .. } } => {
            return Err(fail(
                EXIT_USAGE,
                format!(
                    "refusing to drop dead letter {key} without --yes: the event is removed from this spool for good \
                     (keep a copy first: spoolctl export --state dead -o FILE)"
                ),
            ));
        }
        Cmd::Import { .. } if cli.spool_dir.is_some() && cli.node_id.is_none() => {
            return Err(fail(
                EXIT_USAGE,
                "offline import needs --node-id ID (the node_id of the spoold that owns this spool), \
                 so that imported records name their node",
            ));
        }
        _ => {}
    }
    let mut backend = Backend::open(&cli).await?;
    let result = dispatch(&cli, &mut backend).await;
    backend.close();
    result
}

async fn dispatch(cli: &Cli, b: &mut Backend) -> anyhow::Result<u8> {
    let json = cli.json;
    match &cli.cmd {
        Cmd::Status => {
            let mut s: StatusData = b.call_ok(AdminRequest::Status).await?;
            if let Backend::Offline { .. } = b {
                if cli.node_id.is_none() {
                    // Offline, the daemon's config is not read: name the node
                    // from the newest record instead of a made-up id.
                    let t: ListData = b.call_ok(AdminRequest::Tail { limit: 1 }).await?;
                    s.node_id = t.records.first().map_or_else(|| "unknown (empty spool)".into(), |r| r.node.clone());
                }
            }
            if json {
                output::print_json(&s)?;
            } else {
                output::print_status(&s, &b.describe())?;
            }
            Ok(0)
        }
        Cmd::Ls(args) => {
            let records = list(b, args.state(), args.from_seq, args.limit).await?;
            output::print_records(&records.0, json, false)?;
            if json {
                output::print_summary(records.0.len(), records.1)?;
            } else if let Some(next) = records.1 {
                eprintln!("(more records from seq {next}; use --from-seq {next} or a larger --limit)");
            }
            Ok(0)
        }
        Cmd::Show { key } => {
            let r: Record = b.call_ok(AdminRequest::Show { key: key.clone() }).await?;
            if json {
                output::print_json(&r)?;
            } else {
                output::print_record(&r)?;
            }
            Ok(0)
        }
        Cmd::Tail { follow, lines, interval } => tail(b, *follow, *lines, interval.get(), json).await,
        Cmd::Top { once, interval } => top(b, *once, interval.get(), json).await,
        Cmd::Export(args) => export(b, args, json).await,
        Cmd::Import { file, include_acked, include_dead } => import(b, file, *include_acked, *include_dead, json).await,
        Cmd::Verify => {
            let v: VerifyData = match b {
                // Offline: verify here, with a progress bar on a terminal.
                Backend::Offline { spool } => verify_offline(spool).await?,
                Backend::Online { .. } => b.call_ok(AdminRequest::Verify).await?,
            };
            let total = v.faults_total.max(v.faults.len() as u64);
            if json {
                // JSONL: one fault a line, then the summary.
                output::print_lines(&v.faults)?;
                output::print_line(&serde_json::json!({"summary": {"records": v.records, "faults": total}}))?;
            } else if total == 0 {
                outln!("verified {} records: no faults", v.records);
            } else {
                outln!("verified {} records: {} fault(s)", v.records, total);
                for f in &v.faults {
                    match f.seq {
                        Some(seq) => outln!("  seq {seq}: {}", f.what),
                        None => outln!("  {}", f.what),
                    }
                }
                if total > v.faults.len() as u64 {
                    outln!("  ... and {} more not shown", total - v.faults.len() as u64);
                }
            }
            Ok(if total == 0 { 0 } else { EXIT_FAILED })
        }
        Cmd::Dlq { cmd } => dlq(b, cmd, json).await,
        Cmd::Reconcile(args) => reconcile::run(b, args, json).await,
        Cmd::Completions { .. } | Cmd::Man => Ok(0),
    }
}

/// Lists up to `limit` records from `from_seq`, paging through the backend.
/// Returns the records and where the next page would start.
async fn list(b: &mut Backend, state: StateArg, from_seq: u64, limit: u64) -> anyhow::Result<(Vec<Record>, Option<u64>)> {
    let mut out = Vec::new();
    let mut from = from_seq;
    loop {
        let left = limit.saturating_sub(u64::try_from(out.len()).unwrap_or(u64::MAX));
        if left == 0 {
            // Peek whether anything follows, so the user learns there is more.
            let peek: ListData = b
                .call_ok(AdminRequest::List { state: state.as_str().into(), from_seq: from, limit: 1 })
                .await?;
            return Ok((out, peek.records.first().map(|r| r.seq)));
        }
        let page = u32::try_from(left.min(u64::from(ADMIN_PAGE_RECORDS_MAX))).unwrap_or(ADMIN_PAGE_RECORDS_MAX);
        let l: ListData = b
            .call_ok(AdminRequest::List { state: state.as_str().into(), from_seq: from, limit: page })
            .await?;
        out.extend(l.records);
        match l.next_from_seq {
            Some(next) => from = next,
            None => return Ok((out, None)),
        }
    }
}

async fn tail(b: &mut Backend, follow: bool, lines: u32, interval: Duration, json: bool) -> anyhow::Result<u8> {
    let t: ListData = b.call_ok(AdminRequest::Tail { limit: lines }).await?;
    let mut last = t.records.last().map(|r| r.seq);
    output::print_records(&t.records, json, follow)?;
    if !follow {
        if json {
            // The newest records: nothing follows them yet.
            output::print_summary(t.records.len(), None)?;
        }
        return Ok(0);
    }
    let mut header = !t.records.is_empty();
    loop {
        tokio::time::sleep(interval).await;
        let from = last.map_or(0, |s| s.saturating_add(1));
        let l: ListData = b
            .call_ok(AdminRequest::List { state: "all".into(), from_seq: from, limit: ADMIN_PAGE_RECORDS_MAX })
            .await?;
        if let Some(r) = l.records.last() {
            last = Some(r.seq);
            if json {
                output::print_records(&l.records, true, true)?;
            } else {
                output::print_rows(&l.records, !header)?;
                header = true;
            }
        }
    }
}

/// One frame of `top`: rates over the last interval and the state now.
#[derive(Debug, serde::Serialize)]
struct TopFrame {
    node_id: String,
    mode: String,
    interval_seconds: f64,
    /// New records per second (seq numbers taken), all clients together.
    ingest_events_per_second: f64,
    /// Events the ledger accepted per second (online, forwarding only).
    forward_events_per_second: Option<f64>,
    /// Group commits per second (each one fsync; ingest and the forwarder's
    /// acks both commit).
    commits_per_second: f64,
    /// Mean group-commit latency over the interval (online, with commits).
    commit_latency_ms: Option<f64>,
    pending_events: u64,
    dead_letters: u64,
    spool_bytes: u64,
    spool_bytes_max: u64,
    oldest_pending_age_seconds: Option<f64>,
    ledger_forwarding: bool,
    ledger_up: Option<bool>,
    ledger_last_error: Option<String>,
    ledger_last_error_age_seconds: Option<f64>,
}

async fn top_frame(b: &mut Backend, interval: Duration) -> anyhow::Result<TopFrame> {
    let a: StatusData = b.call_ok(AdminRequest::Status).await?;
    tokio::time::sleep(interval).await;
    let z: StatusData = b.call_ok(AdminRequest::Status).await?;
    let secs = (z.generated_at - a.generated_at).as_seconds_f64().max(1e-3);
    let rate = |from: u64, to: u64| to.saturating_sub(from) as f64 / secs;
    let forward = match (a.ledger.events_acked_total, z.ledger.events_acked_total) {
        (Some(x), Some(y)) => Some(rate(x, y)),
        _ => None,
    };
    Ok(TopFrame {
        node_id: z.node_id.clone(),
        mode: z.mode.clone(),
        interval_seconds: secs,
        ingest_events_per_second: rate(a.spool.next_seq, z.spool.next_seq),
        forward_events_per_second: forward,
        commits_per_second: rate(a.spool.commits, z.spool.commits),
        commit_latency_ms: match (a.spool.commit_seconds_total, z.spool.commit_seconds_total) {
            (Some(x), Some(y)) if z.spool.commits > a.spool.commits => {
                Some((y - x).max(0.0) * 1000.0 / (z.spool.commits - a.spool.commits) as f64)
            }
            _ => None,
        },
        pending_events: z.spool.pending_events,
        dead_letters: z.dead_letters,
        spool_bytes: z.spool.bytes,
        spool_bytes_max: z.spool.bytes_max,
        oldest_pending_age_seconds: z.spool.oldest_pending_age_seconds,
        ledger_forwarding: z.ledger.forwarding,
        ledger_up: z.ledger.up,
        ledger_last_error: z.ledger.last_error.clone(),
        ledger_last_error_age_seconds: z.ledger.last_error_at.map(|t| (z.generated_at - t).as_seconds_f64().max(0.0)),
    })
}

/// `top`: a frame every interval (clearing the screen on a terminal), or one
/// with `--once`; `--json` prints each frame as one JSON line.
async fn top(b: &mut Backend, once: bool, interval: Duration, json: bool) -> anyhow::Result<u8> {
    let tty = std::io::stdout().is_terminal();
    loop {
        let f = top_frame(b, interval).await?;
        if json {
            output::print_line(&f)?;
        } else {
            if tty && !once {
                // Clear the screen and go home: a redraw, not a scroll.
                print!("\x1b[2J\x1b[H");
            }
            let ledger = match (f.mode.as_str(), f.ledger_forwarding, f.ledger_up) {
                ("offline", _, _) => "unknown (offline)".to_owned(),
                (_, false, _) => "forwarding off".to_owned(),
                (_, true, None) => "unknown".to_owned(),
                (_, true, Some(true)) => "up".to_owned(),
                (_, true, Some(false)) => "DOWN".to_owned(),
            };
            outln!("spoolctl top — {} ({}), every {:.1}s", f.node_id, f.mode, f.interval_seconds);
            outln!("{:<16}{:.1} events/s", "ingest", f.ingest_events_per_second);
            match f.forward_events_per_second {
                Some(r) => outln!("{:<16}{r:.1} events/s", "forward"),
                None => outln!("{:<16}-", "forward"),
            }
            match f.commit_latency_ms {
                Some(ms) => outln!("{:<16}{:.1}/s, mean {ms:.2} ms (group commits, one fsync each)", "commits", f.commits_per_second),
                None => outln!("{:<16}{:.1}/s (group commits, one fsync each)", "commits", f.commits_per_second),
            }
            outln!("{:<16}{} events, {} dead", "depth", f.pending_events, f.dead_letters);
            outln!("{:<16}{} of {}", "spool bytes", common::units::Bytes(f.spool_bytes), common::units::Bytes(f.spool_bytes_max));
            match f.oldest_pending_age_seconds {
                Some(s) => outln!("{:<16}{s:.1}s", "oldest pending"),
                None => outln!("{:<16}none", "oldest pending"),
            }
            outln!("{:<16}{ledger}", "ledger");
            if let (Some(e), Some(age)) = (&f.ledger_last_error, f.ledger_last_error_age_seconds) {
                outln!("{:<16}{age:.0}s ago: {e}", "last error");
            }
        }
        if once {
            return Ok(0);
        }
    }
}

/// Parses `--since`: an RFC 3339 time, or an age such as "2h" (now minus it).
fn parse_since(s: &str) -> anyhow::Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    match s.parse::<common::units::Span>() {
        Ok(age) => Ok(OffsetDateTime::now_utc() - age.get()),
        Err(_) => Err(fail(
            EXIT_USAGE,
            format!("--since {s:?}: expected an RFC 3339 time (2026-11-24T12:00:00Z) or an age (2h, 7d)"),
        )),
    }
}

async fn export(b: &mut Backend, args: &ExportArgs, json: bool) -> anyhow::Result<u8> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let to_stdout = args.output.as_os_str() == "-";
    let partial = partial_path(&args.output);
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        let f = std::fs::File::create(&partial)
            .map_err(|e| fail(EXIT_FAILED, format!("cannot create {}: {e}", partial.display())))?;
        Box::new(f)
    };
    let mut w = std::io::BufWriter::new(sink);

    let status: StatusData = b.call_ok(AdminRequest::Status).await?;
    let total = match args.state {
        StateArg::All => status.spool.pending_events + status.spool.dead_events + status.spool.acked_events,
        StateArg::Pending => status.spool.pending_events,
        StateArg::Dead => status.spool.dead_events,
        StateArg::Acked => status.spool.acked_events,
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records {elapsed}") {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    let mut from = 0u64;
    let mut exported = 0u64;
    loop {
        let l: ListData = b
            .call_ok(AdminRequest::List { state: args.state.as_str().into(), from_seq: from, limit: ADMIN_PAGE_RECORDS_MAX })
            .await?;
        for r in &l.records {
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            if since.is_some_and(|s| r.received_at < s) {
                continue;
            }
            serde_json::to_writer(&mut w, r).context("write export")?;
            w.write_all(b"\n").context("write export")?;
            exported += 1;
        }
        match l.next_from_seq {
            Some(next) => from = next,
            None => break,
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let inner = w.into_inner().map_err(|e| anyhow::anyhow!("write export: {}", e.error()))?;
    drop(inner);
    if !to_stdout {
        // fsync, then rename: a crash never leaves a truncated file under the final name.
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("fsync {}", partial.display()))?;
        std::fs::rename(&partial, &args.output)
            .with_context(|| format!("rename {} to {}", partial.display(), args.output.display()))?;
    }
    if json && !to_stdout {
        output::print_json(&serde_json::json!({"exported": exported, "file": args.output}))?;
    } else if !to_stdout {
        eprintln!("exported {exported} records to {}", args.output.display());
    }
    Ok(0)
}

fn partial_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Reads one line of at most `max` bytes; `None` at end of file.
fn read_bounded_line(r: &mut impl BufRead, max: usize, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = std::io::Read::take(&mut *r, limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(true));
    }
    if buf.len() > max {
        // Skip the rest of this over-long line.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let n = std::io::Read::take(&mut *r, 1 << 16).read_until(b'\n', &mut rest)?;
            if n == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(false));
    }
    Ok(Some(true))
}

async fn import(b: &mut Backend, file: &Path, include_acked: bool, include_dead: bool, json: bool) -> anyhow::Result<u8> {
    let f = std::fs::File::open(file).map_err(|e| fail(EXIT_FAILED, format!("cannot open {}: {e}", file.display())))?;
    let mut reader = std::io::BufReader::new(f);
    let mut report = ImportReport::default();
    // Line numbers of the events in the current chunk, for issue reports.
    let mut chunk: Vec<serde_json::Value> = Vec::with_capacity(ADMIN_IMPORT_EVENTS_MAX);
    let mut chunk_lines: Vec<usize> = Vec::with_capacity(ADMIN_IMPORT_EVENTS_MAX);
    let mut issue_lines: Vec<(usize, String)> = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    // Export records not pending, left out unless asked for (acked: already
    // in the ledger; dead: refused by it once).
    let (mut skipped_acked, mut skipped_dead) = (0u64, 0u64);
    loop {
        let line = read_bounded_line(&mut reader, IMPORT_LINE_BYTES_MAX, &mut buf)
            .with_context(|| format!("read {}", file.display()))?;
        let Some(fits) = line else { break };
        line_no += 1;
        if !fits {
            report.invalid += 1;
            issue_lines.push((line_no, format!("invalid: line longer than {IMPORT_LINE_BYTES_MAX} bytes")));
            continue;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Strict: a line with a duplicate key is refused (named), never guessed at.
        match spool_format::json::from_slice_strict(&buf) {
            Ok(v) => {
                // An export line is a record; take its event. A bare event is taken as is.
                let event = match v {
                    serde_json::Value::Object(mut o) if o.contains_key("seq") && o.contains_key("event") => {
                        match o.get("state").and_then(|s| s.as_str()) {
                            Some("acked") if !include_acked => {
                                skipped_acked += 1;
                                continue;
                            }
                            Some("dead") if !include_dead => {
                                skipped_dead += 1;
                                continue;
                            }
                            _ => {}
                        }
                        o.remove("event").unwrap_or(serde_json::Value::Null)
                    }
                    other => other,
                };
                chunk.push(event);
                chunk_lines.push(line_no);
            }
            Err(e) => {
                report.invalid += 1;
                issue_lines.push((line_no, format!("invalid: not JSON: {e}")));
            }
        }
        if chunk.len() >= ADMIN_IMPORT_EVENTS_MAX {
            send_chunk(b, &mut chunk, &mut chunk_lines, &mut report, &mut issue_lines).await?;
        }
    }
    send_chunk(b, &mut chunk, &mut chunk_lines, &mut report, &mut issue_lines).await?;
    issue_lines.sort();
    if json {
        let issues: Vec<_> = issue_lines.iter().map(|(l, m)| serde_json::json!({"line": l, "issue": m})).collect();
        output::print_json(&serde_json::json!({
            "accepted": report.accepted, "duplicate": report.duplicate, "conflict": report.conflict,
            "invalid": report.invalid, "failed": report.failed,
            "skipped_acked": skipped_acked, "skipped_dead": skipped_dead, "issues": issues,
        }))?;
    } else {
        outln!(
            "imported {}: accepted {}, duplicate {}, conflict {}, invalid {}, failed {}",
            file.display(),
            report.accepted,
            report.duplicate,
            report.conflict,
            report.invalid,
            report.failed
        );
        if skipped_acked + skipped_dead > 0 {
            outln!(
                "skipped {skipped_acked} acked and {skipped_dead} dead record(s) of the export \
                 (only pending ones are re-spooled; --include-acked / --include-dead to take them)"
            );
        }
        for (l, m) in &issue_lines {
            outln!("  line {l}: {m}");
        }
    }
    Ok(if report.is_clean() { 0 } else { EXIT_FAILED })
}

async fn send_chunk(
    b: &mut Backend,
    chunk: &mut Vec<serde_json::Value>,
    lines: &mut Vec<usize>,
    report: &mut ImportReport,
    issue_lines: &mut Vec<(usize, String)>,
) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let events = std::mem::take(chunk);
    let rep: ImportReport = b.call_ok(AdminRequest::Import { events }).await?;
    for issue in &rep.issues {
        let line = lines.get(issue.index).copied().unwrap_or(0);
        let id = issue.id.as_deref().map(|i| format!(" (id {i})")).unwrap_or_default();
        issue_lines.push((line, format!("{}{id}: {}", issue.status, issue.message)));
    }
    report.merge(ImportReport { issues: Vec::new(), ..rep }, 0);
    lines.clear();
    Ok(())
}

/// Who runs spoolctl, for the audit log (the daemon records the uid itself).
fn user_name() -> Option<String> {
    ["SUDO_USER", "USER", "LOGNAME"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Resolves a dead letter's seq from `seq:N`, `id:X` or a bare key, the way
/// `show` does (an ambiguous bare number is refused, never guessed).
async fn resolve_seq(b: &mut Backend, key: &str) -> anyhow::Result<u64> {
    let r: Record = b.call_ok(AdminRequest::Show { key: key.to_owned() }).await?;
    Ok(r.seq)
}

async fn dlq(b: &mut Backend, cmd: &DlqCmd, json: bool) -> anyhow::Result<u8> {
    match cmd {
        DlqCmd::Ls { limit } => {
            let (records, more) = list(b, StateArg::Dead, 0, *limit).await?;
            output::print_records(&records, json, false)?;
            if json {
                output::print_summary(records.len(), more)?;
            } else if let Some(next) = more {
                eprintln!("(more dead letters from seq {next}; use a larger --limit)");
            }
            Ok(0)
        }
        DlqCmd::Retry { key, all, reason } => {
            let seq = match key {
                Some(k) if !*all => Some(resolve_seq(b, k).await?),
                _ => None,
            };
            let req = AdminRequest::DlqRetry { seq, all: *all, reason: reason.clone(), user: user_name() };
            let r: RetryData = b.call_ok(req).await?;
            if json {
                output::print_json(&r)?;
            } else {
                match (seq, r.requeued.len()) {
                    (Some(s), _) => outln!("requeued dead letter {s}; the forwarder will send it again"),
                    (None, n) => outln!("requeued {n} dead letter(s); the forwarder will send them again"),
                }
            }
            Ok(0)
        }
        DlqCmd::Audit { limit } => {
            let a: admin::AuditData = b.call_ok(AdminRequest::Audit { limit: *limit }).await?;
            if json {
                output::print_lines(&a.entries)?;
                output::print_line(&serde_json::json!({"summary": {"records": a.entries.len(), "damaged_lines": a.damaged_lines}}))?;
            } else {
                for e in &a.entries {
                    let at = e.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                    outln!(
                        "{at}  {:<9}  seq {}  id {}  by {}  ({}: {}){}",
                        e.action,
                        e.seq,
                        e.id,
                        e.by,
                        e.dead_code,
                        e.dead_reason,
                        e.reason.as_deref().map(|r| format!("  reason: {r}")).unwrap_or_default()
                    );
                }
                if a.entries.is_empty() {
                    outln!("no audit entries (no dead letter was retried or dropped)");
                }
                if a.damaged_lines > 0 {
                    eprintln!("warning: {} damaged line(s) in the audit log were skipped", a.damaged_lines);
                }
            }
            Ok(if a.damaged_lines > 0 { EXIT_FAILED } else { 0 })
        }
        DlqCmd::Drop { key, yes, reason } => {
            if !*yes {
                return Err(fail(EXIT_USAGE, "refusing to drop without --yes"));
            }
            let seq = resolve_seq(b, key).await?;
            let req = AdminRequest::DlqDrop { seq, reason: reason.clone(), user: user_name() };
            let d: admin::DropData = b.call_ok(req).await?;
            if json {
                output::print_json(&d)?;
            } else {
                outln!("dropped dead letter {} (id {})", d.seq, d.id);
            }
            Ok(0)
        }
    }
}
