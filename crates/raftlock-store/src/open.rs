//! Opening a node's store: one sled database, its trees, the format check,
//! and a full verification of what is stored before anything is served.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::OpenError;
use crate::layout::{
    FORMAT_VERSION_KEY, LOG_TREE, META_TREE, SM_TREE, SNAPSHOT_TREE, STORE_ID_KEY,
};
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::{LogId, frame, log_store, snapshot_file, state_machine};

/// The on-disk format this build reads and writes. 2: waiters and holds
/// record the Acquire entry they answer last (`requested_at`) and
/// CancelWait names the attempt it cancels (`as_of`); version 1 records do
/// not decode as version 2. 3: the state names its cluster and each node's
/// store (`ClusterIdentity`), the store has a random id, and the
/// membership holds peer addresses (the peer port is separate); leases
/// record the identity that granted them, and GrantLease, Acquire and
/// ForceRelease carry the caller's identity and its limits (auth,
/// docs/security.md); version 2 records do not decode as version 3.
/// 4: the state's header and snapshot end with the token epoch (fencing
/// tokens and ids are stamps, docs/safety.md); a version 3 store is
/// migrated when it is opened (`migrate.rs`).
/// 5: every value is in raftlock's versioned encoding (`raftlock_codec`:
/// protobuf in an envelope naming its format and kind) instead of bincode
/// of the Rust types, and snapshot data is format 4 (the same encoding);
/// version 3 and 4 stores are migrated when they are opened.
/// 6: the current snapshot is a file of its own (`snapshot`, beside
/// sled's files: `snapshot_file.rs`) instead of a value of the `snapshot`
/// tree, which sled kept in memory for good; the record is the same.
/// Stores of versions 3 to 5 are migrated when they are opened.
pub const FORMAT_VERSION: u32 = 6;

/// How to open a store. Every field is a resource or durability decision,
/// so callers see them rather than inherit sled's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's page cache. sled defaults to 1 GiB, far too much for a lock
    /// service embedded in someone else's process.
    pub cache_capacity_bytes: u64,
    /// sled's background flush period. Durability never depends on it (every
    /// acknowledged log write and vote is flushed explicitly); it only bounds
    /// how much state-machine work is replayed after a crash. `None` turns
    /// it off.
    pub background_flush_every_ms: Option<u64>,
    /// How many apply batches a slow [`StateMachineStore::subscribe`]r may
    /// fall behind before it misses some (and is told so by `broadcast`).
    pub event_buffer_len: usize,
    /// The state machine's records are saved to sled once this many
    /// entries were applied since the last save, or `state_save_every`
    /// passed (checked when entries are applied), not per entry (see
    /// `state_machine`). Both only bound what a restart re-applies from
    /// the log.
    pub state_save_every_entries: u64,
    pub state_save_every: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 64 * 1024 * 1024,
            background_flush_every_ms: Some(500),
            event_buffer_len: 1024,
            state_save_every_entries: state_machine::SAVE_EVERY_ENTRIES,
            state_save_every: state_machine::SAVE_EVERY,
        }
    }
}

/// The database and its trees, shared by both halves of the store.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) log: sled::Tree,
    pub(crate) meta: sled::Tree,
    pub(crate) sm: sled::Tree,
    pub(crate) snapshot: sled::Tree,
    /// The lowest log index not purged (last purged + 1; 0 before any
    /// purge). Entries below it may still be in the `log` tree while the
    /// purger deletes them in the background; readers skip them.
    pub(crate) first_kept: std::sync::atomic::AtomicU64,
    /// The highest log id openraft asked this process to purge up to: it is
    /// purged for openraft from then on, though its marker may wait for
    /// the state machine (`LogStore::purge`).
    pub(crate) purged: std::sync::Mutex<Option<LogId>>,
    /// How long each group flush of the log took (the flusher thread's
    /// `db.flush()`: sled's write of its buffers plus `fdatasync`).
    pub(crate) flush_times: Arc<crate::metrics::Histogram>,
    /// This store's random id, made when it was created: a node whose data
    /// was wiped comes back with another one, which its peers refuse.
    pub(crate) store_id: std::sync::OnceLock<String>,
    /// Dropped last (fields drop in order), after the database and trees.
    closed: CloseSignal,
}

