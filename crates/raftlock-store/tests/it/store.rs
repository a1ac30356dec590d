//! Durability, checksums, opening rules and snapshots of the sled store.

use crate::common;

use std::path::Path;

use common::{DrawOp, blank, log_id, membership, normal, open, replay, request};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, RaftSnapshotBuilder};
use proptest::prelude::*;
use raftlock_core::{Applied, State};
use raftlock_store::layout::{
    FORMAT_VERSION_KEY, LOG_TREE, META_TREE, SM_HEADER_KEY, SM_TREE, VOTE_KEY, lock_key, log_key,
};
use raftlock_store::snapshot_file::SNAPSHOT_FILE;
use raftlock_store::{
    Entry, FORMAT_VERSION, LogStore, OpenError, SnapshotData, StateMachineStore, Vote, frame, sled,
};
use raftlock_testkit::rng::Rng;

/// Appends and applies `count` generated commands after `after`, one entry
/// per append and apply call (as a leader under light load does).
async fn run_commands(
    log: &mut LogStore,
    sm: &mut StateMachineStore,
    rng: &mut Rng,
    after: u64,
    count: u64,
    clock: &mut u64,
) -> Vec<Entry> {
    let mut entries = Vec::new();
    for index in after + 1..=after + count {
        let op = rng.op();
        let req = sm.read(|s| request(s, op, clock));
        let entry = normal(1, index, req);
        log.blocking_append([entry.clone()]).await.expect("append");
        sm.apply([entry.clone()]).await.expect("apply");
        entries.push(entry);
    }
    entries
}

/// Overwrites one value in a closed store with raw sled, as disk damage would.
/// A store just dropped may still hold the directory's lock while its
/// background threads finish (as the store's own open does, wait for it,
/// bounded).
fn damage(dir: &Path, tree: &str, key: &[u8], edit: impl FnOnce(&mut Vec<u8>)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(dir) {
            Ok(db) => break db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("raw sled opens: {e:?}"),
        }
    };
    let tree = db.open_tree(tree).expect("tree");
    let mut value = tree
        .get(key)
        .expect("read")
        .expect("record exists")
        .to_vec();
    edit(&mut value);
    tree.insert(key, value).expect("write");
    db.flush().expect("flush");
}

fn flip_last_byte(value: &mut [u8]) {
    if let Some(last) = value.last_mut() {
        *last ^= 0x40;
    }
}

fn expect_corrupt(dir: &Path, named: &str) -> String {
    match raftlock_store::open(dir, common::options()) {
        Err(e @ OpenError::Corrupt { .. }) => {
            let OpenError::Corrupt { what, .. } = &e else {
                unreachable!()
            };
            assert!(what.contains(named), "names {named:?}: {e}");
            e.to_string()
        }
        Err(e) => panic!("expected Corrupt naming {named:?}, got {e}"),
        Ok(_) => panic!("expected Corrupt naming {named:?}, the store opened"),
    }
}

