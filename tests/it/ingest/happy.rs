//! The happy path: accepted, duplicate with the original seq, conflict, batch
//! results in order, auth on every /v1/ route, health and metrics.

use serde_json::json;
use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN, TEST_TOKEN_2};

use super::{client, depth, event, get_status_code, post_json, send, status};

#[tokio::test]
async fn ingest_accept_duplicate_conflict_and_batch() {
    let s = Spoold::start(SpooldOptions::default()).await.expect("start spoold");
    let c = client();

    let first = post_json(&c, &s, "/v1/events", &event("sl-1")).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(first.body["status"], "accepted");
    assert_eq!(first.body["id"], "sl-1");
    let seq1 = first.seq().expect("seq");

    let again = post_json(&c, &s, "/v1/events", &event("sl-1")).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["status"], "duplicate");
    assert_eq!(again.seq(), Some(seq1), "a duplicate answers the original seq");

    // Same event, written differently: other key order, upper-case UUIDs,
    // another time zone for the same instant, recipient spelled out or not.
    let same = r#"{"occurred_at":"2026-11-24T13:00:00+01:00","amount":250,"id":"sl-1","kind":"purchase",
        "currency":"L$","payer":"9C8B7A6D-5E4F-4A3B-2C1D-0E9F8A7B6C5D","payee":"2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "recipient":"4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0","item":"Mesh Sofa Deluxe (copy/mod)","region":"Casper Isle",
        "terminal":"vendor-42","attributes":{"rental_period_days":"7"}}"#;
    let r = send(
        c.post(s.url("/v1/events"))
            .bearer_auth(TEST_TOKEN)
            .header("content-type", "application/json; charset=utf-8")
            .body(same),
    )
    .await
    .expect("request");
    assert_eq!((r.status, r.seq()), (200, Some(seq1)), "canonically equal event is a duplicate: {:?}", r.body);

    let mut other = event("sl-1");
    other["amount"] = json!(251);
    let conflict = post_json(&c, &s, "/v1/events", &other).await;
    assert_eq!(conflict.status, 409, "{:?}", conflict.body);
    assert_eq!(conflict.code(), Some("id_conflict"));
    assert_eq!(depth(&c, &s).await.0, 1, "a conflict writes nothing");

    // A second, different valid token works too.
    let r = send(
        c.post(s.url("/v1/events"))
            .bearer_auth(TEST_TOKEN_2)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&event("sl-2")).expect("encode")),
    )
    .await
    .expect("request");
    assert_eq!(r.status, 202, "{:?}", r.body);
    let seq2 = r.seq().expect("seq");
    assert!(seq2 > seq1);

    // Batch: new, invalid, duplicate within the batch, duplicate of an earlier
    // event, conflict, new. Results come back one per input, in order.
    let mut invalid = event("b-bad");
    invalid["amount"] = json!(-1);
    let batch = json!([event("b-1"), invalid, event("b-1"), event("sl-2"), other, event("b-2")]);
    let r = post_json(&c, &s, "/v1/events/batch", &batch).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let results = r.body["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 6, "{results:?}");
    let hs: Vec<u64> = results.iter().map(|x| x["http_status"].as_u64().expect("http_status")).collect();
    assert_eq!(hs, vec![202, 400, 200, 200, 409, 202], "{results:?}");
    assert_eq!(results[0]["status"], "accepted");
    assert_eq!(results[0]["id"], "b-1");
    let b1 = results[0]["seq"].as_u64().expect("seq");
    assert_eq!(results[1]["error"]["code"], "invalid_event");
    assert_eq!(results[1]["error"]["field"], "amount");
    assert_eq!(results[2]["status"], "duplicate");
    assert_eq!(results[2]["seq"].as_u64(), Some(b1), "duplicate inside a batch answers the first's seq");
    assert_eq!(results[3]["seq"].as_u64(), Some(seq2));
    assert_eq!(results[4]["error"]["code"], "id_conflict");
    assert_eq!(results[4]["id"], "sl-1");
    let b2 = results[5]["seq"].as_u64().expect("seq");
    assert!(b1 > seq2 && b2 > b1, "seqs grow: {seq2} {b1} {b2}");
    assert_eq!(depth(&c, &s).await.0, 4, "sl-1, sl-2, b-1, b-2");

    // An empty batch is a no-op.
    let r = post_json(&c, &s, "/v1/events/batch", &json!([])).await;
    assert_eq!((r.status, r.body["results"].as_array().map(Vec::len)), (200, Some(0)));

    // The batch's events are really there: posting them alone is a duplicate.
    let r = post_json(&c, &s, "/v1/events", &event("b-2")).await;
    assert_eq!((r.status, r.seq()), (200, Some(b2)));

    let st = status(&c, &s).await;
    assert_eq!(st["node_id"], "test-node");
    assert_eq!(st["spool"]["pending_events"], 4);
    assert_eq!(st["ready"], true);
    assert!(st["disk"]["free_bytes"].as_u64().unwrap_or(0) > 0, "{st}");
}

