//! Client certificates on ledgerd's listener (`[listen] tls_client_ca`) and the
//! forwarder's (`[ledger] client_cert` / `client_key`), with certificates made
//! here (rcgen, `test_support::tls`): with a client CA, a client without a
//! certificate or with one from another CA is refused in the handshake, a
//! client with a good one is served — and still needs its bearer token; SIGHUP
//! re-reads the client CA; spoold forwards to ledgerd over mutual TLS, and a
//! forwarder refused for a wrong certificate delivers once its files are fixed
//! and it is sent SIGHUP.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use test_support::ledgerd::{ADMIN_TOKEN, NODE_TOKEN};
use test_support::tls::{client_builder, Issued, TestCa};
use test_support::{free_port, DaemonProcess};

/// A ledgerd over TLS (server certificate from `server_ca`) that requires
/// client certificates from the CA bundle at `client_ca`; its log path.
fn start_ledgerd(dir: &Path, server_ca: &TestCa, client_ca: &Path, port: u16) -> (DaemonProcess, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = server_ca.server().write(dir, "ledgerd");
    let config = dir.join("ledgerd.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddr = \"127.0.0.1:{port}\"\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n\
             [store]\nurl = \"sled://{}\"\n[auth]\ntokens_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string(),
            client_ca.display().to_string(),
            dir.join("store").display(),
            write_tokens(dir).display().to_string(),
        ),
    )
    .unwrap();
    let log = dir.join("ledgerd.log");
    let p = DaemonProcess::spawn("ledgerd", &["--config".into(), config.display().to_string()], &log).unwrap();
    (p, log)
}

