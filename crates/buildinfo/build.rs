//! Records the git commit and the build profile for `--version`
//! (`OFFGRID_GIT_COMMIT`, `OFFGRID_BUILD_PROFILE`). Builds without .git (a
//! source tarball) say "unknown". Only this small crate re-runs on a new
//! commit, not the crates the binaries are made of.

include!("git_commit.rs");

fn main() {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.join("../..");
    let commit = git_commit(&root, std::env::var("OFFGRID_GIT_COMMIT").ok());
    println!("cargo:rustc-env=OFFGRID_GIT_COMMIT={commit}");
    // "debug" or "release" (cargo's PROFILE is the base profile of the build).
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=OFFGRID_BUILD_PROFILE={profile}");
    println!("cargo:rerun-if-env-changed=OFFGRID_GIT_COMMIT");
    // A new commit or checkout changes HEAD or the ref it points at.
    let git_path = |what: &str| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["rev-parse", "--path-format=absolute", "--git-path", what])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    if commit != "unknown" {
        for p in ["HEAD"] {
            if let Some(path) = git_path(p) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        let head_ref = std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["symbolic-ref", "-q", "HEAD"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(r) = head_ref.and_then(|r| git_path(&r)) {
            println!("cargo:rerun-if-changed={r}");
        }
        if let Some(p) = git_path("packed-refs") {
            println!("cargo:rerun-if-changed={p}");
        }
    } else {
        println!("cargo:rerun-if-changed=build.rs");
    }
}
