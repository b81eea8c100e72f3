//! Acknowledgement by position, dead letters, requeue and drop.
//!
//! [`AckState`] (behind the spool's `acks` mutex) holds the counters, the acked
//! watermark and what is done above it. A state change takes the lock, checks
//! the record's state, adjusts the counters, and queues its sled writes for
//! the writer thread *under the same lock*, so that the next group commit
//! writes the changes and the counters that count them in one batch.
//!
//! Done above the watermark, by kind:
//! - acked out of order: in memory only (`done` with the entry's bytes); a
//!   crash forgets them, so [`AckState::meta_counts`] counts them as pending in
//!   what it writes, and the records are sent again (the ledger dedupes);
//! - dead, requeued, dropped, acked-at-upgrade: durable in their own trees
//!   (`D`, `Q`, `T`, `K`), reloaded at open;
//! - holes (seqs no block holds: skipped at an accepted regression, removed
//!   by quarantine, dropped before an upgrade): found by the reader as it
//!   passes them.

use std::collections::BTreeMap;

use spool_format::{decode_record, encode_record, OffsetDateTime, Record, State};

use crate::layout::{key, len_u64, Meta, P_ACKED_ABOVE, P_DEAD, P_REQUEUE, P_TOMBSTONE};
use crate::{Spool, SpoolError};

/// Records a handed-out map remembers (size and attempts of records read by
/// the forwarder and not yet acked): 1M entries, about 40 MiB at worst; far
/// above any forwarder window (inflight × batch size).
const HANDED_OUT_MAX: usize = 1 << 20;

/// The spool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub dead: u64,
    pub acked: u64,
    pub live_bytes: u64,
    pub acked_bytes: u64,
    pub quarantined: u64,
}

/// A sled write queued for the next group commit.
pub(crate) type Write = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Clone, Copy)]
pub(crate) struct Handed {
    pub bytes: u32,
    pub attempts: u32,
}

/// See the module docs.
pub struct AckState {
    pub counts: Counts,
    pub watermark: u64,
    pub compacted_below: u64,
    /// Done above the watermark: `Some(bytes)` for an ack held in memory,
    /// `None` for a seq whose state is durable elsewhere.
    pub(crate) done: BTreeMap<u64, Option<u32>>,
    /// Holes above the watermark: start -> end (inclusive).
    pub(crate) holes: BTreeMap<u64, u64>,
    /// Acks above the watermark held in memory: count and bytes.
    acked_above: (u64, u64),
    /// Requeued records (the `Q` tree): seq -> frame bytes.
    pub(crate) requeued: BTreeMap<u64, u32>,
    pub(crate) handed: BTreeMap<u64, Handed>,
    /// `K` markers (acked above the watermark, written by the upgrade from
    /// format 1) still in the store.
    pub(crate) upgrade_markers: std::collections::BTreeSet<u64>,
    /// Blocks quarantined since open (so two readers never move one twice).
    pub(crate) quarantining: std::collections::BTreeSet<u64>,
    /// Writes for the next group commit.
    pub(crate) writes: Vec<Write>,
    /// When the watermark last moved (for `acked_at` of the newest acks).
    pub(crate) last_advance: Option<OffsetDateTime>,
    /// Set when the watermark or the counters changed since the last commit.
    pub(crate) dirty: bool,
}

impl AckState {
    pub(crate) fn new(meta: &Meta) -> AckState {
        AckState {
            counts: Counts {
                pending: meta.pending,
                dead: meta.dead,
                acked: meta.acked,
                live_bytes: meta.live_bytes,
                acked_bytes: meta.acked_bytes,
                quarantined: meta.quarantined,
            },
            watermark: meta.watermark,
            compacted_below: meta.compacted_below,
            done: BTreeMap::new(),
            holes: BTreeMap::new(),
            acked_above: (0, 0),
            requeued: BTreeMap::new(),
            handed: BTreeMap::new(),
            quarantining: std::collections::BTreeSet::new(),
            upgrade_markers: std::collections::BTreeSet::new(),
            writes: Vec::new(),
            last_advance: None,
            dirty: false,
        }
    }

    /// Pending plus dead events, and live bytes: what the limits count.
    pub(crate) fn live(&self) -> (u64, u64) {
        (self.counts.pending + self.counts.dead, self.counts.live_bytes)
    }

