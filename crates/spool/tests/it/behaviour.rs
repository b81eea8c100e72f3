//! The spool's API, case by case.

use std::sync::Arc;
use std::time::Duration;

use spool::{AppendOutcome, Spool, SpoolConfig, SpoolError, StateFilter};
use spool_format::{OffsetDateTime, State};

use crate::{event, open, rt};

#[test]
fn append_dedupes_by_id_and_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    rt().block_on(async {
        let a = spool.append(event("e1", 100)).await.expect("append");
        let AppendOutcome::Accepted { seq } = a else { panic!("{a:?}") };
        assert_eq!(spool.append(event("e1", 100)).await.expect("dup"), AppendOutcome::Duplicate { seq });
        assert_eq!(spool.append(event("e1", 101)).await.expect("conflict"), AppendOutcome::Conflict { seq });
        let b = spool.append(event("e2", 100)).await.expect("append");
        assert_eq!(b, AppendOutcome::Accepted { seq: seq + 1 });
    });
    let stats = spool.stats().expect("stats");
    assert_eq!(stats.pending_events, 2, "duplicates and conflicts write nothing");
    let r = spool.lookup("e1").expect("lookup").expect("present");
    assert_eq!(r.event.amount, 100);
    assert_eq!(r.state, State::Pending);
    assert!(spool.lookup("nope").expect("lookup").is_none());
}

#[test]
fn batch_append_keeps_order_and_reports_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    let results = rt().block_on(spool.append_batch(vec![
        event("b1", 1),
        event("b2", 2),
        event("b1", 1),
        event("b2", 3),
    ]));
    let outcomes: Vec<_> = results.into_iter().map(|r| r.expect("ok")).collect();
    assert!(matches!(outcomes[0], AppendOutcome::Accepted { seq: 1 }));
    assert!(matches!(outcomes[1], AppendOutcome::Accepted { seq: 2 }));
    assert_eq!(outcomes[2], AppendOutcome::Duplicate { seq: 1 });
    assert_eq!(outcomes[3], AppendOutcome::Conflict { seq: 2 });
}

#[test]
fn pending_reads_in_seq_order_from_a_cursor_with_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    rt().block_on(async {
        for i in 0..10 {
            spool.append(event(&format!("p{i}"), 10 + i)).await.expect("append");
        }
    });
    let all = spool.read_pending(0, 100, usize::MAX).expect("read");
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    let page = spool.read_pending(4, 3, usize::MAX).expect("read");
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 6, 7]);
    // The byte limit always lets one record through, then stops before passing it.
    let one = spool.read_pending(0, 100, 1).expect("read");
    assert_eq!(one.len(), 1);
    spool.mark_acked(&[(2, 1, Some(77)), (3, 1, None)]).expect("ack");
    spool.mark_dead(4, 2, "rejected", "amount: too big").expect("dead");
    let rest = spool.read_pending(0, 100, usize::MAX).expect("read");
    assert_eq!(rest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 5, 6, 7, 8, 9, 10]);
    let r2 = spool.get(2).expect("get").expect("present");
    // Format 2 keeps no per-record ack data: the ledger's seq and the attempts
    // of an acked record are not stored (the watermark is).
    assert!(matches!(r2.state, State::Acked { ledger_seq: None, .. }), "{:?}", r2.state);
    let r4 = spool.get(4).expect("get").expect("present");
    match r4.state {
        State::Dead { code, reason, .. } => {
            assert_eq!(code, "rejected");
            assert_eq!(reason, "amount: too big");
        }
        other => panic!("{other:?}"),
    }
    let s = spool.stats().expect("stats");
    assert_eq!((s.pending_events, s.acked_events, s.dead_events), (7, 2, 1));
    assert_eq!(spool.list(StateFilter::Dead, 0, 10).expect("list").len(), 1);
    assert_eq!(spool.list(StateFilter::Acked, 0, 10).expect("list").len(), 2);
    assert_eq!(spool.list(StateFilter::All, 0, 100).expect("list").len(), 10);
    assert_eq!(spool.tail(3).expect("tail").iter().map(|r| r.seq).collect::<Vec<_>>(), vec![8, 9, 10]);
}

#[test]
fn ack_only_moves_pending_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    rt().block_on(spool.append(event("x", 1))).expect("append");
    spool.mark_dead(1, 1, "conflict", "other event").expect("dead");
    // A late ack for a record an operator already dead-lettered changes nothing.
    spool.mark_acked(&[(1, 2, None)]).expect("ack");
    assert!(matches!(spool.get(1).expect("get").expect("present").state, State::Dead { .. }));
    assert!(!spool.mark_dead(99, 1, "x", "y").expect("dead of missing"), "unknown seq is reported");
}

