//! The durability model: an in-memory filesystem in which every inode has a
//! CURRENT state (what reads see) and a DURABLE state (what survives a power cut).
//!
//! This module knows nothing about FUSE, so the rules can be tested
//! deterministically and exhaustively; `fs.rs` is a thin adapter around it.
//!
//! The rules (see the crate documentation for the full statement):
//! - `write`, `setattr` (truncate, chmod, chown, utimes) and `fallocate` change
//!   the current state of one file only.
//! - `fsync` of a file (`fdatasync` too) makes that file's current data, size and
//!   attributes durable. It does NOT make any directory entry durable.
//! - `create`, `mkdir`, `unlink`, `rmdir` and `rename` change the current entries
//!   of the directories involved only. `fsyncdir` of a directory makes that one
//!   directory's current entries (and attributes) durable.
//! - `cut` replaces every current state by its durable state, keeps only what is
//!   reachable from the root through durable entries, makes every open handle
//!   stale and switches the power OFF. While OFF every operation fails with EIO.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

/// Inode number.
pub type Ino = u64;
/// Open file or directory handle number.
pub type Fh = u64;

/// The root directory's inode number (FUSE requires 1).
pub const ROOT_INO: Ino = 1;
/// An inode number the model never hands out, free for the embedder (powerfs
/// uses it for its control file).
pub const RESERVED_INO: Ino = 2;
const FIRST_INO: Ino = 3;
/// Longest file name accepted, as on Linux filesystems.
pub const NAME_MAX: usize = 255;
/// Largest file size accepted. Files are kept as flat byte vectors (current and
/// durable), so this bounds what one `truncate` can make us allocate; beyond
/// it operations fail with EFBIG instead of exhausting memory.
pub const MAX_FILE_SIZE: u64 = 4 << 30;

/// An errno value, as returned to the kernel (and so to the application).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

pub type Result<T> = std::result::Result<T, Errno>;

/// The two kinds of inode the model supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
}

/// Power state of the simulated machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Power {
    /// Normal operation.
    #[default]
    On,
    /// After a cut and before `power_on`: every operation fails with EIO.
    Off,
}

impl fmt::Display for Power {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Power::On => "on",
            Power::Off => "off",
        })
    }
}

/// What the last power cut threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutStats {
    /// Bytes of file data written but not fsynced (summed over all files).
    pub dropped_bytes: u64,
    /// Files whose data, size or attributes differed from their durable state.
    pub files_changed: u64,
    /// Directory entries present but not durable (new names, or names that
    /// pointed to another inode than durably), summed over all directories.
    pub entries_dropped: u64,
    /// Durable directory entries that had been removed or replaced and came back.
    pub entries_restored: u64,
    /// Inodes that existed before the cut and are not reachable from the root
    /// through durable entries, so vanished.
    pub inodes_vanished: u64,
}

/// Counters, for tests and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub power: Power,
    /// Number of power cuts so far.
    pub cuts: u64,
    /// Successful fsync/fdatasync calls on files.
    pub fsyncs: u64,
    /// Successful fsync calls on directories.
    pub fsyncdirs: u64,
    /// Writes made durable at once because the file was opened O_SYNC/O_DSYNC.
    pub sync_writes: u64,
    /// Bytes accepted by `write`.
    pub bytes_written: u64,
    pub last_cut: CutStats,
    /// Whether syncs are being held (`Mount::hold_syncs`). The model never
    /// holds anything: the FUSE adapter fills in this and the two below.
    pub holding: bool,
    /// Syncs (fsync, fdatasync, fsyncdir) held so far, each counted when it
    /// arrived: answered later by a release or a cut, or still waiting.
    pub held_syncs: u64,
    /// Held syncs waiting now for a release or a cut.
    pub waiting_syncs: u64,
}

impl fmt::Display for Stats {
    /// One line of `key=value` pairs: the format of the control file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.last_cut;
        write!(
            f,
            "power={} cuts={} fsyncs={} fsyncdirs={} sync_writes={} bytes_written={} \
             last_cut_dropped_bytes={} last_cut_files_changed={} last_cut_entries_dropped={} \
             last_cut_entries_restored={} last_cut_inodes_vanished={} hold={} held_syncs={} \
             waiting_syncs={}",
            self.power,
            self.cuts,
            self.fsyncs,
            self.fsyncdirs,
            self.sync_writes,
            self.bytes_written,
            c.dropped_bytes,
            c.files_changed,
            c.entries_dropped,
            c.entries_restored,
            c.inodes_vanished,
            if self.holding { "on" } else { "off" },
            self.held_syncs,
            self.waiting_syncs
        )
    }
}

/// Attributes of an inode as seen by `stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits (including setuid/setgid/sticky), without the type bits.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
}

/// Changes requested by `setattr`; `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

/// One `readdir` entry. `offset` is the cookie to pass to get the entries after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: OsString,
    pub offset: u64,
}

/// Totals for `statfs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// A set of disjoint, non-adjacent half-open byte ranges `[start, end)`.
///
/// Used to remember which bytes of a file may differ from its durable copy, so
/// that fsync copies only those (sled fsyncs files of tens of MB hundreds of
/// times a second; copying whole files would be far too slow).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    /// start -> end
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub(crate) fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut new_start, mut new_end) = (start, end);
        let mut absorbed = Vec::new();
        // A range starting before `start` that reaches it (or touches it).
        if let Some((&s, &e)) = self.map.range(..start).next_back()
            && e >= start
        {
            new_start = s;
            new_end = new_end.max(e);
            absorbed.push(s);
        }
        // Ranges starting inside [start, end] (end included: adjacent ranges merge).
        // Stored ranges are disjoint and non-adjacent, so no range starting after
        // `end` can reach back into the merged one.
        for (&s, &e) in self.map.range(start..=end) {
            new_end = new_end.max(e);
            absorbed.push(s);
        }
        for s in absorbed {
            self.map.remove(&s);
        }
        self.map.insert(new_start, new_end);
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The ranges clipped to `[0, limit)`.
    pub(crate) fn iter_below(&self, limit: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map
            .iter()
            .map(move |(&s, &e)| (s, e.min(limit)))
            .filter(|(s, e)| s < e)
    }

    /// Number of bytes covered below `limit`.
    pub(crate) fn len_below(&self, limit: u64) -> u64 {
        self.iter_below(limit).map(|(s, e)| e - s).sum()
    }

    #[cfg(test)]
    pub(crate) fn ranges(&self) -> Vec<(u64, u64)> {
        self.map.iter().map(|(&s, &e)| (s, e)).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    crtime: SystemTime,
}

