//! spoold's ingest API against the real binary (SPEC §2): bad input, the
//! happy path, auth, backpressure, a real full disk, slow-loris clients,
//! SIGKILL crashes and graceful shutdown.
//!
//! Build first: `cargo build -p spoold && cargo test -p offgrid-tests ingest`.

mod backpressure;
mod bad_input;
mod config;
mod crash;
mod disk_full;
mod forward;
mod happy;
mod sd_notify;
mod shutdown;
mod slowloris;

use std::time::Duration;

use serde_json::Value;
use test_support::spoold::{Spoold, TEST_TOKEN};

/// A valid event with id `id` (SPEC §1 example).
pub fn event(id: &str) -> Value {
    test_support::events::spec_example(id)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("build http client")
}

/// [`client`] for `s`: over TLS when `s` serves TLS (trusting its test CA).
pub fn client_for(s: &Spoold) -> reqwest::Client {
    s.client_builder().timeout(Duration::from_secs(20)).build().expect("build http client")
}

/// A response, read whole: status, headers and JSON body (Null if not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(Value::as_str)
    }

    pub fn field(&self) -> Option<&str> {
        self.body.pointer("/error/field").and_then(Value::as_str)
    }

    pub fn seq(&self) -> Option<u64> {
        self.body.get("seq").and_then(Value::as_u64)
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> reqwest::Result<Resp> {
    let r = req.send().await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Resp { status, headers, body })
}

/// POST a JSON value with the test token.
pub async fn post_json(c: &reqwest::Client, s: &Spoold, path: &str, body: &Value) -> Resp {
    send(
        c.post(s.url(path))
            .bearer_auth(TEST_TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).expect("encode")),
    )
    .await
    .expect("request")
}

/// `GET /v1/status`.
pub async fn status(c: &reqwest::Client, s: &Spoold) -> Value {
    let r = send(c.get(s.url("/v1/status")).bearer_auth(TEST_TOKEN)).await.expect("status request");
    assert_eq!(r.status, 200, "status: {:?}", r.body);
    r.body
}

/// (records in the spool, next seq): both must stay put when input is refused.
pub async fn depth(c: &reqwest::Client, s: &Spoold) -> (u64, u64) {
    let st = status(c, s).await;
    let events = st.pointer("/spool/events").and_then(Value::as_u64).expect("spool.events");
    let next = st.pointer("/spool/next_seq").and_then(Value::as_u64).expect("spool.next_seq");
    (events, next)
}

/// Status code of a GET without a token (health endpoints).
pub async fn get_status_code(c: &reqwest::Client, s: &Spoold, path: &str) -> u16 {
    c.get(s.url(path)).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Polls `path` until it answers `want` or `timeout` passes; returns the last code.
pub async fn wait_code(c: &reqwest::Client, s: &Spoold, path: &str, want: u16, timeout: Duration) -> u16 {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let code = get_status_code(c, s, path).await;
        if code == want || std::time::Instant::now() > deadline {
            return code;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether slow tests were asked for.
pub fn slow_tests() -> bool {
    std::env::var("OFFGRID_SLOW_TESTS").map(|v| v == "1").unwrap_or(false)
}
