//! Tests of the admin operations and the socket server on a real spool in a
//! temporary directory.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;

use common::admin::{codes, AdminRequest, AdminResponse, ADMIN_IMPORT_EVENTS_MAX};
use serde_json::{json, Value};
use spool::{Spool, SpoolConfig};
use spool_format::Event;

use super::*;

fn event_json(id: &str, amount: u64) -> Value {
    json!({
        "id": id,
        "kind": "purchase",
        "amount": amount,
        "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "occurred_at": "2026-11-24T12:00:00Z",
    })
}

/// A spool with `n` events `ev-1..=ev-n` (seq 1..=n); the seqs in `dead` are
/// dead letters.
async fn spool_with(n: u64, dead: &[u64]) -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(SpoolConfig::for_dir(dir.path())).unwrap();
    let events: Vec<Event> =
        (1..=n).map(|i| Event::from_json_value(&event_json(&format!("ev-{i}"), i)).unwrap()).collect();
    for r in spool.append_batch(events).await {
        r.unwrap();
    }
    for &seq in dead {
        assert!(spool.mark_dead(seq, 3, "conflict", "same id, different event").unwrap());
    }
    (dir, spool)
}

fn data<T: serde::de::DeserializeOwned>(resp: AdminResponse) -> T {
    assert!(resp.ok, "expected ok, got {resp:?}");
    serde_json::from_value(resp.data.unwrap()).unwrap()
}

fn assert_code(resp: &AdminResponse, code: &str) {
    assert!(!resp.ok, "expected an error, got {resp:?}");
    assert_eq!(resp.code.as_deref(), Some(code), "{resp:?}");
}

fn list_req(state: &str, from_seq: u64, limit: u32) -> AdminRequest {
    AdminRequest::List { state: state.into(), from_seq, limit }
}

fn seqs(l: &ListData) -> Vec<u64> {
    l.records.iter().map(|r| r.seq).collect()
}

#[tokio::test]
async fn status_counts_states_and_oldest_pending() {
    let (_d, spool) = spool_with(5, &[2]).await;
    spool.mark_acked(&[(3, 1, Some(77))]).unwrap();
    let s: StatusData = data(execute(&spool, AdminRequest::Status).await);
    assert_eq!((s.spool.pending_events, s.spool.dead_events, s.spool.acked_events), (3, 1, 1));
    assert_eq!(s.spool.next_seq, 6);
    assert!(s.spool.bytes > 0 && s.spool.acked_bytes > 0);
    assert!(s.spool.oldest_pending_at.is_some());
    assert!(s.spool.oldest_pending_age_seconds.unwrap() >= 0.0);
    assert_eq!(s.node_id, "test");
    assert_eq!((s.mode.as_str(), s.ready, s.ledger.forwarding), ("offline", None, false));
}

#[tokio::test]
async fn list_filters_by_state_and_pages() {
    let (_d, spool) = spool_with(6, &[2, 5]).await;
    spool.mark_acked(&[(4, 1, None)]).unwrap();
    let all: ListData = data(execute(&spool, list_req("all", 0, 100)).await);
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(all.next_from_seq, None);
    let dead: ListData = data(execute(&spool, list_req("dead", 0, 100)).await);
    assert_eq!(seqs(&dead), vec![2, 5]);
    let pending: ListData = data(execute(&spool, list_req("pending", 0, 100)).await);
    assert_eq!(seqs(&pending), vec![1, 3, 6]);
    let acked: ListData = data(execute(&spool, list_req("acked", 0, 100)).await);
    assert_eq!(seqs(&acked), vec![4]);

    let page1: ListData = data(execute(&spool, list_req("all", 0, 4)).await);
    assert_eq!(seqs(&page1), vec![1, 2, 3, 4]);
    assert_eq!(page1.next_from_seq, Some(5));
    let page2: ListData = data(execute(&spool, list_req("all", 5, 4)).await);
    assert_eq!(seqs(&page2), vec![5, 6]);
    assert_eq!(page2.next_from_seq, None);

    assert_code(&execute(&spool, list_req("bogus", 0, 4)).await, codes::INVALID_REQUEST);
    assert_code(&execute(&spool, list_req("all", 0, 0)).await, codes::INVALID_REQUEST);
    assert_code(&execute(&spool, list_req("all", 0, 10_001)).await, codes::INVALID_REQUEST);
}

