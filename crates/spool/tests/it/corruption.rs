//! Known corruptions: flip a byte, truncate a block, damage sled's own files;
//! reopen; assert exactly what is reported, and that nothing corrupt is ever
//! handed out, and nothing panics.

use spool::{block_key, raw_db, Spool};
use spool_format::BlockError;

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

/// Rewrites the stored block of `seq` (one append per commit: one record per
/// block) with `f` applied, durably, then reopens.
fn corrupt(dir: &tempfile::TempDir, spool: Spool, seq: u64, f: impl FnOnce(&mut Vec<u8>)) -> Spool {
    let db = raw_db(&spool);
    let mut bytes = db.get(block_key(seq)).expect("get").expect("present").to_vec();
    f(&mut bytes);
    db.insert(block_key(seq), bytes).expect("insert");
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
    assert!(spool.read_pending(0, 10, usize::MAX).expect("read").iter().all(|r| r.seq != 1));
    assert!(spool.get(1).expect("get").is_none());
    assert_eq!(spool.stats().expect("stats").quarantined, 1);
}

#[test]
fn a_block_moved_to_another_seq_is_caught() {
    let (dir, spool) = spool_with(2);
    // A well-formed block under the wrong key: the checksum holds, the seq does not.
    let other = raw_db(&spool).get(block_key(2)).expect("get").expect("present").to_vec();
    let spool = corrupt(&dir, spool, 1, |b| *b = other);
    let report = spool.verify(|_| {}).expect("verify");
    assert!(report.faults.iter().any(|f| f.seq == Some(1) && f.what.contains("starts at 2")), "{:?}", report.faults);
    let pending = spool.read_pending(0, 10, usize::MAX).expect("read");
    assert_eq!(pending.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn decode_errors_are_typed() {
    let (dir, spool) = spool_with(1);
    let raw = raw_db(&spool).get(block_key(1)).expect("get").expect("present").to_vec();
    drop(dir);
    let mut bad = raw.clone();
    bad[0] = b'X';
    assert!(matches!(spool_format::decode_block(&bad), Err(BlockError::BadMagic { .. })));
    assert!(spool_format::decode_block(&raw).is_ok());
}

/// The meta value (counters and positions, written with every commit) is
/// what an open trusts; if it is damaged or missing the spool refuses to
/// open with a named fault instead of guessing.
#[test]
fn a_damaged_or_missing_meta_is_named_at_open() {
    let (dir, spool) = spool_with(3);
    let db = raw_db(&spool);
    let mut meta = db.get(b"M").expect("get").expect("meta present").to_vec();
    meta[5] ^= 0x01;
    db.insert(b"M", meta).expect("insert");
    db.flush().expect("flush");
    drop(db);
    drop(spool);
    let err = spool::Spool::open(spool::SpoolConfig::for_dir(dir.path())).expect_err("a damaged meta must refuse");
    assert!(matches!(err, spool::SpoolError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("meta value") && err.to_string().contains("checksum"), "{err}");
}

/// Bytes flipped anywhere in sled's `db` file: the spool either names a
/// fault (at open, in verify, or by quarantining on read) or every record
/// reads back exactly as written. Never a panic, never a raw `Debug` dump,
/// never a wrong record.
#[test]
fn flips_anywhere_in_sleds_files_are_named_or_harmless() {
    use rand::{Rng, SeedableRng};
    let events = 3_000u64;
    let template = tempfile::tempdir().expect("tempdir");
    {
        let spool = open(template.path());
        rt().block_on(async {
            for chunk in 0..events / 100 {
                let batch: Vec<_> = (0..100).map(|i| event(&format!("f-{}", chunk * 100 + i), 1 + chunk * 100 + i)).collect();
                for r in spool.append_batch(batch).await {
                    r.expect("append");
                }
            }
        });
        spool.close();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0ff_9e1d);
    let (mut named, mut harmless) = (0, 0);
    for round in 0..12 {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(template.path(), dir.path());
        let db_file = dir.path().join("sled/db");
        let mut bytes = std::fs::read(&db_file).expect("read db");
        for _ in 0..4 {
            let i = rng.gen_range(0..bytes.len());
            bytes[i] ^= 1 << rng.gen_range(0..8);
        }
        std::fs::write(&db_file, &bytes).expect("write db");
        let outcome = std::panic::catch_unwind(|| check_after_flips(dir.path(), events));
        match outcome {
            Ok(Ok(())) => harmless += 1,
            Ok(Err(fault)) => {
                assert!(!fault.contains("Inline(") && !fault.contains("Some("), "round {round}: raw Debug in {fault}");
                named += 1;
            }
            Err(_) => panic!("round {round}: a panic escaped the spool"),
        }
    }
    eprintln!("flips: {named} rounds named a fault, {harmless} were harmless (every record intact)");
}

/// Ok when every record reads back intact and verify is clean; Err(the
/// named fault) otherwise. Panics only on a wrong record (the failure).
fn check_after_flips(dir: &std::path::Path, events: u64) -> Result<(), String> {
    let spool = spool::Spool::open(spool::SpoolConfig::for_dir(dir)).map_err(|e| e.to_string())?;
    let report = spool.verify(|_| {}).map_err(|e| e.to_string())?;
    if let Some(f) = report.faults.first() {
        return Err(f.what.clone());
    }
    let records = spool.read_pending(0, usize::MAX, usize::MAX).map_err(|e| e.to_string())?;
    let quarantined = spool.stats().map_err(|e| e.to_string())?.quarantined;
    for r in &records {
        // A record that is handed out is exactly the one written.
        assert_eq!(r.event.id, format!("f-{}", r.seq - 1), "seq {} holds the wrong event", r.seq);
        assert_eq!(r.event.amount, r.seq, "seq {} holds a changed event", r.seq);
    }
    if quarantined > 0 || crate::len(&records) != events {
        return Err(format!("{} of {events} records readable, {quarantined} quarantined", records.len()));
    }
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// One damaged record in a block of five: verify names that record only, and
/// the four others are still forwarded (each entry has its own checksum).
#[test]
fn a_damaged_record_does_not_take_its_block_neighbours_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    let batch: Vec<_> = (1..=5).map(|i| event(&format!("n{i}"), i)).collect();
    for r in rt().block_on(spool.append_batch(batch)) {
        r.expect("append");
    }
    let spool = corrupt(&dir, spool, 1, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x01;
    });
    let report = spool.verify(|_| {}).expect("verify");
    assert_eq!(report.faults.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![Some(3)], "{:?}", report.faults);
    assert!(report.faults[0].what.contains("checksum"), "{:?}", report.faults);
    let pending: Vec<u64> = spool.read_pending(0, 10, usize::MAX).expect("read").iter().map(|r| r.seq).collect();
    assert_eq!(pending, vec![1, 2, 4, 5]);
    let s = spool.stats().expect("stats");
    assert_eq!((s.pending_events, s.quarantined), (4, 1));
    assert!(spool.get(3).expect("get").is_none());
    assert_eq!(spool.get(4).expect("get").expect("kept").event.id, "n4");
    // The damaged record is gone from dedupe too: a resend is taken as new.
    assert!(matches!(rt().block_on(spool.append(event("n3", 3))).expect("append"), spool::AppendOutcome::Accepted { seq: 6 }));
}
