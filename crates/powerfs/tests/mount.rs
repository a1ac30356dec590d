//! End-to-end tests: really mount powerfs under a temporary directory and drive
//! it through the kernel with std::fs and libc, as the programs under test do.
//!
//! If FUSE cannot be used here, every test prints why and passes (skips),
//! unless RAFTLOCK_REQUIRE_FUSE is set, in which case it fails.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Upper bound for any single test. If it is exceeded (a FUSE request that
/// never gets answered would hang the test thread in a syscall), the watchdog
/// force-unmounts, which aborts the connection: the hung call fails with
/// ENOTCONN and the test fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

fn skip_reason() -> Option<String> {
    if powerfs::usable_in_test("this powerfs test") {
        None
    } else {
        Some("FUSE is not usable here".to_string())
    }
}

/// Kills the mount if a test overruns; disarmed when dropped.
struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

impl Watchdog {
    fn arm(mountpoint: PathBuf) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(TEST_TIMEOUT) {
                eprintln!(
                    "watchdog: test exceeded {TEST_TIMEOUT:?}; force-unmounting {}",
                    mountpoint.display()
                );
                force_unmount(&mountpoint);
            }
        });
        Watchdog { _disarm: tx }
    }
}

fn force_unmount(path: &Path) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: c is a valid NUL-terminated path.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_FORCE);
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

/// A mounted powerfs in a fresh temporary directory. Field order is drop
/// order: the watchdog is disarmed, then the filesystem is unmounted, then the
/// (now empty, unmounted) directory is removed, also when a test panics.
struct Fixture {
    _watchdog: Watchdog,
    mnt: powerfs::Mount,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        skip_reason().is_none().then(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mnt = powerfs::mount(dir.path()).expect("mount powerfs");
            Fixture {
                _watchdog: Watchdog::arm(mnt.mountpoint().to_owned()),
                mnt,
                _dir: dir,
            }
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.mountpoint().join(rel)
    }

    fn root(&self) -> &Path {
        self.mnt.mountpoint()
    }
}

/// fsync on a directory: open it read-only and sync_all (FUSE_FSYNCDIR).
fn fsync_dir(path: &Path) {
    File::open(path)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
}

/// Creates `path` with `data` and fsyncs the file (but not its directory).
fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).expect("create");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

fn raw_os_error<T: std::fmt::Debug>(r: io::Result<T>) -> Option<i32> {
    r.expect_err("expected an error").raw_os_error()
}

fn mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.as_os_str().as_bytes();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|mp| mp.as_bytes() == want))
}

macro_rules! fixture {
    () => {
        match Fixture::new() {
            Some(fx) => fx,
            None => return,
        }
    };
}

#[test]
fn fsynced_write_in_synced_directory_survives_power_cycle() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"durable");
    fsync_dir(fx.root());
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"durable");
    assert_eq!(fx.mnt.stats().last_cut.dropped_bytes, 0);
}

#[test]
fn unsynced_write_is_lost_in_power_cycle() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"hello");
    fsync_dir(fx.root());
    let mut f = OpenOptions::new()
        .append(true)
        .open(fx.path("f"))
        .expect("open");
    f.write_all(b" world").expect("append");
    drop(f);
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"hello world");
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"hello");
    let cut = fx.mnt.stats().last_cut;
    assert_eq!((cut.dropped_bytes, cut.files_changed), (6, 1));
}

#[test]
fn fdatasync_makes_data_durable() {
    let fx = fixture!();
    let f = File::create(fx.path("f")).expect("create");
    fsync_dir(fx.root());
    f.write_all_at(b"abc", 0).expect("write");
    f.sync_data().expect("fdatasync");
    drop(f);
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"abc");
}

#[test]
fn o_dsync_write_is_durable_without_fsync() {
    let fx = fixture!();
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(fx.path("f"))
        .expect("open O_DSYNC");
    fsync_dir(fx.root());
    f.write_all(b"sync").expect("write");
    drop(f);
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"sync");
    assert!(fx.mnt.stats().sync_writes >= 1);
}

