//! Backpressure: a spool at `events_max` answers 503 `spool_full` with
//! Retry-After, `/readyz` goes 503, and duplicates are still recognised.

use test_support::spoold::{Spoold, SpooldOptions};

use super::{client, depth, event, get_status_code, post_json};

const EVENTS_MAX: u64 = 5;

#[tokio::test]
async fn ingest_spool_full_is_503_with_retry_after() {
    let s = Spoold::start(SpooldOptions::default().spool(&format!("events_max = {EVENTS_MAX}")))
        .await
        .expect("start spoold");
    let c = client();
    let mut seqs = Vec::new();
    for i in 0..EVENTS_MAX {
        let r = post_json(&c, &s, "/v1/events", &event(&format!("full-{i}"))).await;
        assert_eq!(r.status, 202, "event {i}: {:?}", r.body);
        seqs.push(r.seq().expect("seq"));
    }
    let r = post_json(&c, &s, "/v1/events", &event("full-over")).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.code(), Some("spool_full"));
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(get_status_code(&c, &s, "/readyz").await, 503, "a full spool is not ready");
    assert_eq!(get_status_code(&c, &s, "/healthz").await, 200, "but it is alive");

    // A duplicate of a spooled event is still answered (it needs no room).
    let dup = post_json(&c, &s, "/v1/events", &event("full-0")).await;
    assert_eq!((dup.status, dup.seq()), (200, Some(seqs[0])), "{:?}", dup.body);

    // In a batch, the full spool shows per item, with Retry-After on the answer.
    let r = post_json(&c, &s, "/v1/events/batch", &serde_json::json!([event("full-b1"), event("full-1")])).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["results"][0]["http_status"], 503);
    assert_eq!(r.body["results"][0]["error"]["code"], "spool_full");
    assert_eq!(r.body["results"][1]["http_status"], 200);
    assert!(r.headers.get("retry-after").is_some());
    assert_eq!(depth(&c, &s).await.0, EVENTS_MAX);
}
