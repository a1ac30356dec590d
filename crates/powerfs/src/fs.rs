//! The FUSE adapter: translates `fuser` requests into calls on the [`Model`]
//! and serves the control file.
//!
//! Every reply uses a TTL of zero and every open uses `FOPEN_DIRECT_IO`, so the
//! kernel neither caches names/attributes nor serves data from its page cache:
//! after a power cut, nothing the kernel remembers can resurrect lost state,
//! and every write reaches the model (no write-back cache hides data from it).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::model::{self, Attr, Fh, Ino, Kind, Model, RESERVED_INO, ROOT_INO, SetAttr, Stats};

/// Name of the control file at the mount root.
pub const CONTROL_NAME: &str = ".powerfs";
const CONTROL_INO: Ino = RESERVED_INO;
/// Control-file handles live in their own number space (top bit set) so they
/// can never be confused with model handles.
const CONTROL_FH_BIT: u64 = 1 << 63;

/// Zero: the kernel must ask us again every time (see the module docs).
const TTL: Duration = Duration::ZERO;

/// How often held syncs are checked for callers that were killed.
const KILLED_POLL: Duration = Duration::from_millis(10);

/// An action requested through the control file or the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Cut,
    On,
    Cycle,
    /// Hold every sync from now on (see [`crate::Mount::hold_syncs`]).
    Hold,
    /// Stop holding: perform the held syncs in arrival order and answer them.
    Release,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Cut => "cut",
            Action::On => "on",
            Action::Cycle => "cycle",
            Action::Hold => "hold",
            Action::Release => "release",
        }
    }

    fn parse(buf: &[u8]) -> Option<Action> {
        // `echo cut > .powerfs` writes "cut\n": tolerate trailing whitespace.
        match buf.trim_ascii_end() {
            b"cut" => Some(Action::Cut),
            b"on" => Some(Action::On),
            b"cycle" => Some(Action::Cycle),
            b"hold" => Some(Action::Hold),
            b"release" => Some(Action::Release),
            _ => None,
        }
    }
}

/// Which request a held sync answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SyncOp {
    /// FUSE_FSYNC: fsync or fdatasync of a file (or of a directory opened
    /// as a file, which the model syncs as a directory).
    Fsync,
    /// FUSE_FSYNCDIR.
    Fsyncdir,
}

/// A sync that arrived while syncs were held: not answered yet. Its caller
/// is blocked in the kernel until `reply` is sent; the session thread is not.
#[derive(Debug)]
struct HeldSync {
    op: SyncOp,
    ino: Ino,
    fh: Fh,
    /// The calling thread (as the kernel names it in our pid namespace; 0
    /// if it has no number there).
    pid: u32,
    reply: ReplyEmpty,
}

impl HeldSync {
    /// Performs the sync on what is current now.
    fn perform(&self, model: &mut Model) -> model::Result<()> {
        match self.op {
            SyncOp::Fsync => model.fsync(self.fh, self.ino),
            SyncOp::Fsyncdir => model.fsyncdir(self.fh, self.ino),
        }
    }
}

