//! The forwarder: drains a spool to the ledger (SPEC §3, §4) in seq-ordered
//! batches, retrying every retryable failure forever.
//!
//! # How it works
//! One task ([`spawn`]) reads pending records from a cursor with
//! [`spool::Spool::read_pending`] (at most `batch_events_max` events and
//! `batch_bytes_max` bytes per batch) and keeps up to `inflight_batches_max`
//! batches in flight. Each batch is POSTed to `/v1/batches` and retried until
//! the ledger answers with per-event results; only then are its records marked
//! acked (`accepted`/`duplicate`) or dead (`conflict`/`rejected`, with the
//! ledger's reason). A batch the ledger refuses as a whole (400/413/422) is
//! bisected ([`policy::WorkQueue`]) until the poison events are isolated; only
//! those are dead-lettered. The classification and delays are a pure function
//! ([`policy::decide`]): full jitter over an exponential ceiling, `Retry-After`
//! as a floor, several ledger URLs tried in turn.
//!
//! Batches are sized for the link ([`sizing::LinkSizer`], one per ledger URL,
//! `[ledger] batch_sizing = "adaptive"`): the events per batch and the batches
//! in flight follow the measured RTT and bytes/s so a request ends well within
//! `request_timeout`; a batch that times out is not sent again whole: its
//! records are released and cut again at half the size. Batches are sent
//! `Content-Encoding: zstd` (or gzip) once the ledger advertises it in
//! `Accept-Encoding` (`[ledger] compression`, `common::coding`).
//!
//! # Invariants
//! - **Invariant:** a record leaves the pending state only on the ledger's
//!   per-event answer for it. No timeout, error or shutdown drops anything:
//!   an unanswered record stays pending and is sent again (the ledger dedupes).
//! - **Invariant:** within a batch, events are sent in seq order; batches are
//!   cut from the pending queue in seq order. With `inflight_batches_max > 1`
//!   a later batch may be *recorded* before an earlier one that is being
//!   retried (see docs/ledger.md); with 1, the ledger records in seq order.
//! - **Invariant:** memory is bounded by `inflight_batches_max ×
//!   (batch_events_max, batch_bytes_max)` (plus one compressed copy of each
//!   batch), whatever the backlog; adaptive sizing only ever goes below these.
//! - **Invariant:** the ledger token is never logged; [`ForwarderConfig`]'s
//!   `Debug` redacts it.

pub mod policy;
pub mod sizing;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use common::wire::{BatchResults, LedgerResult, LedgerStatus};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use spool::Spool;
use spool_format::{OffsetDateTime, Record};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument as _;

use common::coding::Coding;
use policy::{decide, parse_retry_after, Ceiling, Decision, Reply, RetryKind, WorkQueue};
use sizing::{LinkSizer, SizingLimits};

/// How often an idle forwarder looks for new records when nobody calls
/// [`ForwarderHandle::wake`]: short enough that an event reaches the ledger
/// within a fraction of a second, long enough to cost nothing.
pub const IDLE_POLL_DEFAULT: Duration = Duration::from_millis(200);
/// How long shutdown waits for batches in flight before abandoning them (they
/// stay pending and are sent again after the restart).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Longest error text kept for `/v1/status`.
const LAST_ERROR_BYTES_MAX: usize = 512;

/// Defaults of SPEC §5 `[ledger]` / `[retry]`, defined once here; spoold's
/// config takes them from here (docs/config.md says why each is what it is).
pub const BATCH_EVENTS_MAX_DEFAULT: usize = 500;
pub const BATCH_BYTES_MAX_DEFAULT: u64 = 1 << 20;
pub const INFLIGHT_BATCHES_MAX_DEFAULT: usize = 4;
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
pub const RETRY_INITIAL_DEFAULT: Duration = Duration::from_millis(100);
pub const RETRY_MAX_DEFAULT: Duration = Duration::from_secs(30);

/// How often an idle forwarder probes the ledger's `/readyz`, so that
/// `spoold_ledger_up` follows reachability when nothing is being forwarded
/// (an idle node must not look cut off, nor a cut-off idle node look fine).
/// 5 s: a quarter of a typical 20 s scrape-and-alert resolution, one tiny GET.
pub const LEDGER_PROBE_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// Longest wait for a probe answer: a ledger slower than this to say "ready"
/// is not one a batch should wait for either.
const LEDGER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest response body read from a ledger, in bytes: a results array for the
/// largest batch is far smaller; a bigger body is a broken ledger.
const RESPONSE_BYTES_MAX: usize = 32 << 20;

/// A secret that never prints (defined in `common::tokens`, where every
/// secret type lives).
pub use common::tokens::Secret;

/// Forwarder settings, from the daemon's validated config (`[ledger]`, `[retry]`).
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// This node's id, sent as `node` in every batch.
    pub node_id: String,
    /// Ledger base URLs (`http://host:port`), tried in turn on failures.
    pub urls: Vec<String>,
    /// Bearer token for the ledger.
    pub token: Secret,
    /// Most events per batch.
    pub batch_events_max: usize,
    /// Most bytes of spool frames per batch (a single bigger record still goes alone).
    pub batch_bytes_max: usize,
    /// Most batches awaiting a ledger answer at once.
    pub inflight_batches_max: usize,
    /// Whole-request timeout (connect + send + answer).
    pub request_timeout: Duration,
    /// First backoff ceiling.
    pub retry_initial: Duration,
    /// Largest backoff ceiling.
    pub retry_max: Duration,
    /// Poll interval when the spool is empty (see [`IDLE_POLL_DEFAULT`]).
    pub idle_poll: Duration,
    /// Interval of `/readyz` probes while no batch is in flight (see
    /// [`LEDGER_PROBE_INTERVAL_DEFAULT`]).
    pub probe_interval: Duration,
    /// TLS towards `https://` ledgers: extra CA certificates
    /// (`[ledger] ca_file`) and the client certificate (`client_cert` /
    /// `client_key`), as read at start; re-read by [`ForwarderHandle`]'s
    /// [`common::tls::Reload`] on SIGHUP.
    pub tls: ClientTls,
    /// `[ledger] compression`: which request codings may be used.
    pub compression: Compression,
    /// `[ledger] batch_sizing`: adaptive (per-URL [`sizing::LinkSizer`]) or
    /// fixed (`batch_events_max` × `inflight_batches_max`, the behaviour
    /// before 0.2).
    pub adaptive_sizing: bool,
}

