//! Incident: a read endpoint that leaked purchase history. Two merchants'
//! purchases (by the same customer) go through spoold to the ledger; then
//! every read a curious merchant or an anonymous client could try: merchant A
//! asks for B's events by id, by payee, by payer, by recipient and unfiltered;
//! anonymous and wrong-token reads on ledgerd and on spoold's `/v1/`. A read
//! that returns anything of the other merchant (or anything at all without a
//! valid token) counts as leaked. Each merchant's own reads must work, so a
//! ledger that answers nothing to anyone would fail too.

use std::time::Instant;

use serde_json::Value;
use test_support::events::spec_example;
use test_support::ledgerd::{Ledgerd, MERCHANT_B_PAYEE, MERCHANT_B_TOKEN, MERCHANT_PAYEE, MERCHANT_TOKEN, NODE_TOKEN};
use test_support::spoold::Spoold;

use super::{drain, forwarding, post_until_acked, Outcome};

const EACH: usize = 20;
const RECIPIENT_A: &str = "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0";
const RECIPIENT_B: &str = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d";
/// The customer who bought from both merchants.
const PAYER: &str = "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d";

fn purchase(id: &str, payee: &str, recipient: &str) -> Value {
    let mut e = spec_example(id);
    e["payee"] = payee.into();
    e["recipient"] = recipient.into();
    e
}

/// GET `url` with `token`: status and JSON body (Null if none).
async fn get(c: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = c.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("read request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Events in a read's answer (one event or a list) whose payee is not `own`.
fn foreign(body: &Value, own: &str) -> usize {
    let events: Vec<&Value> = match body.get("events").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None if body.get("event").is_some() => vec![body],
        None => Vec::new(),
    };
    events.iter().filter(|e| e["event"]["payee"].as_str() != Some(own)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_read_leak() {
    let ledger = Ledgerd::start().await.expect("start ledgerd");
    let s = Spoold::start(forwarding(&[&ledger.url])).await.expect("start spoold");
    let c = reqwest::Client::new();
    let mut events: Vec<Value> = (0..EACH).map(|i| purchase(&format!("shop-a-{i}"), MERCHANT_PAYEE, RECIPIENT_A)).collect();
    events.extend((0..EACH).map(|i| purchase(&format!("shop-b-{i}"), MERCHANT_B_PAYEE, RECIPIENT_B)));
    let report = post_until_acked(&c, &s.url("/v1/events/batch"), events, Instant::now() + super::DRAIN_TIMEOUT).await;
    let drain = drain(&[&s], Instant::now()).await;

    let mut leaked = 0u64;
    let mut reads = 0u64;
    let l = &ledger.url;
    let merchants =
        [(MERCHANT_TOKEN, MERCHANT_PAYEE, "shop-b", MERCHANT_B_PAYEE, RECIPIENT_B), (MERCHANT_B_TOKEN, MERCHANT_B_PAYEE, "shop-a", MERCHANT_PAYEE, RECIPIENT_A)];
    for (token, own, other, other_payee, other_recipient) in merchants {
        for i in 0..EACH {
            let (status, body) = get(&c, &format!("{l}/v1/events/{other}-{i}"), Some(token)).await;
            reads += 1;
            if status != 404 || !body["event"].is_null() {
                leaked += 1;
            }
        }
        for query in [format!("payee={other_payee}"), format!("recipient={other_recipient}"), format!("payer={PAYER}"), String::new()] {
            let (status, body) = get(&c, &format!("{l}/v1/events?{query}"), Some(token)).await;
            reads += 1;
            assert!(matches!(status, 200 | 404), "merchant read ?{query}: {status} {body}");
            leaked += foreign(&body, own) as u64;
        }
        // Its own purchases it does see, by payer and unfiltered.
        for query in [format!("payer={PAYER}"), String::new()] {
            let (status, body) = get(&c, &format!("{l}/v1/events?{query}"), Some(token)).await;
            reads += 1;
            assert_eq!(status, 200, "own read ?{query}: {body}");
            assert_eq!(body["events"].as_array().map(Vec::len), Some(EACH), "own read ?{query}: {body}");
        }
    }
    // Without a valid token nothing is read, on ledgerd or on spoold.
    let anonymous = [
        format!("{l}/v1/events/shop-a-0"),
        format!("{l}/v1/events"),
        format!("{l}/v1/events?payer={PAYER}"),
        format!("{l}/v1/stats"),
        s.url("/v1/status"),
        s.url("/v1/events"),
    ];
    for url in &anonymous {
        for token in [None, Some("not-a-token-0123456789abcdef")] {
            let (status, body) = get(&c, url, token).await;
            reads += 1;
            if status != 401 {
                eprintln!("leaked: GET {url} with {token:?}: {status} {body}");
                leaked += 1;
            }
        }
    }
    // An edge node's token writes batches; it reads nothing.
    let (status, _) = get(&c, &format!("{l}/v1/events/shop-a-0"), Some(NODE_TOKEN)).await;
    reads += 1;
    if status != 403 {
        leaked += 1;
    }
    let scale = format!("{} events of 2 merchants, {reads} reads tried", 2 * EACH);
    Outcome { leaked, ..Outcome::new("read_leak", report, drain, "none", scale) }.check(&ledger).await;
}