#[tokio::test]
async fn show_by_seq_or_id_and_not_found() {
    let (_d, spool) = spool_with(3, &[3]).await;
    let r: Record = data(execute(&spool, AdminRequest::Show { key: "2".into() }).await);
    assert_eq!((r.seq, r.event.id.as_str()), (2, "ev-2"));
    let r: Record = data(execute(&spool, AdminRequest::Show { key: "ev-3".into() }).await);
    assert_eq!(r.seq, 3);
    assert!(matches!(r.state, State::Dead { ref code, .. } if code == "conflict"));
    assert_eq!(r.attempts, 3);
    assert_code(&execute(&spool, AdminRequest::Show { key: "99".into() }).await, codes::NOT_FOUND);
    assert_code(&execute(&spool, AdminRequest::Show { key: "nope".into() }).await, codes::NOT_FOUND);
}

#[tokio::test]
async fn tail_returns_newest_oldest_first() {
    let (_d, spool) = spool_with(5, &[]).await;
    let t: ListData = data(execute(&spool, AdminRequest::Tail { limit: 2 }).await);
    assert_eq!(seqs(&t), vec![4, 5]);
}

#[tokio::test]
async fn import_counts_every_outcome_and_dedupes() {
    let (_d, spool) = spool_with(2, &[]).await;
    let events = vec![
        event_json("new-1", 10),
        event_json("ev-1", 1),   // duplicate of seq 1
        event_json("ev-2", 999), // same id, other amount: conflict
        json!({"id": "bad", "kind": "purchase"}),
        event_json("new-2", 11),
    ];
    let rep: ImportReport = data(execute(&spool, AdminRequest::Import { events: events.clone() }).await);
    assert_eq!((rep.accepted, rep.duplicate, rep.conflict, rep.invalid, rep.failed), (2, 1, 1, 1, 0));
    let conflict = rep.issues.iter().find(|i| i.status == "conflict").unwrap();
    assert_eq!((conflict.index, conflict.seq), (2, Some(2)));
    let invalid = rep.issues.iter().find(|i| i.status == "invalid").unwrap();
    assert_eq!(invalid.index, 3);
    assert!(invalid.message.contains("amount"), "{}", invalid.message);
    assert!(!rep.is_clean());

    // Importing the same input again creates nothing new.
    let again: ImportReport = data(execute(&spool, AdminRequest::Import { events }).await);
    assert_eq!((again.accepted, again.duplicate), (0, 3));
    assert_eq!(spool.stats().unwrap().pending_events, 4);

    let too_many = vec![event_json("x", 1); ADMIN_IMPORT_EVENTS_MAX + 1];
    assert_code(&execute(&spool, AdminRequest::Import { events: too_many }).await, codes::INVALID_REQUEST);
}

#[tokio::test]
async fn verify_names_a_flipped_byte() {
    let (dir, spool) = spool_with(4, &[]).await;
    let v: VerifyData = data(execute(&spool, AdminRequest::Verify).await);
    assert_eq!((v.records, v.faults.len()), (4, 0));

    let db = spool::raw_db(&spool);
    // The four records share one block; flip the last byte of record 3's frame.
    let mut raw = db.get(spool::block_key(1)).unwrap().unwrap().to_vec();
    let end_of_3 = {
        let block = spool_format::decode_block(&raw).unwrap();
        let (_, frame) = block.frames().map(Result::unwrap).find(|(seq, _)| *seq == 3).unwrap();
        frame.as_ptr() as usize - raw.as_ptr() as usize + frame.len() - 1
    };
    raw[end_of_3] ^= 0x40;
    db.insert(spool::block_key(1), raw).unwrap();
    db.flush().unwrap();
    let v: VerifyData = data(execute(&spool, AdminRequest::Verify).await);
    assert_eq!(v.faults.len(), 1, "{v:?}");
    assert_eq!(v.faults[0].seq, Some(3));
    assert!(v.faults[0].what.to_lowercase().contains("checksum") || v.faults[0].what.contains("crc"), "{v:?}");
    drop(dir);
}

