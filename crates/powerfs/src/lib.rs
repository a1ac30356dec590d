//! `powerfs`: an in-memory FUSE filesystem that simulates POWER LOSS with strict
//! POSIX durability semantics (the semantics of LazyFS, which Jepsen uses).
//!
//! Mount it, run a program on it, cut the power, and see what the program would
//! find after a real crash. It exists to prove that every write a program
//! acknowledged was really made durable with `fsync`, not merely written.
//!
//! # What is durable when
//!
//! Every inode has a CURRENT state (what reads, `stat` and `readdir` see) and a
//! DURABLE state (what survives a power cut).
//!
//! - File data, size and attributes: `write`, `truncate`/`ftruncate`, `fallocate`,
//!   `chmod`/`chown`/`utimes` change the current state only. `fsync` or
//!   `fdatasync` on the file makes its current data, size and attributes durable.
//!   A write on a file opened with `O_SYNC`/`O_DSYNC` is durable when it returns.
//!   `sync_file_range`, `msync`, `syncfs` and `sync` make NOTHING durable (the
//!   kernel does not pass them to FUSE; with direct I/O there is no page cache
//!   for them to act on).
//! - Directory entries: `creat`/`open(O_CREAT)`, `mkdir`, `unlink`, `rmdir` and
//!   `rename` change the current entries of the directories involved only.
//!   `fsync` on a directory file descriptor makes that one directory's current
//!   entries (and attributes) durable. Fsyncing a file does NOT make its name
//!   durable: a file that was created and fsynced but whose directory was not
//!   fsynced disappears in a power cut. A rename between two directories becomes
//!   durable separately in each directory as each is fsynced.
//! - A new file's durable state starts empty: if its directory is fsynced but
//!   the file is not, an empty file survives.
//! - The root directory exists durably from the start (empty).
//!
//! # Power
//!
//! [`Mount::cut`] cuts the power: every inode's current state becomes its durable
//! state, directory entries become their durable entries, and whatever is no
//! longer reachable from the root through durable entries vanishes. If a
//! directory ends up durably named in two places (a rename whose two directories
//! were synced separately) it is kept under the first name met walking the tree
//! in name order. The filesystem is then OFF: every operation fails with `EIO`,
//! so a process that still has files open cannot sneak writes in after the cut
//! (for example a database flushing on drop). [`Mount::power_on`] serves the
//! durable state again; [`Mount::cycle`] is cut then on.
//!
//! File handles opened before a cut stay stale forever: every operation on them
//! fails with `EIO` (closing them works). Inode numbers are never reused, across
//! cuts too, so the kernel cannot confuse an old inode with a new one.
//!
//! # Held syncs
//!
//! [`Mount::hold_syncs`]`(true)` makes the disk slow to sync, without end:
//! from then on every `fsync`/`fdatasync` of a file and every `fsync` of a
//! directory is held, NOT answered (its caller stays blocked in the system
//! call), while every other request, reads and writes included, is served
//! as usual. Nothing a held sync was asked for becomes durable while it is
//! held. Syncs that fail anyway (power OFF, stale handle) are answered at
//! once, and a write on an `O_SYNC`/`O_DSYNC` file is not held.
//!
//! - [`Mount::hold_syncs`]`(false)` performs the held syncs in arrival order
//!   and answers each with its result. Each makes durable what is CURRENT at
//!   that moment, not what was current when it arrived (in practice the same
//!   for its own file or directory: the kernel keeps an inode locked against
//!   writes, truncates and, for a directory, changes of its entries while its
//!   fsync is pending).
//! - [`Mount::cut`] (and [`Mount::cycle`]) answers every held sync with
//!   `EIO`; what it would have synced is dropped like any unsynced data.
//!   The hold itself stays on until `hold_syncs(false)`: syncs after a
//!   power-on are held again.
//! - A held sync whose caller gets SIGKILL (or whose process exits) is
//!   answered `EIO` without syncing. The kernel waits for a FUSE answer
//!   even through SIGKILL, so otherwise the process could not die until a
//!   release or a cut, and whoever reaps it (a harness killing a node
//!   before cutting its power) would hang.
//! - Unmounting (dropping the [`Mount`]) answers the held syncs with `EIO`
//!   and stops holding.
//!
//! Held syncs are counted in [`Stats`] (`held_syncs`, `waiting_syncs`).
//! Note that a held `fsync` keeps its file locked in the kernel: a write to
//! the same file from another thread waits until the sync is answered, as
//! it would on a real disk whose sync is slow.
//!
//! # Control file
//!
//! Processes other than the mounting one control the power through the file
//! `.powerfs` at the mount root. It is found by name but not listed by
//! `readdir`, and it works whether the power is ON or OFF. Writing `cut`, `on`
//! or `cycle` (a trailing newline is fine) performs that action before the write
//! returns, as do `hold` and `release`: [`Mount::hold_syncs`] with `true` and
//! `false` (see Held syncs); anything else fails with `EINVAL`. Reading it
//! returns one status line, the [`Stats`] as `key=value` pairs:
//!
//! ```text
//! power=on cuts=1 fsyncs=12 fsyncdirs=2 sync_writes=0 bytes_written=4096 last_cut_dropped_bytes=100 ... hold=off held_syncs=0 waiting_syncs=0
//! ```
//!
//! # Not modelled
//!
//! Symlinks, hard links, device nodes, fifos and sockets (`EPERM`), extended
//! attributes (none exist: reads say `ENODATA`, a set is `EOPNOTSUPP`),
//! `RENAME_EXCHANGE`/`RENAME_WHITEOUT` (`EINVAL`), `fallocate` modes other
//! than 0 and `FALLOC_FL_KEEP_SIZE` (`EOPNOTSUPP`), shared writable `mmap`
//! (direct I/O forbids it), files over [`model::MAX_FILE_SIZE`] (`EFBIG`).
//! Permissions are not enforced (no `default_permissions`); `access(2)`
//! answers from the mode bits. `flock` and POSIX locks are handled by the
//! kernel locally.
//!
//! # Mounting
//!
//! [`mount`] mounts with `mount(2)` directly, which needs `CAP_SYS_ADMIN` (run
//! as root); [`available`] tells whether that can work here. The mount allows
//! other users (`allow_other`). Dropping the [`Mount`] unmounts.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod fs;
pub mod model;