/// Fires [`Closed`] once sled has really let go of the directory.
///
/// Dropping the last `sled::Db` handle is not enough: sled's background
/// writers may still hold the data file (and its lock) for a moment, and a
/// reopen in that moment fails with `AlreadyOpen` (seen in CI). So the drop
/// hands over to a short-lived thread that takes and releases the same
/// `flock` sled takes, then drops the sender. It takes it through a handle
/// of the data file opened with the store: opening the file only at close
/// would fail when the disk has gone (EIO after a power cut, a removed
/// directory) and report the store closed while sled still holds it.
struct CloseSignal {
    lock_file: PathBuf,
    /// Our own handle of `lock_file` (`None` if it could not be opened).
    handle: Option<std::fs::File>,
    sender: Option<tokio::sync::watch::Sender<()>>,
}

/// How long [`CloseSignal`] waits for sled's file lock before it reports
/// the store closed anyway (a reopen would then say `AlreadyOpen`).
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for CloseSignal {
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        let lock_file = std::mem::take(&mut self.lock_file);
        closing::begin(&lock_file);
        let path = lock_file.clone();
        let handle = self.handle.take();
        let wait = move || {
            if let Some(file) = handle {
                wait_for_file_lock(&path, &file, CLOSE_WAIT);
            }
            closing::end(&path);
            drop(sender);
        };
        // Not on the dropping thread: that may be an async runtime's worker.
        let spawned = std::thread::Builder::new()
            .name("raftlock-store-close".to_string())
            .spawn(wait);
        if let Err(e) = spawned {
            // The closure (and the sender) is gone: report closed now.
            closing::end(&lock_file);
            tracing::warn!(error = %e, "could not start the store's close thread");
        }
    }
}

/// The stores of this process that are closing: a reopen of one of their
/// directories waits for it (bounded) instead of failing with `AlreadyOpen`.
mod closing {
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};
    use std::sync::{Condvar, Mutex};
    use std::time::Instant;

    static CLOSING: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    static CLOSED: Condvar = Condvar::new();

    pub(super) fn begin(lock_file: &Path) {
        let mut closing = CLOSING.lock().unwrap_or_else(|e| e.into_inner());
        closing
            .get_or_insert_with(HashSet::new)
            .insert(lock_file.to_path_buf());
    }

    pub(super) fn end(lock_file: &Path) {
        let mut closing = CLOSING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = closing.as_mut() {
            set.remove(lock_file);
        }
        CLOSED.notify_all();
    }

    /// Waits until no store of `lock_file` is closing, or until `deadline`.
    pub(super) fn wait(lock_file: &Path, deadline: Instant) {
        let mut closing = CLOSING.lock().unwrap_or_else(|e| e.into_inner());
        while closing.as_ref().is_some_and(|set| set.contains(lock_file)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            closing = CLOSED
                .wait_timeout(closing, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Waits (bounded by `limit`) until nobody else holds the exclusive lock
/// on `file` (at `path`), the lock sled takes on its data file.
fn wait_for_file_lock(path: &Path, file: &std::fs::File, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_micros(200);
    loop {
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                return;
            }
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "sled's file lock is still held after the store was dropped");
                return;
            }
        }
    }
}

/// Tells when a store's database has been closed: every [`LogStore`],
/// [`StateMachineStore`], [`crate::LogReader`] and
/// [`crate::SnapshotBuilder`] of it dropped, sled's file lock released.
///
/// openraft drops its storage asynchronously (its state machine worker
/// outlives `Raft::shutdown` briefly), so a node that restarts in the same
/// process must wait for this before opening the directory again.
#[derive(Clone, Debug)]
pub struct Closed(tokio::sync::watch::Receiver<()>);

impl Closed {
    /// Waits until the database is closed.
    pub async fn wait(mut self) {
        // `changed` fails once the sender (in `Shared`) is dropped; nothing
        // is ever sent, so this loop runs once.
        while self.0.changed().await.is_ok() {}
    }

    /// Whether the database is closed already.
    pub fn is_closed(&self) -> bool {
        self.0.has_changed().is_err()
    }
}

