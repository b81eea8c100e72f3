//! `bench ingest`: spoold's HTTP ingest against a bare hyper JSON-echo server,
//! both measured in the same run, with the same client, on the same machine.
//!
//! - single: `connections` keep-alive connections each POST one event at a
//!   time (unique ids) for `--seconds`; events/s and latency percentiles.
//! - batch: `--batch-connections` connections POST batches of `--batch-size`
//!   events; events/s.
//!
//! The baseline server runs in a child process (this binary, `ingest
//! --echo-server PORT`): it reads the body, parses the JSON, serialises it back
//! — HTTP + JSON cost without validation, the spool or fsync. spoold runs from
//! the release build next to this binary (`cargo build --release --workspace --bins`),
//! with its spool in a temp dir on the same disk as `--dir` (default: the
//! system temp dir), so every 202 is a real fsync.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use test_support::DaemonProcess;

use crate::procs::{spawn_spoold, write_spoold_config, BENCH_TOKEN};

#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Concurrent keep-alive connections for the single-event run.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds each measured run lasts (4 runs, plus a short warm-up each).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Events per batch in the batch run (spoold's default `batch_events_max`).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Concurrent connections for the batch run.
    #[arg(long, default_value_t = 8)]
    pub batch_connections: usize,
    /// Directory for spoold's spool (a temp dir is made inside it).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Internal: serve the baseline JSON echo on this loopback port.
    #[arg(long, hide = true)]
    pub echo_server: Option<u16>,
}

// ---------------------------------------------------------------------------
// The baseline: bare hyper, parse JSON, serialise it back.

async fn echo_server(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    serve_json(listener, |body| match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_vec(&v).unwrap_or_default(),
        Err(_) => b"{}".to_vec(),
    })
    .await
}

/// Serves every request on `listener` (any method and path) with 200 and
/// `answer(request body)` as its body, until the task is dropped.
pub(crate) async fn serve_json(listener: tokio::net::TcpListener, answer: fn(&[u8]) -> Vec<u8>) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                let mut resp = Response::new(Full::new(Bytes::from(answer(&body))));
                *resp.status_mut() = StatusCode::OK;
                resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------
// The client.

pub(crate) struct Target {
    name: &'static str,
    addr: String,
    token: Option<&'static str>,
}

/// A ~280-byte payment event as JSON, with id `id`.
pub(crate) fn event_json(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","kind":"purchase","amount":250,"currency":"L$","payer":"9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d","payee":"2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b","occurred_at":"2026-11-24T12:00:00Z","item":"Mesh Sofa Deluxe (copy/mod)","region":"Casper Isle","terminal":"vendor-42"}}"#
    )
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn post(sender: &mut Sender, t: &Target, path: &str, body: String) -> anyhow::Result<(u16, Bytes)> {
    let mut req = Request::post(path)
        .header("host", "bench")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    if let Some(tok) = t.token {
        req.headers_mut().insert("authorization", format!("Bearer {tok}").parse()?);
    }
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A random event id (`sl-<uuid4>`); the target name is not part of it any
/// more (random ids never collide across runs).
fn next_id(_target: &str) -> String {
    crate::ids::random_id()
}

/// One single-event run: throughput and latency percentiles.
#[derive(Debug, Clone, Copy)]
pub struct SingleResult {
    pub events_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

pub(crate) async fn run_single(t: Arc<Target>, conns: usize, dur: Duration) -> anyhow::Result<SingleResult> {
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..conns {
        let t = Arc::clone(&t);
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut sender = connect(&t.addr).await?;
            let deadline = Instant::now() + dur;
            while Instant::now() < deadline {
                let body = event_json(&next_id(t.name));
                let t0 = Instant::now();
                match post(&mut sender, &t, "/v1/events", body).await {
                    Ok((200 | 202, _)) => lat.push(t0.elapsed()),
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        sender = connect(&t.addr).await?;
                    }
                }
            }
            anyhow::Ok((lat, errors))
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (lat, e) = r??;
        all.extend(lat);
        errors += e;
    }
    let r = crate::stats::Rate::from_latencies(all, errors, start.elapsed());
    Ok(SingleResult { events_per_sec: r.per_sec, p50: r.p50, p99: r.p99, errors })
}

pub(crate) async fn run_batch(t: Arc<Target>, conns: usize, size: usize, dur: Duration) -> anyhow::Result<(f64, u64)> {
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..conns {
        let t = Arc::clone(&t);
        tasks.spawn(async move {
            let mut events = 0u64;
            let mut errors = 0u64;
            let mut sender = connect(&t.addr).await?;
            let deadline = Instant::now() + dur;
            while Instant::now() < deadline {
                let items: Vec<String> = (0..size).map(|_| event_json(&next_id(t.name))).collect();
                let body = format!("[{}]", items.join(","));
                match post(&mut sender, &t, "/v1/events/batch", body).await {
                    Ok((200, _)) => events += size as u64,
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        sender = connect(&t.addr).await?;
                    }
                }
            }
            anyhow::Ok((events, errors))
        });
    }
    let (mut events, mut errors) = (0u64, 0u64);
    while let Some(r) = tasks.join_next().await {
        let (n, e) = r??;
        events += n;
        errors += e;
    }
    Ok((events as f64 / start.elapsed().as_secs_f64(), errors))
}

