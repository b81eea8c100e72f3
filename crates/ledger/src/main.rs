//! ledgerd: the reference central ledger. See the `ledger` library docs.

/// mimalloc instead of glibc malloc: sled allocates on every operation, and
/// malloc was ~12% of the append profile (docs/profile.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use common::http::ServerLimits;
use ledger::server::{Api, ApiLimits, LedgerMetrics};
use ledger::{AnyStore, Config, Overrides, Store};
use prometheus_client::registry::Registry;

/// How often the store is probed to keep `ledgerd_store_up` current when no
/// request touches it.
const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(name = "ledgerd", version = buildinfo::version(), about = "offgrid reference central ledger")]
struct Cli {
    /// Config file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, overrides [listen] addr.
    #[arg(long)]
    listen: Option<String>,
    /// Store URL (sled:///path or postgres://…), overrides [store] url.
    #[arg(long)]
    store: Option<String>,
    /// Tokens file, overrides [auth] tokens_file.
    #[arg(long)]
    tokens_file: Option<PathBuf>,
    /// Log format, overrides [log] format: text (default) or json.
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<common::logging::LogFormat>,
    /// Log level or filter, overrides [log] level and RUST_LOG (info, debug, …).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Validate the configuration with start-up's own checks and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
    /// Start even if the sled store holds less than its state file says was
    /// made durable (acknowledged events were lost). An operator's decision
    /// after reading docs/operations.md ("store regressed"); logged at ERROR
    /// and shown by `ledgerd_store_regression_accepted`. Without it ledgerd
    /// exits with code 4.
    #[arg(long)]
    accept_store_regression: bool,
    /// Print the man page (roff) to stdout and exit.
    #[arg(long, exclusive = true)]
    man: bool,
    /// Print a completion script for SHELL to stdout and exit.
    #[arg(long, value_enum, value_name = "SHELL", exclusive = true)]
    completions: Option<clap_complete::Shell>,
    /// With --check-config: also print every effective value, secrets redacted.
    #[arg(long, requires = "check_config")]
    print: bool,
}

/// Exit code when the store regressed (docs/operations.md). Distinct from 1
/// (runtime failure) so that systemd does not restart into the same refusal
/// (`RestartPreventExitStatus=4` in the unit).
const EXIT_STORE_REGRESSED: i32 = 4;

fn main() {
    let cli = Cli::parse();
    if let Some(printed) = buildinfo::print_cli_docs(<Cli as clap::CommandFactory>::command(), cli.man, cli.completions) {
        std::process::exit(if printed.is_ok() { 0 } else { 1 });
    }
    let over = Overrides {
        listen: cli.listen.clone(),
        store: cli.store.clone(),
        tokens_file: cli.tokens_file.clone(),
        log_format: cli.log_format,
        log_level: cli.log_level.clone(),
    };
    let cfg = match Config::load(cli.config.as_deref(), &over) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ledgerd: config error: {e}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        println!("config ok");
        if cli.print {
            for (k, v) in cfg.effective_values() {
                println!("{k} = {v}");
            }
        }
        return;
    }
    common::logging::init(&cfg.log);
    durable::init_failpoints();
    let accept = cli.accept_store_regression;
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ledgerd: start runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cfg, accept)) {
        tracing::error!(error = format!("{e:#}"), "ledgerd failed");
        std::process::exit(1);
    }
}

async fn run(cfg: Config, accept_regression: bool) -> anyhow::Result<()> {
    let store = match AnyStore::open(&cfg.store_url, accept_regression) {
        Ok(s) => s,
        Err(ledger::StoreError::Config(m)) => {
            eprintln!("ledgerd: config error: store.url: {m}");
            std::process::exit(2);
        }
        Err(ledger::StoreError::Regressed(m)) => {
            tracing::error!(problem = %m, "ledger store regressed; refusing to start");
            eprintln!("ledgerd: refusing to start: {m} (start with --accept-store-regression to override)");
            std::process::exit(EXIT_STORE_REGRESSED);
        }
        Err(e) => return Err(e).context("open store"),
    };
    let metrics = LedgerMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let backend = store.backend();
    if let AnyStore::Sled(s) = &store {
        metrics.store_regression_accepted.set(i64::from(s.regression().is_some()));
    }
    let api = Arc::new(Api {
        store,
        tokens: cfg.tokens.clone(),
        roles: cfg.roles.clone(),
        limits: ApiLimits {
            body_bytes_max: cfg.body_bytes_max,
            batch_events_max: cfg.batch_events_max,
            body_read_timeout: cfg.body_read_timeout,
        },
        metrics: metrics.clone(),
        registry,
    });
    match api.store.health().await {
        Ok(()) => {
            metrics.store_up.set(1);
        }
        Err(e) => {
            metrics.store_up.set(0);
            tracing::warn!(error = %e, "store not available yet; answering 503 until it is");
        }
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("bind {}", cfg.listen))?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let limits = ServerLimits {
        connections_max: cfg.connections_max,
        header_read_timeout: cfg.header_read_timeout,
        body_read_timeout: cfg.body_read_timeout,
        ..ServerLimits::default()
    };
    // Before READY=1: from then on `systemctl reload` must not kill ledgerd.
    let mut reloadable: Vec<Arc<dyn common::tls::Reload>> = Vec::new();
    if let Some(c) = &cfg.tls {
        reloadable.push(Arc::clone(c) as Arc<dyn common::tls::Reload>);
    }
    if let Some(ca) = &cfg.tls_client_ca {
        reloadable.push(Arc::clone(ca) as Arc<dyn common::tls::Reload>);
    }
    tokio::spawn(common::tls::reload_on_sighup(reloadable));
    tracing::info!(
        addr = %cfg.listen,
        store = backend,
        tls = cfg.tls.is_some(),
        client_certificates = cfg.tls_client_ca.is_some(),
        "ledgerd listening"
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let probe_api = Arc::clone(&api);
    let mut probe_shutdown = shutdown_rx.clone();
    let probe = tokio::spawn(async move {
        let mut was_up = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(STORE_PROBE_INTERVAL) => {}
                _ = probe_shutdown.changed() => return,
            }
            let up = matches!(tokio::time::timeout(Duration::from_secs(2), probe_api.store.health()).await, Ok(Ok(())));
            probe_api.metrics.store_up.set(i64::from(up));
            if up != was_up {
                if up {
                    tracing::info!("store reachable again");
                } else {
                    tracing::warn!("store unreachable");
                }
                was_up = up;
            }
        }
    });

    let server = match &cfg.tls {
        Some(cert) => {
            let tls = cert.server_config(cfg.tls_client_ca.as_ref()).context("TLS config")?;
            tokio::spawn(common::http::serve_tls(listener, tls, limits, Arc::clone(&api).handler(), shutdown_rx))
        }
        None => tokio::spawn(common::http::serve(listener, limits, Arc::clone(&api).handler(), shutdown_rx)),
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = shutdown_tx.send(true);
    let _ = server.await;
    let _ = probe.await;
    if let AnyStore::Sled(s) = &api.store {
        if let Err(e) = s.close() {
            tracing::warn!(error = %e, "could not close the store cleanly");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