/// The forwarder's TLS files and what was read from them. `Default`: the
/// built-in roots only, no client certificate.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// `[ledger] ca_file`: a PEM bundle trusted besides the built-in roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// `[ledger] client_cert` and `client_key`: presented to a ledger that
    /// asks for a client certificate (ledgerd's `tls_client_ca`).
    pub client_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The CA certificates read from `ca_file`.
    pub extra_roots: Vec<reqwest::Certificate>,
    /// The certificate and key read from `client_identity`.
    pub identity: Option<reqwest::Identity>,
}

impl ClientTls {
    /// Reads and checks the files (a client is built with them, so that a
    /// bad file is found now, not by the first batch). Messages name the file.
    pub fn load(
        ca_file: Option<&std::path::Path>,
        client_identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<ClientTls, ForwarderError> {
        let extra_roots = match ca_file {
            Some(p) => read_ca_file(p)?,
            None => Vec::new(),
        };
        let identity = match client_identity {
            Some((cert, key)) => {
                let pem = common::tls::read_identity_pem(cert, key).map_err(|e| ForwarderError::ClientCert(e.to_string()))?;
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| ForwarderError::ClientCert(format!("{}: {}", key.display(), error_chain(&e))))?;
                reqwest::Client::builder()
                    .identity(id.clone())
                    .build()
                    .map_err(|e| ForwarderError::ClientCert(format!("{}: {}", cert.display(), error_chain(&e))))?;
                Some(id)
            }
            None => None,
        };
        Ok(ClientTls {
            ca_file: ca_file.map(std::path::Path::to_path_buf),
            client_identity: client_identity.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
            extra_roots,
            identity,
        })
    }

    /// The same files, read again.
    pub fn reread(&self) -> Result<ClientTls, ForwarderError> {
        ClientTls::load(self.ca_file.as_deref(), self.client_identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())))
    }
}

/// `[ledger] compression` (SPEC §5): which `Content-Encoding` batches are sent
/// with. A coding is only used once the ledger has advertised it in an
/// `Accept-Encoding` response header (any answer, the `/readyz` probe
/// included); until then, and for a ledger that does not, batches go
/// uncompressed. A 415 answer to a compressed batch turns compression off for
/// that URL and the batch is sent again uncompressed at once.
///
/// `auto` never compresses to a ledger on a loopback address (`localhost`,
/// 127.0.0.0/8, `::1`): nothing crosses a link, so compression would only cost
/// CPU on both sides (measured by `bench drain`: about 4 µs per event in
/// spoold and 3 in ledgerd, docs/benchmarks.md). `zstd`/`gzip` still do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd if advertised, else gzip if advertised, else none (default).
    Auto,
    Zstd,
    Gzip,
    Off,
}

impl Compression {
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "auto" => Some(Compression::Auto),
            "zstd" => Some(Compression::Zstd),
            "gzip" => Some(Compression::Gzip),
            "off" => Some(Compression::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Off => "off",
        }
    }

    /// The codings to pick from for a ledger, preferred first.
    fn preferred(self, same_host: bool) -> &'static [Coding] {
        match self {
            Compression::Auto if same_host => &[],
            Compression::Auto => &[Coding::Zstd, Coding::Gzip],
            Compression::Zstd => &[Coding::Zstd],
            Compression::Gzip => &[Coding::Gzip],
            Compression::Off => &[],
        }
    }
}

impl ForwarderConfig {
    /// A config with the SPEC §5 defaults.
    pub fn new(node_id: impl Into<String>, urls: Vec<String>, token: Secret) -> ForwarderConfig {
        ForwarderConfig {
            node_id: node_id.into(),
            urls,
            token,
            batch_events_max: BATCH_EVENTS_MAX_DEFAULT,
            batch_bytes_max: usize::try_from(BATCH_BYTES_MAX_DEFAULT).unwrap_or(usize::MAX),
            inflight_batches_max: INFLIGHT_BATCHES_MAX_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            retry_initial: RETRY_INITIAL_DEFAULT,
            retry_max: RETRY_MAX_DEFAULT,
            idle_poll: IDLE_POLL_DEFAULT,
            probe_interval: LEDGER_PROBE_INTERVAL_DEFAULT,
            tls: ClientTls::default(),
            compression: Compression::Auto,
            adaptive_sizing: true,
        }
    }
}

/// Reads a PEM bundle of CA certificates (`[ledger] ca_file`) and checks that
/// each one can be a trust anchor, so that a bad file is found by the config
/// check, not by the first batch. The message names the file.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ForwarderError> {
    let bad = |why: String| ForwarderError::CaFile(format!("{}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("read: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(format!("parse: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    // The roots are parsed when a client is built: build one to find out now.
    certs
        .iter()
        .fold(reqwest::Client::builder(), |b, c| b.add_root_certificate(c.clone()))
        .build()
        .map_err(|e| {
            use std::error::Error as _;
            let mut why = format!("not a usable CA certificate: {e}");
            let mut src = e.source();
            while let Some(c) = src {
                why.push_str(&format!(": {c}"));
                src = c.source();
            }
            bad(why)
        })?;
    Ok(certs)
}

/// Parses a ledger base URL: `http` or `https` (any case), a host, no user
/// info, query or fragment. Returns the normalised form (scheme and host
/// lower-case, no trailing `/`) that the forwarder posts to. The daemon's
/// config check calls this same function, so a URL the check accepts is one
/// the forwarder accepts.
pub fn parse_ledger_url(s: &str) -> Result<String, ForwarderError> {
    let bad = |why: &str| ForwarderError::BadUrl(format!("{s:?} {why}"));
    let u = url::Url::parse(s.trim()).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        // Not echoed: the text holds a password.
        return Err(ForwarderError::BadUrl(format!(
            "{:?} must not hold credentials (use ledger.token_file)",
            format!("{}://…@{}", u.scheme(), u.host_str().unwrap_or(""))
        )));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(u.as_str().trim_end_matches('/').to_owned())
}

/// Errors of [`spawn`].
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("ledger urls: none given")]
    NoUrls,
    #[error("{0}")]
    BadUrl(String),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("build http client: {0}")]
    Client(String),
    #[error("{0}")]
    CaFile(String),
    #[error("{0}")]
    ClientCert(String),
}

