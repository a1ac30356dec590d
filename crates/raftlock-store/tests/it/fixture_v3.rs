//! Writes tests/fixtures/store-v3.tar.gz: a store in the on-disk format this
//! build writes (3), for the migration test of the next format. Run once by
//! hand, never in CI:
//! `RAFTLOCK_WRITE_FIXTURE=1 cargo test -p raftlock-store --test it fixture_v3 -- --ignored`

use crate::common;

use common::{DrawOp, membership, normal, open, request};
use openraft::RaftSnapshotBuilder;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use raftlock_testkit::rng::Rng;

#[tokio::test]
#[ignore = "writes a fixture; run by hand"]
async fn write_store_v3_fixture() {
    if std::env::var_os("RAFTLOCK_WRITE_FIXTURE").is_none() {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("store");
    let (mut log, mut sm) = open(&dir);
    let first = [membership(1, 0, &[1, 2, 3])];
    log.blocking_append(first.clone()).await.expect("append");
    sm.apply(first).await.expect("apply");
    let mut rng = Rng::new(17);
    let mut clock = 0;
    // 60 entries, a snapshot of them, then 40 more: the migration meets a
    // snapshot, saved records and a log tail to re-apply.
    for index in 1..=100 {
        let op = rng.op();
        let req = sm.read(|s| request(s, op, &mut clock));
        let entry = normal(1, index, req);
        log.blocking_append([entry.clone()]).await.expect("append");
        sm.apply([entry]).await.expect("apply");
        if index == 60 {
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("snapshot");
        }
    }
    log.save_vote(&raftlock_store::Vote::new_committed(1, 1))
        .await
        .expect("vote");
    log.save_committed(Some(common::log_id(1, 100)))
        .await
        .expect("committed");
    let closed = log.closed();
    drop((log, sm));
    closed.wait().await;
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v3.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(root.path())
        .arg("store")
        .status()
        .expect("tar runs");
    assert!(status.success());
}
