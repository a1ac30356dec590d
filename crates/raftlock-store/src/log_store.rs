//! The Raft log and vote, in the `log` and `meta` trees.
//!
//! Appends are group-committed: `append` writes its entries to sled and
//! hands the callback to a flusher thread, which flushes the database once
//! for every callback queued since its previous flush and then completes
//! them in order. openraft learns an entry is durable only after a flush
//! that covers it, and a burst of appends costs one fsync, not one each.
//!
//! Purging is asynchronous too: `purge` saves the state machine's records
//! and records the new `last_purged` (written to sled in that order, not
//! flushed) and returns, so the Raft core never stalls on deleting
//! thousands of entries; a purger thread flushes (making `last_purged` and every state machine
//! batch so far durable) and only then deletes the entries, oldest first.
//! Readers never see an entry at or below `last_purged`.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Weak};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};

use crate::error::{OpenError, damaged_error, join_error, sled_error, unencodable_error};
use crate::frame;
use crate::layout::{COMMITTED_KEY, LAST_PURGED_KEY, VOTE_KEY, log_index, log_key};
use crate::open::Shared;
use crate::state_machine::Saver;
use crate::{Damaged, Entry, LogId, StorageError, TypeConfig, Vote};

/// Most callbacks one flush completes. The flusher drains its queue up to
/// this many, so one flush never waits on an unbounded drain.
const MAX_CALLBACKS_PER_FLUSH: usize = 4096;

/// Entries the purger deletes in one sled batch: small enough that the
/// deletion interleaves with appends instead of holding sled's tree.
const PURGE_CHUNK: usize = 512;

/// openraft's log storage: entries, vote, committed and purged log ids.
pub struct LogStore {
    shared: Arc<Shared>,
    /// Saves the state machine's records (see `purge`).
    saver: Saver,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    /// Log ids up to which the purger deletes entries.
    purger: mpsc::Sender<LogId>,
}

/// A reader of the log for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogStore {
    pub(crate) fn new(shared: Arc<Shared>, saver: Saver) -> Result<Self, OpenError> {
        let (tx, rx) = mpsc::channel();
        // The threads hold the database weakly: dropping the stores closes
        // sled (and releases its file lock) as soon as a flush or purge step
        // in progress ends, without waiting for a thread to notice that its
        // channel closed. Reopen after `closed()` resolves.
        let weak = Arc::downgrade(&shared);
        let spawn_error = |source| OpenError::Io {
            dir: shared.dir.clone(),
            source,
        };
        std::thread::Builder::new()
            .name("raftlock-log-flush".to_string())
            .spawn(move || run_flusher(weak, rx))
            .map_err(spawn_error)?;
        let (purge_tx, purge_rx) = mpsc::channel();
        let weak = Arc::downgrade(&shared);
        let purger_saver = saver.clone();
        std::thread::Builder::new()
            .name("raftlock-log-purge".to_string())
            .spawn(move || run_purger(weak, purger_saver, purge_rx))
            .map_err(spawn_error)?;
        Ok(LogStore {
            shared,
            saver,
            flusher: tx,
            purger: purge_tx,
        })
    }

    /// Resolves once this store's database is closed (see [`crate::Closed`]).
    pub fn closed(&self) -> crate::Closed {
        self.shared.closed()
    }

    /// This store's random id, made when the store was created.
    pub fn store_id(&self) -> String {
        self.shared.store_id.get().cloned().unwrap_or_default()
    }

    /// How long the log's group flushes take (one observation per flush,
    /// which covers every append queued before it). Take it before handing
    /// the store to openraft.
    /// Makes everything written so far durable (one database flush, which
    /// our sled ends with `fdatasync`).
    pub(crate) async fn flush_all(&self) -> Result<(), StorageError> {
        flush(&self.shared, ErrorSubject::Logs).await
    }

    pub fn flush_times(&self) -> Arc<crate::metrics::Histogram> {
        Arc::clone(&self.shared.flush_times)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Flushes the whole database on a blocking thread.
    async fn flush(&self, subject: ErrorSubject<u64>) -> Result<(), StorageError> {
        flush(&self.shared, subject).await
    }
}