#[tokio::test]
async fn reopen_keeps_log_vote_committed_purged_and_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::new(7);
    let mut clock = 0;
    let (entries, state, applied, vote) = {
        let (mut log, mut sm) = open(dir.path());
        let vote = Vote::new_committed(3, 1);
        log.save_vote(&vote).await.expect("vote");
        let first = [membership(1, 0, &[1, 2, 3]), blank(1, 1)];
        log.blocking_append(first.clone()).await.expect("append");
        sm.apply(first.clone()).await.expect("apply");
        let mut entries = first.to_vec();
        entries.extend(run_commands(&mut log, &mut sm, &mut rng, 1, 80, &mut clock).await);
        log.save_committed(Some(log_id(1, 81)))
            .await
            .expect("committed");
        let state = sm.read(State::clone);
        (entries, state, sm.last_applied(), vote)
    };
    assert!(state.leases().count() > 0, "the commands did something");

    let (mut log, mut sm) = open(dir.path());
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 81))
    );
    let stored = log.try_get_log_entries(..).await.expect("log");
    assert_eq!(stored, entries);
    assert_eq!(sm.read(State::clone), state);
    assert_eq!(sm.last_applied(), applied);
    let (_, members) = sm.applied_state().await.expect("applied state");
    assert_eq!(members.log_id(), &Some(log_id(1, 0)));
    assert_eq!(
        replay(&entries),
        state,
        "stored state = a replay of the log"
    );

    log.purge(log_id(1, 40)).await.expect("purge");
    // At once, whether or not the purger has deleted them yet, purged
    // entries are gone for readers.
    let stored = log.try_get_log_entries(..).await.expect("log");
    assert_eq!(stored, entries[41..].to_vec());
    let state_now = log.get_log_state().await.expect("log state");
    assert_eq!(state_now.last_purged_log_id, Some(log_id(1, 40)));
    log.truncate(log_id(1, 70)).await.expect("truncate");
    // The purger thread may still be deleting: the directory is free once
    // the store reports itself closed.
    let closed = log.closed();
    drop((log, sm));
    tokio::time::timeout(std::time::Duration::from_secs(10), closed.wait())
        .await
        .expect("the store closes");

    let (mut log, _sm) = open(dir.path());
    let state_after = log.get_log_state().await.expect("log state");
    assert_eq!(state_after.last_purged_log_id, Some(log_id(1, 40)));
    assert_eq!(state_after.last_log_id, Some(log_id(1, 69)));
    let stored = log.try_get_log_entries(..).await.expect("log");
    assert_eq!(stored, entries[41..70].to_vec());
}

#[tokio::test]
async fn purging_everything_keeps_last_purged_as_last_log_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = {
        let (mut log, mut sm) = open(dir.path());
        log.blocking_append((1..=5).map(|i| blank(1, i)))
            .await
            .expect("append");
        // Only applied entries are purged (a purge ahead of the state
        // waits for it: log_store.rs).
        sm.apply((1..=5).map(|i| blank(1, i))).await.expect("apply");
        log.purge(log_id(1, 5)).await.expect("purge");
        log.closed()
    };
    // The purger may still be flushing: the directory is free once the
    // store reports itself closed.
    tokio::time::timeout(std::time::Duration::from_secs(10), closed.wait())
        .await
        .expect("the store closes");
    let (mut log, _sm) = open(dir.path());
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert!(log.try_get_log_entries(..).await.expect("log").is_empty());
}

#[tokio::test]
async fn subscribers_receive_every_applied_batch_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut sm) = open(dir.path());
    let mut events = sm.subscribe();
    let mut rng = Rng::new(11);
    let mut clock = 0;
    let entries = run_commands(&mut log, &mut sm, &mut rng, 0, 20, &mut clock).await;
    let mut seen: Vec<Applied> = Vec::new();
    while let Ok(batch) = events.try_recv() {
        seen.extend(batch.iter().cloned());
    }
    assert_eq!(seen.len(), entries.len());
    assert!(seen.windows(2).all(|w| w[0].index < w[1].index));
}

#[tokio::test]
async fn damaged_log_entry_is_reported_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append((1..=5).map(|i| blank(1, i)))
            .await
            .expect("append");
    }
    damage(dir.path(), LOG_TREE, &log_key(3), |v| flip_last_byte(v));
    let message = expect_corrupt(dir.path(), "log entry 3");
    assert!(message.contains("checksum mismatch"), "{message}");
}

#[tokio::test]
async fn log_entry_stored_under_another_index_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append((1..=5).map(|i| blank(1, i)))
            .await
            .expect("append");
    }
    // A well-formed record in the wrong place: the checksum alone passes.
    damage(dir.path(), LOG_TREE, &log_key(4), |v| {
        *v = frame::encode(&"entry", &blank(1, 2)).expect("encodes");
    });
    expect_corrupt(dir.path(), "log entry 4");
}