#[test]
fn stats_never_count_a_dead_letter_that_list_does_not_show() {
    // mark_dead moves the counts at once and the dead letter reaches sled in
    // the writer's next round: stats() waits for that round, so a watcher that
    // sees a dead count (or pending falling to 0) finds those dead letters.
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Arc::new(open(dir.path()));
    const N: u64 = 400;
    rt().block_on(async {
        for i in 0..N {
            spool.append(event(&format!("w{i}"), 1)).await.expect("append");
        }
    });
    let marker = {
        let spool = Arc::clone(&spool);
        std::thread::spawn(move || {
            for seq in 1..=N {
                assert!(spool.mark_dead(seq, 1, "rejected", "bad").expect("dead"));
            }
        })
    };
    let mut checks = 0u64;
    loop {
        let s = spool.stats().expect("stats");
        let listed = spool.list(StateFilter::Dead, 0, usize::MAX).expect("list").len() as u64;
        assert!(listed >= s.dead_events, "stats count {} dead letters, list shows {listed}", s.dead_events);
        assert_eq!(s.pending_events + s.dead_events, N, "{s:?}");
        checks += 1;
        if s.pending_events == 0 {
            break;
        }
    }
    marker.join().expect("marker");
    assert!(checks > 1, "the watcher ran beside the marker");
    assert_eq!(spool.list(StateFilter::Dead, 0, usize::MAX).expect("list").len() as u64, N);
}

#[test]
fn dead_letters_requeue_and_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    rt().block_on(async {
        spool.append(event("d1", 1)).await.expect("append");
        spool.append(event("d2", 2)).await.expect("append");
        spool.mark_dead(1, 3, "rejected", "bad").expect("dead");
        spool.mark_dead(2, 3, "rejected", "bad").expect("dead");
        assert!(spool.requeue(1).await.expect("requeue"));
        assert!(!spool.requeue(1).await.expect("requeue again"), "no longer dead");
        assert!(spool.drop_dead(2).await.expect("drop"));
        assert!(!spool.drop_dead(2).await.expect("drop again"));
        assert!(!spool.drop_dead(1).await.expect("drop pending"), "only dead letters can be dropped");
    });
    assert_eq!(spool.read_pending(0, 10, usize::MAX).expect("read").len(), 1);
    assert!(spool.get(2).expect("get").is_none());
    assert!(spool.lookup("d2").expect("lookup").is_none(), "dropping removes the id entry");
    let s = spool.stats().expect("stats");
    assert_eq!((s.pending_events, s.dead_events), (1, 0));
}

#[test]
fn acked_records_requeue_to_pending_and_nothing_else_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    rt().block_on(async {
        for i in 0..4 {
            spool.append(event(&format!("r{i}"), 1)).await.expect("append");
        }
        spool.mark_acked(&[(1, 2, Some(10)), (2, 1, Some(11)), (3, 1, Some(12))]).expect("ack");
        spool.mark_dead(4, 1, "rejected", "bad").expect("dead");
        // 1 and 3 are acked; 4 is dead, 99 unknown, 3 named twice.
        assert_eq!(spool.requeue_acked(&[1, 3, 4, 99, 3]).await.expect("requeue"), 2);
        assert_eq!(spool.requeue_acked(&[1]).await.expect("again"), 0, "no longer acked");
        assert_eq!(spool.requeue_acked(&[]).await.expect("none"), 0);
    });
    let pending: Vec<u64> = spool.read_pending(0, 10, usize::MAX).expect("read").iter().map(|r| r.seq).collect();
    assert_eq!(pending, vec![1, 3]);
    assert_eq!(spool.get(1).expect("get").expect("present").attempts, 0, "attempts start over");
    assert!(matches!(spool.get(2).expect("get").expect("present").state, State::Acked { .. }));
    assert!(matches!(spool.get(4).expect("get").expect("present").state, State::Dead { .. }));
    let s = spool.stats().expect("stats");
    assert_eq!((s.pending_events, s.acked_events, s.dead_events), (2, 1, 1));
    // Still the same records under the same ids: dedupe applies.
    assert_eq!(spool.lookup("r0").expect("lookup").expect("present").seq, 1);
}

