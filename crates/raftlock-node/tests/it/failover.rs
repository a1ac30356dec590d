//! Leader loss, whole-cluster restarts and membership changes.

use std::time::Duration;

use raftlock_proto::v1 as pb;
use raftlock_testkit::cluster::{Cluster, fast_timing};
use raftlock_testkit::grpc::{acquire_req, grant, reason_of};
use raftlock_testkit::wait::eventually;

async fn inspect(cluster: &Cluster, node: u64, name: &str) -> Option<pb::LockInfo> {
    cluster
        .locks(node)
        .await
        .inspect(pb::InspectRequest {
            name: name.into(),
            stale: false,
        })
        .await
        .expect("inspect")
        .into_inner()
        .lock
}

/// Wait until the lock's queue has `n` requests.
async fn queued(cluster: &Cluster, node: u64, name: &str, n: usize) {
    for _ in 0..200 {
        if inspect(cluster, node, name)
            .await
            .is_some_and(|l| l.queue.len() == n)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} never had {n} queued requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_leader_dies_holds_survive_waiters_keep_their_order_and_tokens_keep_growing() {
    let mut cluster = Cluster::start(3).await;
    let old_leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let mut leases = cluster.leases(follower).await;
    let a = grant(&mut leases, 30_000, "a").await;
    let b = grant(&mut leases, 30_000, "b").await;
    let c = grant(&mut leases, 30_000, "c").await;
    let mut locks = cluster.locks(follower).await;
    let held = locks
        .acquire(acquire_req(a, "x", 0))
        .await
        .unwrap()
        .into_inner();
    // b then c wait, through the follower that will survive.
    let mut lb = cluster.locks(follower).await;
    let wait_b = tokio::spawn(async move { lb.acquire(acquire_req(b, "x", 20_000)).await });
    queued(&cluster, follower, "x", 1).await;
    let mut lc = cluster.locks(follower).await;
    let wait_c = tokio::spawn(async move { lc.acquire(acquire_req(c, "x", 20_000)).await });
    queued(&cluster, follower, "x", 2).await;
    let max_before = held.token.max(c);

    cluster.stop(old_leader).await;
    let started = std::time::Instant::now();
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, old_leader);
    println!("new leader after {:?}", started.elapsed());

    let lock = inspect(&cluster, follower, "x").await.expect("still held");
    assert_eq!(lock.holders.len(), 1);
    assert_eq!(lock.holders[0].lease_id, a);
    assert_eq!(lock.holders[0].token, held.token, "same hold, same token");
    let order: Vec<u64> = lock.queue.iter().map(|q| q.lease_id).collect();
    assert_eq!(order, vec![b, c], "waiters keep their order");

    let mut locks = cluster.locks(new_leader).await;
    locks
        .release(pb::ReleaseRequest {
            lease_id: a,
            token: held.token,
            names: vec!["x".into()],
        })
        .await
        .expect("release after failover");
    let got_b = wait_b.await.unwrap().expect("b granted").into_inner();
    assert!(
        got_b.token > max_before,
        "token after failover above every token before"
    );
    locks
        .release(pb::ReleaseRequest {
            lease_id: b,
            token: got_b.token,
            names: vec!["x".into()],
        })
        .await
        .unwrap();
    let got_c = wait_c.await.unwrap().expect("c granted").into_inner();
    assert!(got_c.token > got_b.token);
    let fresh = locks
        .acquire(acquire_req(a, "y", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(fresh.token > got_c.token);

    // The old leader comes back and catches up.
    cluster.restart(old_leader).await;
    let lock = eventually(Duration::from_secs(10), || async {
        let mut client = cluster.locks(old_leader).await;
        let info = client
            .inspect(pb::InspectRequest {
                name: "y".into(),
                stale: true,
            })
            .await
            .ok()?
            .into_inner();
        info.lock
    })
    .await;
    assert_eq!(lock.holders[0].token, fresh.token);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_restarting_every_node_the_state_is_the_same() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut leases = cluster.leases(leader).await;
    let mut locks = cluster.locks(leader).await;
    let mut lease_ids = Vec::new();
    for i in 0..5 {
        let l = grant(&mut leases, 60_000, &format!("owner-{i}")).await;
        lease_ids.push(l);
        locks
            .acquire(acquire_req(l, &format!("jobs/{i}"), 0))
            .await
            .unwrap();
    }
    // One request waiting on jobs/0.
    let waiter = grant(&mut leases, 60_000, "waiter").await;
    let mut lw = cluster.locks(leader).await;
    let _pending =
        tokio::spawn(async move { lw.acquire(acquire_req(waiter, "jobs/0", 30_000)).await });
    queued(&cluster, leader, "jobs/0", 1).await;
    let before_locks = locks
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .locks;
    let before_leases = leases
        .list(pb::ListLeasesRequest { stale: false })
        .await
        .unwrap()
        .into_inner()
        .leases;

    for id in 1..=3 {
        cluster.stop(id).await;
    }
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    let after_locks = eventually(Duration::from_secs(10), || async {
        let mut c = cluster.locks(leader).await;
        c.list(pb::ListRequest::default())
            .await
            .ok()
            .map(|r| r.into_inner().locks)
    })
    .await;
    assert_eq!(after_locks, before_locks);
    let mut leases = cluster.leases(leader).await;
    let mut after_leases = leases
        .list(pb::ListLeasesRequest { stale: false })
        .await
        .unwrap()
        .into_inner()
        .leases;
    // Deadlines restart with the new leader; everything else is the same.
    let strip = |ls: &mut Vec<pb::LeaseInfo>| {
        for l in ls.iter_mut() {
            l.remaining_ms = None;
        }
    };
    let mut before_leases = before_leases;
    strip(&mut before_leases);
    strip(&mut after_leases);
    assert_eq!(after_leases, before_leases);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_is_added_promoted_and_a_node_removed_while_the_cluster_serves() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;

    // Node 4 starts empty, with no initial members: it waits to be added.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr4 = listener.local_addr().unwrap().to_string();
    let peer4 = peer_listener.local_addr().unwrap().to_string();
    let dir4 = tempfile::TempDir::new().unwrap();
    let mut config = raftlock_node::NodeConfig::new(4, dir4.path(), addr4.clone());
    config.peer_listen = peer4.clone();
    config.raft = fast_timing();
    let node4 = raftlock_node::Node::start_on(config, listener, peer_listener)
        .await
        .unwrap();

    let mut leases = cluster.leases(leader).await;
    let lease = grant(&mut leases, 30_000, "before").await;
    let mut admin = cluster.admin(leader).await;
    let added = admin
        .add_learner(pb::AddLearnerRequest {
            id: 4,
            address: peer4.clone(),
            wait_caught_up: true,
        })
        .await
        .expect("add learner")
        .into_inner();
    assert!(added.learners.contains(&4));
    let promoted = admin
        .promote(pb::PromoteRequest { id: 4 })
        .await
        .expect("promote")
        .into_inner();
    assert!(promoted.voters.contains(&4));
    assert_eq!(promoted.voters.len(), 4);

    // Remove a follower that is not node 4.
    let victim = *[1u64, 2, 3].iter().find(|id| **id != leader).unwrap();
    let removed = admin
        .remove(pb::RemoveRequest { id: victim })
        .await
        .expect("remove")
        .into_inner();
    assert!(!removed.voters.contains(&victim));
    assert_eq!(removed.voters.len(), 3);
    cluster.stop(victim).await;

    let mut locks = cluster.locks(leader).await;
    let got = locks
        .acquire(acquire_req(lease, "after", 0))
        .await
        .expect("still serving");
    assert!(got.into_inner().token > lease);
    // Node 4 has the state.
    let lock = eventually(Duration::from_secs(5), || async {
        node4
            .api()
            .read(true, |s| s.lock("after").map(|l| l.holds.len()))
            .await
            .ok()
            .and_then(|(n, _)| n)
    })
    .await;
    assert_eq!(lock, 1);
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.nodes.iter().filter(|n| n.voter).count(), 3);
    assert!(status.nodes.iter().any(|n| n.id == 4 && n.voter));
    let err = admin
        .remove(pb::RemoveRequest { id: 42 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    node4.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alives_that_continue_through_a_leader_change_keep_the_lease() {
    let mut cluster = Cluster::start(3).await;
    let old_leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let mut leases = cluster.leases(follower).await;
    let lease = grant(&mut leases, 2_000, "steady").await;
    let mut locks = cluster.locks(follower).await;
    let held = locks
        .acquire(acquire_req(lease, "x", 0))
        .await
        .unwrap()
        .into_inner();

    // A client that keeps its lease alive every 300 ms through the follower,
    // retrying when a keep-alive fails during the election.
    let keeper_channel = cluster.channel(follower).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let keeping = tokio::spawn(async move {
        let mut client = pb::leases_client::LeasesClient::new(keeper_channel);
        let mut ok = 0u32;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let _ = tx.send(pb::KeepAliveRequest { lease_id: lease }).await;
            drop(tx);
            if let Ok(r) = client
                .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            {
                let mut r = r.into_inner();
                if let Ok(Some(_)) = r.message().await {
                    ok += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        ok
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop(old_leader).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    // Well past the 2 s ttl.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let renewed = keeping.await.unwrap();
    assert!(renewed >= 8, "keep-alives answered: {renewed}");
    let lock = inspect(&cluster, follower, "x").await.expect("still held");
    assert_eq!(lock.holders[0].lease_id, lease);
    assert_eq!(lock.holders[0].token, held.token);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acquire_broken_by_a_leader_change_retried_with_the_same_lease_ends_in_one_hold() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let mut leases = cluster.leases(follower).await;
    let a = grant(&mut leases, 30_000, "a").await;
    let b = grant(&mut leases, 30_000, "b").await;
    let mut la = cluster.locks(follower).await;
    let first = la
        .acquire(acquire_req(a, "x", 0))
        .await
        .unwrap()
        .into_inner();
    // b waits through the leader, which then dies: the call breaks.
    let mut lb = cluster.locks(leader).await;
    let broken = tokio::spawn(async move { lb.acquire(acquire_req(b, "x", 20_000)).await });
    queued(&cluster, follower, "x", 1).await;
    cluster.stop(leader).await;
    let err = broken
        .await
        .unwrap()
        .expect_err("the call broke with its node");
    println!("broken call: {:?} {}", err.code(), err.message());
    cluster.wait_leader(Duration::from_secs(10)).await;
    // The retry through a surviving node finds the same queued request.
    let mut lb = cluster.locks(follower).await;
    let retry = tokio::spawn(async move {
        loop {
            match lb.acquire(acquire_req(b, "x", 20_000)).await {
                Ok(r) => return r.into_inner(),
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("retry failed: {s:?}"),
            }
        }
    });
    queued(&cluster, follower, "x", 1).await;
    la.release(pb::ReleaseRequest {
        lease_id: a,
        token: first.token,
        names: vec!["x".into()],
    })
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), retry)
        .await
        .unwrap()
        .unwrap();
    assert!(got.token > first.token);
    let lock = inspect(&cluster, follower, "x").await.unwrap();
    assert_eq!(lock.holders.len(), 1, "one hold, not two");
    assert!(lock.queue.is_empty());
    // Asking again returns the same hold.
    let again = cluster
        .locks(follower)
        .await
        .acquire(acquire_req(b, "x", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(again.retry);
    assert_eq!(again.token, got.token);
    cluster.shutdown().await;
}

/// A waiting acquire is in the log once queued. If its wait runs out while
/// no leader can take the cancel, the answer must not be NOT_LEADER or
/// NO_LEADER ("not applied"): the request stays queued and could still be
/// granted. Found by cluster-tests (seed 2612): the client was told
/// NO_LEADER and later found itself holding the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_that_times_out_without_a_leader_is_not_reported_as_not_applied() {
    let mut cluster = Cluster::start_with(3, |c| c.write_timeout = Duration::from_secs(2)).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let other = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader && **id != follower)
        .expect("a third node");
    let mut leases = cluster.leases(follower).await;
    let a = grant(&mut leases, 60_000, "a").await;
    let b = grant(&mut leases, 60_000, "b").await;
    let mut locks = cluster.locks(follower).await;
    locks
        .acquire(acquire_req(a, "x", 0))
        .await
        .expect("a holds x");
    let mut lb = cluster.locks(follower).await;
    let wait_b = tokio::spawn(async move { lb.acquire(acquire_req(b, "x", 1_500)).await });
    queued(&cluster, follower, "x", 1).await;

    // The follower is left alone: no leader for the cancel.
    cluster.stop(leader).await;
    cluster.stop(other).await;
    let status = wait_b
        .await
        .expect("join")
        .expect_err("no grant: x is held");
    let reason = reason_of(&status);
    assert!(
        reason == "TIMEOUT" || reason == "OUTCOME_UNKNOWN",
        "a queued request whose cancel could not be applied was answered {reason}: {status:?}"
    );

    // And indeed it is still queued once the cluster is back.
    cluster.restart(leader).await;
    cluster.restart(other).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    let lock = inspect(&cluster, follower, "x").await.expect("x is held");
    let queue: Vec<u64> = lock.queue.iter().map(|q| q.lease_id).collect();
    assert_eq!(queue, vec![b], "b's request stayed in the queue");
    cluster.shutdown().await;
}
