//! The current snapshot in a file of its own, `snapshot` beside sled's files
//! (store format 6).
//!
//! Store formats up to 5 kept it as one sled value. sled holds every value
//! of its trees in memory once written or read, whatever its cache size
//! says (a value too large for its log is a blob on disk, but its page in
//! memory still carries the whole value), so a node kept a second copy of
//! its state's encoding for good after its first snapshot: about 90 bytes
//! per hold (issue 18). In a file, the snapshot is in memory only while it
//! is built, sent or checked.
//!
//! The file holds exactly what the sled value held: a CRC32 frame
//! ([`crate::frame`]) around a [`raftlock_codec::StoredSnapshot`] (metadata
//! and data). It is replaced atomically and durably: written to
//! `snapshot.tmp`, `fdatasync`ed, renamed over `snapshot`, and the
//! directory synced, so a crash or a power cut leaves the old snapshot or
//! the new one, never a mix (tests/it/power.rs cuts power under it). A
//! `snapshot.tmp` left by a crash is deleted when the store opens.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::SnapshotMeta;
use crate::frame::CHECKSUM_LEN;

/// The current snapshot's file, in the store's directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// Where a new snapshot is written before it replaces the current one.
const TEMP_FILE: &str = "snapshot.tmp";

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// Writes `meta` and `data` as the current snapshot, durably (see the
/// module's documentation). The data is written from the caller's buffer:
/// no copy of it is made.
pub(crate) fn write(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    let (head, tail) = raftlock_codec::stored_snapshot_around(meta, data.len());
    let mut checksum = crc32fast::Hasher::new();
    for part in [&head[..], data, &tail[..]] {
        checksum.update(part);
    }
    let checksum = checksum.finalize().to_be_bytes();
    replace(dir, &[&checksum[..], &head, data, &tail])
}

/// Writes an already framed snapshot record (a format-5 store's sled
/// value) as the current snapshot, durably.
pub(crate) fn write_framed(dir: &Path, framed: &[u8]) -> io::Result<()> {
    debug_assert!(framed.len() >= CHECKSUM_LEN);
    replace(dir, &[framed])
}

fn replace(dir: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let temp = dir.join(TEMP_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temp, path(dir))?;
    sync_dir(dir)
}

/// The framed record of the current snapshot, if there is one.
pub(crate) fn read(dir: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path(dir)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a current snapshot file exists.
pub(crate) fn exists(dir: &Path) -> io::Result<bool> {
    path(dir).try_exists()
}

/// Deletes the current snapshot file, if any, durably.
pub(crate) fn remove(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(path(dir)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes a `snapshot.tmp` a crash left behind (it was never the current
/// snapshot: the rename had not happened).
pub(crate) fn remove_leftover(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(TEMP_FILE)) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "deleted a snapshot.tmp a crash left");
            sync_dir(dir)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