type Label = [(&'static str, &'static str); 1];

/// Forwarding metrics (SPEC §7). Cheap to clone; register once.
#[derive(Clone, Debug, Default)]
pub struct ForwardMetrics {
    /// `spoold_forward_events_total{result}`: accepted, duplicate, conflict, rejected.
    pub events_total: Family<Label, Counter>,
    /// `spoold_forward_batches_total{outcome}`, one per request: ok (per-event
    /// results), retry (network, 5xx, 429, bad body), poison (400/413/422,
    /// bisected), auth_error (401/403 and other misconfiguration answers).
    pub batches_total: Family<Label, Counter>,
    /// `spoold_forward_retries_total`: requests that will be sent again.
    pub retries_total: Counter,
    /// `spoold_ledger_up`: 1 when the last request got an answer from a ledger
    /// able to take batches (2xx or 4xx), 0 after a network error or a 5xx.
    pub ledger_up: Gauge,
    /// `spoold_forward_timeouts_total`: batch requests that got no answer
    /// within `ledger.request_timeout` (each halves the next batch).
    pub timeouts_total: Counter,
    /// `spoold_forward_wire_bytes_total`: request bytes sent to ledgers, as
    /// on the wire (after compression).
    pub wire_bytes_total: Counter,
}

impl ForwardMetrics {
    /// Registers the four metrics under their SPEC §7 names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("spoold_forward_events", "Forwarded events by ledger result", self.events_total.clone());
        registry.register("spoold_forward_batches", "Requests to the ledger by outcome", self.batches_total.clone());
        registry.register("spoold_forward_retries", "Batch retries after a retryable failure", self.retries_total.clone());
        registry.register("spoold_ledger_up", "1 if a ledger answered the last request", self.ledger_up.clone());
        registry.register("spoold_forward_timeouts", "Batch requests that timed out", self.timeouts_total.clone());
        registry.register("spoold_forward_wire_bytes", "Request body bytes sent to ledgers, after compression", self.wire_bytes_total.clone());
    }

    fn event(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.events_total.get_or_create(&[("result", result)]).inc_by(n);
        }
    }

    fn batch(&self, outcome: &'static str) {
        self.batches_total.get_or_create(&[("outcome", outcome)]).inc();
    }
}

/// What the forwarder knows, for `/v1/status` and `spoolctl status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ForwarderStatus {
    /// `None` until the first request to a ledger.
    pub ledger_up: Option<bool>,
    /// The last failure (kept after recovery, with its time).
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_error_at: Option<OffsetDateTime>,
    /// When a ledger last answered with results.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    /// The URL requests go to now.
    pub current_url: String,
    /// Requests sent since start (in memory).
    pub attempts_total: u64,
    /// Batches in flight right now.
    pub inflight_batches: usize,
    pub events_acked_total: u64,
    pub events_dead_total: u64,
}

/// What the forwarder knows about one ledger URL.
struct Link {
    sizer: LinkSizer,
    /// The coding batches to this URL are sent with (learned from its
    /// `Accept-Encoding`).
    coding: Coding,
    /// The URL answered 415 to a compressed batch: plain from then on,
    /// whatever it advertises (until spoold restarts).
    refused_coding: bool,
    /// The URL names a loopback address (`auto` leaves its batches plain).
    same_host: bool,
}

/// Whether `url` names this host: `localhost` or a loopback address.
fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url).ok().and_then(|u| u.host().map(|h| h.to_owned())) {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

struct Shared {
    links: Mutex<Vec<Link>>,
    status: Mutex<ForwarderStatus>,
    wake: Notify,
    rescan: AtomicBool,
    url_index: AtomicUsize,
}

/// A handle to the running forwarder; cheap to clone.
#[derive(Clone)]
pub struct ForwarderHandle {
    shared: Arc<Shared>,
    tls: Arc<TlsReload>,
}

/// Re-reads the forwarder's TLS files (`ca_file`, `client_cert`/`client_key`)
/// and swaps its HTTP client: cheap (a client is a connection pool and a
/// rustls config), and connections of the old client close once their
/// requests are done. On error the old client stays.
struct TlsReload {
    ctx: Weak<Ctx>,
}

impl common::tls::Reload for TlsReload {
    fn what(&self) -> &'static str {
        "forwarder TLS files"
    }

    fn reload(&self) -> Result<(), common::tls::TlsError> {
        let Some(ctx) = self.ctx.upgrade() else { return Ok(()) };
        let tls = ctx.cfg.tls.reread().map_err(|e| common::tls::TlsError(e.to_string()))?;
        let client = build_client(&ctx.cfg, &tls).map_err(|e| common::tls::TlsError(e.to_string()))?;
        *ctx.client.write().unwrap_or_else(|p| p.into_inner()) = client;
        Ok(())
    }
}

impl std::fmt::Debug for ForwarderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwarderHandle").finish()
    }
}

impl ForwarderHandle {
    /// What SIGHUP re-reads for the forwarder: its TLS files
    /// ([`common::tls::reload_on_sighup`]); nothing to do without them.
    pub fn tls_reload(&self) -> Option<Arc<dyn common::tls::Reload>> {
        let ctx = self.tls.ctx.upgrade()?;
        let files = &ctx.cfg.tls;
        (files.ca_file.is_some() || files.client_identity.is_some()).then(|| Arc::clone(&self.tls) as Arc<dyn common::tls::Reload>)
    }
}

