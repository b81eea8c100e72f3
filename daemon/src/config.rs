//! spoold's configuration: TOML (SPEC §5) overridden by command-line flags,
//! parsed once into a validated [`Config`] (ripgrep's LowArgs → HiArgs). The
//! rest of the daemon only ever sees [`Config`]; every limit in it is checked.
//!
//! A bad config is a [`ConfigError`] that names the key (`spool.bytes_max`,
//! `--listen`, …); `main` prints it and exits with code 2.
//! `docs/config.md` is the reference for every key, its default and why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::logging::{LogFormat, LogSettings};
use common::tokens::TokenSet;
use common::units::{Bytes, Span};
use serde::Deserialize;

/// Command-line flags. Each overrides the config key of the same meaning.
#[derive(Debug, Parser)]
#[command(name = "spoold", version = buildinfo::version(), about = "offgrid edge daemon: spools payment events durably and forwards them to the ledger")]
pub struct Args {
    /// TOML config file (SPEC §5). Without it, defaults plus flags are used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Overrides `listen.addr`, e.g. 127.0.0.1:8700.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Overrides `listen.admin_socket`; "" turns the admin socket off.
    #[arg(long, value_name = "PATH", value_parser = clap::builder::ValueParser::os_string())]
    pub admin_socket: Option<std::ffi::OsString>,
    /// Overrides `spool.dir`.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Overrides `ledger.urls`; repeat for several ledgers (tried in turn).
    #[arg(long = "ledger-url", value_name = "URL")]
    pub ledger_urls: Vec<String>,
    /// Overrides `node_id`.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Overrides `auth.tokens_file`.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Overrides `ledger.token_file`.
    #[arg(long, value_name = "FILE")]
    pub ledger_token_file: Option<PathBuf>,
    /// Log format, overrides `log.format`: text (default) or json (one object a line).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Same as `--log-format json` (kept for existing units).
    #[arg(long, hide = true)]
    pub log_json: bool,
    /// Log level or filter, overrides `log.level` and RUST_LOG: info, debug, "spoold=debug,info".
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Runs every start-up check on the config (the same code as start-up, and
    /// reads the tokens files), says `config ok`, exits 0 (2 if bad).
    #[arg(long)]
    pub check_config: bool,
    /// Start even if the spool holds less than its state file says was made
    /// durable (acknowledged events were lost). An operator's decision after
    /// reading docs/operations.md ("store regressed"); logged at ERROR and shown
    /// by `spoold_store_regression_accepted`. Seqs are still never reused.
    /// Without it spoold exits with code 4. A flag, not a config key: it must be
    /// given again, deliberately, at each start.
    #[arg(long)]
    pub accept_store_regression: bool,
    /// Prints the man page (roff) to stdout and exits.
    #[arg(long, exclusive = true)]
    pub man: bool,
    /// Prints a completion script for SHELL to stdout and exits.
    #[arg(long, value_enum, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,
    /// With --check-config: also prints every effective value, secrets redacted.
    #[arg(long, requires = "check_config")]
    pub print: bool,
}

/// A config problem, naming the key (or flag) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { key: key.into(), message: message.into() }
    }
}

// ---------------------------------------------------------------------------
// Defaults. Each says why it is what it is.

