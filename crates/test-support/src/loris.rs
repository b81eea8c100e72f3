//! Slow-loris clients: many connections that open a request and trickle one
//! header byte at a time, never finishing it. A server with a header read
//! timeout cuts them; one without lets them pile up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::tls::Connector;

/// How the trickling went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LorisReport {
    /// Connections established.
    pub connected: usize,
    /// Connections the server closed (EOF or reset) while they trickled.
    pub cut: usize,
}

/// Running slow-loris connections; [`Loris::finish`] waits for them.
#[derive(Debug)]
pub struct Loris {
    tasks: JoinSet<()>,
    connected: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
}

impl Loris {
    /// Opens `connections` connections to `addr` (`host:port`), each sending
    /// an unfinished `POST /v1/events` head and then one byte every `every`,
    /// until the server cuts it or `trickle_for` has passed.
    pub fn start(addr: &str, connections: usize, every: Duration, trickle_for: Duration) -> Loris {
        Loris::start_with(&Connector::plain(), addr, connections, every, trickle_for)
    }

    /// Like [`Loris::start`], through `connector`: over TLS each connection
    /// completes its handshake first and then trickles the request inside it
    /// (so the server's HTTP header timeout is what must cut it).
    pub fn start_with(connector: &Connector, addr: &str, connections: usize, every: Duration, trickle_for: Duration) -> Loris {
        let cut = Arc::new(AtomicUsize::new(0));
        let connected = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for i in 0..connections {
            let addr = addr.to_owned();
            let cut = Arc::clone(&cut);
            let connected = Arc::clone(&connected);
            let connector = connector.clone();
            tasks.spawn(async move {
                let Ok(stream) = connector.connect(&addr).await else { return };
                connected.fetch_add(1, Ordering::Relaxed);
                let (mut rd, mut wr) = tokio::io::split(stream);
                let started = Instant::now();
                let head = format!("POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ");
                if wr.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 512];
                loop {
                    tokio::select! {
                        // The server closing the connection (EOF or reset) is the cut.
                        _ = rd.read(&mut buf) => {
                            cut.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        _ = tokio::time::sleep(every) => {
                            if started.elapsed() > trickle_for {
                                return;
                            }
                            if wr.write_all(b"a").await.is_err() {
                                cut.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                }
            });
        }
        Loris { tasks, connected, cut }
    }

    /// Waits until every connection was cut or gave up.
    pub async fn finish(mut self) -> LorisReport {
        while self.tasks.join_next().await.is_some() {}
        LorisReport {
            connected: self.connected.load(Ordering::Relaxed),
            cut: self.cut.load(Ordering::Relaxed),
        }
    }
}