/// Answers a sync request with the result of the model.
fn answer(reply: ReplyEmpty, result: model::Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// State shared by the FUSE session thread and the [`crate::Mount`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Log control actions to stderr (the `powerfs` binary turns this on).
    pub(crate) verbose: AtomicBool,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

#[derive(Debug)]
struct State {
    model: Model,
    /// Open control-file handles -> the status line captured at open, so that
    /// a reader sees one consistent line even if it reads in pieces.
    control: HashMap<u64, Vec<u8>>,
    next_control_fh: u64,
    /// Syncs are being held: they are parked in `held`, not answered.
    hold: bool,
    /// Held syncs in arrival order.
    held: VecDeque<HeldSync>,
    /// Syncs held so far (for [`Stats::held_syncs`]).
    held_count: u64,
    /// The thread that answers held syncs of killed callers is running.
    watcher: bool,
}

impl State {
    /// Whether a sync is to be held: only while holding, and not one that
    /// fails anyway (power off, stale or bad handle): `Err` is its answer.
    fn must_hold(&self, fh: Fh, ino: Ino) -> model::Result<bool> {
        if !self.hold {
            return Ok(false);
        }
        self.model.check(fh, ino)?;
        Ok(true)
    }

    /// Answers every held sync with EIO, without syncing.
    fn fail_held(&mut self) {
        for held in self.held.drain(..) {
            held.reply.error(Errno::EIO);
        }
    }
}

impl Shared {
    pub(crate) fn new(uid: u32, gid: u32) -> Shared {
        Shared {
            state: Mutex::new(State {
                model: Model::new(uid, gid),
                control: HashMap::new(),
                next_control_fh: 0,
                hold: false,
                held: VecDeque::new(),
                held_count: 0,
                watcher: false,
            }),
            verbose: AtomicBool::new(false),
            uid,
            gid,
            started: SystemTime::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the model half-updated in
        // a way that matters more than refusing service would, so keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn act(self: &Arc<Self>, action: Action) {
        let mut st = self.lock();
        match action {
            Action::Cut => {
                st.model.cut();
                // What they would have synced is gone with the rest.
                st.fail_held();
            }
            Action::On => st.model.power_on(),
            Action::Cycle => {
                st.model.cut();
                st.fail_held();
                st.model.power_on();
            }
            Action::Hold => {
                st.hold = true;
                if !st.watcher {
                    st.watcher = Self::spawn_watcher(self);
                }
            }
            Action::Release => {
                st.hold = false;
                // In arrival order, each on what is current now; answered
                // under the lock, so no later request overtakes them.
                while let Some(held) = st.held.pop_front() {
                    let result = held.perform(&mut st.model);
                    answer(held.reply, result);
                }
            }
        }
        if self.verbose.load(Ordering::Relaxed) {
            eprintln!("powerfs: {} done: {}", action.name(), stats_of(&st));
        }
    }

    /// Fails every held sync and stops holding (before an unmount: nothing
    /// may stay blocked on a filesystem that goes away).
    pub(crate) fn drop_held(&self) {
        let mut st = self.lock();
        st.hold = false;
        st.fail_held();
    }

    /// Starts the thread that answers held syncs whose caller was killed;
    /// false if it cannot start (then such a caller stays blocked until a
    /// release or a cut, as it would without the thread).
    ///
    /// Why: the kernel waits for the answer to a FUSE request it has passed
    /// to us without letting even SIGKILL interrupt the wait (it sends a
    /// FUSE_INTERRUPT, which fuser does not pass on). A process killed in a
    /// held sync would never exit, and whoever waits for it (a test harness
    /// reaping a node it killed before cutting the power) would hang. On a
    /// real machine a killed process leaves its fsync; here its held sync
    /// is answered EIO without syncing, as a cut would.
    fn spawn_watcher(this: &Arc<Self>) -> bool {
        let weak: Weak<Shared> = Arc::downgrade(this);
        std::thread::Builder::new()
            .name("powerfs-held".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(KILLED_POLL);
                    let Some(shared) = weak.upgrade() else {
                        return;
                    };
                    let mut st = shared.lock();
                    if !st.hold && st.held.is_empty() {
                        st.watcher = false;
                        return;
                    }
                    let mut i = 0;
                    while i < st.held.len() {
                        if caller_killed(st.held[i].pid)
                            && let Some(held) = st.held.remove(i)
                        {
                            held.reply.error(Errno::EIO);
                        } else {
                            i += 1;
                        }
                    }
                }
            })
            .is_ok()
    }

    pub(crate) fn stats(&self) -> Stats {
        stats_of(&self.lock())
    }

    /// A sync request: performed and answered now, or, while syncs are
    /// held, parked with its reply (this returns at once either way, so the
    /// session goes on serving other requests).
    fn sync(&self, req: &Request, op: SyncOp, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
        let mut st = self.lock();
        let held = HeldSync {
            op,
            ino: ino.0,
            fh: fh.0,
            pid: req.pid(),
            reply,
        };
        match st.must_hold(held.fh, held.ino) {
            Ok(true) => {
                st.held_count += 1;
                st.held.push_back(held);
            }
            Ok(false) => {
                let result = held.perform(&mut st.model);
                answer(held.reply, result);
            }
            Err(e) => held.reply.error(errno(e)),
        }
    }

    fn control_attr(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo(CONTROL_INO),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: FileType::RegularFile,
            perm: 0o600,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

fn stats_of(st: &State) -> Stats {
    let mut stats = st.model.stats();
    stats.holding = st.hold;
    stats.held_syncs = st.held_count;
    stats.waiting_syncs = st.held.len() as u64;
    stats
}

/// Whether thread `pid` has a SIGKILL pending (it is being killed, or its
/// process is exiting), read from /proc. Unknown (pid 0, or no such entry:
/// another pid namespace) counts as not killed.
fn caller_killed(pid: u32) -> bool {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    if pid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status.lines().any(|line| {
        line.strip_prefix("SigPnd:")
            .or_else(|| line.strip_prefix("ShdPnd:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|mask| mask & SIGKILL_BIT != 0)
    })
}

/// The `fuser::Filesystem` implementation.
#[derive(Debug)]
pub(crate) struct PowerFs {
    shared: Arc<Shared>,
}

impl PowerFs {
    pub(crate) fn new(shared: Arc<Shared>) -> PowerFs {
        PowerFs { shared }
    }
}

fn errno(e: model::Errno) -> Errno {
    Errno::from_i32(e.0)
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.crtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

fn is_control(parent: INodeNo, name: &OsStr) -> bool {
    parent.0 == ROOT_INO && name == CONTROL_NAME
}

fn is_control_fh(fh: FileHandle) -> bool {
    fh.0 & CONTROL_FH_BIT != 0
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if is_control(parent, name) {
            return reply.entry(&TTL, &self.shared.control_attr(), Generation(0));
        }
        match self.shared.lock().model.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 == CONTROL_INO {
            return reply.attr(&TTL, &self.shared.control_attr());
        }
        let st = self.shared.lock();
        let fh = fh.filter(|fh| !is_control_fh(*fh)).map(|fh| fh.0);
        match st.model.getattr(ino.0, fh) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            // The mount root stays stat-able while OFF so tools can still find
            // the control file and check that the mount is alive.
            Err(_)
                if ino.0 == ROOT_INO && fh.is_none() && st.model.power() == model::Power::Off =>
            {
                match st.model.peek_attr(ROOT_INO) {
                    Some(a) => reply.attr(&TTL, &file_attr(&a)),
                    None => reply.error(Errno::EIO),
                }
            }
            Err(e) => reply.error(errno(e)),
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
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino.0 == CONTROL_INO {
            // `echo cut > .powerfs` opens with O_TRUNC, which arrives here as
            // a truncate to 0: accept and ignore any attribute change.
            return reply.attr(&TTL, &self.shared.control_attr());
        }
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self
            .shared
            .lock()
            .model
            .setattr(ino.0, fh.map(|f| f.0), &set)
        {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        // There are no symlinks, so nothing is a link.
        reply.error(Errno::EINVAL);
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
        if mode & libc::S_IFMT != libc::S_IFREG {
            // Devices, fifos and sockets are not modelled.
            return reply.error(Errno::EPERM);
        }
        if is_control(parent, name) {
            return reply.error(Errno::EEXIST);
        }
        let perm = mode & !umask & 0o7777;
        match self
            .shared
            .lock()
            .model
            .create(parent.0, name, perm, req.uid(), req.gid())
        {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if is_control(parent, name) {
            return reply.error(Errno::EEXIST);
        }
        let perm = mode & !umask & 0o7777;
        match self
            .shared
            .lock()
            .model
            .mkdir(parent.0, name, perm, req.uid(), req.gid())
        {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if is_control(parent, name) {
            return reply.error(Errno::EPERM);
        }
        match self.shared.lock().model.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if is_control(parent, name) {
            return reply.error(Errno::ENOTDIR);
        }
        match self.shared.lock().model.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        // Not modelled: refuse clearly rather than pretend.
        reply.error(Errno::EPERM);
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
        let noreplace = if flags.is_empty() {
            false
        } else if flags == RenameFlags::RENAME_NOREPLACE {
            true
        } else {
            // RENAME_EXCHANGE and RENAME_WHITEOUT are not modelled.
            return reply.error(Errno::EINVAL);
        };
        if is_control(parent, name) || is_control(newparent, newname) {
            return reply.error(Errno::EPERM);
        }
        match self
            .shared
            .lock()
            .model
            .rename(parent.0, name, newparent.0, newname, noreplace)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Hard links are not modelled.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.shared.lock();
        if ino.0 == CONTROL_INO {
            let fh = CONTROL_FH_BIT | st.next_control_fh;
            st.next_control_fh = (st.next_control_fh + 1) & !CONTROL_FH_BIT;
            let line = format!("{}\n", stats_of(&st)).into_bytes();
            st.control.insert(fh, line);
            return reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
        }
        match st.model.open(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.shared.lock();
        if is_control_fh(fh) {
            let Some(line) = st.control.get(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(line.len());
            let end = start.saturating_add(size as usize).min(line.len());
            return reply.data(&line[start..end]);
        }
        match st.model.read(fh.0, ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if is_control_fh(fh) {
            // The action is complete when the write returns, so a script can
            // rely on `echo cut > .powerfs` having cut when echo exits.
            return match Action::parse(data) {
                Some(action) => {
                    self.shared.act(action);
                    reply.written(data.len() as u32)
                }
                None => reply.error(Errno::EINVAL),
            };
        }
        let mut st = self.shared.lock();
        // The kernel does not send FSYNC after an O_SYNC/O_DSYNC write on a
        // direct-I/O file; it passes the flag instead, so honour it here.
        let result = if flags.0 & libc::O_DSYNC != 0 {
            st.model.write_sync(fh.0, ino.0, offset, data)
        } else {
            st.model.write(fh.0, ino.0, offset, data)
        };
        match result {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Never answer ENOSYS here: the kernel would stop sending flushes.
        if is_control_fh(fh) {
            return reply.ok();
        }
        match self.shared.lock().model.check(fh.0, ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Works in every power state and for stale handles: the kernel sends
        // exactly one release per open and ignores our answer.
        let mut st = self.shared.lock();
        if is_control_fh(fh) {
            st.control.remove(&fh.0);
        } else {
            st.model.release(fh.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fsync and fdatasync both make data durable. Never answer ENOSYS: the
        // kernel would then silently turn every later fsync into a no-op.
        if is_control_fh(fh) {
            return reply.ok();
        }
        self.shared.sync(req, SyncOp::Fsync, ino, fh, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == CONTROL_INO {
            return reply.error(Errno::ENOTDIR);
        }
        match self.shared.lock().model.opendir(ino.0) {
            // No FOPEN_CACHE_DIR: listings must always come from the model.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // The control file is deliberately not listed: tools that walk the
        // tree (rm -r, cp -r, a database's directory scan) must not trip on it.
        match self.shared.lock().model.readdir(fh.0, ino.0, offset) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.lock().model.release(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // As for fsync, ENOSYS would make the kernel skip all later fsyncdirs.
        self.shared.sync(req, SyncOp::Fsyncdir, ino, fh, reply);
    }

    // Extended attributes are not modelled: no file has any, and none can
    // be set. Answered here rather than by fuser's defaults, which log a
    // warning for every call (the kernel asks for `security.capability`
    // on writes) before answering ENOSYS.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENODATA);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BLOCK: u64 = 4096;
        // Report 16 TiB and 2^32 inodes so no tool ever thinks it is full;
        // memory, not this number, is the real limit.
        const BLOCKS: u64 = 1 << 32;
        const FILES: u64 = 1 << 32;
        match self.shared.lock().model.usage() {
            Ok(u) => {
                let used = u.bytes.div_ceil(BLOCK).min(BLOCKS);
                let free = BLOCKS - used;
                let ffree = FILES.saturating_sub(u.inodes);
                reply.statfs(
                    BLOCKS,
                    free,
                    free,
                    FILES,
                    ffree,
                    BLOCK as u32,
                    model::NAME_MAX as u32,
                    BLOCK as u32,
                );
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if ino.0 == CONTROL_INO {
            return reply.ok();
        }
        match self
            .shared
            .lock()
            .model
            .access(ino.0, mask.bits(), req.uid(), req.gid())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if is_control(parent, name) {
            return reply.error(Errno::EEXIST);
        }
        if mode & libc::S_IFMT != 0 && mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let perm = mode & !umask & 0o7777;
        let mut st = self.shared.lock();
        // Create and open under one lock so no cut can fall in between.
        let created = st
            .model
            .create(parent.0, name, perm, req.uid(), req.gid())
            .and_then(|a| Ok((st.model.open(a.ino)?, a)));
        match created {
            Ok((fh, a)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if is_control_fh(fh) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut st = self.shared.lock();
        let result = match mode {
            0 => st.model.fallocate(fh.0, ino.0, offset, length),
            // Reserving space without changing the size: nothing to do in
            // memory, but the handle must still be valid.
            libc::FALLOC_FL_KEEP_SIZE => st.model.check(fh.0, ino.0),
            // Not ENOSYS: that would make the kernel stop asking for good.
            _ => Err(model::Errno::EOPNOTSUPP),
        };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}
