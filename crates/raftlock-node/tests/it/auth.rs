//! Authentication and authorization of the client services, with bearer
//! tokens over plaintext (the certificate path is the same code with the
//! identity taken from the TLS listener's ConnInfo).

use std::time::Duration;

use raftlock_node::{AuthSource, Node, NodeConfig, StartError};
use raftlock_proto::auth::token_sha256;
use raftlock_proto::errors::detail;
use raftlock_proto::v1 as pb;
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::grpc::{acquire_req, reason_of};
use tonic::Request;
use tonic_types::StatusExt;

const WORKER: &str = "rlt_worker-token";
const OTHER: &str = "rlt_other-token";
const OPS: &str = "rlt_ops-token";
const LIMITED: &str = "rlt_limited-token";
const CHATTY: &str = "rlt_chatty-token";

fn policy() -> String {
    format!(
        r#"
[[role]]
name = "jobs"
rules = [{{ prefix = "jobs/", allow = ["inspect", "lock", "watch"] }}]

[[role]]
name = "ops"
rules = [{{ prefix = "", allow = ["inspect", "lock", "watch", "admin"] }}]

[[identity]]
name = "worker"
token_sha256 = "{worker}"
roles = ["jobs"]

[[identity]]
name = "other"
token_sha256 = "{other}"
roles = ["jobs"]

[[identity]]
name = "ops"
token_sha256 = "{ops}"
roles = ["ops"]

[[identity]]
name = "limited"
token_sha256 = "{limited}"
roles = ["jobs"]
[identity.limits]
max_leases = 2

[[identity]]
name = "chatty"
token_sha256 = "{chatty}"
roles = ["jobs"]
[identity.limits]
requests_per_second = 0.01
burst = 3
"#,
        worker = token_sha256(WORKER),
        other = token_sha256(OTHER),
        ops = token_sha256(OPS),
        limited = token_sha256(LIMITED),
        chatty = token_sha256(CHATTY),
    )
}

fn with_auth(c: &mut NodeConfig) {
    c.auth = Some(AuthSource::Toml(policy()));
}

/// `message` sent as the holder of `token`.
fn as_<T>(token: &str, message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    r
}

fn missing(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get(detail::MISSING).cloned())
        .unwrap_or_default()
}

async fn grant(cluster: &Cluster, node: u64, token: &str) -> Result<u64, tonic::Status> {
    let mut leases = cluster.leases(node).await;
    leases
        .grant(as_(
            token,
            pb::GrantLeaseRequest {
                ttl_ms: 10_000,
                owner: "test".into(),
            },
        ))
        .await
        .map(|r| r.into_inner().lease_id)
}

