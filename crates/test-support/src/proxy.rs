//! A fault-injecting TCP proxy for end-to-end tests: listens on a loopback
//! port and forwards to a target, with a mode switchable at run time. Modes
//! apply to new AND existing connections (checked on every chunk), so pooled
//! keep-alive connections are affected too.

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
}

/// A running proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    connections: Arc<AtomicU64>,
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
                        set.spawn(handle(client, target, rx.clone()));
                    }
                    changed = mode_rx.changed() => if changed.is_err() { return },
                    Some(_) = set.join_next(), if !set.is_empty() => {}
                }
            }
        });
        Ok(Proxy { addr, mode, connections, task })
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

async fn handle(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
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
                    Mode::Pass | Mode::Truncate(_) => {}
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
}
