//! Stores written by an earlier format are migrated on open:
//! - a store of format 4 (bincode of the Rust types), written by the real
//!   previous release (0.1.0) through its CLI, opens as format 5 (the
//!   versioned encoding) with the same log, state, vote and snapshot;
//! - a store of format 3 (before token epochs), made by that build, opens
//!   as format 5 with the same state in token epoch 0;
//! - and on to format 6, which keeps the current snapshot in a file of its
//!   own: a format-5 store (this build's store with the snapshot put back
//!   into sled, byte for byte, as format 5 kept it) moves it out, also
//!   after an upgrade that crashed halfway.
//!
//! (A crash mid-migration: each step is one sled transaction, see the
//! store's `migrate.rs`.)

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{open, replay};
use openraft::RaftLogReader;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use raftlock_core::State;
use raftlock_store::layout::{
    FORMAT_VERSION_KEY, LOG_TREE, META_TREE, SM_TREE, SNAPSHOT_KEY, SNAPSHOT_TREE,
};
use raftlock_store::snapshot_file::SNAPSHOT_FILE;
use raftlock_store::{FORMAT_VERSION, SnapshotData, frame, sled};

const FIXTURE_V3: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store-v3.tar.gz"
);
const FIXTURE_V4: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store-v4.tar.gz"
);

/// Extracts a fixture into `parent`; returns the store's directory.
fn extract(fixture: &str, parent: &Path) -> PathBuf {
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture)
        .arg("-C")
        .arg(parent)
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar extracts the fixture");
    parent.join("store")
}

fn extract_v3(parent: &Path) -> PathBuf {
    extract(FIXTURE_V3, parent)
}

/// The format version a closed store records, read with raw sled.
fn stored_format(dir: &Path) -> u32 {
    let bytes = raw_open(dir)
        .open_tree(META_TREE)
        .expect("meta")
        .get(FORMAT_VERSION_KEY)
        .expect("read")
        .expect("a format version");
    frame::decode_format_version(&bytes).expect("decodes")
}

#[tokio::test]
async fn a_format_3_store_migrates_to_5_with_epoch_0() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = extract_v3(tmp.path());
    assert_eq!(stored_format(&dir), 3, "the fixture is a format-3 store");

    let (mut log, mut sm) = open(&dir);
    let entries = log.try_get_log_entries(..).await.expect("log");
    assert_eq!(entries.len(), 101, "membership at 0 and 100 commands");
    let state = sm.read(State::clone);
    assert_eq!(state.token_epoch(), 0);
    assert_eq!(state.last_applied(), 100);
    assert_eq!(
        state,
        replay(&entries),
        "the state is the log's, tokens unchanged"
    );
    assert!(
        state.locks_with_prefix("").any(|l| !l.holds.is_empty()),
        "the fixture has holds"
    );
    assert_eq!(state.token_high_water(), 100, "epoch 0: stamp = index");

    // The snapshot (at 60) was migrated too: it installs and holds the
    // log's state at 60.
    let snapshot = sm
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("the fixture has a snapshot");
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(60));
    let fresh = tempfile::tempdir().expect("tempdir");
    {
        let (_l, mut other) = open(fresh.path());
        other
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("the migrated snapshot installs");
        assert_eq!(other.read(State::clone), replay(&entries[..=60]));
    }

    let closed = log.closed();
    drop((log, sm));
    closed.wait().await;
    assert_eq!(stored_format(&dir), FORMAT_VERSION);
    let (_log, sm) = open(&dir);
    assert_eq!(
        sm.read(State::clone),
        state,
        "a second open changes nothing"
    );
}

/// A tree's keys and values.
type RawTree = Vec<(Vec<u8>, Vec<u8>)>;