#[test]
fn partial_overwrite_of_synced_region_reverts() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"aaaaaaaaaa");
    fsync_dir(fx.root());
    let f = OpenOptions::new()
        .write(true)
        .open(fx.path("f"))
        .expect("open");
    f.write_all_at(b"XYZ", 3).expect("pwrite");
    drop(f);
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"aaaXYZaaaa");
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"aaaaaaaaaa");
}

#[test]
fn unsynced_truncate_reverts() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"0123456789");
    fsync_dir(fx.root());
    let f = OpenOptions::new()
        .write(true)
        .open(fx.path("f"))
        .expect("open");
    f.set_len(3).expect("truncate");
    drop(f);
    assert_eq!(fs::metadata(fx.path("f")).expect("stat").len(), 3);
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"0123456789");
}

#[test]
fn fsynced_file_in_unsynced_directory_vanishes() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"synced data, unsynced name");
    fx.mnt.cycle();
    assert_eq!(
        fs::metadata(fx.path("f")).map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(fx.mnt.stats().last_cut.inodes_vanished, 1);
}

#[test]
fn created_file_with_synced_directory_but_unsynced_data_survives_empty() {
    let fx = fixture!();
    let mut f = File::create(fx.path("f")).expect("create");
    f.write_all(b"never synced").expect("write");
    fsync_dir(fx.root());
    drop(f);
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"");
}

#[test]
fn unsynced_rename_reverts_to_old_names_and_contents() {
    let fx = fixture!();
    write_synced(&fx.path("a"), b"new");
    write_synced(&fx.path("b"), b"old");
    fsync_dir(fx.root());
    fs::rename(fx.path("a"), fx.path("b")).expect("rename");
    assert_eq!(fs::read(fx.path("b")).expect("read"), b"new");
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("a")).expect("a is back"), b"new");
    assert_eq!(fs::read(fx.path("b")).expect("b is back"), b"old");
}

#[test]
fn synced_rename_survives() {
    let fx = fixture!();
    write_synced(&fx.path("tmp"), b"v2");
    write_synced(&fx.path("cur"), b"v1");
    fsync_dir(fx.root());
    fs::rename(fx.path("tmp"), fx.path("cur")).expect("rename");
    fsync_dir(fx.root());
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("cur")).expect("read"), b"v2");
    assert!(!fx.path("tmp").exists());
}

#[test]
fn rename_across_directories_is_durable_per_directory() {
    let fx = fixture!();
    fs::create_dir(fx.path("d1")).expect("mkdir");
    fs::create_dir(fx.path("d2")).expect("mkdir");
    write_synced(&fx.path("d1/f"), b"x");
    fsync_dir(&fx.path("d1"));
    fsync_dir(fx.root());
    fs::rename(fx.path("d1/f"), fx.path("d2/f")).expect("rename");
    fsync_dir(&fx.path("d1")); // only the source directory is synced
    fx.mnt.cycle();
    assert!(!fx.path("d1/f").exists(), "removal from d1 was synced");
    assert!(!fx.path("d2/f").exists(), "addition to d2 was not");
}

#[test]
fn unsynced_unlink_brings_file_back() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"keep");
    fsync_dir(fx.root());
    fs::remove_file(fx.path("f")).expect("unlink");
    assert!(!fx.path("f").exists());
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("back"), b"keep");
}

#[test]
fn unsynced_mkdir_vanishes_and_synced_mkdir_survives() {
    let fx = fixture!();
    fs::create_dir(fx.path("kept")).expect("mkdir");
    fsync_dir(fx.root());
    fs::create_dir(fx.path("lost")).expect("mkdir");
    fs::create_dir(fx.path("kept/inner")).expect("mkdir");
    fx.mnt.cycle();
    assert!(fx.path("kept").is_dir());
    assert!(!fx.path("lost").exists());
    assert!(!fx.path("kept/inner").exists());
}

