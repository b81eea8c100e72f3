//! Upgrading a format-1 spool in place.
//!
//! A v1 store (one sled key per record plus index keys) is recognised by its
//! keys: format-1 records and no format-2 meta value. The upgrade:
//! 1. renames `<dir>/sled` to `<dir>/sled-v1` (and syncs the directory): from
//!    here an interrupted upgrade is redone from the start at the next open;
//! 2. reads every v1 record (format-1 frames, checksum-verified) in seq order
//!    and writes a fresh v2 store in `<dir>/sled`: every record into blocks
//!    (same seqs, same arrival times), dead letters into the dead-letter tree,
//!    acked records above the new watermark into `K`, quarantined records into
//!    the quarantine, every id into sealed id partitions, and last the meta
//!    and the store id (so the regression guard's state file still matches);
//! 3. commits it (durable), then removes `<dir>/sled-v1`.
//!
//! Pending records stay pending under their seqs, so the forwarder sends each
//! once more at most (the ledger dedupes); acked ids keep deduping until their
//! retention ends, counted from the newest v1 ack time.

use std::path::Path;

use spool_format::{decode_record, encode_entry, encode_record, BlockBuilder, OffsetDateTime, State};

use crate::index::{fingerprint, Index, OPEN_IDS_MAX};
use crate::layout::{key, len_u64, Meta, META_KEY, P_ACKED_ABOVE, P_ACK_LOG, P_BLOCK, P_DEAD, P_QUARANTINE};
use crate::write::BLOCK_PAYLOAD_BYTES_TARGET;
use crate::{store_dir, SpoolConfig, SpoolError};

const V1_RECORD: u8 = b'r';
const V1_QUARANTINE: u8 = b'q';
const V1_NEXT_SEQ: &[u8] = b"mnext_seq";