    /// Whether `seq` is done for the block cursor (acked, dead, requeued,
    /// dropped, or a hole).
    pub(crate) fn is_done(&self, seq: u64) -> bool {
        seq <= self.watermark || self.done.contains_key(&seq) || self.in_hole(seq)
    }

    fn in_hole(&self, seq: u64) -> bool {
        self.holes.range(..=seq).next_back().is_some_and(|(_, end)| *end >= seq)
    }

    /// Marks `lo..=hi` as holding no record, and moves the watermark.
    pub(crate) fn mark_hole(&mut self, lo: u64, hi: u64) {
        let lo = lo.max(self.watermark + 1);
        if lo > hi {
            return;
        }
        let end = self.holes.entry(lo).or_insert(hi);
        *end = (*end).max(hi);
        self.advance();
    }

    /// Marks `seq` done with a durable state (dead, requeued, dropped).
    pub(crate) fn mark_done_durable(&mut self, seq: u64) {
        if seq > self.watermark {
            if let Some(Some(bytes)) = self.done.insert(seq, None) {
                self.acked_above.0 -= 1;
                self.acked_above.1 -= u64::from(bytes);
            }
            self.advance();
        }
    }

    /// Moves the watermark over everything done right above it.
    pub(crate) fn advance(&mut self) {
        let before = self.watermark;
        loop {
            let next = self.watermark + 1;
            if let Some(v) = self.done.remove(&next) {
                if let Some(bytes) = v {
                    self.acked_above.0 -= 1;
                    self.acked_above.1 -= u64::from(bytes);
                }
                self.watermark = next;
                continue;
            }
            if let Some((&start, &end)) = self.holes.range(..=next).next_back() {
                if end >= next {
                    self.holes.remove(&start);
                    self.watermark = end;
                    continue;
                }
            }
            break;
        }
        // Holes entirely below the watermark are of no more use.
        while let Some((&start, &end)) = self.holes.first_key_value() {
            if end <= self.watermark {
                self.holes.remove(&start);
            } else {
                break;
            }
        }
        if self.watermark != before {
            self.dirty = true;
            self.last_advance = Some(OffsetDateTime::now_utc());
            // Acked-at-upgrade markers below the watermark are no longer needed.
            while let Some(&seq) = self.upgrade_markers.first() {
                if seq > self.watermark {
                    break;
                }
                self.upgrade_markers.remove(&seq);
                self.writes.push((key(P_ACKED_ABOVE, seq).to_vec(), None));
            }
        }
    }

    /// The counters as they must be stored: acks held in memory (lost in a
    /// crash) counted as still pending.
    pub(crate) fn meta_counts(&self) -> Counts {
        let mut c = self.counts;
        c.pending += self.acked_above.0;
        c.live_bytes += self.acked_above.1;
        c.acked = c.acked.saturating_sub(self.acked_above.0);
        c.acked_bytes = c.acked_bytes.saturating_sub(self.acked_above.1);
        c
    }

    pub(crate) fn note_handed(&mut self, seq: u64, bytes: usize) {
        if self.handed.len() >= HANDED_OUT_MAX {
            self.handed.pop_first();
        }
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.handed.entry(seq).or_insert(Handed { bytes, attempts: 0 }).bytes = bytes;
    }

    pub(crate) fn attempts(&self, seq: u64) -> u32 {
        self.handed.get(&seq).map_or(0, |h| h.attempts)
    }
}

fn sub(a: &mut u64, n: u64) {
    *a = a.saturating_sub(n);
}

