//! The PostgreSQL store, for several stateless ledgerd behind a load balancer.
//!
//! Schema (migrations in [`MIGRATIONS`], applied at first use under an advisory
//! lock and recorded in `schema_migrations`):
//!
//! ```text
//! ledger_events(ledger_seq bigint identity primary key, id text UNIQUE,
//!               digest bytea, node text, node_seq bigint, received_at timestamptz,
//!               recorded_at timestamptz default now(), payer/payee/recipient text,
//!               event text  -- canonical JSON)
//! ```
//!
//! A batch is written by ONE statement (one round trip, autocommit): an
//! `INSERT … SELECT FROM unnest($typed_arrays) ORDER BY ord ON CONFLICT (id) DO
//! NOTHING RETURNING id, ledger_seq` ([`IngestMethod::Unnest`]). The other
//! method, [`IngestMethod::Copy`] — `BEGIN`, a binary `COPY` into the session's
//! temporary staging table (`ledger_stage`, `ON COMMIT DELETE ROWS`, created
//! once per connection, not WAL-logged), one `INSERT … SELECT FROM ledger_stage
//! … ON CONFLICT (id) DO NOTHING RETURNING`, `COMMIT` — gives the same answers
//! and was slower in every measurement so far (docs/ledger.md); it stays
//! selectable to measure again. Only after the commit returned (durable, with
//! the default `synchronous_commit = on`) and only when some ids were already
//! there does a second statement read
//! their digests to tell `duplicate` from `conflict`: a new statement under
//! READ COMMITTED that sees every row a concurrent INSERT of the same id
//! committed (the unique index makes our INSERT wait for that transaction). So
//! two ledgerd recording the same id at the same moment give exactly one
//! `accepted`. Two batches holding the same ids in different orders can
//! deadlock on the unique index; PostgreSQL aborts one and it is retried (the
//! whole transaction rolled back, so a retry is a clean re-run).
//!
//! The URL is a libpq-style `postgres://` URL; ledgerd adds one parameter of its
//! own, `schema=NAME`, to keep its tables in a dedicated schema.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use spool_format::{Event, OffsetDateTime, Uuid};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

use crate::store::{outcomes, Filter, IncomingEvent, Outcome, Page, Store, StoreError, StoreStats, StoredEvent};

/// Connections per ledgerd process. 16: enough to keep a few batches and reads
/// in flight per core; PostgreSQL's default `max_connections` (100) then allows
/// about six ledgerd.
pub const POOL_CONNECTIONS_MAX: usize = 16;
/// How long a request waits for a connection (or for a new one to be made)
/// before the store is reported unavailable (503): well under a forwarder's
/// request timeout (10 s by default).
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(3);

/// Attempts of a batch whose transaction PostgreSQL aborted as a deadlock
/// victim (two batches inserting the same ids in different orders) before the
/// store reports it unavailable (503, the forwarder retries later).
pub const DEADLOCK_ATTEMPTS_MAX: u32 = 5;

/// How a batch is written; [`IngestMethod::Unnest`] is what ledgerd uses (the
/// faster here: see docs/ledger.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestMethod {
    /// Binary `COPY` into the session's staging table, one `INSERT … SELECT …
    /// ON CONFLICT DO NOTHING RETURNING`, `COMMIT`.
    Copy,
    /// One `INSERT … SELECT FROM unnest($typed_arrays) … ON CONFLICT DO NOTHING
    /// RETURNING` in autocommit.
    Unnest,
}

/// Schema migrations, applied in order; never edit one that has shipped.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE ledger_events (
        ledger_seq  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id          text NOT NULL,
        digest      bytea NOT NULL,
        node        text NOT NULL,
        node_seq    bigint NOT NULL,
        received_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        payer       text NOT NULL,
        payee       text NOT NULL,
        recipient   text NOT NULL,
        event       text NOT NULL
    );
    CREATE UNIQUE INDEX ledger_events_id ON ledger_events (id);
    CREATE INDEX ledger_events_payee ON ledger_events (payee, ledger_seq);
    CREATE INDEX ledger_events_recipient ON ledger_events (recipient, ledger_seq);
    CREATE INDEX ledger_events_payer ON ledger_events (payer, ledger_seq);",
)];