impl Shared {
    /// The highest purge asked for in this process (see the field).
    pub(crate) fn purged(&self) -> Option<LogId> {
        *self
            .purged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_purged(&self, upto: LogId) {
        let mut purged = self
            .purged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *purged = (*purged).max(Some(upto));
    }

    pub(crate) fn closed(&self) -> Closed {
        match &self.closed.sender {
            Some(sender) => Closed(sender.subscribe()),
            None => unreachable!("the close signal fires only when Shared drops"),
        }
    }
}

/// Opens (creating if needed) the store of one node in `dir`.
///
/// Everything stored is verified first: the format version, every log entry,
/// the vote and other metadata, every state machine record and the current
/// snapshot. A damaged record is [`OpenError::Corrupt`] naming it.
/// sled's file lock makes a second open of the same directory, by any
/// process, fail with [`OpenError::AlreadyOpen`]; only a store of this
/// process that is still closing (dropped, see [`Closed`]) is waited for,
/// up to 10 s.
pub fn open(dir: &Path, options: StoreOptions) -> Result<(LogStore, StateMachineStore), OpenError> {
    // A store of this directory that this process dropped a moment ago may
    // still be letting go of it.
    closing::wait(&dir.join("db"), std::time::Instant::now() + CLOSE_WAIT);
    let db = open_sled(dir, &options)?;
    let tree = |name: &str| db.open_tree(name).map_err(|e| OpenError::from_sled(dir, e));
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        log: tree(LOG_TREE)?,
        meta: tree(META_TREE)?,
        sm: tree(SM_TREE)?,
        snapshot: tree(SNAPSHOT_TREE)?,
        db,
        first_kept: std::sync::atomic::AtomicU64::new(0),
        purged: std::sync::Mutex::new(None),
        flush_times: Arc::default(),
        store_id: std::sync::OnceLock::new(),
        closed: CloseSignal {
            lock_file: dir.join("db"),
            handle: std::fs::File::open(dir.join("db")).ok(),
            sender: Some(tokio::sync::watch::channel(()).0),
        },
    });
    check_format(&shared)?;
    let store_id = store_id(&shared)?;
    let _ = shared.store_id.set(store_id);
    log_store::verify_on_open(&shared)?;
    let stored_snapshot = verify_snapshot(&shared)?;
    let saver = state_machine::Saver::new(
        state_machine::load(&shared)?,
        options.state_save_every_entries.max(1),
        options.state_save_every,
    );
    let log_store = LogStore::new(Arc::clone(&shared), saver.clone())?;
    let state_machine =
        StateMachineStore::new(shared, saver, options.event_buffer_len, stored_snapshot);
    tracing::info!(dir = %dir.display(), "store opened");
    Ok((log_store, state_machine))
}

fn open_sled(dir: &Path, options: &StoreOptions) -> Result<sled::Db, OpenError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_capacity_bytes)
        .flush_every_ms(options.background_flush_every_ms);
    // sled 0.34 has `expect`s on some paths that read a damaged directory;
    // a bad directory must be an error for the operator, not a crash.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(OpenError::from_sled(dir, e)),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "sled panicked while opening".to_string());
            Err(OpenError::Corrupt {
                dir: dir.to_path_buf(),
                what: "sled database files".to_string(),
                detail,
            })
        }
    }
}

