//! Session validity under faults, resuming watches, and the admin and lease
//! calls, against real in-process 3-node clusters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{client_of, session};
use futures::StreamExt;
use raftlock_client::{Error, RetryPolicy, SessionEnd, proto};
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::wait::bounded;

/// After the client's session is known lost, another session gets the lock
/// (once the cluster expired the lease), never before.
async fn lock_moves_only_after_loss_is_reported(
    cluster: &Cluster,
    guard: raftlock_client::LockGuard,
    name: &'static str,
) -> Instant {
    let other_client = cluster.client_with(RetryPolicy::patient()).await;
    let other = session(&other_client, 5000, "next").await;
    let next = tokio::spawn(async move {
        let g = other
            .lock(name)
            .wait(Duration::from_secs(15))
            .acquire()
            .await;
        (Instant::now(), g, other)
    });
    let end = bounded(guard.lost()).await;
    let lost_at = Instant::now();
    assert_eq!(end, SessionEnd::Lost);
    assert!(!guard.is_valid());
    assert_eq!(guard.remaining(), Duration::ZERO);
    assert!(guard.session().valid_until().is_none());
    let (granted_at, g, _other) = bounded(next).await.expect("task");
    let g = g.expect("the lock moves once the cluster expired the lease");
    assert!(
        lost_at < granted_at,
        "the client gave up before the lock moved"
    );
    assert!(g.token() > guard.token());
    drop(g);
    std::mem::forget(guard); // its release could only fail now
    lost_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_loss_is_reported_when_the_only_node_the_client_knows_is_killed() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = client_of(&[cluster.addrs[&leader].clone()], RetryPolicy::standard()).await;
    let s = session(&client, 1500, "only-the-leader").await;
    let guard = bounded(s.lock("loss/leader").try_acquire())
        .await
        .expect("held");
    cluster.stop(leader).await;
    let started = Instant::now();
    lock_moves_only_after_loss_is_reported(&cluster, guard, "loss/leader").await;
    assert!(started.elapsed() < Duration::from_secs(15));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_loss_is_reported_when_the_client_is_cut_off_longer_than_the_ttl() {
    let cluster = Cluster::start_proxied(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client().await;
    let s = session(&client, 1500, "behind-a-partition").await;
    let lease = s.lease_id();
    let guard = bounded(s.lock("loss/cut").try_acquire())
        .await
        .expect("held");
    // Keep-alives through the proxies work: still valid after two ttls.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(guard.is_valid(), "keep-alives through the proxies renew");

    // Nothing reaches the leader any more: not the client, not a follower
    // forwarding for it. The leader still replicates (its own connections
    // stay up), so it expires the lease once the keep-alives stop.
    cluster.proxies[&leader].cut();
    // No renewal can arrive after the cut, so this is the last window.
    let window_end = guard.session().valid_until().expect("valid");
    let api = cluster.nodes[&leader]
        .as_ref()
        .expect("leader")
        .api()
        .clone();
    let expired = tokio::spawn(async move {
        loop {
            let alive = api.read(true, |st| st.lease(lease).is_some()).await;
            if matches!(alive, Ok((false, _))) {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert_eq!(bounded(guard.lost()).await, SessionEnd::Lost);
    let lost_at = Instant::now();
    assert!(!guard.is_valid());
    assert_eq!(guard.remaining(), Duration::ZERO);
    assert!(
        lost_at <= window_end + Duration::from_millis(300),
        "reported {:?} after the window closed",
        lost_at.saturating_duration_since(window_end)
    );
    let expired_at = bounded(expired)
        .await
        .expect("the leader expires the lease");
    assert!(
        lost_at < expired_at,
        "the client gave up before the cluster did"
    );

    // Once the partition heals, the lock is free for the next session.
    cluster.proxies[&leader].heal();
    let other = session(&client, 5000, "next").await;
    let g = bounded(
        other
            .lock("loss/cut")
            .wait(Duration::from_secs(10))
            .acquire(),
    )
    .await
    .expect("free");
    assert!(g.token() > guard.token());
    std::mem::forget(guard);
    drop(g);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_across_a_leader_change_report_no_loss() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client_with(RetryPolicy::patient()).await;
    let s = session(&client, 2000, "survivor").await;
    let guard = bounded(s.lock("noloss/x").try_acquire())
        .await
        .expect("held");
    let lost = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (s, lost) = (s.clone(), Arc::clone(&lost));
        tokio::spawn(async move {
            s.lost().await;
            lost.store(true, Ordering::SeqCst);
        })
    };
    let old = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.stop(old).await;
    let new = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new, old);
    // Sample validity for three ttls after the change.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert!(guard.is_valid(), "the session stayed valid");
        assert!(guard.remaining() > Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!lost.load(Ordering::SeqCst), "lost() did not resolve");
    // The cluster agrees: the hold is still ours.
    let info = bounded(client.inspect("noloss/x"))
        .await
        .expect("inspect")
        .expect("held");
    assert_eq!(info.holders[0].lease_id, s.lease_id());
    watcher.abort();
    bounded(guard.release()).await.expect("release");
    cluster.shutdown().await;
}

/// A shorter ttl shortens the validity window at once: a new leader would
/// give the lease only the new ttl from its election, so the window the
/// old ttl gave no longer holds; the keep-alives follow the new ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_ttl_shortens_the_validity_at_once_and_keep_alives_follow_it() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client_with(RetryPolicy::patient()).await;
    let s = session(&client, 30_000, "shrinks").await;
    let guard = bounded(s.lock("shrink/x").try_acquire())
        .await
        .expect("held");
    assert!(guard.remaining() > Duration::from_secs(20));
    bounded(guard.extend(Some(Duration::from_secs(3))))
        .await
        .expect("extend");
    assert!(
        guard.remaining() <= Duration::from_secs(3),
        "the window follows the shorter ttl: {:?}",
        guard.remaining()
    );
    // Three windows of the new ttl: keep-alives every ttl/3 keep it valid.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        assert!(guard.is_valid(), "keep-alives follow the shorter ttl");
        assert!(guard.remaining() <= Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bounded(guard.release()).await.expect("release");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_watch_survives_a_node_restart_without_gaps_or_repeats() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client_with(RetryPolicy::patient()).await;
    let s = session(&client, 5000, "w").await;
    // Make the client talk to the leader, then watch through it.
    bounded(client.status()).await.expect("status");
    let watched_node = *cluster
        .addrs
        .iter()
        .find(|(_, a)| **a == client.current_endpoint())
        .expect("a known node")
        .0;
    let mut events = bounded(client.watch_resuming("rs/", 0))
        .await
        .expect("watch");
    let mut tokens = Vec::new();
    let g = bounded(s.lock("rs/a").try_acquire()).await.expect("a");
    tokens.push(g.token());
    bounded(g.release()).await.expect("release");

    cluster.stop(watched_node).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    // Events while the watched node is down.
    for name in ["rs/b", "rs/c"] {
        let g = bounded(s.lock(name).try_acquire()).await.expect("held");
        tokens.push(g.token());
        bounded(g.release()).await.expect("release");
    }
    cluster.restart(watched_node).await;
    let g = bounded(s.lock("rs/d").try_acquire()).await.expect("d");
    tokens.push(g.token());
    bounded(g.release()).await.expect("release");

    let mut seen = Vec::new();
    while seen.len() < 8 {
        let e = bounded(events.next())
            .await
            .expect("the stream goes on")
            .expect("an event");
        seen.push((e.name.clone(), e.r#type, e.token));
    }
    let (acq, rel) = (
        proto::EventType::Acquired as i32,
        proto::EventType::Released as i32,
    );
    let want: Vec<_> = ["rs/a", "rs/b", "rs/c", "rs/d"]
        .iter()
        .zip(&tokens)
        .flat_map(|(n, t)| [(n.to_string(), acq, *t), (n.to_string(), rel, *t)])
        .collect();
    assert_eq!(seen, want, "every event once, in order");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_watch_from_a_compacted_revision_is_a_clear_error() {
    let cluster = Cluster::start_with(3, |c| c.watch_history_events = 4).await;
    let client = cluster.client().await;
    let s = session(&client, 5000, "c").await;
    for _ in 0..6 {
        let g = bounded(s.lock("cp/x").try_acquire()).await.expect("held");
        bounded(g.release()).await.expect("release");
    }
    // Revision 1 is long gone from every node's history.
    let e = match bounded(client.watch_resuming("cp/", 1)).await {
        Ok(_) => panic!("a watch from revision 1 cannot be served"),
        Err(e) => e,
    };
    assert!(e.is_compacted(), "{e:?}");
    assert!(e.to_string().contains("from revision 1"), "{e}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_release_leases_attach_and_status() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;

    let status = bounded(client.status()).await.expect("status");
    assert_eq!(status.nodes.len(), 3);
    assert!(status.leader_id.is_some());

    // A bare lease, kept alive by an attached session.
    let (lease, ttl) = bounded(client.grant_lease(Duration::from_millis(1500), "bare"))
        .await
        .expect("grant");
    assert_eq!(ttl, Duration::from_millis(1500));
    let attached = bounded(client.attach_session(lease, None))
        .await
        .expect("attach");
    assert_eq!(attached.lease_id(), lease);
    let guard = bounded(attached.lock("adm/x").try_acquire())
        .await
        .expect("held");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        guard.is_valid(),
        "the attached session keeps the lease alive"
    );
    let info = bounded(attached.info())
        .await
        .expect("info")
        .expect("known");
    assert_eq!(info.owner, "bare");
    assert_eq!(info.holds, ["adm/x"]);

    // An administrator takes the lock away; the holder's release then says so.
    let removed = bounded(client.force_release("adm/x", None))
        .await
        .expect("force release");
    assert_eq!(removed.released.len(), 1);
    assert_eq!(removed.released[0].lease_id, lease);
    assert!(
        bounded(client.inspect("adm/x"))
            .await
            .expect("inspect")
            .is_none()
    );
    let e = bounded(guard.release()).await.unwrap_err();
    assert!(matches!(e, Error::NotHolder { .. }), "{e:?}");

    // Dropping an attached session does not revoke the lease ...
    drop(attached);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leases = bounded(client.leases()).await.expect("leases");
    assert!(leases.iter().any(|l| l.lease_id == lease));
    // ... revoking does.
    bounded(client.revoke_lease(lease)).await.expect("revoke");
    let e = bounded(client.revoke_lease(lease)).await.unwrap_err();
    assert!(e.is_lease_lost(), "{e:?}");
    let e = match bounded(client.attach_session(lease, None)).await {
        Ok(_) => panic!("a revoked lease cannot be attached"),
        Err(e) => e,
    };
    assert!(e.is_lease_lost(), "{e:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lock_shares_one_lease_per_ttl_and_owner_and_revokes_it_with_the_last_guard() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let ttl = Duration::from_secs(5);
    let a = bounded(client.lock("cl/a").ttl(ttl).owner("svc").try_acquire())
        .await
        .expect("a");
    let b = bounded(client.lock("cl/b").ttl(ttl).owner("svc").try_acquire())
        .await
        .expect("b");
    let lease = a.session().lease_id();
    assert_eq!(b.session().lease_id(), lease, "one lease for both locks");
    let other = bounded(client.lock("cl/c").ttl(ttl).owner("batch").try_acquire())
        .await
        .expect("c");
    assert_ne!(
        other.session().lease_id(),
        lease,
        "another owner, another lease"
    );
    let info = bounded(client.inspect("cl/a"))
        .await
        .expect("inspect")
        .expect("held");
    assert_eq!(info.holders[0].owner, "svc");

    // The client alone does not keep the lease alive: once the last guard
    // is gone the session revokes it.
    bounded(a.release()).await.expect("release a");
    drop(b);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leases = bounded(client.leases()).await.expect("leases");
        if !leases.iter().any(|l| l.lease_id == lease) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lease {lease} still there after its last guard was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        bounded(client.inspect("cl/b"))
            .await
            .expect("inspect")
            .is_none()
    );

    // The next lock starts a new session.
    let again = bounded(client.lock("cl/a").ttl(ttl).owner("svc").try_acquire())
        .await
        .expect("again");
    assert_ne!(again.session().lease_id(), lease);
    bounded(again.release()).await.expect("release");
    bounded(other.release()).await.expect("release c");
    cluster.shutdown().await;
}