/// Key of the advisory lock held while migrating (any constant; "offgrid").
const MIGRATION_LOCK_KEY: i64 = 0x006f_6666_6772_6964;

const INSERT_UNNEST_SQL: &str = "INSERT INTO ledger_events
        (id, digest, node, node_seq, received_at, payer, payee, recipient, event)
    SELECT u.id, u.digest, $1, u.node_seq,
           timestamptz 'epoch' + u.received_us * interval '1 microsecond',
           u.payer, u.payee, u.recipient, u.event
    FROM unnest($2::text[], $3::bytea[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[])
         WITH ORDINALITY AS u(id, digest, node_seq, received_us, payer, payee, recipient, event, ord)
    ORDER BY u.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id, ledger_seq";

/// The per-session staging table a batch is copied into. Temporary (never
/// WAL-logged, invisible to other sessions) and emptied at every commit or
/// rollback; created once per pooled connection, at its first COPY batch.
const STAGE_DDL: &str = "CREATE TEMPORARY TABLE IF NOT EXISTS ledger_stage (
        ord         int4 NOT NULL,
        id          text NOT NULL,
        digest      bytea NOT NULL,
        node_seq    int8 NOT NULL,
        received_us int8 NOT NULL,
        payer       text NOT NULL,
        payee       text NOT NULL,
        recipient   text NOT NULL,
        event       text NOT NULL
    ) ON COMMIT DELETE ROWS";

const STAGE_COPY_SQL: &str = "COPY pg_temp.ledger_stage
    (ord, id, digest, node_seq, received_us, payer, payee, recipient, event) FROM STDIN (FORMAT binary)";

/// Column types of [`STAGE_COPY_SQL`], in order.
const STAGE_TYPES: [Type; 9] =
    [Type::INT4, Type::TEXT, Type::BYTEA, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT];

const INSERT_STAGED_SQL: &str = "INSERT INTO ledger_events
        (id, digest, node, node_seq, received_at, payer, payee, recipient, event)
    SELECT s.id, s.digest, $1, s.node_seq,
           timestamptz 'epoch' + s.received_us * interval '1 microsecond',
           s.payer, s.payee, s.recipient, s.event
    FROM pg_temp.ledger_stage s
    ORDER BY s.ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id, ledger_seq";

const SELECT_COLUMNS: &str = "ledger_seq, node, node_seq,
    (extract(epoch from received_at) * 1000000)::int8,
    (extract(epoch from recorded_at) * 1000000)::int8, digest, event";

/// PostgreSQL store; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    method: IngestMethod,
    schema: Option<String>,
    migrated: std::sync::Arc<AtomicBool>,
    migrate_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

fn pg_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("postgres: {e}"))
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} does not fit a bigint")))
}

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is negative")))
}

/// Splits ledgerd's own `schema=` parameter off a postgres URL.
fn split_schema(url: &str) -> Result<(String, Option<String>), StoreError> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), None)) };
    let mut schema = None;
    let mut rest = Vec::new();
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("schema", v)) => schema = Some(v.to_owned()),
            _ => rest.push(kv),
        }
    }
    if let Some(s) = &schema {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !s.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(StoreError::Config(format!("schema {s:?}: use 1 to 63 of [a-z0-9_], not starting with a digit")));
        }
    }
    let base = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    Ok((base, schema))
}

/// Checks a postgres store URL without connecting (for config validation).
pub fn check_url(url: &str) -> Result<(), StoreError> {
    let (base, _) = split_schema(url)?;
    base.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| StoreError::Config(format!("postgres url: {e}")))
}

fn row_to_event(row: &tokio_postgres::Row) -> Result<StoredEvent, StoreError> {
    let ledger_seq: i64 = row.try_get(0).map_err(pg_err)?;
    let node: String = row.try_get(1).map_err(pg_err)?;
    let node_seq: i64 = row.try_get(2).map_err(pg_err)?;
    let received_us: i64 = row.try_get(3).map_err(pg_err)?;
    let recorded_us: i64 = row.try_get(4).map_err(pg_err)?;
    let digest: Vec<u8> = row.try_get(5).map_err(pg_err)?;
    let text: String = row.try_get(6).map_err(pg_err)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("row {ledger_seq}: {e}")))?;
    let event = Event::from_json_value(&value)
        .map_err(|e| StoreError::Corrupt(format!("row {ledger_seq}: event invalid: {e}")))?;
    // Pair assertion: the stored digest must be the digest of the event read back.
    if event.digest().as_slice() != digest.as_slice() {
        return Err(StoreError::Corrupt(format!("row {ledger_seq}: digest mismatch")));
    }
    Ok(StoredEvent {
        ledger_seq: to_u64(ledger_seq, "ledger_seq")?,
        node,
        node_seq: to_u64(node_seq, "node_seq")?,
        received_at: from_micros(received_us)?,
        recorded_at: from_micros(recorded_us)?,
        event,
    })
}

