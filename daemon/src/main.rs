//! spoold: the offgrid edge daemon. Accepts payment events over HTTP, makes
//! each one durable in the spool (fsync) before it answers, and forwards the
//! spool to the ledger.
//!
//! Start-up order: config (exit 2 if bad) → logging → spool open → listener
//! bound → background tasks (compaction, forwarder, admin socket, watchdog) →
//! `READY=1` to systemd. Shutdown (SIGTERM/SIGINT): `/readyz` and new requests
//! answer 503 `shutting_down`, the listener closes, in-flight requests finish,
//! the spool is closed (last flush) → exit 0.
//!
//! **Invariant:** no 2xx is written before the spool's group commit has fsynced
//! the event (see `api`).

/// mimalloc instead of glibc malloc: sled allocates on every operation, and
/// malloc was ~12% of the append profile (docs/profile.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api;
mod config;
mod metrics;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::sync::watch;

use crate::api::App;
use crate::config::{Args, Config};
use crate::metrics::Metrics;

/// How often acked records past their retention are compacted away. A minute:
/// retention is days, so finer is pointless, and each pass is bounded.
const COMPACT_INTERVAL: Duration = Duration::from_secs(60);
/// While the spool opens, systemd's start timeout is extended every 10 s by
/// 30 s (`EXTEND_TIMEOUT_USEC`), so a long repair after a crash is not killed
/// half-way (which would only start it again from the beginning). The watchdog
/// takes over once the spool is open and `READY=1` is sent.
const OPEN_EXTEND_INTERVAL: Duration = Duration::from_secs(10);
const OPEN_EXTEND_USEC: u32 = 30_000_000;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(printed) = buildinfo::print_cli_docs(<Args as clap::CommandFactory>::command(), args.man, args.completions) {
        return if printed.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let cfg = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spoold: config error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{}", cfg.check_report(args.print));
        return ExitCode::SUCCESS;
    }
    common::logging::init(&cfg.log);
    durable::init_failpoints();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spoold: start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => {
            tracing::info!("spoold stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "spoold failed");
            eprintln!("spoold: {e:#}");
            if let Some(spool::SpoolError::Regressed(_)) = e.downcast_ref::<spool::SpoolError>() {
                eprintln!("spoold: refusing to start; see docs/operations.md (\"store regressed\"); --accept-store-regression overrides");
                return ExitCode::from(EXIT_STORE_REGRESSED);
            }
            if let Some(spool::SpoolError::Corrupt(_)) = e.downcast_ref::<spool::SpoolError>() {
                eprintln!("spoold: refusing to start on a damaged spool; see docs/operations.md (\"corrupt spool\")");
                return ExitCode::from(EXIT_STORE_REGRESSED);
            }
            ExitCode::FAILURE
        }
    }
}

