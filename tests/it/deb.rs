//! The Debian packages (scripts/package-deb.sh, cargo-deb): both are built,
//! unpacked into a throw-away root and checked — files, modes, conffiles, the
//! units, the maintainer scripts (a remove keeps the spool, a purge deletes it
//! after a warning), the packaged `spoold --check-config` on the packaged
//! config — and `lintian` reports no error.
//!
//! Slow (it packages the binaries), so it runs when `OFFGRID_SLOW_TESTS=1` or
//! when cargo-deb is installed, and says which; otherwise it prints SKIPPED.
//! It packages the binaries of the profile the tests were built with.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// The target directory: the test runs from <target>/<profile>/deps/.
fn target_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn cargo_deb_installed() -> bool {
    Command::new("cargo").args(["deb", "--version"]).output().is_ok_and(|o| o.status.success())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Unpacks `deb` into `<dir>/root` (files) and `<dir>/control` (maintainer scripts).
fn unpack(deb: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let (root, control) = (dir.join("root"), dir.join("control"));
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    (root, control)
}

/// The unit file, wherever cargo-deb put it (/lib or /usr/lib).
fn unit(root: &Path, name: &str) -> PathBuf {
    ["lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .map(|d| root.join(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {name} in the package"))
}

/// Runs a maintainer script with DPKG_ROOT=`root` (an install into another
/// root: the script touches nothing of this host).
fn maintainer_script(script: &Path, root: &Path, arg: &str) -> Output {
    run(Command::new("sh").arg(script).arg(arg).env("DPKG_ROOT", root))
}

fn check_remove_keeps_and_purge_deletes(control: &Path, state: &str) {
    let fake = tempfile::tempdir().unwrap();
    let dir = fake.path().join(state.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("db"), b"payments").unwrap();
    for arg in ["remove", "upgrade"] {
        maintainer_script(&control.join("postrm"), fake.path(), arg);
        assert!(dir.join("db").exists(), "postrm {arg} deleted {state}");
    }
    let out = maintainer_script(&control.join("postrm"), fake.path(), "purge");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARNING") && stderr.contains(state), "purge must warn about {state}: {stderr:?}");
    assert!(!dir.exists(), "postrm purge left {state}");
}