/// Loopback: a fresh, unconfigured spoold exposes nothing to the network.
const DEFAULT_LISTEN: &str = "127.0.0.1:8700";
/// Where systemd's `RuntimeDirectory=spoold` puts it, and where spoolctl looks.
use common::admin::DEFAULT_ADMIN_SOCKET;
/// Relative, so that a zero-config local run works from any checkout.
const DEFAULT_SPOOL_DIR: &str = "./data/spoold";
/// 10 GiB: days of a busy region's payments at ~400 bytes an event.
const DEFAULT_SPOOL_BYTES_MAX: u64 = 10 << 30;
/// 50 million events: the same order as `bytes_max` at ~200 bytes an event.
const DEFAULT_SPOOL_EVENTS_MAX: u64 = 50_000_000;
/// 1 GiB left to the rest of the system (logs, package updates) when the spool
/// stops taking events.
const DEFAULT_DISK_FREE_BYTES_MIN: u64 = 1 << 30;
/// 100,000 inodes: a filesystem can run out of inodes long before bytes.
const DEFAULT_DISK_FREE_INODES_MIN: u64 = 100_000;
/// 7 days: the dedupe window of SPEC §2; clients retry within hours, not weeks.
const DEFAULT_ACKED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// 500 events a forwarded batch: ~200 KB requests, one ledger commit each.
/// Measured end to end (issue 12, `bench drain --spoold-only`, real spoold
/// into the real ledgerd, medians of 3, docs/benchmarks.md): 2000 or 5000
/// (5000 is cut to ~3300 by `batch_bytes_max`) drained no faster into either
/// store and cost ledgerd/sled slightly more CPU per event; the drain is bound
/// by CPU per event on both sides, not by requests. So 500 stays: smaller
/// retries and bisections, less memory.
const DEFAULT_LEDGER_BATCH_EVENTS_MAX: usize = forwarder::BATCH_EVENTS_MAX_DEFAULT;
/// 1 MiB a forwarded batch: well under common proxy body limits.
const DEFAULT_LEDGER_BATCH_BYTES_MAX: u64 = forwarder::BATCH_BYTES_MAX_DEFAULT;
/// 4 batches in flight: hides one round trip of latency without flooding a
/// ledger that has just come back. Measured (issue 12, as above): 1 in flight
/// drained ~25% slower, 8 no faster than 4 and at more ledgerd CPU per event
/// (batches queue on the ledger's write lock and group commit instead).
const DEFAULT_INFLIGHT_BATCHES_MAX: usize = forwarder::INFLIGHT_BATCHES_MAX_DEFAULT;
/// 10 s: a ledger commit of 500 events takes milliseconds; 10 s means it is stuck.
const DEFAULT_LEDGER_REQUEST_TIMEOUT: Duration = forwarder::REQUEST_TIMEOUT_DEFAULT;
/// SPEC §4: first retry after 100 ms, …
const DEFAULT_RETRY_INITIAL: Duration = forwarder::RETRY_INITIAL_DEFAULT;
/// … and never more than 30 s apart, so a ledger that comes back is used soon.
const DEFAULT_RETRY_MAX: Duration = forwarder::RETRY_MAX_DEFAULT;
/// 64 KiB: a maximal event (32 attributes of 1 KiB) is ~36 KiB of JSON.
const DEFAULT_BODY_BYTES_MAX: u64 = 64 << 10;
/// 1000 events: SPEC §2 default; one group commit of ~400 KB.
const DEFAULT_BATCH_EVENTS_MAX: usize = 1000;
/// 4 MiB: 1000 typical events (≤ 4 KiB of JSON each) fit; a batch body is
/// read into memory whole, so this bounds memory per connection.
const DEFAULT_BATCH_BODY_BYTES_MAX: u64 = 4 << 20;
/// 4096 connections: a front server's worth of terminals; each costs a few KiB.
const DEFAULT_CONNECTIONS_MAX: usize = common::http::CONNECTIONS_MAX_DEFAULT;
/// 5 s to send headers: generous for a real client, short for a slow-loris.
const DEFAULT_HEADER_READ_TIMEOUT: Duration = common::http::HEADER_READ_TIMEOUT_DEFAULT;
/// 10 s to send a body of at most a few MiB.
const DEFAULT_BODY_READ_TIMEOUT: Duration = common::http::BODY_READ_TIMEOUT_DEFAULT;
/// 60 s of silence closes a keep-alive connection, returning its slot.
const DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT: Duration = common::http::KEEP_ALIVE_IDLE_TIMEOUT_DEFAULT;
/// 30 s for in-flight requests at shutdown; under systemd's TimeoutStopSec.
const DEFAULT_SHUTDOWN_DRAIN_TIMEOUT: Duration = common::http::SHUTDOWN_DRAIN_TIMEOUT_DEFAULT;

/// Hard ceilings on what a config may ask for.
const BODY_BYTES_MAX_CEILING: u64 = 16 << 20;
const BATCH_BODY_BYTES_MAX_CEILING: u64 = 256 << 20;
const BATCH_EVENTS_MAX_CEILING: usize = 100_000;
const CONNECTIONS_MAX_CEILING: usize = 1_000_000;

