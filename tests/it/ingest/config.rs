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
    let r = spoold(dir.path(), Some(&format!("{auth}{spool}")), &["--check-config"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("config ok") && r.stdout.contains("(1 tokens)"), "{}", r.stdout);
    assert!(!r.stdout.contains(SECRET) && !r.stderr.contains(SECRET), "a secret was printed");
    // Flags alone, no file: works with --tokens-file.
    let r = spoold(
        dir.path(),
        None,
        &["--tokens-file", &tokens.display().to_string(), "--spool-dir", "/tmp/x", "--check-config"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}
