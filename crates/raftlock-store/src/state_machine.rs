//! The lock state machine (raftlock-core's [`State`]) in memory, persisted
//! record by record in the `sm` tree, and its snapshots.
//!
//! The records on disk lag the memory on purpose. A save writes one atomic
//! sled batch: every record changed since the previous save (as reported by
//! `State::take_dirty`) and the header with `last_applied` and membership,
//! so the tree always holds the state after some whole entry. `apply` saves
//! once [`SAVE_EVERY_ENTRIES`] entries or [`SAVE_EVERY`] have passed since
//! the last save (`StoreOptions` can change both), not per call: each sled batch seals sled's I/O buffer and
//! hands it to sled's thread pool for a write of its own, and that cost per
//! write was most of a node's CPU (docs/performance.md). Nothing is lost by
//! waiting: the log is durable and openraft re-applies the entries after
//! `last_applied` on restart. The purger saves (and flushes) before it
//! deletes any entry, so the saved state is never behind the log's first
//! entry; a dropped store saves what is left.

use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder,
    StorageIOError,
};
use raftlock_core::{Applied, Record, Response, State};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::{OpenError, damaged_error, join_error, sled_error, unencodable_error};
use crate::frame;
use crate::layout::{
    LEASE_PREFIX, LOCK_PREFIX, SM_HEADER_KEY, SmHeader, WAITER_PREFIX, lease_key, lock_key,
    waiter_key,
};
use crate::log_store::flush;
use crate::open::Shared;
use crate::snapshot_data::SnapshotData;
use crate::snapshot_file;
use crate::{
    Damaged, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// Version of the snapshot data format (snapshots travel between nodes that
/// may run different builds, and into backups, so the data carries its own
/// version). 4: the body is in raftlock's versioned encoding
/// ([`raftlock_codec::SnapshotBody`]); 3 (bincode, the state ending with its
/// token epoch) is still read, from peers of protocol 1 and from backups
/// of earlier builds, and written for protocol-1 peers
/// ([`snapshot_data_for_protocol_1`]); 2 is read only by the store's
/// migration (`migrate.rs`).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 4;

/// The snapshot data format that builds before 0.2 (peer protocol 1) read
/// and write.
pub const SNAPSHOT_FORMAT_V3: u32 = 3;

/// `apply` saves the state once this many entries are unsaved...
pub const SAVE_EVERY_ENTRIES: u64 = 1024;
/// ...or once this long has passed since the last save. Both bound what a
/// restart re-applies from the log, nothing else.
pub const SAVE_EVERY: Duration = Duration::from_millis(200);

/// The results of one `apply` call, in log order, as published to
/// [`StateMachineStore::subscribe`]rs.
pub type AppliedBatch = Arc<Vec<Applied>>;

/// Everything the state machine knows, kept together so that a reader or a
/// snapshot always sees a state with the `last_applied` and membership that
/// describe it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Machine {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// Read access to the live state machine, for the node's read paths.
#[derive(Clone)]
pub struct StateHandle {
    machine: Arc<RwLock<Machine>>,
}

impl StateHandle {
    /// Runs `f` on the current state under a read lock. Keep `f` short:
    /// `apply` waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&read(&self.machine).state)
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        read(&self.machine).last_applied
    }

    /// The membership of the last applied membership entry.
    pub fn membership(&self) -> StoredMembership {
        read(&self.machine).membership.clone()
    }

    /// One consistent copy of everything (state, last applied log id,
    /// membership), taken under one read lock, encoded as snapshot data.
    /// Encoding a large state is blocking work: call it off the async
    /// runtime's workers.
    pub fn snapshot_copy(&self) -> SnapshotCopy {
        // Separate `read`, `last_applied` and `membership` calls would take
        // the lock three times and could mix two states. Encoded under the
        // read lock, not from a clone: a clone would be a second full state
        // in memory, and takes about as long as the encoding (applies wait
        // either way).
        let machine = read(&self.machine);
        SnapshotCopy {
            last_applied: machine.last_applied,
            voters: machine.membership.membership().voter_ids().collect(),
            token_epoch: machine.state.token_epoch(),
            token_high_water: machine.state.token_high_water(),
            cluster_id: machine.state.cluster().id.clone(),
            leases: machine.state.lease_count() as u64,
            locks: machine.state.lock_count() as u64,
            data: encode_snapshot_data(&machine),
        }
    }
}

/// A copy of the state machine as snapshot data, with what a backup's
/// header tells about it (all from the same copy).
#[derive(Debug, Clone)]
pub struct SnapshotCopy {
    pub last_applied: Option<LogId>,
    pub voters: Vec<u64>,
    pub token_epoch: u16,
    pub token_high_water: u64,
    pub cluster_id: String,
    pub leases: u64,
    pub locks: u64,
    /// Snapshot data (checksummed, versioned: [`decode_snapshot_copy`]).
    pub data: Vec<u8>,
}