impl Spool {
    fn lock_acks(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.inner.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the writer thread there are changes to commit.
    fn poke(&self) {
        self.inner.writer.poke();
    }

    /// Bytes of the entry frame of pending `seq`, from what the reader handed
    /// out or, failing that, from its block.
    fn entry_bytes(&self, seq: u64) -> Result<u32, SpoolError> {
        if let Some(h) = self.lock_acks().handed.get(&seq) {
            return Ok(h.bytes);
        }
        Ok(self.entry_frame_len(seq)?.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// Marks pending records acked by the ledger: `(seq, attempts, ledger_seq)`.
    /// Not waited on: an ack lost in a crash only means the record is sent
    /// again, and the ledger dedupes it. The ledger's seq is not kept.
    pub fn mark_acked(&self, acks: &[(u64, u32, Option<u64>)]) -> Result<(), SpoolError> {
        let visible = crate::seq_visible(&self.inner);
        let mut sizes = Vec::with_capacity(acks.len());
        for (seq, _, _) in acks {
            let (known, requeued) = {
                let a = self.lock_acks();
                (a.is_done(*seq) || *seq > visible || a.handed.contains_key(seq), a.requeued.contains_key(seq))
            };
            sizes.push(if requeued {
                // A requeued record whose block was compacted meanwhile goes
                // back into a block of its own: acked records live in blocks.
                Some(if self.entry_frame_len(*seq)?.is_some() { (0, None) } else { self.reblock(*seq)? })
            } else if known {
                None
            } else {
                Some((self.entry_bytes(*seq)?, None))
            });
        }
        let mut a = self.lock_acks();
        let mut wait = false;
        for ((seq, _, _), size) in acks.iter().zip(sizes) {
            let seq = *seq;
            if let Some(qbytes) = a.requeued.remove(&seq) {
                wait = true;
                a.writes.push((key(P_REQUEUE, seq).to_vec(), None));
                // The ack of a requeued record is durable (its counters move
                // in the meta at once): above the watermark it needs a
                // durable mark too, or a restart would find its entry in a
                // block, not done, and serve it as pending again while the
                // counters say acked. The mark goes once the watermark passes.
                if seq > a.watermark {
                    a.writes.push((key(P_ACKED_ABOVE, seq).to_vec(), Some(Vec::new())));
                    a.upgrade_markers.insert(seq);
                    a.done.insert(seq, None);
                }
                let q = u64::from(qbytes);
                sub(&mut a.counts.pending, 1);
                sub(&mut a.counts.live_bytes, q);
                let block_kept = matches!(size, Some((_, None)));
                let reblocked = size.and_then(|(n, block)| block.map(|b| (n, b)));
                if let Some((n, block)) = reblocked {
                    a.writes.push((key(crate::layout::P_BLOCK, seq).to_vec(), Some(block)));
                    a.counts.acked += 1;
                    a.counts.acked_bytes += u64::from(n);
                } else if block_kept {
                    a.counts.acked += 1;
                    a.counts.acked_bytes += q;
                }
                a.handed.remove(&seq);
                a.dirty = true;
                continue;
            }
            let size = size.map(|(n, _)| n);
            if seq > visible || a.is_done(seq) {
                continue;
            }
            let bytes = match a.handed.remove(&seq) {
                Some(h) => h.bytes,
                None => size.unwrap_or(0),
            };
            a.done.insert(seq, Some(bytes));
            a.acked_above.0 += 1;
            a.acked_above.1 += u64::from(bytes);
            sub(&mut a.counts.pending, 1);
            sub(&mut a.counts.live_bytes, u64::from(bytes));
            a.counts.acked += 1;
            a.counts.acked_bytes += u64::from(bytes);
            a.dirty = true;
        }
        a.advance();
        let round = self.inner.writer.rounds_taken() + 1;
        drop(a);
        self.poke();
        if wait {
            // A requeued record's trees changed: applied before this returns,
            // so that a read right after sees it acked.
            self.inner.writer.wait_round(round)?;
        }
        Ok(())
    }

    /// A one-entry block for requeued record `seq` (its entry bytes and the
    /// block frame).
    fn reblock(&self, seq: u64) -> Result<(u32, Option<Vec<u8>>), SpoolError> {
        let Some(raw) = self.inner.db.get(key(P_REQUEUE, seq))? else { return Ok((0, None)) };
        let Ok(r) = decode_record(&raw) else { return Ok((0, None)) };
        let frame = spool_format::encode_entry(seq, r.received_at, &r.event);
        let mut b = spool_format::BlockBuilder::new();
        b.push(seq, &frame);
        Ok((u32::try_from(frame.len()).unwrap_or(u32::MAX), Some(b.finish(&r.node))))
    }

    /// Records a failed send of these records, for `spoolctl show`: the
    /// attempts of pending records are kept in memory (since start).
    pub fn note_attempts(&self, seqs: &[u64], attempts: u32) {
        let mut a = self.lock_acks();
        for seq in seqs {
            if let Some(h) = a.handed.get_mut(seq) {
                h.attempts = h.attempts.max(attempts);
            }
        }
    }

    /// Moves a pending record to the dead-letter queue with the ledger's reason.
    pub fn mark_dead(&self, seq: u64, attempts: u32, code: &str, reason: &str) -> Result<bool, SpoolError> {
        let Some(mut record) = self.get(seq)? else {
            return Ok(false);
        };
        if record.state != State::Pending {
            return Ok(false);
        }
        let entry = self.entry_bytes(seq)?;
        record.state = State::dead(OffsetDateTime::now_utc(), code, reason);
        record.attempts = attempts;
        let frame = encode_record(&record);
        let mut a = self.lock_acks();
        if let Some(q) = a.requeued.remove(&seq) {
            a.writes.push((key(P_REQUEUE, seq).to_vec(), None));
            sub(&mut a.counts.live_bytes, u64::from(q));
        } else if a.is_done(seq) {
            return Ok(false);
        } else {
            sub(&mut a.counts.live_bytes, u64::from(entry));
            a.mark_done_durable(seq);
        }
        sub(&mut a.counts.pending, 1);
        a.counts.dead += 1;
        a.counts.live_bytes += len_u64(frame.len());
        a.writes.push((key(P_DEAD, seq).to_vec(), Some(frame)));
        a.handed.remove(&seq);
        a.dirty = true;
        let round = self.inner.writer.rounds_taken() + 1;
        drop(a);
        self.poke();
        // Applied (not necessarily durable) before it returns, so that a read
        // right after sees the dead letter.
        self.inner.writer.wait_round(round)?;
        Ok(true)
    }

    /// The dead letter at `seq`, decoded.
    fn dead_record(&self, seq: u64) -> Result<Option<(Record, usize)>, SpoolError> {
        let Some(raw) = self.inner.db.get(key(P_DEAD, seq))? else {
            return Ok(None);
        };
        match decode_record(&raw) {
            Ok(r) if r.seq == seq && matches!(r.state, State::Dead { .. }) => Ok(Some((r, raw.len()))),
            Ok(_) => Err(SpoolError::Corrupt(format!("dead letter under seq {seq} is not that seq's dead letter"))),
            Err(e) => Err(SpoolError::Corrupt(format!("dead letter {seq}: {e}"))),
        }
    }

    /// Puts a dead letter back in the pending queue (after the ledger is fixed).
    /// Durable when it returns. `false` if `seq` is not a dead letter.
    pub async fn requeue(&self, seq: u64) -> Result<bool, SpoolError> {
        let Some((mut record, dead_bytes)) = self.dead_record(seq)? else {
            return Ok(false);
        };
        record.state = State::Pending;
        record.attempts = 0;
        let frame = encode_record(&record);
        {
            let mut a = self.lock_acks();
            a.writes.push((key(P_REQUEUE, seq).to_vec(), Some(frame.clone())));
            a.writes.push((key(P_DEAD, seq).to_vec(), None));
            sub(&mut a.counts.dead, 1);
            sub(&mut a.counts.live_bytes, len_u64(dead_bytes));
            a.counts.pending += 1;
            a.counts.live_bytes += len_u64(frame.len());
            a.requeued.insert(seq, u32::try_from(frame.len()).unwrap_or(u32::MAX));
            a.mark_done_durable(seq);
            a.dirty = true;
        }
        self.wait_durable().await?;
        self.inner.requeues.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }

    /// Puts acked records back to pending (attempts 0) so that the forwarder
    /// sends them again, e.g. after a reconcile found them missing at the
    /// ledger (whose dedupe keeps the effect exactly once). Durable when it
    /// returns; seqs that are not acked records are skipped. Returns how many
    /// moved.
    pub async fn requeue_acked(&self, seqs: &[u64]) -> Result<u64, SpoolError> {
        let mut moved = 0u64;
        for seq in seqs {
            let Some(mut record) = self.get(*seq)? else { continue };
            if !matches!(record.state, State::Acked { .. }) {
                continue;
            }
            let entry = self.entry_frame_len(*seq)?.unwrap_or(0);
            record.state = State::Pending;
            record.attempts = 0;
            let frame = encode_record(&record);
            let mut a = self.lock_acks();
            if a.requeued.contains_key(seq) {
                continue;
            }
            a.writes.push((key(P_REQUEUE, *seq).to_vec(), Some(frame.clone())));
            sub(&mut a.counts.acked, 1);
            sub(&mut a.counts.acked_bytes, len_u64(entry));
            a.counts.pending += 1;
            a.counts.live_bytes += len_u64(frame.len());
            a.requeued.insert(*seq, u32::try_from(frame.len()).unwrap_or(u32::MAX));
            a.mark_done_durable(*seq);
            a.dirty = true;
            moved += 1;
        }
        self.wait_durable().await?;
        if moved > 0 {
            self.inner.requeues.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(moved)
    }

    /// Removes a dead letter for good (operator decision). Durable when it
    /// returns. `false` if `seq` is not a dead letter. A resend of its event
    /// is accepted as new.
    pub async fn drop_dead(&self, seq: u64) -> Result<bool, SpoolError> {
        let Some((_, dead_bytes)) = self.dead_record(seq)? else {
            return Ok(false);
        };
        {
            let mut a = self.lock_acks();
            a.writes.push((key(P_TOMBSTONE, seq).to_vec(), Some(Vec::new())));
            a.writes.push((key(P_DEAD, seq).to_vec(), None));
            sub(&mut a.counts.dead, 1);
            sub(&mut a.counts.live_bytes, len_u64(dead_bytes));
            a.mark_done_durable(seq);
            a.dirty = true;
        }
        self.wait_durable().await?;
        Ok(true)
    }

    /// Moves a block that failed verification out of the way: its raw bytes
    /// go to the quarantine, and the entries that still pass their own
    /// checksum go back into a new block (returned, so the caller can read
    /// them right away); the damaged ones become a hole. Never forwarded.
    pub(crate) fn quarantine_block(&self, first_seq: u64, raw: &[u8], why: &str) -> Option<Vec<u8>> {
        let visible = crate::seq_visible(&self.inner);
        let header_last = match spool_format::peek_block_header(raw) {
            Some((f, l, c)) if f == first_seq && l >= f && l <= visible && u64::from(c) <= l - f + 1 => Some(l),
            _ => None,
        };
        let salvage = spool_format::salvage_block(raw).filter(|s| s.first_seq == first_seq && !s.good.is_empty());
        let mut lost: Vec<(u64, u64)> = Vec::new();
        let mut rebuilt = None;
        match &salvage {
            Some(s) => {
                let mut b = spool_format::BlockBuilder::new();
                for (seq, frame) in &s.good {
                    if *seq <= visible {
                        b.push(*seq, frame);
                    }
                }
                for (seq, _) in &s.bad {
                    lost.push((*seq, *seq));
                }
                if s.rest_lost {
                    let from = s.bad.last().map_or(first_seq, |(q, _)| *q);
                    lost.push((from, header_last.unwrap_or(from).max(from)));
                }
                if let Some(first_good) = b.first_seq() {
                    rebuilt = Some((first_good, b.finish(s.node.as_deref().unwrap_or(&self.inner.cfg.node_id))));
                }
            }
            None => lost.push((first_seq, header_last.unwrap_or(first_seq))),
        }
        let count: u64 = lost.iter().map(|(lo, hi)| hi - lo + 1).sum();
        tracing::error!(first_seq, lost = ?lost, reason = why, "corrupt spool block quarantined; its damaged records will not be forwarded");
        let mut a = self.lock_acks();
        if !a.quarantining.insert(first_seq) {
            return None;
        }
        // Only pending records leave the pending count.
        let pending_here: u64 = lost
            .iter()
            .map(|(lo, hi)| len_u64(((*lo).max(a.watermark + 1)..=*hi).filter(|s| !a.done.contains_key(s) && !a.in_hole(*s)).count()))
            .sum();
        sub(&mut a.counts.pending, pending_here);
        sub(&mut a.counts.live_bytes, len_u64(raw.len()).min(pending_here.saturating_mul(512)));
        a.counts.quarantined += count;
        a.writes.push((key(crate::layout::P_QUARANTINE, first_seq).to_vec(), Some(raw.to_vec())));
        a.writes.push((key(crate::layout::P_BLOCK, first_seq).to_vec(), None));
        if let Some((k, v)) = &rebuilt {
            a.writes.push((key(crate::layout::P_BLOCK, *k).to_vec(), Some(v.clone())));
        }
        for (lo, hi) in lost {
            a.mark_hole(lo, hi);
        }
        a.dirty = true;
        let round = self.inner.writer.rounds_taken() + 1;
        drop(a);
        self.poke();
        if let Err(e) = self.inner.writer.wait_round(round) {
            tracing::error!(first_seq, error = %e, "could not move a corrupt block to the quarantine");
            return None;
        }
        rebuilt.map(|(_, v)| v)
    }
}
