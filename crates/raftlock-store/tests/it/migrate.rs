//! Stores written by an earlier format are migrated on open: a store of
//! format 3 (before token epochs), made by that build, opens as format 4
//! with the same state in token epoch 0. (A crash mid-migration: the
//! migration is one sled transaction, see the store's `migrate.rs`.)

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{open, replay};
use openraft::RaftLogReader;
use openraft::storage::RaftStateMachine;
use raftlock_core::State;
use raftlock_store::layout::{FORMAT_VERSION_KEY, META_TREE};
use raftlock_store::{FORMAT_VERSION, frame, sled};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store-v3.tar.gz"
);

/// Extracts the format-3 fixture into `parent`; returns the store's directory.
fn extract_v3(parent: &Path) -> PathBuf {
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(FIXTURE)
        .arg("-C")
        .arg(parent)
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar extracts the fixture");
    parent.join("store")
}

/// The format version a closed store records, read with raw sled.
fn stored_format(dir: &Path) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let db = loop {
        match sled::open(dir) {
            Ok(db) => break db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("raw sled opens: {e:?}"),
        }
    };
    let bytes = db
        .open_tree(META_TREE)
        .expect("meta")
        .get(FORMAT_VERSION_KEY)
        .expect("read")
        .expect("a format version");
    frame::decode(&"format version", &bytes).expect("decodes")
}

#[tokio::test]
async fn a_format_3_store_migrates_to_4_with_epoch_0() {
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