#[test]
fn seqs_stay_monotonic_across_reopen_and_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let spool = open(dir.path());
        rt().block_on(async {
            for i in 0..5 {
                spool.append(event(&format!("m{i}"), 1)).await.expect("append");
            }
        });
        spool.mark_acked(&[(1, 1, None), (2, 1, None), (3, 1, None), (4, 1, None), (5, 1, None)]).expect("ack");
        // Compaction far in the future removes every acked record.
        let later = OffsetDateTime::now_utc() + Duration::from_secs(8 * 86400);
        assert_eq!(spool.compact(later).expect("compact"), 5);
        assert_eq!(spool.stats().expect("stats").acked_events, 0);
        assert!(spool.lookup("m0").expect("lookup").is_none(), "ids leave with their records");
        rt().block_on(spool.wait_durable()).expect("durable");
    }
    let spool = open(dir.path());
    let next = rt().block_on(spool.append(event("after", 1))).expect("append");
    assert_eq!(next, AppendOutcome::Accepted { seq: 6 }, "seq 1..=5 are never reused");
}

#[test]
fn compaction_keeps_records_inside_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    rt().block_on(spool.append(event("keep", 1))).expect("append");
    spool.mark_acked(&[(1, 1, None)]).expect("ack");
    assert_eq!(spool.compact(OffsetDateTime::now_utc()).expect("compact"), 0);
    assert!(spool.get(1).expect("get").is_some());
    // Within the dedupe window a resend is still a duplicate.
    let again = rt().block_on(spool.append(event("keep", 1))).expect("append");
    assert_eq!(again, AppendOutcome::Duplicate { seq: 1 });
}

#[test]
fn capacity_limits_refuse_whole_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SpoolConfig::for_dir(dir.path());
    cfg.events_max = 3;
    let spool = Spool::open(cfg).expect("open");
    let rt = rt();
    for i in 0..3 {
        rt.block_on(spool.append(event(&format!("c{i}"), 1))).expect("append");
    }
    let err = rt.block_on(spool.append(event("c3", 1))).expect_err("full");
    assert!(matches!(err, SpoolError::Full { what: "events", limit: 3 }), "{err:?}");
    assert!(err.is_retryable());
    assert!(spool.check_writable().is_err());
    // A duplicate of a stored event is still answered when full.
    assert!(matches!(rt.block_on(spool.append(event("c0", 1))), Ok(AppendOutcome::Duplicate { .. })));
    // Acking frees room.
    spool.mark_acked(&[(1, 1, None)]).expect("ack");
    assert!(spool.check_writable().is_ok());
    rt.block_on(spool.append(event("c3", 1))).expect("room again");
    assert_eq!(spool.stats().expect("stats").pending_events, 3);

    // One frame's size, measured, then a limit of one and a half frames.
    let frame_bytes = {
        let d = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(SpoolConfig::for_dir(d.path())).expect("open");
        rt.block_on(s.append(event("b0", 1))).expect("append");
        s.stats().expect("stats").live_bytes
    };
    assert!(frame_bytes > 16, "a frame has at least its header");
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut cfg = SpoolConfig::for_dir(dir2.path());
    cfg.bytes_max = frame_bytes + frame_bytes / 2;
    let spool = Spool::open(cfg).expect("open");
    rt.block_on(spool.append(event("b0", 1))).expect("first fits");
    let err = rt.block_on(spool.append(event("b1", 1))).expect_err("bytes full");
    assert!(matches!(err, SpoolError::Full { what: "bytes", .. }), "{err:?}");
    assert_eq!(spool.stats().expect("stats").pending_events, 1, "nothing half-written");
}

#[test]
fn disk_reserve_refuses_appends_in_bytes_and_inodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SpoolConfig::for_dir(dir.path());
    cfg.disk_free_bytes_min = u64::MAX;
    let spool = Spool::open(cfg).expect("open");
    let err = rt().block_on(spool.append(event("r", 1))).expect_err("reserve");
    assert!(matches!(err, SpoolError::InsufficientStorage { what: "bytes", .. }), "{err:?}");
    assert_eq!(spool.stats().expect("stats").pending_events, 0);
    drop(spool);

    let free = {
        let spool = open(dir.path());
        spool.disk_free().expect("statvfs")
    };
    if let Some(inodes) = free.inodes {
        let mut cfg = SpoolConfig::for_dir(dir.path());
        cfg.disk_free_inodes_min = inodes + 1_000_000;
        let spool = Spool::open(cfg).expect("open");
        let err = rt().block_on(spool.append(event("r", 1))).expect_err("reserve");
        assert!(matches!(err, SpoolError::InsufficientStorage { what: "inodes", .. }), "{err:?}");
    } else {
        println!("this filesystem reports no inode counts; inode reserve case not exercised here");
    }
}

