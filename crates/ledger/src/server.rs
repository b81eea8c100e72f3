//! ledgerd's HTTP API (SPEC §3): batch intake, reads with roles, stats, health,
//! metrics. Served by `common::http::serve`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{error_response, is_json, json_response, read_body, text_response, with_retry_after, BodyError, Handler, HttpResponse};
use common::tokens::TokenSet;
use common::wire::{BatchResults, ErrorDetail, LedgerResult, LedgerStatus};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use spool_format::json::{Json, JsonView as _};
use spool_format::{Event, OffsetDateTime, Uuid};
use time::format_description::well_known::Rfc3339;
use tracing::Instrument as _;

use crate::config::Role;
use crate::store::{Filter, IncomingEvent, Outcome, Store, StoreError};

/// Events returned by one `GET /v1/events` when `limit` is not given.
pub const QUERY_LIMIT_DEFAULT: usize = 100;
/// Largest `limit` of `GET /v1/events`: bounds one response's size.
pub const QUERY_LIMIT_MAX: usize = 1000;
/// Seconds a client is told to wait when the store is unavailable.
pub const RETRY_AFTER_SECS: u64 = 1;
/// How long `/readyz` waits for the store's health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// ledgerd's metrics (SPEC §7).
#[derive(Clone)]
pub struct LedgerMetrics {
    pub events: Family<Vec<(String, String)>, Counter>,
    pub batch_duration: Histogram,
    pub store_up: Gauge,
    /// 1 when the sled store was opened over a regression the operator accepted.
    pub store_regression_accepted: Gauge,
}

impl LedgerMetrics {
    pub fn new() -> LedgerMetrics {
        LedgerMetrics {
            events: Family::default(),
            // 1 ms .. ~33 s: from a small sled batch to a slow PostgreSQL commit.
            batch_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            store_up: Gauge::default(),
            store_regression_accepted: Gauge::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register("ledgerd_events", "Events received in batches, by outcome", self.events.clone());
        r.register("ledgerd_batch_duration_seconds", "Time to record one batch, durable", self.batch_duration.clone());
        r.register("ledgerd_store_up", "1 when the store answers, else 0", self.store_up.clone());
        r.register(
            "ledgerd_store_regression_accepted",
            "1 when the store was opened over a regression the operator accepted (--accept-store-regression)",
            self.store_regression_accepted.clone(),
        );
    }

    fn count(&self, status: &str, n: u64) {
        if n > 0 {
            self.events.get_or_create(&vec![("status".to_owned(), status.to_owned())]).inc_by(n);
        }
    }
}

impl Default for LedgerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Limits of the API.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub body_bytes_max: usize,
    pub batch_events_max: usize,
    pub body_read_timeout: Duration,
}

/// Everything a request handler needs.
pub struct Api<S: Store> {
    pub store: S,
    pub tokens: TokenSet,
    pub roles: HashMap<String, Role>,
    pub limits: ApiLimits,
    pub metrics: LedgerMetrics,
    pub registry: Registry,
}

impl<S: Store> Api<S> {
    /// The handler for `common::http::serve`.
    pub fn handler(self: Arc<Self>) -> Handler {
        Arc::new(move |req| {
            let api = Arc::clone(&self);
            Box::pin(async move { api.handle(req).await })
        })
    }

    fn note_store(&self, r: &Result<impl Sized, StoreError>) {
        match r {
            Ok(_) => {
                self.metrics.store_up.set(1);
            }
            Err(StoreError::Unavailable(_)) => {
                self.metrics.store_up.set(0);
            }
            Err(_) => {}
        }
    }