impl PgStore {
    /// Builds the pool; connects lazily (on first use), so that ledgerd starts
    /// and reports 503 while PostgreSQL is down, and recovers by itself.
    pub fn new(url: &str) -> Result<PgStore, StoreError> {
        let (base, schema) = split_schema(url)?;
        let mut cfg: tokio_postgres::Config =
            base.parse().map_err(|e| StoreError::Config(format!("postgres url: {e}")))?;
        // Connecting to a host that blackholes packets must not hang a request.
        cfg.connect_timeout(POOL_WAIT_TIMEOUT);
        if let Some(s) = &schema {
            // Keep the URL's own `options=` (they used to be replaced).
            let prior = cfg.get_options().map(|o| format!("{o} ")).unwrap_or_default();
            cfg.options(format!("{prior}-c search_path={s}"));
        }
        let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(POOL_CONNECTIONS_MAX)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(POOL_WAIT_TIMEOUT))
            .recycle_timeout(Some(POOL_WAIT_TIMEOUT))
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move { require_synchronous_commit(client).await.map_err(HookError::Backend) })
            }))
            .build()
            .map_err(|e| StoreError::Config(format!("postgres pool: {e}")))?;
        Ok(PgStore {
            pool,
            method: IngestMethod::Unnest,
            schema,
            migrated: std::sync::Arc::new(AtomicBool::new(false)),
            migrate_lock: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The same store writing batches with `method` (for measurements).
    pub fn with_ingest_method(mut self, method: IngestMethod) -> PgStore {
        self.method = method;
        self
    }

    /// The schema named by the URL's `schema=` parameter, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.pool.get().await.map_err(pg_err)?;
        if !self.migrated.load(Ordering::Acquire) {
            self.migrate(&client).await?;
        }
        Ok(client)
    }

    /// Applies missing migrations, under an advisory lock so that several
    /// ledgerd starting together do not race.
    async fn migrate(&self, client: &deadpool_postgres::Object) -> Result<(), StoreError> {
        let _g = self.migrate_lock.lock().await;
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        client.batch_execute("BEGIN").await.map_err(pg_err)?;
        let result = async {
            client.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY]).await.map_err(pg_err)?;
            if let Some(s) = &self.schema {
                client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}")).await.map_err(pg_err)?;
            }
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                        version integer PRIMARY KEY,
                        applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await
                .map_err(pg_err)?;
            let rows = client.query("SELECT version FROM schema_migrations", &[]).await.map_err(pg_err)?;
            let done: Vec<i32> = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
            for (version, sql) in MIGRATIONS {
                if done.contains(version) {
                    continue;
                }
                tracing::info!(version, "applying ledger schema migration");
                client.batch_execute(sql).await.map_err(pg_err)?;
                client
                    .execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version])
                    .await
                    .map_err(pg_err)?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        match result {
            Ok(()) => {
                client.batch_execute("COMMIT").await.map_err(pg_err)?;
                self.migrated.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    /// Drops the store's schema (tests clean up with this). Refuses without a
    /// `schema=` parameter, so it can never drop the default schema.
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let Some(s) = &self.schema else {
            return Err(StoreError::Config("drop_schema needs a schema= parameter".into()));
        };
        let client = self.pool.get().await.map_err(pg_err)?;
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE")).await.map_err(pg_err)?;
        self.migrated.store(false, Ordering::Release);
        Ok(())
    }
}