#[derive(Debug)]
struct FileBody {
    /// Current contents; its length is the current size.
    data: Vec<u8>,
    /// Durable contents; its length is the durable size.
    durable: Vec<u8>,
    /// Invariant: every byte position `p < data.len()` that is NOT in `dirty`
    /// satisfies `p < durable.len() && data[p] == durable[p]`.
    dirty: RangeSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Child {
    ino: Ino,
    kind: Kind,
}

#[derive(Debug)]
struct DirBody {
    entries: BTreeMap<OsString, Child>,
    durable: BTreeMap<OsString, Child>,
    /// Current parent (for `..` and for refusing to move a directory into itself).
    parent: Ino,
}

#[derive(Debug)]
enum Body {
    File(FileBody),
    Dir(DirBody),
}

#[derive(Debug)]
struct Inode {
    body: Body,
    meta: Meta,
    durable_meta: Meta,
    /// Number of current directory entries naming this inode.
    cur_links: u32,
    /// Number of durable directory entries naming this inode.
    dur_links: u32,
    /// Open handles of the current epoch.
    open: u32,
}

impl Inode {
    fn kind(&self) -> Kind {
        match self.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Handle {
    ino: Ino,
    /// Power epoch the handle was opened in; a cut starts a new epoch, after
    /// which the handle is stale and every operation on it fails with EIO.
    epoch: u64,
}

/// The whole simulated filesystem.
#[derive(Debug)]
pub struct Model {
    inodes: HashMap<Ino, Inode>,
    handles: HashMap<Fh, Handle>,
    /// Never decreases and is never reset by a cut, so an inode number is never
    /// reused and the kernel cannot confuse a vanished inode with a new one.
    next_ino: Ino,
    next_fh: Fh,
    epoch: u64,
    power: Power,
    stats: Stats,
}

fn check_name(name: &OsStr) -> Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    if bytes.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

fn new_meta(perm: u16, uid: u32, gid: u32) -> Meta {
    let now = SystemTime::now();
    Meta {
        perm,
        uid,
        gid,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
    }
}

/// Sets the length of a file's current data, keeping the dirty-range invariant.
fn resize_file(f: &mut FileBody, new_len: u64) -> Result<()> {
    if new_len > MAX_FILE_SIZE {
        return Err(Errno::EFBIG);
    }
    let old_len = f.data.len() as u64;
    // Growing exposes new zero bytes that differ from (or do not exist in) the
    // durable copy. Shrinking needs no mark: the invariant only covers bytes
    // below the current size, and fsync/cut handle the size itself.
    f.dirty.insert(old_len, new_len);
    f.data.resize(new_len as usize, 0);
    if f.data.capacity() > 2 * f.data.len() + 4096 {
        f.data.shrink_to_fit();
    }
    Ok(())
}

impl Model {
    /// A filesystem holding only an empty root directory owned by `uid:gid`
    /// (the root is durable from the start, like a freshly made filesystem).
    pub fn new(uid: u32, gid: u32) -> Model {
        let meta = new_meta(0o755, uid, gid);
        let root = Inode {
            body: Body::Dir(DirBody {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                parent: ROOT_INO,
            }),
            meta,
            durable_meta: meta,
            cur_links: 1,
            dur_links: 1,
            open: 0,
        };
        let mut inodes = HashMap::new();
        inodes.insert(ROOT_INO, root);
        Model {
            inodes,
            handles: HashMap::new(),
            next_ino: FIRST_INO,
            next_fh: 1,
            epoch: 0,
            power: Power::On,
            stats: Stats::default(),
        }
    }

    pub fn power(&self) -> Power {
        self.power
    }

    /// Number of cuts so far; handles carry the epoch they were opened in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.power = self.power;
        stats
    }

    fn check_on(&self) -> Result<()> {
        match self.power {
            Power::On => Ok(()),
            Power::Off => Err(Errno::EIO),
        }
    }

    fn inode(&self, ino: Ino) -> Result<&Inode> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: Ino) -> Result<&DirBody> {
        match &self.inode(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut DirBody> {
        match &mut self.inode_mut(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    /// Checks that `fh` is an open handle of the current epoch on `ino`.
    fn check_handle(&self, fh: Fh, ino: Ino) -> Result<()> {
        let handle = self.handles.get(&fh).ok_or(Errno::EBADF)?;
        if handle.epoch != self.epoch {
            return Err(Errno::EIO);
        }
        if handle.ino != ino {
            return Err(Errno::EBADF);
        }
        Ok(())
    }

    fn attr_of(ino: Ino, node: &Inode) -> Attr {
        let (size, nlink) = match &node.body {
            Body::File(f) => (f.data.len() as u64, node.cur_links),
            Body::Dir(d) => {
                let subdirs = d.entries.values().filter(|c| c.kind == Kind::Dir).count();
                (4096, 2 + subdirs as u32)
            }
        };
        let m = &node.meta;
        Attr {
            ino,
            kind: node.kind(),
            size,
            perm: m.perm,
            nlink,
            uid: m.uid,
            gid: m.gid,
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            crtime: m.crtime,
        }
    }

    fn attr(&self, ino: Ino) -> Result<Attr> {
        Ok(Self::attr_of(ino, self.inode(ino)?))
    }

    /// Attributes regardless of the power state (powerfs lets `stat` of the
    /// mount root work while OFF, so the control file stays reachable).
    pub fn peek_attr(&self, ino: Ino) -> Option<Attr> {
        self.attr(ino).ok()
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        self.check_on()?;
        let child = *self.dir(parent)?.entries.get(name).ok_or(Errno::ENOENT)?;
        self.attr(child.ino)
    }

    pub fn getattr(&self, ino: Ino, fh: Option<Fh>) -> Result<Attr> {
        self.check_on()?;
        if let Some(fh) = fh {
            self.check_handle(fh, ino)?;
        }
        self.attr(ino)
    }

    pub fn setattr(&mut self, ino: Ino, fh: Option<Fh>, set: &SetAttr) -> Result<Attr> {
        self.check_on()?;
        if let Some(fh) = fh {
            self.check_handle(fh, ino)?;
        }
        let node = self.inode_mut(ino)?;
        let now = SystemTime::now();
        if let Some(size) = set.size {
            match &mut node.body {
                Body::File(f) => resize_file(f, size)?,
                Body::Dir(_) => return Err(Errno::EISDIR),
            }
            node.meta.mtime = now;
        }
        if let Some(mode) = set.mode {
            node.meta.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = set.uid {
            node.meta.uid = uid;
        }
        if let Some(gid) = set.gid {
            node.meta.gid = gid;
        }
        if let Some(atime) = set.atime {
            node.meta.atime = atime;
        }
        if let Some(mtime) = set.mtime {
            node.meta.mtime = mtime;
        }
        node.meta.ctime = now;
        self.attr(ino)
    }

    /// Creates an empty regular file (not opened). `perm` is the final
    /// permission bits (umask already applied).
    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.new_inode(parent, name, Kind::File, perm, uid, gid)
    }

    pub fn mkdir(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.new_inode(parent, name, Kind::Dir, perm, uid, gid)
    }

    fn new_inode(
        &mut self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.check_on()?;
        check_name(name)?;
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let meta = new_meta((perm & 0o7777) as u16, uid, gid);
        let body = match kind {
            // The durable state of a new inode is "empty": if its directory
            // entry becomes durable but the inode itself is never synced, an
            // empty file (or directory) is what survives.
            Kind::File => Body::File(FileBody {
                data: Vec::new(),
                durable: Vec::new(),
                dirty: RangeSet::default(),
            }),
            Kind::Dir => Body::Dir(DirBody {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                parent,
            }),
        };
        self.inodes.insert(
            ino,
            Inode {
                body,
                meta,
                durable_meta: meta,
                cur_links: 1,
                dur_links: 0,
                open: 0,
            },
        );
        let pnode = self.inode_mut(parent)?;
        pnode.meta.mtime = meta.mtime;
        pnode.meta.ctime = meta.ctime;
        if let Body::Dir(d) = &mut pnode.body {
            d.entries.insert(name.to_owned(), Child { ino, kind });
        }
        self.attr(ino)
    }

    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove_entry(parent, name, Kind::File)
    }

    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove_entry(parent, name, Kind::Dir)
    }

    fn remove_entry(&mut self, parent: Ino, name: &OsStr, expect: Kind) -> Result<()> {
        self.check_on()?;
        let child = *self.dir(parent)?.entries.get(name).ok_or(Errno::ENOENT)?;
        match (expect, child.kind) {
            (Kind::File, Kind::Dir) => return Err(Errno::EISDIR),
            (Kind::Dir, Kind::File) => return Err(Errno::ENOTDIR),
            (Kind::Dir, Kind::Dir) => {
                if !self.dir(child.ino)?.entries.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            (Kind::File, Kind::File) => {}
        }
        let now = SystemTime::now();
        let pnode = self.inode_mut(parent)?;
        pnode.meta.mtime = now;
        pnode.meta.ctime = now;
        if let Body::Dir(d) = &mut pnode.body {
            d.entries.remove(name);
        }
        if let Ok(node) = self.inode_mut(child.ino) {
            node.cur_links = node.cur_links.saturating_sub(1);
            node.meta.ctime = now;
        }
        self.maybe_free(child.ino);
        Ok(())
    }

    /// `rename(2)`; with `noreplace`, `renameat2(RENAME_NOREPLACE)`.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        noreplace: bool,
    ) -> Result<()> {
        self.check_on()?;
        check_name(newname)?;
        let src = *self.dir(parent)?.entries.get(name).ok_or(Errno::ENOENT)?;
        let dst = self.dir(newparent)?.entries.get(newname).copied();
        if src.kind == Kind::Dir {
            // Refuse to move a directory below itself: walk up from the target
            // (checked first, as Linux does).
            let mut at = newparent;
            // Bounded: parent pointers form a tree, but never loop forever on a bug.
            for _ in 0..=self.inodes.len() {
                if at == src.ino {
                    return Err(Errno::EINVAL);
                }
                if at == ROOT_INO {
                    break;
                }
                at = self.dir(at)?.parent;
            }
        }
        if let Some(dst) = dst {
            if noreplace {
                return Err(Errno::EEXIST);
            }
            if dst.ino == src.ino {
                // Same inode under both names (or the very same entry): POSIX
                // says do nothing and succeed.
                return Ok(());
            }
            match (src.kind, dst.kind) {
                (Kind::File, Kind::Dir) => return Err(Errno::EISDIR),
                (Kind::Dir, Kind::File) => return Err(Errno::ENOTDIR),
                (Kind::Dir, Kind::Dir) => {
                    if !self.dir(dst.ino)?.entries.is_empty() {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                (Kind::File, Kind::File) => {}
            }
        }
        let now = SystemTime::now();
        for p in [parent, newparent] {
            let pnode = self.inode_mut(p)?;
            pnode.meta.mtime = now;
            pnode.meta.ctime = now;
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(newparent)?
            .entries
            .insert(newname.to_owned(), src);
        let node = self.inode_mut(src.ino)?;
        node.meta.ctime = now;
        if let Body::Dir(d) = &mut node.body {
            d.parent = newparent;
        }
        if let Some(dst) = dst {
            if let Ok(old) = self.inode_mut(dst.ino) {
                old.cur_links = old.cur_links.saturating_sub(1);
                old.meta.ctime = now;
            }
            self.maybe_free(dst.ino);
        }
        Ok(())
    }

    /// Opens a regular file.
    pub fn open(&mut self, ino: Ino) -> Result<Fh> {
        self.open_kind(ino, Kind::File)
    }

    pub fn opendir(&mut self, ino: Ino) -> Result<Fh> {
        self.open_kind(ino, Kind::Dir)
    }

    fn open_kind(&mut self, ino: Ino, kind: Kind) -> Result<Fh> {
        self.check_on()?;
        let node = self.inode_mut(ino)?;
        match (kind, node.kind()) {
            (Kind::File, Kind::Dir) => return Err(Errno::EISDIR),
            (Kind::Dir, Kind::File) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        node.open += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                epoch: self.epoch,
            },
        );
        Ok(fh)
    }

    /// Forgets a handle. Works in any power state and for stale handles (the
    /// kernel releases every handle exactly once, and its answer is ignored).
    pub fn release(&mut self, fh: Fh) {
        let Some(handle) = self.handles.remove(&fh) else {
            return;
        };
        if handle.epoch != self.epoch {
            // Opened before a cut: the cut already reset open counts.
            return;
        }
        if let Some(node) = self.inodes.get_mut(&handle.ino) {
            node.open = node.open.saturating_sub(1);
        }
        self.maybe_free(handle.ino);
    }

    /// Checks that a handle is usable (for `flush`).
    pub fn check(&self, fh: Fh, ino: Ino) -> Result<()> {
        self.check_on()?;
        self.check_handle(fh, ino)
    }

    fn file(&self, ino: Ino) -> Result<&FileBody> {
        match &self.inode(ino)?.body {
            Body::File(f) => Ok(f),
            Body::Dir(_) => Err(Errno::EISDIR),
        }
    }

    pub fn read(&self, fh: Fh, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.check_on()?;
        self.check_handle(fh, ino)?;
        let data = &self.file(ino)?.data;
        let len = data.len() as u64;
        if offset >= len {
            return Ok(Vec::new());
        }
        let end = len.min(offset.saturating_add(u64::from(size)));
        Ok(data[offset as usize..end as usize].to_vec())
    }

    /// Writes at `offset`; returns the number of bytes written (all of them).
    pub fn write(&mut self, fh: Fh, ino: Ino, offset: u64, buf: &[u8]) -> Result<usize> {
        self.check_on()?;
        self.check_handle(fh, ino)?;
        let end = offset.checked_add(buf.len() as u64).ok_or(Errno::EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let node = self.inode_mut(ino)?;
        let Body::File(f) = &mut node.body else {
            return Err(Errno::EISDIR);
        };
        let old_len = f.data.len() as u64;
        if end > old_len {
            f.data.resize(end as usize, 0);
        }
        f.data[offset as usize..end as usize].copy_from_slice(buf);
        // Writing past the end also creates a zero-filled gap [old_len, offset).
        f.dirty.insert(offset.min(old_len), end);
        let now = SystemTime::now();
        node.meta.mtime = now;
        node.meta.ctime = now;
        self.stats.bytes_written += buf.len() as u64;
        Ok(buf.len())
    }

    /// A write on a handle opened with O_SYNC or O_DSYNC: the data is durable
    /// when the write returns.
    pub fn write_sync(&mut self, fh: Fh, ino: Ino, offset: u64, buf: &[u8]) -> Result<usize> {
        let n = self.write(fh, ino, offset, buf)?;
        self.sync_file(ino)?;
        self.stats.sync_writes += 1;
        Ok(n)
    }

    /// `fsync` and `fdatasync`: both make the file's data, size and attributes
    /// durable (and nothing else: not its directory entry).
    pub fn fsync(&mut self, fh: Fh, ino: Ino) -> Result<()> {
        self.check_on()?;
        self.check_handle(fh, ino)?;
        match self.inode(ino)?.kind() {
            Kind::File => self.sync_file(ino)?,
            Kind::Dir => self.sync_dir(ino)?,
        }
        self.stats.fsyncs += 1;
        Ok(())
    }

    fn sync_file(&mut self, ino: Ino) -> Result<()> {
        let node = self.inode_mut(ino)?;
        let Body::File(f) = &mut node.body else {
            return Err(Errno::EISDIR);
        };
        let len = f.data.len() as u64;
        // Every byte at or past the old durable size is dirty (invariant), so
        // after the copy below the durable copy equals the current data.
        f.durable.resize(len as usize, 0);
        for (s, e) in f.dirty.iter_below(len) {
            f.durable[s as usize..e as usize].copy_from_slice(&f.data[s as usize..e as usize]);
        }
        f.dirty.clear();
        if f.durable.capacity() > 2 * f.durable.len() + 4096 {
            f.durable.shrink_to_fit();
        }
        node.durable_meta = node.meta;
        Ok(())
    }

    /// `fsync` on a directory handle: makes this directory's current entries
    /// (and attributes) durable.
    pub fn fsyncdir(&mut self, fh: Fh, ino: Ino) -> Result<()> {
        self.check_on()?;
        self.check_handle(fh, ino)?;
        self.sync_dir(ino)?;
        self.stats.fsyncdirs += 1;
        Ok(())
    }

    fn sync_dir(&mut self, ino: Ino) -> Result<()> {
        let node = self.inode_mut(ino)?;
        node.durable_meta = node.meta;
        let Body::Dir(d) = &mut node.body else {
            return Err(Errno::ENOTDIR);
        };
        let old = std::mem::replace(&mut d.durable, d.entries.clone());
        let new: Vec<Ino> = d.durable.values().map(|c| c.ino).collect();
        for child in new {
            if let Some(n) = self.inodes.get_mut(&child) {
                n.dur_links += 1;
            }
        }
        for child in old.values() {
            if let Some(n) = self.inodes.get_mut(&child.ino) {
                n.dur_links = n.dur_links.saturating_sub(1);
            }
            self.maybe_free(child.ino);
        }
        Ok(())
    }

    /// Entries from cookie `offset` on, starting with `.` and `..`.
    pub fn readdir(&self, fh: Fh, ino: Ino, offset: u64) -> Result<Vec<DirEntry>> {
        self.check_on()?;
        self.check_handle(fh, ino)?;
        let d = self.dir(ino)?;
        let dots = [(ino, "."), (d.parent, "..")]
            .into_iter()
            .map(|(i, n)| (i, Kind::Dir, OsStr::new(n)));
        let children = d
            .entries
            .iter()
            .map(|(n, c)| (c.ino, c.kind, n.as_os_str()));
        Ok(dots
            .chain(children)
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .map(|(i, (ino, kind, name))| DirEntry {
                ino,
                kind,
                name: name.to_owned(),
                offset: i as u64 + 1,
            })
            .collect())
    }

    /// `fallocate` mode 0: makes the file at least `offset + len` bytes long
    /// (new bytes are zero). Nothing to reserve in memory beyond that.
    pub fn fallocate(&mut self, fh: Fh, ino: Ino, offset: u64, len: u64) -> Result<()> {
        self.check_on()?;
        self.check_handle(fh, ino)?;
        let end = offset.checked_add(len).ok_or(Errno::EFBIG)?;
        let node = self.inode_mut(ino)?;
        let Body::File(f) = &mut node.body else {
            return Err(Errno::EISDIR);
        };
        if end > f.data.len() as u64 {
            resize_file(f, end)?;
            let now = SystemTime::now();
            node.meta.mtime = now;
            node.meta.ctime = now;
        }
        Ok(())
    }

    /// `access(2)`: checks the permission bits for `uid:gid` (root may do
    /// anything but execute a file with no execute bit).
    pub fn access(&self, ino: Ino, mask: i32, uid: u32, gid: u32) -> Result<()> {
        self.check_on()?;
        let node = self.inode(ino)?;
        if mask == libc::F_OK {
            return Ok(());
        }
        let perm = u32::from(node.meta.perm);
        let want_x = mask & libc::X_OK != 0;
        if uid == 0 {
            if want_x && node.kind() == Kind::File && perm & 0o111 == 0 {
                return Err(Errno::EACCES);
            }
            return Ok(());
        }
        let bits = if uid == node.meta.uid {
            perm >> 6
        } else if gid == node.meta.gid {
            perm >> 3
        } else {
            perm
        } & 7;
        let mut need = 0;
        if mask & libc::R_OK != 0 {
            need |= 4;
        }
        if mask & libc::W_OK != 0 {
            need |= 2;
        }
        if want_x {
            need |= 1;
        }
        if bits & need == need {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// Current bytes and inodes in use, for `statfs`.
    pub fn usage(&self) -> Result<Usage> {
        self.check_on()?;
        let bytes = self
            .inodes
            .values()
            .map(|n| match &n.body {
                Body::File(f) => f.data.len() as u64,
                Body::Dir(_) => 0,
            })
            .sum();
        Ok(Usage {
            bytes,
            inodes: self.inodes.len() as u64,
        })
    }

    /// Drops an inode nothing refers to any more: no current entry, no durable
    /// entry (it could come back after a cut) and no open handle. Freeing a
    /// directory releases the references its entries held, so this cascades.
    fn maybe_free(&mut self, ino: Ino) {
        let mut work = vec![ino];
        while let Some(ino) = work.pop() {
            if ino == ROOT_INO {
                continue;
            }
            let unreferenced = self
                .inodes
                .get(&ino)
                .is_some_and(|n| n.cur_links == 0 && n.dur_links == 0 && n.open == 0);
            if !unreferenced {
                continue;
            }
            let Some(node) = self.inodes.remove(&ino) else {
                continue;
            };
            if let Body::Dir(d) = node.body {
                for child in d.durable.values() {
                    if let Some(n) = self.inodes.get_mut(&child.ino) {
                        n.dur_links = n.dur_links.saturating_sub(1);
                        work.push(child.ino);
                    }
                }
                for child in d.entries.values() {
                    if let Some(n) = self.inodes.get_mut(&child.ino) {
                        n.cur_links = n.cur_links.saturating_sub(1);
                        work.push(child.ino);
                    }
                }
            }
        }
    }

    /// Power cut: everything not durable is lost and the power goes OFF.
    ///
    /// Every inode's current state becomes its durable state; what is not
    /// reachable from the root through durable entries vanishes; every open
    /// handle becomes stale. Cutting while already OFF does nothing.
    pub fn cut(&mut self) -> CutStats {
        if self.power == Power::Off {
            return CutStats::default();
        }
        let mut cs = CutStats::default();
        let before = self.inodes.len() as u64;

        for node in self.inodes.values_mut() {
            match &mut node.body {
                Body::File(f) => {
                    let dirty = f.dirty.len_below(f.data.len() as u64);
                    cs.dropped_bytes += dirty;
                    if dirty > 0
                        || f.data.len() != f.durable.len()
                        || node.meta != node.durable_meta
                    {
                        cs.files_changed += 1;
                    }
                    // Restore from the durable copy only what may differ: bytes
                    // past the shorter of the two sizes, and the dirty ranges.
                    let keep = f.data.len().min(f.durable.len());
                    f.data.truncate(keep);
                    f.data.extend_from_slice(&f.durable[keep..]);
                    for (s, e) in f.dirty.iter_below(keep as u64) {
                        f.data[s as usize..e as usize]
                            .copy_from_slice(&f.durable[s as usize..e as usize]);
                    }
                    f.dirty.clear();
                }
                Body::Dir(d) => {
                    cs.entries_dropped += d
                        .entries
                        .iter()
                        .filter(|(n, c)| d.durable.get(*n) != Some(c))
                        .count() as u64;
                    cs.entries_restored += d
                        .durable
                        .iter()
                        .filter(|(n, c)| d.entries.get(*n) != Some(c))
                        .count() as u64;
                    d.entries = d.durable.clone();
                }
            }
            node.meta = node.durable_meta;
            node.open = 0;
            node.cur_links = 0;
            node.dur_links = 0;
        }

        // Walk the durable tree from the root (in name order, so the outcome is
        // deterministic). A directory is kept under the first name found: a
        // rename between two directories of which only the target was synced
        // leaves it durably in both, and a directory cannot have two parents.
        let mut reachable: HashSet<Ino> = HashSet::from([ROOT_INO]);
        let mut queue = VecDeque::from([ROOT_INO]);
        let mut links: Vec<Ino> = Vec::new();
        while let Some(dir_ino) = queue.pop_front() {
            let Some(Inode {
                body: Body::Dir(d), ..
            }) = self.inodes.get(&dir_ino)
            else {
                continue;
            };
            let mut drop_names = Vec::new();
            let mut subdirs = Vec::new();
            for (name, child) in &d.entries {
                let exists = self
                    .inodes
                    .get(&child.ino)
                    .is_some_and(|n| n.kind() == child.kind);
                let duplicate_dir = child.kind == Kind::Dir && reachable.contains(&child.ino);
                if !exists || duplicate_dir {
                    drop_names.push(name.clone());
                    continue;
                }
                reachable.insert(child.ino);
                links.push(child.ino);
                if child.kind == Kind::Dir {
                    subdirs.push(child.ino);
                }
            }
            if let Ok(d) = self.dir_mut(dir_ino) {
                for name in &drop_names {
                    d.entries.remove(name);
                    d.durable.remove(name);
                }
            }
            cs.entries_dropped += drop_names.len() as u64;
            for sub in subdirs {
                if let Ok(d) = self.dir_mut(sub) {
                    d.parent = dir_ino;
                }
                queue.push_back(sub);
            }
        }
        self.inodes.retain(|ino, _| reachable.contains(ino));
        for ino in links {
            if let Some(n) = self.inodes.get_mut(&ino) {
                n.cur_links += 1;
                n.dur_links += 1;
            }
        }
        if let Some(root) = self.inodes.get_mut(&ROOT_INO) {
            root.cur_links = 1;
            root.dur_links = 1;
        }
        cs.inodes_vanished = before - self.inodes.len() as u64;

        self.epoch += 1;
        self.power = Power::Off;
        self.stats.cuts += 1;
        self.stats.last_cut = cs;
        cs
    }

    /// Power back on, serving the durable state. Does nothing if already ON.
    pub fn power_on(&mut self) {
        self.power = Power::On;
    }

    /// `cut` then `power_on`.
    pub fn cycle(&mut self) -> CutStats {
        let cs = self.cut();
        self.power_on();
        cs
    }

    /// The durable contents of a file (for tests and diagnostics).
    pub fn durable_data(&self, ino: Ino) -> Option<&[u8]> {
        match &self.inodes.get(&ino)?.body {
            Body::File(f) => Some(&f.durable),
            Body::Dir(_) => None,
        }
    }

    /// Number of inodes held, including unlinked ones kept for open handles or
    /// durable entries.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// Checks the internal invariants; panics with a description if one is
    /// broken. Cheap enough for tests, not meant for production paths.
    pub fn check_invariants(&self) {
        let mut cur: HashMap<Ino, u32> = HashMap::new();
        let mut dur: HashMap<Ino, u32> = HashMap::new();
        let mut open: HashMap<Ino, u32> = HashMap::new();
        for node in self.inodes.values() {
            match &node.body {
                Body::Dir(d) => {
                    for c in d.entries.values() {
                        *cur.entry(c.ino).or_default() += 1;
                        let n = self
                            .inodes
                            .get(&c.ino)
                            .expect("current entry names a missing inode");
                        assert_eq!(n.kind(), c.kind, "entry kind mismatch");
                    }
                    for c in d.durable.values() {
                        *dur.entry(c.ino).or_default() += 1;
                        assert!(
                            self.inodes.contains_key(&c.ino),
                            "durable entry names a missing inode"
                        );
                    }
                }
                Body::File(f) => {
                    let len = f.data.len();
                    let mut dirty = vec![false; len];
                    for (s, e) in f.dirty.iter_below(len as u64) {
                        dirty[s as usize..e as usize].fill(true);
                    }
                    for (p, d) in dirty.iter().enumerate() {
                        if !d {
                            assert!(
                                p < f.durable.len() && f.data[p] == f.durable[p],
                                "clean byte {p} differs from durable"
                            );
                        }
                    }
                }
            }
        }
        for h in self.handles.values() {
            if h.epoch == self.epoch {
                *open.entry(h.ino).or_default() += 1;
            }
        }
        for (ino, node) in &self.inodes {
            if *ino == ROOT_INO {
                continue;
            }
            assert_eq!(
                node.cur_links,
                cur.get(ino).copied().unwrap_or(0),
                "cur_links of {ino}"
            );
            assert_eq!(
                node.dur_links,
                dur.get(ino).copied().unwrap_or(0),
                "dur_links of {ino}"
            );
            assert_eq!(
                node.open,
                open.get(ino).copied().unwrap_or(0),
                "open count of {ino}"
            );
            assert!(
                node.cur_links + node.dur_links + node.open > 0,
                "inode {ino} is unreferenced but was not freed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    struct Fx {
        m: Model,
    }

    impl Fx {
        fn new() -> Fx {
            Fx {
                m: Model::new(0, 0),
            }
        }

        fn create(&mut self, parent: Ino, name: &str) -> Ino {
            self.m
                .create(parent, os(name), 0o644, 0, 0)
                .expect("create")
                .ino
        }

        fn mkdir(&mut self, parent: Ino, name: &str) -> Ino {
            self.m
                .mkdir(parent, os(name), 0o755, 0, 0)
                .expect("mkdir")
                .ino
        }

        fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) {
            let fh = self.m.open(ino).expect("open");
            self.m.write(fh, ino, offset, data).expect("write");
            self.m.release(fh);
        }

        fn fsync(&mut self, ino: Ino) {
            let fh = self.m.open(ino).expect("open");
            self.m.fsync(fh, ino).expect("fsync");
            self.m.release(fh);
        }

        fn fsyncdir(&mut self, ino: Ino) {
            let fh = self.m.opendir(ino).expect("opendir");
            self.m.fsyncdir(fh, ino).expect("fsyncdir");
            self.m.release(fh);
        }

        fn truncate(&mut self, ino: Ino, size: u64) {
            let set = SetAttr {
                size: Some(size),
                ..SetAttr::default()
            };
            self.m.setattr(ino, None, &set).expect("truncate");
        }

        fn read_all(&mut self, ino: Ino) -> Vec<u8> {
            let fh = self.m.open(ino).expect("open");
            let data = self.m.read(fh, ino, 0, u32::MAX).expect("read");
            self.m.release(fh);
            data
        }

        fn lookup(&self, parent: Ino, name: &str) -> Result<Attr> {
            self.m.lookup(parent, os(name))
        }

        fn cycle(&mut self) -> CutStats {
            self.m.check_invariants();
            let cs = self.m.cycle();
            self.m.check_invariants();
            cs
        }
    }

    #[test]
    fn range_set_merges_overlapping_and_adjacent_ranges() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.ranges(), vec![(10, 20), (30, 40)]);
        r.insert(20, 25); // adjacent to the first
        assert_eq!(r.ranges(), vec![(10, 25), (30, 40)]);
        r.insert(5, 12);
        assert_eq!(r.ranges(), vec![(5, 25), (30, 40)]);
        r.insert(24, 31);
        assert_eq!(r.ranges(), vec![(5, 40)]);
        r.insert(50, 50); // empty: ignored
        r.insert(45, 60);
        r.insert(0, 100);
        assert_eq!(r.ranges(), vec![(0, 100)]);
        assert_eq!(r.len_below(50), 50);
        r.clear();
        assert!(r.is_empty());
    }

    #[test]
    fn fsynced_write_survives_cut() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.fsyncdir(ROOT_INO);
        fx.write(f, 0, b"hello");
        fx.fsync(f);
        let cs = fx.cycle();
        assert_eq!(cs.dropped_bytes, 0);
        assert_eq!(fx.lookup(ROOT_INO, "f").expect("f survives").ino, f);
        assert_eq!(fx.read_all(f), b"hello");
    }

    #[test]
    fn unsynced_write_is_dropped() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.fsyncdir(ROOT_INO);
        fx.write(f, 0, b"hello");
        fx.fsync(f);
        fx.write(f, 5, b" world");
        let cs = fx.cycle();
        assert_eq!(cs.dropped_bytes, 6);
        assert_eq!(cs.files_changed, 1);
        assert_eq!(fx.read_all(f), b"hello");
    }

    #[test]
    fn partial_overwrite_of_synced_region_reverts() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.fsyncdir(ROOT_INO);
        fx.write(f, 0, b"aaaaaaaaaa");
        fx.fsync(f);
        fx.write(f, 3, b"XYZ");
        assert_eq!(fx.read_all(f), b"aaaXYZaaaa");
        fx.cycle();
        assert_eq!(fx.read_all(f), b"aaaaaaaaaa");
    }

    #[test]
    fn unsynced_truncate_reverts() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.fsyncdir(ROOT_INO);
        fx.write(f, 0, b"0123456789");
        fx.fsync(f);
        fx.truncate(f, 4);
        assert_eq!(fx.read_all(f), b"0123");
        fx.truncate(f, 8); // grows back with zeros
        assert_eq!(fx.read_all(f), b"0123\0\0\0\0");
        fx.cycle();
        assert_eq!(fx.read_all(f), b"0123456789");
    }

    #[test]
    fn synced_truncate_survives() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.fsyncdir(ROOT_INO);
        fx.write(f, 0, b"0123456789");
        fx.fsync(f);
        fx.truncate(f, 3);
        fx.fsync(f);
        fx.cycle();
        assert_eq!(fx.read_all(f), b"012");
    }

    #[test]
    fn fsynced_file_in_unsynced_directory_vanishes() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.write(f, 0, b"data");
        fx.fsync(f);
        let cs = fx.cycle();
        assert_eq!(fx.lookup(ROOT_INO, "f"), Err(Errno::ENOENT));
        assert_eq!(cs.entries_dropped, 1);
        assert_eq!(cs.inodes_vanished, 1);
        assert_eq!(fx.m.getattr(f, None), Err(Errno::ENOENT));
    }