#[test]
fn power_off_fails_everything_with_eio_until_power_on() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"x");
    fsync_dir(fx.root());
    fx.mnt.cut();
    assert_eq!(fx.mnt.stats().power, powerfs::Power::Off);
    assert_eq!(raw_os_error(fs::read(fx.path("f"))), Some(libc::EIO));
    assert_eq!(raw_os_error(File::create(fx.path("g"))), Some(libc::EIO));
    assert_eq!(raw_os_error(fs::create_dir(fx.path("d"))), Some(libc::EIO));
    assert_eq!(raw_os_error(fs::read_dir(fx.root())), Some(libc::EIO));
    fx.mnt.power_on();
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"x");
}

#[test]
fn handles_opened_before_a_cut_fail_with_eio() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"x");
    fsync_dir(fx.root());
    let mut old = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.path("f"))
        .expect("open");
    let old_dir = File::open(fx.root()).expect("open dir");
    fx.mnt.cycle();
    assert_eq!(raw_os_error(old.write_all(b"late")), Some(libc::EIO));
    assert_eq!(raw_os_error(old.sync_all()), Some(libc::EIO));
    assert_eq!(raw_os_error(old.read_at(&mut [0u8; 4], 0)), Some(libc::EIO));
    assert_eq!(raw_os_error(old_dir.sync_all()), Some(libc::EIO));
    drop(old);
    drop(old_dir);
    // A new handle works.
    let f = OpenOptions::new()
        .write(true)
        .open(fx.path("f"))
        .expect("reopen");
    f.write_all_at(b"y", 0).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"y");
}

#[test]
fn control_file_drives_power_from_any_process() {
    let fx = fixture!();
    let control = fx.path(powerfs::CONTROL_NAME);
    write_synced(&fx.path("f"), b"synced");
    fsync_dir(fx.root());
    fs::write(fx.path("g"), b"unsynced").expect("write g");

    fs::write(&control, "cycle").expect("cycle");
    assert!(fx.path("f").exists());
    assert!(!fx.path("g").exists());
    let status = fs::read_to_string(&control).expect("read status");
    assert!(status.starts_with("power=on cuts=1 "), "status: {status}");
    assert!(status.ends_with('\n') && status.lines().count() == 1);

    // Not listed, but found by name.
    let names: Vec<_> = fs::read_dir(fx.root())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["f"]);

    // Works while OFF; a trailing newline is fine; anything else is EINVAL.
    fs::write(&control, "cut\n").expect("cut");
    assert_eq!(raw_os_error(fs::read(fx.path("f"))), Some(libc::EIO));
    assert!(
        fs::read_to_string(&control)
            .expect("status while off")
            .starts_with("power=off ")
    );
    assert_eq!(
        raw_os_error(fs::write(&control, "reboot")),
        Some(libc::EINVAL)
    );
    fs::write(&control, "on\n").expect("on");
    assert_eq!(fs::read(fx.path("f")).expect("read"), b"synced");
    assert_eq!(raw_os_error(fs::remove_file(&control)), Some(libc::EPERM));
}

#[test]
fn directory_listing_includes_dots_and_survives_cycle() {
    let fx = fixture!();
    fs::create_dir(fx.path("d")).expect("mkdir");
    for i in 0..300 {
        File::create(fx.path(&format!("d/file-{i:03}"))).expect("create");
    }
    fsync_dir(&fx.path("d"));
    fsync_dir(fx.root());
    fx.mnt.cycle();
    let mut names: Vec<_> = fs::read_dir(fx.path("d"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 300);
    assert_eq!(names[0], "file-000");
    // std's read_dir hides . and ..; ask libc directly.
    let c = CString::new(fx.path("d").as_os_str().as_bytes()).expect("cstring");
    // SAFETY: valid path; the DIR* is closed below and entries are read before.
    let dots = unsafe {
        let dir = libc::opendir(c.as_ptr());
        assert!(!dir.is_null());
        let mut dots = 0;
        loop {
            let ent = libc::readdir(dir);
            if ent.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr());
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                dots += 1;
            }
        }
        libc::closedir(dir);
        dots
    };
    assert_eq!(dots, 2);
    assert!(fs::metadata(fx.root()).expect("stat root").is_dir());
}