fn io(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> SpoolError {
    let what = format!("{what} {}", p.display());
    move |e| SpoolError::Storage(format!("{what}: {e}"))
}

/// Whether `<dir>/sled` is a format-1 store: it has format-1 keys (records
/// `r…`, the seq mark `mnext_seq`) and no format-2 meta value. Opens the
/// store to look (both formats use sled's 512 KiB segments).
pub fn is_v1(dir: &Path) -> Result<bool, SpoolError> {
    let store = store_dir(dir);
    if !store.join("conf").exists() {
        return Ok(false);
    }
    let (db, _) = crate::open::open_db(&store)?;
    crate::open::catch_sled("probe the store's format", || {
        Ok(db.get(META_KEY)?.is_none()
            && (db.get(V1_NEXT_SEQ)?.is_some()
                || db.scan_prefix([V1_RECORD]).next().is_some()
                || db.scan_prefix([V1_QUARANTINE]).next().is_some()))
    })
}

/// Upgrades the spool in `cfg.dir` if it is (or was being upgraded from) v1.
pub(crate) fn upgrade_if_v1(cfg: &SpoolConfig) -> Result<(), SpoolError> {
    let new = store_dir(&cfg.dir);
    let old = cfg.dir.join("sled-v1");
    if old.exists() {
        tracing::warn!(dir = %cfg.dir.display(), "an upgrade of this spool from format 1 was interrupted; starting it again");
        if new.exists() {
            std::fs::remove_dir_all(&new).map_err(io("remove the partial", &new))?;
        }
    } else if new.exists() && is_v1(&cfg.dir)? {
        std::fs::rename(&new, &old).map_err(io("rename", &new))?;
    } else {
        return Ok(());
    }
    durable::sync_dir(&cfg.dir).map_err(io("fsync", &cfg.dir))?;
    let started = std::time::Instant::now();
    let counts = migrate(&old, &new)?;
    std::fs::remove_dir_all(&old).map_err(io("remove", &old))?;
    durable::sync_dir(&cfg.dir).map_err(io("fsync", &cfg.dir))?;
    tracing::warn!(
        dir = %cfg.dir.display(),
        records = counts.0,
        pending = counts.1,
        seconds = started.elapsed().as_secs_f64(),
        "upgraded the spool from format 1 to format 2"
    );
    Ok(())
}

/// Copies a v1 store into a new v2 store; returns (records, pending).
fn migrate(old: &Path, new: &Path) -> Result<(u64, u64), SpoolError> {
    let (v1, _) = crate::open::open_db(old)?;
    let (db, committer) = crate::open::open_db(new)?;
    let mut next_seq = match v1.get(V1_NEXT_SEQ)? {
        Some(v) if v.len() == 8 => u64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8])),
        _ => 1,
    }
    .max(1);
    let mut meta = Meta::fresh();
    let mut index = Index::new(crate::layout::ID_INDEX, 1, 0);
    let mut pending_seqs = Vec::new();
    let mut acked_seqs = Vec::new();
    let mut latest_ack: Option<OffsetDateTime> = None;
    let mut block = BlockBuilder::new();
    let mut block_node = String::new();
    let mut records = 0u64;
    let flush_block = |b: &mut BlockBuilder, node: &str, db: &sled::Db| -> Result<(), SpoolError> {
        let b = std::mem::take(b);
        if let Some(first) = b.first_seq() {
            db.insert(key(P_BLOCK, first), b.finish(node))?;
        }
        Ok(())
    };
    for item in v1.scan_prefix([V1_RECORD]) {
        let (k, raw) = item?;
        let seq = crate::layout::key_u64(&k);
        next_seq = next_seq.max(seq + 1);
        let record = match decode_record(&raw) {
            Ok(r) if r.seq == seq => r,
            Ok(_) | Err(_) => {
                tracing::error!(seq, "a v1 record failed its checks during the upgrade; quarantined");
                db.insert(key(P_QUARANTINE, seq), raw.to_vec())?;
                meta.quarantined += 1;
                continue;
            }
        };
        records += 1;
        let frame = encode_entry(seq, record.received_at, &record.event);
        if !block.is_empty() && (block.payload_bytes() + frame.len() > BLOCK_PAYLOAD_BYTES_TARGET || block_node != record.node) {
            flush_block(&mut block, &block_node, &db)?;
        }
        if block.is_empty() {
            block_node.clone_from(&record.node);
        }
        block.push(seq, &frame);
        index.insert(fingerprint(&record.event.id), seq);
        if index.open_len() >= OPEN_IDS_MAX {
            for (k, v) in index.seal() {
                db.insert(k, v)?;
            }
        }
        match &record.state {
            State::Pending => {
                pending_seqs.push(seq);
                meta.pending += 1;
                meta.live_bytes += len_u64(frame.len());
            }
            State::Acked { acked_at, .. } => {
                acked_seqs.push(seq);
                latest_ack = Some(latest_ack.map_or(*acked_at, |t: OffsetDateTime| t.max(*acked_at)));
                meta.acked += 1;
                meta.acked_bytes += len_u64(frame.len());
            }
            State::Dead { .. } => {
                let dead = encode_record(&record);
                meta.dead += 1;
                meta.live_bytes += len_u64(dead.len());
                db.insert(key(P_DEAD, seq), dead)?;
            }
        }
    }
    flush_block(&mut block, &block_node, &db)?;
    for item in v1.scan_prefix([V1_QUARANTINE]) {
        let (k, raw) = item?;
        let seq = crate::layout::key_u64(&k);
        next_seq = next_seq.max(seq + 1);
        db.insert(key(P_QUARANTINE, seq), raw.to_vec())?;
        meta.quarantined += 1;
    }
    for (k, v) in index.seal() {
        db.insert(k, v)?;
    }
    // Everything below the oldest pending record is done; acked records
    // above it are marked one by one.
    let watermark = pending_seqs.first().map_or(next_seq - 1, |s| s - 1);
    for seq in acked_seqs.iter().filter(|s| **s > watermark) {
        db.insert(key(P_ACKED_ABOVE, *seq), Vec::new())?;
    }
    if let Some(t) = latest_ack {
        db.insert(key(P_ACK_LOG, watermark), &t.unix_timestamp().to_le_bytes())?;
    }
    meta.next_seq = next_seq;
    meta.watermark = watermark;
    meta.open_from = index.open_from.max(next_seq);
    meta.next_partition = index.next_partition;
    if let Some(id) = v1.get(durable::STORE_ID_KEY)? {
        db.insert(durable::STORE_ID_KEY, id.to_vec())?;
    }
    db.insert(META_KEY, meta.encode())?;
    committer.commit().map_err(|e| SpoolError::Storage(format!("commit the upgraded spool: {e}")))?;
    drop(v1);
    drop(db);
    Ok((records, meta.pending))
}
