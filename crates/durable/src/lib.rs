//! Durable commits for offgrid's sled 0.34.7 stores (the spool and ledgerd's
//! embedded store), and the guard that refuses to start a store that lost data.
//!
//! # What we assume of the media and the engine
//! - **`pwrite` survives a process crash (`kill -9`), not a power cut.** Written
//!   data sits in the kernel's page cache until the kernel writes it back.
//! - **Only `fsync`/`fdatasync` makes a write survive a power cut**: it writes
//!   the file's data *and* the metadata needed to read it back (its size, new
//!   extents) and flushes the device's volatile cache. A new directory entry
//!   (a file created or renamed) survives only after an `fsync` of its directory.
//! - **sled 0.34.7's `Db::flush()` is not an fsync.** On Linux it ends in `pwrite`
//!   plus `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`
//!   (`src/pagecache/iobuf.rs`), which starts and waits for write-back of the
//!   data pages but persists neither the file's metadata nor the device cache.
//!   sled calls `sync_all` only from its periodic flusher (which our stores turn
//!   off: it would be a second, uncoordinated flusher), at segment truncation,
//!   at recovery and on drop. Measured on a power-cut file system before this
//!   crate existed: 100% of the events acknowledged after `Db::flush()` were
//!   lost at a cut.
//! - **sled writes these files**: `db` (the log, rewritten in place), `conf`
//!   (written once at creation, without fsync), `snap.<lsn>` (written at open:
//!   `snap.<lsn>.generating`, `sync_all`, rename, removal of older snapshots; no
//!   fsync of the directory), and `blobs/<lsn>`: any log item larger than
//!   [`SLED_BLOB_THRESHOLD_BYTES`] (a quarter of the 512 KiB segment: a large
//!   value, or a tree node holding up to 17 large values) goes to a file of
//!   its own, written without any fsync (`blob_io.rs`).
//! - sled's log is sequential: recovery replays the longest valid prefix of it,
//!   so if a write is durable, every write sled logged before it is too.
//!
//! # The commit rule
//! [`Committer::commit`] is the only way a store acknowledges anything:
//! `Db::flush()` (everything applied so far reaches the files), then `fdatasync`
//! of every blob file written since the last commit and `fsync` of `blobs/`
//! (a log item must never be durable while the blob it points to is not), then
//! `fdatasync` of `db`. [`open`] fsyncs `conf`, `db`, the snapshots, `blobs/`
//! and the directories (the store's and its parent) once sled has opened, so
//! that files created or renamed at creation or at recovery are durable before
//! the first commit.
//!
//! **Invariant:** nothing calls sled's `flush_async` (it deadlocks under
//! concurrency); callers run [`Committer::commit`] from one thread at a time
//! (the spool's flusher thread; ledgerd's flush lock), covering many writers.
//!
//! # The regression guard
//! [`guard`] keeps a small fsynced, checksummed [`state`] file next to each
//! store: the store's identity (a random store id, also kept inside sled) and
//! the highest sequence number the store has made durable, advanced after
//! commits (at most every [`STATE_SYNC_INTERVAL`], so it costs one fsync a
//! second, not one a commit). At open, a store that holds less than its state
//! file says — the disk lied about an fsync, a backup was restored over it, a
//! file was lost — refuses to start ([`GuardError::Regressed`]), naming what is
//! missing, unless the operator accepts it explicitly; even then no sequence
//! number is reused.

pub mod state;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use state::{StateFile, StoreState};

/// sled's segment size, in bytes: sled 0.34.7's default, persisted in `conf`
/// at creation (so it cannot change for an existing store).
pub const SLED_SEGMENT_BYTES: usize = 512 * 1024;
/// A log item (a value, or a tree node with its values) over this many bytes
/// goes to its own file under `blobs/`: a quarter of a segment, less sled's
/// segment header (20 bytes) and largest message header (32 bytes).
pub const SLED_BLOB_THRESHOLD_BYTES: usize = SLED_SEGMENT_BYTES / 4 - 20 - 32;
/// How often, at most, the state file's high-water mark is advanced, in time.
/// One second: one extra fsync a second, however many commits; a loss of
/// anything acknowledged more than a second before it is always detected.
pub const STATE_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The key under which sled holds the store id (the state file holds it too).
/// Both stores reserve the `m` prefix for metadata.
pub const STORE_ID_KEY: &[u8] = b"mstore_id";