    /// Every answer advertises the request codings ledgerd decodes
    /// (`Accept-Encoding`, RFC 7694 §3): a forwarder learns from its first
    /// answer (a batch, or the `/readyz` probe) that it may compress.
    async fn handle(&self, req: Request<Incoming>) -> HttpResponse {
        let mut resp = self.route(req).await;
        resp.headers_mut().insert(
            hyper::header::ACCEPT_ENCODING,
            hyper::header::HeaderValue::from_static(common::coding::ACCEPTED_REQUEST_CODINGS),
        );
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> HttpResponse {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/healthz") => text_response(StatusCode::OK, "text/plain", "ok\n"),
            (Method::GET, "/readyz") => self.readyz().await,
            (Method::GET, "/metrics") => {
                let mut out = String::new();
                if encode(&mut out, &self.registry).is_err() {
                    return text_response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "encode failed\n");
                }
                text_response(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", out)
            }
            (method, p) if p.starts_with("/v1/") => {
                let header = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
                let Some(token) = self.tokens.authenticate(header.as_deref()) else {
                    return error_response(StatusCode::UNAUTHORIZED, ErrorDetail::new("unauthorized", "missing or unknown bearer token"));
                };
                let Some(role) = self.roles.get(&token.name).copied() else {
                    return error_response(StatusCode::UNAUTHORIZED, ErrorDetail::new("unauthorized", "token has no role"));
                };
                match (method, p) {
                    (Method::POST, "/v1/batches") => match role {
                        Role::Node | Role::Admin => self.post_batch(req).await,
                        Role::Merchant(_) => forbidden(),
                    },
                    (Method::POST, "/v1/reconcile") => match role {
                        Role::Node | Role::Admin => self.reconcile(req).await,
                        Role::Merchant(_) => forbidden(),
                    },
                    (Method::GET, "/v1/events") => self.list_events(role, &query).await,
                    (Method::GET, p) if p.starts_with("/v1/events/") => {
                        self.get_event(role, &percent_decode(&p["/v1/events/".len()..])).await
                    }
                    (Method::GET, "/v1/stats") => match role {
                        Role::Admin => self.stats().await,
                        _ => forbidden(),
                    },
                    (_, p) => wrong_method_or_not_found(p),
                }
            }
            (_, p) => wrong_method_or_not_found(p),
        }
    }

