//! Watches, health, reflection, semaphores and admin calls over gRPC.

use std::time::Duration;

use raftlock_proto::v1 as pb;
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::grpc::{acquire_req, exclusive, grant, reason_of};
use raftlock_testkit::wait::eventually;
use tonic::Code;

async fn next_events(stream: &mut tonic::Streaming<pb::WatchResponse>) -> Vec<pb::Event> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("events in time")
        .expect("stream ok")
        .expect("stream open")
        .events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_sees_its_prefix_and_resumes_from_a_revision() {
    let cluster = Cluster::start_with(3, |c| c.watch_history_events = 50).await;
    let follower = cluster.follower().await;
    let mut locks = cluster.locks(follower).await;
    let mut watch = locks
        .watch(pb::WatchRequest {
            prefix: "jobs/".into(),
            from_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut leases = cluster.leases(follower).await;
    let lease = grant(&mut leases, 10_000, "w").await;
    locks
        .acquire(acquire_req(lease, "other/x", 0))
        .await
        .unwrap();
    let got = locks
        .acquire(acquire_req(lease, "jobs/a", 0))
        .await
        .unwrap()
        .into_inner();
    locks
        .release(pb::ReleaseRequest {
            lease_id: lease,
            token: got.token,
            names: vec!["jobs/a".into()],
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next_events(&mut watch).await);
    }
    assert_eq!(seen[0].r#type, pb::EventType::Acquired as i32);
    assert_eq!(seen[0].name, "jobs/a");
    assert_eq!(seen[0].token, got.token);
    assert_eq!(seen[0].revision, got.token);
    assert_eq!(seen[1].r#type, pb::EventType::Released as i32);
    assert!(seen.iter().all(|e| e.name.starts_with("jobs/")));

    // Resume from the acquire's revision on another node: replayed.
    let mut again = cluster
        .locks(cluster.leader().await)
        .await
        .watch(pb::WatchRequest {
            prefix: "".into(),
            from_revision: got.revision,
        })
        .await
        .unwrap()
        .into_inner();
    let replay = next_events(&mut again).await;
    assert_eq!(replay[0].revision, got.revision);

    // Push the history past its 50 events: revision 1 is gone.
    for i in 0..30 {
        let t = locks
            .acquire(acquire_req(lease, &format!("n/{i}"), 0))
            .await
            .unwrap()
            .into_inner()
            .token;
        locks
            .release(pb::ReleaseRequest {
                lease_id: lease,
                token: t,
                names: vec![format!("n/{i}")],
            })
            .await
            .unwrap();
    }
    let err = locks
        .watch(pb::WatchRequest {
            prefix: "".into(),
            from_revision: got.revision,
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(reason_of(&err), "COMPACTED");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standard_health_and_reflection_services_answer() {
    let cluster = Cluster::start(3).await;
    let follower = cluster.follower().await;
    let channel = cluster.channel(follower).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = eventually(Duration::from_secs(5), || {
        let mut health = health.clone();
        async move {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "raftlock.v1.Locks".into(),
                })
                .await
                .ok()?
                .into_inner();
            (r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
                .then_some(r.status)
        }
    })
    .await;
    assert_eq!(serving, 1);
    let overall = health
        .check(tonic_health::pb::HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status, 1);

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "raftlock.v1.Locks",
        "raftlock.v1.Leases",
        "raftlock.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
    cluster.shutdown().await;
}

/// Clients that speak only reflection v1alpha (grpcio-reflection's Python
/// descriptor database among them) list and resolve the same services as
/// v1 clients; the peer port serves neither version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflection_v1alpha_answers_beside_v1_on_the_client_port_only() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let cluster = Cluster::start(3).await;
    let follower = cluster.follower().await;
    let mut reflection = ServerReflectionClient::new(cluster.channel(follower).await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "raftlock.v1.Locks".into(),
            )),
        },
    ];
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("v1alpha reflection is served")
        .into_inner();
    let reply = replies.message().await.expect("a reply").expect("open");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "raftlock.v1.Locks",
        "raftlock.v1.Leases",
        "raftlock.v1.Admin",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
    // Only what this port serves: the peer transport is described by the
    // same descriptor set but served on the peer port alone.
    assert_eq!(names.len(), 6, "{names:?}");
    let reply = replies.message().await.expect("a reply").expect("open");
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
        files
            .file_descriptor_proto
            .first()
            .expect("a file")
            .as_slice(),
    )
    .expect("a file descriptor");
    assert_eq!(file.package.as_deref(), Some("raftlock.v1"));
    assert!(file.service.iter().any(|s| s.name() == "Locks"), "{file:?}");

    // The peer port: neither version.
    let peer =
        tonic::transport::Channel::from_shared(format!("http://{}", cluster.peer_addrs[&follower]))
            .expect("uri")
            .connect_lazy();
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = ServerReflectionClient::new(peer.clone())
        .server_reflection_info(tokio_stream::iter(vec![list()]))
        .await
        .expect_err("no v1alpha reflection on the peer port");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let status =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(peer)
            .server_reflection_info(tokio_stream::iter(vec![
        tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                ),
            ),
        },
    ]))
            .await
            .expect_err("no v1 reflection on the peer port");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semaphores_shared_locks_multi_locks_and_force_release_over_grpc() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut leases = cluster.leases(leader).await;
    let mut locks = cluster.locks(leader).await;
    let ls: Vec<u64> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(grant(&mut leases, 10_000, &format!("l{i}")).await);
        }
        v
    };
    let sem = |lease: u64| pb::AcquireRequest {
        lease_id: lease,
        locks: vec![pb::LockSpec {
            name: "pool".into(),
            mode: pb::Mode::Semaphore as i32,
            permits: 2,
        }],
        ..Default::default()
    };
    locks.acquire(sem(ls[0])).await.unwrap();
    locks.acquire(sem(ls[1])).await.unwrap();
    let err = locks.acquire(sem(ls[2])).await.unwrap_err();
    assert_eq!(reason_of(&err), "LOCK_BUSY");
    let mut bad = sem(ls[2]);
    bad.locks[0].permits = 3;
    let err = locks.acquire(bad).await.unwrap_err();
    assert_eq!(reason_of(&err), "PERMITS_MISMATCH");

    // Atomic multi-lock: both or none.
    let multi = pb::AcquireRequest {
        lease_id: ls[3],
        locks: vec![exclusive("m/a"), exclusive("m/b")],
        ..Default::default()
    };
    let got = locks.acquire(multi).await.unwrap().into_inner();
    assert_eq!(got.holds.len(), 2);
    assert!(got.holds.iter().all(|h| h.token == got.token));

    // Force release by an administrator.
    let mut admin = cluster.admin(leader).await;
    let forced = admin
        .force_release(pb::ForceReleaseRequest {
            name: "pool".into(),
            lease_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(forced.released.len(), 2);
    locks
        .acquire(sem(ls[2]))
        .await
        .expect("free after force release");
    let err = admin
        .force_release(pb::ForceReleaseRequest {
            name: "nothing".into(),
            lease_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), "LOCK_NOT_FOUND");

    // Snapshots on demand.
    let snap = admin
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(snap.index > 0);
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.snapshot_index.is_some_and(|i| i >= snap.index));
    assert_eq!(status.nodes.len(), 3);
    assert_eq!(status.leader_id, Some(leader));
    cluster.shutdown().await;
}

