//! Opening a spool: upgrade a v1 store if there is one, open sled, read the
//! meta written by the last commit, run the regression guard, reload the small
//! trees (dead letters, requeued, dropped, quarantined above the watermark),
//! load the id index's sealed partitions and rebuild its open partition from
//! the blocks it covers. Nothing here reads the backlog: the time to open
//! does not grow with the number of pending records.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use spool_format::{decode_block, entry_seq, peek_block_header};

use crate::acks::AckState;
use crate::disk::DiskGuard;
use crate::index::{fingerprint, Index};
use crate::layout::{key, key_u64, Meta, META_KEY, P_ACKED_ABOVE, P_ACK_LOG, P_BLOCK, P_DEAD, P_QUARANTINE, P_REQUEUE, P_TOMBSTONE};
use crate::write::{CommitObserver, Writer};
use crate::{store_dir, Inner, Spool, SpoolConfig, SpoolError, LOCK_WAIT, SLED_CACHE_BYTES};

/// Runs `f`, turning a panic inside sled (it panics on some damaged files)
/// into a named error instead of taking the process down.
pub(crate) fn catch_sled<T>(what: &str, f: impl FnOnce() -> Result<T, SpoolError>) -> Result<T, SpoolError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(SpoolError::Corrupt(format!("{what}: sled failed on its own files ({msg})")))
        }
    }
}

pub(crate) fn open_db(dir: &std::path::Path) -> Result<(sled::Db, durable::Committer), SpoolError> {
    catch_sled("open the store", || Ok(durable::open(dir, SLED_CACHE_BYTES, LOCK_WAIT)?))
}

pub(crate) fn read_meta(db: &sled::Db) -> Result<Meta, SpoolError> {
    match db.get(META_KEY)? {
        Some(v) => Meta::decode(&v).map_err(|e| SpoolError::Corrupt(format!("the spool's meta value (counters and positions): {e}"))),
        None => {
            if db.scan_prefix([P_BLOCK]).next().is_some() || db.scan_prefix([P_DEAD]).next().is_some() {
                return Err(SpoolError::Corrupt("the spool holds records but no meta value".into()));
            }
            Ok(Meta::fresh())
        }
    }
}

pub(crate) fn open(cfg: SpoolConfig, observer: Option<CommitObserver>) -> Result<Spool, SpoolError> {
    durable::create_dir_all(&cfg.dir).map_err(|e| SpoolError::Storage(format!("create {}: {e}", cfg.dir.display())))?;
    crate::upgrade::upgrade_if_v1(&cfg)?;
    let (db, committer) = open_db(&store_dir(&cfg.dir))?;
    catch_sled("open the spool", move || finish(cfg, db, committer, observer))
}