/// Errors of [`open`].
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("store is locked by another process (is the daemon running?): {0}")]
    Locked(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("sled: {0}")]
    Sled(sled::Error),
}

impl OpenError {
    /// The I/O error kind behind this error, if any (disk full, quota, …).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            OpenError::Io { source, .. } => Some(source.kind()),
            OpenError::Sled(sled::Error::Io(e)) => Some(e.kind()),
            _ => None,
        }
    }
}

/// A failed commit. After one, nothing may be acknowledged any more: a failed
/// fsync leaves the file's state on disk unknown (the kernel may have dropped
/// the dirty pages), so the store must be reopened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {message}")]
pub struct CommitError {
    pub what: &'static str,
    pub message: String,
    pub kind: Option<io::ErrorKind>,
}

impl CommitError {
    fn io(what: &'static str, e: &io::Error) -> CommitError {
        CommitError { what, message: e.to_string(), kind: Some(e.kind()) }
    }

    /// Whether the disk (or the quota) is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self.kind, Some(k) if is_no_space(k))
    }
}

/// Whether an I/O error kind means "no space": ENOSPC or EDQUOT.
pub fn is_no_space(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// Maps a sled error to its I/O kind, if it is an I/O error.
pub fn sled_io_kind(e: &sled::Error) -> Option<io::ErrorKind> {
    match e {
        sled::Error::Io(io) => Some(io.kind()),
        _ => None,
    }
}

/// Makes sled's writes durable; see the crate docs for the rule.
pub struct Committer {
    db: sled::Db,
    dir: PathBuf,
    db_file: File,
    /// Blob files already made durable, so each is synced once.
    blobs_synced: Mutex<BTreeSet<OsString>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").field("dir", &self.dir).finish()
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> OpenError {
    let what = what.into();
    move |source| OpenError::Io { what, source }
}

/// Opens (or creates) a sled store in `dir` with our settings, waiting up to
/// `lock_wait` for a lock held by a handle being dropped in this process, and
/// makes every file and directory entry sled has made so far durable.
pub fn open(dir: &Path, cache_bytes: u64, lock_wait: Duration) -> Result<(sled::Db, Committer), OpenError> {
    create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let started = std::time::Instant::now();
    let db = loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(SLED_SEGMENT_BYTES)
            // Durability comes from the caller's commits; sled's periodic
            // background flush would only be a second, uncoordinated flusher.
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => break db,
            Err(sled::Error::Io(io))
                if io.kind() == io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
            {
                if started.elapsed() >= lock_wait {
                    return Err(OpenError::Locked(io.to_string()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(other) => return Err(OpenError::Sled(other)),
        }
    };
    let committer = Committer::new(db.clone(), dir)?;
    Ok((db, committer))
}

impl Committer {
    fn new(db: sled::Db, dir: &Path) -> Result<Committer, OpenError> {
        // Everything sled created or renamed while opening: conf (never fsynced
        // by sled), the db file, the snapshot written at recovery, blob files.
        for name in ["conf", "db"] {
            let p = dir.join(name);
            if p.exists() {
                sync_file(&p).map_err(io_err(format!("fsync {}", p.display())))?;
            }
        }
        let entries = std::fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("list {}", dir.display())))?;
            if entry.file_name().to_string_lossy().starts_with("snap.") {
                sync_file(&entry.path()).map_err(io_err(format!("fsync {}", entry.path().display())))?;
            }
        }
        let c = Committer {
            db_file: File::open(dir.join("db")).map_err(io_err(format!("open {}/db", dir.display())))?,
            db,
            dir: dir.to_owned(),
            blobs_synced: Mutex::new(BTreeSet::new()),
        };
        c.sync_blobs().map_err(|e| OpenError::Io {
            what: format!("fsync {}/blobs", dir.display()),
            source: io::Error::new(e.kind.unwrap_or(io::ErrorKind::Other), e.message),
        })?;
        sync_dir(dir).map_err(io_err(format!("fsync {}", dir.display())))?;
        Ok(c)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes everything applied to the store before this call durable:
    /// `Db::flush()`, then the new blob files and `blobs/`, then `db`.
    /// Returns the bytes sled reported flushed.
    pub fn commit(&self) -> Result<usize, CommitError> {
        let flushed = self.db.flush().map_err(|e| CommitError {
            what: "flush sled",
            message: e.to_string(),
            kind: sled_io_kind(&e),
        })?;
        self.sync_blobs()?;
        fail::fail_point!("durable::sync", |arg: Option<String>| {
            if arg.as_deref() == Some("skip") {
                Ok(flushed)
            } else {
                Err(CommitError::io("fdatasync db", &io::Error::from_raw_os_error(5)))
            }
        });
        self.db_file.sync_data().map_err(|e| CommitError::io("fdatasync db", &e))?;
        Ok(flushed)
    }

    /// [`Committer::commit`], then [`StateFile::advance`] to `applied_high` (the
    /// highest sequence number applied before this call): what a store's
    /// committer runs for each group commit. The error says which step failed.
    pub fn commit_and_advance(&self, state: &mut StateFile, applied_high: u64) -> Result<(), String> {
        self.commit().map_err(|e| e.to_string())?;
        state
            .advance(applied_high, false)
            .map(|_| ())
            .map_err(|e| format!("write state file {}: {e}", state.path().display()))
    }

    /// fdatasync of each blob file not synced yet, then fsync of `blobs/`.
    /// Nearly always a listing of an empty directory.
    fn sync_blobs(&self) -> Result<(), CommitError> {
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CommitError::io("list blobs", &e)),
        };
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = BTreeSet::new();
        let mut new = 0usize;
        for entry in entries {
            let entry = entry.map_err(|e| CommitError::io("list blobs", &e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                sync_file(&entry.path()).map_err(|e| CommitError::io("fdatasync blob", &e))?;
                new += 1;
            }
            present.insert(name);
        }
        if new > 0 {
            sync_dir(&blobs).map_err(|e| CommitError::io("fsync blobs", &e))?;
            tracing::debug!(new, "synced sled blob files");
        }
        // Forget blobs sled has removed, so the set stays as small as the directory.
        *synced = present;
        Ok(())
    }
}

/// `std::fs::create_dir_all`, durably: every directory it creates has its
/// entry synced (an fsync of its parent), so a power cut cannot take away the
/// directory a store lives in (and the store with it, state file and all).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

/// fdatasync of a file (opened read-only: Linux syncs through any descriptor).
pub fn sync_file(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_data()
}

/// fsync of a directory, so that entries created, renamed or removed in it
/// survive a power cut.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Reads failpoints from the `FAILPOINTS` environment variable in a build
/// with the `failpoints` feature (the test builds); does nothing otherwise.
/// Daemons call it once at start.
pub fn init_failpoints() {
    #[cfg(feature = "failpoints")]
    {
        let scenario = fail::FailScenario::setup();
        // Kept for the life of the process: dropping it would clear the points.
        std::mem::forget(scenario);
        tracing::warn!("failpoints are compiled in (a test build): FAILPOINTS is honoured");
    }
}

/// Why [`guard`] refused a store.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "{label} holds seq <= {held} but seq {recorded} was made durable (state file {path}): \
         acknowledged data was lost; see docs/operations.md, \"store regressed\""
    )]
    Regressed { label: String, held: u64, recorded: u64, path: PathBuf },
    #[error(
        "{label} has store id {found:032x} but its state file {path} belongs to store {expected:032x}: \
         this is another store's data; see docs/operations.md, \"store regressed\""
    )]
    Foreign { label: String, found: u128, expected: u128, path: PathBuf },
    #[error("state file {path} is unreadable ({why}); see docs/operations.md, \"store regressed\"")]
    StateCorrupt { path: PathBuf, why: String },
    #[error("{what}: {message}")]
    Io { what: String, message: String },
}