// ---------------------------------------------------------------------------
// Raw TOML (LowArgs): every key optional, unknown keys rejected.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: Option<String>,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    addr: Option<String>,
    admin_socket: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    dir: Option<PathBuf>,
    bytes_max: Option<Bytes>,
    events_max: Option<u64>,
    disk_free_bytes_min: Option<Bytes>,
    disk_free_inodes_min: Option<u64>,
    acked_retention: Option<Span>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    tokens_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    urls: Option<Vec<String>>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    batch_events_max: Option<usize>,
    batch_bytes_max: Option<Bytes>,
    inflight_batches_max: Option<usize>,
    request_timeout: Option<Span>,
    compression: Option<String>,
    batch_sizing: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial: Option<Span>,
    max: Option<Span>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    body_bytes_max: Option<Bytes>,
    batch_events_max: Option<usize>,
    batch_body_bytes_max: Option<Bytes>,
    connections_max: Option<usize>,
    header_read_timeout: Option<Span>,
    body_read_timeout: Option<Span>,
    keep_alive_idle_timeout: Option<Span>,
    shutdown_drain_timeout: Option<Span>,
}

// ---------------------------------------------------------------------------
// Validated config (HiArgs).

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Empty: forwarding is off and events accumulate in the spool.
    pub urls: Vec<String>,
    pub token_file: Option<PathBuf>,
    /// The ledger bearer secret (`Debug` redacts it).
    pub token: Option<common::tokens::Secret>,
    /// `ledger.ca_file` (CA certificates trusted for `https://` ledgers in
    /// addition to the built-in roots) and `ledger.client_cert`/`client_key`
    /// (the certificate presented to a ledger that asks for one), read and
    /// checked here; SIGHUP re-reads them.
    pub tls: forwarder::ClientTls,
    pub batch_events_max: usize,
    pub batch_bytes_max: u64,
    pub inflight_batches_max: usize,
    pub request_timeout: Duration,
    /// `ledger.compression`: auto (default), zstd, gzip or off.
    pub compression: forwarder::Compression,
    /// `ledger.batch_sizing`: "adaptive" (default) is true, "fixed" false.
    pub adaptive_sizing: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    pub initial: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub body_bytes_max: usize,
    pub batch_events_max: usize,
    pub batch_body_bytes_max: usize,
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub keep_alive_idle_timeout: Duration,
    pub shutdown_drain_timeout: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    pub listen_addr: SocketAddr,
    /// `[listen] tls_cert` + `tls_key`: the listener speaks TLS (reloadable on
    /// SIGHUP). `None`: plain HTTP (loopback, or TLS terminated in front).
    pub tls: Option<Arc<common::tls::Certificate>>,
    pub admin_socket: Option<PathBuf>,
    pub spool: spool::SpoolConfig,
    pub tokens_file: PathBuf,
    pub tokens: TokenSet,
    pub ledger: LedgerConfig,
    pub retry: RetryConfig,
    pub limits: Limits,
    pub log: LogSettings,
}