/// Decodes snapshot data made by [`StateHandle::snapshot_copy`] (or by a
/// snapshot of this format): its last applied log id and its state, with
/// the checksum, the format version and the state's invariants checked.
pub fn decode_snapshot_copy(data: &[u8]) -> Result<(Option<LogId>, State), Damaged> {
    let body = decode_snapshot_data(&"backup data", data)?;
    Ok((body.last_applied, body.state))
}

/// The snapshot data of `state` at `last_applied` with `membership` (what
/// a restore installs).
pub(crate) fn snapshot_data_of(
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
) -> Vec<u8> {
    encode_snapshot_data(&Machine {
        state,
        last_applied,
        membership,
    })
}

/// A poisoned lock means a panic happened while it was held; `apply` never
/// panics while holding it (it refuses to apply instead, see `write`), so
/// readers can still use the state.
fn read(machine: &RwLock<Machine>) -> RwLockReadGuard<'_, Machine> {
    machine.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the state machine's unsaved changes to the `sm` tree. Shared by
/// `apply` and the log's purger.
#[derive(Clone)]
pub(crate) struct Saver {
    machine: Arc<RwLock<Machine>>,
    /// Held from building a batch until sled has it, so batches reach sled
    /// in the order they were built: a later batch overtaken by an earlier
    /// one would leave records newer than the header that describes them.
    progress: Arc<Mutex<SaveProgress>>,
}

struct SaveProgress {
    unsaved_entries: u64,
    saved_at: Instant,
    every_entries: u64,
    every: Duration,
}

impl SaveProgress {
    /// What sled holds is the state in memory now.
    fn saved(&mut self) {
        self.unsaved_entries = 0;
        self.saved_at = Instant::now();
    }
}