impl ForwarderHandle {
    /// A snapshot of the forwarder's state.
    pub fn status(&self) -> ForwarderStatus {
        self.shared.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The forwarder's part of the node's status document.
    pub fn ledger_status(&self) -> common::status::LedgerStatus {
        let s = self.status();
        common::status::LedgerStatus {
            forwarding: true,
            up: s.ledger_up,
            last_error: s.last_error,
            last_error_at: s.last_error_at,
            last_success_at: s.last_success_at,
            current_url: Some(s.current_url),
            inflight_batches: Some(s.inflight_batches),
            events_acked_total: Some(s.events_acked_total),
            events_dead_total: Some(s.events_dead_total),
        }
    }

    /// Tells the forwarder new records are pending (call after an append):
    /// it looks now instead of at its next poll.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Makes the forwarder read the pending queue from the start again now
    /// (skipping what is in flight): call after records were put back in the
    /// pending state behind its cursor (`dlq retry`, import).
    pub fn rescan(&self) {
        tracing::debug!("rescan requested");
        self.shared.rescan.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

struct Ctx {
    spool: Spool,
    cfg: ForwarderConfig,
    metrics: ForwardMetrics,
    /// Rebuilt (and swapped) when SIGHUP re-reads the TLS files: requests
    /// in flight finish on the old client, new ones use the new one.
    client: RwLock<reqwest::Client>,
    shared: Arc<Shared>,
}

impl Ctx {
    fn client(&self) -> reqwest::Client {
        self.client.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The HTTP client of the forwarder: `tls` plus the timeouts and pool limits of `cfg`.
fn build_client(cfg: &ForwarderConfig, tls: &ClientTls) -> Result<reqwest::Client, ForwarderError> {
    let mut b = tls.extra_roots.iter().fold(reqwest::Client::builder(), |b, c| b.add_root_certificate(c.clone()));
    if let Some(id) = &tls.identity {
        b = b.identity(id.clone());
    }
    b.timeout(cfg.request_timeout)
        .connect_timeout(cfg.request_timeout.min(Duration::from_secs(5)))
        // A redirect of a POST of payments is a misconfiguration, not a hint.
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(cfg.inflight_batches_max)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ForwarderError::Client(error_chain(&e)))
}

/// Starts the forwarder. It runs until `shutdown` turns `true`; then it stops
/// taking new batches, abandons retries (records stay pending) and ends.
pub fn spawn(
    spool: Spool,
    cfg: ForwarderConfig,
    metrics: ForwardMetrics,
    shutdown: watch::Receiver<bool>,
) -> Result<(ForwarderHandle, JoinHandle<()>), ForwarderError> {
    if cfg.urls.is_empty() {
        return Err(ForwarderError::NoUrls);
    }
    for u in &cfg.urls {
        parse_ledger_url(u)?;
    }
    for (name, v) in [
        ("batch_events_max", cfg.batch_events_max),
        ("batch_bytes_max", cfg.batch_bytes_max),
        ("inflight_batches_max", cfg.inflight_batches_max),
    ] {
        if v == 0 {
            return Err(ForwarderError::Zero(name));
        }
    }
    let client = RwLock::new(build_client(&cfg, &cfg.tls)?);
    let limits = SizingLimits {
        events_max: cfg.batch_events_max,
        inflight_max: cfg.inflight_batches_max,
        request_timeout: cfg.request_timeout,
    };
    let links = cfg
        .urls
        .iter()
        .map(|u| Link { sizer: LinkSizer::new(limits), coding: Coding::Identity, refused_coding: false, same_host: is_loopback_url(u) })
        .collect();
    let shared = Arc::new(Shared {
        links: Mutex::new(links),
        status: Mutex::new(ForwarderStatus { current_url: cfg.urls[0].clone(), ..ForwarderStatus::default() }),
        wake: Notify::new(),
        rescan: AtomicBool::new(false),
        url_index: AtomicUsize::new(0),
    });
    let ctx = Arc::new(Ctx { spool, cfg, metrics, client, shared: Arc::clone(&shared) });
    tokio::spawn(probe(Arc::clone(&ctx), shutdown.clone()));
    let reload = Arc::new(TlsReload { ctx: Arc::downgrade(&ctx) });
    let task = tokio::spawn(run(ctx, shutdown));
    Ok((ForwarderHandle { shared, tls: reload }, task))
}

/// Probes the ledgers' `/readyz` (no token, bounded timeout) whenever no batch
/// is in flight, every `probe_interval`, starting at once: the answer of a
/// batch is the better signal while forwarding, the probe while idle. Up when
/// any URL answers 2xx (tried from the current one); down otherwise.
async fn probe(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ctx.cfg.probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let inflight = ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner()).inflight_batches;
        if inflight > 0 {
            continue;
        }
        let n = ctx.cfg.urls.len();
        let start = ctx.shared.url_index.load(Ordering::SeqCst);
        let mut error = String::new();
        let mut up = false;
        for i in 0..n {
            let base = &ctx.cfg.urls[(start + i) % n];
            let url = format!("{}/readyz", base.trim_end_matches('/'));
            let timeout = LEDGER_PROBE_TIMEOUT.min(ctx.cfg.request_timeout);
            let answer = ctx.client().get(&url).timeout(timeout).send().await;
            if let Ok(r) = &answer {
                learn_coding(&ctx, (start + i) % n, r.headers());
            }
            match answer {
                Ok(r) if r.status().is_success() => {
                    up = true;
                    break;
                }
                Ok(r) => error = format!("probe {url}: HTTP {}", r.status().as_u16()),
                Err(e) => error = format!("probe {url}: {}", error_chain(&e)),
            }
        }
        // A batch may have started meanwhile; its answer wins.
        let inflight = ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner()).inflight_batches;
        if inflight == 0 {
            if up {
                note_up(&ctx, true, None);
            } else {
                note_up(&ctx, false, Some(spool_format::truncate(&error, LAST_ERROR_BYTES_MAX)));
            }
        }
    }
}

/// An error and its sources on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, spool::SpoolError> + Send + 'static) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("spool task failed: {e}")),
    }
}

