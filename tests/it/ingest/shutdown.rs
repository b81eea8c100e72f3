//! Graceful shutdown: SIGTERM → exit code 0, and every acknowledged event is
//! there, with its seq, after a restart.

use std::time::Duration;

use test_support::spoold::{Spoold, SpooldOptions};

use super::{client, depth, event, post_json};

#[tokio::test]
async fn ingest_sigterm_exits_zero_and_keeps_events() {
    let mut s = Spoold::start(SpooldOptions::default()).await.expect("start spoold");
    let c = client();
    let mut acked = Vec::new();
    for i in 0..20 {
        let id = format!("term-{i}");
        let r = post_json(&c, &s, "/v1/events", &event(&id)).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        acked.push((id, r.seq().expect("seq")));
    }
    let status = s.terminate(Duration::from_secs(30)).expect("spoold exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", s.log());
    assert!(s.log().contains("spoold stopped"), "log:\n{}", s.log());

    s.restart().await.expect("restart spoold");
    let c = client();
    assert_eq!(depth(&c, &s).await.0, 20);
    for (id, seq) in &acked {
        let r = post_json(&c, &s, "/v1/events", &event(id)).await;
        assert_eq!((r.status, r.seq()), (200, Some(*seq)), "{id}: {:?}", r.body);
    }
}
