//! The disk reserve: free bytes *and* free inodes of the spool's filesystem.
//!
//! A storage node once ran out of inodes with 60% of its disk free, so both are
//! checked. statvfs is cheap but not free, so a reading is reused for
//! [`DISK_CHECK_INTERVAL`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    start: Instant,
    /// Milliseconds since `start` of the last reading, plus one (0: none yet).
    read_at_ms: AtomicU64,
    bytes: AtomicU64,
    /// Free inodes, or `u64::MAX` when the filesystem reports none.
    inodes: AtomicU64,
}

impl DiskGuard {
    pub(crate) fn new(path: PathBuf) -> DiskGuard {
        DiskGuard {
            path,
            start: Instant::now(),
            read_at_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            inodes: AtomicU64::new(u64::MAX),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A reading no older than [`DISK_CHECK_INTERVAL`]. Lock-free: on the
    /// append path; when the reading is stale, whoever notices refreshes it.
    pub(crate) fn free(&self) -> std::io::Result<DiskFree> {
        let at = self.read_at_ms.load(Ordering::Acquire);
        let interval = u64::try_from(DISK_CHECK_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if at != 0 && self.now_ms().saturating_sub(at) < interval {
            let inodes = self.inodes.load(Ordering::Relaxed);
            return Ok(DiskFree {
                bytes: self.bytes.load(Ordering::Relaxed),
                inodes: (inodes != u64::MAX).then_some(inodes),
            });
        }
        self.free_now()
    }

    /// A fresh reading, for status pages.
    pub(crate) fn free_now(&self) -> std::io::Result<DiskFree> {
        let free = statvfs(&self.path)?;
        self.bytes.store(free.bytes, Ordering::Relaxed);
        self.inodes.store(free.inodes.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.read_at_ms.store(self.now_ms(), Ordering::Release);
        Ok(free)
    }
}