impl Saver {
    pub(crate) fn new(machine: Machine, every_entries: u64, every: Duration) -> Self {
        Saver {
            machine: Arc::new(RwLock::new(machine)),
            progress: Arc::new(Mutex::new(SaveProgress {
                unsaved_entries: 0,
                saved_at: Instant::now(),
                every_entries,
                every,
            })),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, SaveProgress> {
        // The guarded counters stay meaningful after a panic elsewhere.
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `entries` newly applied and saves if the policy says so.
    fn applied(&self, tree: &sled::Tree, entries: u64) -> Result<(), sled::Error> {
        let mut progress = self.progress();
        progress.unsaved_entries += entries;
        if progress.unsaved_entries >= progress.every_entries
            || progress.saved_at.elapsed() >= progress.every
        {
            self.save_locked(tree, &mut progress)?;
        }
        Ok(())
    }

    /// Writes everything applied so far (one atomic batch; not flushed).
    /// The last log id applied to the state in memory (what a save now
    /// would cover).
    pub(crate) fn last_applied(&self) -> Option<LogId> {
        read(&self.machine).last_applied
    }

    pub(crate) fn save(&self, tree: &sled::Tree) -> Result<(), sled::Error> {
        let mut progress = self.progress();
        self.save_locked(tree, &mut progress)
    }

    fn save_locked(
        &self,
        tree: &sled::Tree,
        progress: &mut SaveProgress,
    ) -> Result<(), sled::Error> {
        let batch = {
            // A poisoned lock: see `read`; the state itself is whole.
            let mut machine = self.machine.write().unwrap_or_else(PoisonError::into_inner);
            dirty_batch(&mut machine)
        };
        tree.apply_batch(batch)?;
        progress.saved();
        Ok(())
    }
}

/// openraft's state machine storage for raftlock.
pub struct StateMachineStore {
    shared: Arc<Shared>,
    machine: Arc<RwLock<Machine>>,
    saver: Saver,
    events: broadcast::Sender<AppliedBatch>,
    /// Serializes writes of the current snapshot, so that a slow builder
    /// never replaces a newer snapshot with its older one.
    snapshot_write: Arc<Mutex<StoredSnapshotId>>,
}

impl StateMachineStore {
    /// `stored_snapshot`: the last log id of the current snapshot, as the
    /// store found it when it opened (`None`: there is none).
    pub(crate) fn new(
        shared: Arc<Shared>,
        saver: Saver,
        event_buffer_len: usize,
        stored_snapshot: Option<LogId>,
    ) -> Self {
        let (events, _) = broadcast::channel(event_buffer_len.max(1));
        StateMachineStore {
            shared,
            machine: Arc::clone(&saver.machine),
            saver,
            events,
            snapshot_write: Arc::new(Mutex::new(StoredSnapshotId(stored_snapshot))),
        }
    }

    /// A handle to read the live state (cheap to clone, shareable).
    pub fn handle(&self) -> StateHandle {
        StateHandle {
            machine: Arc::clone(&self.machine),
        }
    }

    /// Runs `f` on the current state under a read lock.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&read(&self.machine).state)
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        read(&self.machine).last_applied
    }

    /// Resolves once this store's database is closed (see [`crate::Closed`]).
    pub fn closed(&self) -> crate::Closed {
        self.shared.closed()
    }

    /// Receives the results of every later `apply` call, in order. A
    /// receiver more than `StoreOptions::event_buffer_len` batches behind
    /// gets `RecvError::Lagged` and must resynchronize from the state.
    pub fn subscribe(&self) -> broadcast::Receiver<AppliedBatch> {
        self.events.subscribe()
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, Machine>, StorageError> {
        self.machine.write().map_err(|_| {
            StorageIOError::new(
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
                AnyError::error("the state machine lock was poisoned by an earlier panic"),
            )
            .into()
        })
    }
}

impl Drop for StateMachineStore {
    fn drop(&mut self) {
        // What is unsaved would be re-applied from the log anyway; saving it
        // now makes the next start quicker. sled flushes as it closes.
        if let Err(e) = self.saver.save(&self.shared.sm) {
            tracing::warn!(error = %e, "could not save the state machine on close");
        }
    }
}

/// Loads the state machine from the `sm` tree when the store opens.
pub(crate) fn load(shared: &Shared) -> Result<Machine, OpenError> {
    let dir = &shared.dir;
    let corrupt = |d| OpenError::corrupt(dir, d);
    let mut header: Option<SmHeader> = None;
    let mut records = Vec::new();
    for item in shared.sm.iter() {
        let (key, value) = item.map_err(|e| OpenError::from_sled(dir, e))?;
        match key.split_first() {
            Some((_, [])) if key.as_ref() == SM_HEADER_KEY => {
                header = Some(frame::decode(&"state machine header", &value).map_err(corrupt)?);
            }
            Some((&LOCK_PREFIX, name)) => {
                let name = String::from_utf8_lossy(name);
                let what = format!("state machine lock {name:?}");
                match frame::decode(&what, &value).map_err(corrupt)? {
                    Record::Lock(lock) if *lock.name == *name => records.push(Record::Lock(lock)),
                    _ => return Err(corrupt(Damaged::new(&what, "holds another record"))),
                }
            }
            Some((&LEASE_PREFIX, id)) | Some((&WAITER_PREFIX, id)) => {
                let Ok(id) = <[u8; 8]>::try_from(id).map(u64::from_be_bytes) else {
                    return Err(corrupt(Damaged::new(
                        &"state machine",
                        format!("malformed key {:?}", key.as_ref()),
                    )));
                };
                let (what, record) = if key[0] == LEASE_PREFIX {
                    let what = format!("state machine lease {id}");
                    let record = frame::decode(&what, &value).map_err(corrupt)?;
                    let ok = matches!(&record, Record::Lease(l) if l.id == id);
                    (what, ok.then_some(record))
                } else {
                    let what = format!("state machine waiter {id}");
                    let record = frame::decode(&what, &value).map_err(corrupt)?;
                    let ok = matches!(&record, Record::Waiter(w) if w.id == id);
                    (what, ok.then_some(record))
                };
                let Some(record) = record else {
                    return Err(corrupt(Damaged::new(&what, "holds another record")));
                };
                records.push(record);
            }
            _ => {
                return Err(corrupt(Damaged::new(
                    &"state machine",
                    format!("unknown key {:?}", key.as_ref()),
                )));
            }
        }
    }
    let Some(header) = header else {
        if records.is_empty() {
            return Ok(Machine::default());
        }
        return Err(corrupt(Damaged::new(
            &"state machine header",
            format!("missing, but {} records are stored", records.len()),
        )));
    };
    let state = State::from_records(header.core, records)
        .map_err(|e| corrupt(Damaged::new(&"state machine", e.to_string())))?;
    tracing::info!(
        last_applied = ?header.last_applied,
        leases = state.leases().count(),
        "state machine loaded"
    );
    Ok(Machine {
        state,
        last_applied: header.last_applied,
        membership: header.membership,
    })
}

/// Applies an entry without a command (blank or membership).
/// Why `command` must not be applied under `membership`: forgetting the
/// record of a node that is still a voter or learner would let its id come
/// back with a new store while the cluster counts on the old one's log and
/// votes. Checked here, where every node sees the same membership at the
/// same index, not only by the node that proposed it.
fn still_a_member(
    membership: &StoredMembership,
    command: &raftlock_core::Command,
) -> Option<raftlock_core::LockError> {
    let raftlock_core::Command::ForgetMember { node } = command else {
        return None;
    };
    let m = membership.membership();
    let role = if m.voter_ids().any(|v| v == *node) {
        "voter"
    } else if m.get_node(node).is_some() {
        "learner"
    } else {
        return None;
    };
    Some(raftlock_core::LockError::InvalidArgument {
        field: "node".to_string(),
        reason: format!(
            "node {node} is still a {role}: remove it first (raftlock cluster remove {node})"
        ),
    })
}

/// An entry whose command is refused without being applied: its index is
/// applied, its answer is `error`.
fn refused(state: &mut State, index: u64, error: raftlock_core::LockError) -> Applied {
    let mut applied = state.apply_noop(index);
    if applied.result.is_ok() {
        applied.result = Err(error);
    }
    applied
}

fn noop(state: &mut State, index: u64) -> Applied {
    if index == 0 {
        // openraft's first entry (index 0, the membership written by
        // `initialize`) comes before raftlock-core's index space, where 0
        // means "nothing applied yet".
        return Applied {
            index,
            result: Ok(Response::Nothing),
            events: Vec::new(),
            revision: 0,
        };
    }
    state.apply_noop(index)
}

/// The header record of `machine`, framed.
fn header_record(machine: &Machine) -> Vec<u8> {
    frame::seal(&raftlock_codec::encode_sm_header(
        &machine.state.header(),
        machine.last_applied.as_ref(),
        &machine.membership,
    ))
}

/// The batch that persists what changed since the last call: every dirty
/// record (inserted, or removed if the state no longer has it) and the
/// header.
fn dirty_batch(machine: &mut Machine) -> sled::Batch {
    let dirty = machine.state.take_dirty();
    let state = &machine.state;
    let mut batch = sled::Batch::default();
    let mut put = |key: &[u8], bytes: Option<Vec<u8>>| match bytes {
        Some(bytes) => batch.insert(key, frame::seal(&bytes)),
        None => batch.remove(key),
    };
    for name in &dirty.locks {
        put(
            &lock_key(name),
            state.lock(name).map(raftlock_codec::encode_lock),
        );
    }
    for id in &dirty.leases {
        put(
            &lease_key(*id),
            state.lease(*id).map(raftlock_codec::encode_lease),
        );
    }
    for id in &dirty.waiters {
        put(
            &waiter_key(*id),
            state.waiter(*id).map(raftlock_codec::encode_waiter),
        );
    }
    batch.insert(SM_HEADER_KEY, header_record(machine));
    batch
}

/// How many records one sled batch of [`write_whole`] holds. sled's memory
/// grows with the size of a batch far beyond its contents: a million
/// records of 175 bytes in one batch took 7.3 GB and 28 s here, in batches
/// of 4,096 2.4 GB, of 512 0.2 GB and 4 s (a new learner of a cluster of a
/// million holds reached 7.2 GB installing its snapshot in one batch).
const WRITE_WHOLE_BATCH: usize = 512;

/// Makes the `sm` tree hold exactly `machine`: every other record removed,
/// every record written, in batches of [`WRITE_WHOLE_BATCH`], and the
/// header last (it is never removed before). Not atomic: the caller has
/// made the snapshot of `machine` durable first, so that a crash midway
/// leaves a snapshot newer than the saved header, from which the store
/// writes the tree again when it opens ([`rewrite_if_behind`]).
fn write_whole(tree: &sled::Tree, machine: &Machine) -> Result<(), sled::Error> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    let mut add = |batch: &mut sled::Batch, op: &dyn Fn(&mut sled::Batch)| {
        op(batch);
        in_batch += 1;
        if in_batch == WRITE_WHOLE_BATCH {
            in_batch = 0;
            tree.apply_batch(std::mem::take(batch))
        } else {
            Ok(())
        }
    };
    let state = &machine.state;
    for key in tree.iter().keys() {
        let key = key?;
        let kept = key.as_ref() == SM_HEADER_KEY
            || match key.split_first() {
                Some((&LOCK_PREFIX, name)) => {
                    std::str::from_utf8(name).is_ok_and(|name| state.lock(name).is_some())
                }
                _ => false,
            };
        if !kept {
            add(&mut batch, &|b| b.remove(key.clone()))?;
        }
    }
    for lock in state.locks() {
        let record = frame::seal(&raftlock_codec::encode_lock(lock));
        add(&mut batch, &|b| {
            b.insert(lock_key(&lock.name), record.clone())
        })?;
    }
    for lease in state.leases() {
        let record = frame::seal(&raftlock_codec::encode_lease(lease));
        add(&mut batch, &|b| {
            b.insert(&lease_key(lease.id), record.clone())
        })?;
    }
    for waiter in state.waiters() {
        let record = frame::seal(&raftlock_codec::encode_waiter(waiter));
        add(&mut batch, &|b| {
            b.insert(&waiter_key(waiter.id), record.clone())
        })?;
    }
    tree.apply_batch(batch)?;
    tree.insert(SM_HEADER_KEY, header_record(machine))?;
    Ok(())
}

/// When the store opens: if the current snapshot (`meta`, its decoded `body`) is newer
/// than the state the `sm` tree saved, the tree is written again from the
/// snapshot, and flushed. That is the state a crash left in the middle of
/// installing a snapshot (the snapshot is made durable first, then the tree
/// is rewritten in batches), and also after a crash that followed a
/// snapshot built from applied entries not yet saved; either way the newest
/// durable state is the snapshot's, and the log from there on is kept.
pub(crate) fn rewrite_if_behind(
    shared: &Shared,
    meta: &SnapshotMeta,
    body: raftlock_codec::SnapshotBody,
) -> Result<(), OpenError> {
    let dir = &shared.dir;
    let saved = match shared
        .sm
        .get(SM_HEADER_KEY)
        .map_err(|e| OpenError::from_sled(dir, e))?
    {
        Some(bytes) => {
            let header: SmHeader = frame::decode(&"state machine header", &bytes)
                .map_err(|d| OpenError::corrupt(dir, d))?;
            header.last_applied
        }
        None => None,
    };
    if meta.last_log_id <= saved {
        return Ok(());
    }
    tracing::info!(snapshot = %meta, saved = ?saved, "the snapshot is newer than the saved state: writing the state from it");
    let machine = Machine {
        state: body.state,
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
    };
    write_whole(&shared.sm, &machine).map_err(|e| OpenError::from_sled(dir, e))?;
    shared
        .db
        .flush()
        .map_err(|e| OpenError::from_sled(dir, e))?;
    Ok(())
}

/// The body of snapshot data of format 3 (and 2), after its version
/// prefix: bincode, as builds before 0.2 write and read it.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBodyV3 {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// `State::to_bytes` (bincode).
    state: Vec<u8>,
}

/// Snapshot data: checksum, then the format version (u32 big-endian, read
/// before anything else so that any build recognizes a newer format as
/// such), then the body: [`raftlock_codec::SnapshotBody`] since format 4.
///
/// Written in place, record by record: the bytes exist once, and no copy
/// of the state is made (issue 18: a snapshot's peak is the live state plus
/// its encoding, not a second state).
fn encode_snapshot_data(machine: &Machine) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&[0; frame::CHECKSUM_LEN]);
    data.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
    raftlock_codec::encode_snapshot_body_into(
        &mut data,
        machine.last_applied.as_ref(),
        &machine.membership,
        &machine.state,
    );
    let checksum = crc32fast::hash(&data[frame::CHECKSUM_LEN..]).to_be_bytes();
    data[..frame::CHECKSUM_LEN].copy_from_slice(&checksum);
    data
}