/// Exit code when the spool regressed (docs/operations.md). Distinct from 1
/// (runtime failure) so that systemd does not restart into the same refusal
/// (`RestartPreventExitStatus=4` in the unit); 2 is a config error.
const EXIT_STORE_REGRESSED: u8 = 4;

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify");
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let observer: spool::CommitObserver = {
        let m = Arc::clone(&metrics);
        Arc::new(move |info: spool::CommitInfo| m.observe_commit(info.duration, info.events))
    };
    let spool_cfg = cfg.spool.clone();
    let mut opening = tokio::task::spawn_blocking(move || spool::Spool::open_with(spool_cfg, Some(observer)));
    // After an unclean stop the open scans every record to repair the indexes,
    // which grows with the backlog (docs/benchmarks.md, restart-to-ready). Tell
    // systemd it is still starting, so TimeoutStartSec does not kill a spoold
    // that is repairing a large spool and send it into a restart loop.
    // First extension after one interval: an open that is quick says nothing.
    let mut extend =
        tokio::time::interval_at(tokio::time::Instant::now() + OPEN_EXTEND_INTERVAL, OPEN_EXTEND_INTERVAL);
    let opened = loop {
        tokio::select! {
            opened = &mut opening => break opened,
            _ = extend.tick() => notify(&[
                sd_notify::NotifyState::Status("opening the spool"),
                sd_notify::NotifyState::ExtendTimeoutUsec(OPEN_EXTEND_USEC),
            ]),
        }
    };
    let spool = opened
        .context("open spool")?
        .with_context(|| format!("open spool in {}", cfg.spool.dir.display()))?;
    metrics.store_regression_accepted.set(i64::from(spool.regression().is_some()));
    let stats = spool.stats().context("read spool counters")?;
    tracing::info!(
        dir = %cfg.spool.dir.display(),
        pending = stats.pending_events,
        dead = stats.dead_events,
        acked = stats.acked_events,
        next_seq = stats.next_seq,
        "spool open"
    );

    let listener = tokio::net::TcpListener::bind(cfg.listen_addr)
        .await
        .with_context(|| format!("bind {}", cfg.listen_addr))?;
    let local = listener.local_addr().context("listener address")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // The forwarder drains the spool to the ledger; off without ledger urls.
    let (forwarder, forwarder_task) = match cfg.forwarder_config() {
        Some(fcfg) => {
            let (handle, task) = forwarder::spawn(spool.clone(), fcfg, metrics.forward.clone(), shutdown_rx.clone())
                .context("start the forwarder")?;
            (Some(handle), Some(task))
        }
        None => {
            tracing::warn!("ledger.urls is empty: forwarding is off, events accumulate in the spool");
            (None, None)
        }
    };

    let app = Arc::new(App {
        node_id: cfg.node_id.clone(),
        spool: spool.clone(),
        tokens: cfg.tokens.clone(),
        limits: cfg.limits.clone(),
        metrics: Arc::clone(&metrics),
        forwarder: forwarder.clone(),
        draining: Default::default(),
    });

    let server = match &cfg.tls {
        Some(cert) => tokio::spawn(common::http::serve_tls(
            listener,
            cert.server_config(None).context("TLS config")?,
            cfg.server_limits(),
            api::handler(Arc::clone(&app)),
            shutdown_rx.clone(),
        )),
        None => tokio::spawn(common::http::serve(
            listener,
            cfg.server_limits(),
            api::handler(Arc::clone(&app)),
            shutdown_rx.clone(),
        )),
    };

    let mut background = tokio::task::JoinSet::new();
    background.spawn(compaction_loop(spool.clone(), shutdown_rx.clone()));

    // The admin socket for spoolctl. A failure here is logged, not fatal:
    // ingest matters more than the operator's tool.
    if let Some(path) = cfg.admin_socket.clone() {
        let extra: admin::ExtraStatus = Arc::clone(&app) as admin::ExtraStatus;
        let spool = spool.clone();
        let shutdown = shutdown_rx.clone();
        background.spawn(async move {
            if let Err(e) = admin::serve_unix(&path, spool, extra, shutdown).await {
                tracing::error!(path = %path.display(), error = %e, "admin socket failed; spoolctl cannot reach this daemon");
            }
        });
    }

    let mut watchdog_usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0 {
        background.spawn(watchdog_loop(Duration::from_micros(watchdog_usec / 2), shutdown_rx.clone()));
    }

    // SIGHUP re-reads the TLS pair; installed before READY=1, so that
    // `systemctl reload` never kills spoold (it is only logged without TLS).
    // Not in `background`: it never ends, and the runtime drops it at exit.
    let mut reloadable: Vec<Arc<dyn common::tls::Reload>> = Vec::new();
    if let Some(c) = &cfg.tls {
        reloadable.push(Arc::clone(c) as Arc<dyn common::tls::Reload>);
    }
    if let Some(f) = forwarder.as_ref().and_then(forwarder::ForwarderHandle::tls_reload) {
        reloadable.push(f);
    }
    tokio::spawn(common::tls::reload_on_sighup(reloadable));

    tracing::info!(addr = %local, node_id = %cfg.node_id, tls = cfg.tls.is_some(), "spoold ready");
    notify(&[sd_notify::NotifyState::Ready]);

    // A failed fsync makes the spool refuse every write until it is reopened:
    // exit non-zero after a clean drain, so that systemd restarts spoold.
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<String>(1);
    background.spawn(health_loop(spool.clone(), fatal_tx, shutdown_rx.clone()));
    let fatal = tokio::select! {
        r = wait_for_signal() => {
            r?;
            None
        }
        Some(why) = fatal_rx.recv() => {
            tracing::error!(reason = %why, "spool unusable; shutting down so that it is reopened");
            Some(why)
        }
    };

    tracing::info!("shutting down: draining in-flight requests");
    notify(&[sd_notify::NotifyState::Stopping]);
    app.draining.store(true, Ordering::SeqCst);
    let _ = shutdown_tx.send(true);
    if let Err(e) = server.await {
        tracing::error!(error = %e, "http server task failed");
    }
    // The forwarder stops taking batches and abandons retries (records stay
    // pending and are sent again after the restart).
    if let Some(task) = forwarder_task {
        let grace = forwarder::SHUTDOWN_GRACE + Duration::from_secs(2);
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("forwarder did not stop in time");
        }
    }
    // Background tasks watch the same signal; give them a moment, then stop them.
    let drain = async { while background.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
        background.abort_all();
    }
    drop(app);
    tokio::task::spawn_blocking(move || spool.close()).await.context("close spool")?;
    match fatal {
        Some(why) => anyhow::bail!("spool unusable: {why}"),
        None => Ok(()),
    }
}

