//! Migration of stores written by earlier formats, run by `open` before
//! anything else reads the store. The decoder is chosen by the format
//! version the store records, never by trying the new one and falling back
//! (bincode has no field names: `Header` is nested in `SmHeader`, so old
//! bytes read as the new shape could decode into garbage instead of
//! failing).
//!
//! Crash safety: each step writes every changed value and the new format
//! version in ONE sled transaction over the trees it changes, then flushes
//! (durably: our sled's flush ends with `fdatasync`). A crash before the
//! transaction is recovered leaves the store exactly as the old build
//! wrote it, still saying so, and the next open migrates it again; after
//! it, the store is in the new format and says so. There is no state in
//! between to recover from. Older formats migrate step by step (3 → 4 →
//! 5 → 6), each such a transaction; between them the store is a true store
//! of the format in between (the release that wrote it opens it). The step
//! 5 → 6 also writes a file first (see [`from_v5`]).
//!
//! Cost: one step holds every converted value in memory until its
//! transaction commits (a few times the size of the state), and reads and
//! writes the whole store once: the first start of a new build on an old
//! store takes longer and more memory than later ones (docs/operations.md,
//! Upgrades).

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::error::{Damaged, OpenError};
use crate::frame::{self, legacy};
use crate::layout::{
    COMMITTED_KEY, FORCED_AT_KEY, FORMAT_VERSION_KEY, LAST_PURGED_KEY, SM_HEADER_KEY, SNAPSHOT_KEY,
    STORE_ID_KEY, VOTE_KEY, log_index,
};
use crate::open::Shared;
use crate::state_machine::{snapshot_data_from_v2, snapshot_data_from_v3};
use crate::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};