/// What [`guard`] found, when the store may start.
#[derive(Debug)]
pub struct Guarded {
    /// The state file, to advance after commits.
    pub state: StateFile,
    /// The store must not hand out a sequence number at or below this: what
    /// sled holds and the state file recorded; after an accepted regression,
    /// the state file's reservation (above anything ever acknowledged).
    pub seq_floor: u64,
    /// Set when the operator accepted a regression (or a foreign or unreadable
    /// state file): what was wrong, for the log and a metric.
    pub accepted: Option<String>,
}

/// The regression guard, run once at open after sled has opened: compares
/// what sled holds (`held`: its highest durable sequence number) and its store
/// id with the state file at `state_path`, creating either where missing.
/// With `accept` the store starts anyway (logged at ERROR by the caller), and
/// the returned high-water mark still prevents any sequence number reuse.
pub fn guard(
    db: &sled::Db,
    committer: &Committer,
    state_path: &Path,
    label: &str,
    held: u64,
    accept: bool,
) -> Result<Guarded, GuardError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: io::Error| GuardError::Io { what, message: e.to_string() }
    };
    let in_sled = match db.get(STORE_ID_KEY) {
        Ok(Some(v)) if v.len() == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&v);
            Some(u128::from_le_bytes(b))
        }
        Ok(Some(_)) => None,
        Ok(None) => None,
        Err(e) => return Err(GuardError::Io { what: "read store id".into(), message: e.to_string() }),
    };
    let loaded = StateFile::open(state_path);
    let (file, recorded) = match loaded {
        Ok(Some((file, st))) => (Some(file), Some(st)),
        Ok(None) => (None, None),
        Err(state::StateError::Corrupt(why)) => {
            if !accept {
                return Err(GuardError::StateCorrupt { path: state_path.to_owned(), why });
            }
            (None, None)
        }
        Err(state::StateError::Io(e)) => return Err(io("read state file")(e)),
    };
    let mut accepted = None;
    let store_id = match (&recorded, in_sled) {
        (Some(st), Some(id)) if st.store_id != id => {
            let err = GuardError::Foreign {
                label: label.to_owned(),
                found: id,
                expected: st.store_id,
                path: state_path.to_owned(),
            };
            if !accept {
                return Err(err);
            }
            accepted = Some(err.to_string());
            id
        }
        (Some(st), _) => st.store_id,
        (None, Some(id)) => {
            if file.is_none() && accepted.is_none() {
                tracing::warn!(path = %state_path.display(), "state file missing for an existing store; recreating it");
            }
            id
        }
        (None, None) => rand::random::<u128>(),
    };
    let recorded_high = recorded.as_ref().map_or(0, |s| s.high_water);
    let recorded_reserved = recorded.as_ref().map_or(0, |s| s.reserved);
    if held < recorded_high {
        let err = GuardError::Regressed {
            label: label.to_owned(),
            held,
            recorded: recorded_high,
            path: state_path.to_owned(),
        };
        if !accept {
            return Err(err);
        }
        accepted = Some(err.to_string());
    }
    let high_water = held.max(recorded_high);
    let seq_floor = if accepted.is_some() { high_water.max(recorded_reserved) } else { high_water };
    if let Some(problem) = &accepted {
        tracing::error!(
            %problem,
            "opening {label} over a regression, as the operator asked; sequence numbers continue after {seq_floor}"
        );
    }
    let want = StoreState {
        store_id,
        high_water,
        reserved: recorded_reserved.max(seq_floor.saturating_add(state::SEQ_RESERVE_STEP)),
    };
    // The state file first, then the id into sled: a cut between the two
    // leaves a state file whose store sled does not name yet, which the next
    // open accepts (sled holds at least what the file says).
    let state = match file {
        Some(mut f) if recorded.as_ref() == Some(&want) => {
            f.touch();
            f
        }
        Some(mut f) => {
            f.advance_to(want.clone()).map_err(io("write state file"))?;
            f
        }
        None => StateFile::create(state_path, &want).map_err(io("create state file"))?,
    };
    if in_sled != Some(store_id) {
        db.insert(STORE_ID_KEY, &store_id.to_le_bytes())
            .map_err(|e| GuardError::Io { what: "write store id".into(), message: e.to_string() })?;
        committer
            .commit()
            .map_err(|e| GuardError::Io { what: "commit store id".into(), message: e.to_string() })?;
    }
    Ok(Guarded { state, seq_floor, accepted })
}