/// Every value of a closed store, tree by tree, read with raw sled.
fn raw_trees(dir: &Path) -> Vec<(String, RawTree)> {
    let db = sled::open(dir).expect("raw sled opens");
    [LOG_TREE, META_TREE, SM_TREE, SNAPSHOT_TREE]
        .iter()
        .map(|name| {
            let tree = db.open_tree(name).expect("tree");
            let values = tree
                .iter()
                .map(|item| {
                    let (k, v) = item.expect("read");
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            (name.to_string(), values)
        })
        .collect()
}

#[tokio::test]
async fn a_format_4_store_of_the_previous_release_migrates_to_5_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = extract(FIXTURE_V4, tmp.path());
    assert_eq!(stored_format(&dir), 4, "the fixture is a format-4 store");
    let before = raw_trees(&dir);
    // The snapshot data 0.1.0 stored (format 3).
    let (_, snapshot_tree) = &before[3];
    let (_, stored) = snapshot_tree
        .iter()
        .find(|(k, _)| k.as_slice() == SNAPSHOT_KEY)
        .expect("the fixture has a current snapshot");
    let (_, old_data): (raftlock_store::SnapshotMeta, Vec<u8>) =
        frame::legacy::decode(&"0.1.0's snapshot", stored).expect("format 4 decodes");

    let (mut log, mut sm) = open(&dir);
    let entries = log.try_get_log_entries(..).await.expect("log");
    let state = sm.read(State::clone);
    assert_eq!(state.last_applied(), 91, "what 0.1.0 applied");
    assert_eq!(
        entries.last().map(|e| e.log_id.index),
        Some(91),
        "the whole log is readable"
    );
    // The state the store saved is the one its log makes.
    assert_eq!(state, replay(&entries), "the state is the log's");
    let jobs = state.lock("jobs/20").expect("jobs/20");
    assert_eq!(jobs.holds.len(), 1, "held");
    assert_eq!(state.waiters().count(), 1, "the queued waiter came through");
    assert_eq!(state.lock("reports").expect("reports").holds.len(), 2);
    assert_eq!(state.lock("pool").expect("pool").holds.len(), 2);
    assert_eq!(state.leases().count(), 3);
    assert!(
        state
            .lock("jobs/60")
            .expect("jobs/60")
            .holds
            .iter()
            .any(|(_, h)| &*h.reason == "job 60"),
        "reasons survive"
    );
    assert!(log.read_vote().await.expect("vote").is_some(), "the vote");
    assert_eq!(
        log.read_committed()
            .await
            .expect("committed")
            .map(|c| c.index),
        Some(91)
    );

    // The snapshot 0.1.0 built (at 79) installs and holds the log's state.
    let snapshot = sm
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("the fixture has a snapshot");
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(79));
    // What a leader of this build sends a 0.1.0 node is, byte for byte,
    // what 0.1.0 itself wrote of that state.
    let data = snapshot.snapshot.into_bytes().await.expect("read");
    let for_old =
        raftlock_store::snapshot_data_for_protocol_1(&snapshot.meta, &data).expect("re-encodes");
    assert!(
        for_old == old_data,
        "re-encoded format 3 differs from 0.1.0's ({} and {} bytes)",
        for_old.len(),
        old_data.len()
    );
    let fresh = tempfile::tempdir().expect("tempdir");
    {
        let (_l, mut other) = open(fresh.path());
        other
            .install_snapshot(&snapshot.meta, Box::new(SnapshotData::from_vec(data)))
            .await
            .expect("the migrated snapshot installs");
        let upto = entries
            .iter()
            .position(|e| e.log_id.index == 79)
            .expect("entry 79");
        assert_eq!(other.read(State::clone), replay(&entries[..=upto]));
    }

    let closed = log.closed();
    drop((log, sm));
    closed.wait().await;
    assert_eq!(stored_format(&dir), FORMAT_VERSION);
    let after = raw_trees(&dir);
    for ((tree, old), (_, new)) in before.iter().zip(&after) {
        if tree == SNAPSHOT_TREE {
            // Format 6 keeps it in a file (checked above: it installs).
            assert!(new.is_empty(), "the snapshot left sled: {new:?}");
            assert!(dir.join(SNAPSHOT_FILE).exists(), "the snapshot file");
            continue;
        }
        let old_keys: Vec<_> = old.iter().map(|(k, _)| k).collect();
        let new_keys: Vec<_> = new.iter().map(|(k, _)| k).collect();
        if tree != SM_TREE {
            // The state machine may save again on close; the rest keeps
            // exactly its keys.
            assert_eq!(old_keys, new_keys, "{tree}: same keys");
        }
        for (key, value) in new {
            if tree == META_TREE && key.as_slice() == FORMAT_VERSION_KEY {
                continue;
            }
            assert!(
                !old.iter().any(|(k, v)| k == key && v == value),
                "{tree} {key:?}: rewritten in the new encoding"
            );
        }
    }
    let (_log, sm) = open(&dir);
    assert_eq!(
        sm.read(State::clone),
        state,
        "a second open changes nothing"
    );
}