#[test]
fn debian_packages_install_cleanly() {
    let slow = std::env::var("OFFGRID_SLOW_TESTS").is_ok_and(|v| v == "1");
    let have_cargo_deb = cargo_deb_installed();
    match (slow, have_cargo_deb) {
        (false, false) => {
            println!("SKIPPED: Debian packages: cargo-deb is not installed and OFFGRID_SLOW_TESTS is not 1");
            return;
        }
        (true, false) => panic!("OFFGRID_SLOW_TESTS=1 needs cargo-deb: cargo install cargo-deb"),
        (true, true) => println!("deb: running because OFFGRID_SLOW_TESTS=1"),
        (false, true) => println!("deb: running because cargo-deb is installed"),
    }
    let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
    let target = target_dir();
    let debian = target.join("debian");
    let _ = std::fs::remove_dir_all(&debian);
    run(Command::new(repo().join("scripts/package-deb.sh"))
        .env("OFFGRID_DEB_PROFILE", profile)
        .env("OFFGRID_DEB_NO_BUILD", "1")
        .env("CARGO_TARGET_DIR", &target));
    let deb = |name: &str| {
        std::fs::read_dir(&debian)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}_")))
            .unwrap_or_else(|| panic!("no {name} package in {}", debian.display()))
    };
    let tmp = tempfile::tempdir().unwrap();

    // offgrid-spoold
    let spoold_deb = deb("offgrid-spoold");
    let (root, control) = unpack(&spoold_deb, &tmp.path().join("spoold"));
    for (path, want) in [
        ("usr/bin/spoold", 0o755),
        ("usr/bin/spoolctl", 0o755),
        ("usr/share/man/man1/spoold.1.gz", 0o644),
        ("usr/share/man/man1/spoolctl.1.gz", 0o644),
        ("usr/share/bash-completion/completions/spoold", 0o644),
        ("usr/share/bash-completion/completions/spoolctl", 0o644),
        ("usr/share/zsh/vendor-completions/_spoold", 0o644),
        ("usr/share/fish/vendor_completions.d/spoolctl.fish", 0o644),
        ("etc/offgrid/spoold.toml", 0o644),
        ("etc/offgrid/spoold.tokens", 0o640),
        ("usr/share/doc/offgrid-spoold/contract.md", 0o644),
    ] {
        assert_eq!(mode(&root.join(path)), want, "{path}: mode");
    }
    let conffiles = read(&control.join("conffiles"));
    for f in ["/etc/offgrid/spoold.toml", "/etc/offgrid/spoold.tokens"] {
        assert!(conffiles.lines().any(|l| l == f), "{f} is not a conffile: {conffiles}");
    }
    let unit_text = read(&unit(&root, "spoold.service"));
    assert!(unit_text.contains("ExecStart=/usr/bin/spoold --config /etc/offgrid/spoold.toml"), "{unit_text}");
    assert!(!unit_text.contains("/usr/local/"), "the packaged unit points at /usr/local: {unit_text}");
    assert!(unit_text.contains("User=spoold") && unit_text.contains("StateDirectory=spoold"), "{unit_text}");
    let postinst = read(&control.join("postinst"));
    assert!(postinst.contains("adduser --system") && postinst.contains("chmod 0640 /etc/offgrid/spoold.tokens"), "{postinst}");
    assert!(!postinst.contains("systemctl --system enable") && !postinst.contains("deb-systemd-invoke start"), "the install must not start spoold before it has tokens:\n{postinst}");
    check_remove_keeps_and_purge_deletes(&control, "/var/lib/spoold");
    check_remove_keeps_and_purge_deletes(&control, "/var/lib/private/spoold");

    // The packaged binary on the packaged config. The shipped tokens file
    // holds no token, so spoold refuses it, naming the key...
    let bin = root.join("usr/bin/spoold");
    let config = root.join("etc/offgrid/spoold.toml");
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("--tokens-file")
        .arg(root.join("etc/offgrid/spoold.tokens"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no token, no start: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tokens-file"), "{}", String::from_utf8_lossy(&out.stderr));
    // ... and with the secrets an operator adds (paths on this host), the config is valid.
    std::fs::write(state.path().join("spoold.tokens"), "local:0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::write(state.path().join("ledger.token"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let out = run(Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("--tokens-file")
        .arg(state.path().join("spoold.tokens"))
        .arg("--ledger-token-file")
        .arg(state.path().join("ledger.token"))
        .arg("--spool-dir")
        .arg(state.path().join("spool"))
        .arg("--check-config")
        .arg("--print"));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.starts_with("config ok") && summary.contains("listen.addr = 0.0.0.0:8700"), "{summary}");
    let version = run(Command::new(&bin).arg("--version"));
    assert!(String::from_utf8_lossy(&version.stdout).contains("spool format v"), "packaged spoold --version");

    // offgrid-ledgerd
    let ledgerd_deb = deb("offgrid-ledgerd");
    let (lroot, lcontrol) = unpack(&ledgerd_deb, &tmp.path().join("ledgerd"));
    for (path, want) in [
        ("usr/bin/ledgerd", 0o755),
        ("usr/share/man/man1/ledgerd.1.gz", 0o644),
        ("usr/share/bash-completion/completions/ledgerd", 0o644),
        ("etc/offgrid/ledgerd.toml", 0o644),
        ("etc/offgrid/ledgerd.tokens", 0o640),
    ] {
        assert_eq!(mode(&lroot.join(path)), want, "{path}: mode");
    }
    let lunit = read(&unit(&lroot, "ledgerd.service"));
    assert!(lunit.contains("ExecStart=/usr/bin/ledgerd") && lunit.contains("User=ledgerd"), "{lunit}");
    let lpostinst = read(&lcontrol.join("postinst"));
    assert!(lpostinst.contains("adduser --system") && lpostinst.contains("ledgerd"), "{lpostinst}");
    check_remove_keeps_and_purge_deletes(&lcontrol, "/var/lib/ledgerd");
    std::fs::write(state.path().join("ledgerd.tokens"), "ops:0123456789abcdef0123456789abcdef:admin\n").unwrap();
    let out = run(Command::new(lroot.join("usr/bin/ledgerd"))
        .arg("--config")
        .arg(lroot.join("etc/offgrid/ledgerd.toml"))
        .arg("--tokens-file")
        .arg(state.path().join("ledgerd.tokens"))
        .arg("--check-config")
        .arg("--print"));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.starts_with("config ok") && summary.contains("store.url = "), "{summary}");

    // lintian: no errors (warnings are printed).
    for deb in [&spoold_deb, &ledgerd_deb] {
        let out = Command::new("lintian").arg("--no-tag-display-limit").arg(deb).output();
        let Ok(out) = out else {
            assert!(std::env::var_os("CI").is_none(), "lintian is not installed and CI is set");
            println!("SKIPPED lintian: not installed (apt-get install lintian)");
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
        let warnings = text.lines().filter(|l| l.starts_with("W: ")).count();
        println!("lintian {}: {} errors, {warnings} warnings", deb.display(), errors.len());
        assert!(errors.is_empty(), "lintian errors in {}:\n{}", deb.display(), errors.join("\n"));
    }
}
