//! A power-cut file system: a FUSE file system, held in this process's memory,
//! that keeps apart what was written and what was made durable, and on
//! [`PowerCutFs::cut`] throws away everything that was not.
//!
//! It models the guarantees of a Linux file system on a disk with a volatile
//! cache, at their strictest (what POSIX promises, not what ext4 happens to do):
//! - `write`/`pwrite` change the file as every reader sees it, but survive a cut
//!   only once `fsync` or `fdatasync` of that file has returned (data and size;
//!   `sync_file_range`, which is what sled's `Db::flush()` ends in, never
//!   reaches a FUSE file system and counts for nothing, as on a real power cut);
//! - a directory entry created, removed or renamed survives a cut only once
//!   `fsync` of its directory has returned;
//! - a file whose entry is not durable is gone after a cut, whatever was
//!   synced into it.
//!
//! Files are pages of 4 KiB shared copy-on-write between the current and the
//! durable image, so an fsync costs the pages written since the last one.
//! Every open is answered with `FOPEN_DIRECT_IO` and zero cache lifetimes, so
//! the kernel keeps no page cache or attributes that could outlive a cut: what
//! a process reads after the cut is what the file system holds.
//!
//! Use: mount it ([`PowerCutFs::mount_or_skip`]: root and `/dev/fuse` are
//! needed), run a daemon with its data under [`PowerCutFs::path`], SIGKILL the
//! daemon and wait for it to exit, [`PowerCutFs::cut`], start the daemon again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const PAGE_BYTES: usize = 4096;
/// Nothing is cached by the kernel (see the module docs).
const TTL: Duration = Duration::ZERO;
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
/// What `statfs` reports: 4 TiB and a billion inodes, so the daemons' disk
/// reserve checks pass (the contents live in this process's memory).
const STATFS_BLOCKS: u64 = 1 << 30;
const STATFS_FILES: u64 = 1 << 30;

type Page = Arc<[u8; PAGE_BYTES]>;

#[derive(Default, Clone)]
struct FileData {
    pages: BTreeMap<u64, Page>,
    size: u64,
    durable_pages: BTreeMap<u64, Page>,
    durable_size: u64,
    /// Pages changed (written, or dropped by a truncation) since the last sync.
    dirty: BTreeSet<u64>,
}

impl FileData {
    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        if offset >= self.size {
            return Vec::new();
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = vec![0u8; usize::try_from(end - offset).unwrap_or(0)];
        let mut pos = offset;
        while pos < end {
            let page = pos / PAGE_BYTES as u64;
            let in_page = usize::try_from(pos % PAGE_BYTES as u64).unwrap_or(0);
            let n = (PAGE_BYTES - in_page).min(usize::try_from(end - pos).unwrap_or(0));
            let at = usize::try_from(pos - offset).unwrap_or(0);
            if let Some(p) = self.pages.get(&page) {
                out[at..at + n].copy_from_slice(&p[in_page..in_page + n]);
            }
            pos += n as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let page = pos / PAGE_BYTES as u64;
            let in_page = usize::try_from(pos % PAGE_BYTES as u64).unwrap_or(0);
            let n = (PAGE_BYTES - in_page).min(rest.len());
            let p = self.pages.entry(page).or_insert_with(|| Arc::new([0u8; PAGE_BYTES]));
            Arc::make_mut(p)[in_page..in_page + n].copy_from_slice(&rest[..n]);
            self.dirty.insert(page);
            rest = &rest[n..];
            pos += n as u64;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    fn truncate(&mut self, size: u64) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE_BYTES as u64);
            let gone: Vec<u64> = self.pages.range(first_gone..).map(|(k, _)| *k).collect();
            for k in gone {
                self.pages.remove(&k);
                self.dirty.insert(k);
            }
            // Zero the tail of the last partial page, so a later extension reads zeros.
            let in_page = usize::try_from(size % PAGE_BYTES as u64).unwrap_or(0);
            if in_page != 0 {
                let page = size / PAGE_BYTES as u64;
                if let Some(p) = self.pages.get_mut(&page) {
                    Arc::make_mut(p)[in_page..].fill(0);
                    self.dirty.insert(page);
                }
            }
        }
        self.size = size;
    }

    fn sync(&mut self) {
        for k in std::mem::take(&mut self.dirty) {
            match self.pages.get(&k) {
                Some(p) => {
                    self.durable_pages.insert(k, Arc::clone(p));
                }
                None => {
                    self.durable_pages.remove(&k);
                }
            }
        }
        self.durable_size = self.size;
    }

    /// Back to the durable image; returns the pages that differed.
    fn revert(&mut self) -> u64 {
        let lost = self.dirty.len() as u64;
        self.pages = self.durable_pages.clone();
        self.size = self.durable_size;
        self.dirty.clear();
        lost
    }
}

