//! The ingest HTTP API (SPEC §2): routing, auth, body limits, event
//! validation, spool appends, and the mapping of every outcome to a status code.
//!
//! **Invariant:** no 2xx leaves here before `Spool::append` / `append_batch`
//! has returned, and those return only after the group commit fsynced.
//! **Invariant:** a request that fails validation writes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::http::{
    error_response, is_json, json_response, read_body, text_response, with_retry_after, BodyError, Handler,
    HttpResponse,
};
use common::tokens::TokenSet;
use common::wire::{BatchItemResult, BatchResults, ErrorDetail, IngestAck};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use spool::{AppendOutcome, Spool, SpoolError};
use spool_format::json::{Json, JsonView};
use spool_format::{Event, ParseError};
use time::OffsetDateTime;

use crate::config::Limits;
use crate::metrics::Metrics;

/// Seconds a client is told to wait when the spool is full: the forwarder
/// frees room in batches, so a few seconds is the natural rhythm.
pub const RETRY_AFTER_FULL_SECS: u64 = 5;
/// Seconds a client is told to wait while the daemon shuts down: a restart
/// under systemd takes about this long.
pub const RETRY_AFTER_SHUTDOWN_SECS: u64 = 5;
/// Seconds a client is told to wait when the disk reserve is reached; freeing
/// disk space needs the forwarder or an operator.
pub const RETRY_AFTER_STORAGE_SECS: u64 = 30;

/// Batches of at least this many events are appended under `block_in_place`:
/// applying ~50 µs an event, 64 events is ~3 ms, the most one request may
/// hold an async worker that also serves other connections.
const BLOCKING_BATCH_EVENTS_MIN: usize = 64;

/// Everything a request needs.
pub struct App {
    pub node_id: String,
    pub spool: Spool,
    pub tokens: TokenSet,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// `None` when forwarding is off (no `ledger.urls`).
    pub forwarder: Option<forwarder::ForwarderHandle>,
    /// Set at shutdown: new requests get 503 `shutting_down`.
    pub draining: AtomicBool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("node_id", &self.node_id).finish()
    }
}

/// The handler for `common::http::serve`.
pub fn handler(app: Arc<App>) -> Handler {
    Arc::new(move |req| {
        let app = Arc::clone(&app);
        Box::pin(async move { app.handle(req).await })
    })
}

fn err(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    error_response(status, ErrorDetail::new(code, message))
}