pub(crate) async fn flush(
    shared: &Arc<Shared>,
    subject: ErrorSubject<u64>,
) -> Result<(), StorageError> {
    let shared = Arc::clone(shared);
    let sub = subject.clone();
    tokio::task::spawn_blocking(move || shared.db.flush())
        .await
        .map_err(|e| join_error(sub, ErrorVerb::Write, e))?
        .map_err(|e| sled_error(subject, ErrorVerb::Write, e))?;
    Ok(())
}

/// The flusher thread: one flush per drained group of callbacks, completed
/// in arrival order. Ends when the `LogStore` (the only sender) is dropped.
///
/// Our openraft counts a leader's own entries towards a quorum when their
/// callback fires (vendor/README.md), taking the callback for entry N to
/// mean every entry up to N is durable: so callbacks must complete in order,
/// each after a flush of the whole database. Keep it that way.
fn run_flusher(shared: Weak<Shared>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_CALLBACKS_PER_FLUSH {
            match rx.try_recv() {
                Ok(callback) => group.push(callback),
                Err(_) => break,
            }
        }
        // Every write these callbacks acknowledge was made before its
        // callback was queued, so this flush covers all of them.
        let result = match shared.upgrade() {
            Some(shared) => {
                let started = std::time::Instant::now();
                let flushed = shared.db.flush().map(drop).map_err(|e| e.to_string());
                shared.flush_times.observe(started.elapsed());
                flushed
            }
            None => Err("the store was closed before its log was flushed".to_string()),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "flushing the log failed");
        }
        for callback in group {
            callback.log_io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

/// The purger thread: for each requested log id (the highest of those
/// queued), wait until the state machine in memory has applied it, save
/// it and record `last_purged`, flush, then delete the entries up to it,
/// oldest first and in chunks, so a crash at any point leaves a log without
/// holes whose entries at or below the durable `last_purged` are removed
/// on the next open. Ends when the `LogStore` is dropped or the database
/// closes.
fn run_purger(shared: Weak<Shared>, saver: Saver, rx: mpsc::Receiver<LogId>) {
    while let Ok(mut upto) = rx.recv() {
        while let Ok(next) = rx.try_recv() {
            upto = upto.max(next);
        }
        match purge_upto(&shared, &saver, upto) {
            Ok(true) => {}
            // The store was closed: what is left the next open removes.
            Ok(false) => return,
            // The entries stay until the next purge or open removes them;
            // nothing reads them meanwhile.
            Err(e) => tracing::error!(error = %e, upto = %upto, "purging the log failed"),
        }
    }
}

/// How often the purger looks whether an install it waits for is done.
const PURGE_WAIT_STEP: std::time::Duration = std::time::Duration::from_millis(20);

/// Holds the database only for one step at a time, so dropping the stores
/// still closes it at once (at most one flush or chunk later). `Ok(false)`
/// when it was closed meanwhile.
fn purge_upto(shared: &Weak<Shared>, saver: &Saver, upto: LogId) -> Result<bool, sled::Error> {
    // A follower's purge up to a snapshot it is installing comes before
    // the install is done (see `LogStore::purge`): the entries stay, and
    // `last_purged` is not recorded, until the state covers them (a crash
    // meanwhile keeps a log the saved state can replay).
    while saver.last_applied() < Some(upto) {
        if shared.strong_count() == 0 {
            return Ok(false);
        }
        std::thread::sleep(PURGE_WAIT_STEP);
    }
    // Before any entry goes: save the state machine (it covers `upto`),
    // record `last_purged`, then make both durable: after the deletion
    // the log can no longer replay those entries.
    let Some(db) = shared.upgrade() else {
        return Ok(false);
    };
    saver.save(&db.sm)?;
    write_last_purged(&db, upto)?;
    db.db.flush()?;
    drop(db);
    let mut count = 0usize;
    loop {
        let Some(db) = shared.upgrade() else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for key in db
            .log
            .range(..=log_key(upto.index))
            .keys()
            .take(PURGE_CHUNK)
        {
            batch.remove(key?);
            in_batch += 1;
        }
        if in_batch == 0 {
            break;
        }
        db.log.apply_batch(batch)?;
        count += in_batch;
    }
    tracing::debug!(upto = %upto, count, "log purged");
    Ok(true)
}

/// Records `upto` as the last purged log id unless a later one is
/// recorded (in memory: durable with the next flush).
fn write_last_purged(shared: &Shared, upto: LogId) -> Result<(), sled::Error> {
    let recorded: Option<LogId> = shared
        .meta
        .get(LAST_PURGED_KEY)?
        .and_then(|bytes| frame::decode(&"last purged log id", &bytes).ok());
    if recorded.is_some_and(|r| r.index >= upto.index) {
        return Ok(());
    }
    let bytes = frame::encode(&"last purged log id", &upto).map_err(|d| {
        sled::Error::Unsupported(format!("cannot encode the last purged log id: {d}"))
    })?;
    shared.meta.insert(LAST_PURGED_KEY, bytes)?;
    Ok(())
}

/// Checks the stored log when the store opens: every entry's checksum and
/// decoding, its index against its key, no holes, and the vote, committed
/// and last-purged records. Removes entries at or below `last_purged` that a
/// crash during `purge` left behind.
pub(crate) fn verify_on_open(shared: &Shared) -> Result<(), OpenError> {
    let dir = &shared.dir;
    let sled_err = |e| OpenError::from_sled(dir, e);
    let corrupt = |d| OpenError::corrupt(dir, d);
    let _: Option<Vote> = read_meta(shared, VOTE_KEY, "vote").map_err(corrupt)?;
    let _: Option<Option<LogId>> =
        read_meta(shared, COMMITTED_KEY, "committed log id").map_err(corrupt)?;
    let last_purged: Option<LogId> =
        read_meta(shared, LAST_PURGED_KEY, "last purged log id").map_err(corrupt)?;

    if let Some(purged) = last_purged {
        shared.first_kept.store(purged.index + 1, Ordering::Release);
        let mut stale = sled::Batch::default();
        let mut count = 0u64;
        for item in shared.log.range(..=log_key(purged.index)) {
            let (key, _) = item.map_err(sled_err)?;
            stale.remove(key);
            count += 1;
        }
        if count > 0 {
            shared.log.apply_batch(stale).map_err(sled_err)?;
            tracing::info!(
                count,
                upto = purged.index,
                "removed log entries left by an interrupted purge"
            );
        }
    }

    let mut previous: Option<u64> = None;
    for item in shared.log.iter() {
        let (key, value) = item.map_err(sled_err)?;
        let entry = decode_entry(&key, &value).map_err(corrupt)?;
        let index = entry.log_id.index;
        if let Some(previous) = previous
            && index != previous + 1
        {
            return Err(OpenError::Corrupt {
                dir: dir.clone(),
                what: "log".to_string(),
                detail: format!("entries {} to {} are missing", previous + 1, index - 1),
            });
        }
        previous = Some(index);
    }
    Ok(())
}

/// Reads one `meta` record; `None` if it was never written.
fn read_meta<T: raftlock_codec::Codec>(
    shared: &Shared,
    key: &[u8],
    what: &str,
) -> Result<Option<T>, Damaged> {
    let bytes = shared
        .meta
        .get(key)
        .map_err(|e| Damaged::new(&what, format!("unreadable: {e}")))?;
    bytes.map(|b| frame::decode(&what, &b)).transpose()
}

/// Decodes a log entry and checks it is stored under its own index.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, Damaged> {
    let Some(index) = log_index(key) else {
        return Err(Damaged::new(
            &"log",
            format!("key of {} bytes is not a log index", key.len()),
        ));
    };
    let what = format!("log entry {index}");
    let entry: Entry = frame::decode(&what, value)?;
    if entry.log_id.index != index {
        return Err(Damaged::new(
            &what,
            format!("holds the entry of index {}", entry.log_id.index),
        ));
    }
    Ok(entry)
}

