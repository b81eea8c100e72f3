//! A fault-injecting TCP proxy for end-to-end tests: listens on a loopback
//! port and forwards to a target, with a mode switchable at run time. Modes
//! apply to new AND existing connections (checked on every chunk), so pooled
//! keep-alive connections are affected too, except [`Mode::Thin`], which
//! applies to the connections opened while it is set (a thin link is a
//! route, not a fault of a moment).
//!
//! [`Mode::Thin`] is a slow backup line: each direction has a bandwidth
//! shared by every connection of the proxy (bytes are queued in order and
//! leave at `bytes_per_second`) and a one-way delay added after
//! transmission, so a round trip costs twice `one_way_delay` plus the
//! transmission time of what is sent. The link buffers at most
//! [`THIN_BUFFER_BYTES`] per connection and direction (then the sender waits,
//! as TCP would).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Accept and read, never forward nor answer: clients hang until their
    /// timeout (a black-holing firewall).
    Blackhole,
    /// Forward, holding every chunk (both ways) for this long first: a slow
    /// ledger, e.g. slower than the client's timeout.
    Delay(Duration),
    /// Reset (RST) every connection, new and existing, on its next activity.
    Reset,
    /// Forward requests, but pass only the first `n` bytes of a response, then
    /// close: truncated answers.
    Truncate(usize),
    /// Network partition: new connections are reset at once, existing ones are
    /// reset too.
    Partition,
    /// Nothing listens: the listening socket is closed, so connects are
    /// refused (ECONNREFUSED); existing connections are reset. Switching to
    /// another mode listens again on the same port.
    Refuse,
    /// Accept, then close at once (FIN) without reading or answering.
    Close,
    /// For each request chunk, with probability `percent`/100, answer a canned
    /// `HTTP 500` and close instead of forwarding.
    Http500 { percent: u8 },
    /// Packet loss: for each request chunk, with probability `percent`/100, the
    /// chunk is lost and the connection stalls (blackholed) from then on.
    Lossy { percent: u8 },
    /// A thin link: `bytes_per_second` each way, shared by all connections,
    /// plus `one_way_delay` each way (round trip: twice it). For connections
    /// opened while it is set.
    Thin { bytes_per_second: u64, one_way_delay: Duration },
}

/// Bytes a thin link holds per connection and direction before the sender
/// waits: 64 KiB, half a second of a 1 Mbit/s line (a modest router buffer).
pub const THIN_BUFFER_BYTES: usize = 64 << 10;
/// Largest chunk a thin link moves at once (pacing granularity: 32 ms at 1 Mbit/s).
const THIN_CHUNK_BYTES: usize = 4 << 10;

/// When the next byte may start on each direction of a thin link, and the
/// bytes that crossed the proxy each way.
#[derive(Debug, Default)]
struct Wire {
    up_free: std::sync::Mutex<Option<tokio::time::Instant>>,
    down_free: std::sync::Mutex<Option<tokio::time::Instant>>,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
}

/// A running proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    connections: Arc<AtomicU64>,
    wire: Arc<Wire>,
    task: JoinHandle<()>,
}