#[test]
fn a_second_process_cannot_open_a_held_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _held = open(dir.path());
    // sled locks the database file; a second open of the same path in this
    // process fails the same way another process would.
    match Spool::open(SpoolConfig::for_dir(dir.path())) {
        Err(SpoolError::Locked(_)) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

/// 256 concurrent appenders, each awaiting durability, all finish. Under the
/// flush_async design this deadlocked at 64; a deadlock here shows as the
/// timeout, not as a slow pass.
#[test]
fn many_concurrent_appenders_make_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    let rt = rt();
    let writers = 256;
    let per_writer = 20;
    let done = rt.block_on(async {
        let spool = Arc::new(spool.clone());
        let mut tasks = Vec::new();
        for w in 0..writers {
            let spool = Arc::clone(&spool);
            tasks.push(tokio::spawn(async move {
                for i in 0..per_writer {
                    let out = spool.append(event(&format!("w{w}-{i}"), 1)).await.expect("append");
                    assert!(matches!(out, AppendOutcome::Accepted { .. }));
                }
            }));
        }
        tokio::time::timeout(Duration::from_secs(120), async {
            for t in tasks {
                t.await.expect("writer task");
            }
        })
        .await
    });
    assert!(done.is_ok(), "appenders stalled: group commit made no progress");
    let s = spool.stats().expect("stats");
    assert_eq!(s.pending_events, writers * per_writer);
    assert!(s.commits >= 1);
    assert!(
        s.commits < writers * per_writer,
        "group commit should cover several writers per flush ({} flushes for {} appends)",
        s.commits,
        writers * per_writer
    );
}

#[test]
fn closed_spool_refuses_appends_instead_of_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    spool.close();
    let r = rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(10), spool.append(event("late", 1))).await
    });
    match r {
        Ok(Err(SpoolError::Closed)) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// Counters come back the same after a clean close (restored from the marker,
/// no scan) and after a crash (rebuilt by scanning the records).
#[test]
fn stats_survive_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let spool = open(dir.path());
        rt().block_on(async {
            for i in 0..6 {
                spool.append(event(&format!("s{i}"), 1 + i)).await.expect("append");
            }
        });
        spool.mark_acked(&[(1, 1, None), (2, 1, None)]).expect("ack");
        spool.mark_dead(3, 1, "rejected", "bad").expect("dead");
        let s = spool.stats().expect("stats");
        spool.close();
        s
    };
    let same = |a: &spool::Stats, b: &spool::Stats| {
        (a.pending_events, a.dead_events, a.acked_events, a.live_bytes, a.acked_bytes, a.next_seq)
            == (b.pending_events, b.dead_events, b.acked_events, b.live_bytes, b.acked_bytes, b.next_seq)
    };
    let after_clean = {
        let spool = open(dir.path());
        let s = spool.stats().expect("stats");
        // Append one more, then "crash" (drop without close).
        rt().block_on(spool.append(event("s6", 7))).expect("append");
        s
    };
    assert!(same(&before, &after_clean), "clean restart: {before:?} vs {after_clean:?}");
    let spool = open(dir.path());
    let after_crash = spool.stats().expect("stats");
    assert_eq!(after_crash.pending_events, before.pending_events + 1);
    assert_eq!((after_crash.dead_events, after_crash.acked_events), (before.dead_events, before.acked_events));
    assert_eq!(after_crash.next_seq, 8);
    assert!(after_crash.live_bytes > before.live_bytes);
}

/// The commit observer sees every appended event exactly once, whether it came
/// alone or in a batch; tickets count requests.
#[test]
fn commit_observer_counts_events_and_requests() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let events = Arc::new(AtomicU64::new(0));
    let tickets = Arc::new(AtomicU64::new(0));
    let (e, t) = (Arc::clone(&events), Arc::clone(&tickets));
    let observer: spool::CommitObserver = Arc::new(move |info: spool::CommitInfo| {
        e.fetch_add(info.events, Ordering::SeqCst);
        t.fetch_add(info.tickets, Ordering::SeqCst);
    });
    let spool = Spool::open_with(SpoolConfig::for_dir(dir.path()), Some(observer)).expect("open");
    rt().block_on(async {
        spool.append(event("o1", 1)).await.expect("append");
        let batch: Vec<_> = (0..10).map(|i| event(&format!("ob{i}"), 1)).collect();
        assert!(spool.append_batch(batch).await.iter().all(|r| r.is_ok()));
    });
    assert_eq!(events.load(Ordering::SeqCst), 11);
    assert_eq!(tickets.load(Ordering::SeqCst), 2);
}

