//! Writes the v1 spool fixture used by the upgrade test
//! (`tests/fixtures/v1-spool.tar.gz`). Run with the v1 engine (commit
//! 671e214 or earlier): `cargo run -p spool --example make_v1_fixture -- <dir>`.
//! Kept for the record of how the fixture was made.

use std::time::Duration;

use spool::{Spool, SpoolConfig};
use spool_format::{Event, OffsetDateTime};

fn event(id: &str, amount: u64) -> Event {
    Event::from_json_value(&serde_json::json!({
        "id": id, "kind": "purchase", "amount": amount, "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "recipient": "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0",
        "occurred_at": "2026-11-24T12:00:00Z"
    }))
    .expect("valid event")
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: make_v1_fixture <dir>");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut cfg = SpoolConfig::for_dir(&dir);
    cfg.node_id = "front-v1".into();
    cfg.acked_retention = Duration::from_secs(7 * 24 * 3600);
    let spool = Spool::open(cfg).expect("open");
    rt.block_on(async {
        // seqs 1..=20: ids v1-1..v1-20, amount 100 + i.
        for i in 1..=20u64 {
            spool.append(event(&format!("v1-{i}"), 100 + i)).await.expect("append");
        }
    });
    // Acked out of order: 1..=5, 7, 8, 12; dead: 6 (conflict) and 9 (rejected,
    // then dropped by an operator: gone). Pending: 10, 11, 13..=20.
    let acks: Vec<(u64, u32, Option<u64>)> = [1, 2, 3, 4, 5, 7, 8, 12].iter().map(|s| (*s, 1, Some(*s + 1000))).collect();
    spool.mark_acked(&acks).expect("ack");
    assert!(spool.mark_dead(6, 2, "conflict", "id seen with another event").expect("dead"));
    assert!(spool.mark_dead(9, 1, "rejected", "amount over the limit").expect("dead"));
    rt.block_on(async {
        assert!(spool.drop_dead(9).await.expect("drop"));
    });
    let s = spool.stats().expect("stats");
    assert_eq!((s.pending_events, s.acked_events, s.dead_events), (10, 8, 1), "{s:?}");
    let _ = OffsetDateTime::now_utc();
    spool.close();
}