const CANNED_500: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 67\r\nconnection: close\r\n\r\n{\"error\":{\"code\":\"injected\",\"message\":\"fault injected by the proxy\"}}";

fn chance(percent: u8) -> bool {
    rand::random::<u8>() % 100 < percent
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `target`, in `Pass` mode.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Proxy> {
        Proxy::start_on(0, target).await
    }

    /// Starts a proxy on `127.0.0.1:port` forwarding to `target`.
    pub async fn start_on(port: u16, target: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(Mode::Pass);
        let connections = Arc::new(AtomicU64::new(0));
        let conns = Arc::clone(&connections);
        let wire = Arc::new(Wire::default());
        let w = Arc::clone(&wire);
        let task = tokio::spawn(async move {
            let mut set = JoinSet::new();
            let mut listener = Some(listener);
            let mut mode_rx = rx.clone();
            loop {
                let refuse = *mode_rx.borrow() == Mode::Refuse;
                if refuse {
                    listener = None;
                } else if listener.is_none() {
                    match rebind(addr) {
                        Ok(l) => listener = Some(l),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                tokio::select! {
                    accepted = async { match &listener { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                        let Ok((client, _)) = accepted else { continue };
                        conns.fetch_add(1, Ordering::Relaxed);
                        match *rx.borrow() {
                            Mode::Thin { bytes_per_second, one_way_delay } => {
                                set.spawn(thin(client, target, bytes_per_second.max(1), one_way_delay, Arc::clone(&w), rx.clone()))
                            }
                            _ => set.spawn(handle(client, target, rx.clone(), Arc::clone(&w))),
                        };
                    }
                    changed = mode_rx.changed() => if changed.is_err() { return },
                    Some(_) = set.join_next(), if !set.is_empty() => {}
                }
            }
        });
        Ok(Proxy { addr, mode, connections, wire, task })
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Bytes passed so far: (client to target, target to client).
    pub fn bytes(&self) -> (u64, u64) {
        (self.wire.up_bytes.load(Ordering::Relaxed), self.wire.down_bytes.load(Ordering::Relaxed))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens again on `addr` (SO_REUSEADDR, so a just-closed port is reusable).
fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn reset(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

/// One connection over a thin link: each direction is a reader that stamps
/// every chunk with the time it will have crossed the link, and a writer that
/// delivers it then.
async fn thin(client: TcpStream, target: SocketAddr, rate: u64, delay: Duration, wire: Arc<Wire>, mut mode: watch::Receiver<Mode>) {
    let server = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(_) => {
            reset(&client);
            return;
        }
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, rate, delay, Arc::clone(&wire), true);
    let down = pump(sr, cw, rate, delay, wire, false);
    let cut = async {
        loop {
            if mode.changed().await.is_err() {
                return;
            }
            if matches!(*mode.borrow(), Mode::Partition | Mode::Reset | Mode::Refuse) {
                return;
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    rate: u64,
    delay: Duration,
    wire: Arc<Wire>,
    upstream: bool,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(THIN_BUFFER_BYTES / THIN_CHUNK_BYTES);
    let reader = async move {
        let mut buf = vec![0u8; THIN_CHUNK_BYTES];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let on_wire = Duration::from_secs_f64(n as f64 / rate as f64);
            let crossed = {
                let free = if upstream { &wire.up_free } else { &wire.down_free };
                let mut free = free.lock().unwrap_or_else(|p| p.into_inner());
                let now = tokio::time::Instant::now();
                let start = free.map_or(now, |f| f.max(now));
                let done = start + on_wire;
                *free = Some(done);
                done
            };
            let counter = if upstream { &wire.up_bytes } else { &wire.down_bytes };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            if tx.send((crossed + delay, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

async fn handle(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>, wire: Arc<Wire>) {
    let _ = client.set_nodelay(true);
    let m = *mode.borrow();
    if matches!(m, Mode::Partition | Mode::Reset | Mode::Refuse) {
        reset(&client);
        return;
    }
    if m == Mode::Close {
        drop(client);
        return;
    }
    let server = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(_) => {
            reset(&client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut cbuf = vec![0u8; 64 * 1024];
    let mut sbuf = vec![0u8; 64 * 1024];
    let mut stalled = false;
    // Bytes of the current response passed so far (for Truncate).
    let mut response_bytes = 0usize;
    loop {
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                if matches!(*mode.borrow(), Mode::Partition | Mode::Reset | Mode::Refuse) {
                    reset(cw.as_ref());
                    reset(sw.as_ref());
                    return;
                }
            }
            n = cr.read(&mut cbuf) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                response_bytes = 0;
                let m = *mode.borrow();
                if stalled {
                    continue;
                }
                match m {
                    Mode::Pass | Mode::Truncate(_) | Mode::Thin { .. } => {}
                    Mode::Delay(d) => tokio::time::sleep(d).await,
                    Mode::Blackhole => continue,
                    Mode::Close => return,
                    Mode::Reset | Mode::Partition | Mode::Refuse => {
                        reset(cw.as_ref());
                        reset(sw.as_ref());
                        return;
                    }
                    Mode::Http500 { percent } => {
                        if chance(percent) {
                            let _ = cw.write_all(CANNED_500).await;
                            let _ = cw.shutdown().await;
                            return;
                        }
                    }
                    Mode::Lossy { percent } => {
                        if chance(percent) {
                            stalled = true;
                            continue;
                        }
                    }
                }
                if sw.write_all(&cbuf[..n]).await.is_err() {
                    reset(cw.as_ref());
                    return;
                }
                wire.up_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            n = sr.read(&mut sbuf) => {
                let n = match n { Ok(0) | Err(_) => { let _ = cw.shutdown().await; return; } Ok(n) => n };
                let m = *mode.borrow();
                if stalled {
                    continue;
                }
                match m {
                    Mode::Blackhole => continue,
                    Mode::Delay(d) => tokio::time::sleep(d).await,
                    Mode::Truncate(limit) => {
                        let keep = limit.saturating_sub(response_bytes).min(n);
                        let _ = cw.write_all(&sbuf[..keep]).await;
                        response_bytes += keep;
                        if keep < n {
                            let _ = cw.shutdown().await;
                            return;
                        }
                        continue;
                    }
                    Mode::Reset | Mode::Partition | Mode::Refuse => {
                        reset(cw.as_ref());
                        return;
                    }
                    Mode::Close => return,
                    _ => {}
                }
                if cw.write_all(&sbuf[..n]).await.is_err() {
                    return;
                }
                wire.down_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(msg).await?;
        let mut out = vec![0u8; msg.len()];
        let mut got = 0;
        while got < msg.len() {
            let n = s.read(&mut out[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        out.truncate(got);
        Ok(out)
    }

    #[tokio::test]
    async fn modes_do_what_they_say() {
        let p = Proxy::start(echo_server().await).await.expect("proxy");
        assert_eq!(roundtrip(p.addr, b"hello").await.expect("pass"), b"hello");
        p.set_mode(Mode::Truncate(2));
        assert_eq!(roundtrip(p.addr, b"hello").await.expect("truncate"), b"he");
        p.set_mode(Mode::Partition);
        assert!(roundtrip(p.addr, b"hello").await.map(|v| v.is_empty()).unwrap_or(true));
        p.set_mode(Mode::Blackhole);
        let r = tokio::time::timeout(Duration::from_millis(200), roundtrip(p.addr, b"hello")).await;
        assert!(r.is_err(), "blackhole never answers");
        p.set_mode(Mode::Http500 { percent: 100 });
        let r = roundtrip(p.addr, b"GET / HTTP/1.1\r\n\r\n").await.expect("500");
        assert!(r.starts_with(b"HTTP/1.1 500"));
        p.set_mode(Mode::Close);
        assert!(roundtrip(p.addr, b"hello").await.map(|v| v.is_empty()).unwrap_or(true));
        p.set_mode(Mode::Refuse);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = TcpStream::connect(p.addr).await.expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        p.set_mode(Mode::Pass);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(roundtrip(p.addr, b"again").await.expect("pass"), b"again");
        assert!(p.connections() >= 6);
    }

    /// A thin link takes the transmission time plus the delay each way; two
    /// connections share its bandwidth. Timings are generous lower bounds
    /// (a loaded machine is only ever slower) plus a loose upper bound.
    #[tokio::test]
    async fn a_thin_link_limits_bandwidth_and_adds_latency_both_ways() {
        let p = Proxy::start(echo_server().await).await.expect("proxy");
        p.set_mode(Mode::Thin { bytes_per_second: 100_000, one_way_delay: Duration::from_millis(50) });
        // 1 byte: only the round trip of 2 × 50 ms.
        let t = std::time::Instant::now();
        assert_eq!(roundtrip(p.addr, b"x").await.expect("thin"), b"x");
        let rtt = t.elapsed();
        assert!(rtt >= Duration::from_millis(100) && rtt < Duration::from_secs(2), "{rtt:?}");
        // 2 × 20 KB at once over 100 KB/s: 0.4 s up (shared), echoed back as
        // it arrives (down overlaps up), plus the round trip.
        let msg = vec![7u8; 20_000];
        let t = std::time::Instant::now();
        let (a, b) = tokio::join!(roundtrip(p.addr, &msg), roundtrip(p.addr, &msg));
        assert_eq!((a.expect("a").len(), b.expect("b").len()), (20_000, 20_000));
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(480), "shared bandwidth plus the round trip: {took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let (up, down) = p.bytes();
        assert_eq!((up, down), (40_001, 40_001));
    }
}