#[tokio::test]
async fn damaged_state_machine_record_is_reported_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = {
        let (mut log, mut sm) = open(dir.path());
        let mut rng = Rng::new(3);
        let mut clock = 0;
        // Bounded: 2,000 commands always leave some lock held or queued.
        for round in 0..20 {
            run_commands(&mut log, &mut sm, &mut rng, round * 100, 100, &mut clock).await;
            if sm.read(|s| s.locks_with_prefix("").next().is_some()) {
                break;
            }
        }
        sm.read(|s| s.locks_with_prefix("").next().map(|l| l.name.clone()))
            .expect("some lock exists")
    };
    damage(dir.path(), SM_TREE, &lock_key(&name), |v| flip_last_byte(v));
    expect_corrupt(dir.path(), &format!("lock {name:?}"));
}

#[tokio::test]
async fn damaged_vote_is_reported_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = open(dir.path());
        log.save_vote(&Vote::new(2, 1)).await.expect("vote");
    }
    damage(dir.path(), META_TREE, VOTE_KEY, |v| v[0] ^= 1);
    expect_corrupt(dir.path(), "vote");
}

#[tokio::test]
async fn damaged_state_machine_header_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_log, mut sm) = open(dir.path());
        sm.apply([blank(1, 1)]).await.expect("apply");
    }
    damage(dir.path(), SM_TREE, b"H", |v| v.truncate(v.len() / 2));
    expect_corrupt(dir.path(), "state machine header");
}

#[tokio::test]
async fn damaged_current_snapshot_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_log, mut sm) = open(dir.path());
        sm.apply([membership(1, 1, &[1])]).await.expect("apply");
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
    }
    let file = dir
        .path()
        .join(raftlock_store::snapshot_file::SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&file).expect("the snapshot is a file");
    flip_last_byte(&mut bytes);
    std::fs::write(&file, bytes).expect("damage");
    expect_corrupt(dir.path(), "current snapshot");
}

#[tokio::test]
async fn a_snapshot_tmp_left_by_a_crash_is_deleted_and_the_snapshot_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let built = {
        let (_log, mut sm) = open(dir.path());
        sm.apply([membership(1, 1, &[1])]).await.expect("apply");
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build")
            .meta
    };
    // A crash while the next snapshot was written (installed, or built:
    // numbered): half a file, never renamed over the current one. Files
    // of other names are not the store's to delete.
    for name in ["snapshot.tmp", "snapshot.tmp.0", "snapshot.tmp.17"] {
        std::fs::write(dir.path().join(name), b"half a snap").expect("write");
    }
    std::fs::write(dir.path().join("snapshot.tmp.notes"), b"mine").expect("write");
    let (_log, mut sm) = open(dir.path());
    for name in ["snapshot.tmp", "snapshot.tmp.0", "snapshot.tmp.17"] {
        assert!(!dir.path().join(name).exists(), "{name} deleted on open");
    }
    assert!(dir.path().join("snapshot.tmp.notes").exists(), "kept");
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("the snapshot is still there");
    assert_eq!(current.meta, built);
}

#[test]
fn second_open_while_the_first_is_alive_is_already_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path());
    match raftlock_store::open(dir.path(), common::options()) {
        Err(e @ OpenError::AlreadyOpen { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&dir.path().display().to_string()),
                "{message}"
            );
        }
        Err(e) => panic!("expected AlreadyOpen, got {e}"),
        Ok(_) => panic!("expected AlreadyOpen, the store opened twice"),
    }
    drop(first);
    // Dropping the stores releases sled's lock at once.
    let _again = open(dir.path());
}