#[tokio::test]
async fn a_lock_identity_locks_its_prefix_and_is_denied_elsewhere_and_on_other_leases() {
    let cluster = Cluster::start_with(1, with_auth).await;
    let node = cluster.leader().await;
    let mut locks = cluster.locks(node).await;
    let mut leases = cluster.leases(node).await;
    let mut admin = cluster.admin(node).await;

    let lease = grant(&cluster, node, WORKER).await.expect("grant");
    let held = locks
        .acquire(as_(WORKER, acquire_req(lease, "jobs/x", 0)))
        .await
        .expect("jobs/x")
        .into_inner();

    let denied = locks
        .acquire(as_(WORKER, acquire_req(lease, "billing/x", 0)))
        .await
        .expect_err("billing/x");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason_of(&denied), "DENIED");
    assert_eq!(missing(&denied), "lock on billing/x");

    let denied = admin
        .force_release(as_(
            WORKER,
            pb::ForceReleaseRequest {
                name: "jobs/x".into(),
                lease_id: None,
            },
        ))
        .await
        .expect_err("force-release needs admin");
    assert_eq!(reason_of(&denied), "DENIED");
    assert_eq!(missing(&denied), "admin on jobs/x");
    let denied = admin
        .snapshot(as_(WORKER, pb::SnapshotRequest {}))
        .await
        .expect_err("snapshot needs admin on every name");
    assert_eq!(reason_of(&denied), "DENIED");

    // Another identity with the same rules cannot touch the lease.
    let foreign = |s: tonic::Status, what: &str| {
        assert_eq!(reason_of(&s), "DENIED", "{what}: {s:?}");
        assert!(
            s.message()
                .contains(&format!("lease {lease} belongs to another identity")),
            "{what}: {s:?}"
        );
    };
    foreign(
        locks
            .acquire(as_(OTHER, acquire_req(lease, "jobs/y", 0)))
            .await
            .expect_err("acquire"),
        "acquire",
    );
    foreign(
        locks
            .release(as_(
                OTHER,
                pb::ReleaseRequest {
                    lease_id: lease,
                    token: held.token,
                    names: vec!["jobs/x".into()],
                },
            ))
            .await
            .expect_err("release"),
        "release",
    );
    foreign(
        locks
            .extend(as_(
                OTHER,
                pb::ExtendRequest {
                    lease_id: lease,
                    name: "jobs/x".into(),
                    token: held.token,
                    ttl_ms: None,
                },
            ))
            .await
            .expect_err("extend"),
        "extend",
    );
    foreign(
        leases
            .revoke(as_(OTHER, pb::RevokeLeaseRequest { lease_id: lease }))
            .await
            .expect_err("revoke"),
        "revoke",
    );
    let requests = futures::stream::iter(vec![pb::KeepAliveRequest { lease_id: lease }]);
    let mut replies = leases
        .keep_alive(as_(OTHER, requests))
        .await
        .expect("the stream opens")
        .into_inner();
    foreign(
        replies
            .message()
            .await
            .expect_err("keep-alive of another identity's lease"),
        "keep-alive",
    );

    // Its own identity still uses it; the hold is intact.
    let requests = futures::stream::iter(vec![pb::KeepAliveRequest { lease_id: lease }]);
    let mut replies = leases
        .keep_alive(as_(WORKER, requests))
        .await
        .expect("opens")
        .into_inner();
    assert!(replies.message().await.expect("kept alive").is_some());

    // No identity, or an unknown token: UNAUTHENTICATED.
    let s = locks
        .inspect(pb::InspectRequest {
            name: "jobs/x".into(),
            stale: false,
        })
        .await
        .expect_err("no identity");
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason_of(&s), "UNAUTHENTICATED");
    let s = leases
        .grant(as_(
            "rlt_made-up",
            pb::GrantLeaseRequest {
                ttl_ms: 10_000,
                owner: "x".into(),
            },
        ))
        .await
        .expect_err("unknown token");
    assert_eq!(reason_of(&s), "UNAUTHENTICATED");

    // Health checks: any identity may ask for the status.
    admin
        .status(as_(WORKER, pb::StatusRequest {}))
        .await
        .expect("status");

    // An admin's force-release is the exception, and the watch stream
    // says who forced it.
    let mut watch = locks
        .watch(as_(
            WORKER,
            pb::WatchRequest {
                prefix: "jobs/".into(),
                from_revision: held.revision,
            },
        ))
        .await
        .expect("watch jobs/")
        .into_inner();
    let released = admin
        .force_release(as_(
            OPS,
            pb::ForceReleaseRequest {
                name: "jobs/x".into(),
                lease_id: Some(lease),
            },
        ))
        .await
        .expect("ops may force-release")
        .into_inner();
    assert_eq!(released.released.len(), 1);
    let forced = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let batch = watch.message().await.expect("watch").expect("open");
            if let Some(e) = batch
                .events
                .into_iter()
                .find(|e| e.r#type == pb::EventType::ForceReleased as i32)
            {
                return e;
            }
        }
    })
    .await
    .expect("a force-released event");
    assert_eq!(forced.forced_by, "ops");
    assert_eq!(forced.name, "jobs/x");

    cluster.shutdown().await;
}

#[tokio::test]
async fn listing_and_watching_need_the_whole_prefix_and_leases_of_others_are_hidden() {
    let cluster = Cluster::start_with(1, with_auth).await;
    let node = cluster.leader().await;
    let mut locks = cluster.locks(node).await;
    let mut leases = cluster.leases(node).await;

    let mine = grant(&cluster, node, WORKER).await.expect("grant");
    locks
        .acquire(as_(WORKER, acquire_req(mine, "jobs/a", 0)))
        .await
        .expect("jobs/a");
    let theirs = grant(&cluster, node, OPS).await.expect("grant");
    locks
        .acquire(as_(OPS, acquire_req(theirs, "billing/b", 0)))
        .await
        .expect("billing/b");
    let shared = grant(&cluster, node, OPS).await.expect("grant");
    locks
        .acquire(as_(OPS, acquire_req(shared, "jobs/c", 0)))
        .await
        .expect("jobs/c");
    locks
        .acquire(as_(OPS, acquire_req(shared, "billing/c", 0)))
        .await
        .expect("billing/c");

    let list = |prefix: &str| {
        as_(
            WORKER,
            pb::ListRequest {
                prefix: prefix.into(),
                ..Default::default()
            },
        )
    };
    let s = locks.list(list("")).await.expect_err("every name");
    assert_eq!(missing(&s), "inspect on every name under \"\"");
    let s = locks.list(list("jobs")).await.expect_err("jobs-other/ too");
    assert_eq!(reason_of(&s), "DENIED");
    let names: Vec<String> = locks
        .list(list("jobs/"))
        .await
        .expect("jobs/")
        .into_inner()
        .locks
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["jobs/a", "jobs/c"]);
    let s = locks
        .watch(as_(
            WORKER,
            pb::WatchRequest {
                prefix: "".into(),
                from_revision: 0,
            },
        ))
        .await
        .map(|_| ())
        .expect_err("watch every name");
    assert_eq!(missing(&s), "watch on every name under \"\"");

    let seen = leases
        .list(as_(WORKER, pb::ListLeasesRequest { stale: false }))
        .await
        .expect("list leases")
        .into_inner()
        .leases;
    let ids: Vec<u64> = seen.iter().map(|l| l.lease_id).collect();
    assert!(ids.contains(&mine) && ids.contains(&shared), "{ids:?}");
    assert!(
        !ids.contains(&theirs),
        "a lease on names it may not inspect"
    );
    let shared_seen = seen.iter().find(|l| l.lease_id == shared).expect("shared");
    assert_eq!(shared_seen.holds, ["jobs/c"], "billing/c is not shown");
    assert_eq!(shared_seen.identity, "ops");

    let all = leases
        .list(as_(OPS, pb::ListLeasesRequest { stale: false }))
        .await
        .expect("list leases")
        .into_inner()
        .leases;
    assert_eq!(all.len(), 3);
    let worker_lease = all.iter().find(|l| l.lease_id == mine).expect("mine");
    assert_eq!(worker_lease.identity, "worker");

    cluster.shutdown().await;
}