impl Config {
    /// Reads `--config` (if any), applies the flags, validates everything.
    pub fn load(args: &Args) -> Result<Config, ConfigError> {
        let raw = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new("--config", format!("read {}: {e}", path.display())))?;
                parse_toml(&text)?
            }
            None => RawConfig::default(),
        };
        Config::build(raw, args)
    }

    fn build(raw: RawConfig, args: &Args) -> Result<Config, ConfigError> {
        // node_id
        let (node_key, node_id) = match (&args.node_id, raw.node_id) {
            (Some(n), _) => ("--node-id", n.clone()),
            (None, Some(n)) => ("node_id", n),
            (None, None) => ("node_id", default_node_id()),
        };
        check_node_id(node_key, &node_id)?;

        // listen
        let (listen_key, listen) = match (&args.listen, raw.listen.addr) {
            (Some(a), _) => ("--listen", a.clone()),
            (None, Some(a)) => ("listen.addr", a),
            (None, None) => ("listen.addr", DEFAULT_LISTEN.to_owned()),
        };
        let listen_addr: SocketAddr = listen.trim().parse().map_err(|e| {
            ConfigError::new(listen_key, format!("{listen:?} is not an address like 127.0.0.1:8700: {e}"))
        })?;
        // Both or neither; the pair is read and checked now (same as ledgerd).
        let tls = match (raw.listen.tls_cert, raw.listen.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(
                common::tls::Certificate::load(&cert, &key)
                    .map_err(|e| ConfigError::new("listen.tls_cert", e.to_string()))?,
            ),
            (Some(_), None) => return Err(ConfigError::new("listen.tls_key", "required with listen.tls_cert")),
            (None, Some(_)) => return Err(ConfigError::new("listen.tls_cert", "required with listen.tls_key")),
        };

        // Default: the systemd RuntimeDirectory path spoolctl looks at first.
        // An empty string turns the admin socket off.
        let admin_key = if args.admin_socket.is_some() { "--admin-socket" } else { "listen.admin_socket" };
        let admin_socket = match args.admin_socket.clone().map(PathBuf::from).or(raw.listen.admin_socket) {
            None => Some(PathBuf::from(DEFAULT_ADMIN_SOCKET)),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p),
        };
        if let Some(p) = &admin_socket {
            // sun_path is 108 bytes on Linux, including the terminating NUL.
            if p.as_os_str().len() > 107 {
                return Err(ConfigError::new(admin_key, "longer than the 107 bytes a Unix socket path may have"));
            }
        }

        // spool
        let s = raw.spool;
        let dir = args.spool_dir.clone().or(s.dir).unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR));
        if dir.as_os_str().is_empty() {
            let key = if args.spool_dir.is_some() { "--spool-dir" } else { "spool.dir" };
            return Err(ConfigError::new(key, "must not be empty"));
        }
        let bytes_max = s.bytes_max.map(Bytes::as_u64).unwrap_or(DEFAULT_SPOOL_BYTES_MAX);
        positive("spool.bytes_max", bytes_max)?;
        let events_max = s.events_max.unwrap_or(DEFAULT_SPOOL_EVENTS_MAX);
        positive("spool.events_max", events_max)?;
        let acked_retention = s.acked_retention.map(Span::get).unwrap_or(DEFAULT_ACKED_RETENTION);
        let spool = spool::SpoolConfig {
            dir,
            node_id: node_id.clone(),
            bytes_max,
            events_max,
            disk_free_bytes_min: s.disk_free_bytes_min.map(Bytes::as_u64).unwrap_or(DEFAULT_DISK_FREE_BYTES_MIN),
            disk_free_inodes_min: s.disk_free_inodes_min.unwrap_or(DEFAULT_DISK_FREE_INODES_MIN),
            acked_retention,
            accept_regression: args.accept_store_regression,
        };

        // auth: required, no anonymous access.
        let tokens_key = if args.tokens_file.is_some() { "--tokens-file" } else { "auth.tokens_file" };
        let tokens_file = args.tokens_file.clone().or(raw.auth.tokens_file).ok_or_else(|| {
            ConfigError::new(
                tokens_key,
                "required: spoold never accepts anonymous /v1/ requests; point it at a file of \"name:secret\" lines",
            )
        })?;
        let tokens = TokenSet::load(&tokens_file).map_err(|e| ConfigError::new(tokens_key, e))?;
        if tokens.is_empty() {
            return Err(ConfigError::new(
                tokens_key,
                format!("{} holds no token; nobody could send events", tokens_file.display()),
            ));
        }

        // ledger
        let l = raw.ledger;
        let (urls_key, urls) = if args.ledger_urls.is_empty() {
            ("ledger.urls", l.urls.unwrap_or_default())
        } else {
            ("--ledger-url", args.ledger_urls.clone())
        };
        // The forwarder's own parser: what this accepts, the forwarder accepts.
        let urls = urls
            .iter()
            .map(|u| forwarder::parse_ledger_url(u).map_err(|e| ConfigError::new(urls_key, e.to_string())))
            .collect::<Result<Vec<String>, ConfigError>>()?;
        let token_key = if args.ledger_token_file.is_some() { "--ledger-token-file" } else { "ledger.token_file" };
        let token_file = args.ledger_token_file.clone().or(l.token_file);
        let token = match &token_file {
            Some(p) => Some(read_secret(p).map_err(|e| ConfigError::new(token_key, e))?),
            None if !urls.is_empty() => {
                return Err(ConfigError::new(
                    token_key,
                    "required when ledger.urls is set: the ledger refuses anonymous batches",
                ))
            }
            None => None,
        };
        let identity = match (&l.client_cert, &l.client_key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (Some(_), None) => return Err(ConfigError::new("ledger.client_key", "required with ledger.client_cert")),
            (None, Some(_)) => return Err(ConfigError::new("ledger.client_cert", "required with ledger.client_key")),
        };
        let client_tls = forwarder::ClientTls::load(l.ca_file.as_deref(), identity).map_err(|e| match e {
            forwarder::ForwarderError::CaFile(m) => ConfigError::new("ledger.ca_file", m),
            e => ConfigError::new("ledger.client_cert", e.to_string()),
        })?;
        let ledger = LedgerConfig {
            urls,
            token_file,
            token,
            tls: client_tls,
            batch_events_max: l.batch_events_max.unwrap_or(DEFAULT_LEDGER_BATCH_EVENTS_MAX),
            batch_bytes_max: l.batch_bytes_max.map(Bytes::as_u64).unwrap_or(DEFAULT_LEDGER_BATCH_BYTES_MAX),
            inflight_batches_max: l.inflight_batches_max.unwrap_or(DEFAULT_INFLIGHT_BATCHES_MAX),
            request_timeout: l.request_timeout.map(Span::get).unwrap_or(DEFAULT_LEDGER_REQUEST_TIMEOUT),
            compression: match l.compression.as_deref() {
                None => forwarder::Compression::Auto,
                Some(v) => forwarder::Compression::parse(v)
                    .ok_or_else(|| ConfigError::new("ledger.compression", format!("{v:?}: expected auto, zstd, gzip or off")))?,
            },
            adaptive_sizing: match l.batch_sizing.as_deref() {
                None | Some("adaptive") => true,
                Some("fixed") => false,
                Some(v) => return Err(ConfigError::new("ledger.batch_sizing", format!("{v:?}: expected adaptive or fixed"))),
            },
        };
        in_range("ledger.batch_events_max", ledger.batch_events_max as u64, 1, 100_000)?;
        in_range("ledger.batch_bytes_max", ledger.batch_bytes_max, 1024, 256 << 20)?;
        in_range("ledger.inflight_batches_max", ledger.inflight_batches_max as u64, 1, 64)?;
        nonzero_span("ledger.request_timeout", ledger.request_timeout)?;

        // retry
        let retry = RetryConfig {
            initial: raw.retry.initial.map(Span::get).unwrap_or(DEFAULT_RETRY_INITIAL),
            max: raw.retry.max.map(Span::get).unwrap_or(DEFAULT_RETRY_MAX),
        };
        nonzero_span("retry.initial", retry.initial)?;
        if retry.max < retry.initial {
            return Err(ConfigError::new("retry.max", "must be at least retry.initial"));
        }

        // limits
        let r = raw.limits;
        let limits = Limits {
            body_bytes_max: to_usize(r.body_bytes_max.map(Bytes::as_u64).unwrap_or(DEFAULT_BODY_BYTES_MAX)),
            batch_events_max: r.batch_events_max.unwrap_or(DEFAULT_BATCH_EVENTS_MAX),
            batch_body_bytes_max: to_usize(
                r.batch_body_bytes_max.map(Bytes::as_u64).unwrap_or(DEFAULT_BATCH_BODY_BYTES_MAX),
            ),
            connections_max: r.connections_max.unwrap_or(DEFAULT_CONNECTIONS_MAX),
            header_read_timeout: r.header_read_timeout.map(Span::get).unwrap_or(DEFAULT_HEADER_READ_TIMEOUT),
            body_read_timeout: r.body_read_timeout.map(Span::get).unwrap_or(DEFAULT_BODY_READ_TIMEOUT),
            keep_alive_idle_timeout: r
                .keep_alive_idle_timeout
                .map(Span::get)
                .unwrap_or(DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT),
            shutdown_drain_timeout: r
                .shutdown_drain_timeout
                .map(Span::get)
                .unwrap_or(DEFAULT_SHUTDOWN_DRAIN_TIMEOUT),
        };
        in_range("limits.body_bytes_max", limits.body_bytes_max as u64, 1024, BODY_BYTES_MAX_CEILING)?;
        in_range("limits.batch_events_max", limits.batch_events_max as u64, 1, BATCH_EVENTS_MAX_CEILING as u64)?;
        in_range(
            "limits.batch_body_bytes_max",
            limits.batch_body_bytes_max as u64,
            limits.body_bytes_max as u64,
            BATCH_BODY_BYTES_MAX_CEILING,
        )?;
        in_range("limits.connections_max", limits.connections_max as u64, 1, CONNECTIONS_MAX_CEILING as u64)?;
        nonzero_span("limits.header_read_timeout", limits.header_read_timeout)?;
        nonzero_span("limits.body_read_timeout", limits.body_read_timeout)?;
        nonzero_span("limits.keep_alive_idle_timeout", limits.keep_alive_idle_timeout)?;

        // log
        let format = match (args.log_format, args.log_json) {
            (Some(f), _) => f,
            (None, true) => LogFormat::Json,
            (None, false) => raw.log.format.unwrap_or_default(),
        };
        let (level_key, level) = match (&args.log_level, raw.log.level) {
            (Some(l), _) => ("--log-level", Some(l.clone())),
            (None, l) => ("log.level", l),
        };
        if let Some(l) = &level {
            LogSettings::check_level(l).map_err(|e| ConfigError::new(level_key, e))?;
        }

        Ok(Config {
            node_id,
            listen_addr,
            tls,
            admin_socket,
            spool,
            tokens_file,
            tokens,
            ledger,
            retry,
            limits,
            log: LogSettings { format, level },
        })
    }

    /// The forwarder's settings; `None` when forwarding is off (no ledger urls).
    pub fn forwarder_config(&self) -> Option<forwarder::ForwarderConfig> {
        if self.ledger.urls.is_empty() {
            return None;
        }
        let token = self.ledger.token.clone()?;
        let mut f = forwarder::ForwarderConfig::new(self.node_id.clone(), self.ledger.urls.clone(), token);
        f.batch_events_max = self.ledger.batch_events_max;
        f.batch_bytes_max = to_usize(self.ledger.batch_bytes_max);
        f.inflight_batches_max = self.ledger.inflight_batches_max;
        f.request_timeout = self.ledger.request_timeout;
        f.retry_initial = self.retry.initial;
        f.retry_max = self.retry.max;
        f.tls = self.ledger.tls.clone();
        f.compression = self.ledger.compression;
        f.adaptive_sizing = self.ledger.adaptive_sizing;
        Some(f)
    }

    /// Server limits for `common::http::serve`.
    pub fn server_limits(&self) -> common::http::ServerLimits {
        common::http::ServerLimits {
            connections_max: self.limits.connections_max,
            header_read_timeout: self.limits.header_read_timeout,
            body_read_timeout: self.limits.body_read_timeout,
            keep_alive_idle_timeout: self.limits.keep_alive_idle_timeout,
            shutdown_drain_timeout: self.limits.shutdown_drain_timeout,
        }
    }

    /// Every effective value, one `key = value` line each, in config-file
    /// order, for `--check-config --print`. Secrets are never printed: token
    /// files show their path and how many tokens they hold.
    pub fn effective_values(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into());
        let span = |d: Duration| common::units::Span(d).to_string();
        let l = &self.limits;
        vec![
            ("node_id", self.node_id.clone()),
            ("listen.addr", self.listen_addr.to_string()),
            // Rendered as ledgerd renders them.
            (
                "listen.tls_cert",
                self.tls.as_ref().map_or("none (plain HTTP)".into(), |c| format!("{} (TLS)", c.paths().0.display())),
            ),
            ("listen.tls_key", self.tls.as_ref().map_or("none".into(), |c| c.paths().1.display().to_string())),
            ("listen.admin_socket", self.admin_socket.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(off)".into())),
            ("spool.dir", self.spool.dir.display().to_string()),
            ("spool.bytes_max", Bytes(self.spool.bytes_max).to_string()),
            ("spool.events_max", self.spool.events_max.to_string()),
            ("spool.disk_free_bytes_min", Bytes(self.spool.disk_free_bytes_min).to_string()),
            ("spool.disk_free_inodes_min", self.spool.disk_free_inodes_min.to_string()),
            ("spool.acked_retention", span(self.spool.acked_retention)),
            ("auth.tokens_file", format!("{} ({} tokens, secrets redacted)", self.tokens_file.display(), self.tokens.len())),
            ("ledger.urls", format!("{:?}", self.ledger.urls)),
            (
                "ledger.token_file",
                match (&self.ledger.token_file, &self.ledger.token) {
                    (Some(p), Some(_)) => format!("{} (secret redacted)", p.display()),
                    (p, _) => path(p),
                },
            ),
            (
                "ledger.ca_file",
                match &self.ledger.tls.ca_file {
                    Some(p) => format!("{} ({} certificates)", p.display(), self.ledger.tls.extra_roots.len()),
                    None => "(none: built-in roots only)".into(),
                },
            ),
            (
                "ledger.client_cert",
                match &self.ledger.tls.client_identity {
                    Some((c, _)) => c.display().to_string(),
                    None => "(none: no client certificate)".into(),
                },
            ),
            (
                "ledger.client_key",
                match &self.ledger.tls.client_identity {
                    Some((_, k)) => format!("{} (key not printed)", k.display()),
                    None => "(none)".into(),
                },
            ),
            ("ledger.batch_events_max", self.ledger.batch_events_max.to_string()),
            ("ledger.batch_bytes_max", Bytes(self.ledger.batch_bytes_max).to_string()),
            ("ledger.inflight_batches_max", self.ledger.inflight_batches_max.to_string()),
            ("ledger.request_timeout", span(self.ledger.request_timeout)),
            ("ledger.compression", self.ledger.compression.as_str().to_owned()),
            ("ledger.batch_sizing", if self.ledger.adaptive_sizing { "adaptive" } else { "fixed" }.to_owned()),
            ("retry.initial", span(self.retry.initial)),
            ("retry.max", span(self.retry.max)),
            ("limits.body_bytes_max", Bytes(l.body_bytes_max as u64).to_string()),
            ("limits.batch_events_max", l.batch_events_max.to_string()),
            ("limits.batch_body_bytes_max", Bytes(l.batch_body_bytes_max as u64).to_string()),
            ("limits.connections_max", l.connections_max.to_string()),
            ("limits.header_read_timeout", span(l.header_read_timeout)),
            ("limits.body_read_timeout", span(l.body_read_timeout)),
            ("limits.keep_alive_idle_timeout", span(l.keep_alive_idle_timeout)),
            ("limits.shutdown_drain_timeout", span(l.shutdown_drain_timeout)),
            ("log.format", self.log.format.as_str().to_owned()),
            ("log.level", self.log.effective_level()),
        ]
    }

    /// What `--check-config` prints: `config ok`, and with `print` every
    /// effective value.
    pub fn check_report(&self, print: bool) -> String {
        let mut out = String::from("config ok");
        if print {
            for (k, v) in self.effective_values() {
                out.push_str(&format!("\n{k} = {v}"));
            }
        }
        out
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn positive(key: &str, n: u64) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    Ok(())
}

