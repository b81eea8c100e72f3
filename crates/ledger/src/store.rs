//! The store interface ledgerd speaks to, and the types crossing it.
//!
//! Two implementations: [`crate::sled_store::SledStore`] (embedded, default) and
//! [`crate::pg_store::PgStore`] (PostgreSQL, for several ledgerd behind a load
//! balancer). [`crate::any_store::AnyStore`] picks one from the `[store] url`.

use std::future::Future;

use spool_format::{Event, OffsetDateTime, Uuid};

/// One validated event of a forwarded batch.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    /// The event's seq in the forwarding node's spool.
    pub node_seq: u64,
    /// When the node accepted it.
    pub received_at: OffsetDateTime,
    pub event: Event,
}

/// What the store did with one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New id: recorded now under `ledger_seq`.
    Accepted { ledger_seq: u64 },
    /// Same id and same canonical event already recorded under `ledger_seq`.
    Duplicate { ledger_seq: u64 },
    /// Same id, a different event, recorded under `ledger_seq`; nothing written.
    Conflict { ledger_seq: u64 },
}

/// Read filter of `GET /v1/events`. Every set field must match (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub payee: Option<Uuid>,
    pub recipient: Option<Uuid>,
    pub payer: Option<Uuid>,
    /// Only events the ledger recorded at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Only events with `ledger_seq > after` (paging cursor).
    pub after: u64,
    /// At most this many events, in `ledger_seq` order.
    pub limit: usize,
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    /// Set when there may be more: pass it as `after` to continue.
    pub next_after: Option<u64>,
}

/// An event as stored, with its ledger bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub ledger_seq: u64,
    pub node: String,
    pub node_seq: u64,
    pub received_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
    pub event: Event,
}

impl StoredEvent {
    pub fn to_wire(&self) -> common::wire::LedgerEvent {
        common::wire::LedgerEvent {
            ledger_seq: self.ledger_seq,
            node: self.node.clone(),
            node_seq: self.node_seq,
            received_at: self.received_at,
            recorded_at: self.recorded_at,
            event: self.event.clone(),
        }
    }
}

/// Counts for `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Which backend ("sled" or "postgres").
    pub backend: &'static str,
    /// Events recorded.
    pub events: u64,
    /// Highest ledger_seq handed out so far (0 when empty).
    pub ledger_seq_max: u64,
}

/// Operating errors of a store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the operation for now (PostgreSQL
    /// down, pool exhausted, I/O error): the client should retry (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Data in the store does not decode or violates an invariant.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The store URL or options are invalid.
    #[error("store config: {0}")]
    Config(String),
    /// The store holds less than its state file says was made durable (or is
    /// another store's); ledgerd refuses to start (docs/operations.md).
    #[error("{0}")]
    Regressed(String),
}

/// The store interface. Every method is safe to call concurrently.
///
/// **Invariant:** when `record_batch` returns `Ok`, every outcome in it is
/// durable: the accepted events are on disk (sled flushed / PostgreSQL
/// committed), and a `duplicate` or `conflict` is only answered about a record
/// that is itself durable.
pub trait Store: Send + Sync + 'static {
    /// Records a batch; outcomes in input order. An id appearing twice in one
    /// batch is handled as if the entries came one after the other.
    fn record_batch(
        &self,
        node: &str,
        events: Vec<IncomingEvent>,
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;
    /// The event recorded under `id`.
    fn get(&self, id: &str) -> impl Future<Output = Result<Option<StoredEvent>, StoreError>> + Send;
    /// Events matching `filter`, in `ledger_seq` order.
    fn query(&self, filter: Filter) -> impl Future<Output = Result<Page, StoreError>> + Send;
    fn stats(&self) -> impl Future<Output = Result<StoreStats, StoreError>> + Send;
    /// The digest of the event recorded under each of `ids` (`None`: no such
    /// id), in input order. Reconciliation (`POST /v1/reconcile`).
    fn digests(&self, ids: Vec<String>) -> impl Future<Output = Result<Vec<Option<[u8; 32]>>, StoreError>> + Send;
    /// `Ok` when the store can serve reads and writes right now.
    fn health(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Decides the outcome of every entry of a batch, given for each distinct id
/// what the store holds (`existing`: digest and ledger_seq, after the write) and
/// which entry's insert created the record (`inserted_by`). Shared by both
/// stores so that they answer the same way.
///
/// `stored(i)` returns the digest and ledger_seq of the record under entry
/// `i`'s id; `created(i)` is true for the one entry whose insert created it.
pub fn outcomes(
    digests: &[[u8; 32]],
    stored: impl Fn(usize) -> Option<([u8; 32], u64)>,
    created: impl Fn(usize) -> bool,
) -> Result<Vec<Outcome>, StoreError> {
    digests
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (sd, ledger_seq) = stored(i).ok_or_else(|| {
                StoreError::Corrupt(format!("entry {i} of the batch has no record after the write"))
            })?;
            Ok(if created(i) {
                Outcome::Accepted { ledger_seq }
            } else if &sd == d {
                Outcome::Duplicate { ledger_seq }
            } else {
                Outcome::Conflict { ledger_seq }
            })
        })
        .collect()
}


/// A URL with any password replaced, safe to log.
pub fn redact_url(url: &str) -> String {
    // scheme://user:password@host/… -> scheme://user:***@host/…
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((creds, host)) = rest.split_once('@') else { return url.to_owned() };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