fn read_entries<RB: RangeBounds<u64>>(
    shared: &Shared,
    range: RB,
) -> Result<Vec<Entry>, StorageError> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => match s.checked_add(1) {
            Some(s) => s,
            None => return Ok(Vec::new()),
        },
        Bound::Unbounded => 0,
    };
    // Entries the purger has not deleted yet are gone for readers.
    let start = start.max(shared.first_kept.load(Ordering::Acquire));
    let end = match range.end_bound() {
        Bound::Included(&e) if e < start => return Ok(Vec::new()),
        Bound::Excluded(&e) if e <= start => return Ok(Vec::new()),
        Bound::Included(&e) => Bound::Included(log_key(e)),
        Bound::Excluded(&e) => Bound::Excluded(log_key(e)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let mut entries = Vec::new();
    for item in shared.log.range((Bound::Included(log_key(start)), end)) {
        let (key, value) = item.map_err(|e| sled_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let entry = decode_entry(&key, &value).map_err(|d| {
            let subject = log_index(&key).map_or(ErrorSubject::Logs, ErrorSubject::LogIndex);
            damaged_error(subject, d)
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.shared, range)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.shared, range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let recorded: Option<LogId> =
            read_meta(&self.shared, LAST_PURGED_KEY, "last purged log id")
                .map_err(|d| damaged_error(ErrorSubject::Logs, d))?;
        let last_purged = recorded.max(self.shared.purged());
        let last = self
            .shared
            .log
            .last()
            .map_err(|e| sled_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_log_id = match last {
            Some((key, value)) => {
                let entry =
                    decode_entry(&key, &value).map_err(|d| damaged_error(ErrorSubject::Logs, d))?;
                // An entry left for the purger is not the last one.
                Some(entry.log_id).max(last_purged)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.shared
            .meta
            .insert(
                VOTE_KEY,
                frame::encode(&"vote", vote)
                    .map_err(|d| unencodable_error(ErrorSubject::Vote, d))?,
            )
            .map_err(|e| sled_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        // The vote must be on disk before it is acted on. The flush covers
        // the whole database, so a leader that steps down also has every
        // entry it appended on disk before it answers as a follower (our
        // openraft does not wait for a leader's own appends).
        self.flush(ErrorSubject::Vote).await?;
        tracing::debug!(%vote, "vote saved");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        read_meta(&self.shared, VOTE_KEY, "vote").map_err(|d| damaged_error(ErrorSubject::Vote, d))
    }

    /// Not flushed: a committed id lost in a crash only means re-learning
    /// it from the leader, and it is written after the entries it covers.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.shared
            .meta
            .insert(
                COMMITTED_KEY,
                frame::encode(&"committed log id", &committed)
                    .map_err(|d| unencodable_error(ErrorSubject::Store, d))?,
            )
            .map_err(|e| sled_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> =
            read_meta(&self.shared, COMMITTED_KEY, "committed log id")
                .map_err(|d| damaged_error(ErrorSubject::Store, d))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One insert per entry, in index order, not one sled batch: a batch
        // seals sled's I/O buffer and has its thread pool write it at once
        // (two hand-offs and a write per append, most of a node's CPU per
        // Raft write), while inserts wait in the buffer for the flush below.
        // An append needs no atomicity, only that what survives a crash is
        // a prefix of it: sled recovers its log up to the first gap, and
        // `verify_on_open` refuses a log with a hole. What a crash cuts
        // off was never acknowledged (the flush had not returned).
        // In-memory sled writes (microseconds); only the flush is slow,
        // and that happens on the flusher thread.
        let mut last = None;
        for entry in entries {
            // Only an entry the codec could not read back fails here (a
            // batch nested too deep, which no leader proposes); refusing it
            // before it is stored beats a log that cannot be read.
            let value = frame::encode(&format!("log entry {}", entry.log_id.index), &entry)
                .map_err(|d| unencodable_error(ErrorSubject::Logs, d))?;
            self.shared
                .log
                .insert(log_key(entry.log_id.index), value)
                .map_err(|e| sled_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            last = Some(entry.log_id);
        }
        if let Err(mpsc::SendError(callback)) = self.flusher.send(callback) {
            let e = io::Error::other("the log flusher thread is gone");
            let error = sled_error(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                sled::Error::Io(io::Error::other(e.to_string())),
            );
            callback.log_io_completed(Err(e));
            return Err(error);
        }
        tracing::trace!(last = ?last, "log entries written, flush queued");
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.shared.log.range(log_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| sled_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(key);
        }
        self.shared
            .log
            .apply_batch(batch)
            .map_err(|e| sled_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        // A truncated entry that came back after a crash could be taken for
        // a valid one and conflict with what replaced it.
        self.flush(ErrorSubject::Logs).await?;
        tracing::debug!(since = %log_id, "log truncated");
        Ok(())
    }

    /// Returns once `last_purged` is recorded (or, ahead of the state
    /// machine, left to the purger); the entries are deleted by the purger
    /// thread (see the module's documentation).
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let previous: Option<LogId> =
            read_meta(&self.shared, LAST_PURGED_KEY, "last purged log id")
                .map_err(|d| damaged_error(ErrorSubject::Logs, d))?;
        if previous
            .max(self.shared.purged())
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        self.shared.set_purged(log_id);
        // The state machine's records first, then the marker: sled keeps a
        // prefix of its writes in a crash, so any flush that makes this
        // marker durable (the log flusher's, a vote's, sled's background
        // one) makes the saved state that covers it durable too. The other
        // way round a crash could keep the marker without the save: the
        // next open would drop entries the saved state does not include,
        // and the node could not replay them. In-memory work (no flush);
        // the purger saves and flushes again before deleting anything.
        //
        // openraft purges applied entries, with one exception: a follower
        // installing a snapshot purges up to it at once, before the install
        // (on the state machine's task) is done. Then the state in memory
        // does not cover `log_id` yet, and the marker is left to the
        // purger, which waits for the install.
        if self.saver.last_applied() >= Some(log_id) {
            self.saver
                .save(&self.shared.sm)
                .map_err(|e| sled_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
            write_last_purged(&self.shared, log_id)
                .map_err(|e| sled_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        }
        // Nothing reads a purged entry: openraft's own view is purged.
        self.shared
            .first_kept
            .fetch_max(log_id.index + 1, Ordering::AcqRel);
        if self.purger.send(log_id).is_err() {
            // Without the purger the entries stay; the next open removes
            // them once `last_purged` is durable. Nothing reads them.
            tracing::warn!(upto = %log_id, "the log purger thread is gone");
        }
        tracing::debug!(upto = %log_id, "log purge queued");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::{StoreOptions, open};

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// Damage that happens while the store is open is caught on read, not
    /// only when opening.
    #[tokio::test]
    async fn damage_found_while_running_is_a_storage_error_naming_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _sm) = open(dir.path(), StoreOptions::default()).expect("open");
        log.blocking_append((1..=5).map(blank))
            .await
            .expect("append");
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");

        let mut bad = log
            .shared
            .log
            .get(log_key(3))
            .expect("get")
            .expect("some")
            .to_vec();
        bad[6] ^= 0x01;
        log.shared.log.insert(log_key(3), bad).expect("insert");
        let error = log.try_get_log_entries(1..=5).await.expect_err("damaged");
        assert!(error.to_string().contains("log entry 3"), "{error}");
        let mut reader = log.get_log_reader().await;
        assert!(reader.try_get_log_entries(2..4).await.is_err());
        assert_eq!(
            reader.try_get_log_entries(4..).await.expect("intact").len(),
            2
        );

        log.shared
            .meta
            .insert(VOTE_KEY, &b"\0\0\0\0junk"[..])
            .expect("insert");
        let error = log.read_vote().await.expect_err("damaged");
        assert!(error.to_string().contains("vote"), "{error}");
    }

    /// The `last_applied` of the state machine as saved in sled (not as
    /// in memory).
    fn saved_applied(log: &LogStore) -> Option<u64> {
        let bytes = log
            .shared
            .sm
            .get(crate::layout::SM_HEADER_KEY)
            .expect("read")?;
        let header: crate::layout::SmHeader = frame::decode(&"header", &bytes).expect("decode");
        header.last_applied.map(|l| l.index)
    }

    /// Saves only when `every_entries` are unsaved (no timer in the way).
    fn lazy(every_entries: u64) -> StoreOptions {
        StoreOptions {
            state_save_every_entries: every_entries,
            state_save_every: std::time::Duration::from_secs(3600),
            ..StoreOptions::default()
        }
    }

    #[tokio::test]
    async fn applied_state_is_saved_every_n_entries_not_per_apply() {
        use openraft::storage::RaftStateMachine;
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, mut sm) = open(dir.path(), lazy(10)).expect("open");
        log.blocking_append((1..=25).map(blank))
            .await
            .expect("append");
        for index in 1..=9 {
            sm.apply([blank(index)]).await.expect("apply");
        }
        assert_eq!(saved_applied(&log), None, "nothing saved before 10 entries");
        sm.apply([blank(10)]).await.expect("apply");
        assert_eq!(saved_applied(&log), Some(10));
        sm.apply((11..=25).map(blank)).await.expect("apply");
        assert_eq!(
            saved_applied(&log),
            Some(25),
            "one call of 15 entries saves"
        );
    }

    #[tokio::test]
    async fn the_purger_saves_the_state_machine_before_deleting_entries() {
        use openraft::storage::RaftStateMachine;
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, mut sm) = open(dir.path(), lazy(1_000_000)).expect("open");
        log.blocking_append((1..=20).map(blank))
            .await
            .expect("append");
        for index in 1..=20 {
            sm.apply([blank(index)]).await.expect("apply");
        }
        assert_eq!(saved_applied(&log), None, "applies alone save nothing here");
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 15))
            .await
            .expect("purge");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.shared.log.get(log_key(15)).expect("read").is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the purger deletes entry 15"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Once an entry is gone the log cannot replay it: the saved state
        // must already include it.
        assert_eq!(saved_applied(&log), Some(20));
    }

    /// A follower installing a snapshot gets openraft's purge up to it
    /// before the install is done. Until the state covers the purge,
    /// neither an entry nor the marker may go: a crash meanwhile (here: a
    /// close, which flushes everything sled holds) must leave a log the
    /// saved state can replay. Once the state has applied it, the purge
    /// completes.
    #[tokio::test]
    async fn a_purge_ahead_of_the_state_waits_until_the_state_covers_it() {
        use openraft::storage::RaftStateMachine;
        let purge_to = LogId::new(CommittedLeaderId::new(1, 1), 15);
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, mut sm) = open(dir.path(), lazy(1_000_000)).expect("open");
            log.blocking_append((1..=20).map(blank))
                .await
                .expect("append");
            sm.apply((1..=5).map(blank)).await.expect("apply");
            log.purge(purge_to).await.expect("purge");
            tokio::time::sleep(PURGE_WAIT_STEP * 10).await;
            assert!(
                log.shared.log.get(log_key(6)).expect("read").is_some(),
                "entry 6 is kept while the state is at 5"
            );
            let closed = log.closed();
            drop((log, sm));
            closed.wait().await;
        }
        {
            let (mut log, mut sm) = open(dir.path(), lazy(1_000_000)).expect("open");
            let state = log.get_log_state().await.expect("log state");
            assert_eq!(state.last_purged_log_id, None, "no marker was made durable");
            assert_eq!(
                log.try_get_log_entries(1..=20).await.expect("read").len(),
                20,
                "every entry is there to replay"
            );
            // The state catches up: the purge goes through.
            sm.apply((1..=15).map(blank)).await.expect("apply");
            log.purge(purge_to).await.expect("purge");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while log.shared.log.get(log_key(15)).expect("read").is_some() {
                assert!(std::time::Instant::now() < deadline, "entry 15 is purged");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert_eq!(
                log.get_log_state()
                    .await
                    .expect("log state")
                    .last_purged_log_id,
                Some(purge_to)
            );
        }
    }

    /// `purge` writes its marker after a save of the state machine, so
    /// no flush (the log flusher's, a vote's) can make the marker durable
    /// without the state it relies on. The purger thread never hears of
    /// this purge (its own save would hide the bug).
    #[tokio::test]
    async fn purge_saves_the_state_machine_before_writing_its_marker() {
        use openraft::storage::RaftStateMachine;
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, mut sm) = open(dir.path(), lazy(1_000_000)).expect("open");
        let (unheard, _kept) = mpsc::channel();
        log.purger = unheard;
        log.blocking_append((1..=20).map(blank))
            .await
            .expect("append");
        sm.apply((1..=20).map(blank)).await.expect("apply");
        assert_eq!(saved_applied(&log), None, "applies alone save nothing here");
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 15))
            .await
            .expect("purge");
        assert_eq!(
            saved_applied(&log),
            Some(20),
            "the state is saved before the purge marker is written"
        );
    }

    #[tokio::test]
    async fn empty_and_inverted_ranges_read_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _sm) = open(dir.path(), StoreOptions::default()).expect("open");
        log.blocking_append((1..=5).map(blank))
            .await
            .expect("append");
        assert!(
            log.try_get_log_entries(3..3)
                .await
                .expect("read")
                .is_empty()
        );
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = 4..2;
        assert!(
            log.try_get_log_entries(inverted)
                .await
                .expect("read")
                .is_empty()
        );
        assert_eq!(log.try_get_log_entries(..=2).await.expect("read").len(), 2);
        assert_eq!(
            log.try_get_log_entries((Bound::Excluded(u64::MAX), Bound::Unbounded))
                .await
                .expect("read")
                .len(),
            0
        );
    }
}
