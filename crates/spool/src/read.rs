//! The read path: pending records from a cursor, records by seq and by id,
//! listings. Every block and entry read is checksum-verified; a block that
//! fails is quarantined (by the writer, see `acks`) and skipped.
//!
//! Readers never look past the last durable seq (`visible`), and seqs become
//! visible in order, so a cursor never has to look back for a late record:
//! only a requeue puts something behind it (and the forwarder's cursor goes
//! back to the start whenever it is idle).

use std::ops::ControlFlow;

use spool_format::{decode_block, decode_entry, decode_record, Entry, OffsetDateTime, Record, State};

use crate::layout::{key, key_u64, P_ACK_LOG, P_BLOCK, P_DEAD, P_QUARANTINE, P_REQUEUE, P_TOMBSTONE};
use crate::{Inner, Quarantined, Spool, SpoolError, StateFilter};

/// The block holding `seq`, if any: (first seq, raw bytes).
pub(crate) fn block_of(inner: &Inner, seq: u64) -> Result<Option<(u64, sled::IVec)>, SpoolError> {
    let Some(item) = inner.db.range(key(P_BLOCK, 0)..=key(P_BLOCK, seq)).next_back() else {
        return Ok(None);
    };
    let (k, v) = item?;
    Ok(Some((key_u64(&k), v)))
}

/// The first and last seq of the block that would hold `seq`, if any.
pub(crate) fn block_of_db(db: &sled::Db, seq: u64) -> Result<Option<(u64, u64)>, SpoolError> {
    let Some(item) = db.range(key(P_BLOCK, 0)..=key(P_BLOCK, seq)).next_back() else {
        return Ok(None);
    };
    let (k, v) = item?;
    let first = key_u64(&k);
    Ok(Some((first, spool_format::peek_block_header(&v).map_or(first, |(_, l, _)| l))))
}

/// The id and digest of the event at `seq`, for dedupe: `None` when the
/// record is gone (dropped, compacted, quarantined) or unreadable.
pub(crate) fn identity(inner: &Inner, seq: u64) -> Result<Option<(String, [u8; 32])>, SpoolError> {
    if inner.db.contains_key(key(P_TOMBSTONE, seq))? {
        return Ok(None);
    }
    for prefix in [P_DEAD, P_REQUEUE] {
        if let Some(raw) = inner.db.get(key(prefix, seq))? {
            return Ok(decode_record(&raw).ok().filter(|r| r.seq == seq).map(|r| (r.event.id.clone(), r.event.digest())));
        }
    }
    Ok(entry_at(inner, seq)?.map(|e| (e.event.id.clone(), e.event.digest())))
}

/// The entry at `seq` from its block; `None` if absent or unreadable (an
/// unreadable block is left for the readers to quarantine).
fn entry_at(inner: &Inner, seq: u64) -> Result<Option<Entry>, SpoolError> {
    let Some((_, raw)) = block_of(inner, seq)? else { return Ok(None) };
    Ok(decode_block(&raw).ok().and_then(|b| b.find(seq).ok().flatten()))
}

