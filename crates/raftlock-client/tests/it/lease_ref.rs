//! Calls on a lease by its id (`Client::lease_ref`), as the CLI and
//! scripts make them: nothing kept alive or released behind the caller's
//! back.

use std::time::Duration;

use futures::StreamExt;
use raftlock_client::{Error, Mode};
use raftlock_proto::errors::ErrorReason;
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::wait::bounded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_by_id_acquires_extends_releases_and_revokes_without_a_session() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let (lease_id, _) = bounded(client.grant_lease(Duration::from_secs(5), "script"))
        .await
        .expect("grant");
    let lease = client.lease_ref(lease_id);
    assert_eq!(lease.id(), lease_id);

    let held = bounded(
        lease
            .lock("lr/a")
            .reason("nightly")
            .metadata("host", "h1")
            .try_acquire(),
    )
    .await
    .expect("acquire");
    assert!(held.token > 0);
    // A retry on the same lease gets the same hold back, not a second one.
    let again = bounded(lease.lock("lr/a").try_acquire())
        .await
        .expect("retried acquire");
    assert_eq!((again.token, again.retry), (held.token, true));

    // Another lease is refused, with the contract's reason.
    let (other_id, _) = bounded(client.grant_lease(Duration::from_secs(5), "other"))
        .await
        .expect("grant");
    let other = client.lease_ref(other_id);
    let busy = bounded(other.lock("lr/a").try_acquire()).await.unwrap_err();
    assert_eq!(busy.error_reason(), Some(ErrorReason::LockBusy), "{busy:?}");

    let extended = bounded(lease.extend("lr/a", held.token, Some(Duration::from_secs(7))))
        .await
        .expect("extend");
    assert_eq!((extended.ttl_ms, extended.extensions), (7000, 1));

    // Dropping the answer released nothing: the lock is still held.
    let info = bounded(client.inspect("lr/a"))
        .await
        .expect("inspect")
        .expect("held");
    assert_eq!(info.holders[0].lease_id, lease_id);
    assert_eq!(info.holders[0].reason, "nightly");

    // A stale token is refused; the right one releases.
    let stale = bounded(lease.release(&["lr/a".to_string()], held.token + 1000))
        .await
        .unwrap_err();
    assert!(
        matches!(stale, Error::StaleToken { .. } | Error::NotHolder { .. }),
        "{stale:?}"
    );
    let released = bounded(lease.release(&["lr/a".to_string()], held.token))
        .await
        .expect("release");
    assert_eq!(released.names, ["lr/a"]);

    // Free now: the other lease gets it, with a larger token; the first
    // lease takes a semaphore's permit meanwhile.
    let granted = bounded(other.lock("lr/a").try_acquire())
        .await
        .expect("the other lease gets it");
    assert!(granted.token > held.token);
    bounded(lease.lock("lr/pool").mode(Mode::Semaphore(2)).try_acquire())
        .await
        .expect("a permit");

    // Revoking ends the lease and its holds; calls on it are then LeaseLost
    // with the node's reason.
    let revoked = bounded(lease.revoke()).await.expect("revoke");
    assert_eq!(revoked.released.len(), 1);
    let gone = bounded(lease.lock("lr/b").try_acquire()).await.unwrap_err();
    assert!(
        matches!(
            gone,
            Error::LeaseLost {
                reason: ErrorReason::LeaseNotFound,
                ..
            }
        ),
        "{gone:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_by_id_renews_until_dropped_and_ends_when_the_lease_is_gone() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let (lease_id, _) = bounded(client.grant_lease(Duration::from_secs(3), "keeper"))
        .await
        .expect("grant");
    let lease = client.lease_ref(lease_id);
    let mut renewals = lease.keep_alive();
    // A renewal every ttl/3: four of them outlast the ttl, and the lease is
    // still there.
    for _ in 0..4 {
        let r = bounded(renewals.next())
            .await
            .expect("a renewal")
            .expect("renewed");
        assert_eq!((r.lease_id, r.ttl_ms), (lease_id, 3000));
    }
    assert!(
        bounded(client.leases())
            .await
            .expect("leases")
            .iter()
            .any(|l| l.lease_id == lease_id)
    );
    // Revoked elsewhere: the stream ends with LeaseLost.
    bounded(client.revoke_lease(lease_id))
        .await
        .expect("revoke");
    let end = loop {
        match bounded(renewals.next()).await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error"),
        }
    };
    assert!(end.is_lease_lost(), "{end:?}");
    assert!(bounded(renewals.next()).await.is_none());
    cluster.shutdown().await;
}
