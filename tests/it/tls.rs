//! TLS on ledgerd's listener (`[listen] tls_cert` / `tls_key`), with
//! certificates made here (rcgen: a CA and a server certificate for localhost
//! and 127.0.0.1): a client that trusts the CA is served — the whole API, a
//! batch recorded and read back — a client without the CA is refused, plain
//! HTTP on the TLS port gets nothing, a stalled handshake is cut after the
//! header read timeout, and a half or broken TLS config is a config error
//! naming the key (exit 2).
//!
//! The same for spoold's listener, and spoold's forwarder reaching a TLS
//! ledgerd whose CA it is given by `[ledger] ca_file`.

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use test_support::ledgerd::{ADMIN_TOKEN, NODE_TOKEN};
use test_support::tls::TestCa;
use test_support::{free_port, DaemonProcess};

/// A test CA and a server certificate it signed, as PEM files in a directory.
pub(crate) struct Pki {
    pub ca_pem: String,
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Makes a CA and a certificate for localhost and 127.0.0.1 in `dir`.
pub(crate) fn make_pki(dir: &Path) -> Pki {
    let ca = TestCa::new("");
    let (cert, key) = ca.server().write(dir, "ledgerd");
    Pki { ca_pem: ca.pem(), ca: ca.write(&dir.join("ca.pem")), cert, key }
}

fn write_tokens(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("ledgerd.tokens");
    std::fs::write(&p, format!("front:{NODE_TOKEN}:node\nops:{ADMIN_TOKEN}:admin\n")).unwrap();
    p
}

fn ledgerd_args(dir: &Path, config: &Path, port: u16) -> Vec<String> {
    vec![
        "--config".into(),
        config.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--store".into(),
        format!("sled://{}", dir.join("store").display()),
        "--tokens-file".into(),
        write_tokens(dir).display().to_string(),
    ]
}

#[tokio::test]
async fn ledgerd_serves_tls_to_clients_that_trust_its_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_pki(dir);
    let config = dir.join("ledgerd.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\ntls_cert = {:?}\ntls_key = {:?}\n[limits]\nheader_read_timeout = \"1s\"\n",
            pki.cert.display().to_string(),
            pki.key.display().to_string()
        ),
    )
    .unwrap();
    let port = free_port();
    let _ledgerd = DaemonProcess::spawn("ledgerd", &ledgerd_args(dir, &config, port), &dir.join("ledgerd.log")).unwrap();
    let log = || std::fs::read_to_string(dir.join("ledgerd.log")).unwrap_or_default();

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match trusting.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status() == 200 => break,
            r => assert!(Instant::now() < deadline, "ledgerd over TLS never answered: {r:?}\n{}", log()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The whole API over TLS: a batch recorded, then read back by id (also by IP).
    let event = test_support::events::spec_example("tls-1");
    let batch = serde_json::json!({"node": "front-1", "events": [{"seq": 1, "received_at": "2026-11-24T12:00:00Z", "event": event}]});
    let r = trusting.post(format!("{base}/v1/batches")).bearer_auth(NODE_TOKEN).json(&batch).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "accepted", "{body}");
    let r = trusting
        .get(format!("https://127.0.0.1:{port}/v1/events/tls-1"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "read back over TLS by IP address");

    // A client without the CA is refused by its own verification.
    let stranger = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let e = stranger.get(format!("{base}/healthz")).send().await.expect_err("a client without the CA must not connect");
    println!("client without the CA: {e:?}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let r = plain.get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(r.is_err() || r.as_ref().is_ok_and(|r| r.status() != 200), "plain HTTP served on the TLS port: {r:?}");

    // A client that connects and never starts the handshake is cut after the
    // header read timeout (1 s here), not kept for ever.
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        s.read(&mut buf)
    })
    .await
    .unwrap();
    let waited = started.elapsed();
    assert!(matches!(closed, Ok(0)) || closed.is_err(), "stalled handshake: {closed:?}");
    assert!(waited < Duration::from_secs(5), "a stalled handshake held its connection for {waited:?}");
    println!("stalled handshake closed after {:.1} s", waited.as_secs_f64());

    // Still serving after all that.
    let r = trusting.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn half_or_broken_tls_config_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_pki(dir);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let check = |listen: &str, key: &str| {
        let config = dir.join("check.toml");
        std::fs::write(&config, format!("[listen]\n{listen}\n")).unwrap();
        let out = Command::new(test_support::bin_path("ledgerd"))
            .args(ledgerd_args(dir, &config, 1))
            .arg("--check-config")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{listen}: {stderr}");
        assert!(stderr.contains(key), "{listen}: the error must name {key}: {stderr}");
    };
    let cert = format!("tls_cert = {:?}", pki.cert.display().to_string());
    let key = format!("tls_key = {:?}", pki.key.display().to_string());
    check(&cert, "listen.tls_key");
    check(&key, "listen.tls_cert");
    check(&format!("tls_cert = {:?}\n{key}", garbage.display().to_string()), "listen.tls_cert");
    check(&format!("{cert}\ntls_key = {:?}", garbage.display().to_string()), "listen.tls_cert");
    // Both, and good: valid, and the summary says TLS.
    let config = dir.join("good.toml");
    std::fs::write(&config, format!("[listen]\n{cert}\n{key}\n")).unwrap();
    let out = Command::new(test_support::bin_path("ledgerd"))
        .args(ledgerd_args(dir, &config, 1))
        .args(["--check-config", "--print"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(TLS)"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A certificate for localhost and 127.0.0.1 signed by a fresh CA: (CA PEM,
/// certificate PEM, key PEM, certificate DER).
fn fresh_identity(name: &str) -> (String, String, String, Vec<u8>) {
    let ca = TestCa::new(name);
    let server = ca.server();
    (ca.pem(), server.cert_pem, server.key_pem, server.der)
}

async fn peer_certificate(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate()).unwrap().to_vec()
}

#[tokio::test]
async fn sighup_swaps_the_certificate_without_dropping_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca_a, cert_a, key_a, der_a) = fresh_identity("A");
    let (ca_b, cert_b, key_b, der_b) = fresh_identity("B");
    let (cert, key) = (dir.join("ledgerd.crt"), dir.join("ledgerd.key"));
    std::fs::write(&cert, &cert_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let config = dir.join("ledgerd.toml");
    std::fs::write(&config, format!("[listen]\ntls_cert = {:?}\ntls_key = {:?}\n", cert.display().to_string(), key.display().to_string()))
        .unwrap();
    let port = free_port();
    let ledgerd = DaemonProcess::spawn("ledgerd", &ledgerd_args(dir, &config, port), &dir.join("ledgerd.log")).unwrap();
    let log = || std::fs::read_to_string(dir.join("ledgerd.log")).unwrap_or_default();
    let client = || {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_a.as_bytes()).unwrap())
            .add_root_certificate(reqwest::Certificate::from_pem(ca_b.as_bytes()).unwrap())
            .tls_info(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{port}/healthz");
    let kept = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kept.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "ledgerd over TLS never answered\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer_certificate(&kept, &url).await, der_a, "before the reload: certificate A");

    let hup = |what: &str| {
        let pid = ledgerd.child.id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success(), "kill -HUP ({what})");
    };
    std::fs::write(&cert, &cert_b).unwrap();
    std::fs::write(&key, &key_b).unwrap();
    hup("B");
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_certificate(&client(), &url).await != der_b {
        assert!(Instant::now() < deadline, "SIGHUP did not swap the certificate\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the reload is still served (not dropped).
    assert_eq!(peer_certificate(&kept, &url).await, der_a, "the kept connection was dropped by the reload");

    // A bad pair (A's key with B's certificate) is refused; B stays in use.
    std::fs::write(&key, &key_a).unwrap();
    hup("mismatched key");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains("TLS certificate not reloaded") {
        assert!(Instant::now() < deadline, "a bad reload was not reported\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer_certificate(&client(), &url).await, der_b, "a failed reload must keep the certificate in use");
}

/// spoold's config file: TLS on the listener from `listen` lines, `ledger`
/// lines under `[ledger]`; tokens and spool in `dir`.
fn spoold_config(dir: &Path, port: u16, listen: &str, ledger: &str) -> std::path::PathBuf {
    let tokens = dir.join("spoold.tokens");
    std::fs::write(&tokens, format!("client:{}\n", test_support::spoold::TEST_TOKEN)).unwrap();
    let config = dir.join("spoold.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"tls-node\"\n[listen]\naddr = \"127.0.0.1:{port}\"\nadmin_socket = \"\"\n{listen}\n\
             [auth]\ntokens_file = {:?}\n[spool]\ndir = {:?}\n[ledger]\n{ledger}\n\
             [retry]\ninitial = \"50ms\"\nmax = \"500ms\"\n",
            tokens.display().to_string(),
            dir.join("spool").display().to_string(),
        ),
    )
    .unwrap();
    config
}

/// Waits until `client` gets 200 from `url`.
async fn wait_ok(client: &reqwest::Client, url: &str, log: impl Fn() -> String) {
    // Generous: the whole suite starts many daemons at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(url).send().await {
            Ok(r) if r.status() == 200 => return,
            r => assert!(Instant::now() < deadline, "{url} never answered: {r:?}\n{}", log()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn spoold_serves_tls_and_forwards_to_a_tls_ledgerd_trusted_by_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_pki(dir);
    let tls_lines = format!("tls_cert = {:?}\ntls_key = {:?}", pki.cert.display().to_string(), pki.key.display().to_string());

    // ledgerd over TLS, with the same certificate (localhost).
    let ledger_dir = dir.join("ledgerd");
    std::fs::create_dir_all(&ledger_dir).unwrap();
    let ledger_config = ledger_dir.join("ledgerd.toml");
    std::fs::write(&ledger_config, format!("[listen]\n{tls_lines}\n")).unwrap();
    let ledger_port = free_port();
    let _ledgerd = DaemonProcess::spawn(
        "ledgerd",
        &ledgerd_args(&ledger_dir, &ledger_config, ledger_port),
        &ledger_dir.join("ledgerd.log"),
    )
    .unwrap();
    let ledger_log = || std::fs::read_to_string(ledger_dir.join("ledgerd.log")).unwrap_or_default();

    // spoold over TLS, forwarding to https://localhost with the CA from ca_file
    // (not a built-in root: without ca_file the forwarder could not connect).
    let token_file = dir.join("ledger.token");
    std::fs::write(&token_file, format!("{NODE_TOKEN}\n")).unwrap();
    let port = free_port();
    let config = spoold_config(
        dir,
        port,
        &tls_lines,
        &format!(
            "urls = [\"https://localhost:{ledger_port}\"]\ntoken_file = {:?}\nca_file = {:?}",
            token_file.display().to_string(),
            pki.ca.display().to_string()
        ),
    );
    let _spoold =
        DaemonProcess::spawn("spoold", &["--config".into(), config.display().to_string()], &dir.join("spoold.log")).unwrap();
    let log = || std::fs::read_to_string(dir.join("spoold.log")).unwrap_or_default();

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    wait_ok(&trusting, &format!("https://localhost:{ledger_port}/healthz"), ledger_log).await;
    wait_ok(&trusting, &format!("{base}/readyz"), log).await;

    // An event over TLS: 202 once it is durable.
    let event = test_support::events::spec_example("tls-spoold-1");
    let r = trusting
        .post(format!("{base}/v1/events"))
        .bearer_auth(test_support::spoold::TEST_TOKEN)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);

    // A client without the CA is refused by its own verification.
    let stranger = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let e = stranger.get(format!("{base}/healthz")).send().await.expect_err("a client without the CA must not connect");
    println!("client without the CA: {e:?}");

    // The forwarder reaches the TLS ledgerd: the event arrives there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = trusting
            .get(format!("https://localhost:{ledger_port}/v1/events/tls-spoold-1"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["node"], "tls-node", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "the event never reached the ledger\n{}\n{}", log(), ledger_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn spoold_half_or_broken_tls_config_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_pki(dir);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let run = |listen: &str, ledger: &str, check: bool| {
        let config = spoold_config(dir, free_port(), listen, ledger);
        let mut cmd = Command::new(test_support::bin_path("spoold"));
        cmd.arg("--config").arg(&config);
        if check {
            cmd.arg("--check-config");
        }
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        // A config error exits at once; a spoold that starts is a failure here.
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };
    let bad = |listen: &str, ledger: &str, key: &str| {
        for check in [true, false] {
            let out = run(listen, ledger, check);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{listen} {ledger} (check {check}): {stderr}");
            assert!(stderr.contains(key), "{listen} {ledger}: the error must name {key}: {stderr}");
        }
    };
    let cert = format!("tls_cert = {:?}", pki.cert.display().to_string());
    let key = format!("tls_key = {:?}", pki.key.display().to_string());
    let missing = dir.join("missing.pem").display().to_string();
    bad(&cert, "", "listen.tls_key");
    bad(&key, "", "listen.tls_cert");
    bad(&format!("tls_cert = {missing:?}\n{key}"), "", "listen.tls_cert");
    bad(&format!("tls_cert = {:?}\n{key}", garbage.display().to_string()), "", "listen.tls_cert");
    bad(&format!("{cert}\ntls_key = {:?}", garbage.display().to_string()), "", "listen.tls_cert");
    bad("", &format!("ca_file = {missing:?}"), "ledger.ca_file");
    bad("", &format!("ca_file = {:?}", garbage.display().to_string()), "ledger.ca_file");
    // The forwarder's client certificate: both or neither, and a matching pair.
    let (client_cert, client_key) = TestCa::new("clients").client("tls-node").write(dir, "client");
    let (ccert, ckey) = (client_cert.display().to_string(), client_key.display().to_string());
    bad("", &format!("client_cert = {ccert:?}"), "ledger.client_key");
    bad("", &format!("client_key = {ckey:?}"), "ledger.client_cert");
    bad("", &format!("client_cert = {ccert:?}\nclient_key = {missing:?}"), "ledger.client_cert");
    bad("", &format!("client_cert = {ccert:?}\nclient_key = {:?}", pki.key.display().to_string()), "ledger.client_cert");
    // Both, and good, with a good ca_file: valid, and --print shows them.
    let config = spoold_config(dir, free_port(), &format!("{cert}\n{key}"), &format!("ca_file = {:?}", pki.ca.display().to_string()));
    let out = Command::new(test_support::bin_path("spoold"))
        .args(["--config", &config.display().to_string(), "--check-config", "--print"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("listen.tls_cert = {}", pki.cert.display())), "{stdout}");
    assert!(stdout.contains(&format!("ledger.ca_file = {} (1 certificates)", pki.ca.display())), "{stdout}");
}

/// spoold reloads its pair on SIGHUP like ledgerd (the same code); without TLS
/// a SIGHUP (`systemctl reload`) is logged and spoold keeps running.
#[tokio::test]
async fn spoold_sighup_swaps_the_certificate_and_is_harmless_without_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca_a, cert_a, key_a, der_a) = fresh_identity("A");
    let (ca_b, cert_b, key_b, der_b) = fresh_identity("B");
    let (cert, key) = (dir.join("spoold.crt"), dir.join("spoold.key"));
    std::fs::write(&cert, &cert_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let port = free_port();
    let tls_lines = format!("tls_cert = {:?}\ntls_key = {:?}", cert.display().to_string(), key.display().to_string());
    let config = spoold_config(dir, port, &tls_lines, "");
    let spoold =
        DaemonProcess::spawn("spoold", &["--config".into(), config.display().to_string()], &dir.join("spoold.log")).unwrap();
    let log = || std::fs::read_to_string(dir.join("spoold.log")).unwrap_or_default();
    let client = || {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_a.as_bytes()).unwrap())
            .add_root_certificate(reqwest::Certificate::from_pem(ca_b.as_bytes()).unwrap())
            .tls_info(true)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{port}/healthz");
    wait_ok(&client(), &url, log).await;
    assert_eq!(peer_certificate(&client(), &url).await, der_a, "before the reload: certificate A");
    std::fs::write(&cert, &cert_b).unwrap();
    std::fs::write(&key, &key_b).unwrap();
    let pid = spoold.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_certificate(&client(), &url).await != der_b {
        assert!(Instant::now() < deadline, "SIGHUP did not swap the certificate\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Plain HTTP: SIGHUP is logged, spoold goes on serving.
    let plain_dir = dir.join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain_port = free_port();
    let config = spoold_config(&plain_dir, plain_port, "", "");
    let mut plain = DaemonProcess::spawn("spoold", &["--config".into(), config.display().to_string()], &plain_dir.join("spoold.log"))
        .unwrap();
    let plain_log = || std::fs::read_to_string(plain_dir.join("spoold.log")).unwrap_or_default();
    let plain_url = format!("http://127.0.0.1:{plain_port}/healthz");
    wait_ok(&reqwest::Client::new(), &plain_url, plain_log).await;
    let pid = plain.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !plain_log().contains("no TLS certificate to reload") {
        assert!(Instant::now() < deadline, "SIGHUP without TLS not logged\n{}", plain_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(plain.is_running(), "SIGHUP killed a spoold without TLS\n{}", plain_log());
    assert_eq!(reqwest::get(&plain_url).await.unwrap().status(), 200);
}