/// Snapshot data of format 3 (bincode), for builds before 0.2.
fn encode_snapshot_data_v3(machine: &Machine) -> Vec<u8> {
    let body = SnapshotBodyV3 {
        last_applied: machine.last_applied,
        membership: machine.membership.clone(),
        state: machine.state.to_bytes(),
    };
    versioned(SNAPSHOT_FORMAT_V3, &raftlock_core::encode(&body))
}

/// Whether snapshot data is of [`SNAPSHOT_FORMAT_VERSION`] (by its prefix;
/// not a check of the rest).
fn is_current_snapshot_format(data: &[u8]) -> bool {
    data.get(frame::CHECKSUM_LEN..frame::CHECKSUM_LEN + 4)
        == Some(&SNAPSHOT_FORMAT_VERSION.to_be_bytes()[..])
}

fn versioned(version: u32, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(frame::CHECKSUM_LEN + 4 + body.len());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(body);
    frame::seal_owned(payload)
}

/// Snapshot data decoded, in any format this build reads (3 or 4), with
/// the checksum and the state's invariants checked.
fn decode_snapshot_data(
    what: &dyn std::fmt::Display,
    data: &[u8],
) -> Result<raftlock_codec::SnapshotBody, Damaged> {
    let payload = frame::unseal(what, data)?;
    let Some((version, body)) = payload.split_first_chunk::<4>() else {
        return Err(Damaged::new(what, "no format version"));
    };
    match u32::from_be_bytes(*version) {
        // Record by record: no copy of the data and no message tree of it
        // beside the state being built.
        SNAPSHOT_FORMAT_VERSION => raftlock_codec::decode_snapshot_body(body)
            .map_err(|e| Damaged::new(what, e.to_string())),
        SNAPSHOT_FORMAT_V3 => {
            let body: SnapshotBodyV3 = raftlock_core::decode("snapshot", body)
                .map_err(|e| Damaged::new(what, e.to_string()))?;
            let state =
                State::from_bytes(&body.state).map_err(|e| Damaged::new(what, e.to_string()))?;
            Ok(raftlock_codec::SnapshotBody {
                last_applied: body.last_applied,
                membership: body.membership,
                state,
            })
        }
        version if version > SNAPSHOT_FORMAT_VERSION => Err(Damaged::new(
            what,
            format!(
                "snapshot data format {version} is newer than this build reads ({SNAPSHOT_FORMAT_V3} to {SNAPSHOT_FORMAT_VERSION}): upgrade this node (docs/operations.md, Upgrades)"
            ),
        )),
        version => Err(Damaged::new(
            what,
            format!(
                "snapshot data format {version}; this build reads {SNAPSHOT_FORMAT_V3} to {SNAPSHOT_FORMAT_VERSION}"
            ),
        )),
    }
}