#[test]
fn fallocate_extends_and_unsupported_modes_are_refused() {
    let fx = fixture!();
    let f = File::create(fx.path("f")).expect("create");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: fd is a valid open file descriptor for the duration of the calls.
    unsafe {
        assert_eq!(
            libc::fallocate(fd, 0, 0, 8192),
            0,
            "{}",
            io::Error::last_os_error()
        );
        assert_eq!(
            libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20),
            0
        );
        assert_eq!(
            libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                10
            ),
            -1
        );
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EOPNOTSUPP)
        );
    }
    assert_eq!(f.metadata().expect("stat").len(), 8192);
    f.sync_all().expect("fsync");
    fsync_dir(fx.root());
    drop(f);
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read"), vec![0u8; 8192]);
}

#[test]
fn rename_flags_links_and_special_files_are_handled() {
    let fx = fixture!();
    fs::write(fx.path("a"), b"a").expect("write");
    fs::write(fx.path("b"), b"b").expect("write");
    let (a, b) = (
        CString::new(fx.path("a").as_os_str().as_bytes()).expect("cstring"),
        CString::new(fx.path("b").as_os_str().as_bytes()).expect("cstring"),
    );
    let renameat2 = |flags: libc::c_uint| {
        // SAFETY: both paths are valid NUL-terminated strings.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    assert_eq!(
        raw_os_error(renameat2(libc::RENAME_NOREPLACE)),
        Some(libc::EEXIST)
    );
    assert_eq!(
        raw_os_error(renameat2(libc::RENAME_EXCHANGE)),
        Some(libc::EINVAL)
    );
    assert_eq!(
        raw_os_error(std::os::unix::fs::symlink("a", fx.path("s"))),
        Some(libc::EPERM)
    );
    assert_eq!(
        raw_os_error(fs::hard_link(fx.path("a"), fx.path("h"))),
        Some(libc::EPERM)
    );
    renameat2(0).expect("plain rename");
    assert_eq!(fs::read(fx.path("b")).expect("read"), b"a");
}

#[test]
fn many_fsyncs_on_a_large_file_stay_fast_and_exact() {
    // Scattered 8-byte slots that wrap around the file many times.
    let offset_of = |i: u64| (i * 1_048_583) % ((32 << 20) - 8);
    // sled-like load: a 32 MiB file, then many small writes each followed by
    // fsync. Dirty-range tracking keeps each fsync proportional to the write.
    let fx = fixture!();
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(fx.path("big"))
        .expect("create");
    fsync_dir(fx.root());
    let chunk = vec![7u8; 1 << 20];
    for i in 0..32u64 {
        f.write_all_at(&chunk, i << 20).expect("write");
    }
    f.sync_all().expect("fsync");
    let start = Instant::now();
    for i in 0..500u64 {
        f.write_all_at(&i.to_le_bytes(), offset_of(i))
            .expect("write");
        f.sync_data().expect("fdatasync");
    }
    let elapsed = start.elapsed();
    eprintln!("500 x (8-byte write + fdatasync) on a 32 MiB file: {elapsed:?}");
    f.write_all_at(b"lost", 0).expect("write");
    drop(f);
    fx.mnt.cycle();
    let data = fs::read(fx.path("big")).expect("read");
    assert_eq!(data.len(), 32 << 20);
    assert_eq!(
        &data[..4],
        &[0, 0, 0, 0],
        "unsynced overwrite reverted to the synced bytes"
    );
    let off = offset_of(499) as usize;
    assert_eq!(&data[off..off + 8], &499u64.to_le_bytes());
    assert!(
        elapsed < Duration::from_secs(30),
        "fsyncs too slow: {elapsed:?}"
    );
}

#[test]
fn unmounting_a_busy_mount_detaches_it_without_hanging() {
    if skip_reason().is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = powerfs::mount(dir.path()).expect("mount");
    let mp = mnt.mountpoint().to_owned();
    let _watchdog = Watchdog::arm(mp.clone());
    fs::write(mp.join("f"), b"still here").expect("write");
    let open = File::open(mp.join("f")).expect("open");
    let start = Instant::now();
    mnt.unmount()
        .expect("unmount (lazily) despite the open file");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!mounted(&mp), "detached from the namespace");
    // The open file is still served until it is closed.
    let mut buf = [0u8; 10];
    assert_eq!(open.read_at(&mut buf, 0).expect("read after detach"), 10);
    assert_eq!(&buf, b"still here");
}

