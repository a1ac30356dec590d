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
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raftlock_codec::{StreamedSnapshotBody, stored_snapshot_around_padded, stored_snapshot_layout};
use raftlock_core::State;

use crate::error::Damaged;
use crate::frame::CHECKSUM_LEN;
use crate::{LogId, SnapshotMeta, StoredMembership};

/// The current snapshot's file, in the store's directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// Where a new snapshot is written before it replaces the current one (a
/// built one adds a number: `snapshot.tmp.7`).
const TEMP_FILE: &str = "snapshot.tmp";

/// How much of the encoded state is in memory at once while a snapshot is
/// streamed to its file.
const PIECE: usize = 256 * 1024;

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

/// A snapshot written straight from the state into a temporary file
/// ([`write_streamed`]), not yet synced and not yet the current one.
#[derive(Debug)]
pub(crate) struct TempSnapshot {
    path: PathBuf,
    file: File,
    pub(crate) meta: SnapshotMeta,
    data_start: u64,
    pub(crate) data_len: u64,
}

/// Writes the snapshot of `state` (applied up to `last_applied`, under
/// `membership`) into `snapshot.tmp.N`, record by record: the state's
/// encoding is in memory a [`PIECE`] at a time, never whole (issue 18: it
/// was 90 MB at a million holds, on top of the state, at every snapshot).
///
/// The file's bytes are those [`write`] gives for the same snapshot, but
/// for the widths of four lengths: they are
/// [padded](raftlock_codec::encode_padded_len), so the bytes before the
/// records have a known size and are written last; the checksums over
/// them are combined from the records' checksum (`crc32fast`'s `combine`).
/// `version` is the snapshot data format; `snapshot_id` names the
/// snapshot from its data's CRC32 and must give ids of one length.
pub(crate) fn write_streamed(
    dir: &Path,
    last_applied: Option<LogId>,
    membership: &StoredMembership,
    state: &State,
    version: u32,
    snapshot_id: impl Fn(u32) -> String,
) -> io::Result<TempSnapshot> {
    let codec = |e: raftlock_codec::CodecError| io::Error::other(e.to_string());
    let body = StreamedSnapshotBody::new(last_applied.as_ref(), membership, state);
    let body_head_len = body.head(0).map_err(codec)?.len();
    let mut meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership.clone(),
        snapshot_id: snapshot_id(0),
    };
    let around_len = stored_snapshot_around_padded(&meta, 0)
        .map_err(codec)?
        .0
        .len();
    // The file: checksum, the stored snapshot's head, then the data:
    // checksum, version, the body's head, the records, the body's tail;
    // then the stored snapshot's tail.
    let records_at = CHECKSUM_LEN + around_len + CHECKSUM_LEN + 4 + body_head_len;
    // Numbered: a build's file and an install's never share a name.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{TEMP_FILE}.{seq}"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    // A failure below deletes the unfinished file (open deletes any a
    // crash leaves).
    let mut unfinished = DeleteOnDrop(Some(path.clone()));
    file.seek(SeekFrom::Start(records_at as u64))?;
    let mut records_crc = crc32fast::Hasher::new();
    let records_len = body.write_records(PIECE, |piece| {
        records_crc.update(piece);
        file.write_all(piece)
    })?;
    let body_head = body.head(records_len).map_err(codec)?;
    let body_tail = body.tail();
    debug_assert_eq!(body_head.len(), body_head_len);
    // The data's checksum covers what follows it; its id's, all of it.
    let mut after_checksum = crc32fast::Hasher::new();
    after_checksum.update(&version.to_be_bytes());
    after_checksum.update(&body_head);
    after_checksum.combine(&records_crc);
    after_checksum.update(&body_tail);
    let data_checksum = after_checksum.clone().finalize().to_be_bytes();
    let mut data_crc = crc32fast::Hasher::new();
    data_crc.update(&data_checksum);
    data_crc.combine(&after_checksum);
    let data_len = (CHECKSUM_LEN + 4 + body_head.len() + body_tail.len()) as u64 + records_len;
    meta.snapshot_id = snapshot_id(data_crc.clone().finalize());
    let (around_head, around_tail) =
        stored_snapshot_around_padded(&meta, data_len).map_err(codec)?;
    if around_head.len() != around_len {
        return Err(io::Error::other(format!(
            "snapshot id {:?} is not as long as the one the file's room was left for",
            meta.snapshot_id
        )));
    }
    let mut framed = crc32fast::Hasher::new();
    framed.update(&around_head);
    framed.combine(&data_crc);
    framed.update(&around_tail);
    file.write_all(&body_tail)?;
    file.write_all(&around_tail)?;
    let mut head = Vec::with_capacity(records_at);
    head.extend_from_slice(&framed.finalize().to_be_bytes());
    head.extend_from_slice(&around_head);
    head.extend_from_slice(&data_checksum);
    head.extend_from_slice(&version.to_be_bytes());
    head.extend_from_slice(&body_head);
    debug_assert_eq!(head.len(), records_at);
    file.write_all_at(&head, 0)?;
    unfinished.0 = None;
    Ok(TempSnapshot {
        path,
        file,
        meta,
        data_start: (CHECKSUM_LEN + around_len) as u64,
        data_len,
    })
}