#[test]
fn newer_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    damage(dir.path(), META_TREE, FORMAT_VERSION_KEY, |v| {
        *v = frame::encode_format_version(FORMAT_VERSION + 1);
    });
    match raftlock_store::open(dir.path(), common::options()) {
        Err(OpenError::NewerFormat {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        Err(e) => panic!("expected NewerFormat, got {e}"),
        Ok(_) => panic!("expected NewerFormat, the store opened"),
    }
}

#[test]
fn older_format_version_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    // 3 and 4 are migrated on open (migrate.rs); 2 is older than any
    // migration.
    damage(dir.path(), META_TREE, FORMAT_VERSION_KEY, |v| {
        *v = frame::encode_format_version(2);
    });
    match raftlock_store::open(dir.path(), common::options()) {
        Err(e @ OpenError::OlderFormat { .. }) => {
            let message = e.to_string();
            assert!(message.contains("new data directory"), "{message}");
        }
        Err(e) => panic!("expected OlderFormat, got {e}"),
        Ok(_) => panic!("expected OlderFormat, the store opened"),
    }
}

#[test]
fn a_store_whose_sled_files_vanished_is_not_reopened_as_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let path = entry.expect("entry").path();
        if path.file_name() == Some(std::ffi::OsStr::new(raftlock_store::MARKER_FILE)) {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    let message = expect_corrupt(dir.path(), "sled database");
    assert!(message.contains("lost its data"), "{message}");
}

#[test]
fn bad_directories_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    assert!(raftlock_store::open(&file, common::options()).is_err());

    let garbage = dir.path().join("garbage");
    std::fs::create_dir(&garbage).expect("mkdir");
    std::fs::write(garbage.join("conf"), b"\xff\xfe garbage config").expect("write");
    std::fs::write(garbage.join("db"), vec![0xA5; 64 * 1024]).expect("write");
    assert!(raftlock_store::open(&garbage, common::options()).is_err());
}

/// A store with `count` generated commands applied (log and state machine).
async fn store_with_commands(dir: &Path, seed: u64, count: u64) -> (LogStore, StateMachineStore) {
    let (mut log, mut sm) = open(dir);
    let first = [membership(1, 0, &[1])];
    log.blocking_append(first.clone()).await.expect("append");
    sm.apply(first).await.expect("apply");
    let mut rng = Rng::new(seed);
    let mut clock = 0;
    run_commands(&mut log, &mut sm, &mut rng, 0, count, &mut clock).await;
    (log, sm)
}

#[tokio::test]
async fn snapshot_installs_into_a_fresh_store_and_survives_restart() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let (mut leader_log, mut leader) = store_with_commands(leader_dir.path(), 5, 120).await;
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(snapshot.meta.last_log_id, leader.last_applied());
    let built = snapshot.snapshot.into_bytes().await.expect("read");
    let current = leader
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("some");
    assert_eq!(current.meta, snapshot.meta);

    {
        let (_log, mut follower) = open(follower_dir.path());
        let mut receiving = follower.begin_receiving_snapshot().await.expect("begin");
        *receiving = SnapshotData::from_vec(built.clone());
        follower
            .install_snapshot(&snapshot.meta, receiving)
            .await
            .expect("install");
        assert_eq!(follower.read(State::clone), leader.read(State::clone));
        assert_eq!(
            follower.applied_state().await.expect("applied"),
            leader.applied_state().await.expect("applied")
        );
    }

    // After a restart the follower has the state, the snapshot, and keeps
    // persisting correctly on top of the installed records.
    let (_log, mut follower) = open(follower_dir.path());
    assert_eq!(follower.read(State::clone), leader.read(State::clone));
    let current = follower
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("some");
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(current.snapshot.into_bytes().await.expect("read"), built);

    let after = leader.last_applied().map_or(0, |l| l.index);
    let mut rng = Rng::new(99);
    let mut clock = 1_000_000;
    let more = run_commands(
        &mut leader_log,
        &mut leader,
        &mut rng,
        after,
        40,
        &mut clock,
    )
    .await;
    follower.apply(more).await.expect("apply");
    assert_eq!(follower.read(State::clone), leader.read(State::clone));
    drop((_log, follower));
    let (_log, follower) = open(follower_dir.path());
    assert_eq!(follower.read(State::clone), leader.read(State::clone));
}

