//! The HTTP server loop both daemons use, with connection hygiene built in:
//! a cap on concurrent connections, a header read timeout, a body read timeout
//! and size cap (in [`read_body`]), an idle keep-alive timeout, and graceful
//! shutdown. A slow or stalled client holds at most one connection slot and
//! never blocks the accept loop or other connections.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::wire::{ErrorBody, ErrorDetail};

/// Connection limits of one listener. Every field is a bound with a unit.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Most connections served at once; further clients wait in the kernel's
    /// accept backlog until a slot frees.
    pub connections_max: usize,
    /// Longest time a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest time a client may take to send a request's body.
    pub body_read_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub keep_alive_idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests before giving up on them.
    pub shutdown_drain_timeout: Duration,
}

/// Defaults of the listener limits, defined once here; spoold's `[limits]`
/// and ledgerd take them from here (docs/config.md says why each is what it is).
pub const CONNECTIONS_MAX_DEFAULT: usize = 4096;
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
pub const BODY_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
pub const KEEP_ALIVE_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
pub const SHUTDOWN_DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            body_read_timeout: BODY_READ_TIMEOUT_DEFAULT,
            keep_alive_idle_timeout: KEEP_ALIVE_IDLE_TIMEOUT_DEFAULT,
            shutdown_drain_timeout: SHUTDOWN_DRAIN_TIMEOUT_DEFAULT,
        }
    }
}

pub type HttpResponse = Response<Full<Bytes>>;
pub type HandlerFuture = Pin<Box<dyn Future<Output = HttpResponse> + Send>>;
/// A request handler: takes the request, returns the whole response.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> HandlerFuture + Send + Sync>;

/// Serves `listener` until `shutdown` becomes `true`, then stops accepting,
/// lets in-flight requests finish (up to `shutdown_drain_timeout`) and returns.
pub async fn serve(listener: TcpListener, limits: ServerLimits, handler: Handler, shutdown: watch::Receiver<bool>) {
    serve_any(listener, None, limits, handler, shutdown).await
}

/// Like [`serve`], over TLS: each connection's handshake must complete within
/// `limits.header_read_timeout` (a stalled handshake holds its slot no longer
/// than a stalled request would); a failed one closes that connection only.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ServerLimits,
    handler: Handler,
    shutdown: watch::Receiver<bool>,
) {
    serve_any(listener, Some(tokio_rustls::TlsAcceptor::from(tls)), limits, handler, shutdown).await
}

async fn serve_any(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ServerLimits,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let mut conns = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() { break; }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            permit = Arc::clone(&slots).acquire_owned() => {
                let Ok(permit) = permit else { break };
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = shutdown.changed() => break,
                };
                match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        let handler = Arc::clone(&handler);
                        let limits = limits.clone();
                        let shutdown = shutdown.clone();
                        let tls = tls.clone();
                        conns.spawn(async move {
                            match tls {
                                None => serve_conn(stream, &limits, handler, shutdown).await,
                                Some(acceptor) => {
                                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                                        Ok(Ok(stream)) => serve_conn(stream, &limits, handler, shutdown).await,
                                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                        Err(_) => tracing::debug!("TLS handshake timed out"),
                                    }
                                }
                            }
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_drain_timeout, drain).await.is_err() {
        tracing::warn!("shutdown drain timed out; closing remaining connections");
        conns.abort_all();
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    limits: &ServerLimits,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(ActivityIo { inner: stream, activity: Arc::clone(&activity) });
    let svc = service_fn(move |req| {
        let h = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(h(req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let tick = (limits.keep_alive_idle_timeout / 4).max(Duration::from_millis(100));
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep(tick), if !closing => {
                if activity.idle() >= limits.keep_alive_idle_timeout {
                    // Finishes a request in flight, then closes.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A socket that records when bytes last moved, for the idle timeout.
struct ActivityIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for ActivityIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ActivityIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body over {0} bytes")]
    TooLarge(usize),
    #[error("body not received within {0:?}")]
    Timeout(Duration),
    #[error("body read failed: {0}")]
    Io(String),
}

/// Reads a whole body, at most `bytes_max` bytes, within `timeout`.
pub async fn read_body(body: Incoming, bytes_max: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    let collect = Limited::new(body, bytes_max).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(BodyError::Timeout(timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(BodyError::TooLarge(bytes_max))
            } else {
                Err(BodyError::Io(e.to_string()))
            }
        }
    }
}

/// A JSON response.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON error response in the SPEC §2 shape.
pub fn error_response(status: StatusCode, detail: ErrorDetail) -> HttpResponse {
    json_response(status, &ErrorBody { error: detail })
}

/// Adds `Retry-After: <secs>` to a response.
pub fn with_retry_after(mut resp: HttpResponse, secs: u64) -> HttpResponse {
    if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    resp
}

/// A plain-text response (metrics, health).
pub fn text_response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> HttpResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

/// Whether a request's `Content-Type` is JSON (`application/json`, any params).
pub fn is_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}