#[tokio::test]
async fn dlq_retry_one_and_all() {
    let (_d, spool) = spool_with(5, &[1, 3, 4]).await;
    let r: RetryData = data(execute(&spool, AdminRequest::DlqRetry { seq: Some(3), all: false, reason: None, user: None }).await);
    assert_eq!(r.requeued, vec![3]);
    let rec = spool.get(3).unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts), (State::Pending, 0));
    // Not a dead letter (any more).
    assert_code(&execute(&spool, AdminRequest::DlqRetry { seq: Some(3), all: false, reason: None, user: None }).await, codes::NOT_FOUND);
    assert_code(&execute(&spool, AdminRequest::DlqRetry { seq: None, all: false, reason: None, user: None }).await, codes::INVALID_REQUEST);
    assert_code(&execute(&spool, AdminRequest::DlqRetry { seq: Some(1), all: true, reason: None, user: None }).await, codes::INVALID_REQUEST);

    let r: RetryData = data(execute(&spool, AdminRequest::DlqRetry { seq: None, all: true, reason: None, user: None }).await);
    assert_eq!(r.requeued, vec![1, 4]);
    let s = spool.stats().unwrap();
    assert_eq!((s.pending_events, s.dead_events), (5, 0));
}

#[tokio::test]
async fn dlq_drop_removes_only_dead_letters_and_counts() {
    let (_d, spool) = spool_with(3, &[2]).await;
    let before = dead_letters_dropped_total();
    assert_code(&execute(&spool, AdminRequest::DlqDrop { seq: 1, reason: None, user: None }).await, codes::NOT_FOUND);
    assert!(spool.get(1).unwrap().is_some(), "a pending record must never be dropped");
    let d: DropData = data(execute(&spool, AdminRequest::DlqDrop { seq: 2, reason: None, user: None }).await);
    assert_eq!((d.seq, d.id.as_str()), (2, "ev-2"));
    assert!(spool.get(2).unwrap().is_none());
    assert!(dead_letters_dropped_total() > before);
    assert_code(&execute(&spool, AdminRequest::DlqDrop { seq: 2, reason: None, user: None }).await, codes::NOT_FOUND);
    assert_eq!(spool.stats().unwrap().dead_events, 0);
}

fn extra() -> ExtraStatus {
    Arc::new(|| common::status::DaemonStatus {
        draining: false,
        commit_seconds_total: 0.0,
        ledger: common::status::LedgerStatus {
            forwarding: true,
            up: Some(false),
            last_error: Some("connection refused".into()),
            ..Default::default()
        },
    })
}