/// An install makes the snapshot durable first and then rewrites the
/// state's records in small batches: a crash midway leaves the snapshot
/// newer than the saved header and the records half old, half new. The
/// store must then take the snapshot's state when it opens.
#[tokio::test]
async fn a_store_whose_snapshot_is_newer_than_its_saved_state_opens_with_the_snapshots_state() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_leader_log, mut leader) = store_with_commands(leader_dir.path(), 31, 90).await;
    leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let expected = leader.read(State::clone);
    let expected_applied = leader.last_applied();
    {
        let (log, sm) = store_with_commands(dir.path(), 31, 45).await;
        assert_ne!(sm.read(State::clone), expected);
        drop((log, sm));
    }
    // The crash: the snapshot file is in place, half the records were
    // rewritten (here: every other one removed), the header is the old one.
    std::fs::copy(
        leader_dir.path().join(SNAPSHOT_FILE),
        dir.path().join(SNAPSHOT_FILE),
    )
    .expect("copy the snapshot");
    {
        let db = sled::open(dir.path()).expect("raw sled");
        let sm = db.open_tree(SM_TREE).expect("sm tree");
        let keys: Vec<_> = sm.iter().keys().map(|k| k.expect("key")).collect();
        let mut removed = 0;
        for key in keys
            .iter()
            .filter(|k| k.as_ref() != SM_HEADER_KEY)
            .step_by(2)
        {
            sm.remove(key).expect("remove");
            removed += 1;
        }
        assert!(removed > 0, "records were removed: {keys:?}");
        db.flush().expect("flush");
    }
    for _ in 0..2 {
        let (_log, sm) = open(dir.path());
        assert_eq!(sm.last_applied(), expected_applied);
        assert_eq!(sm.read(State::clone), expected);
    }
}

#[tokio::test]
async fn older_snapshot_does_not_replace_newer_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut sm) = store_with_commands(dir.path(), 8, 30).await;
    let old = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let mut rng = Rng::new(80);
    let mut clock = 500_000;
    run_commands(&mut log, &mut sm, &mut rng, 30, 30, &mut clock).await;
    let newer_state = sm.read(State::clone);
    let newer_applied = sm.last_applied();

    let mut receiving = sm.begin_receiving_snapshot().await.expect("begin");
    *receiving = SnapshotData::from_vec(old.snapshot.into_bytes().await.expect("read"));
    sm.install_snapshot(&old.meta, receiving)
        .await
        .expect("ignored, not an error");
    assert_eq!(sm.read(State::clone), newer_state);
    assert_eq!(sm.last_applied(), newer_applied);

    // A builder holding an older copy does not replace a newer current
    // snapshot either.
    let mut stale_builder = sm.get_snapshot_builder().await;
    run_commands(&mut log, &mut sm, &mut rng, 60, 5, &mut clock).await;
    let newest = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    stale_builder.build_snapshot().await.expect("build");
    let current = sm
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("some");
    assert_eq!(current.meta, newest.meta);
}