async fn run(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let mut cursor = 0u64;
    let mut inflight: JoinSet<()> = JoinSet::new();
    // Seqs of the records in flight, by task: a scan from the start skips them,
    // so nothing is sent twice at once. Bounded by inflight × batch_events_max.
    let mut inflight_seqs: HashMap<tokio::task::Id, Vec<u64>> = HashMap::new();
    let mut busy: HashSet<u64> = HashSet::new();
    let mut seen_requeues = ctx.spool.requeue_count();
    tracing::info!(node = %ctx.cfg.node_id, urls = ?ctx.cfg.urls, "forwarder started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        // The spool makes records visible in seq order, so nothing becomes
        // pending behind the cursor except a requeue (dlq retry, reconcile,
        // import), which asks for a scan from the start (`rescan`).
        let requeues = ctx.spool.requeue_count();
        if ctx.shared.rescan.swap(false, Ordering::SeqCst) || requeues != seen_requeues {
            seen_requeues = requeues;
            cursor = 0;
        }
        let mut read_failed = false;
        let (mut n, mut max) = sizes(&ctx);
        while inflight.len() < max {
            let (spool, after) = (ctx.spool.clone(), cursor);
            let b = ctx.cfg.batch_bytes_max;
            match blocking(move || spool.read_pending(after, n, b)).await {
                Ok(records) if records.is_empty() => break,
                Ok(records) => {
                    cursor = records.last().map_or(cursor, |r| r.seq);
                    let fresh: Vec<Record> = records.into_iter().filter(|r| !busy.contains(&r.seq)).collect();
                    if fresh.is_empty() {
                        continue;
                    }
                    let seqs: Vec<u64> = fresh.iter().map(|r| r.seq).collect();
                    busy.extend(seqs.iter().copied());
                    let handle = inflight.spawn(forward_batch(Arc::clone(&ctx), fresh, shutdown.clone()));
                    inflight_seqs.insert(handle.id(), seqs);
                    set_inflight(&ctx, inflight.len());
                    (n, max) = sizes(&ctx);
                }
                Err(e) => {
                    tracing::error!(error = %e, "read pending records failed");
                    read_failed = true;
                    break;
                }
            }
        }
        set_inflight(&ctx, inflight.len());
        if inflight.is_empty() {
            // Idle: everything sent so far is answered; the next scan starts
            // from the beginning.
            cursor = 0;
            let pause = if read_failed { ctx.cfg.retry_max.min(Duration::from_secs(1)) } else { ctx.cfg.idle_poll };
            tokio::select! {
                // A dropped sender means the daemon is gone: stop as for shutdown.
                changed = shutdown.changed() => if changed.is_err() { break },
                _ = ctx.shared.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        } else {
            let room = inflight.len() < sizes(&ctx).1;
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { break },
                Some(done) = inflight.join_next_with_id() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => {
                            // A panic in a batch task is a bug; its records stay
                            // pending and are picked up by the next scan.
                            tracing::error!(error = %e, "forward task failed");
                            e.id()
                        }
                    };
                    for seq in inflight_seqs.remove(&id).unwrap_or_default() {
                        busy.remove(&seq);
                    }
                }
                _ = ctx.shared.wake.notified(), if room => {}
                _ = tokio::time::sleep(ctx.cfg.idle_poll), if room => {}
            }
        }
    }
    let drain = async { while inflight.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        inflight.abort_all();
    }
    set_inflight(&ctx, 0);
    tracing::info!("forwarder stopped");
}

/// Events of the next batch and batches in flight allowed now: the current
/// URL's [`LinkSizer`], or the configured maxima with fixed sizing.
fn sizes(ctx: &Ctx) -> (usize, usize) {
    if !ctx.cfg.adaptive_sizing {
        return (ctx.cfg.batch_events_max, ctx.cfg.inflight_batches_max);
    }
    let idx = ctx.shared.url_index.load(Ordering::SeqCst) % ctx.cfg.urls.len();
    let links = ctx.shared.links.lock().unwrap_or_else(|p| p.into_inner());
    links.get(idx).map_or((1, 1), |l| (l.sizer.batch_events(), l.sizer.window()))
}

/// Takes the best coding a ledger advertises (`Accept-Encoding`) within
/// `[ledger] compression`.
fn learn_coding(ctx: &Ctx, idx: usize, headers: &reqwest::header::HeaderMap) {
    let Some(accept) = headers.get(reqwest::header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else { return };
    let mut links = ctx.shared.links.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = links.get_mut(idx).filter(|l| !l.refused_coding) {
        let coding = common::coding::pick(accept, ctx.cfg.compression.preferred(l.same_host));
        if l.coding != coding {
            tracing::info!(url = %ctx.cfg.urls[idx], coding = coding.token().unwrap_or("identity"), "ledger request coding");
            l.coding = coding;
        }
    }
}

fn set_inflight(ctx: &Ctx, n: usize) {
    ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner()).inflight_batches = n;
}

/// Sends one batch (bisecting it if refused) until every record in it has a
/// ledger answer, or shutdown.
async fn forward_batch(ctx: Arc<Ctx>, records: Vec<Record>, mut shutdown: watch::Receiver<bool>) {
    let mut queue = WorkQueue::new(records);
    while let Some(sub) = queue.pop() {
        let span = tracing::info_span!(
            "batch",
            node = %ctx.cfg.node_id,
            first_seq = sub.first().map_or(0, |r| r.seq),
            last_seq = sub.last().map_or(0, |r| r.seq),
            events = sub.len(),
            attempt = tracing::field::Empty,
        );
        match send_until_answered(&ctx, &sub, &mut shutdown).instrument(span.clone()).await {
            None => return,
            Some(Answered::TimedOut) => {
                // Never the same large batch again: its records go back to the
                // queue (they are still pending) and the run loop cuts them
                // anew at the sizer's halved size, from the start of the queue.
                let _e = span.enter();
                tracing::info!("batch timed out; it will be cut again at half the size");
                ctx.shared.rescan.store(true, Ordering::SeqCst);
                ctx.shared.wake.notify_one();
                return;
            }
            Some(Answered::Results(results, attempts)) => apply(&ctx, &sub, &results, attempts).instrument(span).await,
            Some(Answered::Refused(code, reason, attempts)) => {
                if let Some(poison) = queue.refused(sub) {
                    let _e = span.enter();
                    let reason = if reason.is_empty() {
                        format!("HTTP {code} for this event alone")
                    } else {
                        format!("HTTP {code} for this event alone: {reason}")
                    };
                    tracing::warn!(seq = poison.seq, id = %poison.event.id, reason = %reason, "event dead-lettered");
                    let (spool, seq, att) = (ctx.spool.clone(), poison.seq, total_attempts(&poison, attempts));
                    match blocking(move || spool.mark_dead(seq, att, "rejected", &reason)).await {
                        Ok(_) => {
                            ctx.metrics.event("rejected", 1);
                            ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner()).events_dead_total += 1;
                        }
                        Err(e) => tracing::error!(seq, error = %e, "mark dead failed; the record stays pending"),
                    }
                }
            }
        }
    }
}