/// A spool that holds less than its state file says was made durable refuses
/// to open (naming the seqs); with `accept_regression` it opens and continues
/// above every seq ever reserved, so no acknowledged seq is reused.
#[test]
fn a_regressed_spool_refuses_to_open_unless_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let spool = open(dir.path());
        rt().block_on(async {
            for i in 0..3 {
                spool.append(event(&format!("r{i}"), 1)).await.expect("append");
            }
        });
        spool.close();
    }
    let path = dir.path().join("state");
    let (mut f, st) = durable::StateFile::open(&path).expect("read").expect("present");
    assert_eq!(st.high_water, 3, "the clean close recorded the last seq");
    f.advance_to(durable::StoreState { high_water: 90, reserved: 120, ..st }).expect("write");
    drop(f);
    match Spool::open(SpoolConfig::for_dir(dir.path())) {
        Err(SpoolError::Regressed(m)) => assert!(m.contains("holds seq <= 3 but seq 90 was made durable"), "{m}"),
        Err(e) => panic!("expected Regressed, got {e}"),
        Ok(_) => panic!("a regressed spool opened"),
    }
    let spool = Spool::open(SpoolConfig { accept_regression: true, ..SpoolConfig::for_dir(dir.path()) }).expect("open");
    assert!(spool.regression().is_some());
    let out = rt().block_on(spool.append(event("new", 1))).expect("append");
    match out {
        AppendOutcome::Accepted { seq } => assert!(seq > 120, "seq {seq} at or below the reservation"),
        other => panic!("{other:?}"),
    }
    spool.close();
}

/// The dedupe window is the records' retention, exactly: six days after an
/// event was acked a resend is still a duplicate of the original seq and a
/// changed event with its id still a conflict; once compaction has removed it
/// (retention passed), the id is free again.
#[test]
fn dedupe_holds_for_the_whole_retention_and_ends_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    let t0 = OffsetDateTime::now_utc();
    let day = Duration::from_secs(86400);
    let first = rt().block_on(spool.append_at(event("week-1", 5), t0)).expect("append");
    assert_eq!(first, AppendOutcome::Accepted { seq: 1 });
    for i in 0..50 {
        rt().block_on(spool.append_at(event(&format!("other-{i}"), 1), t0)).expect("append");
    }
    let acks: Vec<_> = (1..=51).map(|s| (s, 1, None)).collect();
    spool.mark_acked(&acks).expect("ack");
    rt().block_on(spool.wait_durable()).expect("durable");
    let six_days = t0 + day * 6;
    assert_eq!(spool.compact(six_days).expect("compact"), 0, "inside the retention nothing goes");
    // Reopen in between: the window survives restarts.
    spool.close();
    drop(spool);
    let spool = open(dir.path());
    assert_eq!(rt().block_on(spool.append_at(event("week-1", 5), six_days)).expect("append"), AppendOutcome::Duplicate { seq: 1 });
    assert_eq!(rt().block_on(spool.append_at(event("week-1", 6), six_days)).expect("append"), AppendOutcome::Conflict { seq: 1 });
    let eight_days = t0 + day * 8;
    assert_eq!(spool.compact(eight_days).expect("compact"), 51);
    assert!(spool.get(1).expect("get").is_none());
    let again = rt().block_on(spool.append_at(event("week-1", 6), eight_days)).expect("append");
    assert!(matches!(again, AppendOutcome::Accepted { seq } if seq > 51), "{again:?}");
}