#[tokio::test]
async fn socket_serves_requests_merges_status_and_cleans_up() {
    let (dir, spool) = spool_with(3, &[2]).await;
    let path = dir.path().join("run/admin.sock");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn({
        let path = path.clone();
        let spool = spool.clone();
        async move { serve_unix(&path, spool, extra(), rx).await }
    });
    let mut client = loop {
        if let Ok(c) = Client::connect(&path).await {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let s: StatusData = data(client.call(&AdminRequest::Status).await.unwrap());
    assert_eq!(s.spool.pending_events, 2);
    assert_eq!((s.mode.as_str(), s.ready), ("online", Some(true)));
    assert_eq!(s.ledger.up, Some(false));
    assert_eq!(s.ledger.last_error.as_deref(), Some("connection refused"));

    // Several requests on one connection, including a bad one in between.
    let l: ListData = data(client.call(&list_req("dead", 0, 10)).await.unwrap());
    assert_eq!(seqs(&l), vec![2]);
    let r: Record = data(client.call(&AdminRequest::Show { key: "ev-1".into() }).await.unwrap());
    assert_eq!(r.seq, 1);

    // A raw malformed line gets an invalid_request answer and the connection lives on.
    {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut raw = tokio::net::UnixStream::connect(&path).await.unwrap();
        let hello = format!("{{\"verb\":\"hello\",\"protocol\":{},\"client\":\"raw\"}}\n", common::admin::ADMIN_PROTOCOL_VERSION);
        raw.write_all(format!("{hello}{{not json}}\n{{\"verb\":\"status\"}}\n").as_bytes()).await.unwrap();
        let mut lines = tokio::io::BufReader::new(raw).lines();
        let greeting: AdminResponse = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(greeting.ok, "{greeting:?}");
        let first: AdminResponse = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_code(&first, codes::INVALID_REQUEST);
        let second: AdminResponse = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(second.ok);
    }

    tx.send(true).unwrap();
    server.await.unwrap().unwrap();
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[tokio::test]
async fn socket_replaces_stale_file_and_refuses_live_or_foreign_paths() {
    let (dir, spool) = spool_with(1, &[]).await;
    let path = dir.path().join("admin.sock");
    // A stale socket: bound, then its listener dropped (as after a crash).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn({
        let (path, spool) = (path.clone(), spool.clone());
        async move { serve_unix(&path, spool, extra(), rx).await }
    });
    let mut client = loop {
        if let Ok(mut c) = Client::connect(&path).await {
            if c.call(&AdminRequest::Status).await.is_ok() {
                break c;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(client.call(&AdminRequest::Status).await.unwrap().ok);

    // A second server on the same live socket is refused.
    let (_tx2, rx2) = tokio::sync::watch::channel(false);
    let second = serve_unix(&path, spool.clone(), extra(), rx2).await;
    assert!(matches!(second, Err(AdminError::InUse(_))), "{second:?}");
    tx.send(true).unwrap();
    server.await.unwrap().unwrap();

    // A regular file is never removed.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let (_tx3, rx3) = tokio::sync::watch::channel(false);
    let r = serve_unix(&file, spool, extra(), rx3).await;
    assert!(matches!(r, Err(AdminError::NotASocket(_))), "{r:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[tokio::test]
async fn read_line_bounds_the_line_length() {
    use crate::server::{read_line, Line};
    let mut input: &[u8] = b"0123456789abcdef\nshort\n";
    let mut reader = tokio::io::BufReader::new(&mut input);
    assert!(matches!(read_line(&mut reader, 8).await.unwrap(), Line::TooLong));
    let mut ok: &[u8] = b"short\n";
    let mut reader = tokio::io::BufReader::new(&mut ok);
    assert!(matches!(read_line(&mut reader, 8).await.unwrap(), Line::Request(b) if b == b"short"));
    assert!(matches!(read_line(&mut reader, 8).await.unwrap(), Line::Eof));
}

#[tokio::test]
async fn connections_over_the_cap_get_busy() {
    let (dir, spool) = spool_with(1, &[]).await;
    let path = dir.path().join("admin.sock");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn({
        let (path, spool) = (path.clone(), spool.clone());
        async move { serve_unix(&path, spool, extra(), rx).await }
    });
    let mut held = Vec::new();
    while held.len() < ADMIN_CONNECTIONS_MAX {
        match Client::connect(&path).await {
            Ok(mut c) => {
                // A round trip proves the server took this connection.
                assert!(c.call(&AdminRequest::Status).await.unwrap().ok);
                held.push(c);
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    // The busy answer comes at once, so the client's hello already gets it
    // (or the server closes before our write lands: broken pipe / reset);
    // refused all the same, never served.
    match Client::connect(&path).await {
        Ok(_) => panic!("a connection over the cap was served"),
        Err(AdminError::Protocol(m)) => assert!(m.contains("too many admin connections") || m.contains("closed"), "{m}"),
        Err(e) => assert!(matches!(e, AdminError::Io { .. }), "{e}"),
    }
    drop(held.pop());
    tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn pages_stop_at_the_byte_bound_but_always_move_on() {
    let rec = |seq: u64| Record {
        seq,
        received_at: spool_format::OffsetDateTime::UNIX_EPOCH,
        node: "n".into(),
        state: State::Pending,
        attempts: 0,
        event: Event::from_json_value(&event_json(&format!("e-{seq}"), 1)).unwrap(),
    };
    let records: Vec<Record> = (1..=5).map(rec).collect();
    let one = serde_json::to_vec(&records[0]).unwrap().len();
    assert_eq!(keep_within_bytes(&records, one * 5), 5);
    assert_eq!(keep_within_bytes(&records, one * 2 + 1), 2);
    assert_eq!(keep_within_bytes(&records, 1), 1, "one record even when it alone is over");
    assert_eq!(keep_within_bytes(records.iter().rev(), one * 3), 3);
}