/// 400 `invalid_json`; a duplicate key is named in `field` (its path) and the message.
fn invalid_json(e: spool_format::JsonError) -> HttpResponse {
    let mut detail = ErrorDetail::new("invalid_json", e.message);
    if let Some(key) = e.duplicate_key {
        detail = detail.with_field(key);
    }
    error_response(StatusCode::BAD_REQUEST, detail)
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut r = err(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("use {allow}"));
    r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn closing(mut r: HttpResponse) -> HttpResponse {
    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A refusal of one request: the HTTP answer and the metrics label.
struct Refusal {
    result: &'static str,
    response: HttpResponse,
}

impl Refusal {
    fn new(result: &'static str, response: HttpResponse) -> Refusal {
        Refusal { result, response }
    }
}

/// Maps a spool error to status, code and Retry-After.
fn spool_error(e: &SpoolError) -> (StatusCode, &'static str, Option<u64>) {
    match e {
        SpoolError::Full { .. } => (StatusCode::SERVICE_UNAVAILABLE, "spool_full", Some(RETRY_AFTER_FULL_SECS)),
        SpoolError::InsufficientStorage { .. } | SpoolError::NoSpace(_) => {
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", Some(RETRY_AFTER_STORAGE_SECS))
        }
        SpoolError::Closed => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", Some(RETRY_AFTER_SHUTDOWN_SECS)),
        SpoolError::FlushFailed(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_failed", Some(RETRY_AFTER_STORAGE_SECS)),
        SpoolError::Storage(_) | SpoolError::Locked(_) | SpoolError::Regressed(_) | SpoolError::Corrupt(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "storage_error", None)
        }
    }
}

fn spool_error_response(e: &SpoolError) -> Refusal {
    let (status, code, retry) = spool_error(e);
    if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE && code != "spool_full" {
        tracing::error!(error = %e, "spool append failed");
    }
    let mut r = err(status, code, e.to_string());
    if let Some(s) = retry {
        r = with_retry_after(r, s);
    }
    Refusal::new(code, r)
}

fn invalid_event(e: &spool_format::FieldError) -> ErrorDetail {
    ErrorDetail::new("invalid_event", e.to_string()).with_field(e.field.clone())
}

impl App {
    pub async fn handle(&self, req: Request<Incoming>) -> HttpResponse {
        let path = req.uri().path().to_owned();
        if path.starts_with("/v1/") || path == "/v1" {
            return self.handle_v1(req, &path).await;
        }
        match path.as_str() {
            "/healthz" => match *req.method() {
                Method::GET => json_response(StatusCode::OK, &json!({"status": "ok"})),
                _ => method_not_allowed("GET"),
            },
            "/readyz" => match *req.method() {
                Method::GET => self.readyz(),
                _ => method_not_allowed("GET"),
            },
            "/metrics" => match *req.method() {
                Method::GET => self.metrics(),
                _ => method_not_allowed("GET"),
            },
            _ => err(StatusCode::NOT_FOUND, "not_found", "no such route"),
        }
    }

    async fn handle_v1(&self, req: Request<Incoming>, path: &str) -> HttpResponse {
        // Authentication comes first, before routing: an anonymous client learns
        // nothing, not even which routes exist.
        let auth = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        // The scheme is matched case-insensitively (RFC 9110), in `common`.
        if self.tokens.authenticate(auth).is_none() {
            self.metrics.ingest("unauthorized");
            let mut r = err(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required");
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        match path {
            "/v1/events" => match *req.method() {
                Method::POST => self.post_event(req).await,
                _ => method_not_allowed("POST"),
            },
            "/v1/events/batch" => match *req.method() {
                Method::POST => self.post_batch(req).await,
                _ => method_not_allowed("POST"),
            },
            "/v1/status" => match *req.method() {
                Method::GET => self.status().await,
                _ => method_not_allowed("GET"),
            },
            _ => err(StatusCode::NOT_FOUND, "not_found", "no such route"),
        }
    }

    /// The checks every POST shares, then the body.
    async fn read_json_body(&self, req: Request<Incoming>, bytes_max: usize) -> Result<bytes::Bytes, Refusal> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Refusal::new(
                "shutting_down",
                closing(with_retry_after(
                    err(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "spoold is shutting down; retry shortly"),
                    RETRY_AFTER_SHUTDOWN_SECS,
                )),
            ));
        }
        if !is_json(&req) {
            return Err(Refusal::new(
                "unsupported_media_type",
                err(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send Content-Type: application/json",
                ),
            ));
        }
        let too_large = || {
            Refusal::new(
                "too_large",
                // The unread rest of the body is not worth reading: close.
                closing(err(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("body is over the limit of {bytes_max} bytes"),
                )),
            )
        };
        // Content-Length first: refuse without reading a byte of the body.
        if let Some(len) = req.headers().get(CONTENT_LENGTH) {
            match len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(n) if n > u64::try_from(bytes_max).unwrap_or(u64::MAX) => return Err(too_large()),
                Some(_) => {}
                None => {
                    return Err(Refusal::new(
                        "invalid_request",
                        closing(err(StatusCode::BAD_REQUEST, "invalid_request", "bad Content-Length")),
                    ))
                }
            }
        }
        match read_body(req.into_body(), bytes_max, self.limits.body_read_timeout).await {
            Ok(b) => Ok(b),
            Err(BodyError::TooLarge(_)) => Err(too_large()),
            Err(BodyError::Timeout(t)) => Err(Refusal::new(
                "timeout",
                closing(err(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!("body not received within {} ms", t.as_millis()),
                )),
            )),
            Err(BodyError::Io(e)) => Err(Refusal::new(
                "invalid_request",
                closing(err(StatusCode::BAD_REQUEST, "invalid_request", format!("reading the body failed: {e}"))),
            )),
        }
    }

    async fn post_event(&self, req: Request<Incoming>) -> HttpResponse {
        let started = Instant::now();
        let (result, response) = match self.ingest_one(req).await {
            Ok((result, r)) => (result, r),
            Err(refusal) => (refusal.result, refusal.response),
        };
        self.metrics.ingest(result);
        self.metrics.observe_ingest(started.elapsed());
        response
    }

    async fn ingest_one(&self, req: Request<Incoming>) -> Result<(&'static str, HttpResponse), Refusal> {
        let body = self.read_json_body(req, self.limits.body_bytes_max).await?;
        let event = Event::parse_json(&body).map_err(|e| match e {
            ParseError::Json(e) => Refusal::new("invalid_json", invalid_json(e)),
            ParseError::Invalid(f) => {
                Refusal::new("invalid_event", error_response(StatusCode::BAD_REQUEST, invalid_event(&f)))
            }
        })?;
        let id = event.id.clone();
        // Inline on the async worker: one event is a few µs of sled work. (The
        // blocking pool was measured slower: 13.3k vs 15.6k events/s, `bench
        // ingest`, 64 connections.)
        let appended = self.spool.append(event).await;
        match appended {
            Ok(AppendOutcome::Accepted { seq }) => {
                self.wake_forwarder();
                Ok(("accepted", json_response(StatusCode::ACCEPTED, &IngestAck { id, seq, status: "accepted".into() })))
            }
            Ok(AppendOutcome::Duplicate { seq }) => Ok((
                "duplicate",
                json_response(StatusCode::OK, &IngestAck { id, seq, status: "duplicate".into() }),
            )),
            Ok(AppendOutcome::Conflict { seq }) => Err(Refusal::new(
                "id_conflict",
                err(
                    StatusCode::CONFLICT,
                    "id_conflict",
                    format!("id {id:?} was already used for a different event (seq {seq})"),
                ),
            )),
            Err(e) => Err(spool_error_response(&e)),
        }
    }

    async fn post_batch(&self, req: Request<Incoming>) -> HttpResponse {
        let started = Instant::now();
        let response = match self.ingest_batch(req).await {
            Ok(r) => r,
            Err(refusal) => {
                self.metrics.ingest(refusal.result);
                refusal.response
            }
        };
        self.metrics.observe_ingest(started.elapsed());
        response
    }

    async fn ingest_batch(&self, req: Request<Incoming>) -> Result<HttpResponse, Refusal> {
        let body = self.read_json_body(req, self.limits.batch_body_bytes_max).await?;
        let value = spool_format::json::parse(&body).map_err(|e| Refusal::new("invalid_json", invalid_json(e)))?;
        let Json::Array(items) = value else {
            return Err(Refusal::new(
                "invalid_json",
                err(StatusCode::BAD_REQUEST, "invalid_json", "a batch is a JSON array of events"),
            ));
        };
        if items.len() > self.limits.batch_events_max {
            return Err(Refusal::new(
                "too_large",
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorDetail::new(
                        "too_large",
                        format!(
                            "batch of {} events is over the limit of {} ([limits] batch_events_max)",
                            items.len(),
                            self.limits.batch_events_max
                        ),
                    ),
                ),
            ));
        }
        // Validate every item; only the valid ones reach the spool.
        let mut results: Vec<Option<BatchItemResult>> = Vec::with_capacity(items.len());
        let mut valid: Vec<(usize, Event)> = Vec::new();
        let mut invalid = 0u64;
        for (i, item) in items.iter().enumerate() {
            match Event::from_json(item) {
                Ok(ev) => {
                    results.push(None);
                    valid.push((i, ev));
                }
                Err(e) => {
                    invalid += 1;
                    let id = item.get("id").and_then(JsonView::as_str).map(|s| spool_format::truncate(s, 128).to_owned());
                    results.push(Some(BatchItemResult {
                        id,
                        http_status: 400,
                        status: None,
                        seq: None,
                        error: Some(invalid_event(&e)),
                    }));
                }
            }
        }
        self.metrics.ingest_n("invalid_event", invalid);
        let (indexes, events): (Vec<usize>, Vec<Event>) = valid.into_iter().unzip();
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let outcomes = if events.is_empty() {
            Vec::new()
        } else if events.len() >= BLOCKING_BATCH_EVENTS_MIN {
            // Applying a big batch to sled is milliseconds of blocking work:
            // hand this worker's other connections to another thread meanwhile.
            let spool = self.spool.clone();
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(spool.append_batch(events)))
        } else {
            self.spool.append_batch(events).await
        };
        let mut retry_after: Option<u64> = None;
        let mut any_accepted = false;
        for ((i, id), outcome) in indexes.into_iter().zip(ids).zip(outcomes) {
            let item = match outcome {
                Ok(AppendOutcome::Accepted { seq }) => {
                    self.metrics.ingest("accepted");
                    any_accepted = true;
                    BatchItemResult { id: Some(id), http_status: 202, status: Some("accepted".into()), seq: Some(seq), error: None }
                }
                Ok(AppendOutcome::Duplicate { seq }) => {
                    self.metrics.ingest("duplicate");
                    BatchItemResult { id: Some(id), http_status: 200, status: Some("duplicate".into()), seq: Some(seq), error: None }
                }
                Ok(AppendOutcome::Conflict { seq }) => {
                    self.metrics.ingest("id_conflict");
                    let msg = format!("id {id:?} was already used for a different event (seq {seq})");
                    BatchItemResult {
                        id: Some(id),
                        http_status: 409,
                        status: None,
                        seq: None,
                        error: Some(ErrorDetail::new("id_conflict", msg)),
                    }
                }
                Err(e) => {
                    let refusal = spool_error_response(&e);
                    let (status, code, retry) = spool_error(&e);
                    self.metrics.ingest(refusal.result);
                    if retry.is_some() {
                        retry_after = retry_after.max(retry);
                    }
                    BatchItemResult {
                        id: Some(id),
                        http_status: status.as_u16(),
                        status: None,
                        seq: None,
                        error: Some(ErrorDetail::new(code, e.to_string())),
                    }
                }
            };
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(item);
            }
        }
        if any_accepted {
            self.wake_forwarder();
        }
        let results: Vec<BatchItemResult> = results
            .into_iter()
            .map(|r| {
                // Every slot was filled above; a gap would be a bug, answered as
                // a server error for that item rather than a panic.
                r.unwrap_or(BatchItemResult {
                    id: None,
                    http_status: 500,
                    status: None,
                    seq: None,
                    error: Some(ErrorDetail::new("internal", "no result")),
                })
            })
            .collect();
        let mut resp = json_response(StatusCode::OK, &BatchResults { results });
        if let Some(s) = retry_after {
            resp = with_retry_after(resp, s);
        }
        Ok(resp)
    }

    fn wake_forwarder(&self) {
        if let Some(f) = &self.forwarder {
            f.wake();
        }
    }

    /// `/readyz`: 200 when the spool is open, writable, under its limits and the
    /// disk reserve holds, and the daemon is not draining.
    fn readyz(&self) -> HttpResponse {
        if self.draining.load(Ordering::SeqCst) {
            return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"ready": false, "reason": "shutting_down"}));
        }
        match self.spool.check_writable() {
            Ok(()) => json_response(StatusCode::OK, &json!({"ready": true})),
            Err(e) => {
                let (_, code, _) = spool_error(&e);
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"ready": false, "reason": code, "message": e.to_string()}),
                )
            }
        }
    }

    fn refresh_metrics(&self) -> Option<(spool::Stats, Option<spool::DiskFree>)> {
        let stats = match self.spool.stats_now() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "read spool stats");
                return None;
            }
        };
        let disk = self.spool.disk_free().ok();
        self.metrics.refresh(&stats, disk, OffsetDateTime::now_utc());
        self.metrics.limits(self.spool.config());
        Some((stats, disk))
    }

    fn metrics(&self) -> HttpResponse {
        self.refresh_metrics();
        text_response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            self.metrics.render(),
        )
    }

    /// Wakes the forwarder to read the pending queue from the start now.
    pub fn rescan_forwarder(&self) {
        if let Some(f) = &self.forwarder {
            f.rescan();
        }
    }

    /// The daemon's part of the status document (draining, the forwarder's
    /// view of the ledger); the admin socket's `status` uses it too.
    pub fn daemon_status(&self) -> common::status::DaemonStatus {
        common::status::DaemonStatus {
            draining: self.draining.load(Ordering::SeqCst),
            commit_seconds_total: self.metrics.commit_seconds_total(),
            ledger: self.forwarder.as_ref().map(|f| f.ledger_status()).unwrap_or_default(),
        }
    }

    /// `GET /v1/status`: the node's status document (`admin::node_status`, the
    /// same one the admin socket answers).
    async fn status(&self) -> HttpResponse {
        // Keeps the gauges in step with what this answer says.
        let _ = self.refresh_metrics();
        match admin::node_status(&self.spool, Some(self.daemon_status())).await {
            Ok(s) => json_response(StatusCode::OK, &s),
            Err(_) => err(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", "cannot read the spool's counters"),
        }
    }
}


/// The admin socket's view of the daemon: the status part, and a forwarder
/// wake-up after `dlq retry` / `import` (no wait for the periodic rescan).
impl admin::Daemon for App {
    fn status(&self) -> common::status::DaemonStatus {
        self.daemon_status()
    }

    fn records_requeued(&self) {
        self.rescan_forwarder();
    }
}