/// Deletes its file when dropped, unless emptied first.
struct DeleteOnDrop(Option<PathBuf>);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl TempSnapshot {
    /// Syncs the file (the slow part: run it off the state's lock).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Makes the synced file the current snapshot (rename, then the
    /// directory synced), or with `keep == false` deletes it; either way
    /// returns the open file and where its data lies.
    pub(crate) fn finish(self, keep: bool) -> io::Result<(File, u64, u64)> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if keep {
            std::fs::rename(&self.path, path(dir))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        sync_dir(dir)?;
        Ok((self.file, self.data_start, self.data_len))
    }

    /// Deletes the file after a failure (best effort: open removes what is
    /// left).
    pub(crate) fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why the current snapshot could not be opened.
#[derive(Debug)]
pub(crate) enum OpenCurrentError {
    Io(io::Error),
    Damaged(Damaged),
}

impl From<io::Error> for OpenCurrentError {
    fn from(e: io::Error) -> Self {
        OpenCurrentError::Io(e)
    }
}

/// The current snapshot, checked (its file's checksum, its envelope) but
/// not read into memory: its metadata, its file, and where its data lies
/// in it. The data itself is checked by whoever decodes it.
pub(crate) fn open_current(
    dir: &Path,
) -> Result<Option<(SnapshotMeta, File, u64, u64)>, OpenCurrentError> {
    const HEAD: usize = 64 * 1024;
    let what = format!("current snapshot (file {SNAPSHOT_FILE})");
    let damaged = |detail: String| OpenCurrentError::Damaged(Damaged::new(&what, detail));
    let mut file = match File::open(path(dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file_len = file.metadata()?.len();
    let Some(payload_len) = file_len.checked_sub(CHECKSUM_LEN as u64) else {
        return Err(damaged(format!(
            "{file_len} bytes: shorter than its checksum"
        )));
    };
    // The checksum over everything after it, one piece at a time.
    let mut checksum = [0u8; CHECKSUM_LEN];
    file.read_exact(&mut checksum)?;
    let mut head = Vec::with_capacity(HEAD);
    let mut crc = crc32fast::Hasher::new();
    let mut piece = vec![0u8; PIECE];
    loop {
        let n = file.read(&mut piece)?;
        if n == 0 {
            break;
        }
        crc.update(&piece[..n]);
        if head.len() < HEAD {
            let take = n.min(HEAD - head.len());
            head.extend_from_slice(&piece[..take]);
        }
    }
    if crc.finalize() != u32::from_be_bytes(checksum) {
        return Err(damaged("checksum mismatch".into()));
    }
    let layout = stored_snapshot_layout(&head, payload_len).map_err(|e| damaged(e.to_string()))?;
    let mut after = Vec::new();
    file.seek(SeekFrom::Start(CHECKSUM_LEN as u64 + layout.data_end()))?;
    file.read_to_end(&mut after)?;
    layout
        .check_after_data(&after)
        .map_err(|e| damaged(e.to_string()))?;
    Ok(Some((
        layout.meta.clone(),
        file,
        CHECKSUM_LEN as u64 + layout.data_start,
        layout.data_len,
    )))
}

/// The `len` bytes of `file` from `start`: a snapshot's data, in memory.
pub(crate) fn read_data(file: &File, start: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "snapshot larger than memory"))?;
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, start)?;
    Ok(data)
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

/// Deletes every `snapshot.tmp` (and `snapshot.tmp.N`) a crash left
/// behind (none was ever the current snapshot: its rename had not
/// happened).
pub(crate) fn remove_leftover(dir: &Path) -> io::Result<()> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name == TEMP_FILE
            || name
                .strip_prefix(TEMP_FILE)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if ours {
            std::fs::remove_file(entry.path())?;
            tracing::info!(dir = %dir.display(), file = name, "deleted a snapshot file a crash left unfinished");
            removed = true;
        }
    }
    if removed { sync_dir(dir) } else { Ok(()) }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
