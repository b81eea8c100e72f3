//! Model-based property test: random append / read / ack / dead-letter /
//! requeue / drop / compact / reopen sequences against an in-memory model.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use spool::{AppendOutcome, Spool};
use spool_format::{OffsetDateTime, State};

use crate::{event, open, rt};

#[derive(Debug, Clone)]
enum Op {
    /// Append event id `id % 12` with amount `amount % 3 + 1` (so that
    /// duplicates and conflicts happen often).
    Append { id: u8, amount: u8 },
    AppendBatch { ids: Vec<(u8, u8)> },
    /// Read pending from the cursor, ack the first `n`.
    ReadAndAck { n: u8 },
    /// Ack the k-th pending record alone: out of order, held in memory above
    /// the watermark (and forgotten by a restart).
    AckOne { k: u8 },
    /// Dead-letter the k-th pending record.
    Dead { k: u8 },
    /// Requeue the k-th dead record.
    Requeue { k: u8 },
    /// Drop the k-th dead record.
    Drop { k: u8 },
    /// Compact as if the retention had passed.
    CompactAll,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(id, amount)| Op::Append { id, amount }),
        1 => proptest::collection::vec((any::<u8>(), any::<u8>()), 1..6).prop_map(|ids| Op::AppendBatch { ids }),
        2 => any::<u8>().prop_map(|n| Op::ReadAndAck { n }),
        2 => any::<u8>().prop_map(|k| Op::AckOne { k }),
        1 => any::<u8>().prop_map(|k| Op::Dead { k }),
        1 => any::<u8>().prop_map(|k| Op::Requeue { k }),
        1 => any::<u8>().prop_map(|k| Op::Drop { k }),
        1 => Just(Op::CompactAll),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum MState {
    Pending,
    Acked,
    Dead,
}

#[derive(Default, Debug)]
struct Model {
    /// seq -> (id, amount, state)
    records: BTreeMap<u64, (String, u64, MState)>,
    /// seqs handed out so far; the next one must be larger
    last_seq: u64,
    /// Pending records that were requeued (done for the cursor: they do not
    /// hold the watermark back).
    requeued: std::collections::BTreeSet<u64>,
    /// Requeued records that were then acked: that ack is durable (it
    /// survives a restart), unlike an ack held above the watermark.
    acked_durably: std::collections::BTreeSet<u64>,
}

impl Model {
    fn by_id(&self, id: &str) -> Option<(u64, u64)> {
        self.records.iter().find(|(_, (i, _, _))| i == id).map(|(s, (_, a, _))| (*s, *a))
    }

    fn expect_append(&mut self, id: &str, amount: u64, got: AppendOutcome) -> Result<(), TestCaseError> {
        match self.by_id(id) {
            Some((seq, a)) if a == amount => prop_assert_eq!(got, AppendOutcome::Duplicate { seq }),
            Some((seq, _)) => prop_assert_eq!(got, AppendOutcome::Conflict { seq }),
            None => {
                let AppendOutcome::Accepted { seq } = got else {
                    return Err(TestCaseError::fail(format!("expected accepted, got {got:?}")));
                };
                prop_assert!(seq > self.last_seq, "seq {} not above {}", seq, self.last_seq);
                self.last_seq = seq;
                self.records.insert(seq, (id.to_owned(), amount, MState::Pending));
            }
        }
        Ok(())
    }

    /// The acked watermark the spool must have: everything below the first
    /// pending record that was never requeued is done.
    fn watermark(&self) -> u64 {
        self.records
            .iter()
            .find(|(s, r)| r.2 == MState::Pending && !self.requeued.contains(s))
            .map_or(self.last_seq, |(s, _)| s - 1)
    }

    /// A restart forgets the acks held above the watermark: those records are
    /// pending again.
    fn restart(&mut self) {
        let w = self.watermark();
        for (seq, r) in self.records.iter_mut() {
            if *seq > w && r.2 == MState::Acked && !self.requeued.contains(seq) && !self.acked_durably.contains(seq) {
                r.2 = MState::Pending;
            }
        }
    }

    fn nth(&self, state: MState, k: u8) -> Option<u64> {
        let v: Vec<u64> = self.records.iter().filter(|(_, r)| r.2 == state).map(|(s, _)| *s).collect();
        if v.is_empty() {
            None
        } else {
            Some(v[usize::from(k) % v.len()])
        }
    }
}