/// Kills the child and detaches the mount if the test fails half way.
struct ChildGuard {
    child: Child,
    mountpoint: PathBuf,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if mounted(&self.mountpoint) {
            force_unmount(&self.mountpoint);
        }
    }
}

#[test]
fn binary_mounts_serves_control_file_and_unmounts_on_sigterm() {
    if skip_reason().is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mp = dir.path().canonicalize().expect("canonicalize");
    let child = Command::new(env!("CARGO_BIN_EXE_powerfs"))
        .arg(&mp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn powerfs");
    let mut guard = ChildGuard {
        child,
        mountpoint: mp.clone(),
    };
    let _watchdog = Watchdog::arm(mp.clone());

    // Wait for the ready line, bounded.
    let stdout = guard.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("ready line within 20 s");
    assert_eq!(
        line.trim_end(),
        format!("powerfs: mounted at {}", mp.display())
    );
    assert!(mounted(&mp));

    write_synced(&mp.join("f"), b"x");
    fsync_dir(&mp);
    fs::write(mp.join("g"), b"unsynced").expect("write");
    fs::write(mp.join(".powerfs"), "cycle\n").expect("cycle");
    assert_eq!(fs::read(mp.join("f")).expect("read"), b"x");
    assert!(!mp.join("g").exists());
    let status = fs::read_to_string(mp.join(".powerfs")).expect("status");
    assert!(status.contains(" cuts=1 "), "status: {status}");

    // SAFETY: kill has no memory-safety preconditions.
    let pid = libc::pid_t::try_from(guard.child.id()).expect("pid");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = guard.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "powerfs did not exit within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut e) = guard.child.stderr.take() {
        let _ = io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(!mounted(&mp), "still mounted after exit");
    assert!(
        stderr.contains("powerfs: cycle done: power=on cuts=1"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn binary_rejects_bad_arguments_with_exit_2() {
    let bin = env!("CARGO_BIN_EXE_powerfs");
    for args in [
        &[][..],
        &["a", "b"][..],
        &["--bogus"][..],
        &["/nonexistent/powerfs-test"][..],
    ] {
        let out = Command::new(bin).args(args).output().expect("run powerfs");
        assert_eq!(out.status.code(), Some(2), "args {args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: powerfs MOUNTPOINT"));
    }
}

/// What the test does for sled beyond what sled does itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SledHelp {
    /// Nothing: sled exactly as a program would use it.
    None,
    /// fsync the directories sled created (sled never does), to isolate what
    /// `flush()` alone guarantees.
    SyncDirs,
    /// SyncDirs, plus an fsync of sled's data file right after `flush()`: the
    /// control showing that flushed data IS recoverable once really fsynced.
    SyncDirsAndFsyncAfterFlush,
    /// SyncDirs, sled's periodic flusher on (its default 500 ms), and a wait
    /// of 1.2 s before the cut: that thread calls fsync after flushing.
    SyncDirsAndPeriodicFlusher,
}

/// Not an assertion: a report of what sled 0.34 leaves after a power cut. We
/// expect `Db::flush` NOT to be durable, because it ends in sync_file_range
/// (which never reaches a FUSE filesystem) rather than fsync, and sled never
/// fsyncs its directories. Run with `--nocapture` to see the report.
#[test]
fn sled_flush_durability_report() {
    let fx = fixture!();
    let mut report = String::from("\n=== sled 0.34 on powerfs: what survives a power cut ===\n");
    for help in [
        SledHelp::None,
        SledHelp::SyncDirs,
        SledHelp::SyncDirsAndFsyncAfterFlush,
        SledHelp::SyncDirsAndPeriodicFlusher,
    ] {
        let path = fx.path(&format!("{help:?}"));
        let outcome = sled_scenario(&fx, &path, help);
        report.push_str(&format!("{help:?}: {outcome}\n"));
    }
    println!("{report}");
}

fn sled_scenario(fx: &Fixture, path: &Path, help: SledHelp) -> String {
    let flush_every_ms = (help == SledHelp::SyncDirsAndPeriodicFlusher).then_some(500);
    let config = || {
        sled::Config::new()
            .path(path)
            .flush_every_ms(flush_every_ms)
    };
    let db = match config().open() {
        Ok(db) => db,
        Err(e) => return format!("open failed: {e}"),
    };
    if help != SledHelp::None {
        for dir in [path.to_owned(), path.join("blobs"), fx.root().to_owned()] {
            if dir.is_dir() {
                fsync_dir(&dir);
            }
        }
    }
    let before = fx.mnt.stats();
    for i in 0..100u32 {
        if let Err(e) = db.insert(i.to_be_bytes(), &b"flushed"[..]) {
            return format!("insert failed: {e}");
        }
    }
    let flushed = db.flush();
    let after_flush = fx.mnt.stats();
    match help {
        SledHelp::SyncDirsAndFsyncAfterFlush => {
            if let Err(e) = File::open(path.join("db")).and_then(|f| f.sync_all()) {
                return format!("fsync of db file failed: {e}");
            }
        }
        SledHelp::SyncDirsAndPeriodicFlusher => std::thread::sleep(Duration::from_millis(1200)),
        SledHelp::None | SledHelp::SyncDirs => {}
    }
    for i in 100..200u32 {
        if let Err(e) = db.insert(i.to_be_bytes(), &b"unflushed"[..]) {
            return format!("insert failed: {e}");
        }
    }
    fx.mnt.cut();
    let cut = fx.mnt.stats().last_cut;
    // sled flushes on drop and unwraps an fsync error there; with the power
    // off that may panic. A crashed process would not run that code at all,
    // and nothing can reach the disk while OFF, so contain it.
    let dropped_cleanly =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(db))).is_ok();
    fx.mnt.power_on();

    let dir_survived = path.is_dir();
    let (flushed_kept, unflushed_kept, reopen) = match config().open() {
        Ok(db) => {
            let count = |range: std::ops::Range<u32>| {
                range
                    .filter(|i| matches!(db.get(i.to_be_bytes()), Ok(Some(_))))
                    .count()
            };
            (count(0..100), count(100..200), "reopened")
        }
        Err(e) => {
            eprintln!("sled reopen failed: {e}");
            (0, 0, "REOPEN FAILED")
        }
    };
    format!(
        "flush() -> {flushed:?} with {} fsync(s) by sled during flush; cut dropped {} unsynced bytes; \
         db dir survived: {dir_survived}; {reopen}; flushed keys kept {flushed_kept}/100; \
         unflushed keys kept {unflushed_kept}/100; drop after cut {}",
        after_flush.fsyncs - before.fsyncs,
        cut.dropped_bytes,
        if dropped_cleanly {
            "clean"
        } else {
            "panicked (contained)"
        }
    )
}