enum Answered {
    Results(Vec<LedgerResult>, u32),
    Refused(u16, String, u32),
    /// No answer within the request timeout, with adaptive sizing and more
    /// than one event: the records are released, to be cut again smaller.
    TimedOut,
}

fn total_attempts(r: &Record, attempts: u32) -> u32 {
    r.attempts.saturating_add(attempts)
}

/// A batch as sent: [`LedgerBatch`] borrowing the spooled events, which are
/// serialised straight to JSON (no `serde_json::Value` built per event).
#[derive(serde::Serialize)]
struct BatchOut<'a> {
    node: &'a str,
    events: Vec<BatchEventOut<'a>>,
}

/// [`LedgerBatchEvent`], borrowed.
#[derive(serde::Serialize)]
struct BatchEventOut<'a> {
    seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    event: &'a spool_format::Event,
}

fn batch_body(node: &str, sub: &[Record]) -> Result<Vec<u8>, String> {
    let batch = BatchOut {
        node,
        events: sub.iter().map(|r| BatchEventOut { seq: r.seq, received_at: r.received_at, event: &r.event }).collect(),
    };
    serde_json::to_vec(&batch).map_err(|e| e.to_string())
}

/// Checks a 2xx body: one result per event, in order, ids matching.
fn check_results(body: &[u8], sub: &[Record]) -> Result<Vec<LedgerResult>, String> {
    let parsed: BatchResults<LedgerResult> =
        serde_json::from_slice(body).map_err(|e| format!("unparsable results: {e}"))?;
    if parsed.results.len() != sub.len() {
        return Err(format!("{} results for {} events", parsed.results.len(), sub.len()));
    }
    for (i, (r, rec)) in parsed.results.iter().zip(sub).enumerate() {
        if !r.id.is_empty() && r.id != rec.event.id {
            return Err(format!("result {i} is for id {:?}, expected {:?}", r.id, rec.event.id));
        }
    }
    Ok(parsed.results)
}

async fn send_until_answered(ctx: &Ctx, sub: &[Record], shutdown: &mut watch::Receiver<bool>) -> Option<Answered> {
    let body = match batch_body(&ctx.cfg.node_id, sub) {
        Ok(b) => bytes_of(b),
        Err(e) => {
            // Every spooled event serialises; this is a bug, not an operating error.
            tracing::error!(error = %e, "cannot encode batch");
            return None;
        }
    };
    let mut ceiling = Ceiling::new(ctx.cfg.retry_initial, ctx.cfg.retry_max);
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        tracing::Span::current().record("attempt", attempt);
        let idx = ctx.shared.url_index.load(Ordering::SeqCst) % ctx.cfg.urls.len();
        let url = &ctx.cfg.urls[idx];
        let (coding, inflight) = {
            let links = ctx.shared.links.lock().unwrap_or_else(|p| p.into_inner());
            let inflight = ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner()).inflight_batches;
            (links.get(idx).map_or(Coding::Identity, |l| l.coding), inflight.max(1))
        };
        let wire = match encoded(&body, coding).await {
            Some(w) => w,
            None => return None,
        };
        let wire_bytes = u64::try_from(wire.len()).unwrap_or(u64::MAX);
        ctx.metrics.wire_bytes_total.inc_by(wire_bytes);
        ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner()).attempts_total += 1;
        let started = Instant::now();
        let sent = tokio::select! {
            r = send_once(ctx, url, wire, coding, sub) => r,
            _ = shutdown.changed() => return None,
        };
        let elapsed = started.elapsed();
        if coding == Coding::Identity || !matches!(sent.reply, Reply::Status { code: 415, .. }) {
            if let Some(h) = &sent.headers {
                learn_coding(ctx, idx, h);
            }
        }
        if coding != Coding::Identity && matches!(sent.reply, Reply::Status { code: 415, .. }) {
            // The ledger does not decode this coding after all: plain from now on.
            tracing::warn!(url = %url, coding = coding.token().unwrap_or(""), "ledger refused a compressed batch (415); sending uncompressed");
            if let Some(l) = ctx.shared.links.lock().unwrap_or_else(|p| p.into_inner()).get_mut(idx) {
                l.coding = Coding::Identity;
                l.refused_coding = true;
            }
            continue;
        }
        {
            let mut links = ctx.shared.links.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = links.get_mut(idx) {
                if sent.timed_out {
                    l.sizer.on_timeout(sub.len());
                } else if matches!(sent.reply, Reply::Status { code: 200..=299, .. }) {
                    l.sizer.on_answer(sub.len(), wire_bytes, inflight, elapsed);
                }
            }
        }
        if sent.timed_out {
            ctx.metrics.timeouts_total.inc();
            if ctx.cfg.adaptive_sizing && sub.len() > 1 {
                ctx.metrics.retries_total.inc();
                ctx.metrics.batch("retry");
                note_up(ctx, false, Some(&describe(&sent.reply)));
                // As for any transient failure, the next attempt goes to the
                // next ledger URL (a black-holed one is left after one timeout).
                let n = ctx.cfg.urls.len();
                let _ = ctx.shared.url_index.compare_exchange(idx, (idx + 1) % n, Ordering::SeqCst, Ordering::SeqCst);
                let next = ctx.cfg.urls[ctx.shared.url_index.load(Ordering::SeqCst) % n].clone();
                ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner()).current_url = next;
                return Some(Answered::TimedOut);
            }
        }
        let (reply, results, detail) = (sent.reply, sent.results, sent.detail);
        let decision = decide(&reply, ceiling.next_ceiling(), ctx.cfg.retry_max, rand::random::<f64>());
        match decision {
            Decision::Apply => {
                ctx.metrics.batch("ok");
                note_up(ctx, true, None);
                let now = OffsetDateTime::now_utc();
                ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner()).last_success_at = Some(now);
                tracing::debug!(attempt, url = %url, "batch answered");
                return Some(Answered::Results(results.unwrap_or_default(), attempt));
            }
            Decision::Bisect => {
                ctx.metrics.batch("poison");
                note_up(ctx, true, None);
                let code = match &reply {
                    Reply::Status { code, .. } => *code,
                    _ => 0,
                };
                let reason = detail;
                tracing::info!(attempt, status = code, "ledger refused the batch as a whole; bisecting");
                return Some(Answered::Refused(code, reason, attempt));
            }
            Decision::Retry { delay, kind } => {
                ctx.metrics.retries_total.inc();
                // For `spoolctl show`: pending records report their attempts.
                let seqs: Vec<u64> = sub.iter().map(|r| r.seq).collect();
                ctx.spool.note_attempts(&seqs, total_attempts(&sub[0], attempt));
                let what = describe(&reply);
                match kind {
                    RetryKind::Misconfigured => {
                        ctx.metrics.batch("auth_error");
                        note_up(ctx, true, Some(&what));
                        tracing::error!(attempt, url = %url, error = %what, delay_ms = delay.as_millis() as u64,
                            "ledger refuses this node (token or url misconfigured?); keeping everything and retrying");
                    }
                    RetryKind::Throttled => {
                        ctx.metrics.batch("retry");
                        note_up(ctx, true, Some(&what));
                        tracing::info!(attempt, url = %url, error = %what, delay_ms = delay.as_millis() as u64, "ledger asks to slow down");
                    }
                    RetryKind::Transient => {
                        ctx.metrics.batch("retry");
                        note_up(ctx, false, Some(&what));
                        tracing::debug!(attempt, url = %url, error = %what, delay_ms = delay.as_millis() as u64, "batch will be retried");
                    }
                }
                // Next attempt goes to the next ledger URL (only one batch moves
                // the shared index for a given failure).
                let _ = ctx.shared.url_index.compare_exchange(idx, (idx + 1) % ctx.cfg.urls.len(), Ordering::SeqCst, Ordering::SeqCst);
                let next = ctx.cfg.urls[ctx.shared.url_index.load(Ordering::SeqCst) % ctx.cfg.urls.len()].clone();
                ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner()).current_url = next;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