#[tokio::test]
async fn damaged_or_mismatched_snapshot_data_is_rejected() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let (_leader_log, mut leader) = store_with_commands(leader_dir.path(), 21, 60).await;
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let (_log, mut follower) = open(follower_dir.path());
    let data = snapshot.snapshot.into_bytes().await.expect("read");

    for at in [0, 3, 4, 7, data.len() / 2, data.len() - 1] {
        let mut bad = data.clone();
        bad[at] ^= 0x10;
        let error = follower
            .install_snapshot(&snapshot.meta, Box::new(SnapshotData::from_vec(bad)))
            .await
            .expect_err("flipped byte is rejected");
        assert!(error.to_string().contains("snapshot"), "{error}");
        assert_eq!(follower.read(State::clone), State::new());
        assert_eq!(follower.last_applied(), None);
    }

    let mut wrong_meta = snapshot.meta.clone();
    wrong_meta.last_log_id = Some(log_id(9, 999));
    follower
        .install_snapshot(&wrong_meta, Box::new(SnapshotData::from_vec(data)))
        .await
        .expect_err("data of another log id is rejected");
    assert_eq!(follower.last_applied(), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever the commands, the records persisted incrementally reload to
    /// the in-memory state (catches a change raftlock-core forgets to mark
    /// dirty), and both equal a pure replay.
    #[test]
    fn state_reloaded_from_records_equals_memory(
        seed in any::<u64>(),
        batches in prop::collection::vec(1usize..8, 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = Rng::new(seed);
        let mut clock = 0;
        let mut index = 0;
        let mut entries = Vec::new();
        let (memory, replies) = runtime.block_on(async {
            let (_log, mut sm) = open(dir.path());
            let mut replies = Vec::new();
            // Each apply call gets a batch whose commands were chosen against
            // the state before the batch (so later ones may be stale: fine).
            for size in &batches {
                let batch: Vec<Entry> = (0..*size)
                    .map(|_| {
                        index += 1;
                        let op = rng.op();
                        normal(1, index, sm.read(|s| request(s, op, &mut clock)))
                    })
                    .collect();
                entries.extend(batch.iter().cloned());
                replies.extend(sm.apply(batch).await.expect("apply"));
            }
            (sm.read(State::clone), replies)
        });
        let (_log, reloaded) = open(dir.path());
        prop_assert_eq!(reloaded.read(State::clone), memory.clone());
        prop_assert_eq!(reloaded.last_applied(), Some(log_id(1, index)));
        let mut pure = State::new();
        let pure_replies: Vec<Applied> = entries
            .iter()
            .map(|e| match &e.payload {
                openraft::EntryPayload::Normal(r) => pure.apply(e.log_id.index, r),
                _ => unreachable!("only normal entries here"),
            })
            .collect();
        prop_assert_eq!(pure, memory);
        prop_assert_eq!(pure_replies, replies);
    }
}

#[tokio::test]
async fn forgetting_a_member_is_refused_while_it_is_a_voter_or_learner() {
    use raftlock_core::{Command, LockError, Request, Response};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = open(dir.path());
    let record = |node| {
        Request::new(
            1,
            1,
            Command::RecordMember {
                node,
                store_id: format!("store-{node}"),
                client_addr: "h:1".into(),
            },
        )
    };
    let forget = |node| Request::new(1, 1, Command::ForgetMember { node });
    let applied = sm
        .apply([
            membership(1, 1, &[1, 2]),
            normal(1, 2, record(2)),
            normal(1, 3, record(3)),
            normal(1, 4, forget(2)),
            normal(1, 5, forget(3)),
        ])
        .await
        .expect("apply");
    match &applied[3].result {
        Err(LockError::InvalidArgument { reason, .. }) => {
            assert!(reason.contains("node 2 is still a voter"), "{reason}")
        }
        other => panic!("forgetting voter 2: {other:?}"),
    }
    // Node 3 is not a member: its record goes.
    assert_eq!(
        applied[4].result,
        Ok(Response::MemberForgotten { existed: true })
    );
    let members = sm.handle().read(|s| s.cluster().members.clone());
    assert!(
        members.contains_key(&2) && !members.contains_key(&3),
        "{members:?}"
    );
    // Once node 2 is out of the membership, it may be forgotten.
    let applied = sm
        .apply([membership(1, 6, &[1]), normal(1, 7, forget(2))])
        .await
        .expect("apply");
    assert_eq!(
        applied[1].result,
        Ok(Response::MemberForgotten { existed: true })
    );
}
