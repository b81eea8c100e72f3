//! ledgerd: the reference central ledger (SPEC §3). It takes batches forwarded
//! by edge spools, records each event idempotently by id, and serves reads to
//! admins and merchants.
//!
//! # Design
//! - [`server::Api`] is the HTTP API; it validates every event of a batch on its
//!   own (a bad one is `rejected`, the rest are recorded) and hands the valid
//!   ones to a [`store::Store`].
//! - Two stores behind that one trait: [`sled_store::SledStore`] (embedded,
//!   `sled:///path`, the default) and [`pg_store::PgStore`] (`postgres://…`,
//!   shared by several ledgerd processes).
//! - [`config::Config`] is the validated configuration (TOML + flags).
//!
//! # Invariants
//! - **Invariant:** no `200` to `POST /v1/batches` before every outcome in it is
//!   durable (sled flushed, PostgreSQL committed). A `duplicate` is only said of
//!   a durable record.
//! - **Invariant:** one id is recorded once: the first event recorded under an id
//!   wins; the same event again is `duplicate` (from any node), a different one
//!   `conflict`, and neither changes what is stored.
//! - **Invariant:** results are in input order, one per input entry.
//! - **Invariant:** no anonymous `/v1/` request; a merchant sees only events
//!   whose payee is its own, and cannot tell an unknown id from another payee's
//!   (both 404); a node token may only post batches (reads: 403). Token secrets
//!   are never logged.
//! - **Invariant:** sled's `flush_async` is never called.
//! - Bounded: body bytes, events per batch, connections, query page size, index
//!   entries scanned per query, database connections.

pub mod any_store;
pub mod config;
pub mod pg_store;
pub mod server;
pub mod sled_store;
pub mod store;

pub use config::{Config, ConfigError, Overrides, Role};
pub use any_store::AnyStore;
pub use store::{Filter, IncomingEvent, Outcome, Page, Store, StoreError, StoreStats, StoredEvent};
