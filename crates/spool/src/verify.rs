//! `verify`: reads everything, changes nothing, names every fault.
//!
//! Checked: the meta value; every block (key, header, checksum, each entry's
//! checksum and decoding, seq order, nothing beyond the meta's next seq);
//! every dead-letter and requeued frame; the quarantine; the id index's
//! partitions (header, run chunks, filter chunks); and the counters against a
//! recount of the records. An error from sled itself (its log damaged) is a
//! fault with the file offset, and a panic inside sled is caught and named:
//! never a raw `Debug` dump, never a crash.

use std::collections::BTreeSet;

use spool_format::{decode_block, decode_entry, decode_record, State};

use crate::index::decode_chunk;
use crate::layout::{key_u64, len_u64, unseal, Meta, META_KEY, P_BLOCK, P_DEAD, P_FILTER, P_PARTITION, P_QUARANTINE, P_REQUEUE, P_RUN, P_TOMBSTONE};
use crate::open::catch_sled;
use crate::{describe_sled, Spool, SpoolError};

/// Faults kept in a report; the rest are counted ([`VerifyReport::faults_total`]).
/// A thousand is more than anyone reads and keeps a report of a badly damaged
/// spool small.
pub const FAULTS_KEPT_MAX: usize = 1000;

/// One fault found by [`Spool::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fault {
    /// The record's seq where known.
    pub seq: Option<u64>,
    pub what: String,
}

/// The result of a full check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Records (entries, dead letters, requeued) read and found valid or not.
    pub records: u64,
    /// The first [`FAULTS_KEPT_MAX`] faults.
    pub faults: Vec<Fault>,
    /// Every fault found.
    pub faults_total: u64,
}

impl VerifyReport {
    fn fault(&mut self, seq: Option<u64>, what: impl Into<String>) {
        self.faults_total += 1;
        if self.faults.len() < FAULTS_KEPT_MAX {
            self.faults.push(Fault { seq, what: what.into() });
        }
    }

    pub fn is_clean(&self) -> bool {
        self.faults_total == 0
    }
}

/// Iterates a sled scan, turning an error of sled into a fault that ends the
/// scan (sled cannot read past it).
fn scan(
    report: &mut VerifyReport,
    what: &str,
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    mut f: impl FnMut(&mut VerifyReport, sled::IVec, sled::IVec),
) {
    for item in iter {
        match item {
            Ok((k, v)) => f(report, k, v),
            Err(e) => {
                report.fault(None, format!("{what}: {}", describe_sled(&e)));
                return;
            }
        }
    }
}

impl Spool {
    /// Checks everything, read-only (see the module docs). `progress` gets the
    /// records checked so far.
    pub fn verify(&self, progress: impl FnMut(u64)) -> Result<VerifyReport, SpoolError> {
        catch_sled("verify", || Ok(self.verify_inner(progress)))
    }