    #[test]
    fn created_and_dir_synced_but_not_file_synced_survives_empty() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.write(f, 0, b"data");
        fx.fsyncdir(ROOT_INO);
        fx.cycle();
        let attr = fx.lookup(ROOT_INO, "f").expect("entry was durable");
        assert_eq!(attr.size, 0);
        assert_eq!(fx.read_all(f), b"");
    }

    #[test]
    fn unsynced_rename_reverts_both_names() {
        let mut fx = Fx::new();
        let a = fx.create(ROOT_INO, "a");
        let b = fx.create(ROOT_INO, "b");
        fx.write(a, 0, b"new");
        fx.write(b, 0, b"old");
        fx.fsync(a);
        fx.fsync(b);
        fx.fsyncdir(ROOT_INO);
        fx.m.rename(ROOT_INO, os("a"), ROOT_INO, os("b"), false)
            .expect("rename");
        assert_eq!(fx.lookup(ROOT_INO, "a"), Err(Errno::ENOENT));
        assert_eq!(fx.lookup(ROOT_INO, "b").expect("b").ino, a);
        fx.m.check_invariants();
        let cs = fx.cycle();
        assert_eq!(cs.entries_dropped, 1); // b -> a
        assert_eq!(cs.entries_restored, 2); // a, b -> b
        assert_eq!(fx.lookup(ROOT_INO, "a").expect("a is back").ino, a);
        assert_eq!(fx.lookup(ROOT_INO, "b").expect("b is back").ino, b);
        assert_eq!(fx.read_all(a), b"new");
        assert_eq!(fx.read_all(b), b"old");
    }

