//! Known corruptions: flip a byte, truncate a record; reopen; assert exactly
//! what is reported, and that the corrupt record is never handed out.

use spool::{raw_db, record_key, Spool};
use spool_format::DecodeError;

use crate::{event, open, rt};

fn spool_with(n: u64) -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    rt().block_on(async {
        for i in 0..n {
            spool.append(event(&format!("k{i}"), 100 + i)).await.expect("append");
        }
    });
    (dir, spool)
}

/// Rewrites the stored frame of `seq` with `f` applied, durably, then reopens.
fn corrupt(dir: &tempfile::TempDir, spool: Spool, seq: u64, f: impl FnOnce(&mut Vec<u8>)) -> Spool {
    let db = raw_db(&spool);
    let mut bytes = db.get(record_key(seq)).expect("get").expect("present").to_vec();
    f(&mut bytes);
    db.insert(record_key(seq), bytes).expect("insert");
    db.flush().expect("flush");
    drop(db);
    spool.close();
    drop(spool);
    open(dir.path())
}

#[test]
fn a_flipped_byte_is_reported_by_verify_and_quarantined_on_read() {
    let (dir, spool) = spool_with(5);
    let spool = corrupt(&dir, spool, 3, |b| {
        let i = b.len() - 10;
        b[i] ^= 0x40;
    });
    // verify is read-only and names the record and the fault.
    let report = spool.verify(|_| {}).expect("verify");
    assert_eq!(report.records, 5);
    assert_eq!(report.faults.len(), 1, "{:?}", report.faults);
    assert_eq!(report.faults[0].seq, Some(3));
    assert!(report.faults[0].what.contains("checksum mismatch"), "{}", report.faults[0].what);

    // The forwarder's read skips it and never returns it as valid.
    let pending = spool.read_pending(0, 100, usize::MAX).expect("read");
    assert_eq!(pending.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 4, 5]);
    let s = spool.stats().expect("stats");
    assert_eq!(s.quarantined, 1);
    assert_eq!(s.pending_events, 4);
    let q = spool.quarantined().expect("quarantine");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].seq, 3);
    assert!(spool.get(3).expect("get").is_none());
    // verify now reports it as quarantined, still a fault (exit 1 for spoolctl).
    let report = spool.verify(|_| {}).expect("verify");
    assert_eq!(report.records, 4);
    assert_eq!(report.faults.len(), 1);
    assert!(report.faults[0].what.contains("quarantine"), "{:?}", report.faults);
    // A client resending the lost event gets it spooled again.
    let again = rt().block_on(spool.append(event("k2", 102))).expect("append");
    assert!(matches!(again, spool::AppendOutcome::Accepted { seq: 6 }), "{again:?}");
}

#[test]
fn a_truncated_record_is_reported_as_such() {
    let (dir, spool) = spool_with(2);
    let spool = corrupt(&dir, spool, 1, |b| b.truncate(b.len() / 2));
    let report = spool.verify(|_| {}).expect("verify");
    assert_eq!(report.faults.len(), 1);
    assert_eq!(report.faults[0].seq, Some(1));
    assert!(report.faults[0].what.contains("does not match"), "{}", report.faults[0].what);
    assert!(spool.get(1).expect("get").is_none());
    assert_eq!(spool.stats().expect("stats").quarantined, 1);
}

#[test]
fn a_record_moved_to_another_seq_is_caught() {
    let (dir, spool) = spool_with(2);
    // A well-formed frame under the wrong key: the checksum holds, the seq does not.
    let other = raw_db(&spool).get(record_key(2)).expect("get").expect("present").to_vec();
    let spool = corrupt(&dir, spool, 1, |b| *b = other);
    let report = spool.verify(|_| {}).expect("verify");
    assert!(report.faults.iter().any(|f| f.seq == Some(1) && f.what.contains("says seq 2")), "{:?}", report.faults);
    let pending = spool.read_pending(0, 10, usize::MAX).expect("read");
    assert_eq!(pending.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn decode_errors_are_typed() {
    let (dir, spool) = spool_with(1);
    let raw = raw_db(&spool).get(record_key(1)).expect("get").expect("present").to_vec();
    drop(dir);
    let mut bad = raw.clone();
    bad[0] = b'X';
    assert!(matches!(spool_format::decode_record(&bad), Err(DecodeError::BadMagic { .. })));
    assert!(spool_format::decode_record(&raw).is_ok());
}

/// What a crash can leave between the ordered writes of a change (record first,
/// indexes after) is repaired from the records when the spool is next opened.
#[test]
fn half_applied_changes_are_repaired_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let spool = open(dir.path());
        rt().block_on(async {
            for i in 0..4 {
                spool.append(event(&format!("h{i}"), 1)).await.expect("append");
            }
        });
        spool.mark_acked(&[(1, 1, None)]).expect("ack");
        spool.mark_dead(4, 1, "rejected", "bad").expect("dead");
        let db = raw_db(&spool);
        let pkey = |seq: u64| {
            let mut k = record_key(seq);
            k[0] = b'p';
            k
        };
        // seq 1: acked record, but the crash came before its pending entry went.
        db.insert(pkey(1), Vec::<u8>::new()).expect("insert");
        // seq 2: the crash came before the id entry was written.
        let mut ikey = b"i".to_vec();
        ikey.extend_from_slice(b"h1");
        db.remove(ikey).expect("remove");
        // seq 3: the crash came right after the record, before its pending entry.
        db.remove(pkey(3)).expect("remove");
        // seq 4: requeued record written, index change not.
        let mut r = spool.get(4).expect("get").expect("present");
        r.state = spool_format::State::Pending;
        db.insert(record_key(4), spool_format::encode_record(&r)).expect("insert");
        db.flush().expect("flush");
        // No close(): this is a crash.
    }
    let spool = open(dir.path());
    let pending: Vec<u64> = spool.read_pending(0, 10, usize::MAX).expect("read").iter().map(|r| r.seq).collect();
    assert_eq!(pending, vec![2, 3, 4]);
    assert_eq!(spool.lookup("h1").expect("lookup").map(|r| r.seq), Some(2));
    let dup = rt().block_on(spool.append(event("h1", 1))).expect("append");
    assert_eq!(dup, spool::AppendOutcome::Duplicate { seq: 2 });
    let report = spool.verify(|_| {}).expect("verify");
    assert!(report.faults.is_empty(), "{:?}", report.faults);
    let s = spool.stats().expect("stats");
    assert_eq!((s.pending_events, s.acked_events, s.dead_events), (3, 1, 0));
}
