//! A small tmpfs for tests that need a real full disk (bytes or inodes).
//! Mounting needs root; without it [`Tmpfs::mount`] says why, so the caller
//! can skip loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a fresh temporary directory; unmounted (lazily) on
/// drop, so a failing test leaves no mount behind. Stop every process using
/// it before dropping it.
#[derive(Debug)]
pub struct Tmpfs {
    mnt: PathBuf,
    // Removed after the unmount (fields drop after `Drop::drop`).
    _base: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `opts` (e.g. `size=16m,nr_inodes=512`), or prints
    /// `SKIPPED <test>: <reason>` and returns `None` when it cannot (not root,
    /// mount failed), so the caller skips loudly.
    pub fn mount_or_skip(opts: &str, test: &str) -> Option<Tmpfs> {
        let mounted = tempfile::tempdir().map_err(|e| format!("tempdir: {e}")).and_then(|base| {
            let mnt = base.path().join("tmpfs");
            std::fs::create_dir(&mnt).map_err(|e| format!("mkdir: {e}"))?;
            Tmpfs::mount(&mnt, opts)?;
            Ok(Tmpfs { mnt, _base: base })
        });
        match mounted {
            Ok(t) => Some(t),
            Err(why) => {
                eprintln!("SKIPPED {test}: {why}");
                None
            }
        }
    }

    /// Mounts a tmpfs with `opts` on `dir`; `Err` says why it cannot.
    fn mount(dir: &Path, opts: &str) -> Result<(), String> {
        let uid = Command::new("id").arg("-u").output().map_err(|e| format!("run id -u: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not running as root, cannot mount a tmpfs".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(())
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Uses up inodes with empty files in a new directory `dir` until at most
    /// `keep` are left free (or creating fails); returns how many it made.
    pub fn fill_inodes(dir: &Path, free_inodes: u64, keep: u64) -> std::io::Result<u64> {
        std::fs::create_dir(dir)?;
        let mut made = 0u64;
        for i in 0..free_inodes.saturating_sub(keep) {
            if std::fs::write(dir.join(i.to_string()), b"").is_err() {
                break;
            }
            made += 1;
        }
        Ok(made)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}