    #[test]
    fn synced_rename_survives_and_frees_the_replaced_file() {
        let mut fx = Fx::new();
        let a = fx.create(ROOT_INO, "a");
        let b = fx.create(ROOT_INO, "b");
        fx.fsyncdir(ROOT_INO);
        fx.m.rename(ROOT_INO, os("a"), ROOT_INO, os("b"), false)
            .expect("rename");
        // Until the directory is synced, b's old inode is kept: it could come back.
        assert!(fx.m.getattr(b, None).is_ok());
        fx.fsyncdir(ROOT_INO);
        assert_eq!(fx.m.getattr(b, None), Err(Errno::ENOENT));
        fx.cycle();
        assert_eq!(fx.lookup(ROOT_INO, "b").expect("b").ino, a);
        assert_eq!(fx.lookup(ROOT_INO, "a"), Err(Errno::ENOENT));
    }

    #[test]
    fn rename_across_directories_is_durable_per_directory() {
        let mut fx = Fx::new();
        let d1 = fx.mkdir(ROOT_INO, "d1");
        let d2 = fx.mkdir(ROOT_INO, "d2");
        let f = fx.create(d1, "f");
        fx.fsyncdir(ROOT_INO);
        fx.fsyncdir(d1);
        fx.m.rename(d1, os("f"), d2, os("g"), false)
            .expect("rename");
        // Only the target directory is synced: the file is durably in both.
        fx.fsyncdir(d2);
        fx.cycle();
        assert_eq!(fx.lookup(d1, "f").expect("old name").ino, f);
        assert_eq!(fx.lookup(d2, "g").expect("new name").ino, f);
        assert_eq!(fx.m.getattr(f, None).expect("attr").nlink, 2);
        // Now sync the source too: only the new name remains.
        fx.m.unlink(d1, os("f")).expect("unlink");
        fx.fsyncdir(d1);
        fx.cycle();
        assert_eq!(fx.lookup(d1, "f"), Err(Errno::ENOENT));
        assert_eq!(fx.lookup(d2, "g").expect("new name").ino, f);
    }