/// Checks snapshot data against its metadata and decodes it.
pub(crate) fn decode_snapshot_body(
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<raftlock_codec::SnapshotBody, Damaged> {
    let what = format!("snapshot {}", meta.snapshot_id);
    let body = decode_snapshot_data(&what, data)?;
    check_against_meta(&what, meta, body.last_applied, &body.membership)?;
    Ok(body)
}

fn check_against_meta(
    what: &str,
    meta: &SnapshotMeta,
    last_applied: Option<LogId>,
    membership: &StoredMembership,
) -> Result<(), Damaged> {
    if last_applied != meta.last_log_id || *membership != meta.last_membership {
        return Err(Damaged::new(
            &what,
            format!(
                "data is of log id {:?}, metadata says {:?} (or the memberships differ)",
                last_applied, meta.last_log_id
            ),
        ));
    }
    Ok(())
}

/// Checks snapshot data fully: checksum, format version, agreement with its
/// metadata, decodability and the state's invariants. openraft treats an
/// error from `install_snapshot` as fatal, so a transport can call this
/// first and refuse a damaged transfer instead (the leader then retries).
pub fn verify_snapshot_data(meta: &SnapshotMeta, data: &[u8]) -> Result<(), Damaged> {
    decode_snapshot_body(meta, data).map(drop)
}

/// Snapshot data re-encoded in format 3, the one peers of protocol 1
/// (builds before 0.2) read: what a leader sends them. Data already in
/// format 3 is returned as it is.
pub fn snapshot_data_for_protocol_1(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, Damaged> {
    let what = format!("snapshot {}", meta.snapshot_id);
    let payload = frame::unseal(&what, data)?;
    if payload.get(..4) == Some(&SNAPSHOT_FORMAT_V3.to_be_bytes()[..]) {
        return Ok(data.to_vec());
    }
    let body = decode_snapshot_body(meta, data)?;
    Ok(encode_snapshot_data_v3(&Machine {
        state: body.state,
        last_applied: body.last_applied,
        membership: body.membership,
    }))
}

/// Snapshot data of format 2 (store format 3) re-encoded in format 3 (what
/// store format 4 holds), its state in token epoch 0; for the store's
/// migration, whose next step re-encodes it in this build's format.
pub(crate) fn snapshot_data_from_v2(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, Damaged> {
    let what = format!("snapshot {}", meta.snapshot_id);
    let payload = frame::unseal(&what, data)?;
    let Some((version, body)) = payload.split_first_chunk::<4>() else {
        return Err(Damaged::new(&what, "no format version"));
    };
    let version = u32::from_be_bytes(*version);
    if version != 2 {
        return Err(Damaged::new(
            &what,
            format!("format version {version}, expected 2"),
        ));
    }
    let body: SnapshotBodyV3 =
        raftlock_core::decode("snapshot", body).map_err(|e| Damaged::new(&what, e.to_string()))?;
    check_against_meta(&what, meta, body.last_applied, &body.membership)?;
    let state = raftlock_core::legacy::state_from_v3_bytes(&body.state)
        .map_err(|e| Damaged::new(&what, e.to_string()))?;
    Ok(encode_snapshot_data_v3(&Machine {
        state,
        last_applied: body.last_applied,
        membership: body.membership,
    }))
}

/// Snapshot data of format 3 (store format 4) re-encoded in this build's
/// format; for the store's migration.
pub(crate) fn snapshot_data_from_v3(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, Damaged> {
    let body = decode_snapshot_body(meta, data)?;
    Ok(encode_snapshot_data(&Machine {
        state: body.state,
        last_applied: body.last_applied,
        membership: body.membership,
    }))
}

/// Makes a snapshot the current one unless the current one is newer:
/// `write(newer)` writes it (durably) when `newer`, and only then is it
/// recorded as stored; `write(false)` may clean up. Under the mutex that
/// orders snapshot writes. Blocking work.
fn replace_snapshot_if_newer<T>(
    lock: &Mutex<StoredSnapshotId>,
    meta: &SnapshotMeta,
    write: impl FnOnce(bool) -> std::io::Result<T>,
) -> Result<T, StorageError> {
    let io = |e: std::io::Error| -> StorageError {
        StorageIOError::new(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Write,
            AnyError::new(&e),
        )
        .into()
    };
    let mut stored = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let newer = stored.0 <= meta.last_log_id;
    if !newer {
        tracing::debug!(kept = ?stored.0, dropped = %meta, "a newer snapshot is already stored");
    }
    let written = write(newer).map_err(io)?;
    if newer {
        stored.0 = meta.last_log_id;
    }
    Ok(written)
}

/// The last log id of the snapshot in the store (`None`: none, or one of
/// an empty log), found when the store opened (which reads and checks the
/// snapshot) and kept since, as only [`replace_snapshot_if_newer`] writes
/// it; behind the mutex that orders snapshot writes.
#[derive(Debug)]
pub(crate) struct StoredSnapshotId(pub(crate) Option<LogId>);

/// Builds snapshots from the state written by `get_snapshot_builder`.
pub struct SnapshotBuilder {
    /// Held until the build is done: openraft runs a build as a task it
    /// does not wait for, and the store must not count as closed (and be
    /// opened again) while a build may still rename its file into place.
    _open: Arc<Shared>,
    /// The snapshot, streamed to a temporary file under one read lock (its
    /// data, last applied log id and membership match); moved out by the
    /// one `build_snapshot` call.
    written: Option<std::io::Result<snapshot_file::TempSnapshot>>,
    snapshot_write: Arc<Mutex<StoredSnapshotId>>,
}

impl Drop for SnapshotBuilder {
    /// A builder dropped unbuilt deletes its file (open deletes any a
    /// crash leaves).
    fn drop(&mut self) {
        if let Some(Ok(temp)) = self.written.take() {
            temp.discard();
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // openraft builds once per builder; a second call has nothing to
        // build from (the file went into the first snapshot).
        let written = self.written.take().ok_or_else(|| {
            unencodable_error(
                ErrorSubject::Snapshot(None),
                Damaged::new(&"snapshot builder", "asked to build a second time"),
            )
        })?;
        let temp = written.map_err(|e| -> StorageError {
            StorageIOError::new(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Write,
                AnyError::new(&e),
            )
            .into()
        })?;
        let lock = Arc::clone(&self.snapshot_write);
        // Syncing a large file is blocking work, done off the state's lock.
        let (meta, file, start, len) = tokio::task::spawn_blocking(move || {
            let meta = temp.meta.clone();
            if let Err(e) = temp.sync() {
                temp.discard();
                return Err(StorageIOError::new(
                    ErrorSubject::Snapshot(Some(meta.signature())),
                    ErrorVerb::Write,
                    AnyError::new(&e),
                )
                .into());
            }
            let (file, start, len) =
                replace_snapshot_if_newer(&lock, &meta, |newer| temp.finish(newer))?;
            Ok::<_, StorageError>((meta, file, start, len))
        })
        .await
        .map_err(|e| join_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))??;
        tracing::info!(snapshot = %meta, bytes = len, "snapshot built");
        snapshot_from_file(meta, file, start, len)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let machine = read(&self.machine);
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        {
            let mut machine = self.write()?;
            for entry in entries {
                let index = entry.log_id.index;
                let applied_before = machine.state.last_applied();
                let applied = match entry.payload {
                    EntryPayload::Normal(request) => {
                        match still_a_member(&machine.membership, &request.command) {
                            Some(refusal) => refused(&mut machine.state, index, refusal),
                            None => machine.state.apply(index, &request),
                        }
                    }
                    EntryPayload::Blank => noop(&mut machine.state, index),
                    EntryPayload::Membership(membership) => {
                        machine.membership = StoredMembership::new(Some(entry.log_id), membership);
                        noop(&mut machine.state, index)
                    }
                };
                if index != 0 && index <= applied_before {
                    tracing::warn!(
                        index,
                        applied_before,
                        "entry at or below the applied index was not applied"
                    );
                }
                machine.last_applied = Some(entry.log_id);
                replies.push(applied);
            }
            if replies.is_empty() {
                return Ok(replies);
            }
        }
        self.saver
            .applied(&self.shared.sm, replies.len() as u64)
            .map_err(|e| sled_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        if self.events.receiver_count() > 0 {
            // No receiver is not an error: nobody is watching.
            let _ = self.events.send(Arc::new(replies.clone()));
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // Written under the read lock, record by record, straight into a
        // temporary file: the data matches its last_applied exactly, and
        // neither a second copy of the state nor its whole encoding is
        // ever in memory (issue 18). The builder then syncs the file and
        // makes it the current snapshot.
        let written = {
            let machine = read(&self.machine);
            snapshot_file::write_streamed(
                &self.shared.dir,
                machine.last_applied,
                &machine.membership,
                &machine.state,
                SNAPSHOT_FORMAT_VERSION,
                |crc| snapshot_id(machine.last_applied.as_ref(), crc),
            )
        };
        if let Err(e) = &written {
            tracing::warn!(error = %e, "writing a snapshot failed");
        }
        SnapshotBuilder {
            _open: Arc::clone(&self.shared),
            written: Some(written),
            snapshot_write: Arc::clone(&self.snapshot_write),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(SnapshotData::from_vec(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_bytes().await.map_err(|e| -> StorageError {
            StorageIOError::new(subject(), ErrorVerb::Read, AnyError::new(&e)).into()
        })?;
        let state = decode_snapshot_body(meta, &data)
            .map_err(|d| damaged_error(subject(), d))?
            .state;
        let applied = read(&self.machine).last_applied;
        if meta.last_log_id <= applied {
            tracing::info!(snapshot = %meta, applied = ?applied, "ignoring a snapshot that is not newer than the applied state");
            return Ok(());
        }
        let machine = Machine {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        // A leader of protocol 1 sends format 3: kept as this build's
        // format, so the store holds one format only.
        let data = if is_current_snapshot_format(&data) {
            data
        } else {
            encode_snapshot_data(&machine)
        };
        // The snapshot first, durably, then the records in small batches
        // (one batch of a million records cost sled gigabytes): a crash
        // midway leaves a snapshot newer than the saved state, and the
        // store writes the state from it when it opens
        // (`rewrite_if_behind`). Both are blocking work.
        let shared = Arc::clone(&self.shared);
        let lock = Arc::clone(&self.snapshot_write);
        let saver = self.saver.clone();
        let stored_meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            let stored = replace_snapshot_if_newer(&lock, &stored_meta, |newer| {
                if newer {
                    snapshot_file::write(&shared.dir, &stored_meta, &data)?;
                }
                Ok(newer)
            })?;
            // The stored snapshot is never ahead of the applied state, which
            // this one is ahead of; were it otherwise, the records must not
            // be rewritten without a snapshot to rewrite them from after a
            // crash.
            if !stored {
                return Err(StorageIOError::new(
                    ErrorSubject::Snapshot(Some(stored_meta.signature())),
                    ErrorVerb::Write,
                    AnyError::error("a snapshot newer than the applied state is stored already"),
                )
                .into());
            }
            drop(data);
            // No save of the old state may land after the replacement.
            let mut progress = saver.progress();
            write_whole(&shared.sm, &machine).map_err(|e| {
                sled_error(
                    ErrorSubject::Snapshot(Some(stored_meta.signature())),
                    ErrorVerb::Write,
                    e,
                )
            })?;
            *saver.machine.write().map_err(|_| -> StorageError {
                StorageIOError::new(
                    ErrorSubject::StateMachine,
                    ErrorVerb::Write,
                    AnyError::error("the state machine lock was poisoned by an earlier panic"),
                )
                .into()
            })? = machine;
            progress.saved();
            Ok::<_, StorageError>(())
        })
        .await
        .map_err(|e| join_error(subject(), ErrorVerb::Write, e))??;
        flush(&self.shared, subject()).await?;
        tracing::info!(snapshot = %meta, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        // Checked and handed out from its file: sending a snapshot holds
        // one chunk of it in memory at a time, not all of it.
        let dir = self.shared.dir.clone();
        let current = tokio::task::spawn_blocking(move || snapshot_file::open_current(&dir))
            .await
            .map_err(|e| join_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?
            .map_err(|e| match e {
                snapshot_file::OpenCurrentError::Damaged(d) => {
                    damaged_error(ErrorSubject::Snapshot(None), d)
                }
                snapshot_file::OpenCurrentError::Io(e) => StorageIOError::new(
                    ErrorSubject::Snapshot(None),
                    ErrorVerb::Read,
                    AnyError::new(&e),
                )
                .into(),
            })?;
        let Some((meta, file, start, len)) = current else {
            return Ok(None);
        };
        snapshot_from_file(meta, file, start, len).map(Some)
    }
}

/// The snapshot `meta` whose data is the `len` bytes of `file` from
/// `start`.
fn snapshot_from_file(
    meta: SnapshotMeta,
    file: std::fs::File,
    start: u64,
    len: u64,
) -> Result<Snapshot, StorageError> {
    let data = SnapshotData::from_file(file, start, len).map_err(|e| -> StorageError {
        StorageIOError::new(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Read,
            AnyError::new(&e),
        )
        .into()
    })?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(data),
    })
}

/// A snapshot's id: its last log id and its data's CRC32 (of a fixed
/// width: the file's room for the id is left before the CRC is known).
fn snapshot_id(last_applied: Option<&LogId>, data_crc: u32) -> String {
    match last_applied {
        Some(id) => format!("{}-{}-{data_crc:08x}", id.leader_id.term, id.index),
        None => format!("none-{data_crc:08x}"),
    }
}