fn check_matches(spool: &Spool, model: &Model) -> Result<(), TestCaseError> {
    let pending: Vec<u64> = spool.read_pending(0, 10_000, usize::MAX).expect("read").iter().map(|r| r.seq).collect();
    let want: Vec<u64> = model.records.iter().filter(|(_, r)| r.2 == MState::Pending).map(|(s, _)| *s).collect();
    prop_assert_eq!(pending, want);
    let s = spool.stats().expect("stats");
    let count = |st: MState| model.records.values().filter(|r| r.2 == st).count() as u64;
    prop_assert_eq!(s.pending_events, count(MState::Pending));
    prop_assert_eq!(s.acked_events, count(MState::Acked));
    prop_assert_eq!(s.dead_events, count(MState::Dead));
    for (seq, (id, amount, st)) in &model.records {
        let r = spool.get(*seq).expect("get");
        let r = r.ok_or_else(|| TestCaseError::fail(format!("seq {seq} missing")))?;
        prop_assert_eq!(&r.event.id, id);
        prop_assert_eq!(r.event.amount, *amount);
        let ok = matches!((&r.state, st), (State::Pending, MState::Pending) | (State::Acked { .. }, MState::Acked) | (State::Dead { .. }, MState::Dead));
        prop_assert!(ok, "seq {} is {:?}, model says {:?}", seq, r.state, st);
    }
    prop_assert_eq!(s.acked_watermark, model.watermark(), "the acked watermark");
    let report = spool.verify(|_| {}).expect("verify");
    prop_assert!(report.faults.is_empty(), "{:?}", report.faults);
    prop_assert_eq!(report.records, model.records.len() as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn spool_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let mut spool = open(dir.path());
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Append { id, amount } => {
                    let id = format!("id{}", id % 12);
                    let amount = u64::from(amount % 3) + 1;
                    let got = rt.block_on(spool.append(event(&id, amount))).expect("append");
                    model.expect_append(&id, amount, got)?;
                }
                Op::AppendBatch { ids } => {
                    let evs: Vec<_> = ids.iter().map(|(i, a)| (format!("id{}", i % 12), u64::from(a % 3) + 1)).collect();
                    let got = rt.block_on(spool.append_batch(evs.iter().map(|(i, a)| event(i, *a)).collect()));
                    for ((id, amount), g) in evs.iter().zip(got) {
                        model.expect_append(id, *amount, g.expect("append"))?;
                    }
                }
                Op::ReadAndAck { n } => {
                    let page = spool.read_pending(0, usize::from(n % 5), usize::MAX).expect("read");
                    let acks: Vec<_> = page.iter().map(|r| (r.seq, 1, None)).collect();
                    spool.mark_acked(&acks).expect("ack");
                    for r in page {
                        model.records.get_mut(&r.seq).expect("in model").2 = MState::Acked;
                        if model.requeued.remove(&r.seq) {
                            model.acked_durably.insert(r.seq);
                        }
                    }
                }
                Op::AckOne { k } => {
                    if let Some(seq) = model.nth(MState::Pending, k) {
                        spool.mark_acked(&[(seq, 1, None)]).expect("ack");
                        model.records.get_mut(&seq).expect("in model").2 = MState::Acked;
                        if model.requeued.remove(&seq) {
                            model.acked_durably.insert(seq);
                        }
                    }
                }
                Op::Dead { k } => {
                    if let Some(seq) = model.nth(MState::Pending, k) {
                        prop_assert!(spool.mark_dead(seq, 1, "rejected", "test").expect("dead"));
                        model.records.get_mut(&seq).expect("in model").2 = MState::Dead;
                        model.requeued.remove(&seq);
                    }
                }
                Op::Requeue { k } => {
                    if let Some(seq) = model.nth(MState::Dead, k) {
                        prop_assert!(rt.block_on(spool.requeue(seq)).expect("requeue"));
                        model.records.get_mut(&seq).expect("in model").2 = MState::Pending;
                        model.requeued.insert(seq);
                    }
                }
                Op::Drop { k } => {
                    if let Some(seq) = model.nth(MState::Dead, k) {
                        prop_assert!(rt.block_on(spool.drop_dead(seq)).expect("drop"));
                        model.records.remove(&seq);
                    }
                }
                Op::CompactAll => {
                    // Compaction removes whole blocks below the watermark:
                    // which acked records go depends on how they were packed.
                    // It must never take a pending or dead record, and it
                    // must count exactly what it took.
                    let later = OffsetDateTime::now_utc() + Duration::from_secs(8 * 86400);
                    let removed = spool.compact(later).expect("compact");
                    let mut gone = Vec::new();
                    for (seq, r) in &model.records {
                        if spool.get(*seq).expect("get").is_none() {
                            prop_assert_eq!(&r.2, &MState::Acked, "compaction took seq {} in state {:?}", seq, r.2);
                            gone.push(*seq);
                        }
                    }
                    prop_assert_eq!(removed, gone.len() as u64);
                    for seq in gone {
                        model.records.remove(&seq);
                    }
                }
                Op::Reopen => {
                    rt.block_on(spool.wait_durable()).expect("durable");
                    spool.close();
                    drop(spool);
                    spool = open(dir.path());
                    model.restart();
                }
            }
            check_matches(&spool, &model)?;
        }
        // Seqs never go back, even after everything was compacted away.
        let got = rt.block_on(spool.append(event("final-unique", 1))).expect("append");
        model.expect_append("final-unique", 1, got)?;
    }
}