fn write_tokens(dir: &Path) -> PathBuf {
    let p = dir.join("ledgerd.tokens");
    std::fs::write(&p, format!("front:{NODE_TOKEN}:node\nops:{ADMIN_TOKEN}:admin\n")).unwrap();
    p
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `GET /healthz` with `client`: the status, or the error (handshake refused).
async fn healthz(client: &reqwest::Client, port: u16) -> Result<u16, String> {
    client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// Polls until `client` is served `/healthz` (ledgerd is up).
async fn wait_served(client: &reqwest::Client, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = healthz(client, port).await;
        if r == Ok(200) {
            return;
        }
        assert!(Instant::now() < deadline, "ledgerd never served a good client certificate: {r:?}\n{}", read(log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn client(server_ca: &TestCa, identity: Option<&Issued>) -> reqwest::Client {
    client_builder(&server_ca.pem(), identity).timeout(Duration::from_secs(5)).build().unwrap()
}

/// Three CAs (the ledger's server CA, the nodes' CA that ledgerd trusts for
/// client certificates, another one) and a ledgerd in `dir` requiring
/// certificates of `nodes` (bundle at `client_ca`).
struct Mtls {
    server_ca: TestCa,
    nodes: TestCa,
    other: TestCa,
    client_ca: PathBuf,
    port: u16,
    ledgerd: DaemonProcess,
    log: PathBuf,
}

impl Mtls {
    fn start(dir: &Path) -> Mtls {
        std::fs::create_dir_all(dir).unwrap();
        let (server_ca, nodes, other) = (TestCa::new("server"), TestCa::new("nodes"), TestCa::new("other"));
        let client_ca = nodes.write(&dir.join("clients.pem"));
        let port = free_port();
        let (ledgerd, log) = start_ledgerd(dir, &server_ca, &client_ca, port);
        Mtls { server_ca, nodes, other, client_ca, port, ledgerd, log }
    }
}

#[tokio::test]
async fn ledgerd_tls_client_ca_requires_a_certificate_and_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let Mtls { server_ca, nodes, other, client_ca, port, ledgerd, log } = Mtls::start(tmp.path());

    let good = nodes.client("front-1");
    let good_client = client(&server_ca, Some(&good));
    wait_served(&good_client, port, &log).await;

    // No certificate, or one from another CA: refused in the handshake (no HTTP answer).
    let r = healthz(&client(&server_ca, None), port).await;
    assert!(r.is_err(), "a client without a certificate was served: {r:?}");
    let stranger = other.client("front-1");
    let r = healthz(&client(&server_ca, Some(&stranger)), port).await;
    assert!(r.is_err(), "a client with a certificate from another CA was served: {r:?}");

    // A good certificate is not enough: the token is still required.
    let event = test_support::events::spec_example("mtls-1");
    let batch = serde_json::json!({"node": "front-1", "events": [{"seq": 1, "received_at": "2026-11-24T12:00:00Z", "event": event}]});
    let url = format!("https://localhost:{port}/v1/batches");
    let r = good_client.post(&url).json(&batch).send().await.unwrap();
    assert_eq!(r.status(), 401, "a batch with a certificate and no token");
    let r = good_client.post(&url).bearer_auth(NODE_TOKEN).json(&batch).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "accepted", "{body}");

    // SIGHUP re-reads the client CA: now only `other` is trusted.
    other.write(&client_ca);
    let pid = ledgerd.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let swapped = client(&server_ca, Some(&stranger));
    wait_served(&swapped, port, &log).await;
    let r = healthz(&client(&server_ca, Some(&good)), port).await;
    assert!(r.is_err(), "a certificate of the CA replaced by the reload was still served: {r:?}");
    assert!(read(&log).contains("TLS client CA reloaded"), "{}", read(&log));

    // A broken bundle is not loaded; the one in use stays.
    std::fs::write(&client_ca, "not a certificate\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read(&log).contains("TLS client CA not reloaded") {
        assert!(Instant::now() < deadline, "a bad client CA reload was not reported\n{}", read(&log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(healthz(&swapped, port).await, Ok(200), "a failed reload must keep the client CA in use");
}

#[test]
fn ledgerd_tls_client_ca_config_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = TestCa::new("server");
    let (cert, key) = ca.server().write(dir, "ledgerd");
    let bundle = ca.write(&dir.join("clients.pem"));
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let run = |listen: &str| {
        let config = dir.join("check.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\n{listen}\n[store]\nurl = \"sled://{}\"\n[auth]\ntokens_file = {:?}\n",
                dir.join("store").display(),
                write_tokens(dir).display().to_string()
            ),
        )
        .unwrap();
        Command::new(test_support::bin_path("ledgerd"))
            .args(["--config", &config.display().to_string(), "--check-config", "--print"])
            .output()
            .unwrap()
    };
    let pair = format!("tls_cert = {:?}\ntls_key = {:?}", cert.display().to_string(), key.display().to_string());
    for (listen, why) in [
        (format!("tls_client_ca = {:?}", bundle.display().to_string()), "without tls_cert"),
        (format!("{pair}\ntls_client_ca = {:?}", garbage.display().to_string()), "not PEM"),
        (format!("{pair}\ntls_client_ca = {:?}", dir.join("missing.pem").display().to_string()), "missing"),
    ] {
        let out = run(&listen);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{why}: {stderr}");
        assert!(stderr.contains("listen.tls_client_ca"), "{why}: the error must name listen.tls_client_ca: {stderr}");
    }
    let out = run(&format!("{pair}\ntls_client_ca = {:?}", bundle.display().to_string()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("listen.tls_client_ca = {} (1 certificates; a client certificate is required)", bundle.display())),
        "{stdout}"
    );
}

/// spoold → ledgerd over mutual TLS. spoold starts with a client certificate
/// from a CA ledgerd does not trust: its batches are refused in the handshake
/// (the ledger error is reported, nothing arrives). The good certificate is
/// written over the files and spoold gets SIGHUP: the event arrives.
#[tokio::test]
async fn spoold_forwards_over_mutual_tls_and_reloads_its_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Mtls { server_ca, nodes, other, port: ledger_port, ledgerd: _ledgerd, log: ledger_log, .. } =
        Mtls::start(&dir.join("ledgerd"));
    let admin = client(&server_ca, Some(&nodes.client("ops")));
    wait_served(&admin, ledger_port, &ledger_log).await;

    let server_ca_file = server_ca.write(&dir.join("ledger-ca.pem"));
    let (client_cert, client_key) = other.client("tls-node").write(dir, "spoold-client");
    let token_file = dir.join("ledger.token");
    std::fs::write(&token_file, format!("{NODE_TOKEN}\n")).unwrap();
    let tokens = dir.join("spoold.tokens");
    std::fs::write(&tokens, format!("client:{}\n", test_support::spoold::TEST_TOKEN)).unwrap();
    let port = free_port();
    let config = dir.join("spoold.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"tls-node\"\n[listen]\naddr = \"127.0.0.1:{port}\"\nadmin_socket = \"\"\n\
             [auth]\ntokens_file = {:?}\n[spool]\ndir = {:?}\n\
             [ledger]\nurls = [\"https://localhost:{ledger_port}\"]\ntoken_file = {:?}\nca_file = {:?}\n\
             client_cert = {:?}\nclient_key = {:?}\n[retry]\ninitial = \"50ms\"\nmax = \"500ms\"\n",
            tokens.display().to_string(),
            dir.join("spool").display().to_string(),
            token_file.display().to_string(),
            server_ca_file.display().to_string(),
            client_cert.display().to_string(),
            client_key.display().to_string(),
        ),
    )
    .unwrap();
    let log = dir.join("spoold.log");
    let spoold = DaemonProcess::spawn("spoold", &["--config".into(), config.display().to_string()], &log).unwrap();
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    test_support::wait_http_ok_with(&plain, &format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(60))
        .await
        .unwrap();
    let event = test_support::events::spec_example("mtls-spoold-1");
    let r = plain
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .bearer_auth(test_support::spoold::TEST_TOKEN)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let at_ledger = || async {
        admin
            .get(format!("https://localhost:{ledger_port}/v1/events/mtls-spoold-1"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // The wrong certificate: the forwarder reports a ledger error, the event stays pending.
    let deadline = Instant::now() + Duration::from_secs(30);
    let last_error = loop {
        let st: serde_json::Value = plain
            .get(format!("http://127.0.0.1:{port}/v1/status"))
            .bearer_auth(test_support::spoold::TEST_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(e) = st.pointer("/ledger/last_error").and_then(serde_json::Value::as_str) {
            break e.to_owned();
        }
        assert!(Instant::now() < deadline, "no ledger error reported with a refused certificate: {st}\n{}", read(&log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("forwarder with a certificate of another CA: {last_error}");
    assert_eq!(at_ledger().await, 404, "an event arrived through a refused certificate");

    // The good certificate, then SIGHUP: delivered.
    nodes.client("tls-node").write(dir, "spoold-client");
    let pid = spoold.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while at_ledger().await != 200 {
        assert!(Instant::now() < deadline, "the event never arrived after the reload\n{}\n{}", read(&log), read(&ledger_log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(read(&log).contains("forwarder TLS files reloaded"), "{}", read(&log));
}