impl Spool {
    /// Length of the entry frame of `seq` in its block.
    pub(crate) fn entry_frame_len(&self, seq: u64) -> Result<Option<usize>, SpoolError> {
        let Some((_, raw)) = block_of(&self.inner, seq)? else { return Ok(None) };
        let Ok(block) = decode_block(&raw) else { return Ok(None) };
        for item in block.frames() {
            match item {
                Ok((s, frame)) if s == seq => return Ok(Some(frame.len())),
                Ok((s, _)) if s > seq => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(None)
    }

    /// When the watermark passed `seq` (to within the ack-time log interval).
    fn acked_at(&self, seq: u64) -> Result<OffsetDateTime, SpoolError> {
        if let Some(item) = self.inner.db.range(key(P_ACK_LOG, seq)..=key(P_ACK_LOG, u64::MAX)).next() {
            let (_, v) = item?;
            if v.len() == 8 {
                let secs = i64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8]));
                if let Ok(t) = OffsetDateTime::from_unix_timestamp(secs) {
                    return Ok(t);
                }
            }
        }
        let a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
        Ok(a.last_advance.unwrap_or_else(OffsetDateTime::now_utc))
    }

    /// The state of the block record `seq` (not dead, requeued or dropped).
    fn block_state(&self, seq: u64) -> Result<Option<(State, u32)>, SpoolError> {
        let (done, acked_mem, watermark, attempts) = {
            let a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
            (a.is_done(seq), a.done.get(&seq).copied(), a.watermark, a.attempts(seq))
        };
        if seq > crate::seq_visible(&self.inner) {
            return Ok(None);
        }
        // Done above the watermark and not dead, requeued or dropped (the
        // caller looked at those): acked out of order, or acked at upgrade.
        let acked = seq <= watermark || done || matches!(acked_mem, Some(Some(_)));
        if acked {
            Ok(Some((State::Acked { acked_at: self.acked_at(seq)?, ledger_seq: None }, 0)))
        } else {
            Ok(Some((State::Pending, attempts)))
        }
    }

    /// A record from a dead-letter or requeue frame.
    fn frame_record(&self, prefix: u8, seq: u64) -> Result<Option<Record>, SpoolError> {
        let Some(raw) = self.inner.db.get(key(prefix, seq))? else { return Ok(None) };
        match decode_record(&raw) {
            Ok(mut r) if r.seq == seq => {
                if prefix == P_REQUEUE {
                    let a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
                    r.attempts = r.attempts.max(a.attempts(seq));
                }
                Ok(Some(r))
            }
            Ok(r) => Err(SpoolError::Corrupt(format!("record under seq {seq} says seq {}", r.seq))),
            Err(e) => Err(SpoolError::Corrupt(format!("record {seq} ({}): {e}", prefix as char))),
        }
    }

    /// The record at `seq`, verified, in its current state. A corrupt block is
    /// quarantined and the record is `None`; sled failing on its own damaged
    /// files is a named error, not a panic.
    pub fn get(&self, seq: u64) -> Result<Option<Record>, SpoolError> {
        crate::open::catch_sled("read a record", || self.get_inner(seq))
    }

    fn get_inner(&self, seq: u64) -> Result<Option<Record>, SpoolError> {
        if self.inner.db.contains_key(key(P_TOMBSTONE, seq))? {
            return Ok(None);
        }
        for prefix in [P_DEAD, P_REQUEUE] {
            if let Some(r) = self.frame_record(prefix, seq)? {
                return Ok(Some(r));
            }
        }
        let Some((first, raw)) = block_of(&self.inner, seq)? else { return Ok(None) };
        let checked = decode_block(&raw).map_err(|e| e.to_string()).and_then(|b| match b.find(seq) {
            Ok(e) => Ok((b.header.node.clone(), e)),
            Err(e) => Err(e.to_string()),
        });
        let (node, entry) = match checked {
            Ok((node, Some(e))) => (node, e),
            Ok((_, None)) => return Ok(None),
            Err(why) => {
                let Some(rebuilt) = self.quarantine_block(first, &raw, &why) else { return Ok(None) };
                let Ok(b) = decode_block(&rebuilt) else { return Ok(None) };
                match b.find(seq) {
                    Ok(Some(e)) => (b.header.node.clone(), e),
                    _ => return Ok(None),
                }
            }
        };
        let Some((state, attempts)) = self.block_state(seq)? else { return Ok(None) };
        Ok(Some(Record { seq, received_at: entry.received_at, node, state, attempts, event: entry.event }))
    }

    /// The record spooled under event id `id`, if any.
    pub fn lookup(&self, id: &str) -> Result<Option<Record>, SpoolError> {
        let fp = crate::index::fingerprint(id);
        let seqs = self.inner.index.read().unwrap_or_else(|p| p.into_inner()).candidates(&self.inner.db, fp)?;
        for seq in seqs {
            if let Some(r) = self.get(seq)? {
                if r.event.id == id {
                    return Ok(Some(r));
                }
            }
        }
        Ok(None)
    }

    /// Walks the block entries with seq >= `from` (and <= the visible seq) in
    /// order, verifying each block; corrupt blocks are quarantined and
    /// skipped. `f` gets the block's node, the seq and the entry frame.
    fn walk_blocks(
        &self,
        from: u64,
        mut f: impl FnMut(&str, u64, &[u8]) -> Result<ControlFlow<()>, SpoolError>,
    ) -> Result<(), SpoolError> {
        let visible = crate::seq_visible(&self.inner);
        let start = match block_of(&self.inner, from)? {
            Some((first, _)) => first,
            None => from,
        };
        for item in self.inner.db.range(key(P_BLOCK, start)..=key(P_BLOCK, visible)) {
            let (k, stored) = item?;
            let first = key_u64(&k);
            let mut raw: Vec<u8> = stored.to_vec();
            // A damaged block is quarantined; what it still holds intact is
            // read right away from the block that replaces it.
            let problem = match decode_block(&raw) {
                Err(e) => Some(e.to_string()),
                Ok(b) if b.header.first_seq != first => Some(format!("block under seq {first} says it starts at {}", b.header.first_seq)),
                Ok(b) => b.frames().find_map(|f| f.err()).map(|e| e.to_string()),
            };
            if let Some(why) = problem {
                match self.quarantine_block(first, &raw, &why) {
                    Some(rebuilt) => raw = rebuilt,
                    None => continue,
                }
            }
            let Ok(block) = decode_block(&raw) else { continue };
            if block.header.last_seq < from {
                continue;
            }
            let frames: Vec<(u64, &[u8])> = block.frames().flatten().collect();
            for (seq, frame) in frames {
                if seq < from || seq > visible {
                    continue;
                }
                if f(&block.header.node, seq, frame)?.is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Pending records with `seq > after`, in seq order, at most `events_max`
    /// records and (past the first) at most `bytes_max` bytes of frames.
    /// Corrupt blocks are quarantined and skipped.
    pub fn read_pending(&self, after: u64, events_max: usize, bytes_max: usize) -> Result<Vec<Record>, SpoolError> {
        crate::open::catch_sled("read pending records", || self.read_pending_inner(after, events_max, bytes_max))
    }

    fn read_pending_inner(&self, after: u64, events_max: usize, bytes_max: usize) -> Result<Vec<Record>, SpoolError> {
        let mut out: Vec<(Record, usize)> = Vec::new();
        // Requeued records first (they sit below the watermark).
        let requeued: Vec<u64> = {
            let a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
            a.requeued.range(after.saturating_add(1)..).take(events_max).map(|(s, _)| *s).collect()
        };
        for seq in requeued {
            if let Some(raw) = self.inner.db.get(key(P_REQUEUE, seq))? {
                if let Some(r) = self.frame_record(P_REQUEUE, seq)? {
                    out.push((r, raw.len()));
                }
            }
        }
        let watermark = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner()).watermark;
        let from = after.max(watermark).saturating_add(1);
        let mut bytes: usize = 0;
        let mut taken = 0usize;
        let mut prev = from - 1;
        let mut holes = Vec::new();
        let mut undecodable = Vec::new();
        self.walk_blocks(from, |node, seq, frame| {
            if seq > prev + 1 {
                holes.push((prev + 1, seq - 1));
            }
            prev = seq;
            if taken >= events_max || (taken > 0 && bytes + frame.len() > bytes_max) {
                return Ok(ControlFlow::Break(()));
            }
            let (done, attempts) = {
                let a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
                (a.is_done(seq), a.attempts(seq))
            };
            if done {
                return Ok(ControlFlow::Continue(()));
            }
            match decode_entry(frame) {
                Ok(e) => {
                    bytes += frame.len();
                    taken += 1;
                    out.push((
                        Record { seq, received_at: e.received_at, node: node.to_owned(), state: State::Pending, attempts, event: e.event },
                        frame.len(),
                    ));
                }
                Err(e) => undecodable.push((seq, e.to_string())),
            }
            Ok(ControlFlow::Continue(()))
        })?;
        for (seq, why) in undecodable {
            if let Some((first, raw)) = block_of(&self.inner, seq)? {
                let _ = self.quarantine_block(first, &raw, &why);
            }
        }
        out.sort_by_key(|(r, _)| r.seq);
        out.truncate(events_max);
        {
            let mut a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
            for (lo, hi) in holes {
                a.mark_hole(lo, hi);
            }
            for (r, n) in &out {
                a.note_handed(r.seq, *n);
            }
        }
        Ok(out.into_iter().map(|(r, _)| r).collect())
    }

    /// Records in seq order starting at `from_seq`, filtered by state, at most
    /// `limit`. Corrupt blocks are skipped (and quarantined).
    pub fn list(&self, filter: StateFilter, from_seq: u64, limit: usize) -> Result<Vec<Record>, SpoolError> {
        let mut out = Vec::new();
        if matches!(filter, StateFilter::Dead | StateFilter::All | StateFilter::Pending) {
            let prefix = if filter == StateFilter::Pending { P_REQUEUE } else { P_DEAD };
            for item in self.inner.db.range(key(prefix, from_seq)..=key(prefix, u64::MAX)).take(limit) {
                let (k, _) = item?;
                if let Some(r) = self.frame_record(prefix, key_u64(&k))? {
                    out.push(r);
                }
            }
            if filter == StateFilter::All {
                for item in self.inner.db.range(key(P_REQUEUE, from_seq)..=key(P_REQUEUE, u64::MAX)).take(limit) {
                    let (k, _) = item?;
                    if let Some(r) = self.frame_record(P_REQUEUE, key_u64(&k))? {
                        out.push(r);
                    }
                }
            }
        }
        if filter != StateFilter::Dead {
            let mut seen = 0usize;
            let mut from_blocks = Vec::new();
            self.walk_blocks(from_seq, |_, seq, _| {
                if seen >= limit {
                    return Ok(ControlFlow::Break(()));
                }
                if let Some(r) = self.get(seq)? {
                    let keep = match filter {
                        StateFilter::All => !matches!(r.state, State::Dead { .. }) && !self.is_requeued(seq),
                        StateFilter::Pending => r.state == State::Pending && !self.is_requeued(seq),
                        StateFilter::Acked => matches!(r.state, State::Acked { .. }),
                        StateFilter::Dead => false,
                    };
                    if keep {
                        seen += 1;
                        from_blocks.push(r);
                    }
                }
                Ok(ControlFlow::Continue(()))
            })?;
            out.extend(from_blocks);
        }
        out.sort_by_key(|r| r.seq);
        out.dedup_by_key(|r| r.seq);
        out.truncate(limit);
        Ok(out)
    }

    fn is_requeued(&self, seq: u64) -> bool {
        self.inner.acks.lock().unwrap_or_else(|p| p.into_inner()).requeued.contains_key(&seq)
    }

    /// The newest `limit` records (any state), oldest first.
    pub fn tail(&self, limit: usize) -> Result<Vec<Record>, SpoolError> {
        let visible = crate::seq_visible(&self.inner);
        let mut from = visible.saturating_add(1);
        // Walk back block by block until `limit` records are in view.
        let mut count = 0u64;
        for item in self.inner.db.range(key(P_BLOCK, 0)..=key(P_BLOCK, visible)).rev() {
            let (k, raw) = item?;
            from = key_u64(&k);
            count += spool_format::peek_block_header(&raw).map_or(1, |(_, _, c)| u64::from(c));
            if count >= crate::layout::len_u64(limit) {
                break;
            }
        }
        let mut out = Vec::new();
        self.walk_blocks(from, |_, seq, _| {
            if let Some(r) = self.get(seq)? {
                out.push(r);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        // Dead letters and requeued records whose blocks are gone.
        for prefix in [P_DEAD, P_REQUEUE] {
            for item in self.inner.db.scan_prefix([prefix]).rev().take(limit) {
                let (k, _) = item?;
                if let Some(r) = self.frame_record(prefix, key_u64(&k))? {
                    out.push(r);
                }
            }
        }
        out.sort_by_key(|r| r.seq);
        out.dedup_by_key(|r| r.seq);
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        Ok(out)
    }

    /// `received_at` of the oldest pending record.
    pub(crate) fn oldest_pending(&self) -> Result<Option<OffsetDateTime>, SpoolError> {
        let first = self.read_pending_peek()?;
        Ok(first)
    }

    fn read_pending_peek(&self) -> Result<Option<OffsetDateTime>, SpoolError> {
        let requeued = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner()).requeued.keys().next().copied();
        let mut oldest = match requeued {
            Some(seq) => self.frame_record(P_REQUEUE, seq)?.map(|r| r.received_at),
            None => None,
        };
        let watermark = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner()).watermark;
        self.walk_blocks(watermark + 1, |_, seq, frame| {
            if self.inner.acks.lock().unwrap_or_else(|p| p.into_inner()).is_done(seq) {
                return Ok(ControlFlow::Continue(()));
            }
            if let Ok(e) = decode_entry(frame) {
                oldest = Some(oldest.map_or(e.received_at, |o: OffsetDateTime| o.min(e.received_at)));
            }
            Ok(ControlFlow::Break(()))
        })?;
        Ok(oldest)
    }

    /// Quarantined blocks (raw bytes kept in the spool for forensics).
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, SpoolError> {
        self.inner
            .db
            .scan_prefix([P_QUARANTINE])
            .map(|item| {
                let (k, v) = item?;
                let seq = key_u64(&k);
                let last_seq = spool_format::peek_block_header(&v).and_then(|(f, l, _)| (f == seq).then_some(l));
                Ok(Quarantined { seq, last_seq, bytes: v.len() })
            })
            .collect()
    }
}