/// openraft drops a snapshot trigger that arrives while it is building a
/// snapshot of its own (its policy's, here every 3 entries, started before
/// the last writes): the admin call must still end with a snapshot that
/// covers everything applied when it was made, not time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_snapshot_during_a_policy_snapshot_covers_the_applied_log() {
    let cluster = Cluster::start_with(1, |c| {
        c.snapshot_every_entries = 3;
        c.keep_entries_after_snapshot = 0;
    })
    .await;
    let leader = cluster.leader().await;
    let mut leases = cluster.leases(leader).await;
    let mut locks = cluster.locks(leader).await;
    let mut admin = cluster.admin(leader).await;
    let lease = grant(&mut leases, 60_000, "snapshots").await;
    // A state of about 1 MB, so that building a snapshot takes a while.
    let many = grant(&mut leases, 60_000, "bulk").await;
    for batch in 0..4 {
        let request = pb::AcquireRequest {
            lease_id: many,
            locks: (0..64)
                .map(|i| exclusive(&format!("bulk/{batch}/{i}")))
                .collect(),
            metadata: [("blob".to_string(), "x".repeat(4000))].into(),
            ..Default::default()
        };
        locks.acquire(request).await.expect("bulk acquire");
    }
    for round in 0..8 {
        let mut applied = 0;
        for _ in 0..2 {
            let got = locks
                .acquire(acquire_req(lease, "snap/a", 0))
                .await
                .expect("acquire")
                .into_inner();
            let released = locks
                .release(pb::ReleaseRequest {
                    lease_id: lease,
                    token: got.token,
                    names: vec!["snap/a".into()],
                })
                .await
                .expect("release")
                .into_inner();
            applied = released.revision.max(got.token);
        }
        let snap = admin
            .snapshot(pb::SnapshotRequest {})
            .await
            .unwrap_or_else(|e| panic!("round {round}: snapshot: {e:?}"))
            .into_inner();
        assert!(
            snap.index >= applied,
            "round {round}: snapshot at {} below the applied {applied}",
            snap.index
        );
    }
    cluster.shutdown().await;
}