pub use fs::CONTROL_NAME;
pub use model::{CutStats, Power, Stats};

use fs::{Action, PowerFs, Shared};

/// For a test that needs powerfs: `true` when it can mount here. Else it
/// prints that the test (`what`) is skipped and why, and returns `false` —
/// unless `RAFTLOCK_REQUIRE_FUSE` is set (.ci/run sets it where FUSE
/// exists), which makes a missing FUSE a failure (panic) instead.
pub fn usable_in_test(what: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("RAFTLOCK_REQUIRE_FUSE").is_none(),
                "RAFTLOCK_REQUIRE_FUSE is set but FUSE is not usable here: {why}"
            );
            eprintln!("skipped: {what} needs FUSE: {why}");
            false
        }
    }
}

/// Tells whether powerfs can mount here, or why not (for tests that must skip).
pub fn available() -> Result<(), String> {
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return Err(
            "no /dev/fuse: the FUSE kernel module is not loaded or the device is not \
                    exposed to this container"
                .into(),
        );
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open(dev) {
        return Err(format!("cannot open /dev/fuse: {e}"));
    }
    if !has_cap_sys_admin() {
        return Err(format!(
            "not permitted: powerfs mounts with mount(2), which needs CAP_SYS_ADMIN \
             (running as uid {})",
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() }
        ));
    }
    Ok(())
}

/// Reads the effective capability set from /proc.
fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21; // linux/capability.h
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        // SAFETY: geteuid has no preconditions and cannot fail.
        return unsafe { libc::geteuid() } == 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Mounts a fresh, empty powerfs at `mountpoint` (an existing directory).
