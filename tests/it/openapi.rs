//! docs/openapi/spoold.yaml and docs/openapi/ledgerd.yaml against the real
//! daemons, with schemathesis (PyPI; scripts/test.sh installs it into
//! `target/schemathesis-venv`). Every operation, positive and negative cases,
//! all of schemathesis' checks (no 5xx, status codes, content types, headers
//! and bodies as documented, invalid input refused, valid input accepted,
//! 405 for other methods, 401 without a token): 0 failures.
//!
//! The settings (`docs/openapi/schemathesis.toml`) and the hooks
//! (`docs/openapi/schemathesis_hooks.py`) say which contract rules JSON Schema
//! cannot express. The run is bounded by examples per operation
//! (`OFFGRID_SCHEMATHESIS_EXAMPLES`, default 60) with a fixed seed
//! (`OFFGRID_SCHEMATHESIS_SEED`, default 1), so it is reproducible and takes
//! well under two minutes. One pass runs against a ledgerd speaking TLS
//! (certificates made by the test). Without schemathesis the test prints SKIPPED, unless
//! `CI` is set: then it fails.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use test_support::ledgerd::{Ledgerd, ADMIN_TOKEN, MERCHANT_TOKEN, NODE_TOKEN};
use test_support::spoold::{Spoold, SpooldOptions, TEST_TOKEN};

/// Longest a whole run (all passes, in parallel) may take.
const RUN_SECONDS_MAX: u64 = 110;

fn openapi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi")
}

/// `$OFFGRID_SCHEMATHESIS`, else the virtual environment scripts/test.sh makes
/// in the target directory, else `schemathesis` on the PATH.
fn find_schemathesis() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("OFFGRID_SCHEMATHESIS") {
        candidates.push(PathBuf::from(p));
    }
    // The test runs from <target>/<profile>/deps/.
    if let Some(target) = std::env::current_exe().ok().and_then(|e| e.parent()?.parent()?.parent().map(PathBuf::from)) {
        candidates.push(target.join("schemathesis-venv/bin/schemathesis"));
    }
    candidates.push(PathBuf::from("schemathesis"));
    candidates.into_iter().find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// Starts one schemathesis run of `spec` against `url` with `token`, in
/// `work` (schemathesis keeps a cache in its working directory).
fn schemathesis(bin: &PathBuf, work: &std::path::Path, spec: &str, url: &str, token: &str) -> std::process::Child {
    schemathesis_with(bin, work, spec, url, token, &[])
}

