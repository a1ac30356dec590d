//! The client against real in-process 3-node clusters.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::session;
use futures::StreamExt;
use raftlock_client::{Error, Mode, RetryPolicy, SessionEnd, proto};
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::wait::bounded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_is_busy_wait_times_out_then_succeeds_after_release() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let a = session(&client, 5000, "a").await;
    let b = session(&client, 5000, "b").await;

    let held = bounded(a.lock("t/x").try_acquire())
        .await
        .expect("a gets it");
    assert!(held.is_valid());
    assert!(held.remaining() > Duration::from_secs(3));

    let busy = bounded(b.lock("t/x").try_acquire()).await.unwrap_err();
    assert!(matches!(busy, Error::Busy { .. }), "{busy:?}");
    assert_eq!(busy.reason(), "LOCK_BUSY");

    let started = Instant::now();
    let timed_out = bounded(b.lock("t/x").wait(Duration::from_millis(400)).acquire())
        .await
        .unwrap_err();
    assert!(
        matches!(timed_out, Error::WaitTimeout { .. }),
        "{timed_out:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(350));

    // The holder's own session is refused: one hold, one guard.
    let again = bounded(a.lock("t/x").try_acquire()).await.unwrap_err();
    assert!(matches!(again, Error::AlreadyHeld { .. }), "{again:?}");

    let first_token = held.token();
    bounded(held.release()).await.expect("release");
    let got = bounded(b.lock("t/x").try_acquire())
        .await
        .expect("b gets it");
    assert!(got.token() > first_token);

    let bad = bounded(b.lock("").try_acquire()).await.unwrap_err();
    assert!(matches!(bad, Error::InvalidArgument { .. }), "{bad:?}");
    drop(got);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_guard_releases_it_for_another_session() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let a = session(&client, 5000, "a").await;
    let b = session(&client, 5000, "b").await;
    let guard = bounded(a.lock("d/x").try_acquire()).await.expect("a");
    drop(guard);
    let got = bounded(b.lock("d/x").wait(Duration::from_secs(5)).acquire())
        .await
        .expect("b gets the dropped lock");
    assert_eq!(got.name(), "d/x");
    // Dropping the last handle of a session revokes its lease (and holds).
    drop(got);
    drop(b);
    let c = session(&client, 5000, "c").await;
    let _held = bounded(c.lock("d/x").wait(Duration::from_secs(5)).acquire())
        .await
        .expect("c gets it after b's session was dropped");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_strictly_increase_across_grants() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let s = session(&client, 5000, "s").await;
    let mut last = 0;
    for i in 0..5 {
        let name = if i % 2 == 0 { "k/a" } else { "k/b" };
        let g = bounded(s.lock(name).try_acquire()).await.expect("acquire");
        assert!(g.token() > last, "token {} after {last}", g.token());
        last = g.token();
        bounded(g.release()).await.expect("release");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_holders_coexist_and_semaphores_count_permits() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let s: Vec<_> = futures::future::join_all((0..3).map(|i| {
        let client = client.clone();
        async move { session(&client, 5000, &format!("s{i}")).await }
    }))
    .await;

    let r1 = bounded(s[0].lock("rw").mode(Mode::Shared).try_acquire())
        .await
        .expect("r1");
    let r2 = bounded(s[1].lock("rw").mode(Mode::Shared).try_acquire())
        .await
        .expect("r2");
    let w = bounded(s[2].lock("rw").try_acquire()).await.unwrap_err();
    assert!(matches!(w, Error::Busy { .. }), "{w:?}");
    let info = bounded(client.inspect("rw"))
        .await
        .expect("inspect")
        .expect("held");
    assert_eq!(info.holders.len(), 2);

    let p1 = bounded(s[0].lock("sem").mode(Mode::Semaphore(2)).try_acquire())
        .await
        .expect("p1");
    let p2 = bounded(s[1].lock("sem").mode(Mode::Semaphore(2)).try_acquire())
        .await
        .expect("p2");
    let p3 = bounded(s[2].lock("sem").mode(Mode::Semaphore(2)).try_acquire())
        .await
        .unwrap_err();
    assert!(matches!(p3, Error::Busy { .. }), "{p3:?}");
    let mismatch = bounded(s[2].lock("sem").mode(Mode::Semaphore(3)).try_acquire())
        .await
        .unwrap_err();
    assert_eq!(mismatch.reason(), "PERMITS_MISMATCH");
    bounded(p1.release()).await.expect("release p1");
    let p3 = bounded(s[2].lock("sem").mode(Mode::Semaphore(2)).try_acquire())
        .await
        .expect("p3");

    let listed = bounded(client.list("")).await.expect("list");
    let names: Vec<_> = listed.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["rw", "sem"]);
    drop((r1, r2, p2, p3));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_waiters_are_granted_in_arrival_order() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let holder = session(&client, 5000, "holder").await;
    let guard = bounded(holder.lock("fifo").try_acquire())
        .await
        .expect("held");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3u32 {
        let s = session(&client, 5000, &format!("w{i}")).await;
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let g = s
                .lock("fifo")
                .wait(Duration::from_secs(15))
                .acquire()
                .await
                .expect("granted");
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(50)).await;
            g.release().await.expect("release");
        }));
        // Queue them one by one so arrival order is known.
        let want = i as usize + 1;
        bounded(async {
            loop {
                let q = client
                    .inspect("fifo")
                    .await
                    .expect("inspect")
                    .map_or(0, |l| l.queue.len());
                if q == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    bounded(guard.release()).await.expect("release");
    for t in tasks {
        bounded(t).await.expect("waiter task");
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_reported_before_the_lock_goes_to_another() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let a = session(&client, 1000, "frozen").await;
    let b = session(&client, 5000, "next").await;
    let guard = bounded(a.lock("lost/x").try_acquire()).await.expect("a");
    assert!(guard.is_valid());
    // Keep-alives work: after more than a ttl the guard is still valid.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(guard.is_valid(), "keep-alives renew the session");

    a.pause_keep_alives(true);
    let next = tokio::spawn(async move {
        let g = b
            .lock("lost/x")
            .wait(Duration::from_secs(10))
            .acquire()
            .await;
        (Instant::now(), g)
    });
    let end = bounded(guard.lost()).await;
    let lost_at = Instant::now();
    assert_eq!(end, SessionEnd::Lost);
    assert!(!guard.is_valid());
    assert_eq!(guard.remaining(), Duration::ZERO);
    let (granted_at, g) = bounded(next).await.expect("task");
    let g = g.expect("b gets the lock once a's lease expired on the server");
    assert!(
        lost_at < granted_at,
        "the client gave up before the lock moved"
    );
    assert!(g.token() > guard.token());
    // Using the lost session is refused client-side.
    let e = bounded(a.lock("lost/y").try_acquire()).await.unwrap_err();
    assert!(e.is_lease_lost(), "{e:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follows_the_new_leader_and_the_guard_still_releases() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client_with(RetryPolicy::patient()).await;
    let s = session(&client, 3000, "survivor").await;
    let guard = bounded(s.lock("ha/x").try_acquire()).await.expect("held");
    let old_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_eq!(client.current_endpoint(), cluster.addrs[&old_leader]);

    cluster.stop(old_leader).await;
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, old_leader);

    // The keep-alive stream moves on: after more than a ttl the session
    // is still valid.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(guard.is_valid(), "session survived the leader change");
    bounded(guard.extend(None))
        .await
        .expect("extend after failover");
    assert_eq!(client.current_endpoint(), cluster.addrs[&new_leader]);
    let token = guard.token();
    bounded(guard.release())
        .await
        .expect("release after failover");

    let other = session(&client, 3000, "other").await;
    let g = bounded(other.lock("ha/x").try_acquire())
        .await
        .expect("free again");
    assert!(g.token() > token);
    drop(g);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_acquire_and_release() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let s = session(&client, 5000, "w").await;
    let mut events = bounded(client.watch("watched/", 0)).await.expect("watch");
    // Let the watch register before acting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let g = bounded(s.lock("watched/a").try_acquire()).await.expect("a");
    let token = g.token();
    bounded(g.release()).await.expect("release");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = bounded(events.next())
            .await
            .expect("stream open")
            .expect("event");
        assert_eq!(e.name, "watched/a");
        seen.push((e.r#type, e.token));
    }
    assert_eq!(
        seen,
        [
            (proto::EventType::Acquired as i32, token),
            (proto::EventType::Released as i32, token)
        ]
    );
    assert!(
        bounded(client.inspect("watched/a"))
            .await
            .expect("inspect")
            .is_none()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_ends_the_session_and_frees_its_locks() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let a = session(&client, 5000, "a").await;
    let b = session(&client, 5000, "b").await;
    let guard = bounded(
        a.lock("rv/x")
            .reason("nightly")
            .metadata("host", "h1")
            .try_acquire(),
    )
    .await
    .expect("a");
    let info = bounded(client.inspect("rv/x"))
        .await
        .expect("inspect")
        .expect("held");
    assert_eq!(info.holders[0].reason, "nightly");
    assert_eq!(info.holders[0].metadata["host"], "h1");
    assert_eq!(info.holders[0].owner, "a");

    bounded(a.revoke()).await.expect("revoke");
    assert_eq!(bounded(guard.lost()).await, SessionEnd::Revoked);
    assert!(!guard.is_valid());
    assert!(a.valid_until().is_none());
    let g = bounded(b.lock("rv/x").try_acquire())
        .await
        .expect("freed by revoke");
    let e = bounded(guard.release()).await.unwrap_err();
    assert!(
        e.is_lease_lost() || matches!(e, Error::NotHolder { .. }),
        "{e:?}"
    );
    drop(g);
    cluster.shutdown().await;
}

/// The lease's holders and queued requests on `name`, as (holds, waits).
async fn of_lease(client: &raftlock_client::Client, name: &str, lease: u64) -> (usize, usize) {
    match bounded(client.inspect(name)).await.expect("inspect") {
        None => (0, 0),
        Some(info) => (
            info.holders.iter().filter(|h| h.lease_id == lease).count(),
            info.queue.iter().filter(|q| q.lease_id == lease).count(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_never_gives_two_guards_for_one_hold() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let s = session(&client, 10_000, "one-holder").await;
    let other = session(&client, 10_000, "other").await;
    let lease = s.lease_id();

    let held = bounded(s.lock("ss/x").try_acquire()).await.expect("held");
    // Held: a second acquire on the session, alone or in a set, is refused
    // before it reaches the server.
    let e = bounded(s.lock("ss/x").try_acquire()).await.unwrap_err();
    assert!(
        matches!(&e, Error::AlreadyHeld { name, lease_id } if name == "ss/x" && *lease_id == lease),
        "{e:?}"
    );
    assert_eq!(e.reason(), "ALREADY_HELD");
    let e = bounded(s.lock_many(["ss/y", "ss/x"]).try_acquire())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyHeld { .. }), "{e:?}");
    assert_eq!(
        of_lease(&client, "ss/y", lease).await,
        (0, 0),
        "nothing was sent"
    );

    // Being acquired (queued behind another session): refused too.
    let blocker = bounded(other.lock("ss/z").try_acquire())
        .await
        .expect("other holds z");
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move { s.lock("ss/z").wait(Duration::from_secs(10)).acquire().await })
    };
    let until = Instant::now() + Duration::from_secs(5);
    while of_lease(&client, "ss/z", lease).await != (0, 1) {
        assert!(Instant::now() < until, "the first acquire never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = bounded(s.lock("ss/z").try_acquire()).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyHeld { .. }), "{e:?}");
    drop(blocker);
    let z = bounded(waiting).await.expect("task").expect("granted");

    // Dropping a guard releases in the background; an acquire of the name
    // right after waits for that release instead of being handed the hold
    // the release is about to end.
    let first = held.token();
    drop(held);
    assert!(
        s.is_busy_with("ss/x"),
        "the name stays taken until its release is applied"
    );
    let next = bounded(s.lock("ss/x").try_acquire())
        .await
        .expect("after the release");
    assert!(next.token() > first, "a new hold, not the released one");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = bounded(client.inspect("ss/x"))
        .await
        .expect("inspect")
        .expect("still held by the new guard");
    assert_eq!(
        (info.holders[0].lease_id, info.holders[0].token),
        (lease, next.token())
    );
    bounded(next.release()).await.expect("release");
    bounded(z.release()).await.expect("release z");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lock_gives_concurrent_holders_of_one_name_leases_of_their_own() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let ttl = Duration::from_secs(10);
    let first = bounded(client.lock("cs/x").ttl(ttl).owner("svc").try_acquire())
        .await
        .expect("first");
    // Same ttl and owner, same name: another lease, which finds it busy ...
    let e = bounded(client.lock("cs/x").ttl(ttl).owner("svc").try_acquire())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e:?}");
    // ... and queues for it like any other client.
    let second = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .lock("cs/x")
                .ttl(ttl)
                .owner("svc")
                .wait(Duration::from_secs(10))
                .acquire()
                .await
        })
    };
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let info = bounded(client.inspect("cs/x")).await.expect("inspect");
        if info.is_some_and(|i| i.queue.len() == 1) {
            break;
        }
        assert!(Instant::now() < until, "the second holder never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another name still shares the first holder's lease.
    let other_name = bounded(client.lock("cs/y").ttl(ttl).owner("svc").try_acquire())
        .await
        .expect("y");
    assert_eq!(other_name.session().lease_id(), first.session().lease_id());

    let first_token = first.token();
    let first_lease = first.session().lease_id();
    bounded(first.release()).await.expect("release");
    let second = bounded(second)
        .await
        .expect("task")
        .expect("second gets it");
    assert!(second.token() > first_token);
    assert_ne!(second.session().lease_id(), first_lease);
    drop(other_name);
    bounded(second.release()).await.expect("release");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guard_of_a_lost_session_sees_it_lost() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let s = session(&client, 3000, "many-guards").await;
    let a = bounded(s.lock("lg/a").try_acquire()).await.expect("a");
    let b = bounded(s.lock("lg/b").mode(Mode::Shared).try_acquire())
        .await
        .expect("b");
    let cd = bounded(s.lock_many(["lg/c", "lg/d"]).try_acquire())
        .await
        .expect("c, d");
    // Someone else ends the lease: the next keep-alive is refused.
    bounded(client.revoke_lease(s.lease_id()))
        .await
        .expect("revoke");
    let (la, lb, lcd) = bounded(async { tokio::join!(a.lost(), b.lost(), cd.lost()) }).await;
    assert_eq!(
        (la, lb, lcd),
        (SessionEnd::Lost, SessionEnd::Lost, SessionEnd::Lost)
    );
    assert!(!a.is_valid() && !b.is_valid() && !cd.is_valid());
    assert_eq!(cd.remaining(), Duration::ZERO);
    cluster.shutdown().await;
}

/// `RetryPolicy::standard()` rides out a leader election: an acquire made
/// just after the leader stopped, by a client that knows every node,
/// succeeds once another node leads. (It used to give up some 150 ms in:
/// each pause cost two attempts, a follower naming the dead leader and the
/// refused connection to it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_policy_rides_out_a_leader_election() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let client = cluster.client_with(RetryPolicy::standard()).await;
    // In use before the stop: the client knows the leader, as one would.
    let s = session(&client, 10_000, "across-a-failover").await;
    let before = bounded(s.lock("failover/before").try_acquire())
        .await
        .expect("held before the stop");
    cluster.stop(leader).await;
    let stopped = Instant::now();
    let after = bounded(s.lock("failover/after").try_acquire())
        .await
        .expect("the standard policy rides out the election");
    let took = stopped.elapsed();
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    assert!(after.token() > before.token());
    // The call waited for the election, not less: an election takes at
    // least the test timing's leader lease plus election timeout minimum.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    drop((before, after));
    cluster.shutdown().await;
}
