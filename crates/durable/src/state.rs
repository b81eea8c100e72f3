//! The state file: a store's identity and the highest sequence number it has
//! made durable, kept outside sled so that a store that lost data can tell.
//!
//! # Layout
//! Two slots of [`SLOT_BYTES`] (1 KiB in all). Updates go to the slot not
//! holding the newest valid copy, then `fdatasync`: a torn or lost update
//! leaves the other slot intact. At open the valid slot with the highest
//! generation wins. All integers little-endian.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "OGSTATE\x01" (the last byte is the layout version)
//!      8     8  generation (u64)
//!     16    16  store id (u128)
//!     32     8  high-water mark: highest sequence number made durable (u64)
//!     40     8  reserved: no sequence number above this was ever handed out (u64)
//!     48     4  CRC32C of bytes 0..48
//!     52   460  zero
//! ```
//!
//! The high-water mark lags (it is advanced at most once a
//! [`crate::STATE_SYNC_INTERVAL`]); it detects a loss. The reservation leads:
//! before a commit acknowledges a sequence number above it, the reservation
//! is raised by [`SEQ_RESERVE_STEP`] and synced, so after a loss the store can
//! continue above every number it ever acknowledged (one extra fsync per
//! [`SEQ_RESERVE_STEP`] numbers).
//!
//! The file is created as `<name>.tmp`, fsynced, renamed into place, and its
//! directory fsynced, so it is either absent or whole.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bytes of one slot.
pub const SLOT_BYTES: usize = 512;
const MAGIC: &[u8; 8] = b"OGSTATE\x01";
const BODY_BYTES: usize = 48;
/// Sequence numbers reserved at a time, in numbers. A million: one extra fsync
/// per million events, and a jump of at most a million after a regression.
pub const SEQ_RESERVE_STEP: u64 = 1_000_000;

/// What the state file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreState {
    /// Random id made when the store was created; sled holds it too.
    pub store_id: u128,
    /// The highest sequence number the store has made durable.
    pub high_water: u64,
    /// No sequence number above this was ever handed out and acknowledged.
    pub reserved: u64,
}

/// Errors reading a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// An open state file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    file: File,
    generation: u64,
    current: StoreState,
    written_at: Instant,
}