// ---- held syncs (Mount::hold_syncs) ----

/// How long a held sync must stay unanswered to count as held.
const STILL_HELD: Duration = Duration::from_millis(200);
/// Bound for anything that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(5);

/// Polls `cond` until it holds or `within` has passed.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `sync` on its own thread; its result arrives on the returned channel.
fn sync_in_thread(
    what: &'static str,
    sync: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> mpsc::Receiver<(&'static str, io::Result<()>)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send((what, sync()));
    });
    rx
}

/// Runs `work` on another thread and fails the test if it does not finish
/// within [`PROMPTLY`] (a request stuck behind a held sync would hang it).
fn promptly<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(PROMPTLY)
        .unwrap_or_else(|e| panic!("{what}: not done within {PROMPTLY:?} ({e})"))
}

fn assert_still_held<T: std::fmt::Debug>(rx: &mpsc::Receiver<T>) {
    match rx.recv_timeout(STILL_HELD) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("a held sync returned: {other:?}"),
    }
}

#[test]
fn held_syncs_block_their_callers_until_release_and_then_are_durable() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"old");
    fs::create_dir(fx.path("d")).expect("mkdir");
    fsync_dir(fx.root());
    let f = OpenOptions::new()
        .write(true)
        .open(fx.path("f"))
        .expect("open f");
    f.write_all_at(b"new", 0).expect("write f");
    File::create(fx.path("d/x")).expect("create d/x");
    let fsyncs_before = fx.mnt.stats().fsyncs;

    fx.mnt.hold_syncs(true);
    let file_sync = sync_in_thread("f", move || f.sync_data());
    assert!(
        eventually(PROMPTLY, || fx.mnt.stats().waiting_syncs == 1),
        "the fdatasync did not arrive: {}",
        fx.mnt.stats()
    );
    let dir = File::open(fx.path("d")).expect("open d");
    let dir_sync = sync_in_thread("d", move || dir.sync_all());
    assert!(
        eventually(PROMPTLY, || fx.mnt.stats().waiting_syncs == 2),
        "the directory fsync did not arrive: {}",
        fx.mnt.stats()
    );
    assert_still_held(&file_sync);
    assert_still_held(&dir_sync);

    // Meanwhile another thread's reads and writes are served: of another
    // file, of the held file's data, and of the directory the held sync
    // does not lock.
    let (g, held_f) = (fx.path("g"), fx.path("f"));
    let (read_g, read_f, names) = promptly("reads and writes while syncs are held", move || {
        let mut g_file = File::create(&g).expect("create g");
        g_file.write_all(b"served").expect("write g");
        drop(g_file);
        let read_g = fs::read(&g).expect("read g");
        let read_f = fs::read(&held_f).expect("read f");
        let mut names: Vec<_> = fs::read_dir(g.parent().expect("root"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        (read_g, read_f, names)
    });
    assert_eq!(read_g, b"served");
    assert_eq!(read_f, b"new");
    assert_eq!(names, ["d", "f", "g"]);
    assert_still_held(&file_sync);
    assert_still_held(&dir_sync);
    let s = fx.mnt.stats();
    assert!(
        s.holding && s.held_syncs == 2 && s.waiting_syncs == 2,
        "{s}"
    );
    assert_eq!(s.fsyncs, fsyncs_before, "nothing synced while held");

    fx.mnt.hold_syncs(false);
    for rx in [&file_sync, &dir_sync] {
        let (what, result) = rx.recv_timeout(PROMPTLY).expect("a released sync returns");
        result.unwrap_or_else(|e| panic!("released sync of {what}: {e}"));
    }
    let s = fx.mnt.stats();
    assert!(
        !s.holding && s.held_syncs == 2 && s.waiting_syncs == 0,
        "{s}"
    );
    assert_eq!((s.fsyncs, s.fsyncdirs), (fsyncs_before + 1, 2));

    // Syncs are answered at once again, and what the released ones synced
    // survives a cut (g, never synced, does not).
    write_synced(&fx.path("h"), b"h");
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read f"), b"new");
    assert!(fx.path("d/x").exists(), "d's entry was synced on release");
    assert!(!fx.path("g").exists());
}

#[test]
fn a_cut_answers_held_syncs_with_eio_and_drops_their_data() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"old");
    fsync_dir(fx.root());
    let f = OpenOptions::new()
        .write(true)
        .open(fx.path("f"))
        .expect("open f");
    f.write_all_at(b"new", 0).expect("write f");

    fx.mnt.hold_syncs(true);
    let sync = sync_in_thread("f", move || f.sync_data());
    assert!(eventually(PROMPTLY, || fx.mnt.stats().waiting_syncs == 1));
    assert_still_held(&sync);
    fx.mnt.cut();
    let (_, result) = sync.recv_timeout(PROMPTLY).expect("the cut answers");
    assert_eq!(raw_os_error(result), Some(libc::EIO));
    let s = fx.mnt.stats();
    assert!(
        s.holding && s.held_syncs == 1 && s.waiting_syncs == 0,
        "{s}"
    );
    assert_eq!(s.last_cut.dropped_bytes, 3);
    fx.mnt.power_on();
    assert_eq!(fs::read(fx.path("f")).expect("read f"), b"old");

    // The hold outlives the cut: a sync after power-on is held again, and
    // released as usual.
    let f = OpenOptions::new()
        .write(true)
        .open(fx.path("f"))
        .expect("reopen f");
    f.write_all_at(b"newer", 0).expect("write f");
    let sync = sync_in_thread("f", move || f.sync_all());
    assert!(eventually(PROMPTLY, || fx.mnt.stats().waiting_syncs == 1));
    assert_still_held(&sync);
    fx.mnt.hold_syncs(false);
    let (_, result) = sync.recv_timeout(PROMPTLY).expect("released");
    result.expect("released sync");
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read f"), b"newer");
}