/// `SmHeader` as format 3 wrote it.
#[derive(Deserialize)]
struct SmHeaderV3 {
    core: raftlock_core::legacy::HeaderV3,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// `SmHeader` as format 4 wrote it (bincode of these fields, in order).
#[derive(Serialize, Deserialize)]
struct SmHeaderV4 {
    core: raftlock_core::Header,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The current snapshot as formats 3 and 4 wrote it.
#[derive(Serialize, Deserialize)]
struct StoredSnapshotV4 {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// What one migration step writes: new values per tree (the format
/// version is added by [`commit`]).
#[derive(Default)]
struct Rewrite {
    log: Vec<(sled::IVec, Vec<u8>)>,
    /// Log entries to delete (purged ones a crash left behind).
    log_removed: Vec<sled::IVec>,
    meta: Vec<(sled::IVec, Vec<u8>)>,
    sm: Vec<(sled::IVec, Vec<u8>)>,
    snapshot: Vec<(sled::IVec, Vec<u8>)>,
    /// Delete the current snapshot's sled value (it moved to its file).
    snapshot_removed: bool,
}

/// Format 3 → 4: the state's header and the current snapshot gain the token
/// epoch (0, so every token and id keeps its value). Log entries, votes and
/// the lock, lease and waiter records encode as before.
pub(crate) fn from_v3(shared: &Shared) -> Result<(), OpenError> {
    let dir = &shared.dir;
    let sled_err = |e| OpenError::from_sled(dir, e);
    let corrupt = |d| OpenError::corrupt(dir, d);
    let mut rewrite = Rewrite::default();

    if let Some(bytes) = shared.sm.get(SM_HEADER_KEY).map_err(sled_err)? {
        let old: SmHeaderV3 =
            legacy::decode(&"state machine header (format 3)", &bytes).map_err(corrupt)?;
        let new = legacy::encode(&SmHeaderV4 {
            core: old.core.into(),
            last_applied: old.last_applied,
            membership: old.membership,
        });
        rewrite.sm.push((SM_HEADER_KEY.into(), new));
    }
    if let Some(bytes) = shared.snapshot.get(SNAPSHOT_KEY).map_err(sled_err)? {
        let old: StoredSnapshotV4 =
            legacy::decode(&"current snapshot (format 3)", &bytes).map_err(corrupt)?;
        // Format 3 snapshot data, as format 4 stores hold it: a crash
        // before the next step leaves a true format-4 store.
        let data = snapshot_data_from_v2(&old.meta, &old.data).map_err(corrupt)?;
        let new = legacy::encode(&StoredSnapshotV4 {
            meta: old.meta,
            data,
        });
        rewrite.snapshot.push((SNAPSHOT_KEY.into(), new));
    }
    commit(shared, rewrite, 3, 4)
}

/// Format 4 → 5: every value moves from bincode of the Rust types to
/// raftlock's versioned encoding (`raftlock_codec`), the current snapshot's
/// data to snapshot format 4. The values themselves do not change.
pub(crate) fn from_v4(shared: &Shared) -> Result<(), OpenError> {
    let dir = &shared.dir;
    let sled_err = |e| OpenError::from_sled(dir, e);
    let corrupt = |d| OpenError::corrupt(dir, d);
    let mut rewrite = Rewrite::default();

    // Entries at or below the purge point are leftovers of a purge a crash
    // cut short, which open deletes unread: deleted here, not decoded
    // (damage in them must not stop an upgrade).
    let purged: Option<LogId> = match shared.meta.get(LAST_PURGED_KEY).map_err(sled_err)? {
        Some(bytes) => {
            Some(legacy::decode(&"last purged log id (format 4)", &bytes).map_err(corrupt)?)
        }
        None => None,
    };
    for item in shared.log.iter() {
        let (key, value) = item.map_err(sled_err)?;
        let Some(index) = log_index(&key) else {
            return Err(corrupt(Damaged::new(
                &"log",
                format!("key of {} bytes is not a log index", key.len()),
            )));
        };
        if purged.is_some_and(|p| index <= p.index) {
            rewrite.log_removed.push(key);
            continue;
        }
        let what = format!("log entry {index} (format 4)");
        let entry: Entry = legacy::decode(&what, &value).map_err(corrupt)?;
        rewrite
            .log
            .push((key, frame::encode(&what, &entry).map_err(corrupt)?));
    }

    for item in shared.meta.iter() {
        let (key, value) = item.map_err(sled_err)?;
        let new = match key.as_ref() {
            FORMAT_VERSION_KEY => continue,
            VOTE_KEY => {
                let vote: Vote = legacy::decode(&"vote (format 4)", &value).map_err(corrupt)?;
                frame::encode(&"vote", &vote)
            }
            COMMITTED_KEY => {
                let committed: Option<LogId> =
                    legacy::decode(&"committed log id (format 4)", &value).map_err(corrupt)?;
                frame::encode(&"committed log id", &committed)
            }
            LAST_PURGED_KEY | FORCED_AT_KEY => {
                let what = String::from_utf8_lossy(&key).into_owned();
                let id: LogId =
                    legacy::decode(&format!("{what} (format 4)"), &value).map_err(corrupt)?;
                frame::encode(&what, &id)
            }
            STORE_ID_KEY => {
                let id: String = legacy::decode(&"store id (format 4)", &value).map_err(corrupt)?;
                Ok(frame::encode_text(&id))
            }
            other => {
                return Err(corrupt(Damaged::new(
                    &"meta",
                    format!("unknown key {:?}", String::from_utf8_lossy(other)),
                )));
            }
        };
        rewrite.meta.push((key, new.map_err(corrupt)?));
    }

    for item in shared.sm.iter() {
        let (key, value) = item.map_err(sled_err)?;
        let new = if key.as_ref() == SM_HEADER_KEY {
            let old: SmHeaderV4 =
                legacy::decode(&"state machine header (format 4)", &value).map_err(corrupt)?;
            frame::seal(&raftlock_codec::encode_sm_header(
                &old.core,
                old.last_applied.as_ref(),
                &old.membership,
            ))
        } else {
            // Which record a key should hold is checked when the state is
            // loaded, right after this.
            let what = format!("state machine record {:?} (format 4)", key.as_ref());
            let record: raftlock_core::Record = legacy::decode(&what, &value).map_err(corrupt)?;
            frame::encode(&what, &record).map_err(corrupt)?
        };
        rewrite.sm.push((key, new));
    }

    if let Some(bytes) = shared.snapshot.get(SNAPSHOT_KEY).map_err(sled_err)? {
        let old: StoredSnapshotV4 =
            legacy::decode(&"current snapshot (format 4)", &bytes).map_err(corrupt)?;
        let data = snapshot_data_from_v3(&old.meta, &old.data).map_err(corrupt)?;
        let new = frame::seal(&raftlock_codec::encode_stored_snapshot(&old.meta, &data));
        rewrite.snapshot.push((SNAPSHOT_KEY.into(), new));
    }
    commit(shared, rewrite, 4, 5)
}

/// Format 5 → 6: the current snapshot moves from the `snapshot` tree to
/// its own file ([`crate::snapshot_file`]), byte for byte. The file is
/// written and synced first, then one transaction deletes the sled value
/// and records format 6: a crash before it leaves a format-5 store whose
/// next open moves the snapshot again (the file is rewritten whole), and
/// the previous release, opening it, never looks at the file.
pub(crate) fn from_v5(shared: &Shared) -> Result<(), OpenError> {
    let dir = &shared.dir;
    let sled_err = |e| OpenError::from_sled(dir, e);
    let io = |source| OpenError::Io {
        dir: dir.clone(),
        source,
    };
    match shared.snapshot.get(SNAPSHOT_KEY).map_err(sled_err)? {
        Some(bytes) => {
            // Checked whole (checksum, data against its metadata) when the
            // store opens, right after this; the frame is checked here so
            // that a damaged value is named as the sled value it is.
            frame::unseal(&"current snapshot (format 5)", &bytes)
                .map_err(|d| OpenError::corrupt(dir, d))?;
            crate::snapshot_file::write_framed(dir, &bytes).map_err(io)?;
        }
        // A file left by an upgrade that crashed before its transaction,
        // after which the previous release ran without a snapshot.
        None => crate::snapshot_file::remove(dir).map_err(io)?,
    }
    let rewrite = Rewrite {
        snapshot_removed: true,
        ..Rewrite::default()
    };
    commit(shared, rewrite, 5, 6)
}

/// Writes `rewrite` and format version `to` in one transaction, flushed.
fn commit(shared: &Shared, rewrite: Rewrite, from: u32, to: u32) -> Result<(), OpenError> {
    let dir = &shared.dir;
    let sled_err = |e| OpenError::from_sled(dir, e);
    let version = frame::encode_format_version(to);
    fn put(
        tree: &TransactionalTree,
        values: &[(sled::IVec, Vec<u8>)],
    ) -> Result<(), ConflictableTransactionError<()>> {
        for (key, value) in values {
            tree.insert(key, value.as_slice())?;
        }
        Ok(())
    }
    (&shared.log, &shared.meta, &shared.sm, &shared.snapshot)
        .transaction(|(log, meta, sm, snapshot)| {
            for key in &rewrite.log_removed {
                log.remove(key)?;
            }
            put(log, &rewrite.log)?;
            put(meta, &rewrite.meta)?;
            put(sm, &rewrite.sm)?;
            put(snapshot, &rewrite.snapshot)?;
            if rewrite.snapshot_removed {
                snapshot.remove(SNAPSHOT_KEY)?;
            }
            meta.insert(FORMAT_VERSION_KEY, version.as_slice())?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            TransactionError::Storage(e) => sled_err(e),
            TransactionError::Abort(()) => OpenError::corrupt(
                dir,
                Damaged::new(&format!("format migration {from} to {to}"), "aborted"),
            ),
        })?;
    shared.db.flush().map_err(sled_err)?;
    tracing::info!(dir = %dir.display(), from, to, entries = rewrite.log.len(), records = rewrite.sm.len(), "store migrated");
    Ok(())
}
