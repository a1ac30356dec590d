//! `Client::in_process`: a node embedded in this program, called with no
//! socket, behaves like the same node over the network.

use std::time::Duration;

use crate::common::session;
use futures::StreamExt;
use raftlock_client::{Client, ClientOptions, Error};
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::wait::bounded;

fn follower_of(cluster: &Cluster, leader: u64) -> u64 {
    *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a follower")
}

fn in_process(cluster: &Cluster, id: u64) -> Client {
    let node = cluster.nodes[&id].as_ref().expect("node running");
    Client::in_process(node.local_service(), ClientOptions::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_client_on_a_follower_locks_waits_and_hands_over_like_a_network_client() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let local = in_process(&cluster, follower_of(&cluster, leader));
    assert_eq!(local.current_endpoint(), "in-process");
    let remote = cluster.client().await;

    let mine = session(&local, 3000, "embedded").await;
    let theirs = session(&remote, 3000, "remote").await;

    // Writes on a follower are forwarded to the leader by the node itself.
    let held = bounded(mine.lock("emb/x").reason("batch").try_acquire())
        .await
        .expect("acquired in process");
    let info = bounded(remote.inspect("emb/x"))
        .await
        .expect("inspect")
        .expect("held");
    assert_eq!(info.holders[0].owner, "embedded");
    assert_eq!(info.holders[0].token, held.token());

    // The same typed errors and reasons as over the network.
    let busy = bounded(theirs.lock("emb/y").try_acquire())
        .await
        .expect("remote takes y");
    let err = bounded(mine.lock("emb/y").try_acquire()).await.unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err:?}");
    assert_eq!(err.reason(), "LOCK_BUSY");

    // A waiting acquire in process is granted when the remote holder lets go.
    let waiter = tokio::spawn({
        let local = local.clone();
        async move {
            let s = session(&local, 3000, "embedded-waiter").await;
            let g = s
                .lock("emb/y")
                .wait(Duration::from_secs(10))
                .acquire()
                .await
                .expect("granted after the release");
            (g.token(), s)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let old_token = busy.token();
    bounded(busy.release()).await.expect("release");
    let (new_token, _s) = bounded(waiter).await.expect("waiter task");
    assert!(new_token > old_token, "{new_token} > {old_token}");

    // Keep-alives go through the in-process transport too: the session
    // outlives its ttl.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(held.is_valid(), "kept alive in process past the ttl");

    // Watch streams work in process.
    let mut events = Box::pin(bounded(local.watch("emb/", 0)).await.expect("watch"));
    bounded(held.release()).await.expect("release in process");
    let event = bounded(events.next())
        .await
        .expect("an event")
        .expect("no error");
    assert!(event.name.starts_with("emb/"), "{event:?}");

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_client_keeps_working_when_the_leader_stops() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let local = in_process(&cluster, follower_of(&cluster, leader));
    let s = session(&local, 5000, "embedded").await;
    let before = bounded(s.lock("emb/f").try_acquire())
        .await
        .expect("acquire");
    let before_token = before.token();
    bounded(before.release()).await.expect("release");

    cluster.stop(leader).await;
    cluster.wait_leader(Duration::from_secs(15)).await;
    // The node forwards to the new leader; the client's retries ride out
    // the election.
    let after = bounded(s.lock("emb/f").try_acquire())
        .await
        .expect("acquire after failover");
    assert!(after.token() > before_token);
    assert!(s.is_valid(), "the session survived the leader change");
    bounded(after.release()).await.expect("release");
    cluster.shutdown().await;
}