#[test]
fn a_process_killed_in_a_held_sync_exits_and_its_data_is_not_synced() {
    let fx = fixture!();
    write_synced(&fx.path("f"), b"old");
    fsync_dir(fx.root());
    fs::write(fx.path("f"), b"new").expect("write f");
    fx.mnt.hold_syncs(true);
    // coreutils `sync --data FILE` is one fdatasync of FILE.
    let child = Command::new("sync")
        .arg("--data")
        .arg(fx.path("f"))
        .spawn()
        .expect("spawn sync");
    let mut guard = ChildGuard {
        child,
        mountpoint: fx.root().to_owned(),
    };
    assert!(
        eventually(PROMPTLY, || fx.mnt.stats().waiting_syncs == 1),
        "{}",
        fx.mnt.stats()
    );
    std::thread::sleep(STILL_HELD);
    assert!(matches!(guard.child.try_wait(), Ok(None)), "sync returned");
    guard.child.kill().expect("kill sync");
    assert!(
        eventually(PROMPTLY, || matches!(guard.child.try_wait(), Ok(Some(_)))),
        "a process killed in a held sync did not exit"
    );
    assert_eq!(fx.mnt.stats().waiting_syncs, 0);
    fx.mnt.cycle();
    assert_eq!(fs::read(fx.path("f")).expect("read f"), b"old");
}