#[derive(Clone)]
enum Kind {
    File(FileData),
    Dir { entries: BTreeMap<OsString, u64>, durable_entries: BTreeMap<OsString, u64> },
}

#[derive(Clone)]
struct Node {
    kind: Kind,
    parent: u64,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Node {
    fn new(kind: Kind, parent: u64, mode: u32, req: &Request) -> Node {
        let now = SystemTime::now();
        Node {
            kind,
            parent,
            perm: u16::try_from(mode & 0o7777).unwrap_or(0o644),
            uid: req.uid(),
            gid: req.gid(),
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, size, nlink) = match &self.kind {
            Kind::File(f) => (FileType::RegularFile, f.size, 1),
            Kind::Dir { .. } => (FileType::Directory, 4096, 2),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind,
            perm: self.perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

/// What the file system has seen, for tests that check the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub writes: u64,
    pub bytes_written: u64,
    /// `fsync`/`fdatasync` of files.
    pub file_syncs: u64,
    /// `fsync` of directories.
    pub dir_syncs: u64,
    pub cuts: u64,
}

/// What one [`PowerCutFs::cut`] threw away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// 4 KiB pages written (or truncated away) and never synced.
    pub pages_lost: u64,
    /// Directory entries created, removed or renamed and never synced.
    pub entries_reverted: u64,
    /// Files and directories no longer reachable once entries were reverted.
    pub nodes_lost: u64,
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    stats: Stats,
}

const ROOT: u64 = 1;

impl State {
    fn dir_entries(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::Dir { entries, .. }) => Ok(entries),
            Some(Kind::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir_entries(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn file(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::File(f)) => Ok(f),
            Some(Kind::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        self.nodes.get(&ino).map(|n| n.attr(ino)).ok_or(Errno::ENOENT)
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        let entries = self.dir_entries(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.dir_entries(parent)?.insert(name.to_owned(), ino);
        self.nodes.insert(ino, node);
        self.touch(parent);
        Ok(ino)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            let now = SystemTime::now();
            n.mtime = now;
            n.ctime = now;
        }
    }

    fn is_empty_dir(&self, ino: u64) -> Option<bool> {
        match self.nodes.get(&ino).map(|n| &n.kind) {
            Some(Kind::Dir { entries, .. }) => Some(entries.is_empty()),
            _ => None,
        }
    }

    fn cut(&mut self) -> CutReport {
        let mut report = CutReport::default();
        for node in self.nodes.values_mut() {
            match &mut node.kind {
                Kind::File(f) => report.pages_lost += f.revert(),
                Kind::Dir { entries, durable_entries } => {
                    let changed = entries
                        .iter()
                        .filter(|(k, v)| durable_entries.get(*k) != Some(v))
                        .count()
                        + durable_entries.keys().filter(|k| !entries.contains_key(*k)).count();
                    report.entries_reverted += changed as u64;
                    *entries = durable_entries.clone();
                }
            }
        }
        // Whatever the durable entries no longer reach is gone.
        let mut reachable = BTreeSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if let Some(Kind::Dir { entries, .. }) = self.nodes.get(&ino).map(|n| &n.kind) {
                for child in entries.values() {
                    if reachable.insert(*child) {
                        todo.push(*child);
                    }
                }
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|ino, _| reachable.contains(ino));
        // Parents follow the entries that survived.
        let links: Vec<(u64, u64)> = self
            .nodes
            .iter()
            .filter_map(|(ino, n)| match &n.kind {
                Kind::Dir { entries, .. } => Some(entries.values().map(move |c| (*c, *ino)).collect::<Vec<_>>()),
                Kind::File(_) => None,
            })
            .flatten()
            .collect();
        for (child, parent) in links {
            if let Some(n) = self.nodes.get_mut(&child) {
                n.parent = parent;
            }
        }
        report.nodes_lost = (before - self.nodes.len()) as u64;
        self.stats.cuts += 1;
        report
    }
}

struct Fs {
    state: Arc<Mutex<State>>,
}

impl Fs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn direct() -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        match s.lookup(parent.0, name).and_then(|ino| s.attr(ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        if let Some(size) = size {
            match s.file(ino.0) {
                Ok(f) => f.truncate(size),
                Err(e) => return reply.error(e),
            }
        }
        let Some(n) = s.nodes.get_mut(&ino.0) else { return reply.error(Errno::ENOENT) };
        let at = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        };
        if let Some(m) = mode {
            n.perm = u16::try_from(m & 0o7777).unwrap_or(n.perm);
        }
        if let Some(u) = uid {
            n.uid = u;
        }
        if let Some(g) = gid {
            n.gid = g;
        }
        if let Some(t) = atime {
            n.atime = at(t);
        }
        if let Some(t) = mtime {
            n.mtime = at(t);
        }
        n.ctime = SystemTime::now();
        let attr = n.attr(ino.0);
        reply.attr(&TTL, &attr);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & S_IFMT != S_IFREG {
            // Sockets, pipes and devices: keep them off this file system.
            return reply.error(Errno::EPERM);
        }
        let mut s = self.lock();
        let node = Node::new(Kind::File(FileData::default()), parent.0, mode & !umask, req);
        match s.add(parent.0, name, node).and_then(|ino| s.attr(ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut s = self.lock();
        let kind = Kind::Dir { entries: BTreeMap::new(), durable_entries: BTreeMap::new() };
        let node = Node::new(kind, parent.0, mode & !umask, req);
        match s.add(parent.0, name, node).and_then(|ino| s.attr(ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let ino = match s.lookup(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if s.is_empty_dir(ino).is_some() {
            return reply.error(Errno::EISDIR);
        }
        if let Ok(entries) = s.dir_entries(parent.0) {
            entries.remove(name);
        }
        s.touch(parent.0);
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let ino = match s.lookup(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match s.is_empty_dir(ino) {
            None => return reply.error(Errno::ENOTDIR),
            Some(false) => return reply.error(Errno::ENOTEMPTY),
            Some(true) => {}
        }
        if let Ok(entries) = s.dir_entries(parent.0) {
            entries.remove(name);
        }
        s.touch(parent.0);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let ino = match s.lookup(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if let Ok(existing) = s.lookup(newparent.0, newname) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            match (s.is_empty_dir(existing), s.is_empty_dir(ino)) {
                (Some(false), _) => return reply.error(Errno::ENOTEMPTY),
                (Some(true), None) => return reply.error(Errno::EISDIR),
                (None, Some(_)) => return reply.error(Errno::ENOTDIR),
                _ => {}
            }
        }
        if let Err(e) = s.dir_entries(newparent.0) {
            return reply.error(e);
        }
        if let Ok(entries) = s.dir_entries(parent.0) {
            entries.remove(name);
        }
        if let Ok(entries) = s.dir_entries(newparent.0) {
            entries.insert(newname.to_owned(), ino);
        }
        if let Some(n) = s.nodes.get_mut(&ino) {
            n.parent = newparent.0;
        }
        s.touch(parent.0);
        s.touch(newparent.0);
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().attr(ino.0) {
            Ok(_) => reply.opened(FileHandle(ino.0), direct()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = self.lock();
        match s.file(ino.0) {
            Ok(f) => reply.data(&f.read(offset, usize::try_from(size).unwrap_or(0))),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        match s.file(ino.0) {
            Ok(f) => f.write(offset, data),
            Err(e) => return reply.error(e),
        }
        s.touch(ino.0);
        s.stats.writes += 1;
        s.stats.bytes_written += data.len() as u64;
        reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX));
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close() persists nothing.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut s = self.lock();
        match s.file(ino.0) {
            Ok(f) => f.sync(),
            Err(Errno::EISDIR) => return self.sync_dir(&mut s, ino.0, reply),
            Err(e) => return reply.error(e),
        }
        s.stats.file_syncs += 1;
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().is_empty_dir(ino.0) {
            Some(_) => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            None => reply.error(Errno::ENOTDIR),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut s = self.lock();
        let parent = s.nodes.get(&ino.0).map_or(ROOT, |n| n.parent);
        let entries = match s.dir_entries(ino.0) {
            Ok(e) => e.clone(),
            Err(e) => return reply.error(e),
        };
        let mut all: Vec<(u64, FileType, OsString)> =
            vec![(ino.0, FileType::Directory, ".".into()), (parent, FileType::Directory, "..".into())];
        for (name, child) in entries {
            let kind = match s.nodes.get(&child).map(|n| &n.kind) {
                Some(Kind::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((child, kind, name));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(usize::try_from(offset).unwrap_or(0)) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut s = self.lock();
        self.sync_dir(&mut s, ino.0, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(STATFS_BLOCKS, STATFS_BLOCKS, STATFS_BLOCKS, STATFS_FILES, STATFS_FILES, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let ino = match s.lookup(parent.0, name) {
            Ok(_) if flags & libc_o_excl() != 0 => return reply.error(Errno::EEXIST),
            Ok(ino) => ino,
            Err(_) => {
                let node = Node::new(Kind::File(FileData::default()), parent.0, mode & !umask, req);
                match s.add(parent.0, name, node) {
                    Ok(ino) => ino,
                    Err(e) => return reply.error(e),
                }
            }
        };
        match s.attr(ino) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(ino), direct()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut s = self.lock();
        match s.file(ino.0) {
            Ok(f) => {
                let end = offset.saturating_add(length);
                if end > f.size {
                    f.size = end;
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }
}

impl Fs {
    fn sync_dir(&self, s: &mut State, ino: u64, reply: ReplyEmpty) {
        match s.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::Dir { entries, durable_entries }) => {
                *durable_entries = entries.clone();
                s.stats.dir_syncs += 1;
                reply.ok();
            }
            Some(Kind::File(_)) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// `O_EXCL` on Linux.
const fn libc_o_excl() -> i32 {
    0o200
}

/// A mounted power-cut file system. Unmounted on drop (stop every process
/// using it first).
pub struct PowerCutFs {
    state: Arc<Mutex<State>>,
    // Dropped before the directory: unmounts.
    session: Option<BackgroundSession>,
    mnt: PathBuf,
    _base: tempfile::TempDir,
}

impl std::fmt::Debug for PowerCutFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerCutFs").field("mnt", &self.mnt).finish()
    }
}

impl PowerCutFs {
    /// Mounts a new, empty power-cut file system on a fresh temporary
    /// directory. `Err` says why it cannot (not root, no `/dev/fuse`, mount
    /// refused).
    pub fn mount() -> Result<PowerCutFs, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse is missing (no FUSE in this kernel or container)".into());
        }
        let uid = std::process::Command::new("id").arg("-u").output().map_err(|e| format!("run id -u: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not running as root: mounting the FUSE power-cut file system needs it".into());
        }
        let base = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let mnt = base.path().join("powercut");
        std::fs::create_dir(&mnt).map_err(|e| format!("mkdir: {e}"))?;
        let root = Node {
            kind: Kind::Dir { entries: BTreeMap::new(), durable_entries: BTreeMap::new() },
            parent: ROOT,
            perm: 0o755,
            uid: 0,
            gid: 0,
            atime: SystemTime::now(),
            mtime: SystemTime::now(),
            ctime: SystemTime::now(),
        };
        let state = Arc::new(Mutex::new(State {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            stats: Stats::default(),
        }));
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![MountOption::FSName("offgrid-powercut".into()), MountOption::NoAtime];
        let session = fuser::spawn_mount(Fs { state: Arc::clone(&state) }, &mnt, &cfg)
            .map_err(|e| format!("mount the FUSE power-cut file system on {}: {e}", mnt.display()))?;
        Ok(PowerCutFs { state, session: Some(session), mnt, _base: base })
    }

    /// [`PowerCutFs::mount`], or `None` after printing `SKIPPED <test>: <why>`.
    /// Where the environment variable `CI` is set, a file system that cannot be
    /// mounted is a failure of the set-up, not a skip: this panics.
    pub fn mount_or_skip(test: &str) -> Option<PowerCutFs> {
        match PowerCutFs::mount() {
            Ok(fs) => Some(fs),
            Err(why) if std::env::var_os("CI").is_some() => {
                panic!("{test}: the power-cut file system is needed on CI and could not be mounted: {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED {test}: {why}");
                None
            }
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power cut: every file goes back to the contents and size of its last
    /// fsync, every directory to the entries of its last fsync, and files and
    /// directories no durable entry reaches are gone. Kill (and reap) every
    /// process writing here first, as a real cut would have.
    pub fn cut(&self) -> CutReport {
        self.lock().cut()
    }

    /// Counts of what the file system has seen.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                eprintln!("power-cut fs: unmount {}: {e}", self.mnt.display());
                let _ = std::process::Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
    }
}
