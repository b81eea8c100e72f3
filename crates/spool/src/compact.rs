//! Compaction: whole blocks below the acked watermark go once their records
//! have been acked for `acked_retention`; the id index's partitions that
//! pointed only into them go with them.
//!
//! When was a seq acked? The ack-time log (`A <watermark> -> time`, one entry
//! per [`crate::write::ACK_LOG_INTERVAL`] at most) says when the watermark
//! passed it, so compaction removes every block whose last seq is at or below
//! the newest watermark logged at or before `now - acked_retention`.

use spool_format::{decode_block, peek_block_header, OffsetDateTime};

use crate::layout::{key, key_u64, len_u64, P_ACK_LOG, P_BLOCK, P_DEAD, P_REQUEUE, P_TOMBSTONE};
use crate::{Spool, SpoolError};

/// Blocks removed per round, bounding one round's sled batch (256 removes).
const COMPACT_BLOCKS_MAX: usize = 256;

impl Spool {
    /// Removes acked records whose ack is older than `acked_retention` at
    /// `now`. Returns how many records were removed.
    pub fn compact(&self, now: OffsetDateTime) -> Result<u64, SpoolError> {
        let db = &self.inner.db;
        let cutoff = now - self.inner.cfg.acked_retention;
        let mut upto = None;
        for item in db.scan_prefix([P_ACK_LOG]) {
            let (k, v) = item?;
            let secs = i64::from_le_bytes(v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
            if secs > cutoff.unix_timestamp() {
                break;
            }
            upto = Some(key_u64(&k));
        }
        let upto = {
            // The newest advance may not be logged yet (the log is written
            // by the next commit).
            let a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
            let newest = a.last_advance.filter(|t| *t <= cutoff).map(|_| a.watermark);
            match upto.max(newest) {
                Some(u) => u.min(a.watermark),
                None => return Ok(0),
            }
        };
        let mut removed = 0u64;
        let mut round;
        loop {
            let mut blocks = Vec::new();
            for item in db.scan_prefix([P_BLOCK]).take(COMPACT_BLOCKS_MAX) {
                let (k, v) = item?;
                let first = key_u64(&k);
                let Some((_, last, _)) = peek_block_header(&v) else { break };
                if last > upto {
                    break;
                }
                blocks.push((first, last, v));
            }
            if blocks.is_empty() {
                return Ok(removed);
            }
            let mut writes = Vec::new();
            let (mut records, mut bytes) = (0u64, 0u64);
            let mut last_removed = 0;
            for (first, last, raw) in &blocks {
                // Records that moved out (dead, requeued, dropped) are not
                // counted as acked; their own trees keep them.
                let mut moved = std::collections::BTreeSet::new();
                for prefix in [P_DEAD, P_REQUEUE, P_TOMBSTONE] {
                    for item in db.range(key(prefix, *first)..=key(prefix, *last)) {
                        let (k, _) = item?;
                        moved.insert(key_u64(&k));
                        if prefix == P_TOMBSTONE {
                            writes.push((k.to_vec(), None));
                        }
                    }
                }
                if let Ok(block) = decode_block(raw) {
                    for (seq, frame) in block.frames().flatten() {
                        if !moved.contains(&seq) {
                            records += 1;
                            bytes += len_u64(frame.len());
                        }
                    }
                }
                writes.push((key(P_BLOCK, *first).to_vec(), None));
                last_removed = *last;
            }
            for item in db.range(key(P_ACK_LOG, 0)..key(P_ACK_LOG, last_removed)) {
                writes.push((item?.0.to_vec(), None));
            }
            let (expired, ranges) = self.inner.index.write().unwrap_or_else(|p| p.into_inner()).expire(last_removed + 1);
            // Dead letters and requeued records outlive their blocks: their
            // ids stay in the index (in the open partition from now on).
            let mut carried = Vec::new();
            for (lo, hi) in ranges {
                for prefix in [P_DEAD, P_REQUEUE] {
                    for item in db.range(key(prefix, lo)..=key(prefix, hi)) {
                        let (k, v) = item?;
                        if let Ok(r) = spool_format::decode_record(&v) {
                            carried.push((crate::index::fingerprint(&r.event.id), key_u64(&k)));
                        }
                    }
                }
            }
            if !carried.is_empty() {
                let mut index = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
                for (fp, seq) in carried {
                    index.insert(fp, seq);
                }
            }
            {
                let mut a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
                a.counts.acked = a.counts.acked.saturating_sub(records);
                a.counts.acked_bytes = a.counts.acked_bytes.saturating_sub(bytes);
                a.compacted_below = a.compacted_below.max(last_removed + 1);
                a.writes.extend(writes);
                a.writes.extend(expired.into_iter().map(|k| (k, None)));
                a.dirty = true;
                round = self.inner.writer.rounds_taken();
            }
            self.inner.writer.poke();
            removed += records;
            // Wait for the round to be applied before reading the next one.
            self.inner.writer.wait_round(round + 1)?;
        }
    }
}