/// The spool alone, in this process, no HTTP: `conns` tasks appending one
/// event at a time (single) or `size` at a time (batch). Attributes the cost:
/// what spoold adds over it is HTTP, auth, parsing and validation.
async fn run_spool_direct(dir: &std::path::Path, conns: usize, size: usize, dur: Duration) -> anyhow::Result<f64> {
    let spool = spool::Spool::open(spool::SpoolConfig::for_dir(dir))?;
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..conns {
        let spool = spool.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            let deadline = Instant::now() + dur;
            while Instant::now() < deadline {
                let events: Vec<spool_format::Event> = (0..size)
                    .map(|_| spool_format::Event::parse_json(event_json(&next_id("direct")).as_bytes()))
                    .collect::<Result<_, _>>()?;
                if size == 1 {
                    for e in events {
                        spool.append(e).await?;
                        n += 1;
                    }
                } else {
                    let results = spool.append_batch(events).await;
                    n += results.iter().filter(|r| r.is_ok()).count() as u64;
                }
            }
            anyhow::Ok(n)
        });
    }
    let mut total = 0u64;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    let eps = total as f64 / start.elapsed().as_secs_f64();
    tokio::task::spawn_blocking(move || spool.close()).await?;
    Ok(eps)
}

// ---------------------------------------------------------------------------
// Runs.

/// Group commits so far, from spoold's own metrics: how many, how long, how
/// many write requests each made durable.
async fn print_commit_metrics(port: u16) {
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else { return };
    let Ok(text) = r.text().await else { return };
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    let commits = value("spoold_commit_duration_seconds_count ");
    let secs = value("spoold_commit_duration_seconds_sum ");
    let requests = value("spoold_commit_batch_events_sum ");
    println!(
        "         spoold group commits so far: {commits:.0}, mean {:.2} ms, mean {:.1} write requests each",
        secs * 1e3 / commits.max(1.0),
        requests / commits.max(1.0)
    );
}

/// The figures of `bench ingest`.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub connections: usize,
    pub batch_size: usize,
    pub batch_connections: usize,
    pub seconds: u64,
    /// Single events: the echo baseline, then spoold.
    pub echo_single: SingleResult,
    pub spoold_single: SingleResult,
    /// Batches, events/s: the echo baseline, then spoold.
    pub echo_batch: f64,
    pub spoold_batch: f64,
    /// The spool alone, in-process, no HTTP (events/s).
    pub direct_single: f64,
    pub direct_batch: f64,
}

pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(port) = args.echo_server {
        return rt.block_on(echo_server(port));
    }
    let r = rt.block_on(measure(&args))?;
    let (e, s) = (&r.echo_single, &r.spoold_single);
    println!();
    println!("| run                          | echo (baseline) | spoold      | spoold/echo |");
    println!("|------------------------------|-----------------|-------------|-------------|");
    println!(
        "| single event, {:>3} conns, ev/s | {:>15.0} | {:>11.0} | {:>10.2}x |",
        r.connections,
        e.events_per_sec,
        s.events_per_sec,
        s.events_per_sec / e.events_per_sec.max(1.0)
    );
    println!(
        "| single event p99 latency, ms | {:>15.2} | {:>11.2} | {:>10.2}x |",
        e.p99.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() / e.p99.as_secs_f64().max(1e-9)
    );
    println!(
        "| batch of {:>4}, {:>2} conns, ev/s | {:>15.0} | {:>11.0} | {:>10.2}x |",
        r.batch_size,
        r.batch_connections,
        r.echo_batch,
        r.spoold_batch,
        r.spoold_batch / r.echo_batch.max(1.0)
    );
    println!(
        "| spool alone (in-process, no HTTP): single {:.0} ev/s, batch {:.0} ev/s; spoold reaches {:.2}x and {:.2}x of it",
        r.direct_single,
        r.direct_batch,
        s.events_per_sec / r.direct_single.max(1.0),
        r.spoold_batch / r.direct_batch.max(1.0)
    );
    println!(
        "\ngoals: single-event >= 0.60x echo with p99 <= 5 ms at 64 conns; batch >= 250k ev/s (spoold: {:.0})",
        r.spoold_batch
    );
    Ok(())
}