///
/// The filesystem is served by a background thread until the returned
/// [`Mount`] is dropped (or [`Mount::unmount`] is called).
pub fn mount(mountpoint: &Path) -> io::Result<Mount> {
    let mountpoint = mountpoint.canonicalize()?;
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let shared = Arc::new(Shared::new(uid, gid));

    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::FSName("powerfs".into())];
    // allow_other: the programs under test may run as other users. Root may
    // pass it to mount(2) directly; no /etc/fuse.conf or fusermount involved.
    config.acl = fuser::SessionACL::All;
    // No AutoUnmount: fuser implements it only through fusermount, which a
    // direct mount as root neither needs nor may find installed.

    // Session::new performs mount(2) and the INIT handshake before returning,
    // so the filesystem is usable as soon as this succeeds. We run the session
    // on our own thread instead of Session::spawn: spawn moves the mount into
    // a BackgroundSession whose drop does a plain umount that fails with EBUSY
    // while any file is open (leaving the mount behind), and it empties an
    // unmounter taken beforehand. Keeping the unmounter lets us fall back to a
    // lazy detach.
    let mut session = fuser::Session::new(PowerFs::new(shared.clone()), &mountpoint, &config)?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("powerfs".into())
        .spawn(move || session.run())?;
    Ok(Mount {
        shared,
        mountpoint,
        unmounter: Some(unmounter),
        thread: Some(thread),
    })
}

/// A mounted powerfs. Dropping it unmounts (lazily if the mount is busy); it
/// never waits more than about 5 s for the serving thread.
#[derive(Debug)]
#[must_use = "dropping the Mount unmounts the filesystem"]
pub struct Mount {
    shared: Arc<Shared>,
    mountpoint: PathBuf,
    unmounter: Option<fuser::SessionUnmounter>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Mount {
    /// Cuts the power: drops everything not durable and switches OFF (every
    /// operation then fails with EIO until [`Mount::power_on`]).
    pub fn cut(&self) {
        self.shared.act(Action::Cut);
    }

    /// Switches the power back ON, serving the durable state.
    pub fn power_on(&self) {
        self.shared.act(Action::On);
    }

    /// [`Mount::cut`] then [`Mount::power_on`].
    pub fn cycle(&self) {
        self.shared.act(Action::Cycle);
    }

    /// Holds syncs (`true`): every later fsync, fdatasync and directory
    /// fsync is parked unanswered, its caller blocked, while everything else
    /// is served. Or stops holding (`false`): the held syncs are performed
    /// in arrival order, each making durable what is current at that
    /// moment, and answered. [`Mount::cut`] answers held syncs with EIO
    /// instead (their data is lost) and leaves the hold on. See the crate
    /// documentation, "Held syncs".
    pub fn hold_syncs(&self, on: bool) {
        self.shared
            .act(if on { Action::Hold } else { Action::Release });
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The canonical path of the mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Log every control action and its counters to stderr.
    pub fn set_verbose(&self, on: bool) {
        self.shared.verbose.store(on, Ordering::Relaxed);
    }

    /// Unmounts now, reporting failure (dropping the Mount does the same
    /// silently).
    ///
    /// If the mount is busy (a process still has a file or its working
    /// directory in it), it is detached lazily instead: it disappears from the
    /// namespace at once and those processes get errors once the serving
    /// thread exits with this process.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(mut unmounter) = self.unmounter.take() else {
            return Ok(());
        };
        // A caller blocked in a held sync keeps its file open (the mount
        // busy) and would wait for an answer that never comes.
        self.shared.drop_held();
        let clean = unmounter.unmount();
        if clean.is_err() {
            // Typically EBUSY. Detach so the path is free again; the serving
            // thread keeps answering the remaining open files (with EIO if OFF)
            // and must not be joined, as it ends only when they are closed.
            let path =
                CString::new(self.mountpoint.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // SAFETY: path is a valid NUL-terminated string.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                let detach_err = io::Error::last_os_error();
                return Err(io::Error::other(format!(
                    "cannot unmount {}: {} (lazy detach also failed: {detach_err})",
                    self.mountpoint.display(),
                    clean.err().map(|e| e.to_string()).unwrap_or_default()
                )));
            }
            eprintln!(
                "powerfs: {} is busy ({}); detached it lazily",
                self.mountpoint.display(),
                clean.err().map(|e| e.to_string()).unwrap_or_default()
            );
            self.thread = None;
            return Ok(());
        }
        // After a clean unmount the kernel ends the connection and the serving
        // thread returns promptly. Wait a bounded time: Drop must not hang.
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                // A session error at shutdown is of no use to anyone now.
                let _ = thread.join();
            }
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            eprintln!("powerfs: {e}");
        }
    }
}