/// Turns a closed store of this build into the format-5 store it would
/// have been: the snapshot file's bytes back into the `snapshot` tree, the
/// file gone, format 5 recorded. `stray`: leave this instead as the file
/// (what an upgrade that crashed before its transaction leaves).
fn as_format_5(dir: &Path, stray: Option<&[u8]>) -> Option<Vec<u8>> {
    let file = dir.join(SNAPSHOT_FILE);
    let snapshot = std::fs::read(&file).ok();
    let db = raw_open(dir);
    if let Some(bytes) = &snapshot {
        db.open_tree(SNAPSHOT_TREE)
            .expect("tree")
            .insert(SNAPSHOT_KEY, bytes.as_slice())
            .expect("insert");
    }
    db.open_tree(META_TREE)
        .expect("meta")
        .insert(FORMAT_VERSION_KEY, frame::encode_format_version(5))
        .expect("format 5");
    db.flush().expect("flush");
    drop(db);
    match stray {
        Some(bytes) => std::fs::write(&file, bytes).expect("stray file"),
        None => {
            let _ = std::fs::remove_file(&file);
        }
    }
    snapshot
}

/// Raw sled on a closed store (waiting out the close of a store this
/// process dropped a moment ago).
fn raw_open(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("raw sled opens: {e:?}"),
        }
    }
}

async fn close(stores: (raftlock_store::LogStore, raftlock_store::StateMachineStore)) {
    let closed = stores.0.closed();
    drop(stores);
    closed.wait().await;
}

#[tokio::test]
async fn a_format_5_store_moves_its_snapshot_into_a_file_even_after_a_crashed_upgrade() {
    use openraft::RaftSnapshotBuilder;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = extract_v3(tmp.path());
    let (log, mut sm) = open(&dir);
    let state = sm.read(State::clone);
    // A snapshot of the whole state (the fixture's is at 60).
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build")
        .meta;
    close((log, sm)).await;

    for stray in [None, Some(&b"a file an upgrade left half written"[..])] {
        let record = as_format_5(&dir, stray).expect("a snapshot file");
        assert_eq!(stored_format(&dir), 5);
        let (log, mut sm) = open(&dir);
        assert_eq!(sm.read(State::clone), state, "the state ({stray:?})");
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("the snapshot");
        assert_eq!(current.meta, built, "the same snapshot ({stray:?})");
        close((log, sm)).await;
        assert_eq!(stored_format(&dir), FORMAT_VERSION);
        assert_eq!(
            std::fs::read(dir.join(SNAPSHOT_FILE)).expect("the file"),
            record,
            "the file holds format 5's record byte for byte ({stray:?})"
        );
        let db = raw_open(&dir);
        assert!(
            db.open_tree(SNAPSHOT_TREE).expect("tree").is_empty(),
            "sled no longer holds it ({stray:?})"
        );
    }

    // A format-5 store without a snapshot, and a file an upgrade left that
    // the previous release then outlived: the file goes.
    let fresh = tempfile::tempdir().expect("tempdir");
    close(open(fresh.path())).await;
    as_format_5(fresh.path(), Some(b"stale"));
    let (log, mut sm) = open(fresh.path());
    assert!(
        sm.get_current_snapshot().await.expect("read").is_none(),
        "no snapshot"
    );
    assert!(
        !fresh.path().join(SNAPSHOT_FILE).exists(),
        "the stale file went"
    );
    close((log, sm)).await;
}
