//! The disk reserve: free bytes *and* free inodes of the spool's filesystem.
//!
//! A storage node once ran out of inodes with 60% of its disk free, so both are
//! checked. statvfs is cheap but not free, so a reading is reused for
//! [`DISK_CHECK_INTERVAL`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a statvfs reading is trusted, in time. 250 ms: at 100k events/s and
/// ~400 bytes an event, the spool writes ~10 MB in that time, far under any
/// sensible reserve, and the syscall stays off the per-event path.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Free space of the filesystem holding the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFree {
    /// Bytes available to unprivileged writers (`f_bavail * f_frsize`).
    pub bytes: u64,
    /// Inodes available to unprivileged writers (`f_favail`); `None` when the
    /// filesystem does not report inodes (some report a total of zero).
    pub inodes: Option<u64>,
}

pub(crate) fn statvfs(path: &Path) -> std::io::Result<DiskFree> {
    let s = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    let bytes = s.f_bavail.saturating_mul(s.f_frsize);
    let inodes = if s.f_files == 0 { None } else { Some(s.f_favail) };
    Ok(DiskFree { bytes, inodes })
}

pub(crate) struct DiskGuard {
    path: PathBuf,
    last: Mutex<Option<(Instant, DiskFree)>>,
}

impl DiskGuard {
    pub(crate) fn new(path: PathBuf) -> DiskGuard {
        DiskGuard { path, last: Mutex::new(None) }
    }

    /// A reading no older than [`DISK_CHECK_INTERVAL`].
    pub(crate) fn free(&self) -> std::io::Result<DiskFree> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, free)) = *last {
            if at.elapsed() < DISK_CHECK_INTERVAL {
                return Ok(free);
            }
        }
        let free = statvfs(&self.path)?;
        *last = Some((Instant::now(), free));
        Ok(free)
    }

    /// A fresh reading, for status pages.
    pub(crate) fn free_now(&self) -> std::io::Result<DiskFree> {
        let free = statvfs(&self.path)?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), free));
        Ok(free)
    }
}