#[tokio::test]
async fn per_identity_lease_limit_and_request_rate_are_enforced() {
    let cluster = Cluster::start_with(1, with_auth).await;
    let node = cluster.leader().await;

    // Six grants at once for an identity allowed two: the limit is
    // checked when each entry is applied, so exactly two get a lease.
    let results = futures::future::join_all((0..6).map(|_| grant(&cluster, node, LIMITED))).await;
    let granted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(granted, 2, "{results:?}");
    for s in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason_of(s), "LIMIT_EXCEEDED");
        assert!(s.message().contains("\"limited\""), "{s:?}");
    }
    // Another identity is not held back by it.
    grant(&cluster, node, WORKER).await.expect("worker");

    let mut admin = cluster.admin(node).await;
    for _ in 0..3 {
        admin
            .status(as_(CHATTY, pb::StatusRequest {}))
            .await
            .expect("within the burst");
    }
    let s = admin
        .status(as_(CHATTY, pb::StatusRequest {}))
        .await
        .expect_err("over the rate");
    assert_eq!(reason_of(&s), "RATE_LIMITED");
    assert_eq!(s.code(), tonic::Code::ResourceExhausted);
    admin
        .status(as_(WORKER, pb::StatusRequest {}))
        .await
        .expect("others are not limited");

    cluster.shutdown().await;
}

#[tokio::test]
async fn a_lease_s_identity_survives_failover_and_is_enforced_by_the_new_leader() {
    let mut cluster = Cluster::start_with(3, with_auth).await;
    let old = cluster.leader().await;
    // Granted through a follower: the identity travels in the forwarded
    // command.
    let via = cluster.follower().await;
    let lease = grant(&cluster, via, WORKER).await.expect("grant");
    let mut locks = cluster.locks(via).await;
    locks
        .acquire(as_(WORKER, acquire_req(lease, "jobs/x", 0)))
        .await
        .expect("jobs/x");

    cluster.stop(old).await;
    let new = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new, old);

    let mut leases = cluster.leases(new).await;
    let s = leases
        .revoke(as_(OTHER, pb::RevokeLeaseRequest { lease_id: lease }))
        .await
        .expect_err("another identity");
    assert_eq!(reason_of(&s), "DENIED");
    let listed = leases
        .list(as_(OPS, pb::ListLeasesRequest { stale: false }))
        .await
        .expect("list")
        .into_inner()
        .leases;
    let record = listed.iter().find(|l| l.lease_id == lease).expect("lease");
    assert_eq!(record.identity, "worker");
    leases
        .revoke(as_(WORKER, pb::RevokeLeaseRequest { lease_id: lease }))
        .await
        .expect("its own identity revokes it");

    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_refuses_to_start_with_a_mistaken_auth_file_naming_the_entry() {
    let dir = raftlock_testkit::dirs::temp_dir();
    let mut config = NodeConfig::new(1, dir.path(), "127.0.0.1:0");
    config.auth = Some(AuthSource::Toml(
        "[[identity]]\ncert = \"worker\"\nroles = [\"missing\"]\n".into(),
    ));
    match Node::start(config).await {
        Err(e @ StartError::Auth(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("identity[0] (cert \"worker\")") && text.contains("\"missing\""),
                "{text}"
            );
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("started with a mistaken auth file"),
    }
}
