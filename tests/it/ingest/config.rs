//! spoold's config handling, through the real binary: a bad config names the
//! key and exits 2; `--check-config` validates; no tokens file, no start.

use std::process::Command;

use test_support::bin_path;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn spoold(dir: &std::path::Path, config: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin_path("spoold"));
    if let Some(text) = config {
        let path = dir.join("spoold.toml");
        std::fs::write(&path, text).expect("write config");
        cmd.arg("--config").arg(&path);
    }
    let out = cmd.args(args).env_remove("NOTIFY_SOCKET").output().expect("run spoold");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const SECRET: &str = "cfg-test-secret-0123456789";

#[test]
fn ingest_config_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("client:{SECRET}\n")).expect("write tokens");
    let auth = format!("[auth]\ntokens_file = \"{}\"\n", tokens.display());
    let spool = format!("[spool]\ndir = \"{}\"\n", dir.path().join("spool").display());

    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (format!("{auth}[spool]\nbytes_max = \"lots\"\n"), vec![], "spool.bytes_max"),
        (format!("{auth}[limits]\nbogus = 1\n"), vec![], "limits.bogus"),
        (format!("{auth}[limits]\nheader_read_timeout = \"soon\"\n"), vec![], "limits.header_read_timeout"),
        (format!("{auth}[limits]\nbody_bytes_max = \"1GiB\"\n"), vec![], "limits.body_bytes_max"),
        (format!("{auth}[ledger]\nurls = [\"http://127.0.0.1:1\"]\n"), vec![], "ledger.token_file"),
        (format!("{auth}{spool}"), vec!["--listen", "not-an-address"], "--listen"),
        (format!("{auth}node_id = \"a b\"\n"), vec![], "node_id"),
        (spool.clone(), vec![], "auth.tokens_file"),
        (format!("{spool}[auth]\ntokens_file = \"/nonexistent/tokens\"\n"), vec![], "auth.tokens_file"),
    ];
    for (text, args, key) in &cases {
        let r = spoold(dir.path(), Some(text), args);
        assert_eq!(r.code, Some(2), "{key}: want exit 2, got {:?}; stderr: {}", r.code, r.stderr);
        assert!(r.stderr.contains(&format!("{key}:")), "stderr must name {key}: {}", r.stderr);
    }

    // A short secret is refused without echoing it.
    std::fs::write(&tokens, "client:short-secret\n").expect("write tokens");
    let r = spoold(dir.path(), Some(&format!("{auth}{spool}")), &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("auth.tokens_file") && !r.stderr.contains("short-secret"), "{}", r.stderr);

    // A good config checks out (exit 0) and the summary shows no secret.
    std::fs::write(&tokens, format!("client:{SECRET}\n")).expect("write tokens");
    let r = spoold(dir.path(), Some(&format!("{auth}{spool}")), &["--check-config", "--print"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with("config ok") && r.stdout.contains("(1 tokens"), "{}", r.stdout);
    assert!(!r.stdout.contains(SECRET) && !r.stderr.contains(SECRET), "a secret was printed");
    // Flags alone, no file: works with --tokens-file.
    let r = spoold(
        dir.path(),
        None,
        &["--tokens-file", &tokens.display().to_string(), "--spool-dir", "/tmp/x", "--check-config"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

/// `--check-config` runs start-up's own checks: what it accepts starts, what it
/// refuses does not; each refusal is one line naming the key (and the line of
/// the file for TOML errors), exit 2. `--print` shows every effective value.
#[test]
fn check_config_is_start_ups_own_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("client:{SECRET}\n")).expect("write tokens");
    let ledger_token = dir.path().join("ledger.token");
    std::fs::write(&ledger_token, format!("{SECRET}\n")).expect("write ledger token");
    let auth = format!("[auth]\ntokens_file = \"{}\"\n", tokens.display());
    let spool = format!("[spool]\ndir = \"{}\"\n", dir.path().join("spool").display());
    let ledger = |urls: &str| format!("[ledger]\nurls = {urls}\ntoken_file = \"{}\"\n", ledger_token.display());

    // (config, flags, exact substring of the one-line message on stderr)
    let cases: Vec<(String, Vec<&str>, String)> = vec![
        // An unknown key names itself and its own line (line 7), not the line before.
        (format!("{auth}{spool}\n[limits]\nbogus = 1\n"), vec![], "limits.bogus: unknown field `bogus`".into()),
        (format!("{auth}{spool}\n[limits]\nbogus = 1\n"), vec![], "(line 7)".into()),
        // A bad size says so once, without the unit parser's repeated text.
        (format!("{auth}[spool]\nbytes_max = \"XB\"\n"), vec![], "spool.bytes_max: \"XB\" is not a size (try \"64KiB\", \"10GiB\" or a number of bytes) (line 4)".into()),
        (format!("{auth}[retry]\ninitial = \"soon\"\n"), vec![], "retry.initial: \"soon\" is not a duration".into()),
        (format!("{auth}{spool}{}", ledger(r#"["ftp://x"]"#)), vec![], "ledger.urls: \"ftp://x\" must be an http:// or https:// URL".into()),
        (format!("{auth}{spool}{}", ledger(r#"["http://"]"#)), vec![], "ledger.urls: \"http://\" is not a URL".into()),
        (format!("{auth}{spool}{}", ledger(r#"["http://u:pw@x"]"#)), vec![], "must not hold credentials (use ledger.token_file)".into()),
        (format!("{auth}{spool}"), vec!["--ledger-url", "https://x?a=1", "--ledger-token-file", ledger_token.to_str().expect("utf-8")], "--ledger-url: \"https://x?a=1\" must not have a query".into()),
        (format!("{auth}{spool}[log]\nformat = \"xml\"\n"), vec![], "log.format: unknown variant `xml`".into()),
        (format!("{auth}{spool}[log]\nlevel = \"spoold=loud\"\n"), vec![], "log.level: \"spoold=loud\" is not a log level".into()),
        (format!("{auth}{spool}"), vec!["--log-level", "info=bogus"], "--log-level:".into()),
        (format!("{auth}{spool}[retry]\ninitial = \"2s\"\nmax = \"1s\"\n"), vec![], "retry.max: must be at least retry.initial".into()),
        (format!("{auth}[spool]\nevents_max = 0\n"), vec![], "spool.events_max: must be greater than zero".into()),
        (format!("{auth}{spool}[listen]\naddr = 8700\n"), vec![], "listen.addr: invalid type".into()),
    ];
    for (text, args, want) in &cases {
        let mut all = args.clone();
        all.push("--check-config");
        let r = spoold(dir.path(), Some(text), &all);
        assert_eq!(r.code, Some(2), "{want}: want exit 2, got {:?}; stderr: {}", r.code, r.stderr);
        assert!(r.stderr.contains(want.as_str()), "stderr must contain {want:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "one line: {}", r.stderr);
        assert!(!r.stderr.contains("Failed to parse"), "no repeated parser text: {}", r.stderr);
        assert!(!r.stderr.contains("pw@"), "a URL password was printed: {}", r.stderr);
        // Start-up decides the same: the same config, without --check-config, exits 2 too.
        let started = spoold(dir.path(), Some(text), args);
        assert_eq!(started.code, Some(2), "start must refuse what the check refuses: {}", started.stderr);
    }

    // An upper-case scheme is a valid URL: the check and the forwarder agree.
    let upper = format!("{auth}{spool}{}", ledger(r#"["HTTPS://Ledger.Example:8800/"]"#));
    let r = spoold(dir.path(), Some(&upper), &["--check-config", "--print"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains(r#"ledger.urls = ["https://ledger.example:8800"]"#), "{}", r.stdout);
    // Every key of docs/config.md appears, no secret does.
    let keys: Vec<&str> = r.stdout.lines().skip(1).filter_map(|l| l.split(" = ").next()).collect();
    for key in [
        "node_id", "listen.addr", "listen.admin_socket", "spool.dir", "spool.bytes_max", "spool.events_max",
        "spool.disk_free_bytes_min", "spool.disk_free_inodes_min", "spool.acked_retention", "auth.tokens_file",
        "ledger.urls", "ledger.token_file", "ledger.batch_events_max", "ledger.batch_bytes_max",
        "ledger.inflight_batches_max", "ledger.request_timeout", "retry.initial", "retry.max",
        "limits.body_bytes_max", "limits.batch_events_max", "limits.batch_body_bytes_max", "limits.connections_max",
        "limits.header_read_timeout", "limits.body_read_timeout", "limits.keep_alive_idle_timeout",
        "limits.shutdown_drain_timeout", "log.format", "log.level",
    ] {
        assert!(keys.contains(&key), "--print must show {key}: {}", r.stdout);
    }
    assert!(!r.stdout.contains(SECRET), "a secret was printed: {}", r.stdout);
    assert!(r.stdout.contains("secret redacted"), "{}", r.stdout);
    // Without --print, one line.
    let r = spoold(dir.path(), Some(&upper), &["--check-config"]);
    assert_eq!(r.stdout.trim(), "config ok");
}

/// The same config, started for real: the forwarder takes the upper-case URL
/// (no exit 1 after a passing check), and logs carry no ANSI colour when
/// stderr is a file; `--log-format json` makes every line a JSON object and
/// `--log-level warn` drops INFO.
#[tokio::test]
async fn upper_case_ledger_url_starts_and_logs_are_plain() {
    use test_support::spoold::{Spoold, SpooldOptions};
    let mut s = Spoold::start(SpooldOptions::default().forward_to("HTTP://127.0.0.1:1", "ledger-secret-0123456789"))
        .await
        .expect("spoold starts with an upper-case ledger URL");
    assert!(s.is_running());
    let log = s.log();
    assert!(!log.contains('\u{1b}'), "ANSI escape in a log file: {log}");
    assert!(log.contains("INFO"), "text format by default: {log}");
    drop(s);

    let s = Spoold::start(SpooldOptions { args: vec!["--log-format".into(), "json".into()], ..SpooldOptions::default() })
        .await
        .expect("start with --log-format json");
    let log = s.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some(), "{l}");
    }
    drop(s);

    let s = Spoold::start(SpooldOptions { args: vec!["--log-level".into(), "warn".into()], ..SpooldOptions::default() })
        .await
        .expect("start with --log-level warn");
    let log = s.log();
    assert!(!log.contains("INFO"), "--log-level warn must drop INFO lines: {log}");
}
