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

/// A request in flight when SIGTERM arrives (its body half sent) is finished
/// and acknowledged; the daemon then exits 0, and the event is durable.
#[tokio::test]
async fn ingest_sigterm_finishes_in_flight_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut s = Spoold::start(SpooldOptions::default()).await.expect("start spoold");
    let body = serde_json::to_vec(&event("inflight-1")).expect("encode");
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(s.addr()).await.expect("connect");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        test_support::spoold::TEST_TOKEN,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(first).await.expect("write half the body");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = s.process.as_ref().expect("running").child.id().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.is_running(), "spoold exited with a request in flight\n{}", s.log());
    // New connections are refused while draining.
    let c = client();
    let fresh = c.get(s.url("/healthz")).send().await;
    assert!(fresh.is_err() || fresh.map(|r| r.status().as_u16()).ok() == Some(503), "listener still open");

    stream.write_all(rest).await.expect("write the rest of the body");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 202"), "in-flight request not finished: {text}\n{}", s.log());
    let seq: u64 = text
        .split("\"seq\":")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("seq in the answer");

    let status = s.terminate(Duration::from_secs(30)).expect("exit");
    assert!(status.success(), "exit status {status:?}\n{}", s.log());
    s.restart().await.expect("restart");
    let r = post_json(&client(), &s, "/v1/events", &event("inflight-1")).await;
    assert_eq!((r.status, r.seq()), (200, Some(seq)), "{:?}", r.body);
}