    async fn readyz(&self) -> HttpResponse {
        let r = match tokio::time::timeout(HEALTH_TIMEOUT, self.store.health()).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable("health check timed out".into())),
        };
        self.note_store(&r);
        match r {
            Ok(()) => text_response(StatusCode::OK, "text/plain", "ready\n"),
            Err(e) => text_response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {e}\n")),
        }
    }

    async fn post_batch(&self, req: Request<Incoming>) -> HttpResponse {
        let started = Instant::now();
        if !is_json(&req) {
            return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorDetail::new("unsupported_media_type", "send application/json"));
        }
        let body = match self.read_request_body(req).await {
            Ok(b) => b,
            Err(resp) => return *resp,
        };
        // Strict: a duplicate key anywhere (`node`, an event's `amount`) refuses the
        // whole batch, naming the key's path in `field`.
        let batch = match spool_format::json::parse(&body) {
            Ok(v) => match RawBatch::from_json(v) {
                Ok(b) => b,
                Err(msg) => return error_response(StatusCode::BAD_REQUEST, ErrorDetail::new("invalid_json", msg)),
            },
            Err(e) => {
                let mut detail = ErrorDetail::new("invalid_json", e.message);
                if let Some(key) = e.duplicate_key {
                    detail = detail.with_field(key);
                }
                return error_response(StatusCode::BAD_REQUEST, detail);
            }
        };
        if batch.node.is_empty() || batch.node.len() > spool_format::NODE_BYTES_MAX {
            return error_response(
                StatusCode::BAD_REQUEST,
                ErrorDetail::new("invalid_batch", format!("node must be 1 to {} bytes", spool_format::NODE_BYTES_MAX)).with_field("node"),
            );
        }
        if batch.events.len() > self.limits.batch_events_max {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorDetail::new("too_large", format!("batch over {} events", self.limits.batch_events_max)),
            );
        }
        // Validate each entry on its own: a bad one is `rejected`, the rest go on.
        let mut results: Vec<Option<LedgerResult>> = Vec::with_capacity(batch.events.len());
        let mut valid: Vec<IncomingEvent> = Vec::new();
        for entry in &batch.events {
            match parse_entry(entry) {
                Ok(inc) => {
                    results.push(None);
                    valid.push(inc);
                }
                Err((id, detail)) => {
                    results.push(Some(LedgerResult { id, status: LedgerStatus::Rejected, ledger_seq: None, error: Some(detail) }));
                }
            }
        }
        let span = tracing::info_span!("batch", node = %batch.node, events = batch.events.len());
        let ids: Vec<String> = valid.iter().map(|v| v.event.id.clone()).collect();
        let outcome = if valid.is_empty() {
            Ok(Vec::new())
        } else {
            self.store.record_batch(&batch.node, valid).instrument(span.clone()).await
        };
        let _e = span.enter();
        self.note_store(&outcome);
        let outcomes = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "batch not recorded");
                let resp = error_response(StatusCode::SERVICE_UNAVAILABLE, ErrorDetail::new("store_unavailable", e.to_string()));
                return with_retry_after(resp, RETRY_AFTER_SECS);
            }
        };
        if outcomes.len() != ids.len() {
            // A store bug; the forwarder retries the whole batch (idempotent).
            tracing::error!(expected = ids.len(), got = outcomes.len(), "store returned the wrong number of outcomes");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, ErrorDetail::new("internal", "store outcome count mismatch"));
        }
        let mut it = outcomes.into_iter().zip(ids);
        let mut counts = [0u64; 4];
        let results: Vec<LedgerResult> = results
            .into_iter()
            .map(|r| match r {
                Some(rejected) => rejected,
                None => {
                    let (o, id) = it.next().unwrap_or((Outcome::Conflict { ledger_seq: 0 }, String::new()));
                    match o {
                        Outcome::Accepted { ledger_seq } => LedgerResult { id, status: LedgerStatus::Accepted, ledger_seq: Some(ledger_seq), error: None },
                        Outcome::Duplicate { ledger_seq } => LedgerResult { id, status: LedgerStatus::Duplicate, ledger_seq: Some(ledger_seq), error: None },
                        Outcome::Conflict { ledger_seq } => LedgerResult {
                            id,
                            status: LedgerStatus::Conflict,
                            ledger_seq: Some(ledger_seq),
                            error: Some(ErrorDetail::new("id_conflict", format!("a different event with this id is recorded as ledger_seq {ledger_seq}"))),
                        },
                    }
                }
            })
            .collect();
        for r in &results {
            counts[match r.status {
                LedgerStatus::Accepted => 0,
                LedgerStatus::Duplicate => 1,
                LedgerStatus::Conflict => 2,
                LedgerStatus::Rejected => 3,
            }] += 1;
        }
        for (i, s) in ["accepted", "duplicate", "conflict", "rejected"].iter().enumerate() {
            self.metrics.count(s, counts[i]);
        }
        self.metrics.batch_duration.observe(started.elapsed().as_secs_f64());
        tracing::debug!(accepted = counts[0], duplicate = counts[1], conflict = counts[2], rejected = counts[3], "batch recorded");
        json_response(StatusCode::OK, &BatchResults { results })
    }

    /// Reads a JSON request body under `[limits] body_bytes_max`, on the wire
    /// *and* decoded: a `Content-Encoding: zstd`/`gzip` body is decoded with a
    /// hard bound on its decoded size (a zip bomb: 413, nothing recorded).
    async fn read_request_body(&self, req: Request<Incoming>) -> Result<Vec<u8>, Box<HttpResponse>> {
        let coding = req.headers().get(hyper::header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?"));
        let Some(coding) = common::coding::Coding::from_content_encoding(coding) else {
            return Err(Box::new(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorDetail::new(
                    "unsupported_media_type",
                    format!("Content-Encoding must be one of: identity, {}", common::coding::ACCEPTED_REQUEST_CODINGS),
                ),
            )));
        };
        let max = self.limits.body_bytes_max;
        let too_large = |what: &str| {
            Box::new(error_response(StatusCode::PAYLOAD_TOO_LARGE, ErrorDetail::new("too_large", format!("{what} over {max} bytes"))))
        };
        let wire = match read_body(req.into_body(), max, self.limits.body_read_timeout).await {
            Ok(b) => b,
            Err(BodyError::TooLarge(_)) => return Err(too_large("body")),
            Err(e @ BodyError::Timeout(_)) => {
                return Err(Box::new(error_response(StatusCode::REQUEST_TIMEOUT, ErrorDetail::new("timeout", e.to_string()))))
            }
            Err(e) => return Err(Box::new(error_response(StatusCode::BAD_REQUEST, ErrorDetail::new("bad_request", e.to_string())))),
        };
        match tokio::task::spawn_blocking(move || common::coding::decode_bounded(coding, &wire, max)).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(common::coding::DecodeError::TooLarge(_))) => {
                tracing::warn!(coding = ?coding, bytes_max = max, "request body decodes past the limit; refused");
                Err(too_large("decoded body"))
            }
            Ok(Err(e)) => Err(Box::new(error_response(StatusCode::BAD_REQUEST, ErrorDetail::new("bad_request", e.to_string())))),
            Err(e) => Err(Box::new(error_response(StatusCode::INTERNAL_SERVER_ERROR, ErrorDetail::new("internal", e.to_string())))),
        }
    }

    /// `POST /v1/reconcile` (node, admin): for each `(id, digest)`, whether the
    /// ledger holds that event (`present`), another one under the id
    /// (`different`), or nothing (`missing`). Says nothing else about the
    /// stored event: a node learns no more than a batch's
    /// `duplicate`/`conflict` would tell it.
    async fn reconcile(&self, req: Request<Incoming>) -> HttpResponse {
        use common::wire::{ReconcileRequest, ReconcileResult, ReconcileStatus, RECONCILE_ENTRIES_MAX};
        if !is_json(&req) {
            return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorDetail::new("unsupported_media_type", "send application/json"));
        }
        let body = match self.read_request_body(req).await {
            Ok(b) => b,
            Err(resp) => return *resp,
        };
        let parsed: ReconcileRequest = match spool_format::json::from_slice_strict_as(&body) {
            Ok(b) => b,
            Err(e) => {
                let mut detail = ErrorDetail::new("invalid_json", e.message);
                if let Some(key) = e.duplicate_key {
                    detail = detail.with_field(key);
                }
                return error_response(StatusCode::BAD_REQUEST, detail);
            }
        };
        if parsed.events.len() > RECONCILE_ENTRIES_MAX {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorDetail::new("too_large", format!("at most {RECONCILE_ENTRIES_MAX} entries per request")),
            );
        }
        let mut digests = Vec::with_capacity(parsed.events.len());
        for (i, e) in parsed.events.iter().enumerate() {
            // Any id may be asked about (one the ledger cannot hold is simply
            // `missing`); the digest must be one.
            let Some(d) = decode_digest(&e.digest) else {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    ErrorDetail::new("invalid_request", format!("events[{i}].digest: must be 64 hex digits"))
                        .with_field(format!("events[{i}].digest")),
                );
            };
            digests.push(d);
        }
        let ids: Vec<String> = parsed.events.into_iter().map(|e| e.id).collect();
        let r = self.store.digests(ids.clone()).await;
        self.note_store(&r);
        match r {
            Ok(stored) if stored.len() == ids.len() => {
                let results: Vec<ReconcileResult> = ids
                    .into_iter()
                    .zip(stored)
                    .zip(digests)
                    .map(|((id, have), want)| ReconcileResult {
                        id,
                        status: match have {
                            None => ReconcileStatus::Missing,
                            Some(h) if h == want => ReconcileStatus::Present,
                            Some(_) => ReconcileStatus::Different,
                        },
                    })
                    .collect();
                json_response(StatusCode::OK, &BatchResults { results })
            }
            Ok(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR, ErrorDetail::new("internal", "store answer count mismatch")),
            Err(e) => store_error(e),
        }
    }

    async fn get_event(&self, role: Role, id: &str) -> HttpResponse {
        if role == Role::Node {
            return forbidden();
        }
        let r = self.store.get(id).await;
        self.note_store(&r);
        match r {
            Ok(Some(ev)) if visible(role, &ev.event) => json_response(StatusCode::OK, &ev.to_wire()),
            Ok(_) => not_found(),
            Err(e) => store_error(e),
        }
    }

    async fn list_events(&self, role: Role, query: &str) -> HttpResponse {
        if role == Role::Node {
            return forbidden();
        }
        let mut f = Filter { limit: QUERY_LIMIT_DEFAULT, ..Filter::default() };
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_decode(v);
            let uuid = |field: &str| Uuid::try_parse(&v).map_err(|_| Box::new(bad_query(field, "must be a UUID")));
            let r = match k {
                "payee" => uuid("payee").map(|u| f.payee = Some(u)),
                "recipient" => uuid("recipient").map(|u| f.recipient = Some(u)),
                "payer" => uuid("payer").map(|u| f.payer = Some(u)),
                "since" => OffsetDateTime::parse(&v, &Rfc3339)
                    .map(|t| f.since = Some(t))
                    .map_err(|_| Box::new(bad_query("since", "must be an RFC 3339 timestamp"))),
                "after" => v.parse::<u64>().map(|a| f.after = a).map_err(|_| Box::new(bad_query("after", "must be a ledger_seq"))),
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=QUERY_LIMIT_MAX).contains(&n) => {
                        f.limit = n;
                        Ok(())
                    }
                    _ => Err(Box::new(bad_query("limit", &format!("must be 1 to {QUERY_LIMIT_MAX}")))),
                },
                other => Err(Box::new(bad_query(other, "unknown parameter"))),
            };
            if let Err(resp) = r {
                return *resp;
            }
        }
        if let Role::Merchant(own) = role {
            match f.payee {
                // Asking for another payee's events: not found, like an unknown id.
                Some(p) if p != own => return not_found(),
                _ => f.payee = Some(own),
            }
        }
        let r = self.store.query(f.clone()).await;
        self.note_store(&r);
        match r {
            Ok(page) => {
                let (events, next_after) = (page.events, page.next_after);
                #[derive(Serialize)]
                struct Page {
                    events: Vec<common::wire::LedgerEvent>,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    next_after: Option<u64>,
                }
                json_response(StatusCode::OK, &Page { events: events.iter().map(|e| e.to_wire()).collect(), next_after })
            }
            Err(e) => store_error(e),
        }
    }

    async fn stats(&self) -> HttpResponse {
        let r = self.store.stats().await;
        self.note_store(&r);
        match r {
            Ok(s) => json_response(StatusCode::OK, &s),
            Err(e) => store_error(e),
        }
    }
}