fn finish(cfg: SpoolConfig, db: sled::Db, committer: durable::Committer, observer: Option<CommitObserver>) -> Result<Spool, SpoolError> {
    let committer = Arc::new(committer);
    let mut meta = read_meta(&db)?;
    // The batch that wrote the meta wrote the blocks it counts: nothing can
    // lie beyond it.
    if let Some(item) = db.scan_prefix([P_BLOCK]).next_back() {
        let (k, v) = item?;
        let last = peek_block_header(&v).map_or(key_u64(&k), |(_, l, _)| l);
        if last >= meta.next_seq {
            return Err(SpoolError::Corrupt(format!("a block holds seq {last}, beyond the meta's next seq {}", meta.next_seq)));
        }
    }
    let state_path = cfg.dir.join("state");
    let label = format!("spool {}", cfg.dir.display());
    let held = meta.next_seq.saturating_sub(1);
    let guarded = durable::guard(&db, &committer, &state_path, &label, held, cfg.accept_regression).map_err(|e| match e {
        durable::GuardError::Io { .. } => SpoolError::Storage(e.to_string()),
        _ => SpoolError::Regressed(e.to_string()),
    })?;
    // Never hand out a seq the state file says was used.
    meta.next_seq = meta.next_seq.max(guarded.seq_floor + 1);

    let mut acks = AckState::new(&meta);
    let above = |prefix: u8| db.range(key(prefix, meta.watermark + 1)..=key(prefix, u64::MAX));
    for prefix in [P_DEAD, P_TOMBSTONE, P_ACKED_ABOVE] {
        for item in above(prefix) {
            let (k, _) = item?;
            acks.done.insert(key_u64(&k), None);
            if prefix == P_ACKED_ABOVE {
                acks.upgrade_markers.insert(key_u64(&k));
            }
        }
    }
    for item in db.scan_prefix([P_REQUEUE]) {
        let (k, v) = item?;
        let seq = key_u64(&k);
        acks.requeued.insert(seq, u32::try_from(v.len()).unwrap_or(u32::MAX));
        if seq > meta.watermark {
            acks.done.insert(seq, None);
        }
    }
    for item in db.scan_prefix([P_QUARANTINE]) {
        let (k, v) = item?;
        let first = key_u64(&k);
        let last = peek_block_header(&v).and_then(|(f, l, _)| (f == first && l >= f && l < meta.next_seq).then_some(l)).unwrap_or(first);
        acks.mark_hole(first, last);
    }
    acks.advance();
    let last_ack_log = match db.scan_prefix([P_ACK_LOG]).next_back() {
        Some(item) => {
            let (k, v) = item?;
            let secs = i64::from_le_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
            spool_format::OffsetDateTime::from_unix_timestamp(secs).ok().map(|t| (key_u64(&k), t))
        }
        None => None,
    };

    let mut index = Index::new(crate::layout::ID_INDEX, meta.open_from, meta.next_partition);
    let damaged = index.load_sealed(&db)?;
    let mut rebuilt = 0u64;
    let mut rebuild = |lo: u64, hi: u64, index: &mut Index| -> Result<(), SpoolError> {
        let start = match db.range(key(P_BLOCK, 0)..=key(P_BLOCK, lo)).next_back() {
            Some(item) => key_u64(&item?.0),
            None => lo,
        };
        for item in db.range(key(P_BLOCK, start)..=key(P_BLOCK, hi)) {
            let (_, raw) = item?;
            // A damaged block is left for the readers to quarantine; its ids
            // cannot be confirmed anyway.
            let Ok(block) = decode_block(&raw) else { continue };
            for frame in block.frames() {
                let Ok((seq, frame)) = frame else { break };
                if seq < lo || seq > hi {
                    continue;
                }
                debug_assert_eq!(entry_seq(frame).ok(), Some(seq));
                if let Ok(e) = spool_format::decode_entry(frame) {
                    index.insert(fingerprint(&e.event.id), seq);
                    rebuilt += 1;
                }
            }
        }
        Ok(())
    };
    for (lo, hi) in damaged {
        rebuild(lo, hi, &mut index)?;
    }
    rebuild(meta.open_from, meta.next_seq.saturating_sub(1), &mut index)?;
    // Dead letters and requeued records whose blocks and partition are gone
    // (compacted) keep their ids: they are in no sealed partition.
    for prefix in [P_DEAD, P_REQUEUE] {
        for item in db.scan_prefix([prefix]) {
            let (k, v) = item?;
            let seq = key_u64(&k);
            let in_blocks = seq >= meta.open_from && crate::read::block_of_db(&db, seq)?.is_some_and(|(_, l)| l >= seq);
            if index.sealed_covers(seq) || in_blocks {
                continue;
            }
            if let Ok(r) = spool_format::decode_record(&v) {
                index.insert(fingerprint(&r.event.id), seq);
            }
        }
    }
    tracing::debug!(rebuilt, sealed = index.sealed_count(), "spool id index ready");

    let writer = Writer::new(meta.next_seq);
    let visible = meta.next_seq.saturating_sub(1);
    let regression = guarded.accepted.clone();
    if meta.next_seq > 1 + held {
        // Seqs skipped after an accepted regression: a hole for the cursor,
        // and a meta to write.
        acks.mark_hole(held + 1, meta.next_seq - 1);
        acks.dirty = true;
    }
    let inner = Arc::new(Inner {
        disk: DiskGuard::new(cfg.dir.clone()),
        cfg,
        db,
        committer,
        writer: Arc::clone(&writer),
        regression,
        visible: AtomicU64::new(visible),
        acks: Mutex::new(acks),
        index: RwLock::new(index),
        last_ack_log: Mutex::new(last_ack_log),
        requeues: AtomicU64::new(0),
    });
    Writer::start(Arc::downgrade(&inner), &writer, guarded.state, observer);
    // Write the meta now if the open changed it (a regression accepted).
    writer.poke();
    Ok(Spool { inner })
}
