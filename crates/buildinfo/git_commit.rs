// The git commit a source tree was built from, for `--version`. Shared by
// build.rs (which runs it) and the crate's tests (which include it).

/// `OFFGRID_GIT_COMMIT` if set (packagers building from a tarball may pass it),
/// else the short commit of the git work tree whose top is `workspace_root`,
/// else "unknown" (a tarball without .git, or no git installed). A tarball
/// unpacked inside some other repository must not report that repository's
/// commit, hence the check of the top-level directory.
#[allow(dead_code)]
pub fn git_commit(workspace_root: &std::path::Path, env_commit: Option<String>) -> String {
    if let Some(c) = env_commit.filter(|c| !c.trim().is_empty()) {
        return c.trim().to_owned();
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git").arg("-C").arg(workspace_root).args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"]).map(std::path::PathBuf::from);
    let same_tree = match (top.and_then(|t| t.canonicalize().ok()), workspace_root.canonicalize().ok()) {
        (Some(t), Some(r)) => t == r,
        _ => false,
    };
    if !same_tree {
        return "unknown".to_owned();
    }
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => c,
        _ => "unknown".to_owned(),
    }
}
