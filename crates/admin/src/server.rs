//! The admin socket server: a Unix stream socket, one JSON [`AdminRequest`] per
//! line in, one JSON [`AdminResponse`] per line out, many requests per
//! connection.
//!
//! Access control is the socket file (mode 0600, owned by the daemon's user)
//! plus a peer-credential check on every connection (same uid or root), so the
//! instant between `bind` and `chmod` grants nobody access.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::admin::{codes, AdminRequest, AdminResponse, ADMIN_LINE_BYTES_MAX};
use spool::Spool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::AdminError;

/// Most admin connections served at once. 16: admin traffic is a handful of
/// operators and scripts; the cap keeps a runaway script from tying up the
/// blocking pool that ingest also needs. Connections over it get a `busy` error.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;
/// How long a connection may sit between requests, in time. 5 minutes: long
/// enough for an operator typing at `socat`, short enough that forgotten
/// connections do not hold one of the few slots for ever.
pub const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long in-flight admin requests get to finish at shutdown, in time. 5 s:
/// requests are short; a verify of a huge spool is cut (it is read-only).
const ADMIN_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors), in time.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What the running daemon adds to its admin socket. Called on an async
/// worker: each method must be quick and must not block.
pub trait Daemon: Send + Sync {
    /// The daemon's part of `status` (draining, the forwarder's view of the
    /// ledger), which [`crate::node_status`] combines with the spool's.
    fn status(&self) -> common::status::DaemonStatus;
    /// Records went back to pending behind the forwarder's cursor (`dlq
    /// retry`, `import`, `reconcile --requeue`): the daemon wakes its forwarder now rather than at
    /// its next periodic rescan.
    fn records_requeued(&self) {}
}

/// A closure giving the status part is a daemon without a forwarder to wake.
impl<F: Fn() -> common::status::DaemonStatus + Send + Sync> Daemon for F {
    fn status(&self) -> common::status::DaemonStatus {
        self()
    }
}

/// The daemon behind an admin socket.
pub type ExtraStatus = Arc<dyn Daemon>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AdminError + '_ {
    move |source| AdminError::Io { path: path.display().to_string(), source }
}

/// Removes a stale socket file left by a crashed daemon. Refuses to remove a
/// socket somebody still answers on, or anything that is not a socket.
fn clear_stale_socket(path: &Path) -> Result<(), AdminError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(AdminError::InUse(path.display().to_string()));
            }
            tracing::info!(path = %path.display(), "removing stale admin socket");
            std::fs::remove_file(path).map_err(io_err(path))
        }
        Ok(_) => Err(AdminError::NotASocket(path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Binds the admin socket at `path` (mode 0600), after removing a stale one.
pub fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    clear_stale_socket(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    Ok(listener)
}

/// Serves the admin protocol on a Unix socket at `path` until `shutdown` turns
/// true (or its sender is dropped). The socket file is created with mode 0600
/// (a stale one from a crash is removed first) and removed on return.
///
/// `extra_status` is merged into the `status` answer (its keys win).
pub async fn serve_unix(
    path: &Path,
    spool: Spool,
    extra_status: ExtraStatus,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AdminError> {
    let listener = bind(path)?;
    let owner_uid = std::fs::metadata(path).map_err(io_err(path))?.uid();
    tracing::info!(path = %path.display(), "admin socket listening");
    let slots = Arc::new(Semaphore::new(ADMIN_CONNECTIONS_MAX));
    let mut conns = JoinSet::new();
    let conn_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let spool = spool.clone();
                        let extra = extra_status.clone();
                        let stop = conn_shutdown.clone();
                        conns.spawn(async move {
                            serve_conn(stream, spool, extra, owner_uid, stop).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tracing::warn!(max = ADMIN_CONNECTIONS_MAX, "admin connection refused: at the connection limit");
                        let resp = AdminResponse::err_code(codes::BUSY, "too many admin connections; try again");
                        // Best effort, never blocks the accept loop.
                        let _ = stream.try_write(&encode_line(&resp));
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(path);
    let drained = tokio::time::timeout(ADMIN_SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(left = conns.len(), "admin requests cut at shutdown");
        conns.abort_all();
    }
    tracing::info!(path = %path.display(), "admin socket closed");
    Ok(())
}

/// Resolves when shutdown is requested or its sender is gone.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn encode_line(resp: &AdminResponse) -> Vec<u8> {
    let mut line = serde_json::to_vec(resp).unwrap_or_else(|e| {
        format!("{{\"ok\":false,\"error\":\"encode response: {e}\",\"code\":\"spool_error\"}}").into_bytes()
    });
    line.push(b'\n');
    line
}

/// What reading one request line gave.
pub(crate) enum Line {
    Request(Vec<u8>),
    TooLong,
    Eof,
}

/// Reads one `\n`-terminated line of at most `max` bytes (newline excluded).
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = (&mut *reader).take(limit).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Line::Request(buf));
    }
    if buf.len() > max {
        return Ok(Line::TooLong);
    }
    // EOF without a newline: take what came as the last request.
    Ok(Line::Request(buf))
}

async fn serve_conn(
    stream: UnixStream,
    spool: Spool,
    extra_status: ExtraStatus,
    owner_uid: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer_uid = match stream.peer_cred() {
        Ok(c) if c.uid() == owner_uid || c.uid() == 0 => c.uid(),
        Ok(c) => {
            tracing::warn!(peer_uid = c.uid(), "admin connection refused: wrong user");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin connection refused: no peer credentials");
            return;
        }
    };
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    // A connection speaks after a matching `hello` only.
    let mut greeted = false;
    loop {
        let line = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            r = tokio::time::timeout(ADMIN_IDLE_TIMEOUT, read_line(&mut reader, ADMIN_LINE_BYTES_MAX)) => r,
        };
        let line = match line {
            Err(_) => return, // idle timeout
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "admin connection read failed");
                return;
            }
            Ok(Ok(Line::Eof)) => return,
            Ok(Ok(Line::TooLong)) => {
                let resp = AdminResponse::err_code(
                    codes::INVALID_REQUEST,
                    format!("request line longer than {ADMIN_LINE_BYTES_MAX} bytes"),
                );
                let _ = wr.write_all(&encode_line(&resp)).await;
                return;
            }
            Ok(Ok(Line::Request(bytes))) => bytes,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let resp = match spool_format::json::from_slice_strict_as::<AdminRequest>(&line) {
            Err(e) => AdminResponse::err_code(codes::INVALID_REQUEST, format!("bad request: {e}")),
            Ok(AdminRequest::Hello { protocol, client }) => {
                let resp = crate::hello(protocol);
                greeted = resp.ok;
                if !resp.ok {
                    tracing::warn!(client = %client, protocol, "admin client speaks another protocol version");
                }
                resp
            }
            Ok(_) if !greeted => AdminResponse::err_code(
                codes::VERSION_MISMATCH,
                format!(
                    "admin protocol mismatch: the client sent no hello (admin protocol 1, a spoolctl older than \
                     versioning); {} speaks version {}; use the spoolctl of the same release as spoold",
                    crate::server_name(),
                    common::admin::ADMIN_PROTOCOL_VERSION
                ),
            ),
            Ok(req) => handle_as(&spool, req, &extra_status, Some(peer_uid)).await,
        };
        if wr.write_all(&encode_line(&resp)).await.is_err() {
            return;
        }
    }
}