/// How often readiness and fill levels are checked for log lines and fatal
/// spool failures: a second is quick for operators, free for the daemon.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Fill level (of `events_max` or `bytes_max`) above which a WARN is logged:
/// 80% leaves the operator time to act before 503 `spool_full`.
const FILL_WARN_PERCENT: u64 = 80;

/// Logs readiness changes and fill levels crossing [`FILL_WARN_PERCENT`], and
/// reports a failed flush as fatal.
async fn health_loop(
    spool: spool::Spool,
    fatal: tokio::sync::mpsc::Sender<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    let mut was_ready = true;
    let mut was_high = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match spool.check_writable() {
            Err(spool::SpoolError::FlushFailed(why)) => {
                let _ = fatal.try_send(why.to_string());
                return;
            }
            Err(e) if was_ready => {
                tracing::warn!(reason = %e, "not ready: new events are refused");
                was_ready = false;
            }
            Ok(()) if !was_ready => {
                tracing::info!("ready again: accepting events");
                was_ready = true;
            }
            _ => {}
        }
        if let Ok(st) = spool.stats_now() {
            let events = st.pending_events + st.dead_events;
            let pct = (events.saturating_mul(100) / st.events_max.max(1))
                .max(st.live_bytes.saturating_mul(100) / st.bytes_max.max(1));
            if pct >= FILL_WARN_PERCENT && !was_high {
                tracing::warn!(percent = pct, events, bytes = st.live_bytes, "spool filling up");
                was_high = true;
            } else if pct + 5 < FILL_WARN_PERCENT && was_high {
                tracing::info!(percent = pct, events, bytes = st.live_bytes, "spool back under the warning level");
                was_high = false;
            }
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
    }
    Ok(())
}

async fn compaction_loop(spool: spool::Spool, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(COMPACT_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.compact(time::OffsetDateTime::now_utc())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "compacted acked records past retention"),
            Ok(Err(e)) => tracing::warn!(error = %e, "compaction failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "compaction task failed"),
        }
    }
}

async fn watchdog_loop(every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => notify(&[sd_notify::NotifyState::Watchdog]),
            _ = shutdown.changed() => return,
        }
    }
}