/// A 200 promises the batch is durable: a session whose `synchronous_commit`
/// is `off` (set on the database, the role or the URL's `options=`) could
/// answer before the commit's WAL is flushed, so it is turned back `on` for
/// ledgerd's sessions. `local`, `remote_write`, `on` and `remote_apply` all
/// flush locally first and are left as the administrator set them.
async fn require_synchronous_commit(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let v: String = client.query_one("SHOW synchronous_commit", &[]).await?.try_get(0)?;
    if v == "off" {
        tracing::warn!("synchronous_commit is off for ledgerd's database session; setting it on (a 200 means durable)");
        client.batch_execute("SET synchronous_commit = on").await?;
    }
    Ok(())
}

/// The first entry of each distinct id of a batch, as written. It borrows the
/// batch's ids and digests; the parties' text and the event's JSON are ranges
/// of [`Staged::text`], so staging a batch allocates a few buffers, not
/// several strings per row.
struct StagedRow<'a> {
    ord: i32,
    id: &'a str,
    digest: &'a [u8],
    node_seq: i64,
    received_us: i64,
    /// payer, payee, recipient (hyphenated, lower case), event JSON.
    text: [std::ops::Range<usize>; 4],
}

/// The rows of a batch, the text they point into, and the index of the
/// first entry of each id.
struct Staged<'a> {
    rows: Vec<StagedRow<'a>>,
    text: String,
    first: IdMap<'a, usize>,
}

impl<'a> Staged<'a> {
    /// Stages the first entry of each distinct id.
    fn new(events: &'a [IncomingEvent], digests: &'a [[u8; 32]]) -> Result<Staged<'a>, StoreError> {
        let mut first = IdMap::default();
        first.reserve(events.len());
        let mut rows = Vec::with_capacity(events.len());
        let mut buf: Vec<u8> = Vec::with_capacity(events.len() * 512);
        for (i, ev) in events.iter().enumerate() {
            let e = &ev.event;
            match first.entry(e.id.as_str()) {
                Entry::Occupied(_) => continue,
                Entry::Vacant(v) => v.insert(i),
            };
            let mut text: [std::ops::Range<usize>; 4] = Default::default();
            for (k, party) in [e.payer, e.payee, e.recipient].iter().enumerate() {
                let at = buf.len();
                buf.extend_from_slice(party.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
                text[k] = at..buf.len();
            }
            let at = buf.len();
            // The SPEC §1 shape, straight from the event (a value tree per
            // event was a tenth of ledgerd's CPU).
            serde_json::to_writer(&mut buf, e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            text[3] = at..buf.len();
            rows.push(StagedRow {
                ord: i32::try_from(i).map_err(|_| StoreError::Corrupt(format!("batch of {} entries", events.len())))?,
                id: e.id.as_str(),
                digest: &digests[i],
                node_seq: to_i64(ev.node_seq, "node_seq")?,
                received_us: micros(ev.received_at),
                text,
            });
        }
        let text = String::from_utf8(buf).map_err(|e| StoreError::Corrupt(format!("staged text: {e}")))?;
        Ok(Staged { rows, text, first })
    }

    fn text(&self, r: &StagedRow<'_>, k: usize) -> &str {
        &self.text[r.text[k].clone()]
    }
}

/// A map keyed by event id for one batch (see the `rustc-hash` note in the
/// workspace manifest).
type IdMap<'a, V> = HashMap<&'a str, V, rustc_hash::FxBuildHasher>;

/// COPY into the staging table, one INSERT from it, COMMIT: returns the rows
/// inserted (`id`, `ledger_seq`) once the transaction is committed.
async fn insert_copy(
    client: &mut deadpool_postgres::Object,
    node: &str,
    staged: &Staged<'_>,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    // Preparing the INSERT (cached per connection) fails only while this
    // session has no staging table yet: create it once, outside the
    // transaction, so that ledgerd's role needs the TEMPORARY privilege only
    // when this method is chosen.
    let insert = match client.prepare_cached(INSERT_STAGED_SQL).await {
        Ok(stmt) => stmt,
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
            client.batch_execute(STAGE_DDL).await?;
            client.prepare_cached(INSERT_STAGED_SQL).await?
        }
        Err(e) => return Err(e),
    };
    let copy = client.prepare_cached(STAGE_COPY_SQL).await?;
    let tx = client.transaction().await?;
    let sink = tx.copy_in(&copy).await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &STAGE_TYPES));
    for r in &staged.rows {
        let (payer, payee, recipient, event) = (staged.text(r, 0), staged.text(r, 1), staged.text(r, 2), staged.text(r, 3));
        writer
            .as_mut()
            .write(&[&r.ord, &r.id, &r.digest, &r.node_seq, &r.received_us, &payer, &payee, &recipient, &event])
            .await?;
    }
    writer.finish().await?;
    let out = tx.query(&insert, &[&node]).await?;
    tx.commit().await?;
    Ok(out)
}