/// Runs one request; `status` gets the daemon's part from `extra_status`.
pub async fn handle(spool: &Spool, req: AdminRequest, extra_status: &ExtraStatus) -> AdminResponse {
    handle_as(spool, req, extra_status, None).await
}

/// [`handle`] for the admin socket's peer `peer_uid` (named in the audit log).
pub async fn handle_as(spool: &Spool, req: AdminRequest, extra_status: &ExtraStatus, peer_uid: Option<u32>) -> AdminResponse {
    let verb = verb_name(&req);
    tracing::debug!(verb, "admin request");
    if matches!(req, AdminRequest::Status) {
        return match crate::node_status(spool, Some(extra_status.status())).await {
            Ok(s) => crate::to_data(&s),
            Err(e) => e,
        };
    }
    let requeues = matches!(req, AdminRequest::DlqRetry { .. } | AdminRequest::Import { .. } | AdminRequest::RequeueAcked { .. });
    let resp = crate::execute_as(spool, req, peer_uid).await;
    if requeues && resp.ok {
        extra_status.records_requeued();
    }
    resp
}

fn verb_name(req: &AdminRequest) -> &'static str {
    match req {
        AdminRequest::Hello { .. } => "hello",
        AdminRequest::Status => "status",
        AdminRequest::List { .. } => "list",
        AdminRequest::Show { .. } => "show",
        AdminRequest::Tail { .. } => "tail",
        AdminRequest::Import { .. } => "import",
        AdminRequest::Verify => "verify",
        AdminRequest::DlqRetry { .. } => "dlq_retry",
        AdminRequest::DlqDrop { .. } => "dlq_drop",
        AdminRequest::Audit { .. } => "audit",
        AdminRequest::ReconcileScan { .. } => "reconcile_scan",
        AdminRequest::RequeueAcked { .. } => "requeue_acked",
        AdminRequest::ReconcileAudit { .. } => "reconcile_audit",
    }
}

/// The default admin socket path (SPEC §5 `[listen] admin_socket`).
pub fn default_socket_path() -> PathBuf {
    PathBuf::from(common::admin::DEFAULT_ADMIN_SOCKET)
}
