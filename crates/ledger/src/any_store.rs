//! The store chosen by URL scheme (`sled://` or `postgres://`). It lives
//! apart from `store.rs` so that the `Store` interface does not name its own
//! implementations (no module cycle: `store` ← `sled_store`/`pg_store` ← `any_store`).

use crate::store::{redact_url, Filter, IncomingEvent, Outcome, Page, Store, StoreError, StoreStats, StoredEvent};

/// One of the two stores, chosen by URL scheme.
pub enum AnyStore {
    Sled(crate::sled_store::SledStore),
    Postgres(crate::pg_store::PgStore),
}

impl std::fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnyStore::Sled(_) => f.write_str("AnyStore::Sled"),
            AnyStore::Postgres(_) => f.write_str("AnyStore::Postgres"),
        }
    }
}

impl AnyStore {
    /// Opens the store named by `url`: `sled:///path` or `postgres://…`.
    /// PostgreSQL is connected lazily: ledgerd starts (and answers 503) while
    /// the database is down.
    /// `accept_regression` opens a sled store that lost data anyway (the
    /// operator's explicit decision; see `SledStore::open`).
    pub fn open(url: &str, accept_regression: bool) -> Result<AnyStore, StoreError> {
        if let Some(path) = url.strip_prefix("sled://") {
            if path.is_empty() {
                return Err(StoreError::Config("sled:// needs a path, e.g. sled:///var/lib/ledgerd".into()));
            }
            Ok(AnyStore::Sled(crate::sled_store::SledStore::open(std::path::Path::new(path), accept_regression)?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(AnyStore::Postgres(crate::pg_store::PgStore::new(url)?))
        } else {
            Err(StoreError::Config(format!(
                "unsupported store url scheme in {:?} (use sled:///path or postgres://…)",
                redact_url(url)
            )))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            AnyStore::Sled(_) => "sled",
            AnyStore::Postgres(_) => "postgres",
        }
    }
}

impl Store for AnyStore {
    async fn record_batch(&self, node: &str, events: Vec<IncomingEvent>) -> Result<Vec<Outcome>, StoreError> {
        match self {
            AnyStore::Sled(s) => s.record_batch(node, events).await,
            AnyStore::Postgres(s) => s.record_batch(node, events).await,
        }
    }
    async fn get(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        match self {
            AnyStore::Sled(s) => s.get(id).await,
            AnyStore::Postgres(s) => s.get(id).await,
        }
    }
    async fn query(&self, filter: Filter) -> Result<Page, StoreError> {
        match self {
            AnyStore::Sled(s) => s.query(filter).await,
            AnyStore::Postgres(s) => s.query(filter).await,
        }
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        match self {
            AnyStore::Sled(s) => s.stats().await,
            AnyStore::Postgres(s) => s.stats().await,
        }
    }
    async fn digests(&self, ids: Vec<String>) -> Result<Vec<Option<[u8; 32]>>, StoreError> {
        match self {
            AnyStore::Sled(s) => s.digests(ids).await,
            AnyStore::Postgres(s) => s.digests(ids).await,
        }
    }
    async fn health(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Sled(s) => s.health().await,
            AnyStore::Postgres(s) => s.health().await,
        }
    }
}