fn schemathesis_with(
    bin: &PathBuf,
    work: &std::path::Path,
    spec: &str,
    url: &str,
    token: &str,
    extra: &[String],
) -> std::process::Child {
    let dir = openapi_dir();
    Command::new(bin)
        .current_dir(work)
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", &dir)
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .arg("run")
        .arg(dir.join(spec))
        .args(["--url", url, "--checks", "all"])
        .args(["--max-examples", &env_or("OFFGRID_SCHEMATHESIS_EXAMPLES", "60")])
        .args(["--seed", &env_or("OFFGRID_SCHEMATHESIS_SEED", "1")])
        .args(["--generation-database", "none", "--no-color", "--request-timeout", "10", "--workers", "1"])
        .args(extra)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn openapi_documents_hold_against_the_daemons() {
    let Some(bin) = find_schemathesis() else {
        if std::env::var_os("CI").is_some() {
            panic!("schemathesis is not installed and CI is set: run scripts/test.sh, which installs it");
        }
        println!("SKIPPED: schemathesis is not installed (scripts/test.sh installs it into target/schemathesis-venv)");
        return;
    };
    let ledger = Ledgerd::start().await.unwrap();
    let spoold = Spoold::start(SpooldOptions::default().forward_to(&ledger.url, NODE_TOKEN)).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    // A second ledgerd speaking TLS, with certificates made for this run: the
    // same API, the same bad input, through rustls.
    let pki = crate::tls::make_pki(work.path());
    let tls_dir = work.path().join("ledgerd-tls");
    let tls_config = format!(
        "[listen]\ntls_cert = {:?}\ntls_key = {:?}\n",
        pki.cert.display().to_string(),
        pki.key.display().to_string()
    );
    let tls_port = test_support::free_port();
    let tls_ledger = start_tls_ledgerd(&tls_dir, tls_port, &tls_config, &pki.ca_pem).await;
    let tls_url = format!("https://localhost:{tls_port}");
    let started = Instant::now();
    // Three passes at once: the ingest API, the ledger API as admin (every
    // operation allowed), and as a merchant (403 and 404 paths of the roles).
    let passes = [
        ("spoold.yaml (token of a client)", schemathesis(&bin, work.path(), "spoold.yaml", &spoold.url(""), TEST_TOKEN)),
        ("ledgerd.yaml (admin token)", schemathesis(&bin, work.path(), "ledgerd.yaml", &ledger.url, ADMIN_TOKEN)),
        ("ledgerd.yaml (merchant token)", schemathesis(&bin, work.path(), "ledgerd.yaml", &ledger.url, MERCHANT_TOKEN)),
        (
            "ledgerd.yaml over TLS (admin token)",
            schemathesis_with(
                &bin,
                work.path(),
                "ledgerd.yaml",
                &tls_url,
                ADMIN_TOKEN,
                &["--tls-verify".to_owned(), pki.ca.display().to_string()],
            ),
        ),
    ];
    let mut failed = Vec::new();
    for (name, child) in passes {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains("generated") || l.starts_with("=====") && !l.contains("SUMMARY"))
            .map(str::trim)
            .collect();
        println!("schemathesis {name}: {}", summary.join(" | "));
        // The merchant pass ends with a warning, not a failure: two operations
        // only ever answer it 403, as the roles say.
        let clean = !stdout.contains(" FAILURES ") && !stdout.contains(" ERRORS ") && stdout.contains(" passed");
        if !out.status.success() || !clean {
            failed.push(format!(
                "--- {name}: exit {:?}\n{stdout}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let elapsed = started.elapsed();
    println!("schemathesis: {:.1} s for all passes", elapsed.as_secs_f64());
    assert!(failed.is_empty(), "schemathesis found failures:\n{}", failed.join("\n"));
    assert!(
        elapsed < Duration::from_secs(RUN_SECONDS_MAX),
        "schemathesis took {elapsed:?}, over the {RUN_SECONDS_MAX} s budget: lower OFFGRID_SCHEMATHESIS_EXAMPLES"
    );
    // The daemons are still healthy after the run.
    test_support::wait_http_ok(&spoold.url("/readyz"), Duration::from_secs(5)).await.unwrap();
    test_support::wait_http_ok(&format!("{}/readyz", ledger.url), Duration::from_secs(5)).await.unwrap();
    drop(tls_ledger);
}

/// Starts ledgerd on `port` with TLS (`config`), waits for `/healthz` over
/// TLS with a client that trusts `ca_pem`.
async fn start_tls_ledgerd(dir: &std::path::Path, port: u16, config: &str, ca_pem: &str) -> test_support::DaemonProcess {
    std::fs::create_dir_all(dir).unwrap();
    let tokens = dir.join("ledgerd.tokens");
    std::fs::write(&tokens, format!("front:{NODE_TOKEN}:node\nops:{ADMIN_TOKEN}:admin\nshop:{MERCHANT_TOKEN}:merchant:{}\n", test_support::ledgerd::MERCHANT_PAYEE)).unwrap();
    std::fs::write(dir.join("ledgerd.toml"), config).unwrap();
    let args = vec![
        "--config".to_owned(),
        dir.join("ledgerd.toml").display().to_string(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--store".to_owned(),
        format!("sled://{}", dir.join("store").display()),
        "--tokens-file".to_owned(),
        tokens.display().to_string(),
    ];
    let p = test_support::DaemonProcess::spawn("ledgerd", &args, &dir.join("ledgerd.log")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client.get(format!("https://localhost:{port}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "ledgerd over TLS did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p
}
