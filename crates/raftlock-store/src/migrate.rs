//! Migration of stores written by earlier formats, run by `open` before
//! anything else reads the store. The decoder is chosen by the format
//! version the store records, never by trying the new one and falling back
//! (bincode has no field names: `Header` is nested in `SmHeader`, so old
//! bytes read as the new shape could decode into garbage instead of
//! failing).
//!
//! Crash safety: every changed value and the new format version are written
//! in ONE sled transaction over the `sm`, `snapshot` and `meta` trees, then
//! flushed (durably: our sled's flush ends with `fdatasync`). A crash before
//! the transaction is recovered leaves the store exactly as the old build
//! wrote it, still saying so, and the next open migrates it again; after
//! it, the store is in the new format and says so. There is no state in
//! between to recover from.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::error::{Damaged, OpenError};
use crate::frame;
use crate::layout::{FORMAT_VERSION_KEY, SM_HEADER_KEY, SNAPSHOT_KEY, SmHeader, StoredSnapshot};
use crate::open::{FORMAT_VERSION, Shared};
use crate::state_machine::snapshot_data_from_v2;
use crate::{LogId, StoredMembership};

/// `SmHeader` as format 3 wrote it.
#[derive(Deserialize)]
struct SmHeaderV3 {
    core: raftlock_core::legacy::HeaderV3,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// Format 3 → 4: the state's header and the current snapshot gain the token
/// epoch (0, so every token and id keeps its value). Log entries, votes and
/// the lock, lease and waiter records encode as before.
pub(crate) fn from_v3(shared: &Shared) -> Result<(), OpenError> {
    let dir = &shared.dir;
    let sled_err = |e| OpenError::from_sled(dir, e);
    let corrupt = |d| OpenError::corrupt(dir, d);

    let header = match shared.sm.get(SM_HEADER_KEY).map_err(sled_err)? {
        Some(bytes) => {
            let old: SmHeaderV3 =
                frame::decode(&"state machine header (format 3)", &bytes).map_err(corrupt)?;
            Some(frame::encode(&SmHeader {
                core: old.core.into(),
                last_applied: old.last_applied,
                membership: old.membership,
            }))
        }
        None => None,
    };
    let snapshot = match shared.snapshot.get(SNAPSHOT_KEY).map_err(sled_err)? {
        Some(bytes) => {
            let old: StoredSnapshot =
                frame::decode(&"current snapshot (format 3)", &bytes).map_err(corrupt)?;
            let data = snapshot_data_from_v2(&old.meta, &old.data).map_err(corrupt)?;
            #[derive(Serialize)]
            struct StoredSnapshotRef<'a> {
                meta: &'a crate::SnapshotMeta,
                data: &'a [u8],
            }
            Some(frame::encode(&StoredSnapshotRef {
                meta: &old.meta,
                data: &data,
            }))
        }
        None => None,
    };

    let version = frame::encode(&FORMAT_VERSION);
    (&shared.sm, &shared.snapshot, &shared.meta)
        .transaction(|(sm, snap, meta)| {
            if let Some(header) = &header {
                sm.insert(SM_HEADER_KEY, header.as_slice())?;
            }
            if let Some(snapshot) = &snapshot {
                snap.insert(SNAPSHOT_KEY, snapshot.as_slice())?;
            }
            meta.insert(FORMAT_VERSION_KEY, version.as_slice())?;
            Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => sled_err(e),
            sled::transaction::TransactionError::Abort(()) => {
                corrupt(Damaged::new(&"format migration", "aborted"))
            }
        })?;
    shared.db.flush().map_err(sled_err)?;
    tracing::info!(dir = %dir.display(), from = 3, to = FORMAT_VERSION, "store migrated");
    Ok(())
}
