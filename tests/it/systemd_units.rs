//! The systemd units in `systemd/` pass `systemd-analyze verify` with the real
//! binaries in place of `/usr/local/bin/…`: no unknown key, no bad value, no
//! missing '=', an executable `ExecStart`. Where `systemd-analyze` is not
//! installed the test says so and checks nothing else (it never passes
//! silently on a machine that has it).

use std::path::PathBuf;
use std::process::Command;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Verifies one unit; returns what systemd-analyze printed about it.
fn verify(unit: &str, bin: &str) -> Option<String> {
    let text = std::fs::read_to_string(repo_file(&format!("systemd/{unit}"))).expect("read unit");
    let installed = format!("/usr/local/bin/{bin}");
    assert!(text.contains(&installed), "{unit} runs {installed}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(unit);
    let real = test_support::bin_path(bin);
    std::fs::write(&path, text.replace(&installed, &real.display().to_string())).expect("write unit");
    let out = match Command::new("systemd-analyze").arg("verify").arg(&path).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("systemd_units: systemd-analyze not available ({e}); units not verified here");
            return None;
        }
    };
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify {unit} failed: {said}");
    Some(said)
}

#[test]
fn systemd_units_verify_cleanly() {
    for (unit, bin) in [("spoold.service", "spoold"), ("ledgerd.service", "ledgerd")] {
        if let Some(said) = verify(unit, bin) {
            // Warnings (unknown keys, bad values) do not fail the exit code; any
            // line about this unit is a defect.
            let about_unit: Vec<&str> = said.lines().filter(|l| l.contains(unit)).collect();
            assert!(about_unit.is_empty(), "{unit}: {about_unit:#?}");
        }
    }
}

#[test]
fn systemd_verify_would_catch_a_misspelt_key() {
    // The check above must be able to fail: a unit with a misspelt key is reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.service");
    std::fs::write(&path, format!("[Service]\nExecStart={}\nNoNewPrivilegez=yes\n", test_support::bin_path("spoold").display()))
        .expect("write unit");
    let Ok(out) = Command::new("systemd-analyze").arg("verify").arg(&path).output() else {
        eprintln!("systemd_units: systemd-analyze not available; skipped");
        return;
    };
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("broken.service") && said.contains("NoNewPrivilegez"), "not reported: {said}");
}