/// The body in `coding` (compression runs on the blocking pool: a few ms
/// per batch).
async fn encoded(body: &bytes::Bytes, coding: Coding) -> Option<bytes::Bytes> {
    if coding == Coding::Identity {
        return Some(body.clone());
    }
    let b = body.clone();
    match tokio::task::spawn_blocking(move || common::coding::encode(coding, &b)).await {
        Ok(Ok(v)) => Some(bytes_of(v)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot compress batch");
            Some(body.clone())
        }
        Err(e) => {
            tracing::error!(error = %e, "compress task failed");
            None
        }
    }
}

/// What one request produced.
struct Sent {
    reply: Reply,
    /// The results of a good 2xx.
    results: Option<Vec<LedgerResult>>,
    /// For other answers, the ledger's error (`code: message`) if it sent one.
    detail: String,
    /// The answer's headers (for `Accept-Encoding`), when there was one.
    headers: Option<reqwest::header::HeaderMap>,
    /// No answer within the request timeout.
    timed_out: bool,
}

fn describe(reply: &Reply) -> String {
    let s = match reply {
        Reply::Status { code, .. } => format!("HTTP {code}"),
        Reply::BadBody(e) => format!("bad response: {e}"),
        Reply::Transport(e) => e.clone(),
    };
    spool_format::truncate(&s, LAST_ERROR_BYTES_MAX).to_owned()
}

/// Records ledger reachability, logging the transitions an operator cares about.
fn note_up(ctx: &Ctx, up: bool, error: Option<&str>) {
    ctx.metrics.ledger_up.set(i64::from(up));
    let mut s = ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner());
    match (s.ledger_up, up) {
        (Some(true) | None, false) => tracing::warn!(error = error.unwrap_or(""), "ledger unreachable; events stay spooled and are retried"),
        (Some(false), true) => tracing::info!("ledger reachable again"),
        _ => {}
    }
    s.ledger_up = Some(up);
    if let Some(e) = error {
        s.last_error = Some(e.to_owned());
        s.last_error_at = Some(OffsetDateTime::now_utc());
    }
}

/// Longest error body read from a refusing ledger, in bytes (for the
/// dead-letter reason).
const ERROR_BODY_BYTES_MAX: usize = 4096;

/// One request of an already encoded body.
async fn send_once(ctx: &Ctx, url: &str, body: bytes::Bytes, coding: Coding, sub: &[Record]) -> Sent {
    let endpoint = format!("{}/v1/batches", url.trim_end_matches('/'));
    let mut req = ctx
        .client()
        .post(&endpoint)
        .bearer_auth(ctx.cfg.token.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(t) = coding.token() {
        req = req.header(reqwest::header::CONTENT_ENCODING, t);
    }
    let sent = |reply, results, detail, headers, timed_out| Sent { reply, results, detail, headers, timed_out };
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => return sent(Reply::Transport(transport_error(&e)), None, String::new(), None, e.is_timeout()),
    };
    let headers = Some(resp.headers().clone());
    let code = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    if !(200..=299).contains(&code) {
        let mut detail = String::new();
        if resp.content_length().is_some_and(|n| n <= ERROR_BODY_BYTES_MAX as u64) {
            if let Ok(b) = resp.bytes().await {
                if let Ok(e) = serde_json::from_slice::<common::wire::ErrorBody>(&b) {
                    detail = format!("{}: {}", e.error.code, e.error.message);
                }
            }
        }
        return sent(Reply::Status { code, retry_after }, None, detail, headers, false);
    }
    if resp.content_length().is_some_and(|n| n > RESPONSE_BYTES_MAX as u64) {
        return sent(Reply::BadBody("response too large".into()), None, String::new(), headers, false);
    }
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            let timed_out = e.is_timeout();
            return sent(Reply::BadBody(format!("read response: {}", transport_error(&e))), None, String::new(), headers, timed_out);
        }
    };
    match check_results(&bytes, sub) {
        Ok(results) => sent(Reply::Status { code, retry_after }, Some(results), String::new(), headers, false),
        Err(e) => sent(Reply::BadBody(e), None, String::new(), headers, false),
    }
}

