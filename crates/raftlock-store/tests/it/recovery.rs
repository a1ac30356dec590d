//! A store prepared from a backup (`recovery::prepare_from_backup`) is what
//! openraft needs to start a new cluster at the backup's index: state moved
//! to the new cluster, log empty with its last id (0, 0, I) committed and
//! purged, the new membership at that id.

use crate::common;

use std::collections::BTreeMap;

use common::{DrawOp, request};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, RaftLogReader};
use raftlock_core::State;
use raftlock_store::{LogId, decode_snapshot_copy, recovery};
use raftlock_testkit::rng::Rng;

#[tokio::test]
async fn a_prepared_store_starts_at_the_backups_index_in_a_new_cluster() {
    // A state with leases and holds at index 80.
    let mut state = State::new();
    let mut rng = Rng::new(3);
    let mut clock = 0;
    for index in 1..=80 {
        let req = request(&state, rng.op(), &mut clock);
        state.apply(index, &req);
    }
    assert!(state.lease_count() > 0);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node1");
    let voters: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", 8400 + id)))
        .collect();
    let prepared = recovery::prepare_from_backup(
        &dir,
        common::options(),
        state.clone(),
        80,
        "new-cluster".into(),
        state.token_epoch() + 1,
        &voters,
    )
    .await
    .expect("prepared");
    let id = LogId::new(CommittedLeaderId::new(0, 0), 80);
    assert_eq!(prepared.log_id, id);

    let (mut log, mut sm) = common::open(&dir);
    let log_state = log.get_log_state().await.expect("log state");
    assert_eq!(log_state.last_purged_log_id, Some(id));
    assert_eq!(log_state.last_log_id, Some(id));
    assert!(log.try_get_log_entries(..).await.expect("log").is_empty());
    assert_eq!(log.read_committed().await.expect("committed"), Some(id));
    assert_eq!(
        log.read_vote().await.expect("vote"),
        None,
        "no vote: term 1 elects"
    );
    let (applied, membership) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(id));
    assert_eq!(membership.log_id(), &Some(id));
    assert_eq!(
        membership.membership().voter_ids().collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let restored = sm.read(State::clone);
    assert_eq!(restored.cluster().id, "new-cluster");
    assert_eq!(restored.token_epoch(), state.token_epoch() + 1);
    assert_eq!(
        restored.locks_with_prefix("").collect::<Vec<_>>(),
        state.locks_with_prefix("").collect::<Vec<_>>(),
        "holds keep their tokens"
    );
    // The current snapshot is the prepared state (what a follower that
    // lags gets sent).
    let snapshot = sm
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("some");
    assert_eq!(snapshot.meta.last_log_id, Some(id));
    let (at, from_snapshot) =
        decode_snapshot_copy(&snapshot.snapshot.into_bytes().await.expect("read"))
            .expect("decodes");
    assert_eq!((at, &from_snapshot), (Some(id), &restored));
}
