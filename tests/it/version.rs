//! `--version` of the three binaries names the version, the git commit, the
//! spool-format version and the build profile; the daemons print their man
//! page and shell completions (spoolctl has its own `man` and `completions`
//! verbs, tested in `spoolctl.rs`).

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(test_support::bin_path(bin)).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The commit the source tree is at, as `--version` names it, or "unknown"
/// outside a git work tree (a source tarball).
fn head_commit() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[test]
fn version_names_version_commit_format_and_profile() {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let want = format!(
        "{} (commit {}, spool format v{}, {profile} build)",
        env!("CARGO_PKG_VERSION"),
        std::env::var("OFFGRID_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty()).unwrap_or_else(head_commit),
        spool_format::FORMAT_VERSION
    );
    for bin in ["spoold", "ledgerd", "spoolctl"] {
        let (code, out, err) = run(bin, &["--version"]);
        assert_eq!(code, 0, "{bin} --version: {err}");
        println!("{}", out.trim());
        assert_eq!(out.trim(), format!("{bin} {want}"), "{bin} --version");
    }
}

#[test]
fn daemons_print_man_pages_and_completions() {
    for (bin, own_flag) in [("spoold", "--spool-dir"), ("ledgerd", "--store")] {
        let (code, man, err) = run(bin, &["--man"]);
        assert_eq!(code, 0, "{bin} --man: {err}");
        assert!(man.contains(&format!(".TH {bin} 1")), "{bin} --man is not a man page:\n{man}");
        // roff escapes dashes: \-\-check\-config.
        for flag in ["--check-config", "--config", own_flag] {
            assert!(man.contains(&flag.replace('-', "\\-")), "{bin} man page lacks {flag}");
        }
        for shell in ["bash", "zsh", "fish"] {
            let (code, script, err) = run(bin, &["--completions", shell]);
            assert_eq!(code, 0, "{bin} --completions {shell}: {err}");
            assert!(script.contains(bin) && script.contains("check-config"), "{bin} {shell} completions:\n{script}");
        }
        // Exclusive: never mixed with a run.
        let (code, _, _) = run(bin, &["--man", "--listen", "127.0.0.1:1"]);
        assert_eq!(code, 2, "{bin} --man with other flags is a usage error");
        let (code, _, _) = run(bin, &["--completions", "tcsh"]);
        assert_eq!(code, 2, "{bin} --completions of an unknown shell is a usage error");
    }
}