#[test]
fn control_file_holds_and_releases_syncs() {
    let fx = fixture!();
    let control = fx.path(powerfs::CONTROL_NAME);
    let status = || fs::read_to_string(&control).expect("read status");
    assert!(
        status().ends_with(" hold=off held_syncs=0 waiting_syncs=0\n"),
        "{}",
        status()
    );
    fs::write(&control, "hold\n").expect("hold");
    assert!(fx.mnt.stats().holding);
    let mut f = File::create(fx.path("f")).expect("create f");
    f.write_all(b"data").expect("write f");
    let sync = sync_in_thread("f", move || f.sync_all());
    assert!(
        eventually(PROMPTLY, || status()
            .ends_with(" hold=on held_syncs=1 waiting_syncs=1\n")),
        "{}",
        status()
    );
    assert_still_held(&sync);
    fs::write(&control, "release").expect("release");
    let (_, result) = sync.recv_timeout(PROMPTLY).expect("released");
    result.expect("released sync");
    assert!(
        status().ends_with(" hold=off held_syncs=1 waiting_syncs=0\n"),
        "{}",
        status()
    );
}

#[test]
fn unmounting_answers_held_syncs_with_eio() {
    if skip_reason().is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = powerfs::mount(dir.path()).expect("mount");
    let mp = mnt.mountpoint().to_owned();
    let _watchdog = Watchdog::arm(mp.clone());
    let mut f = File::create(mp.join("f")).expect("create f");
    f.write_all(b"data").expect("write f");
    mnt.hold_syncs(true);
    let sync = sync_in_thread("f", move || f.sync_all());
    assert!(eventually(PROMPTLY, || mnt.stats().waiting_syncs == 1));
    let start = Instant::now();
    drop(mnt);
    assert!(
        start.elapsed() < PROMPTLY,
        "unmount took {:?}",
        start.elapsed()
    );
    let (_, result) = sync.recv_timeout(PROMPTLY).expect("answered");
    assert_eq!(raw_os_error(result), Some(libc::EIO));
    assert!(!mounted(&mp));
}
