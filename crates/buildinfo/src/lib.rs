//! What an offgrid binary is, for `--version`: the package version, the git
//! commit it was built from ("unknown" when built from a tarball without
//! .git), the spool-format version it reads and writes, and the build profile.
//!
//! `build.rs` captures the commit and the profile; this crate is small on
//! purpose, so that a new commit re-builds it and re-links the binaries, and
//! nothing else.

use std::sync::OnceLock;

/// The git commit of the build, or "unknown".
pub const GIT_COMMIT: &str = env!("OFFGRID_GIT_COMMIT");
/// "debug" or "release".
pub const BUILD_PROFILE: &str = env!("OFFGRID_BUILD_PROFILE");
/// The workspace version (all offgrid binaries share it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `0.1.0 (commit 0c47921ab3de, spool format v1, release build)`: what clap
/// prints after the binary's name for `--version`.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        format!(
            "{VERSION} (commit {GIT_COMMIT}, spool format v{}, {BUILD_PROFILE} build)",
            spool_format::FORMAT_VERSION
        )
    })
}

/// `--man` and `--completions SHELL` of a daemon: the man page (roff) or a
/// completion script of `cmd` on stdout. Both are generated from the clap
/// definition of the flags, as spoolctl's are, so they cannot drift.
/// `None` when neither was asked for (the daemon goes on).
pub fn print_cli_docs(
    cmd: clap::Command,
    man: bool,
    completions: Option<clap_complete::Shell>,
) -> Option<std::io::Result<()>> {
    let mut out = std::io::stdout();
    if man {
        return Some(clap_mangen::Man::new(cmd).render(&mut out));
    }
    let shell = completions?;
    let mut cmd = cmd;
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    Some(Ok(()))
}

#[cfg(test)]
mod tests {
    include!("../git_commit.rs");

    #[test]
    fn version_names_all_four() {
        let v = super::version();
        assert!(v.starts_with(super::VERSION), "{v}");
        assert!(v.contains(&format!("spool format v{}", spool_format::FORMAT_VERSION)), "{v}");
        assert!(v.contains("commit ") && v.contains(" build)"), "{v}");
    }

    #[test]
    fn a_tree_without_git_is_unknown() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(git_commit(d.path(), None), "unknown");
        // A packager's value wins.
        assert_eq!(git_commit(d.path(), Some("abc123".into())), "abc123");
        assert_eq!(git_commit(d.path(), Some("  ".into())), "unknown");
    }
}