/// A spool written by the format-1 engine (the fixture was made by it, see
/// examples/make_v1_fixture.rs) opens with this engine: upgraded in place,
/// every pending record pending under its seq, the dead letter kept with its
/// reason, the dropped one gone, acked ids still deduping, seqs continuing.
#[test]
fn a_v1_spool_upgrades_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-spool.tar.gz");
    let status = std::process::Command::new("tar").arg("-xzf").arg(&fixture).arg("-C").arg(dir.path()).status().expect("run tar");
    assert!(status.success(), "unpack the v1 fixture");
    let root = dir.path().join("spool");
    assert!(spool::upgrade::is_v1(&root).expect("probe"), "the fixture is a format-1 spool");
    let spool = open(&root);
    assert!(!root.join("sled-v1").exists(), "the v1 store is removed once the upgrade is durable");
    let s = spool.stats().expect("stats");
    assert_eq!((s.pending_events, s.acked_events, s.dead_events), (10, 8, 1), "{s:?}");
    let pending: Vec<u64> = spool.read_pending(0, 100, usize::MAX).expect("read").iter().map(|r| r.seq).collect();
    assert_eq!(pending, vec![10, 11, 13, 14, 15, 16, 17, 18, 19, 20]);
    let r = spool.get(6).expect("get").expect("dead letter kept");
    assert!(matches!(&r.state, State::Dead { code, .. } if code == "conflict"), "{:?}", r.state);
    assert_eq!(r.attempts, 2);
    assert!(spool.get(9).expect("get").is_none(), "the dropped dead letter stays gone");
    assert!(matches!(spool.get(12).expect("get").expect("acked").state, State::Acked { .. }));
    assert_eq!(spool.get(13).expect("get").expect("pending").node, "front-v1");
    // Dedupe answers for acked, pending and dead ids alike.
    // The event exactly as examples/make_v1_fixture.rs wrote it.
    let v1_event = |id: &str, amount: u64| {
        spool_format::Event::from_json_value(&serde_json::json!({
            "id": id, "kind": "purchase", "amount": amount, "currency": "L$",
            "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
            "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
            "recipient": "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0",
            "occurred_at": "2026-11-24T12:00:00Z"
        }))
        .expect("valid")
    };
    for (id, amount, seq) in [("v1-3", 103, 3), ("v1-12", 112, 12), ("v1-15", 115, 15), ("v1-6", 106, 6)] {
        assert_eq!(rt().block_on(spool.append(v1_event(id, amount))).expect("append"), AppendOutcome::Duplicate { seq });
    }
    assert_eq!(rt().block_on(spool.append(v1_event("v1-3", 1))).expect("append"), AppendOutcome::Conflict { seq: 3 });
    assert_eq!(rt().block_on(spool.append(event("new-after-upgrade", 1))).expect("append"), AppendOutcome::Accepted { seq: 21 });
    // Acks by position from here on: the watermark passes the old acked ones.
    let acks: Vec<_> = pending.iter().map(|s| (*s, 1, None)).collect();
    spool.mark_acked(&acks).expect("ack");
    assert_eq!(spool.stats().expect("stats").acked_watermark, 20);
    let report = spool.verify(|_| {}).expect("verify");
    assert!(report.faults.is_empty(), "{:?}", report.faults);
    spool.close();
    drop(spool);
    let spool = open(&root);
    assert_eq!(spool.read_pending(0, 100, usize::MAX).expect("read").iter().map(|r| r.seq).collect::<Vec<_>>(), vec![21]);
}

/// Draining costs the spool at most one sled write per acked batch (the meta
/// value with the new watermark; plus an ack-time log entry a minute), not a
/// write per event as format 1 did.
#[test]
fn draining_costs_at_most_one_sled_write_per_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open(dir.path());
    let total = 20_000u64;
    rt().block_on(async {
        for chunk in 0..total / 1000 {
            let batch: Vec<_> = (0..1000).map(|i| event(&format!("sl-{}", uuid_like(chunk * 1000 + i)), 1)).collect();
            for r in spool.append_batch(batch).await {
                r.expect("append");
            }
        }
    });
    let before = spool.stats().expect("stats");
    let mut cursor = 0;
    let mut batches = 0u64;
    loop {
        let page = spool.read_pending(cursor, 500, usize::MAX).expect("read");
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        let acks: Vec<_> = page.iter().map(|r| (r.seq, 1, None)).collect();
        spool.mark_acked(&acks).expect("ack");
        rt().block_on(spool.wait_durable()).expect("durable");
        batches += 1;
    }
    let after = spool.stats().expect("stats");
    assert_eq!((after.pending_events, after.acked_events, after.acked_watermark), (0, total, total));
    let writes = after.sled_writes - before.sled_writes;
    eprintln!("drain of {total} events in {batches} batches: {writes} sled writes ({:.2} per batch)", writes as f64 / batches as f64);
    assert!(writes <= batches + 2, "{writes} sled writes for {batches} batches");
}

/// A random-looking id part, as vendors send (UUID-shaped, deterministic).
fn uuid_like(i: u64) -> String {
    let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i >> 7);
    format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", h >> 32, (h >> 16) & 0xffff, h & 0xfff, (h >> 20) & 0xfff, h.rotate_left(17) & 0xffff_ffff_ffff)
}