fn encode(generation: u64, s: &StoreState) -> [u8; SLOT_BYTES] {
    let mut b = [0u8; SLOT_BYTES];
    b[0..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    b[16..32].copy_from_slice(&s.store_id.to_le_bytes());
    b[32..40].copy_from_slice(&s.high_water.to_le_bytes());
    b[40..48].copy_from_slice(&s.reserved.to_le_bytes());
    let crc = crc32c::crc32c(&b[..BODY_BYTES]);
    b[BODY_BYTES..BODY_BYTES + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Result<(u64, StoreState), String> {
    if b.len() < BODY_BYTES + 4 {
        return Err("short slot".into());
    }
    if &b[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[BODY_BYTES..BODY_BYTES + 4]);
    if crc32c::crc32c(&b[..BODY_BYTES]) != u32::from_le_bytes(crc) {
        return Err("checksum mismatch".into());
    }
    let u64_at = |i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(x)
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[16..32]);
    Ok((
        u64_at(8),
        StoreState { store_id: u128::from_le_bytes(id), high_water: u64_at(32), reserved: u64_at(40) },
    ))
}

impl StateFile {
    /// Opens an existing state file; `Ok(None)` when there is none.
    pub fn open(path: &Path) -> Result<Option<(StateFile, StoreState)>, StateError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; 2 * SLOT_BYTES];
        let n = read_up_to(&file, &mut buf)?;
        buf.truncate(n);
        let slots: Vec<Result<(u64, StoreState), String>> = buf.chunks(SLOT_BYTES).map(decode).collect();
        let best = slots.iter().filter_map(|s| s.as_ref().ok()).max_by_key(|(g, _)| *g).cloned();
        let Some((generation, state)) = best else {
            let why = slots.iter().filter_map(|s| s.as_ref().err()).cloned().collect::<Vec<_>>().join(", ");
            return Err(StateError::Corrupt(if why.is_empty() { "empty file".into() } else { why }));
        };
        let f = StateFile {
            path: path.to_owned(),
            file,
            generation,
            current: state.clone(),
            written_at: Instant::now(),
        };
        Ok(Some((f, state)))
    }

    /// Creates the state file durably (temporary file, fsync, rename, fsync of
    /// the directory), replacing any unreadable one.
    pub fn create(path: &Path, state: &StoreState) -> io::Result<StateFile> {
        let tmp = path.with_extension("tmp");
        {
            let f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            let mut both = vec![0u8; 2 * SLOT_BYTES];
            both[..SLOT_BYTES].copy_from_slice(&encode(1, state));
            f.write_all_at(&both, 0)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            crate::sync_dir(dir)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(StateFile {
            path: path.to_owned(),
            file,
            generation: 1,
            current: state.clone(),
            written_at: Instant::now(),
        })
    }

    /// The path of this file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file holds now.
    pub fn current(&self) -> &StoreState {
        &self.current
    }

    /// Marks the contents as just written (for the rate limit of [`Self::advance`]).
    pub(crate) fn touch(&mut self) {
        self.written_at = Instant::now();
    }

    /// Writes `state` durably into the other slot.
    pub fn advance_to(&mut self, state: StoreState) -> io::Result<()> {
        let generation = self.generation + 1;
        let slot = u64::from(generation % 2 == 0) * SLOT_BYTES as u64;
        self.file.write_all_at(&encode(generation, &state), slot)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.current = state;
        self.written_at = Instant::now();
        Ok(())
    }

    /// Called after each commit with the highest sequence number the commit
    /// covered, before the commit is acknowledged: raises the reservation
    /// (synced) when the number passed it, and the high-water mark when it is
    /// higher and [`crate::STATE_SYNC_INTERVAL`] has passed since the last
    /// write (`force` ignores the interval, e.g. at a clean close). Returns
    /// whether it wrote. Call only with a number a completed commit made durable.
    pub fn advance(&mut self, high_water: u64, force: bool) -> io::Result<bool> {
        let reserve = high_water > self.current.reserved;
        let raise = high_water > self.current.high_water
            && (force || self.written_at.elapsed() >= crate::STATE_SYNC_INTERVAL);
        if !reserve && !raise {
            return Ok(false);
        }
        let next = StoreState {
            store_id: self.current.store_id,
            high_water: high_water.max(self.current.high_water),
            reserved: if reserve { high_water.saturating_add(SEQ_RESERVE_STEP) } else { self.current.reserved },
        };
        self.advance_to(next)?;
        Ok(true)
    }
}

fn read_up_to(f: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_alternate_and_the_newest_valid_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state");
        let mut f = StateFile::create(&p, &StoreState { store_id: 7, high_water: 3, reserved: 100 }).expect("create");
        for h in [10, 20, 30] {
            assert!(f.advance(h, true).expect("advance"));
        }
        assert!(!f.advance(25, true).expect("lower is ignored"));
        let (_, st) = StateFile::open(&p).expect("open").expect("present");
        assert_eq!(st, StoreState { store_id: 7, high_water: 30, reserved: 100 });
        // Corrupt the newest slot (generation 4, even, is in slot 1): the older copy wins.
        let mut bad = std::fs::read(&p).expect("read");
        bad[SLOT_BYTES + 20] ^= 0xff;
        std::fs::write(&p, &bad).expect("write");
        let (_, st) = StateFile::open(&p).expect("open").expect("present");
        assert_eq!(st.high_water, 20);
        // Both slots corrupt: named, not a panic.
        bad[20] ^= 0xff;
        std::fs::write(&p, &bad).expect("write");
        match StateFile::open(&p) {
            Err(StateError::Corrupt(why)) => assert!(why.contains("checksum"), "{why}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn the_interval_limits_writes_unless_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = StoreState { store_id: 1, high_water: 0, reserved: 10 };
        let mut f = StateFile::create(&dir.path().join("s"), &st).expect("create");
        assert!(!f.advance(5, false).expect("advance"), "written just now: waits for the interval");
        assert!(f.advance(5, true).expect("advance"));
        assert_eq!(f.current().high_water, 5);
    }

    #[test]
    fn passing_the_reservation_writes_at_once_and_reserves_ahead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = StoreState { store_id: 1, high_water: 0, reserved: 10 };
        let mut f = StateFile::create(&dir.path().join("s"), &st).expect("create");
        assert!(f.advance(11, false).expect("advance"), "past the reservation: written despite the interval");
        assert_eq!(f.current().reserved, 11 + SEQ_RESERVE_STEP);
        assert_eq!(f.current().high_water, 11);
    }
}
