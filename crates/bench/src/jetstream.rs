//! The peer of `bench commit`: NATS JetStream publish + ack (issue 11). A
//! stream with file storage on the NATS server at `--nats-url` (this machine
//! kind runs one on 127.0.0.1:4222), `publishers` tasks each publishing a
//! ~280-byte payment event (JSON, random `sl-<uuid4>` id) and awaiting the
//! server's ack before the next, through one connection (`async-nats`). The
//! stream is created fresh for the run and deleted after it.
//!
//! What the ack means: the server has stored the message in its file store,
//! which by default is fsynced lazily (`sync_interval`, 2 min) — not the
//! spool's rule (every ack after an fdatasync). The ratio is still the one
//! operators ask about: how the spool compares to the durable queue they know.
//!
//! Without a server (or without JetStream), the peer is skipped with the
//! reason, and the rest of the bench goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;

use crate::stats::Rate;

/// How the JetStream peer went.
#[derive(Debug, Clone)]
pub enum JetStreamOutcome {
    /// Not measured: why (printed as `SKIPPED: <reason>`).
    Skipped(String),
    Done {
        publishers: usize,
        /// Publish + ack per second, and the latency of one publish + ack.
        rate: Rate,
        /// The server's version, for the report.
        server_version: String,
    },
}

/// How long to wait for the server before skipping the peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Measures `publishers` concurrent publish + ack loops for `secs` against
/// the server at `url`.
pub async fn measure(url: &str, publishers: usize, secs: u64) -> JetStreamOutcome {
    match run(url, publishers, secs).await {
        Ok((rate, server_version)) => JetStreamOutcome::Done { publishers, rate, server_version },
        Err(why) => JetStreamOutcome::Skipped(why),
    }
}

async fn run(url: &str, publishers: usize, secs: u64) -> Result<(Rate, String), String> {
    let client = match tokio::time::timeout(CONNECT_TIMEOUT, async_nats::connect(url)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(format!("no NATS server answers at {url}: {e}")),
        Err(_) => return Err(format!("no NATS server answered at {url} within {CONNECT_TIMEOUT:?}")),
    };
    let server_version = client.server_info().version;
    let js = jetstream::new(client);
    let name = format!("OFFGRID_BENCH_{}", std::process::id());
    let subject = format!("offgrid.bench.{}", std::process::id());
    let config = jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    // JetStream off on the server: the create fails (or times out), skip.
    match tokio::time::timeout(CONNECT_TIMEOUT, js.create_stream(config)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("no JetStream at {url} (create a file stream: {e})")),
        Err(_) => return Err(format!("no JetStream at {url} (stream create timed out)")),
    }
    let js = Arc::new(js);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..publishers {
        let js = Arc::clone(&js);
        let subject = subject.clone();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let payload = Bytes::from(crate::ingest::event_json(&crate::ids::random_id()));
                let t0 = Instant::now();
                match js.publish(subject.clone(), payload).await {
                    Ok(ack) => match ack.await {
                        Ok(_) => lat.push(t0.elapsed()),
                        Err(_) => errors += 1,
                    },
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (lat, e) = r.map_err(|e| format!("publisher task: {e}"))?;
        all.extend(lat);
        errors += e;
    }
    let rate = Rate::from_latencies(all, errors, started.elapsed());
    if let Err(e) = js.delete_stream(&name).await {
        println!("  (could not delete the bench stream {name}: {e})");
    }
    Ok((rate, server_version))
}