/// The benchmark's spoold on `port`, as a client target.
pub(crate) fn spoold_target(port: u16) -> Target {
    Target { name: "spoold", addr: format!("127.0.0.1:{port}"), token: Some(BENCH_TOKEN) }
}

/// Starts the echo baseline (this binary, `ingest --echo-server PORT`, its log
/// in `dir`); killed when dropped.
async fn start_echo(dir: &std::path::Path) -> anyhow::Result<(DaemonProcess, Target)> {
    let port = test_support::free_port();
    let exe = std::env::current_exe().context("find this executable")?;
    let name = exe.file_name().and_then(|n| n.to_str()).context("name this executable")?.to_owned();
    let args = ["ingest".to_owned(), "--echo-server".to_owned(), port.to_string()];
    let echo = DaemonProcess::spawn(&name, &args, &dir.join("echo.log"))
        .context("start the echo server")?;
    // The echo answers 200 to anything, a GET included.
    test_support::wait_http_ok(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(10)).await?;
    Ok((echo, Target { name: "echo", addr: format!("127.0.0.1:{port}"), token: None }))
}

/// Runs `bench ingest`, printing progress; the figures as data.
pub async fn measure(args: &IngestArgs) -> anyhow::Result<IngestReport> {
    let base = match &args.dir {
        Some(d) => tempfile::Builder::new().prefix("bench-ingest").tempdir_in(d),
        None => tempfile::Builder::new().prefix("bench-ingest").tempdir(),
    }
    .context("create the ingest bench dir")?;

    let (_echo, echo) = start_echo(base.path()).await?;

    // spoold.
    let port = test_support::free_port();
    let config = write_spoold_config(base.path(), port, &base.path().join("spool"), args.batch_size.max(1000), None)?;
    let _spoold = spawn_spoold(&config, &base.path().join("spoold.log"))?;
    test_support::wait_http_ok(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(30)).await?;

    let echo = Arc::new(echo);
    let spool = Arc::new(spoold_target(port));
    let dur = Duration::from_secs(args.seconds.max(1));
    let warm = Duration::from_millis(500);

    println!(
        "bench ingest: {} connections single-event, {} connections x {} events batch, {} s per run",
        args.connections, args.batch_connections, args.batch_size, dur.as_secs()
    );
    let mut singles = Vec::new();
    for t in [&echo, &spool] {
        run_single(Arc::clone(t), args.connections, warm).await?;
        let r = run_single(Arc::clone(t), args.connections, dur).await?;
        println!(
            "  single {:<7} {:>10.0} ev/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
            t.name,
            r.events_per_sec,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.errors
        );
        singles.push(r);
        if t.name == "spoold" {
            print_commit_metrics(port).await;
        }
    }
    let mut batches = Vec::new();
    for t in [&echo, &spool] {
        run_batch(Arc::clone(t), args.batch_connections, args.batch_size, warm).await?;
        let (eps, errors) = run_batch(Arc::clone(t), args.batch_connections, args.batch_size, dur).await?;
        println!("  batch  {:<7} {:>10.0} ev/s  errors {}", t.name, eps, errors);
        batches.push(eps);
        if t.name == "spoold" {
            print_commit_metrics(port).await;
        }
    }

    let direct_single =
        run_spool_direct(&base.path().join("direct-single"), args.connections, 1, dur).await?;
    println!("  single spool.append in-process {direct_single:>10.0} ev/s");
    let direct_batch =
        run_spool_direct(&base.path().join("direct-batch"), args.batch_connections, args.batch_size, dur).await?;
    println!("  batch  spool.append_batch in-process {direct_batch:>10.0} ev/s");

    let spoold_single = singles.pop().context("spoold single run")?;
    let echo_single = singles.pop().context("echo single run")?;
    Ok(IngestReport {
        connections: args.connections,
        batch_size: args.batch_size,
        batch_connections: args.batch_connections,
        seconds: dur.as_secs(),
        echo_single,
        spoold_single,
        echo_batch: batches[0],
        spoold_batch: batches[1],
        direct_single,
        direct_batch,
    })
}