/// Writes the format version into a new store, refuses a newer one.
fn check_format(shared: &Shared) -> Result<(), OpenError> {
    let dir = &shared.dir;
    let sled_err = |e| OpenError::from_sled(dir, e);
    match shared.meta.get(FORMAT_VERSION_KEY).map_err(sled_err)? {
        Some(bytes) => {
            let found =
                frame::decode_format_version(&bytes).map_err(|d| OpenError::corrupt(dir, d))?;
            if found > FORMAT_VERSION {
                return Err(OpenError::NewerFormat {
                    dir: dir.clone(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            if found == 0 {
                // Version 1 is the first; 0 was never written.
                return Err(OpenError::Corrupt {
                    dir: dir.clone(),
                    what: "format version".to_string(),
                    detail: format!("{found} was never a raftlock format"),
                });
            }
            if (3..FORMAT_VERSION).contains(&found) {
                // Step by step: between two steps the store is a true store
                // of the format in between (crate::migrate).
                if found == 3 {
                    crate::migrate::from_v3(shared)?;
                }
                if found <= 4 {
                    crate::migrate::from_v4(shared)?;
                }
                crate::migrate::from_v5(shared)?;
                // The marker names the format it was made in: say the new one.
                write_marker(dir)?;
            } else if found < FORMAT_VERSION {
                return Err(OpenError::OlderFormat {
                    dir: dir.clone(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            if !marker_path(dir).exists() {
                write_marker(dir)?;
            }
            Ok(())
        }
        None => {
            let holds_data = !shared.log.is_empty()
                || !shared.sm.is_empty()
                || !shared.snapshot.is_empty()
                || snapshot_file::exists(dir).map_err(|source| OpenError::Io {
                    dir: dir.clone(),
                    source,
                })?
                || !shared.meta.is_empty();
            if holds_data {
                return Err(OpenError::Corrupt {
                    dir: dir.clone(),
                    what: "format version".to_string(),
                    detail: "missing, but the database holds data".to_string(),
                });
            }
            // sled recovers a damaged or missing data file as an empty
            // database without an error. A node that silently forgot its log
            // and vote must not come back as a new one (it could vote twice).
            if marker_path(dir).exists() {
                return Err(OpenError::Corrupt {
                    dir: dir.clone(),
                    what: "sled database".to_string(),
                    detail: format!(
                        "it is empty, but {MARKER_FILE} shows a store was created here: sled lost its data; replace this node (with a new node id) instead of restarting it"
                    ),
                });
            }
            shared
                .meta
                .insert(
                    FORMAT_VERSION_KEY,
                    frame::encode_format_version(FORMAT_VERSION),
                )
                .map_err(sled_err)?;
            shared.db.flush().map_err(sled_err)?;
            write_marker(dir)?;
            tracing::info!(dir = %dir.display(), version = FORMAT_VERSION, "new store created");
            Ok(())
        }
    }
}

/// This store's id: read, or made (16 random bytes, hex) and flushed when
/// the store is new.
fn store_id(shared: &Shared) -> Result<String, OpenError> {
    let dir = &shared.dir;
    let sled_err = |e| OpenError::from_sled(dir, e);
    if let Some(bytes) = shared.meta.get(STORE_ID_KEY).map_err(sled_err)? {
        return frame::decode_text(&"store id", &bytes).map_err(|d| OpenError::corrupt(dir, d));
    }
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| OpenError::Io {
        dir: dir.clone(),
        source: std::io::Error::other(format!("no randomness for the store id: {e}")),
    })?;
    let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
    shared
        .meta
        .insert(STORE_ID_KEY, frame::encode_text(&id))
        .map_err(sled_err)?;
    shared.db.flush().map_err(sled_err)?;
    Ok(id)
}

/// A file beside sled's own, written once the store exists, so that an
/// empty database where a store used to be is recognized as data loss.
pub const MARKER_FILE: &str = "raftlock-store";

fn marker_path(dir: &Path) -> PathBuf {
    dir.join(MARKER_FILE)
}

fn write_marker(dir: &Path) -> Result<(), OpenError> {
    let io = |source| OpenError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let text = format!(
        "raftlock-store format {FORMAT_VERSION}\nThe sled database in this directory holds a raftlock node's Raft log and state; the file snapshot beside it is its current snapshot.\n"
    );
    let file = std::fs::File::create(marker_path(dir)).map_err(io)?;
    std::io::Write::write_all(&mut &file, text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    // Make the new directory entry itself durable.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Checks the current snapshot fully (checksum, format, agreement with its
/// metadata), writes the state from it if it is newer than the saved state
/// (`state_machine::rewrite_if_behind`), and returns its last log id
/// (`None`: there is no snapshot, or one of an empty log). Deletes a
/// `snapshot.tmp` a crash left first.
fn verify_snapshot(shared: &Shared) -> Result<Option<LogId>, OpenError> {
    let dir = &shared.dir;
    let io = |source| OpenError::Io {
        dir: dir.clone(),
        source,
    };
    snapshot_file::remove_leftover(dir).map_err(io)?;
    let current = snapshot_file::open_current(dir).map_err(|e| match e {
        snapshot_file::OpenCurrentError::Damaged(d) => OpenError::corrupt(dir, d),
        snapshot_file::OpenCurrentError::Io(e) => io(e),
    })?;
    let Some((meta, file, start, len)) = current else {
        return Ok(None);
    };
    let data = snapshot_file::read_data(&file, start, len).map_err(io)?;
    // Checked whole (checksum, format, metadata, the state's invariants),
    // and decoded once: the state is written from it if the saved one is
    // behind.
    let body = state_machine::decode_snapshot_body(&meta, &data)
        .map_err(|d| OpenError::corrupt(dir, d))?;
    drop(data);
    state_machine::rewrite_if_behind(shared, &meta, body)?;
    Ok(meta.last_log_id)
}
