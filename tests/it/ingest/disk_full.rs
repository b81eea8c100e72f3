//! A real full disk: the spool on a small tmpfs with a reserve of bytes and
//! inodes. Filling it gives 507 `insufficient_storage` and `/readyz` 503;
//! freeing space brings `/readyz` back to 200 by itself.
//!
//! Needs root (to mount the tmpfs). Otherwise it prints why and skips — loudly.

use std::time::Duration;

use serde_json::Value;
use test_support::spoold::{Spoold, SpooldOptions};
use test_support::tmpfs::Tmpfs;

use super::{client, event, get_status_code, post_json, status, wait_code};

/// The tmpfs: 16 MiB and 512 inodes.
const TMPFS_OPTS: &str = "size=16m,nr_inodes=512";
const RESERVE_BYTES: u64 = 4 << 20;
const RESERVE_INODES: u64 = 200;

fn free(st: &Value) -> (u64, u64) {
    (
        st["disk"]["free_bytes"].as_u64().expect("free_bytes"),
        st["disk"]["free_inodes"].as_u64().expect("free_inodes"),
    )
}

#[tokio::test]
async fn ingest_disk_full_is_507_and_recovers() {
    let Some(tmpfs) = Tmpfs::mount_or_skip(TMPFS_OPTS, "ingest_disk_full_is_507_and_recovers") else { return };
    let mnt = tmpfs.path();
    let opts = SpooldOptions {
        spool_dir: Some(mnt.join("spool")),
        ..SpooldOptions::default()
    }
    .spool(&format!("disk_free_bytes_min = {RESERVE_BYTES}"))
    .spool(&format!("disk_free_inodes_min = {RESERVE_INODES}"));
    let s = Spoold::start(opts).await.expect("start spoold");
    let c = client();

    // 1. Bytes. Leave 512 KiB above the reserve, then write events until refused.
    let (free_bytes, _) = free(&status(&c, &s).await);
    assert!(free_bytes > RESERVE_BYTES + (1 << 20), "tmpfs too small: {free_bytes}");
    let filler = mnt.join("filler");
    let fill = usize::try_from(free_bytes - RESERVE_BYTES - (512 << 10)).expect("size");
    std::fs::write(&filler, vec![0u8; fill]).expect("write filler");
    let mut accepted = 0u32;
    let mut refused = None;
    for i in 0..20_000u32 {
        let r = post_json(&c, &s, "/v1/events", &event(&format!("fill-{i}"))).await;
        match r.status {
            202 => accepted += 1,
            507 => {
                refused = Some(r);
                break;
            }
            other => panic!("event {i}: unexpected {other} {:?}\n{}", r.body, s.log()),
        }
    }
    let refused = refused.expect("the disk reserve was never reached");
    assert_eq!(refused.code(), Some("insufficient_storage"), "{:?}", refused.body);
    eprintln!("disk full after {accepted} events: {:?}", refused.body);
    assert_eq!(get_status_code(&c, &s, "/readyz").await, 503);
    let st = status(&c, &s).await;
    assert_eq!(st["ready"], false);
    let depth_full = st["spool"]["events"].as_u64().expect("events");
    assert_eq!(depth_full, u64::from(accepted), "every 202 is in the spool, nothing else");

    std::fs::remove_file(&filler).expect("remove filler");
    assert_eq!(wait_code(&c, &s, "/readyz", 200, Duration::from_secs(10)).await, 200, "readyz recovers by itself");
    let r = post_json(&c, &s, "/v1/events", &event("after-bytes")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);

    // 2. Inodes. Use them up with empty files, down to just under the reserve.
    let (_, free_inodes) = free(&status(&c, &s).await);
    assert!(free_inodes > RESERVE_INODES, "free inodes {free_inodes}");
    let dir = mnt.join("inode-filler");
    Tmpfs::fill_inodes(&dir, free_inodes, RESERVE_INODES - 5).expect("fill inodes");
    // The daemon re-reads statvfs at most every 250 ms.
    assert_eq!(wait_code(&c, &s, "/readyz", 503, Duration::from_secs(5)).await, 503);
    let r = post_json(&c, &s, "/v1/events", &event("no-inodes")).await;
    assert_eq!((r.status, r.code()), (507, Some("insufficient_storage")), "{:?}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("inodes"), "the message says what ran out: {msg}");

    std::fs::remove_dir_all(&dir).expect("remove inode filler");
    assert_eq!(wait_code(&c, &s, "/readyz", 200, Duration::from_secs(10)).await, 200);
    let r = post_json(&c, &s, "/v1/events", &event("after-inodes")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    // Spoold must be stopped before the tmpfs goes away.
    drop(s);
}