#[tokio::test]
async fn ingest_auth_is_required_on_every_v1_route() {
    let s = Spoold::start(SpooldOptions::default()).await.expect("start spoold");
    let c = client();
    let body = serde_json::to_vec(&event("auth-1")).expect("encode");
    let batch = serde_json::to_vec(&json!([event("auth-2")])).expect("encode");
    let routes: Vec<(reqwest::Method, &str, Vec<u8>)> = vec![
        (reqwest::Method::POST, "/v1/events", body.clone()),
        (reqwest::Method::POST, "/v1/events/batch", batch),
        (reqwest::Method::GET, "/v1/status", Vec::new()),
        (reqwest::Method::GET, "/v1/does-not-exist", Vec::new()),
    ];
    let headers: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("wrong token", Some("Bearer wrong-secret-0123456789abcdef".into())),
        ("basic scheme", Some(format!("Basic {TEST_TOKEN}"))),
        ("bearer without token", Some("Bearer".into())),
        ("bearer empty token", Some("Bearer ".into())),
        ("token without scheme", Some(TEST_TOKEN.into())),
        ("token with suffix", Some(format!("Bearer {TEST_TOKEN}x"))),
        ("token prefix only", Some(format!("Bearer {}", &TEST_TOKEN[..10]))),
        ("token name instead of secret", Some("Bearer test-client".into())),
    ];
    let mut failures = Vec::new();
    for (method, path, body) in &routes {
        for (what, header) in &headers {
            let mut req = c.request(method.clone(), s.url(path)).header("content-type", "application/json").body(body.clone());
            if let Some(h) = header {
                req = req.header("authorization", h);
            }
            let r = send(req).await.expect("request");
            let www = r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
            if r.status != 401 || r.code() != Some("unauthorized") || www != "Bearer" {
                failures.push(format!("{method} {path} with {what}: {} {:?} www-authenticate={www:?}", r.status, r.body));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(depth(&c, &s).await, (0, 1), "nothing spooled without a valid token");
    // The scheme is case-insensitive (RFC 9110).
    let r = send(c.get(s.url("/v1/status")).header("authorization", format!("bearer {TEST_TOKEN}"))).await.expect("request");
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Operators' endpoints need no token.
    assert_eq!(get_status_code(&c, &s, "/healthz").await, 200);
    assert_eq!(get_status_code(&c, &s, "/readyz").await, 200);
}

#[tokio::test]
async fn ingest_metrics_use_spec_names() {
    let s = Spoold::start(SpooldOptions::default()).await.expect("start spoold");
    let c = client();
    assert_eq!(post_json(&c, &s, "/v1/events", &event("m-1")).await.status, 202);
    assert_eq!(post_json(&c, &s, "/v1/events", &event("m-1")).await.status, 200);
    let r = c.get(s.url("/metrics")).send().await.expect("metrics");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("metrics text");
    for name in [
        "spoold_ingest_total{result=\"accepted\"} 1",
        "spoold_ingest_total{result=\"duplicate\"} 1",
        "spoold_ingest_duration_seconds_count 2",
        "spoold_spool_events{state=\"pending\"} 1",
        "spoold_spool_bytes ",
        "spoold_spool_oldest_pending_seconds ",
        "spoold_commit_duration_seconds_count ",
        "spoold_commit_batch_events_count ",
        "# TYPE spoold_forward_events counter",
        "# TYPE spoold_forward_batches counter",
        "spoold_forward_retries_total ",
        "spoold_ledger_up ",
        "spoold_dead_letters 0",
        "spoold_disk_free_bytes ",
        "spoold_disk_free_inodes ",
    ] {
        assert!(text.contains(name), "metrics lack {name:?}:\n{text}");
    }
}