/// Parses one `{"seq":…,"received_at":…,"event":{…}}` entry; on failure the id
/// (if one can be read) and the error.
/// A batch's two fields, taken out of the parsed JSON without copying the events.
struct RawBatch<'a> {
    node: String,
    events: Vec<Json<'a>>,
}

impl<'a> RawBatch<'a> {
    /// `{"node": string, "events": [..]}` and nothing else (the messages are
    /// serde's for the same mistakes).
    fn from_json(v: Json<'a>) -> Result<RawBatch<'a>, String> {
        if let Some(k) = v.unknown_key(&["node", "events"]) {
            return Err(format!("unknown field `{k}`, expected `node` or `events`"));
        }
        let Json::Object(members) = v else { return Err("invalid type: expected a batch object".into()) };
        let (mut node, mut events) = (None, None);
        for (k, v) in members {
            match &*k {
                "node" => node = Some(v),
                _ => events = Some(v), // `events`: any other key was refused above
            }
        }
        let node = match node {
            Some(Json::Str(s)) => s.into_owned(),
            Some(_) => return Err("node: invalid type, expected a string".into()),
            None => return Err("missing field `node`".into()),
        };
        let events = match events {
            Some(Json::Array(a)) => a,
            Some(_) => return Err("events: invalid type, expected an array".into()),
            None => return Err("missing field `events`".into()),
        };
        Ok(RawBatch { node, events })
    }
}

fn parse_entry(entry: &Json<'_>) -> Result<IncomingEvent, (String, ErrorDetail)> {
    // The id a refusal names (made only for a refusal).
    let id = || {
        entry
            .get("event")
            .and_then(|e| e.get("id"))
            .and_then(|i| i.as_str())
            .map(|s| spool_format::truncate(s, spool_format::ID_BYTES_MAX).to_owned())
            .unwrap_or_default()
    };
    let fail = |field: &str, msg: String| (id(), ErrorDetail::new("invalid_event", msg).with_field(field));
    if entry.members().is_none() {
        return Err(fail("events", "each entry must be an object".into()));
    }
    if let Some(k) = entry.unknown_key(&["seq", "received_at", "event"]) {
        return Err(fail(k, format!("{k}: unknown field")));
    }
    let node_seq = entry
        .get("seq")
        .and_then(|s| s.as_u64())
        .filter(|s| i64::try_from(*s).is_ok())
        .ok_or_else(|| fail("seq", "seq: must be a non-negative integer below 2^63".into()))?;
    let received_at = entry
        .get("received_at")
        .and_then(|s| s.as_str())
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        .ok_or_else(|| fail("received_at", "received_at: must be an RFC 3339 timestamp".into()))?;
    let raw = entry.get("event").ok_or_else(|| fail("event", "event: required".into()))?;
    let event = Event::from_json(raw).map_err(|e| fail(&e.field, e.to_string()))?;
    Ok(IncomingEvent { node_seq, received_at, event })
}

/// 64 hex digits (either case) to 32 bytes.
fn decode_digest(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let v = char::from(pair[0]).to_digit(16)? * 16 + char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(v).ok()?;
    }
    Some(out)
}