    fn verify_inner(&self, mut progress: impl FnMut(u64)) -> VerifyReport {
        let db = &self.inner.db;
        let mut r = VerifyReport::default();
        let meta = match db.get(META_KEY) {
            Ok(Some(v)) => match Meta::decode(&v) {
                Ok(m) => Some(m),
                Err(e) => {
                    r.fault(None, format!("meta value: {e}"));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                r.fault(None, format!("meta value: {}", describe_sled(&e)));
                None
            }
        };
        let next_seq = meta.map_or(u64::MAX, |m| m.next_seq);
        let (watermark, requeued_mem) = {
            let a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
            (a.watermark, a.requeued.keys().copied().collect::<BTreeSet<u64>>())
        };
        let mut moved = BTreeSet::new();
        let mut dead = 0u64;
        for prefix in [P_DEAD, P_REQUEUE] {
            scan(&mut r, "dead letters and requeued records", db.scan_prefix([prefix]), |r, k, v| {
                let seq = key_u64(&k);
                r.records += 1;
                moved.insert(seq);
                match decode_record(&v) {
                    Err(e) => r.fault(Some(seq), format!("record: {e}")),
                    Ok(rec) if rec.seq != seq => r.fault(Some(seq), format!("record says seq {}", rec.seq)),
                    Ok(rec) => match (prefix, &rec.state) {
                        (P_DEAD, State::Dead { .. }) => dead += 1,
                        (P_REQUEUE, State::Pending) => {
                            if !requeued_mem.contains(&seq) {
                                r.fault(Some(seq), "requeued record unknown to the open spool");
                            }
                        }
                        (_, s) => r.fault(Some(seq), format!("a {} record in the {} tree", s.name(), prefix as char)),
                    },
                }
            });
        }
        scan(&mut r, "dropped dead letters", db.scan_prefix([P_TOMBSTONE]), |_, k, _| {
            moved.insert(key_u64(&k));
        });
        let mut pending = 0u64;
        let mut prev_last: Option<u64> = None;
        let mut done_above = Vec::new();
        scan(&mut r, "blocks", db.scan_prefix([P_BLOCK]), |r, k, v| {
            let first = key_u64(&k);
            let block = match decode_block(&v) {
                Ok(b) => b,
                Err(e) => {
                    // Name exactly what is damaged: each entry has its own
                    // checksum.
                    match spool_format::salvage_block(&v).filter(|s| s.first_seq == first) {
                        Some(s) => {
                            let moved_here = s.good.iter().map(|(q, _)| q).chain(s.bad.iter().map(|(q, _)| q)).filter(|q| moved.contains(*q)).count();
                            r.records += len_u64(s.good.len() + s.bad.len() - moved_here);
                            for (i, (seq, why)) in s.bad.iter().enumerate() {
                                let rest = if s.rest_lost && i + 1 == s.bad.len() { "; the rest of the block is unreadable" } else { "" };
                                r.fault(Some(*seq), format!("record in block {first}: {why}{rest}"));
                            }
                            if s.bad.is_empty() {
                                r.fault(Some(first), format!("block {first}: {e} (every entry intact)"));
                            }
                        }
                        None => {
                            r.records += 1;
                            r.fault(Some(first), format!("block {first}: {e}"));
                        }
                    }
                    return;
                }
            };
            let h = &block.header;
            if h.first_seq != first {
                r.fault(Some(first), format!("block under seq {first} says it starts at {}", h.first_seq));
            }
            if prev_last.is_some_and(|p| h.first_seq <= p) {
                r.fault(Some(first), "block overlaps the one before it");
            }
            if h.last_seq >= next_seq {
                r.fault(Some(first), format!("block holds seq {}, beyond the meta's next seq {next_seq}", h.last_seq));
            }
            prev_last = Some(h.last_seq);
            for item in block.frames() {
                if !matches!(&item, Ok((seq, _)) if moved.contains(seq)) {
                    r.records += 1;
                }
                progress(r.records);
                match item {
                    Err(e) => {
                        r.fault(Some(first), format!("block {first}: {e}"));
                        break;
                    }
                    Ok((seq, frame)) => {
                        if let Err(e) = decode_entry(frame) {
                            r.fault(Some(seq), format!("record: {e}"));
                        } else if seq > watermark && !moved.contains(&seq) {
                            done_above.push(seq);
                        }
                    }
                }
            }
        });
        {
            let a = self.inner.acks.lock().unwrap_or_else(|p| p.into_inner());
            pending += done_above.iter().filter(|s| !a.is_done(**s)).count() as u64 + a.requeued.len() as u64;
            let c = a.counts;
            if r.faults_total == 0 && !a.done.values().any(Option::is_some) {
                if c.pending != pending {
                    r.fault(None, format!("pending counter says {}, the records say {pending}", c.pending));
                }
                if c.dead != dead {
                    r.fault(None, format!("dead counter says {}, the records say {dead}", c.dead));
                }
            }
        }
        scan(&mut r, "quarantine", db.scan_prefix([P_QUARANTINE]), |r, k, v| {
            let first = key_u64(&k);
            match spool_format::peek_block_header(&v) {
                Some((f, l, _)) if f == first => r.fault(Some(first), format!("block of seqs {f}..={l} is in quarantine")),
                _ => r.fault(Some(first), "record is in quarantine"),
            }
        });
        scan(&mut r, "id index", db.scan_prefix([P_PARTITION]), |r, k, v| {
            let pid = key_u64(&k);
            if unseal(&v).is_err() {
                r.fault(None, format!("id index partition {pid}: header checksum mismatch"));
            }
        });
        scan(&mut r, "id index runs", db.scan_prefix([P_RUN]), |r, k, v| {
            if let Err(e) = decode_chunk(&v) {
                r.fault(None, format!("id index partition {} run chunk {}: {e}", key_u64(&k), key_u64(&k[8..])));
            }
        });
        scan(&mut r, "id index filters", db.scan_prefix([P_FILTER]), |r, k, v| {
            if let Err(e) = unseal(&v) {
                r.fault(None, format!("id index partition {} filter chunk {}: {e}", key_u64(&k), key_u64(&k[8..])));
            }
        });
        r
    }
}
