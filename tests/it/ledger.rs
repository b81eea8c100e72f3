//! ledgerd over HTTP, as a real process: batch intake (per-event results,
//! idempotency across nodes), roles on reads, durability across SIGKILL, and
//! 503 while the PostgreSQL store is unreachable.

use std::time::Duration;

use serde_json::{json, Value};
use test_support::ledgerd::{Ledgerd, ADMIN_TOKEN, MERCHANT_PAYEE, MERCHANT_TOKEN, NODE_TOKEN};

const OTHER_PAYEE: &str = "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0";

fn event(id: &str, amount: u64, payee: &str) -> Value {
    json!({
        "id": id, "kind": "purchase", "amount": amount, "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d", "payee": payee,
        "occurred_at": "2026-11-24T12:00:00Z", "item": "Mesh Sofa"
    })
}

fn entry(seq: u64, ev: Value) -> Value {
    json!({"seq": seq, "received_at": "2026-11-24T12:00:01Z", "event": ev})
}

async fn post(l: &Ledgerd, token: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/batches", l.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("post batch");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(l: &Ledgerd, token: Option<&str>, path: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", l.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("get");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn statuses(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results array")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// A duplicate key anywhere in a batch refuses the whole batch (400
/// `invalid_json`, the key's path in `field`); nothing is recorded.
#[tokio::test]
async fn ledger_batches_refuse_duplicate_keys() {
    let l = Ledgerd::start().await.expect("start ledgerd");
    let ev = serde_json::to_string(&event("dup-1", 100, MERCHANT_PAYEE)).expect("encode");
    let ev_dup = format!("{},\"amount\":9}}", ev.trim_end_matches('}'));
    let cases = [
        (format!(r#"{{"node":"front-1","events":[{{"seq":1,"received_at":"2026-11-24T12:00:01Z","event":{ev_dup}}}]}}"#), "events[0].event.amount"),
        (r#"{"node":"front-1","node":"front-2","events":[]}"#.to_owned(), "node"),
        (format!(r#"{{"node":"front-1","events":[{{"seq":1,"seq":2,"received_at":"2026-11-24T12:00:01Z","event":{ev}}}]}}"#), "events[0].seq"),
    ];
    for (body, field) in cases {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/batches", l.url))
            .bearer_auth(NODE_TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("post batch");
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: Value = r.json().await.expect("json error body");
        assert_eq!(v["error"]["code"], "invalid_json", "{v}");
        assert_eq!(v["error"]["field"], field, "{v}");
        assert!(v["error"]["message"].as_str().unwrap_or("").contains("duplicate key"), "{v}");
    }
    let (s, _) = get(&l, Some(ADMIN_TOKEN), "/v1/events/dup-1").await;
    assert_eq!(s, 404, "nothing was recorded");
    let log = l.log();
    assert!(log.contains("INFO") && !log.contains('\u{1b}'), "plain text logs, no ANSI colour in a file: {log}");
}

#[tokio::test]
async fn ledger_batches_are_idempotent_with_per_event_results() {
    let l = Ledgerd::start().await.expect("start ledgerd");
    let mut bad = event("bad-1", 1, MERCHANT_PAYEE);
    bad["amount"] = json!(2.5);
    let body = json!({"node": "front-1", "events": [
        entry(1, event("a-1", 100, MERCHANT_PAYEE)),
        entry(2, bad),
        entry(3, event("a-2", 200, OTHER_PAYEE)),
        entry(4, event("a-1", 100, MERCHANT_PAYEE)),
        json!({"seq": 5, "event": event("a-3", 1, MERCHANT_PAYEE)}),
    ]});
    let (s, r) = post(&l, NODE_TOKEN, &body).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(statuses(&r), ["accepted", "rejected", "accepted", "duplicate", "rejected"]);
    assert_eq!(r["results"][1]["id"], "bad-1");
    assert_eq!(r["results"][1]["error"]["field"], "amount");
    assert_eq!(r["results"][4]["error"]["field"], "received_at");
    assert_eq!(r["results"][0]["ledger_seq"], r["results"][3]["ledger_seq"]);

    // Another node forwards the same event (duplicate) and a different one under
    // an existing id (conflict); neither changes what is stored.
    let body = json!({"node": "front-2", "events": [
        entry(7, event("a-2", 200, OTHER_PAYEE)),
        entry(8, event("a-1", 999, MERCHANT_PAYEE)),
    ]});
    let (s, r) = post(&l, ADMIN_TOKEN, &body).await;
    assert_eq!(s, 200);
    assert_eq!(statuses(&r), ["duplicate", "conflict"]);
    assert_eq!(r["results"][1]["error"]["code"], "id_conflict");
    let stored = l.get_event("a-1").await.expect("get").expect("stored");
    assert_eq!(stored["event"]["amount"], 100);
    assert_eq!(stored["node"], "front-1");
    assert_eq!(stored["node_seq"], 1);

    // Whole-batch refusals.
    let (s, _) = post(&l, NODE_TOKEN, &json!({"node": "front-1"})).await;
    assert_eq!(s, 400, "missing events");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/batches", l.url))
        .bearer_auth(NODE_TOKEN)
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 415);
    let (s, _) = post(&l, "not-a-token-at-all", &json!({"node": "x", "events": []})).await;
    assert_eq!(s, 401);
    let (s, _) = post(&l, MERCHANT_TOKEN, &json!({"node": "x", "events": []})).await;
    assert_eq!(s, 403, "merchants cannot post batches");

    let (s, st) = get(&l, Some(ADMIN_TOKEN), "/v1/stats").await;
    assert_eq!((s, st["events"].as_u64()), (200, Some(2)));
    let m = reqwest::get(format!("{}/metrics", l.url)).await.expect("metrics").text().await.expect("text");
    assert!(m.contains("ledgerd_events_total{status=\"accepted\"} 2"), "{m}");
    assert!(m.contains("ledgerd_events_total{status=\"rejected\"} 2"), "{m}");
    assert!(m.contains("ledgerd_store_up 1"), "{m}");
    assert!(m.contains("ledgerd_batch_duration_seconds_count"), "{m}");
}

#[tokio::test]
async fn ledger_reads_respect_roles_and_never_leak_existence() {
    let l = Ledgerd::start().await.expect("start ledgerd");
    let body = json!({"node": "front-1", "events": [
        entry(1, event("mine-1", 1, MERCHANT_PAYEE)),
        entry(2, event("theirs-1", 2, OTHER_PAYEE)),
        entry(3, event("mine-2", 3, MERCHANT_PAYEE)),
    ]});
    assert_eq!(post(&l, NODE_TOKEN, &body).await.0, 200);

    let check = |token: Option<&'static str>, path: &'static str, want: u16| {
        let l = &l;
        async move {
            let (s, b) = get(l, token, path).await;
            assert_eq!(s, want, "GET {path} with {token:?}: {b}");
            b
        }
    };
    check(None, "/v1/events/mine-1", 401).await;
    check(Some("wrong-token-0123456789abc"), "/v1/events/mine-1", 401).await;
    check(Some(NODE_TOKEN), "/v1/events/mine-1", 403).await;
    check(Some(NODE_TOKEN), "/v1/events", 403).await;
    check(Some(NODE_TOKEN), "/v1/stats", 403).await;
    check(Some(MERCHANT_TOKEN), "/v1/stats", 403).await;
    let b = check(Some(MERCHANT_TOKEN), "/v1/events/mine-1", 200).await;
    assert_eq!(b["event"]["payee"], MERCHANT_PAYEE);
    // Another payee's event and an unknown id look the same: 404.
    let other = check(Some(MERCHANT_TOKEN), "/v1/events/theirs-1", 404).await;
    let unknown = check(Some(MERCHANT_TOKEN), "/v1/events/nope", 404).await;
    assert_eq!(other, unknown);
    check(Some(ADMIN_TOKEN), "/v1/events/theirs-1", 200).await;

    let b = check(Some(MERCHANT_TOKEN), "/v1/events", 200).await;
    let ids: Vec<&str> = b["events"].as_array().expect("events").iter().filter_map(|e| e["event"]["id"].as_str()).collect();
    assert_eq!(ids, ["mine-1", "mine-2"], "a merchant lists only its own payee");
    let b = check(Some(MERCHANT_TOKEN), "/v1/events?payer=9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d&limit=1", 200).await;
    assert_eq!(b["events"].as_array().map(Vec::len), Some(1));
    assert!(b["next_after"].as_u64().is_some(), "a full page carries a cursor");
    check(Some(MERCHANT_TOKEN), "/v1/events?payee=4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0", 404).await;
    let b = check(Some(ADMIN_TOKEN), "/v1/events?payee=4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0", 200).await;
    assert_eq!(b["events"].as_array().map(Vec::len), Some(1));
    check(Some(ADMIN_TOKEN), "/v1/events?payee=not-a-uuid", 400).await;
    check(Some(ADMIN_TOKEN), "/v1/events?limit=100000", 400).await;
    let b = check(Some(ADMIN_TOKEN), "/v1/events?since=2999-01-01T00:00:00Z", 200).await;
    assert_eq!(b["events"].as_array().map(Vec::len), Some(0));
    assert_eq!(l.all_events().await.expect("all").len(), 3);
}

#[tokio::test]
async fn ledger_answers_are_durable_across_sigkill() {
    let mut l = Ledgerd::start().await.expect("start ledgerd");
    let events: Vec<Value> = (0..300).map(|i| entry(i, event(&format!("k-{i}"), i + 1, MERCHANT_PAYEE))).collect();
    let (s, r) = post(&l, NODE_TOKEN, &json!({"node": "front-1", "events": events})).await;
    assert_eq!(s, 200);
    assert!(statuses(&r).iter().all(|s| s == "accepted"));
    l.kill9();
    l.spawn().await.expect("restart");
    let all = l.all_events().await.expect("all");
    assert_eq!(all.len(), 300, "every acknowledged event survives SIGKILL");
    let (s, r) = post(&l, NODE_TOKEN, &json!({"node": "front-1", "events": [entry(0, event("k-0", 1, MERCHANT_PAYEE))]})).await;
    assert_eq!((s, statuses(&r)), (200, vec!["duplicate".to_owned()]));
    let status = l.terminate().expect("sigterm");
    assert!(status.success(), "graceful exit: {status:?}\n{}", l.log());
}

#[tokio::test]
async fn ledger_on_unreachable_postgres_answers_503_and_ledger_on_postgres_works() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 1: the store is down from the start.
    let down = Ledgerd::start_with(tmp.path(), "postgres://postgres@127.0.0.1:1/test", test_support::free_port())
        .await
        .expect("ledgerd starts even with its database down");
    let (s, _) = post(&down, NODE_TOKEN, &json!({"node": "n", "events": [entry(1, event("p-1", 1, MERCHANT_PAYEE))]})).await;
    assert_eq!(s, 503);
    let r = reqwest::get(format!("{}/readyz", down.url)).await.expect("readyz");
    assert_eq!(r.status().as_u16(), 503);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/batches", down.url))
        .bearer_auth(NODE_TOKEN)
        .json(&json!({"node": "n", "events": [entry(1, event("p-1", 1, MERCHANT_PAYEE))]}))
        .send()
        .await
        .expect("post");
    assert!(r.headers().get("retry-after").is_some(), "503 carries Retry-After");
    drop(down);

    let base = std::env::var("OFFGRID_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("it_ledger_{}", std::process::id());
    let url = format!("{base}?schema={schema}");
    let dir2 = tmp.path().join("pg");
    let l = Ledgerd::start_with(&dir2, &url, test_support::free_port()).await.expect("start on postgres");
    test_support::wait_http_ok(&format!("{}/readyz", l.url), Duration::from_secs(10)).await.expect("ready");
    let (s, r) = post(&l, NODE_TOKEN, &json!({"node": "n", "events": [entry(1, event("p-1", 1, MERCHANT_PAYEE)), entry(2, event("p-1", 1, MERCHANT_PAYEE))]})).await;
    assert_eq!((s, statuses(&r)), (200, vec!["accepted".to_owned(), "duplicate".to_owned()]));
    assert!(l.get_event("p-1").await.expect("get").is_some());
    drop(l);
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.expect("cleanup");
}

#[test]
fn ledger_cli_check_config_and_bad_config_exit_2_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, format!("front:{NODE_TOKEN}:node\n")).expect("write");
    let run = |config: &str, extra: &[&str]| {
        let path = tmp.path().join("ledgerd.toml");
        std::fs::write(&path, config).expect("write config");
        let out = std::process::Command::new(test_support::bin_path("ledgerd"))
            .arg("--config")
            .arg(&path)
            .args(extra)
            .output()
            .expect("run ledgerd");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let good = format!("[store]\nurl = \"sled://{}/s\"\n[auth]\ntokens_file = {:?}\n", tmp.path().display(), tokens);
    let (code, _, out) = run(&good, &["--check-config"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), "config ok");
    assert!(!out.contains(NODE_TOKEN), "never print secrets");
    let (code, _, out) = run(&good, &["--check-config", "--print", "--log-format", "json"]);
    assert_eq!(code, Some(0), "{out}");
    for key in ["listen.addr", "store.url", "auth.tokens_file", "limits.body_bytes_max", "limits.batch_events_max",
        "limits.connections_max", "limits.header_read_timeout", "limits.body_read_timeout", "log.format", "log.level"] {
        assert!(out.lines().any(|l| l.starts_with(&format!("{key} = "))), "--print must show {key}: {out}");
    }
    assert!(out.contains("log.format = json"), "{out}");
    assert!(!out.contains(NODE_TOKEN), "never print secrets: {out}");
    let pg = format!("[store]\nurl = \"postgres://u:hunter2@127.0.0.1/db\"\n[auth]\ntokens_file = {:?}\n", tokens);
    let (code, err, out) = run(&pg, &["--check-config", "--print"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("store.url = postgres://u:***@127.0.0.1/db") && !out.contains("hunter2"), "{out}");
    for (config, key) in [
        (format!("{good}[listen]\naddr = \"nowhere\"\n"), "listen.addr"),
        (format!("{good}[limits]\nbatch_events_max = 0\n"), "limits.batch_events_max"),
        (format!("{good}[limits]\nbody_bytes_max = \"huge\"\n"), "body_bytes_max"),
        (format!("{good}[lmits]\n"), "lmits: unknown field `lmits`"),
        (format!("[auth]\ntokens_file = {tokens:?}\n"), "store.url"),
        (format!("{good}[limits]\nbody_bytes_max = \"XB\"\n"), "limits.body_bytes_max: \"XB\" is not a size (try \"64KiB\", \"10GiB\" or a number of bytes) (line 6)"),
        (format!("{good}\n[limits]\nconnections_max = 1\nbogus = 2\n"), "limits.bogus: unknown field `bogus`"),
        (format!("{good}\n[limits]\nconnections_max = 1\nbogus = 2\n"), "(line 8)"),
        (format!("{good}[log]\nformat = \"xml\"\n"), "log.format: unknown variant `xml`"),
        (format!("{good}[log]\nlevel = \"ledger=loud\"\n"), "log.level:"),
    ] {
        let (code, err, _) = run(&config, &["--check-config"]);
        assert_eq!(code, Some(2), "{config}: {err}");
        assert!(err.contains(key), "{config}: error should name {key}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line, not flattened toml output: {err}");
        assert!(err.starts_with("ledgerd: config error: "), "{err}");
    }
    let (code, err, _) = run(&good, &["--store", "mysql://x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("store.url"), "{err}");
}

/// ledgerd's `[log] format = "json"` and `level`: every log line is a JSON
/// object, and `warn` drops the INFO start-up lines.
#[tokio::test]
async fn ledger_log_format_and_level_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = format!("sled://{}", tmp.path().join("store").display());
    let l = Ledgerd::start_with_config(tmp.path(), &store, test_support::free_port(), "[log]\nformat = \"json\"\n")
        .await
        .expect("start ledgerd with json logs");
    let log = l.log();
    let lines: Vec<&str> = log.lines().filter(|x| !x.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    drop(l);
    let tmp2 = tempfile::tempdir().expect("tempdir");
    let store2 = format!("sled://{}", tmp2.path().join("store").display());
    let l2 = Ledgerd::start_with_config(tmp2.path(), &store2, test_support::free_port(), "[log]\nlevel = \"warn\"\n")
        .await
        .expect("start ledgerd with level warn");
    assert!(!l2.log().contains("INFO"), "level warn drops INFO: {}", l2.log());
}

async fn post_coded(l: &Ledgerd, path: &str, token: &str, coding: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", l.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body);
    if let Some(c) = coding {
        req = req.header("content-encoding", c);
    }
    req.send().await.expect("post")
}

/// Compressed batches (issue 15): zstd and gzip bodies are recorded like plain
/// ones; every answer advertises `Accept-Encoding`; a body that decodes past
/// `body_bytes_max` (a zip bomb) is 413 and records nothing; an unknown
/// coding is 415; a corrupt stream is 400.
#[tokio::test]
async fn ledger_accepts_compressed_batches_and_refuses_zip_bombs() {
    use common::coding::{encode, Coding};
    let l = Ledgerd::start().await.expect("start ledgerd");
    for (i, (coding, token)) in [(Coding::Zstd, "zstd"), (Coding::Gzip, "gzip"), (Coding::Identity, "identity")].into_iter().enumerate() {
        let body = json!({"node": "front-1", "events": [entry(1, event(&format!("cz-{i}"), 5, MERCHANT_PAYEE))]});
        let wire = encode(coding, &serde_json::to_vec(&body).expect("encode")).expect("compress");
        let r = post_coded(&l, "/v1/batches", NODE_TOKEN, Some(token), wire).await;
        assert_eq!(r.headers().get("accept-encoding").and_then(|v| v.to_str().ok()), Some("zstd, gzip"));
        assert_eq!(r.status().as_u16(), 200, "{token}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(statuses(&v), vec!["accepted"], "{token}");
    }
    // 20 MiB of JSON whitespace around one valid batch: a few KB of zstd,
    // over the 16 MiB default once decoded.
    let inner = serde_json::to_vec(&json!({"node": "front-1", "events": [entry(1, event("bomb-1", 5, MERCHANT_PAYEE))]})).expect("encode");
    let mut bomb = vec![b' '; 20 << 20];
    bomb.extend_from_slice(&inner);
    for (coding, name) in [(Coding::Zstd, "zstd"), (Coding::Gzip, "gzip")] {
        let wire = encode(coding, &bomb).expect("compress");
        assert!(wire.len() < 1 << 20, "{name}: {} bytes on the wire", wire.len());
        let r = post_coded(&l, "/v1/batches", NODE_TOKEN, Some(name), wire).await;
        assert_eq!(r.status().as_u16(), 413, "{name}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "too_large");
    }
    assert_eq!(get(&l, Some(ADMIN_TOKEN), "/v1/events/bomb-1").await.0, 404, "nothing recorded");
    let r = post_coded(&l, "/v1/batches", NODE_TOKEN, Some("br"), b"{}".to_vec()).await;
    assert_eq!(r.status().as_u16(), 415);
    assert!(r.headers().get("accept-encoding").is_some());
    let r = post_coded(&l, "/v1/batches", NODE_TOKEN, Some("zstd"), b"not zstd at all".to_vec()).await;
    assert_eq!(r.status().as_u16(), 400);
    // /readyz (what an idle forwarder probes) advertises it too.
    let r = reqwest::get(format!("{}/readyz", l.url)).await.expect("readyz");
    assert_eq!(r.headers().get("accept-encoding").and_then(|v| v.to_str().ok()), Some("zstd, gzip"));
}

/// `POST /v1/reconcile`: present / different / missing per (id, digest), in
/// order; node and admin only (merchant 403, no token 401); at most 10,000
/// entries; malformed digests refused.
#[tokio::test]
async fn ledger_reconcile_tells_present_different_missing_to_nodes_only() {
    let l = Ledgerd::start().await.expect("start ledgerd");
    let (a, b) = (event("rc-a", 5, MERCHANT_PAYEE), event("rc-b", 6, OTHER_PAYEE));
    assert_eq!(post(&l, NODE_TOKEN, &json!({"node": "n", "events": [entry(1, a.clone()), entry(2, b.clone())]})).await.0, 200);
    let digest = |v: &Value| admin::reconcile::hex(&spool_format::Event::from_json_value(v).expect("valid").digest());
    let other_b = event("rc-b", 7, OTHER_PAYEE);
    let body = json!({"events": [
        {"id": "rc-a", "digest": digest(&a)},
        {"id": "rc-b", "digest": digest(&other_b)},
        {"id": "rc-c", "digest": digest(&a)},
    ]});
    for token in [NODE_TOKEN, ADMIN_TOKEN] {
        let r = post_coded(&l, "/v1/reconcile", token, None, serde_json::to_vec(&body).expect("encode")).await;
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.expect("json");
        assert_eq!(statuses(&v), vec!["present", "different", "missing"]);
        assert_eq!(v["results"][1]["id"], "rc-b");
        assert!(v["results"][1].get("event").is_none() && v["results"][1].get("digest").is_none(), "nothing about the stored event: {v}");
    }
    let plain = serde_json::to_vec(&body).expect("encode");
    assert_eq!(post_coded(&l, "/v1/reconcile", MERCHANT_TOKEN, None, plain.clone()).await.status().as_u16(), 403);
    assert_eq!(post_coded(&l, "/v1/reconcile", "not-a-token-0123456789", None, plain.clone()).await.status().as_u16(), 401);
    // Compressed works too.
    let z = common::coding::encode(common::coding::Coding::Zstd, &plain).expect("zstd");
    assert_eq!(post_coded(&l, "/v1/reconcile", NODE_TOKEN, Some("zstd"), z).await.status().as_u16(), 200);
    let many: Vec<Value> = (0..10_001).map(|i| json!({"id": format!("x{i}"), "digest": digest(&a)})).collect();
    let r = post_coded(&l, "/v1/reconcile", NODE_TOKEN, None, serde_json::to_vec(&json!({"events": many})).expect("encode")).await;
    assert_eq!(r.status().as_u16(), 413);
    for bad in [json!({"events": [{"id": "rc-a", "digest": "abc"}]}), json!({"events": [{"id": "rc-a", "digest": "g".repeat(64)}]})] {
        let r = post_coded(&l, "/v1/reconcile", NODE_TOKEN, None, serde_json::to_vec(&bad).expect("encode")).await;
        assert_eq!(r.status().as_u16(), 400, "{bad}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "invalid_request");
    }
    let odd = json!({"events": [{"id": "", "digest": digest(&a)}, {"id": "x".repeat(300), "digest": digest(&a)}]});
    let r = post_coded(&l, "/v1/reconcile", NODE_TOKEN, None, serde_json::to_vec(&odd).expect("encode")).await;
    assert_eq!(r.status().as_u16(), 200, "an id the ledger cannot hold is just missing");
    assert_eq!(statuses(&r.json().await.expect("json")), vec!["missing", "missing"]);
    let r = post_coded(&l, "/v1/reconcile", NODE_TOKEN, None, br#"{"events":[],"extra":1}"#.to_vec()).await;
    assert_eq!(r.status().as_u16(), 400);
}