/// One INSERT from `unnest` of typed arrays, autocommit (ledgerd's method):
/// returns the rows inserted (`id`, `ledger_seq`).
async fn insert_unnest(
    client: &deadpool_postgres::Object,
    node: &str,
    staged: &Staged<'_>,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let rows = &staged.rows;
    let text = |k: usize| rows.iter().map(|r| staged.text(r, k)).collect::<Vec<&str>>();
    let ids: Vec<&str> = rows.iter().map(|r| r.id).collect();
    let digests: Vec<&[u8]> = rows.iter().map(|r| r.digest).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.node_seq).collect();
    let recv: Vec<i64> = rows.iter().map(|r| r.received_us).collect();
    let stmt = client.prepare_cached(INSERT_UNNEST_SQL).await?;
    client
        .query(&stmt, &[&node, &ids, &digests, &seqs, &recv, &text(0), &text(1), &text(2), &text(3)])
        .await
}

impl Store for PgStore {
    async fn record_batch(&self, node: &str, events: Vec<IncomingEvent>) -> Result<Vec<Outcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let digests: Vec<[u8; 32]> = events.iter().map(|e| e.event.digest()).collect();
        // First entry of each distinct id goes to the INSERT; later ones are
        // judged against whatever the store holds afterwards.
        let staged = Staged::new(&events, &digests)?;
        let first = &staged.first;
        let mut client = self.client().await?;
        let mut attempt = 1;
        let inserted = loop {
            let r = match self.method {
                IngestMethod::Copy => insert_copy(&mut client, node, &staged).await,
                IngestMethod::Unnest => insert_unnest(&client, node, &staged).await,
            };
            match r {
                Ok(v) => break v,
                Err(e) if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) && attempt < DEADLOCK_ATTEMPTS_MAX => {
                    tracing::debug!(attempt, "batch was a deadlock victim; retrying");
                    attempt += 1;
                }
                Err(e) => return Err(pg_err(e)),
            }
        };
        // By the index of the first entry of each id: what the store holds
        // (digest, ledger_seq) and whether this batch's insert created it.
        let mut stored: Vec<Option<([u8; 32], u64)>> = vec![None; events.len()];
        let mut created = vec![false; events.len()];
        let index_of = |id: &str| {
            first.get(id).copied().ok_or_else(|| StoreError::Corrupt(format!("the database returned id {id:?}, not in the batch")))
        };
        for row in &inserted {
            let i = index_of(row.try_get::<_, &str>(0).map_err(pg_err)?)?;
            stored[i] = Some((digests[i], to_u64(row.try_get(1).map_err(pg_err)?, "ledger_seq")?));
            created[i] = true;
        }
        let missing: Vec<&str> =
            staged.rows.iter().filter(|r| usize::try_from(r.ord).is_ok_and(|i| !created[i])).map(|r| r.id).collect();
        if !missing.is_empty() {
            let stmt = client
                .prepare_cached("SELECT id, digest, ledger_seq FROM ledger_events WHERE id = ANY($1)")
                .await
                .map_err(pg_err)?;
            for r in client.query(&stmt, &[&missing]).await.map_err(pg_err)? {
                let i = index_of(r.try_get::<_, &str>(0).map_err(pg_err)?)?;
                let d: &[u8] = r.try_get(1).map_err(pg_err)?;
                let d: [u8; 32] = d.try_into().map_err(|_| StoreError::Corrupt(format!("digest of {:?} is not 32 bytes", events[i].event.id)))?;
                stored[i] = Some((d, to_u64(r.try_get(2).map_err(pg_err)?, "ledger_seq")?));
            }
        }
        let first_of = |i: usize| first.get(events[i].event.id.as_str()).copied();
        outcomes(&digests, |i| first_of(i).and_then(|f| stored[f]), |i| first_of(i) == Some(i) && created[i])
    }

    async fn get(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {SELECT_COLUMNS} FROM ledger_events WHERE id = $1");
        let stmt = client.prepare_cached(&sql).await.map_err(pg_err)?;
        match client.query_opt(&stmt, &[&id]).await.map_err(pg_err)? {
            None => Ok(None),
            Some(r) => Ok(Some(row_to_event(&r)?)),
        }
    }

    async fn query(&self, f: Filter) -> Result<Page, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM ledger_events
             WHERE ($1::text IS NULL OR payee = $1)
               AND ($2::text IS NULL OR recipient = $2)
               AND ($3::text IS NULL OR payer = $3)
               AND ($4::int8 IS NULL OR recorded_at >= timestamptz 'epoch' + $4 * interval '1 microsecond')
               AND ledger_seq > $5
             ORDER BY ledger_seq LIMIT $6"
        );
        let stmt = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let s = |u: Option<Uuid>| u.map(|u| u.to_string());
        let since = f.since.map(micros);
        let after = to_i64(f.after, "after")?;
        let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&s(f.payee), &s(f.recipient), &s(f.payer), &since, &after, &limit])
            .await
            .map_err(pg_err)?;
        let events: Vec<StoredEvent> = rows.iter().map(row_to_event).collect::<Result<_, _>>()?;
        let next_after = if events.len() >= f.limit { events.last().map(|e| e.ledger_seq) } else { None };
        Ok(Page { events, next_after })
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one("SELECT count(*)::int8, coalesce(max(ledger_seq), 0)::int8 FROM ledger_events", &[])
            .await
            .map_err(pg_err)?;
        let events: i64 = r.try_get(0).map_err(pg_err)?;
        let max: i64 = r.try_get(1).map_err(pg_err)?;
        Ok(StoreStats { backend: "postgres", events: to_u64(events, "count")?, ledger_seq_max: to_u64(max, "ledger_seq")? })
    }

    async fn digests(&self, ids: Vec<String>) -> Result<Vec<Option<[u8; 32]>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT id, digest FROM ledger_events WHERE id = ANY($1)")
            .await
            .map_err(pg_err)?;
        let mut found: HashMap<String, [u8; 32]> = HashMap::with_capacity(ids.len());
        for r in client.query(&stmt, &[&ids]).await.map_err(pg_err)? {
            let id: String = r.try_get(0).map_err(pg_err)?;
            let d: Vec<u8> = r.try_get(1).map_err(pg_err)?;
            let d: [u8; 32] =
                d.as_slice().try_into().map_err(|_| StoreError::Corrupt(format!("digest of {id:?} is not 32 bytes")))?;
            found.insert(id, d);
        }
        Ok(ids.iter().map(|id| found.get(id).copied()).collect())
    }

    async fn health(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_split_and_checked() {
        let (b, s) = split_schema("postgres://u@h/db?schema=t_1&sslmode=disable").expect("ok");
        assert_eq!(b, "postgres://u@h/db?sslmode=disable");
        assert_eq!(s.as_deref(), Some("t_1"));
        assert_eq!(split_schema("postgres://u@h/db").expect("ok"), ("postgres://u@h/db".to_owned(), None));
        assert!(split_schema("postgres://u@h/db?schema=x;drop").is_err());
        assert!(split_schema("postgres://u@h/db?schema=1x").is_err());
    }

    fn event(id: &str, amount: u64) -> Event {
        Event::from_json_value(&serde_json::json!({
            "id": id, "kind": "gift", "amount": amount, "currency": "L$",
            "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
            "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
            "recipient": "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0",
            "occurred_at": "2026-11-24T12:00:00Z"
        }))
        .expect("valid event")
    }

    /// A store in a fresh schema of the test database. The database must be
    /// reachable (`OFFGRID_PG_URL`, default the local `test` database): the
    /// PostgreSQL store is part of the product, so its tests are not optional.
    pub(crate) fn test_url(tag: &str) -> String {
        let base = std::env::var("OFFGRID_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}schema=t_{tag}_{}_{}", std::process::id(), nanos % 1_000_000_000)
    }

    #[tokio::test]
    async fn digests_are_those_of_the_recorded_events() {
        let store = PgStore::new(&test_url("pgdig")).expect("store");
        store.health().await.expect("postgres reachable (set OFFGRID_PG_URL)");
        let (a, b) = (event("a", 1), event("b", 2));
        let inc = |e: &Event| IncomingEvent { node_seq: 1, received_at: OffsetDateTime::now_utc(), event: e.clone() };
        store.record_batch("n1", vec![inc(&a), inc(&b)]).await.expect("batch");
        let got = store.digests(vec!["b".into(), "nope".into(), "a".into()]).await.expect("digests");
        assert_eq!(got, vec![Some(b.digest()), None, Some(a.digest())]);
        store.drop_schema().await.expect("drop schema");
    }

    #[tokio::test]
    async fn two_stores_on_one_database_record_each_id_once() {
        let url = test_url("pg2");
        let a = PgStore::new(&url).expect("store a");
        let b = PgStore::new(&url).expect("store b");
        a.health().await.expect("postgres reachable (set OFFGRID_PG_URL)");
        let ids: Vec<String> = (0..200).map(|i| format!("ev-{i}")).collect();
        let batch = |node_seq: u64| {
            ids.iter().map(|id| IncomingEvent { node_seq, received_at: OffsetDateTime::now_utc(), event: event(id, 5) }).collect::<Vec<_>>()
        };
        let (ra, rb) = tokio::join!(a.record_batch("n1", batch(1)), b.record_batch("n2", batch(2)));
        let (ra, rb) = (ra.expect("a"), rb.expect("b"));
        for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
            match (x, y) {
                (Outcome::Accepted { ledger_seq: s1 }, Outcome::Duplicate { ledger_seq: s2 })
                | (Outcome::Duplicate { ledger_seq: s2 }, Outcome::Accepted { ledger_seq: s1 }) => assert_eq!(s1, s2),
                other => panic!("id {i}: want one accepted and one duplicate, got {other:?}"),
            }
        }
        // Same id, different event: conflict, nothing changes. Repeats inside a batch.
        let r = b
            .record_batch("n2", vec![
                IncomingEvent { node_seq: 9, received_at: OffsetDateTime::now_utc(), event: event("ev-0", 6) },
                IncomingEvent { node_seq: 10, received_at: OffsetDateTime::now_utc(), event: event("new-1", 1) },
                IncomingEvent { node_seq: 11, received_at: OffsetDateTime::now_utc(), event: event("new-1", 1) },
                IncomingEvent { node_seq: 12, received_at: OffsetDateTime::now_utc(), event: event("new-1", 2) },
            ])
            .await
            .expect("batch");
        assert!(matches!(r[0], Outcome::Conflict { .. }), "{r:?}");
        let Outcome::Accepted { ledger_seq } = r[1] else { panic!("{r:?}") };
        assert_eq!(r[2], Outcome::Duplicate { ledger_seq });
        assert_eq!(r[3], Outcome::Conflict { ledger_seq });
        let st = a.stats().await.expect("stats");
        assert_eq!(st.events, 201);
        let got = a.get("ev-0").await.expect("get").expect("present");
        assert_eq!(got.event.amount, 5, "a conflict never overwrites");
        let q = a
            .query(Filter { recipient: Uuid::parse_str("4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0").ok(), limit: 1000, ..Filter::default() })
            .await
            .expect("query");
        assert_eq!(q.events.len(), 201);
        assert!(q.events.windows(2).all(|w| w[0].ledger_seq < w[1].ledger_seq));
        let q = a.query(Filter { payer: Some(Uuid::nil()), limit: 10, ..Filter::default() }).await.expect("query");
        assert!(q.events.is_empty());
        a.drop_schema().await.expect("cleanup");
    }

    /// Two stores writing the same ids in opposite orders at once: the unique
    /// index makes them wait on each other, PostgreSQL aborts one as a deadlock
    /// victim, and the retry must turn that into duplicates, never an error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opposite_orders_on_two_stores_record_each_id_once_without_error() {
        let url = test_url("pgdl");
        let a = PgStore::new(&url).expect("store a");
        let b = PgStore::new(&url).expect("store b");
        a.health().await.expect("postgres reachable (set OFFGRID_PG_URL)");
        for round in 0..20 {
            let method = if round % 2 == 0 { IngestMethod::Unnest } else { IngestMethod::Copy };
            let (a, b) = (a.clone().with_ingest_method(method), b.clone().with_ingest_method(method));
            let ids: Vec<String> = (0..100).map(|i| format!("r{round}-{i}")).collect();
            let mk = |ids: &mut dyn Iterator<Item = &String>| {
                ids.map(|id| IncomingEvent { node_seq: 1, received_at: OffsetDateTime::now_utc(), event: event(id, 3) })
                    .collect::<Vec<_>>()
            };
            let fwd = mk(&mut ids.iter());
            let rev = mk(&mut ids.iter().rev());
            let (ra, rb) = tokio::join!(a.record_batch("n1", fwd), b.record_batch("n2", rev));
            let (ra, rb) = (ra.expect("a never fails"), rb.expect("b never fails"));
            let accepted = ra.iter().chain(&rb).filter(|o| matches!(o, Outcome::Accepted { .. })).count();
            let duplicate = ra.iter().chain(&rb).filter(|o| matches!(o, Outcome::Duplicate { .. })).count();
            assert_eq!((accepted, duplicate), (100, 100), "round {round}");
        }
        assert_eq!(a.stats().await.expect("stats").events, 2000);
        a.drop_schema().await.expect("cleanup");
    }

    /// Both ingest methods give the same answers for the same batches (the
    /// other tests use the default, unnest).
    #[tokio::test]
    async fn copy_method_keeps_the_same_semantics() {
        let url = test_url("pgcp");
        let a = PgStore::new(&url).expect("store").with_ingest_method(IngestMethod::Copy);
        a.health().await.expect("postgres reachable (set OFFGRID_PG_URL)");
        let inc = |id: &str, amount: u64| IncomingEvent { node_seq: 1, received_at: OffsetDateTime::now_utc(), event: event(id, amount) };
        let r = a.record_batch("n", vec![inc("u-1", 1), inc("u-1", 1), inc("u-1", 2)]).await.expect("batch");
        let Outcome::Accepted { ledger_seq } = r[0] else { panic!("{r:?}") };
        assert_eq!(&r[1..], &[Outcome::Duplicate { ledger_seq }, Outcome::Conflict { ledger_seq }]);
        let c = PgStore::new(&url).expect("store");
        let r = c.record_batch("m", vec![inc("u-2", 1), inc("u-1", 2), inc("u-1", 1)]).await.expect("batch");
        assert!(matches!(r[0], Outcome::Accepted { .. }), "{r:?}");
        assert_eq!(&r[1..], &[Outcome::Conflict { ledger_seq }, Outcome::Duplicate { ledger_seq }]);
        assert!(c.record_batch("m", Vec::new()).await.expect("empty batch").is_empty());
        a.drop_schema().await.expect("cleanup");
    }

    /// `synchronous_commit = off` from the URL (as it could come from the
    /// database's or role's settings) is turned back on in ledgerd's sessions,
    /// and the URL's other options (here `application_name`) are kept next to
    /// the `search_path` of `schema=`.
    #[tokio::test]
    async fn synchronous_commit_off_is_turned_on() {
        let url = test_url("pgsc").replace("?schema=", "?options=-c%20synchronous_commit%3Doff%20-c%20application_name%3Dledgertest&schema=");
        let s = PgStore::new(&url).expect("store");
        s.health().await.expect("postgres reachable (set OFFGRID_PG_URL)");
        let client = s.client().await.expect("client");
        let show = |name: &'static str| {
            let client = &client;
            async move { client.query_one(&format!("SHOW {name}"), &[]).await.expect("show").get::<_, String>(0) }
        };
        assert_eq!(show("synchronous_commit").await, "on");
        assert_eq!(show("application_name").await, "ledgertest");
        assert!(show("search_path").await.starts_with("t_pgsc_"), "schema= still sets the search_path");
        drop(client);
        s.drop_schema().await.expect("cleanup");
    }

    #[tokio::test]
    async fn unreachable_database_is_unavailable_not_a_hang() {
        let s = PgStore::new("postgres://postgres@127.0.0.1:1/test").expect("store");
        let r = s.record_batch("n", vec![IncomingEvent { node_seq: 1, received_at: OffsetDateTime::now_utc(), event: event("x", 1) }]).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(s.health().await.is_err());
    }
}