fn in_range(key: &str, n: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if n < min || n > max {
        return Err(ConfigError::new(key, format!("{n} is outside {min}..={max}")));
    }
    Ok(())
}

fn nonzero_span(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be longer than zero"));
    }
    Ok(())
}

fn check_node_id(key: &str, id: &str) -> Result<(), ConfigError> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if id.is_empty() || id.len() > spool_format::NODE_BYTES_MAX || !id.bytes().all(ok) {
        return Err(ConfigError::new(
            key,
            format!("{id:?} must be 1 to {} bytes of [A-Za-z0-9._-]", spool_format::NODE_BYTES_MAX),
        ));
    }
    Ok(())
}

/// The host name, as a node id (invalid characters replaced).
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .take(spool_format::NODE_BYTES_MAX)
        .collect();
    if id.is_empty() {
        "spoold".to_owned()
    } else {
        id
    }
}

fn read_secret(path: &Path) -> Result<common::tokens::Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let secret = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
    if secret.len() < common::tokens::SECRET_BYTES_MIN {
        return Err(format!(
            "{} must hold one secret of at least {} bytes",
            path.display(),
            common::tokens::SECRET_BYTES_MIN
        ));
    }
    Ok(common::tokens::Secret::new(secret))
}

fn parse_toml(text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str::<RawConfig>(text).map_err(|e| {
        let (key, message) = common::config::toml_error(text, &e);
        ConfigError::new(key.unwrap_or_else(|| "config".to_owned()), message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["spoold"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    fn tokens_file() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), "client:0123456789abcdef0123\n").expect("write tokens");
        f
    }

    fn load(text: &str, extra: &[&str]) -> Result<Config, ConfigError> {
        let raw = parse_toml(text)?;
        Config::build(raw, &args(extra))
    }

    #[test]
    fn full_spec_example_parses() {
        let t = tokens_file();
        let ledger_tok = tokens_file();
        let text = format!(
            r#"
node_id = "front-1"
[listen]
addr = "0.0.0.0:8700"
admin_socket = "/run/spoold/admin.sock"
[spool]
dir = "/var/lib/spoold"
bytes_max = "10GiB"
events_max = 50000000
disk_free_bytes_min = "1GiB"
disk_free_inodes_min = 100000
acked_retention = "7d"
[auth]
tokens_file = "{}"
[ledger]
urls = ["http://127.0.0.1:8800"]
token_file = "{}"
batch_events_max = 500
batch_bytes_max = "1MiB"
inflight_batches_max = 4
request_timeout = "10s"
[retry]
initial = "100ms"
max = "30s"
[limits]
body_bytes_max = "64KiB"
batch_events_max = 1000
connections_max = 4096
header_read_timeout = "5s"
"#,
            t.path().display(),
            ledger_tok.path().display()
        );
        let c = load(&text, &[]).expect("valid config");
        assert_eq!(c.node_id, "front-1");
        assert_eq!(c.spool.bytes_max, 10 << 30);
        assert_eq!(c.limits.body_bytes_max, 65536);
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.ledger.urls, vec!["http://127.0.0.1:8800".to_owned()]);
        assert!(!format!("{c:?}").contains("0123456789abcdef"), "Debug must not print secrets");
    }

    #[test]
    fn flags_override_keys() {
        let t = tokens_file();
        let text = format!("node_id = \"a\"\n[listen]\naddr = \"127.0.0.1:1\"\n[auth]\ntokens_file = \"{}\"\n", t.path().display());
        let c = load(&text, &["--node-id", "b", "--listen", "127.0.0.1:2", "--spool-dir", "/x"]).expect("valid");
        assert_eq!(c.node_id, "b");
        assert_eq!(c.listen_addr.port(), 2);
        assert_eq!(c.spool.dir, PathBuf::from("/x"));
    }

    #[test]
    fn errors_name_the_key() {
        let t = tokens_file();
        let auth = format!("[auth]\ntokens_file = \"{}\"\n", t.path().display());
        let cases: &[(&str, &str)] = &[
            ("[spool]\nbytes_max = \"lots\"\n", "spool.bytes_max"),
            ("[spool]\nfoo = 1\n", "spool.foo"),
            ("bogus = 1\n", "bogus"),
            ("[limits]\nheader_read_timeout = \"soon\"\n", "limits.header_read_timeout"),
            ("[limits]\nconnections_max = 0\n", "limits.connections_max"),
            ("[limits]\nbatch_events_max = \"x\"\n", "limits.batch_events_max"),
            ("[listen]\naddr = \"nowhere\"\n", "listen.addr"),
            ("node_id = \"no spaces\"\n", "node_id"),
            ("[ledger]\nurls = [\"ftp://x\"]\n", "ledger.urls"),
            ("[ledger]\nurls = [\"http://x:1\"]\n", "ledger.token_file"),
            ("[retry]\ninitial = \"2s\"\nmax = \"1s\"\n", "retry.max"),
            ("[listen]\ntls_cert = \"/nonexistent.crt\"\n", "listen.tls_key"),
            ("[listen]\ntls_key = \"/nonexistent.key\"\n", "listen.tls_cert"),
            ("[listen]\ntls_cert = \"/nonexistent.crt\"\ntls_key = \"/nonexistent.key\"\n", "listen.tls_cert"),
            ("[ledger]\nca_file = \"/nonexistent.pem\"\n", "ledger.ca_file"),
            ("[ledger]\nclient_cert = \"/nonexistent.crt\"\n", "ledger.client_key"),
            ("[ledger]\nclient_key = \"/nonexistent.key\"\n", "ledger.client_cert"),
            ("[ledger]\nclient_cert = \"/nonexistent.crt\"\nclient_key = \"/nonexistent.key\"\n", "ledger.client_cert"),
            ("[nope]\n", "nope"),
        ];
        for (text, key) in cases {
            let full = format!("{text}{auth}");
            let e = load(&full, &[]).expect_err(text);
            assert_eq!(e.key, *key, "{text:?} gave {e}");
        }
        let e = load("", &[]).expect_err("no tokens file");
        assert_eq!(e.key, "auth.tokens_file");
    }
}
