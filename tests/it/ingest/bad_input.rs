//! Table of bad requests: each gets the documented status, error code and
//! field, and nothing reaches the spool (depth and next seq unchanged).

use serde_json::{json, Value};
use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{client_for, depth, event, send};

/// Batch limit for this test's daemon, so that "too many" is cheap to build.
const BATCH_EVENTS_MAX: usize = 10;

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(name: &'static str, body: Vec<u8>, status: u16, code: &'static str, field: Option<&'static str>) -> Case {
    Case { name, method: "POST", path: "/v1/events", content_type: Some("application/json"), body, status, code, field }
}

/// A valid event with one change, expected to be refused as `invalid_event` on `field`.
fn bad_field(name: &'static str, field: &'static str, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Case {
    let mut ev = event(&format!("bad-{}", name.replace(' ', "-")));
    if let Value::Object(m) = &mut ev {
        change(m);
    }
    case(name, serde_json::to_vec(&ev).expect("encode"), 400, "invalid_event", Some(field))
}

fn set(k: &'static str, v: Value) -> impl FnOnce(&mut serde_json::Map<String, Value>) {
    move |m| {
        m.insert(k.to_owned(), v);
    }
}

fn remove(k: &'static str) -> impl FnOnce(&mut serde_json::Map<String, Value>) {
    move |m| {
        m.remove(k);
    }
}

/// The SPEC example as JSON text with `edit` applied to the text: for bytes a
/// `serde_json::Value` cannot hold (duplicate keys, invalid UTF-8, raw NUL).
fn raw(name: &str, edit: impl FnOnce(String) -> Vec<u8>) -> Vec<u8> {
    let text = serde_json::to_string(&event(&format!("raw-{}", name.replace(' ', "-")))).expect("encode");
    edit(text)
}

/// The example with `extra` (`,"key":value`) added before the closing brace.
fn with_tail(name: &str, extra: &str) -> Vec<u8> {
    raw(name, |t| {
        let mut t = t.trim_end_matches('}').to_owned();
        t.push_str(extra);
        t.push('}');
        t.into_bytes()
    })
}

/// The example with `from` replaced by `to` (once) in its JSON text.
fn replaced(name: &str, from: &str, to: &[u8]) -> Vec<u8> {
    raw(name, |t| {
        let i = t.find(from).expect("text to replace");
        let mut b = t.as_bytes()[..i].to_vec();
        b.extend_from_slice(to);
        b.extend_from_slice(&t.as_bytes()[i + from.len()..]);
        b
    })
}

fn cases() -> Vec<Case> {
    let many_attrs: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), Value::String("v".into()))).collect();
    let batch_too_many: Vec<Value> = (0..=BATCH_EVENTS_MAX).map(|i| event(&format!("many-{i}"))).collect();
    let mut huge = event("huge");
    huge["item"] = Value::String("x".repeat(70 * 1024));
    vec![
        // Not JSON at all.
        case("not json", b"hello".to_vec(), 400, "invalid_json", None),
        case("truncated json", br#"{"id":"#.to_vec(), 400, "invalid_json", None),
        case("empty body", Vec::new(), 400, "invalid_json", None),
        case("trailing garbage", br#"{"id":"x"} xx"#.to_vec(), 400, "invalid_json", None),
        // JSON, but not an event object.
        case("array instead of object", b"[]".to_vec(), 400, "invalid_event", Some("event")),
        case("string instead of object", br#""event""#.to_vec(), 400, "invalid_event", Some("event")),
        case("null body", b"null".to_vec(), 400, "invalid_event", Some("event")),
        // id
        bad_field("id missing", "id", remove("id")),
        bad_field("id empty", "id", set("id", json!(""))),
        bad_field("id with space", "id", set("id", json!("a b"))),
        bad_field("id with slash", "id", set("id", json!("a/b"))),
        bad_field("id 129 bytes", "id", set("id", json!("a".repeat(129)))),
        bad_field("id number", "id", set("id", json!(42))),
        bad_field("id non-ascii", "id", set("id", json!("caf\u{e9}"))),
        // kind
        bad_field("kind missing", "kind", remove("kind")),
        bad_field("kind unknown", "kind", set("kind", json!("donation"))),
        bad_field("kind upper case", "kind", set("kind", json!("PURCHASE"))),
        // amount
        bad_field("amount missing", "amount", remove("amount")),
        bad_field("amount null", "amount", set("amount", Value::Null)),
        bad_field("amount zero", "amount", set("amount", json!(0))),
        bad_field("amount negative", "amount", set("amount", json!(-5))),
        bad_field("amount fractional", "amount", set("amount", json!(250.5))),
        bad_field("amount float integral", "amount", set("amount", json!(250.0))),
        bad_field("amount string", "amount", set("amount", json!("250"))),
        bad_field("amount over max", "amount", set("amount", json!(1_000_000_000_001u64))),
        // currency
        bad_field("currency missing", "currency", remove("currency")),
        bad_field("currency empty", "currency", set("currency", json!(""))),
        bad_field("currency with space", "currency", set("currency", json!("L $"))),
        bad_field("currency 9 bytes", "currency", set("currency", json!("ABCDEFGHI"))),
        // parties
        bad_field("payer missing", "payer", remove("payer")),
        bad_field("payer not a uuid", "payer", set("payer", json!("alice"))),
        bad_field("payer simple uuid form", "payer", set("payer", json!("9c8b7a6d5e4f4a3b2c1d0e9f8a7b6c5d"))),
        bad_field("payee missing", "payee", remove("payee")),
        bad_field("payee number", "payee", set("payee", json!(7))),
        bad_field("recipient bad", "recipient", set("recipient", json!("not-a-uuid-at-all-not-a-uuid-at-all"))),
        // time
        bad_field("occurred_at missing", "occurred_at", remove("occurred_at")),
        bad_field("occurred_at not rfc3339", "occurred_at", set("occurred_at", json!("2026-11-24 12:00"))),
        bad_field("occurred_at number", "occurred_at", set("occurred_at", json!(1_700_000_000))),
        // optional strings
        bad_field("item 257 bytes", "item", set("item", json!("x".repeat(257)))),
        bad_field("region 129 bytes", "region", set("region", json!("x".repeat(129)))),
        bad_field("terminal number", "terminal", set("terminal", json!(42))),
        // attributes
        bad_field("attributes array", "attributes", set("attributes", json!(["a"]))),
        bad_field("attribute value number", "attributes", set("attributes", json!({"a": 1}))),
        bad_field("attributes 33 entries", "attributes", set("attributes", Value::Object(many_attrs))),
        bad_field("attribute key 65 bytes", "attributes", set("attributes", json!({"k".repeat(65): "v"}))),
        bad_field("attribute value 1025 bytes", "attributes", set("attributes", json!({"k": "v".repeat(1025)}))),
        // unknown field
        bad_field("unknown field", "tip", set("tip", json!(5))),
        // Duplicate keys, at any depth, even with equal values or an escaped spelling:
        // invalid_json naming the key's path in `field`.
        case("duplicate amount", with_tail("dup amount", r#","amount":9"#), 400, "invalid_json", Some("amount")),
        case("duplicate id", with_tail("dup id", r#","id":"other""#), 400, "invalid_json", Some("id")),
        case("duplicate kind same value", with_tail("dup kind", r#","kind":"purchase""#), 400, "invalid_json", Some("kind")),
        case("duplicate payee", with_tail("dup payee", r#","payee":"4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0""#), 400, "invalid_json", Some("payee")),
        case("duplicate key escaped spelling", with_tail("dup escaped", r#","\u0061mount":9"#), 400, "invalid_json", Some("amount")),
        case("duplicate unknown key", with_tail("dup unknown", r#","tip":1,"tip":2"#), 400, "invalid_json", Some("tip")),
        case("duplicate key in attributes", replaced("dup attr", r#""attributes":{"#, br#""attributes":{"a":"1","a":"2","#), 400, "invalid_json", Some("attributes.a")),
        case("duplicate attributes key", replaced("dup attr 2", r#""rental_period_days":"7""#, br#""rental_period_days":"7","rental_period_days":"7""#), 400, "invalid_json", Some("attributes.rental_period_days")),
        // Bytes that are not strict JSON.
        case("raw invalid utf-8 in a value", replaced("utf8 raw", "Mesh Sofa", b"Mesh \xff Sofa"), 400, "invalid_json", None),
        case("raw invalid utf-8 in a key", replaced("utf8 key", r#""item":"#, b"\"it\xc3em\":"), 400, "invalid_json", None),
        case("byte order mark", [b"\xef\xbb\xbf".as_slice(), &with_tail("bom", "")].concat(), 400, "invalid_json", None),
        case("raw NUL after the object", [with_tail("nul after", "").as_slice(), b"\0"].concat(), 400, "invalid_json", None),
        case("raw NUL inside a string", replaced("nul raw", "Mesh Sofa", b"Mesh\0Sofa"), 400, "invalid_json", None),
        case("escaped NUL in item", replaced("nul item", "Mesh Sofa", br"Mesh\u0000Sofa"), 400, "invalid_event", Some("item")),
        case("escaped NUL in attribute value", replaced("nul attr", r#""rental_period_days":"7""#, br#""rental_period_days":"7\u0000""#), 400, "invalid_event", Some("attributes")),
        case("escaped NUL in id", replaced("nul id", r#""id":"raw-nul-id""#, br#""id":"a\u0000b""#), 400, "invalid_event", Some("id")),
        case("lone surrogate in item", replaced("surrogate", "Mesh Sofa", br"Mesh\ud800Sofa"), 400, "invalid_json", None),
        case("whitespace-only body", b" \n\t ".to_vec(), 400, "invalid_json", None),
        case("two objects", [with_tail("two a", "").as_slice(), &with_tail("two b", "")].concat(), 400, "invalid_json", None),
        // Numbers past the integer types: never wrapped, never rounded into range.
        case("amount 2^64", replaced("amount 2 pow 64", r#""amount":250"#, br#""amount":18446744073709551616"#), 400, "invalid_event", Some("amount")),
        case("amount u64 max", replaced("amount u64max", r#""amount":250"#, br#""amount":18446744073709551615"#), 400, "invalid_event", Some("amount")),
        case("amount below i64 min", replaced("amount i64min", r#""amount":250"#, br#""amount":-9223372036854775809"#), 400, "invalid_event", Some("amount")),
        case("amount exponent", replaced("amount exp", r#""amount":250"#, br#""amount":2.5e2"#), 400, "invalid_event", Some("amount")),
        case("amount 1e400", replaced("amount 1e400", r#""amount":250"#, br#""amount":1e400"#), 400, "invalid_json", None),
        case("amount 30 digits", replaced("amount 30 digits", r#""amount":250"#, format!(r#""amount":{}"#, "9".repeat(30)).as_bytes()), 400, "invalid_event", Some("amount")),
        case("amount 400 digits", replaced("amount digits", r#""amount":250"#, format!(r#""amount":{}"#, "9".repeat(400)).as_bytes()), 400, "invalid_json", None),
        // Nesting: deeper than the parser's limit is not JSON we read; shallower
        // nesting where a string belongs is a wrong type.
        case("nesting 10000 deep", replaced("deep", r#""rental_period_days":"7""#, format!(r#""x":{}{}"#, "[".repeat(10_000), "]".repeat(10_000)).as_bytes()), 400, "invalid_json", None),
        case("nesting 100 deep in attributes", replaced("deep 100", r#""rental_period_days":"7""#, format!(r#""x":{}{}"#, "[".repeat(100), "]".repeat(100)).as_bytes()), 400, "invalid_event", Some("attributes")),
        // null is a wrong type, never "absent" (docs/api.md).
        bad_field("item null", "item", set("item", Value::Null)),
        bad_field("region null", "region", set("region", Value::Null)),
        bad_field("terminal null", "terminal", set("terminal", Value::Null)),
        bad_field("recipient null", "recipient", set("recipient", Value::Null)),
        bad_field("attributes null", "attributes", set("attributes", Value::Null)),
        bad_field("kind null", "kind", set("kind", Value::Null)),
        bad_field("payer null", "payer", set("payer", Value::Null)),
        bad_field("attribute value null", "attributes", set("attributes", json!({"a": null}))),
        // media type and size
        Case { content_type: Some("text/plain"), ..case("text/plain", serde_json::to_vec(&event("ct-1")).expect("encode"), 415, "unsupported_media_type", None) },
        Case { content_type: None, ..case("no content type", serde_json::to_vec(&event("ct-2")).expect("encode"), 415, "unsupported_media_type", None) },
        Case { content_type: Some("application/jsonx"), ..case("json-ish content type", serde_json::to_vec(&event("ct-3")).expect("encode"), 415, "unsupported_media_type", None) },
        case("body over 64 KiB", serde_json::to_vec(&huge).expect("encode"), 413, "too_large", None),
        // batch endpoint, whole-request refusals
        Case { path: "/v1/events/batch", ..case("batch not json", b"[{".to_vec(), 400, "invalid_json", None) },
        Case { path: "/v1/events/batch", ..case("batch is an object", serde_json::to_vec(&event("obj")).expect("encode"), 400, "invalid_json", None) },
        Case { path: "/v1/events/batch", ..case("batch duplicate key in an event", [b"[".as_slice(), &with_tail("bdup", r#","amount":9"#), b"]"].concat(), 400, "invalid_json", Some("[0].amount")) },
        Case { path: "/v1/events/batch", ..case("batch duplicate key in attributes of 2nd", [b"[".as_slice(), &with_tail("bdup2a", ""), b",", &replaced("bdup2b", r#""attributes":{"#, br#""attributes":{"a":"1","a":"1","#), b"]"].concat(), 400, "invalid_json", Some("[1].attributes.a")) },
        Case { path: "/v1/events/batch", ..case("batch byte order mark", [b"\xef\xbb\xbf[".as_slice(), &with_tail("bbom", ""), b"]"].concat(), 400, "invalid_json", None) },
        Case { path: "/v1/events/batch", ..case("batch empty body", Vec::new(), 400, "invalid_json", None) },
        Case { path: "/v1/events/batch", ..case("batch nesting 10000 deep", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(), 400, "invalid_json", None) },
        Case { path: "/v1/events/batch", ..case("batch over batch_events_max", serde_json::to_vec(&batch_too_many).expect("encode"), 413, "too_large", None) },
        Case { path: "/v1/events/batch", content_type: Some("text/csv"), ..case("batch text/csv", b"[]".to_vec(), 415, "unsupported_media_type", None) },
        // routing
        Case { method: "GET", ..case("GET /v1/events", Vec::new(), 405, "method_not_allowed", None) },
        Case { method: "PUT", path: "/v1/events/batch", ..case("PUT batch", Vec::new(), 405, "method_not_allowed", None) },
        Case { method: "POST", path: "/v1/status", ..case("POST status", Vec::new(), 405, "method_not_allowed", None) },
        Case { path: "/v1/nope", ..case("unknown v1 route", Vec::new(), 404, "not_found", None) },
        Case { path: "/nope", ..case("unknown route", Vec::new(), 404, "not_found", None) },
    ]
}

#[tokio::test]
async fn ingest_bad_input_table() {
    bad_input_table(false).await;
}

/// The same table over TLS (`[listen] tls_cert`): TLS changes no answer.
#[tokio::test]
async fn ingest_bad_input_table_over_tls() {
    bad_input_table(true).await;
}

async fn bad_input_table(tls: bool) {
    let s = Spoold::start(SpooldOptions::default().tls(tls).limits(&format!("batch_events_max = {BATCH_EVENTS_MAX}")))
        .await
        .expect("start spoold");
    let c = client_for(&s);
    // One real event first, so that "unchanged" is about a non-empty spool.
    let ok = super::post_json(&c, &s, "/v1/events", &event("good-1")).await;
    assert_eq!(ok.status, 202, "{:?}", ok.body);
    let before = depth(&c, &s).await;
    assert_eq!(before.0, 1);

    let cases = cases();
    assert!(cases.len() >= 60, "the table must hold at least 60 cases, has {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let r = if case.body.len() > REFUSED_UNREAD_BYTES {
            head_only(&s, case).await
        } else {
            let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
            let mut req = c.request(method, s.url(case.path)).bearer_auth(TEST_TOKEN).body(case.body.clone());
            if let Some(ct) = case.content_type {
                req = req.header("content-type", ct);
            }
            send(req).await.expect("request")
        };
        let mut problems = Vec::new();
        if r.status != case.status {
            problems.push(format!("status {} (want {})", r.status, case.status));
        }
        if r.code() != Some(case.code) {
            problems.push(format!("code {:?} (want {:?})", r.code(), case.code));
        }
        if r.field() != case.field {
            problems.push(format!("field {:?} (want {:?})", r.field(), case.field));
        }
        if r.body.pointer("/error/message").and_then(Value::as_str).map(str::is_empty).unwrap_or(true) {
            problems.push("no error message".into());
        }
        let after = depth(&c, &s).await;
        if after != before {
            problems.push(format!("spool changed: {before:?} -> {after:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {} (body {})", case.name, problems.join(", "), r.body));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// A body this big is refused on its Content-Length before a byte of it is
/// read (`limits.body_bytes_max`, 64 KiB by default).
const REFUSED_UNREAD_BYTES: usize = 64 * 1024;

/// Sends only the head of `case` (with its Content-Length) and reads the
/// answer: spoold must refuse on the Content-Length alone, without waiting
/// for the body. (A client that writes the whole body races the server's
/// close: it may get a broken pipe instead of the 413, more often over TLS.)
async fn head_only(s: &Spoold, case: &Case) -> super::Resp {
    let mut stream = s.connector().connect(&s.addr()).await.expect("connect");
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\nContent-Length: {}\r\n",
        case.method,
        case.path,
        case.body.len()
    );
    if let Some(ct) = case.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    super::Resp { status, headers: Default::default(), body: serde_json::from_str(body).unwrap_or(Value::Null) }
}

/// A chunked body (no Content-Length) over the limit is cut by the streaming
/// limit, not only by the Content-Length check.
#[tokio::test]
async fn ingest_chunked_body_over_limit_is_413() {
    chunked_body_over_limit(false).await;
}

#[tokio::test]
async fn ingest_chunked_body_over_limit_is_413_over_tls() {
    chunked_body_over_limit(true).await;
}

async fn chunked_body_over_limit(tls: bool) {
    let s = Spoold::start(SpooldOptions::default().tls(tls)).await.expect("start spoold");
    let c = client_for(&s);
    let before = depth(&c, &s).await;
    let mut stream = s.connector().connect(&s.addr()).await.expect("connect");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let chunk = vec![b' '; 8192];
    // 80 KiB of chunks, over the 64 KiB default; the server may close early.
    for _ in 0..10 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "want 413, got: {text}");
    assert!(text.contains("\"too_large\""), "want code too_large, got: {text}");
    assert_eq!(depth(&c, &s).await, before);
}