    #[test]
    fn directory_renamed_with_only_target_synced_keeps_one_parent() {
        let mut fx = Fx::new();
        let a = fx.mkdir(ROOT_INO, "a");
        let b = fx.mkdir(ROOT_INO, "b");
        let sub = fx.mkdir(a, "sub");
        fx.fsyncdir(ROOT_INO);
        fx.fsyncdir(a);
        fx.m.rename(a, os("sub"), b, os("sub"), false)
            .expect("rename");
        fx.fsyncdir(b);
        let cs = fx.cycle();
        // Walk order is by name: a/sub is found first and kept.
        assert_eq!(fx.lookup(a, "sub").expect("kept").ino, sub);
        assert_eq!(fx.lookup(b, "sub"), Err(Errno::ENOENT));
        assert_eq!(cs.entries_dropped, 1);
    }

    #[test]
    fn unsynced_unlink_brings_file_back() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.write(f, 0, b"keep me");
        fx.fsync(f);
        fx.fsyncdir(ROOT_INO);
        fx.m.unlink(ROOT_INO, os("f")).expect("unlink");
        assert_eq!(fx.lookup(ROOT_INO, "f"), Err(Errno::ENOENT));
        let cs = fx.cycle();
        assert_eq!(cs.entries_restored, 1);
        assert_eq!(fx.lookup(ROOT_INO, "f").expect("back").ino, f);
        assert_eq!(fx.read_all(f), b"keep me");
    }

    #[test]
    fn synced_unlink_frees_the_inode() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.fsyncdir(ROOT_INO);
        fx.m.unlink(ROOT_INO, os("f")).expect("unlink");
        fx.fsyncdir(ROOT_INO);
        assert_eq!(fx.m.inode_count(), 1);
        assert_eq!(fx.m.getattr(f, None), Err(Errno::ENOENT));
        fx.m.check_invariants();
    }

    #[test]
    fn unlinked_open_file_stays_readable_until_released() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        let fh = fx.m.open(f).expect("open");
        fx.m.write(fh, f, 0, b"x").expect("write");
        fx.m.unlink(ROOT_INO, os("f")).expect("unlink");
        assert_eq!(fx.m.getattr(f, Some(fh)).expect("attr").nlink, 0);
        assert_eq!(fx.m.read(fh, f, 0, 10).expect("read"), b"x");
        fx.m.release(fh);
        assert_eq!(fx.m.getattr(f, None), Err(Errno::ENOENT));
        fx.m.check_invariants();
    }

    #[test]
    fn unsynced_mkdir_vanishes_with_its_contents() {
        let mut fx = Fx::new();
        let d = fx.mkdir(ROOT_INO, "d");
        let f = fx.create(d, "f");
        fx.write(f, 0, b"data");
        fx.fsync(f);
        fx.fsyncdir(d); // d's entry for f is durable, but d itself is not in root
        let cs = fx.cycle();
        assert_eq!(fx.lookup(ROOT_INO, "d"), Err(Errno::ENOENT));
        assert_eq!(cs.inodes_vanished, 2);
        assert_eq!(fx.m.inode_count(), 1);
    }

    #[test]
    fn synced_mkdir_survives() {
        let mut fx = Fx::new();
        let d = fx.mkdir(ROOT_INO, "d");
        fx.fsyncdir(ROOT_INO);
        fx.cycle();
        let attr = fx.lookup(ROOT_INO, "d").expect("d");
        assert_eq!((attr.ino, attr.kind), (d, Kind::Dir));
        assert_eq!(fx.m.getattr(ROOT_INO, None).expect("root").nlink, 3);
    }

    #[test]
    fn rmdir_of_unsynced_directory_then_cut_frees_everything() {
        let mut fx = Fx::new();
        let d = fx.mkdir(ROOT_INO, "d");
        let f = fx.create(d, "f");
        fx.fsyncdir(d);
        fx.m.unlink(d, os("f")).expect("unlink");
        fx.m.rmdir(ROOT_INO, os("d")).expect("rmdir");
        // d was never durable in root and has no current entries: freed at once,
        // which also releases its durable reference to f.
        assert_eq!(fx.m.getattr(d, None), Err(Errno::ENOENT));
        assert_eq!(fx.m.getattr(f, None), Err(Errno::ENOENT));
        fx.m.check_invariants();
    }

    #[test]
    fn off_state_fails_everything_with_eio() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.fsyncdir(ROOT_INO);
        fx.m.cut();
        assert_eq!(fx.m.power(), Power::Off);
        assert_eq!(fx.m.lookup(ROOT_INO, os("f")), Err(Errno::EIO));
        assert_eq!(fx.m.getattr(f, None), Err(Errno::EIO));
        assert_eq!(fx.m.open(f), Err(Errno::EIO));
        assert_eq!(fx.m.create(ROOT_INO, os("g"), 0o644, 0, 0), Err(Errno::EIO));
        assert_eq!(fx.m.mkdir(ROOT_INO, os("g"), 0o755, 0, 0), Err(Errno::EIO));
        assert_eq!(fx.m.unlink(ROOT_INO, os("f")), Err(Errno::EIO));
        assert_eq!(
            fx.m.rename(ROOT_INO, os("f"), ROOT_INO, os("g"), false),
            Err(Errno::EIO)
        );
        assert_eq!(fx.m.setattr(f, None, &SetAttr::default()), Err(Errno::EIO));
        assert_eq!(fx.m.access(f, libc::F_OK, 0, 0), Err(Errno::EIO));
        assert_eq!(fx.m.usage(), Err(Errno::EIO));
        assert!(fx.m.peek_attr(ROOT_INO).is_some(), "root stays stat-able");
        // A second cut while OFF changes nothing.
        assert_eq!(fx.m.cut(), CutStats::default());
        assert_eq!(fx.m.stats().cuts, 1);
        fx.m.power_on();
        assert_eq!(fx.lookup(ROOT_INO, "f").expect("f").ino, f);
    }

    #[test]
    fn handles_opened_before_a_cut_are_stale() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        let d = fx.mkdir(ROOT_INO, "d");
        fx.fsyncdir(ROOT_INO);
        let fh = fx.m.open(f).expect("open");
        let dh = fx.m.opendir(d).expect("opendir");
        fx.m.cut();
        // While OFF and after power on, the old handles fail with EIO.
        assert_eq!(fx.m.write(fh, f, 0, b"late"), Err(Errno::EIO));
        fx.m.power_on();
        assert_eq!(fx.m.write(fh, f, 0, b"late"), Err(Errno::EIO));
        assert_eq!(fx.m.read(fh, f, 0, 10), Err(Errno::EIO));
        assert_eq!(fx.m.fsync(fh, f), Err(Errno::EIO));
        assert_eq!(fx.m.check(fh, f), Err(Errno::EIO));
        assert_eq!(fx.m.getattr(f, Some(fh)), Err(Errno::EIO));
        assert_eq!(fx.m.fallocate(fh, f, 0, 10), Err(Errno::EIO));
        assert_eq!(fx.m.readdir(dh, d, 0), Err(Errno::EIO));
        assert_eq!(fx.m.fsyncdir(dh, d), Err(Errno::EIO));
        fx.m.release(fh);
        fx.m.release(dh);
        // New handles work.
        let fh2 = fx.m.open(f).expect("open");
        assert_eq!(fx.m.write(fh2, f, 0, b"ok"), Ok(2));
        fx.m.release(fh2);
        fx.m.check_invariants();
    }

    #[test]
    fn inode_numbers_are_never_reused_across_cuts() {
        let mut fx = Fx::new();
        let a = fx.create(ROOT_INO, "a");
        fx.cycle(); // a vanishes
        let b = fx.create(ROOT_INO, "a");
        assert!(b > a);
    }

    #[test]
    fn counters_track_syncs_and_writes() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.write(f, 0, b"12345");
        fx.fsync(f);
        fx.fsyncdir(ROOT_INO);
        let fh = fx.m.open(f).expect("open");
        fx.m.write_sync(fh, f, 5, b"678").expect("sync write");
        fx.m.release(fh);
        let s = fx.m.stats();
        assert_eq!(
            (s.fsyncs, s.fsyncdirs, s.sync_writes, s.bytes_written),
            (1, 1, 1, 8)
        );
        fx.cycle();
        assert_eq!(fx.read_all(f), b"12345678");
        assert!(
            fx.m.stats()
                .to_string()
                .starts_with("power=on cuts=1 fsyncs=1 ")
        );
    }

    #[test]
    fn attributes_become_durable_with_fsync_only() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.fsyncdir(ROOT_INO);
        let chmod = SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        };
        fx.m.setattr(f, None, &chmod).expect("chmod");
        fx.cycle();
        assert_eq!(fx.m.getattr(f, None).expect("attr").perm, 0o644);
        fx.m.setattr(f, None, &chmod).expect("chmod");
        fx.fsync(f);
        fx.cycle();
        assert_eq!(fx.m.getattr(f, None).expect("attr").perm, 0o600);
    }

    #[test]
    fn namespace_errors_follow_posix() {
        let mut fx = Fx::new();
        let d = fx.mkdir(ROOT_INO, "d");
        let sub = fx.mkdir(d, "sub");
        fx.create(ROOT_INO, "f");
        fx.create(d, "g");
        let m = &mut fx.m;
        assert_eq!(m.create(ROOT_INO, os("f"), 0o644, 0, 0), Err(Errno::EEXIST));
        assert_eq!(m.rmdir(ROOT_INO, os("d")), Err(Errno::ENOTEMPTY));
        assert_eq!(m.unlink(ROOT_INO, os("d")), Err(Errno::EISDIR));
        assert_eq!(m.rmdir(ROOT_INO, os("f")), Err(Errno::ENOTDIR));
        assert_eq!(
            m.rename(ROOT_INO, os("d"), sub, os("x"), false),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            m.rename(ROOT_INO, os("f"), ROOT_INO, os("d"), false),
            Err(Errno::EISDIR)
        );
        assert_eq!(
            m.rename(ROOT_INO, os("d"), d, os("g"), false),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            m.rename(d, os("sub"), ROOT_INO, os("f"), false),
            Err(Errno::ENOTDIR)
        );
        assert_eq!(
            m.rename(ROOT_INO, os("f"), d, os("g"), true),
            Err(Errno::EEXIST)
        );
        assert_eq!(
            m.rename(ROOT_INO, os("nope"), d, os("x"), false),
            Err(Errno::ENOENT)
        );
        assert_eq!(
            m.create(ROOT_INO, os(&"n".repeat(256)), 0o644, 0, 0),
            Err(Errno::ENAMETOOLONG)
        );
        assert_eq!(m.lookup(ROOT_INO, os("nope")), Err(Errno::ENOENT));
        assert_eq!(m.open(d), Err(Errno::EISDIR));
        assert_eq!(m.opendir(sub).map(|_| ()), Ok(()));
        // Moving a directory elsewhere updates its `..`.
        m.rename(d, os("sub"), ROOT_INO, os("sub2"), false)
            .expect("rename dir");
        let dh = m.opendir(sub).expect("opendir");
        let entries = m.readdir(dh, sub, 0).expect("readdir");
        assert_eq!(entries[1].name, os(".."));
        assert_eq!(entries[1].ino, ROOT_INO);
        m.check_invariants();
    }

    #[test]
    fn readdir_lists_dots_then_entries_and_resumes_at_offset() {
        let mut fx = Fx::new();
        fx.create(ROOT_INO, "b");
        fx.create(ROOT_INO, "a");
        let dh = fx.m.opendir(ROOT_INO).expect("opendir");
        let all = fx.m.readdir(dh, ROOT_INO, 0).expect("readdir");
        let names: Vec<_> = all
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [".", "..", "a", "b"]);
        let rest = fx.m.readdir(dh, ROOT_INO, all[2].offset).expect("readdir");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].name, os("b"));
    }

    #[test]
    fn write_past_end_and_fallocate_fill_with_zeros_that_are_synced() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        fx.fsyncdir(ROOT_INO);
        fx.write(f, 4, b"ab");
        let fh = fx.m.open(f).expect("open");
        fx.m.fallocate(fh, f, 0, 10).expect("fallocate");
        fx.m.release(fh);
        assert_eq!(fx.read_all(f), b"\0\0\0\0ab\0\0\0\0");
        fx.fsync(f);
        fx.cycle();
        assert_eq!(fx.read_all(f), b"\0\0\0\0ab\0\0\0\0");
        assert_eq!(fx.m.durable_data(f), Some(&b"\0\0\0\0ab\0\0\0\0"[..]));
    }

    #[test]
    fn oversized_files_fail_with_efbig() {
        let mut fx = Fx::new();
        let f = fx.create(ROOT_INO, "f");
        let fh = fx.m.open(f).expect("open");
        assert_eq!(fx.m.write(fh, f, MAX_FILE_SIZE, b"x"), Err(Errno::EFBIG));
        assert_eq!(fx.m.write(fh, f, u64::MAX, b"x"), Err(Errno::EFBIG));
        let set = SetAttr {
            size: Some(MAX_FILE_SIZE + 1),
            ..SetAttr::default()
        };
        assert_eq!(fx.m.setattr(f, None, &set), Err(Errno::EFBIG));
        fx.m.release(fh);
    }

    #[test]
    fn access_checks_permission_bits() {
        let mut fx = Fx::new();
        let f =
            fx.m.create(ROOT_INO, os("f"), 0o640, 1000, 100)
                .expect("create")
                .ino;
        let m = &fx.m;
        assert_eq!(m.access(f, libc::R_OK | libc::W_OK, 1000, 5), Ok(()));
        assert_eq!(m.access(f, libc::X_OK, 1000, 5), Err(Errno::EACCES));
        assert_eq!(m.access(f, libc::R_OK, 2000, 100), Ok(()));
        assert_eq!(m.access(f, libc::W_OK, 2000, 100), Err(Errno::EACCES));
        assert_eq!(m.access(f, libc::R_OK, 2000, 200), Err(Errno::EACCES));
        assert_eq!(m.access(f, libc::W_OK, 0, 0), Ok(()));
        assert_eq!(m.access(f, libc::X_OK, 0, 0), Err(Errno::EACCES));
        assert_eq!(m.access(f, libc::F_OK, 2000, 200), Ok(()));
    }

    /// xorshift64*: a tiny deterministic generator, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The naive reference: fsync copies the whole file, a cut copies it back.
    #[derive(Default)]
    struct Reference {
        current: Vec<u8>,
        durable: Vec<u8>,
    }

    #[test]
    fn dirty_range_tracking_matches_whole_file_copy_reference() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut fx = Fx::new();
            let f = fx.create(ROOT_INO, "f");
            fx.fsyncdir(ROOT_INO);
            let mut fh = fx.m.open(f).expect("open");
            let mut reference = Reference::default();
            // Small sizes so writes, truncates and gaps overlap a lot.
            let max = 1 + rng.below(300);
            for step in 0..400 {
                match rng.below(10) {
                    0..=4 => {
                        let off = rng.below(max);
                        let len = 1 + rng.below(max / 4 + 1);
                        let byte = (rng.next() & 0xff) as u8;
                        let buf: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                        fx.m.write(fh, f, off, &buf).expect("write");
                        let end = (off + len) as usize;
                        if reference.current.len() < end {
                            reference.current.resize(end, 0);
                        }
                        reference.current[off as usize..end].copy_from_slice(&buf);
                    }
                    5 => {
                        let size = rng.below(max + max / 2);
                        let set = SetAttr {
                            size: Some(size),
                            ..SetAttr::default()
                        };
                        fx.m.setattr(f, Some(fh), &set).expect("truncate");
                        reference.current.resize(size as usize, 0);
                    }
                    6 => {
                        let off = rng.below(max);
                        let len = 1 + rng.below(max / 2 + 1);
                        fx.m.fallocate(fh, f, off, len).expect("fallocate");
                        let end = (off + len) as usize;
                        if reference.current.len() < end {
                            reference.current.resize(end, 0);
                        }
                    }
                    7 | 8 => {
                        fx.m.fsync(fh, f).expect("fsync");
                        reference.durable = reference.current.clone();
                    }
                    _ => {
                        fx.m.check_invariants();
                        fx.m.cycle();
                        fh = fx.m.open(f).expect("open after cut");
                        reference.current = reference.durable.clone();
                    }
                }
                let got = fx.m.read(fh, f, 0, u32::MAX).expect("read");
                assert_eq!(
                    got, reference.current,
                    "seed {seed} step {step}: current differs"
                );
                assert_eq!(
                    fx.m.durable_data(f).expect("file"),
                    &reference.durable[..],
                    "seed {seed} step {step}: durable differs"
                );
            }
            fx.m.check_invariants();
        }
    }

    #[test]
    fn random_namespace_operations_keep_invariants() {
        // Random creates/renames/unlinks/syncs/cuts over a few names in two
        // directories; after each step the reference counts must be exact and
        // nothing unreferenced may linger.
        let names = ["a", "b", "c", "d"];
        for seed in 1..=30u64 {
            let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
            let mut fx = Fx::new();
            let dirs = [ROOT_INO, fx.mkdir(ROOT_INO, "sub")];
            fx.fsyncdir(ROOT_INO);
            for _ in 0..300 {
                let d = dirs[rng.below(2) as usize];
                let name = os(names[rng.below(4) as usize]);
                let m = &mut fx.m;
                match rng.below(9) {
                    0 | 1 => {
                        let _ = m.create(d, name, 0o644, 0, 0);
                    }
                    2 => {
                        let _ = m.mkdir(d, name, 0o755, 0, 0);
                    }
                    3 => {
                        let _ = m.unlink(d, name);
                    }
                    4 => {
                        let _ = m.rmdir(d, name);
                    }
                    5 => {
                        let d2 = dirs[rng.below(2) as usize];
                        let n2 = os(names[rng.below(4) as usize]);
                        let _ = m.rename(d, name, d2, n2, rng.below(2) == 0);
                    }
                    6 => {
                        if let Ok(fh) = m.opendir(d) {
                            m.fsyncdir(fh, d).expect("fsyncdir");
                            m.release(fh);
                        }
                    }
                    7 => {
                        if let Ok(a) = m.lookup(d, name)
                            && a.kind == Kind::File
                        {
                            let fh = m.open(a.ino).expect("open");
                            m.write(fh, a.ino, 0, b"x").expect("write");
                            if rng.below(2) == 0 {
                                m.fsync(fh, a.ino).expect("fsync");
                            }
                            // Sometimes keep the handle open across the next cut.
                            if rng.below(3) != 0 {
                                m.release(fh);
                            }
                        }
                    }
                    _ => {
                        m.cycle();
                    }
                }
                fx.m.check_invariants();
            }
        }
    }
}