fn visible(role: Role, e: &Event) -> bool {
    match role {
        Role::Admin => true,
        Role::Merchant(p) => e.payee == p,
        Role::Node => false,
    }
}

/// A known path asked with another method is 405 naming the method it takes
/// (RFC 9110 §15.5.6), as spoold does; an unknown path is 404. The paths here
/// are the routes matched in `handle`.
fn wrong_method_or_not_found(path: &str) -> HttpResponse {
    let allow = match path {
        "/v1/batches" | "/v1/reconcile" => "POST",
        "/healthz" | "/readyz" | "/metrics" | "/v1/events" | "/v1/stats" => "GET",
        p if p.strip_prefix("/v1/events/").is_some() => "GET",
        _ => return not_found(),
    };
    let mut r = error_response(StatusCode::METHOD_NOT_ALLOWED, ErrorDetail::new("method_not_allowed", format!("use {allow}")));
    r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static(allow));
    r
}

fn not_found() -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, ErrorDetail::new("not_found", "not found"))
}

fn forbidden() -> HttpResponse {
    error_response(StatusCode::FORBIDDEN, ErrorDetail::new("forbidden", "this token's role may not do that"))
}

fn bad_query(field: &str, msg: &str) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, ErrorDetail::new("invalid_query", format!("{field}: {msg}")).with_field(field))
}

fn store_error(e: StoreError) -> HttpResponse {
    match e {
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %e, "store unavailable");
            with_retry_after(error_response(StatusCode::SERVICE_UNAVAILABLE, ErrorDetail::new("store_unavailable", e.to_string())), RETRY_AFTER_SECS)
        }
        other => {
            tracing::error!(error = %other, "store error");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, ErrorDetail::new("internal", "store error"))
        }
    }
}

/// Decodes `%XX` escapes in a query value or path segment. `+` stays `+`: no
/// value this API takes contains a space, and clients often leave the `+` of a
/// UTC offset unescaped.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 3 <= b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("2026-11-24T12%3A00%3A00%2B00%3A00"), "2026-11-24T12:00:00+00:00");
        assert_eq!(percent_decode("a+b%"), "a+b%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
