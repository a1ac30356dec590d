//! Calls that end without a definite answer, per-call deadlines and retry
//! policies, against real in-process 3-node clusters.

use std::time::{Duration, Instant};

use crate::common::{Fault, Faults, faulty_client, session};
use raftlock_client::{Client, ClientOptions, Error, RetryPolicy};
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::wait::bounded;
use tonic::Code;

/// The lease's holds and queued requests on `name`, as (holds, waits).
async fn of_lease(client: &Client, name: &str, lease: u64) -> (usize, usize) {
    match bounded(client.inspect(name)).await.expect("inspect") {
        None => (0, 0),
        Some(info) => (
            info.holders.iter().filter(|h| h.lease_id == lease).count(),
            info.queue.iter().filter(|q| q.lease_id == lease).count(),
        ),
    }
}

/// Poll until the lease has `want` on `name`, for at most `within`.
async fn until_lease_has(
    client: &Client,
    name: &str,
    lease: u64,
    want: (usize, usize),
    within: Duration,
) {
    let until = Instant::now() + within;
    loop {
        let got = of_lease(client, name, lease).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "lease {lease} has (holds, waits) {got:?} on {name} after {within:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_granted_while_its_answer_is_lost_is_outcome_unknown_and_leaves_no_hold() {
    let cluster = Cluster::start_proxied(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    // Reads and the other holder go to the leader in this process, past
    // every proxy.
    let node = cluster.nodes[&leader].as_ref().expect("leader");
    let admin = Client::in_process(node.local_service(), ClientOptions::default());
    let holder = session(&admin, 10_000, "holder").await;
    let held = bounded(holder.lock("uo/x").try_acquire())
        .await
        .expect("held");

    let client = cluster.client_with(RetryPolicy::none()).await;
    let s = session(&client, 10_000, "cut-off").await;
    let lease = s.lease_id();
    assert_eq!(
        client.current_endpoint(),
        cluster.addrs[&leader],
        "the grant's reply named the leader"
    );
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move { s.lock("uo/x").wait(Duration::from_secs(20)).acquire().await })
    };
    until_lease_has(&admin, "uo/x", lease, (0, 1), Duration::from_secs(5)).await;

    // The client's connection to the leader goes dead; then the queued
    // request is granted, and the answer never arrives.
    cluster.proxies[&leader].cut();
    bounded(held.release()).await.expect("release");
    until_lease_has(&admin, "uo/x", lease, (1, 0), Duration::from_secs(5)).await;
    let started = Instant::now();
    let e = bounded(waiting)
        .await
        .expect("task")
        .expect_err("the answer was lost");
    assert!(
        matches!(e, Error::OutcomeUnknown { attempts: 1, .. }),
        "{e:?}"
    );
    assert!(e.may_have_been_applied());
    assert_eq!(e.reason(), "OUTCOME_UNKNOWN");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "HTTP/2 pings find the dead connection"
    );
    assert!(s.is_busy_with("uo/x"), "the session is withdrawing it");

    // Once the client reaches the cluster again, the session withdraws the
    // guardless hold by itself, long before its lease would end.
    cluster.proxies[&leader].heal();
    until_lease_has(&admin, "uo/x", lease, (0, 0), Duration::from_secs(15)).await;
    assert!(s.is_valid(), "freed by the session, not by the lease's end");
    let again = bounded(s.lock("uo/x").wait(Duration::from_secs(5)).acquire())
        .await
        .expect("the name is usable again on the session");
    bounded(again.release()).await.expect("release");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_acquire_whose_answer_is_lost_has_its_request_withdrawn_by_the_session() {
    let cluster = Cluster::start_proxied(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let node = cluster.nodes[&leader].as_ref().expect("leader");
    let admin = Client::in_process(node.local_service(), ClientOptions::default());
    let holder = session(&admin, 20_000, "holder").await;
    let held = bounded(holder.lock_many(["uq/a", "uq/b"]).try_acquire())
        .await
        .expect("held");

    let client = cluster.client_with(RetryPolicy::none()).await;
    let s = session(&client, 20_000, "cut-off").await;
    let lease = s.lease_id();
    assert_eq!(client.current_endpoint(), cluster.addrs[&leader]);
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move {
            s.lock_many(["uq/a", "uq/b"])
                .wait(Duration::from_secs(40))
                .acquire()
                .await
        })
    };
    until_lease_has(&admin, "uq/b", lease, (0, 1), Duration::from_secs(5)).await;

    // The answer can no longer arrive; the leader's side of the call is
    // still open and keeps waiting (40 s) for a grant nobody will get.
    cluster.proxies[&leader].cut();
    let e = bounded(waiting)
        .await
        .expect("task")
        .expect_err("the answer was lost");
    assert!(matches!(e, Error::OutcomeUnknown { .. }), "{e:?}");
    cluster.proxies[&leader].heal();

    // The session withdraws the queued request itself, long before the
    // wait would end ...
    until_lease_has(&admin, "uq/a", lease, (0, 0), Duration::from_secs(15)).await;
    until_lease_has(&admin, "uq/b", lease, (0, 0), Duration::from_secs(1)).await;
    // ... so the holder's release hands the locks to nobody.
    bounded(held.release()).await.expect("release");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(of_lease(&admin, "uq/a", lease).await, (0, 0));
    assert!(s.is_valid());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_shorter_than_the_wait_ends_it_with_a_definite_wait_timeout() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let holder = session(&client, 10_000, "holder").await;
    let held = bounded(holder.lock("dl/x").try_acquire())
        .await
        .expect("held");
    let s = session(&client, 10_000, "in-a-hurry").await;
    let lease = s.lease_id();

    let started = Instant::now();
    let e = bounded(
        s.lock("dl/x")
            .wait(Duration::from_secs(30))
            .deadline(Duration::from_millis(700))
            .acquire(),
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    // The server's wait ended before the deadline and it withdrew the
    // request itself: a definite answer, nothing left to clean up.
    assert!(matches!(e, Error::WaitTimeout { .. }), "{e:?}");
    assert!(!e.may_have_been_applied());
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(700),
        "ended after {took:?}"
    );
    assert!(!s.is_busy_with("dl/x"), "no cleanup in the background");
    assert_eq!(of_lease(&client, "dl/x", lease).await, (0, 0));
    // So the holder's release does not hand the lock to nobody.
    bounded(held.release()).await.expect("release");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(of_lease(&client, "dl/x", lease).await, (0, 0));

    // A grant that comes within the deadline is the caller's.
    let held = bounded(holder.lock("dl/x").try_acquire())
        .await
        .expect("held again");
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move {
            s.lock("dl/x")
                .wait(Duration::from_secs(30))
                .deadline(Duration::from_secs(3))
                .acquire()
                .await
        })
    };
    until_lease_has(&client, "dl/x", lease, (0, 1), Duration::from_secs(2)).await;
    bounded(held.release()).await.expect("release");
    let got = bounded(waiting)
        .await
        .expect("task")
        .expect("granted within the deadline");
    bounded(got.release()).await.expect("release");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_deadlines_bound_patient_retries_without_a_quorum() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client_with(RetryPolicy::patient()).await;
    let s = session(&client, 20_000, "no-quorum").await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    for id in [1, 2, 3] {
        if id != leader {
            cluster.stop(id).await;
        }
    }
    // patient() alone would retry for about 30 s.
    let started = Instant::now();
    let e = bounded(
        client
            .with_call_timeout(Duration::from_millis(600))
            .inspect("dq/x"),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let e = bounded(
        s.lock("dq/x")
            .deadline(Duration::from_millis(600))
            .try_acquire(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retries_fail_at_once_during_an_election_while_patient_rides_it_out() {
    let mut cluster = Cluster::start(3).await;
    let none = cluster.client_with(RetryPolicy::none()).await;
    let patient = cluster.client_with(RetryPolicy::patient()).await;
    let s_none = session(&none, 10_000, "none").await;
    let s_patient = session(&patient, 10_000, "patient").await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    // Both clients send to the leader now (their grants' replies named it).
    assert_eq!(none.current_endpoint(), cluster.addrs[&leader]);
    assert_eq!(patient.current_endpoint(), cluster.addrs[&leader]);
    cluster.stop(leader).await;

    let started = Instant::now();
    let e = bounded(s_none.lock("el/a").try_acquire())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The stopped leader refuses the connection: definitely not applied.
    assert!(matches!(e, Error::Unavailable { attempts: 1, .. }), "{e:?}");
    assert!(!e.may_have_been_applied());

    let g = bounded(s_patient.lock("el/b").try_acquire())
        .await
        .expect("patient() rides out the election");
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    assert!(s_patient.is_valid());
    bounded(g.release()).await.expect("release");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_acquire_answered_by_a_plain_internal_status_is_outcome_unknown_and_withdrawn() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let node = cluster.nodes[&leader].as_ref().expect("leader");
    let admin = Client::in_process(node.local_service(), ClientOptions::default());
    let faults = Faults::default();
    let client = faulty_client(node, &faults, RetryPolicy::standard());
    let s = session(&client, 20_000, "internal").await;
    let lease = s.lease_id();

    // The node grants the lock; what reaches the client is a proxy's
    // INTERNAL with no raftlock reason, which does not say "not applied".
    faults.set("Locks/Acquire", Fault::LoseAnswer(Code::Internal), 1);
    let e = bounded(s.lock("ie/x").try_acquire())
        .await
        .expect_err("the answer was lost");
    assert!(matches!(e, Error::OutcomeUnknown { .. }), "{e:?}");
    assert!(e.may_have_been_applied());

    // So the session withdraws the guardless hold, long before its lease
    // (20 s) would end.
    until_lease_has(&admin, "ie/x", lease, (0, 0), Duration::from_secs(5)).await;
    assert!(s.is_valid());
    let again = bounded(s.lock("ie/x").wait(Duration::from_secs(5)).acquire())
        .await
        .expect("the name is usable again on the session");
    bounded(again.release()).await.expect("release");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_lock_release_refused_for_one_force_released_name_still_frees_the_others() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let s = session(&client, 20_000, "multi").await;
    let lease = s.lease_id();

    // release(): refused as a whole (all or none) because of one name.
    let guard = bounded(s.lock_many(["mr/a", "mr/b", "mr/c"]).try_acquire())
        .await
        .expect("held");
    bounded(client.force_release("mr/b", None))
        .await
        .expect("force release");
    let e = bounded(guard.release())
        .await
        .expect_err("one of the holds is gone");
    assert!(matches!(e, Error::NotHolder { .. }), "{e:?}");
    // The other holds are released by the session, not left to the
    // lease's end (20 s).
    for name in ["mr/a", "mr/c"] {
        until_lease_has(&client, name, lease, (0, 0), Duration::from_secs(5)).await;
    }

    // Dropped: the same in the background.
    let guard = bounded(s.lock_many(["mr/d", "mr/e"]).try_acquire())
        .await
        .expect("held");
    bounded(client.force_release("mr/d", None))
        .await
        .expect("force release");
    drop(guard);
    until_lease_has(&client, "mr/e", lease, (0, 0), Duration::from_secs(5)).await;

    // And the names are usable again on the session.
    let again = bounded(
        s.lock_many(["mr/a", "mr/c", "mr/e"])
            .wait(Duration::from_secs(5))
            .acquire(),
    )
    .await
    .expect("acquire again");
    bounded(again.release()).await.expect("release");
    assert!(s.is_valid());
    cluster.shutdown().await;
}

/// Writes fail (a leader whose disk or apply is stuck, as seen from this
/// client) while reads and keep-alives, which are not written, get through.
fn releases_fail(faults: &Faults) {
    faults.set("Locks/Release", Fault::Refuse(Code::Unavailable), u32::MAX);
    faults.set("Locks/Acquire", Fault::Refuse(Code::Unavailable), u32::MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_whose_writes_keep_failing_gives_up_and_lets_client_lock_revoke_its_session() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let node = cluster.nodes[&leader].as_ref().expect("leader");
    let admin = Client::in_process(node.local_service(), ClientOptions::default());
    let faults = Faults::default();
    let client = faulty_client(node, &faults, RetryPolicy::none());
    let guard = bounded(
        client
            .lock("cg/x")
            .ttl(Duration::from_secs(2))
            .owner("stuck-writes")
            .try_acquire(),
    )
    .await
    .expect("held");
    let lease = guard.session().lease_id();

    // The guard's release fails; its cleanup keeps the session alive
    // for a while (keep-alives get through), then gives up ...
    releases_fail(&faults);
    drop(guard);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        of_lease(&admin, "cg/x", lease).await,
        (1, 0),
        "the release failed and the session outlived its ttl (2 s)"
    );
    // ... and lets go of the session, whose revoke frees the lock long
    // before a lease kept alive for ever would.
    until_lease_has(&admin, "cg/x", lease, (0, 0), Duration::from_secs(10)).await;
    let leases = bounded(admin.leases()).await.expect("leases");
    assert!(
        leases.iter().all(|l| l.lease_id != lease),
        "revoked: {leases:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_whose_writes_keep_failing_gives_up_after_its_failed_rounds() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let node = cluster.nodes[&leader].as_ref().expect("leader");
    let admin = Client::in_process(node.local_service(), ClientOptions::default());
    let faults = Faults::default();
    let client = faulty_client(node, &faults, RetryPolicy::none());
    // A ttl long enough that only the failed rounds can end the cleanup.
    let s = session(&client, 60_000, "stuck-writes").await;
    let lease = s.lease_id();
    let guard = bounded(s.lock("cf/x").try_acquire()).await.expect("held");
    let token = guard.token();

    releases_fail(&faults);
    let started = Instant::now();
    drop(guard);
    assert!(s.is_busy_with("cf/x"), "the session is releasing it");
    let until = started + Duration::from_secs(15);
    while s.is_busy_with("cf/x") {
        assert!(
            Instant::now() < until,
            "the cleanup still runs after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "gave up after {:?}, before riding out a failure of a few seconds",
        started.elapsed()
    );
    // Given up: the hold is left to the lease's end, and the session
    // (still alive and held here) is usable.
    assert!(s.is_valid());
    assert_eq!(of_lease(&admin, "cf/x", lease).await, (1, 0));
    faults.clear();
    // The name is free on the session again: an acquire gets the hold
    // that was left (the server answers a lease that holds it with it).
    let again = bounded(s.lock("cf/x").try_acquire())
        .await
        .expect("held again");
    assert_eq!(again.token(), token);
    drop(again);
    bounded(s.revoke()).await.expect("revoke");
    until_lease_has(&admin, "cf/x", lease, (0, 0), Duration::from_secs(5)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_while_waiting_for_the_sessions_cleanup_is_definite() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let node = cluster.nodes[&leader].as_ref().expect("leader");
    let faults = Faults::default();
    let client = faulty_client(node, &faults, RetryPolicy::none());
    let s = session(&client, 60_000, "settling").await;
    let guard = bounded(s.lock("cs/x").try_acquire()).await.expect("held");

    // The guard's release keeps failing: the name stays settling.
    releases_fail(&faults);
    drop(guard);
    assert!(s.is_busy_with("cs/x"));
    let e = bounded(
        s.lock("cs/x")
            .wait(Duration::from_secs(5))
            .deadline(Duration::from_millis(300))
            .acquire(),
    )
    .await
    .expect_err("still settling");
    // Nothing of this acquire was sent: a definite answer.
    assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");
    assert_eq!(e.reason(), "DEADLINE_EXCEEDED");
    assert!(!e.may_have_been_applied(), "{e:?}");

    // Once writes get through the cleanup finishes and the name is usable.
    faults.clear();
    let again = bounded(s.lock("cs/x").wait(Duration::from_secs(5)).acquire())
        .await
        .expect("acquire after the cleanup");
    bounded(again.release()).await.expect("release");
    cluster.shutdown().await;
}