/// A short description of a reqwest error with its cause chain (no token in it:
/// reqwest never prints headers).
fn transport_error(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = if e.is_timeout() { "timeout".to_owned() } else if e.is_connect() { "connect failed".to_owned() } else { "request failed".to_owned() };
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Marks records from the ledger's per-event results.
async fn apply(ctx: &Ctx, sub: &[Record], results: &[LedgerResult], attempts: u32) {
    let mut acks = Vec::new();
    let mut dead = Vec::new();
    let (mut accepted, mut duplicate, mut conflict, mut rejected) = (0u64, 0u64, 0u64, 0u64);
    for (rec, r) in sub.iter().zip(results) {
        let att = total_attempts(rec, attempts);
        match r.status {
            LedgerStatus::Accepted => {
                accepted += 1;
                acks.push((rec.seq, att, r.ledger_seq));
            }
            LedgerStatus::Duplicate => {
                duplicate += 1;
                acks.push((rec.seq, att, r.ledger_seq));
            }
            LedgerStatus::Conflict | LedgerStatus::Rejected => {
                let code = r.status.as_str();
                let reason = match &r.error {
                    Some(e) => format!("{}: {}", e.code, e.message),
                    None => format!("ledger answered {code}"),
                };
                if r.status == LedgerStatus::Conflict {
                    conflict += 1;
                } else {
                    rejected += 1;
                }
                tracing::warn!(seq = rec.seq, id = %rec.event.id, status = code, reason = %reason, "event dead-lettered");
                dead.push((rec.seq, att, code, reason));
            }
        }
    }
    let n_acks = u64::try_from(acks.len()).unwrap_or(u64::MAX);
    if !acks.is_empty() {
        let spool = ctx.spool.clone();
        if let Err(e) = blocking(move || spool.mark_acked(&acks)).await {
            // The records stay pending and are sent again; the ledger dedupes.
            tracing::error!(error = %e, "mark acked failed");
        }
    }
    let n_dead = u64::try_from(dead.len()).unwrap_or(u64::MAX);
    for (seq, att, code, reason) in dead {
        let spool = ctx.spool.clone();
        if let Err(e) = blocking(move || spool.mark_dead(seq, att, code, &reason)).await {
            tracing::error!(seq, error = %e, "mark dead failed; the record stays pending");
        }
    }
    ctx.metrics.event("accepted", accepted);
    ctx.metrics.event("duplicate", duplicate);
    ctx.metrics.event("conflict", conflict);
    ctx.metrics.event("rejected", rejected);
    let mut s = ctx.shared.status.lock().unwrap_or_else(|p| p.into_inner());
    s.events_acked_total += n_acks;
    s.events_dead_total += n_dead;
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::{LedgerBatch, LedgerBatchEvent};

    /// The batch body is the wire's `LedgerBatch`, each event exactly its
    /// SPEC §1 JSON (as `Event::to_json_value` gives it).
    #[test]
    fn batch_body_is_a_ledger_batch_of_the_events_json() {
        let sub = vec![record(7, "a"), record(9, "b")];
        let body = batch_body("edge-1", &sub).expect("encode");
        let parsed: LedgerBatch = serde_json::from_slice(&body).expect("a LedgerBatch");
        let want = LedgerBatch {
            node: "edge-1".into(),
            events: sub.iter().map(|r| LedgerBatchEvent { seq: r.seq, received_at: r.received_at, event: r.event.to_json_value() }).collect(),
        };
        assert_eq!(parsed, want);
    }

    #[test]
    fn loopback_urls_are_this_host() {
        for u in ["http://127.0.0.1:7000", "https://127.8.9.10/", "http://[::1]:80", "http://localhost:9", "http://LOCALHOST"] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in ["http://10.0.0.1:7000", "https://ledger.example:443", "http://[::2]/", "http://localhost.example", "not a url"] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }

    fn record(seq: u64, id: &str) -> Record {
        let event = spool_format::Event::from_json_value(&serde_json::json!({
            "id": id, "kind": "gift", "amount": 3, "currency": "L$",
            "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
            "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
            "occurred_at": "2026-11-24T12:00:00Z"
        }))
        .expect("valid");
        Record { seq, received_at: OffsetDateTime::now_utc(), node: "n".into(), state: spool_format::State::Pending, attempts: 0, event }
    }

    #[test]
    fn results_must_match_the_batch_one_to_one() {
        let sub = vec![record(1, "a"), record(2, "b")];
        let ok = br#"{"results":[{"id":"a","status":"accepted","ledger_seq":1},{"id":"","status":"rejected","error":{"code":"invalid_event","message":"x"}}]}"#;
        assert_eq!(check_results(ok, &sub).expect("ok").len(), 2);
        let short = br#"{"results":[{"id":"a","status":"accepted"}]}"#;
        assert!(check_results(short, &sub).expect_err("short").contains("1 results for 2"));
        let swapped = br#"{"results":[{"id":"b","status":"accepted"},{"id":"a","status":"accepted"}]}"#;
        assert!(check_results(swapped, &sub).is_err());
        assert!(check_results(br#"{"results":[{"id":"a","status":"accep"#, &sub).is_err(), "truncated");
        assert!(check_results(br#"{"results":[{"id":"a","status":"maybe"},{"id":"b","status":"accepted"}]}"#, &sub).is_err());
        let body = batch_body("front-1", &sub).expect("encode");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["node"], "front-1");
        assert_eq!(v["events"][1]["seq"], 2);
        assert_eq!(v["events"][1]["event"]["id"], "b");
    }

    #[test]
    fn the_token_never_prints() {
        let cfg = ForwarderConfig::new("n", vec!["http://x".into()], Secret::new("s3cr3t-token-value"));
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn stops_on_shutdown_and_when_the_sender_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(spool::SpoolConfig::for_dir(dir.path())).expect("spool");
        for drop_sender in [false, true] {
            let (tx, rx) = watch::channel(false);
            let cfg = ForwarderConfig::new("n", vec!["http://127.0.0.1:1".into()], Secret::new("t"));
            let (_h, task) = spawn(spool.clone(), cfg, ForwardMetrics::default(), rx).expect("spawn");
            tokio::time::sleep(Duration::from_millis(50)).await;
            if drop_sender {
                drop(tx);
            } else {
                let _ = tx.send(true);
            }
            tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("join");
        }
        let bad = ForwarderConfig::new("n", vec!["ftp://x".into()], Secret::new("t"));
        assert!(matches!(spawn(spool.clone(), bad, ForwardMetrics::default(), watch::channel(false).1), Err(ForwarderError::BadUrl(_))));
        let none = ForwarderConfig::new("n", vec![], Secret::new("t"));
        assert!(matches!(spawn(spool, none, ForwardMetrics::default(), watch::channel(false).1), Err(ForwarderError::NoUrls)));
    }
}
