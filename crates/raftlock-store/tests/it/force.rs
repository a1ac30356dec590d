//! `force_new_cluster` on a store: the entries after the last one known to
//! be committed are moved behind the force entry (stamped in the new
//! epoch), old memberships do not come back, the vote only goes up, and a
//! second run with the flag is a no-op until a start without it.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{BasicNode, EntryPayload, RaftLogReader, Vote};
use raftlock_core::{Command, Request};
use raftlock_store::force::{Forced, force_new_cluster, forget_forced};

use crate::common::{membership, normal, open};

fn grant(owner: &str) -> Request {
    Request::new(
        1,
        1,
        Command::GrantLease {
            ttl_ms: 10_000,
            owner: owner.into(),
            identity: String::new(),
            quota: Default::default(),
        },
    )
}

fn record_member(node: u64, store_id: &str) -> Request {
    Request::new(
        1,
        1,
        Command::RecordMember {
            node,
            store_id: store_id.into(),
            client_addr: "127.0.0.1:7402".into(),
        },
    )
}

fn force_command() -> Request {
    Request::new(
        1,
        1,
        Command::ForceNewCluster {
            cluster_id: "forced".into(),
            node: 1,
            store_id: "s".into(),
            client_addr: "127.0.0.1:7401".into(),
        },
    )
}

#[tokio::test]
async fn the_uncommitted_tail_is_moved_behind_the_force_entry_and_stamped_in_the_new_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, mut sm) = open(dir.path());
        let entries = vec![
            membership(1, 1, &[1, 2, 3]),
            normal(1, 2, grant("committed")),
            // Not known to be committed here: the tail.
            normal(2, 3, grant("tail")),
            // The old leader recording node 2's store: not for the new
            // cluster (node 2 may come back wiped).
            normal(2, 4, record_member(2, "old-store-of-2")),
            membership(2, 5, &[1, 2]),
        ];
        log.blocking_append(entries.clone()).await.expect("append");
        log.save_vote(&Vote::new(3, 2)).await.expect("vote");
        log.save_committed(Some(entries[1].log_id))
            .await
            .expect("committed");
        sm.apply(entries[..2].to_vec()).await.expect("apply");

        let node = || BasicNode::new("127.0.0.1:8401");
        let forced = force_new_cluster(&mut log, &mut sm, 1, node(), force_command)
            .await
            .expect("forced");
        let Forced::Now { at, term } = forced else {
            panic!("not forced now: {forced:?}");
        };
        assert_eq!(term, 4, "above the vote's term 3");
        // 3: the force, 4: the tail's grant, 5: its member record and 6: its
        // membership as blanks, 7: the one-member membership.
        assert_eq!(
            (at.index, at.leader_id.term, at.leader_id.node_id),
            (7, 4, 1)
        );
        let moved = log.try_get_log_entries(3..).await.expect("read");
        assert_eq!(moved.len(), 5, "{moved:?}");
        assert!(
            matches!(&moved[0].payload, EntryPayload::Normal(r) if matches!(r.command, Command::ForceNewCluster { .. }))
        );
        assert!(
            matches!(&moved[1].payload, EntryPayload::Normal(r) if matches!(&r.command, Command::GrantLease { owner, .. } if owner == "tail"))
        );
        assert!(
            matches!(moved[2].payload, EntryPayload::Blank),
            "an old member record does not come back"
        );
        assert!(
            matches!(moved[3].payload, EntryPayload::Blank),
            "an old membership does not come back"
        );
        match &moved[4].payload {
            EntryPayload::Membership(m) => {
                assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![1]);
            }
            other => panic!("last is not the membership: {other:?}"),
        }
        assert!(moved.iter().all(|e| e.log_id.leader_id.term == 4));
        assert_eq!(log.read_committed().await.expect("committed"), Some(at));
        let vote = log.read_vote().await.expect("vote").expect("a vote");
        assert_eq!((vote.leader_id().term, vote.leader_id().node_id), (4, 1));

        // Applied, the tail's lease is stamped in the new epoch.
        let applied = sm.apply(moved.clone()).await.expect("apply");
        assert_eq!(applied[1].revision, (1 << 48) | 4, "{:?}", applied[1]);
        let members = sm.read(|s| s.cluster().members.keys().copied().collect::<Vec<_>>());
        assert_eq!(members, vec![1], "only the forced node is recorded");

        // The flag again: nothing to do.
        let again = force_new_cluster(&mut log, &mut sm, 1, node(), force_command)
            .await
            .expect("again");
        assert_eq!(again, Forced::Already { at });
        // A start without the flag forgets the force: the node may be forced again.
        assert!(forget_forced(&log).expect("forget"));
        let third = force_new_cluster(&mut log, &mut sm, 1, node(), force_command)
            .await
            .expect("forced again");
        assert!(
            matches!(third, Forced::Now { at: a, term: 5 } if a.index == 9),
            "{third:?}"
        );
    }
}

/// A force another node wrote, replicated here but never known to be
/// committed, keeps its token epoch raise (its stamps may have reached
/// clients) and nothing else: the cluster is the one forced here.
#[tokio::test]
async fn another_nodes_force_in_the_tail_keeps_only_its_epoch_raise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut sm) = open(dir.path());
    let foreign = Request::new(
        1,
        1,
        Command::ForceNewCluster {
            cluster_id: "elsewhere".into(),
            node: 2,
            store_id: "s2".into(),
            client_addr: "127.0.0.1:7402".into(),
        },
    );
    let entries = vec![
        membership(1, 1, &[1, 2, 3]),
        normal(1, 2, grant("committed")),
        normal(2, 3, foreign),
        normal(2, 4, grant("after-the-other-force")),
    ];
    log.blocking_append(entries.clone()).await.expect("append");
    log.save_committed(Some(entries[1].log_id))
        .await
        .expect("committed");
    sm.apply(entries[..2].to_vec()).await.expect("apply");
    let forced = force_new_cluster(
        &mut log,
        &mut sm,
        1,
        BasicNode::new("127.0.0.1:8401"),
        force_command,
    )
    .await
    .expect("forced");
    assert!(
        matches!(forced, Forced::Now { at, .. } if at.index == 6),
        "{forced:?}"
    );
    let moved = log.try_get_log_entries(3..).await.expect("read");
    assert!(
        matches!(&moved[1].payload, EntryPayload::Normal(r) if r.command == Command::RaiseTokenEpoch { at_least: 2 }),
        "{:?}",
        moved[1]
    );
    let applied = sm.apply(moved).await.expect("apply");
    // Epoch 1 for this force, 2 for the other one's: the grant after them
    // is stamped in epoch 2, as if the other force had been applied whole.
    assert_eq!(applied[2].revision, (2 << 48) | 5, "{:?}", applied[2]);
    let cluster = sm.read(|s| s.cluster().clone());
    assert_eq!(cluster.id, "forced");
    assert_eq!(cluster.members.keys().copied().collect::<Vec<_>>(), vec![1]);
}

#[tokio::test]
async fn a_store_that_never_committed_anything_is_not_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut sm) = open(dir.path());
    log.blocking_append(vec![membership(1, 0, &[1, 2, 3])])
        .await
        .expect("append");
    let refused =
        force_new_cluster(&mut log, &mut sm, 1, BasicNode::new("x:1"), force_command).await;
    assert!(
        matches!(
            refused,
            Err(raftlock_store::force::ForceError::NothingStored)
        ),
        "{refused:?}"
    );
}
