//! Peer protocol versions between real `raftlock serve` processes: every
//! node says which versions it speaks, status shows them, and a node with
//! no version in common with the cluster is refused with a clear error
//! (PEER_VERSION_MISMATCH) instead of garbage, while the others serve on.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use raftlock_proto::internal::v1 as ipb;
use raftlock_testkit::grpc::{grant, reason_of};
use raftlock_testkit::process::ServeCluster;

/// A plaintext channel to a node's peer port, as another node dials it.
async fn peer_channel(
    port: u16,
) -> ipb::raft_transport_client::RaftTransportClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("a connection to the peer port");
    ipb::raft_transport_client::RaftTransportClient::new(channel)
}

/// `raftlock status --json` against `port`.
fn status_json(cluster: &ServeCluster, port: u16) -> serde_json::Value {
    let (code, out, err) = run_bounded(
        with_endpoints(&["status", "--json"], &format!("127.0.0.1:{port}")),
        cluster.dir.path(),
        CLI_BOUND,
    );
    assert_eq!(code.code(), Some(0), "{err}");
    serde_json::from_str(&out).expect("status --json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_no_peer_protocol_in_common_is_refused_by_name_and_the_others_serve_on() {
    let (mut cluster, leader) = ServeCluster::start(Path::new(BIN), 3).await;
    let port = cluster.ports[&leader];
    let this_build = env!("CARGO_PKG_VERSION");

    // Every node's release and protocol, as the leader knows them (each
    // told it in its Hello).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status_json(&cluster, port);
        let nodes = s["nodes"].as_array().expect("nodes").clone();
        if nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n["build_version"] == this_build && n["protocol"] == "1..2")
        {
            break;
        }
        assert!(Instant::now() < deadline, "versions never shown: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = run_bounded(
        with_endpoints(&["status"], &format!("127.0.0.1:{port}")),
        cluster.dir.path(),
        CLI_BOUND,
    );
    assert_eq!(code.code(), Some(0), "{err}");
    assert!(out.contains("BUILD") && out.contains("PROTOCOL"), "{out}");

    // What a build before versioning sends (no range) is protocol 1: taken.
    let peer_port = cluster.peer_ports[&leader];
    let mut peer = peer_channel(peer_port).await;
    let answer = peer
        .hello(ipb::HelloRequest {
            from_id: 0,
            target_id: leader,
            ..Default::default()
        })
        .await
        .expect("a pre-versioning Hello is answered")
        .into_inner();
    assert_eq!((answer.protocol_min, answer.protocol_max), (1, 2));
    assert_eq!(answer.build_version, this_build);
    // A build that speaks only versions this one does not is refused, by
    // name, with both ranges.
    let refused = peer
        .hello(ipb::HelloRequest {
            from_id: 0,
            target_id: leader,
            protocol_min: 3,
            protocol_max: 4,
            build_version: "9.9.9".into(),
            ..Default::default()
        })
        .await
        .expect_err("no version in common");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason_of(&refused), "PEER_VERSION_MISMATCH");
    let m = refused.message();
    assert!(
        m.contains("(build 9.9.9) speaks peer protocol 3..4") && m.contains("speaks 1..2"),
        "{m}"
    );
    // A message whose payload is in a version it cannot read is refused
    // before anything decodes it.
    let refused = peer
        .vote(ipb::RaftMessage {
            target_id: leader,
            protocol: 3,
            data: vec![1, 2, 3],
            crc32: crc32fast::hash(&[1, 2, 3]),
            ..Default::default()
        })
        .await
        .expect_err("protocol 3 payload");
    assert_eq!(reason_of(&refused), "PEER_VERSION_MISMATCH", "{refused:?}");

    let follower = if leader == 3 { 2 } else { 3 };
    let lease = grant(&mut leases(port).await, 30_000, "versions").await;

    // A follower comes back as an older build that speaks protocol 1 only:
    // the others speak 1 with it, 2 among themselves, and it catches up.
    cluster.procs.get_mut(&follower).expect("node").kill();
    cluster.spawn_with_env(follower, &[(raftlock_node::PEER_PROTOCOL_TEST_ENV, "1")]);
    let old_build_write = acquire_exclusive(port, lease, "jobs/while-mixed")
        .await
        .token;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let caught_up = status(cluster.ports[&follower])
            .await
            .is_some_and(|s| s.applied_index >= old_build_write);
        let s = status_json(&cluster, port);
        let shown = s["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["id"] == follower))
            .map(|n| n["protocol"].clone());
        if caught_up && shown == Some(serde_json::json!("1")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the protocol-1 node never caught up or showed protocol 1: {s}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes through it (forwarded to the leader in protocol 1) work.
    let mixed_from = cluster.peer_messages(leader);
    let through_old = acquire_exclusive(cluster.ports[&follower], lease, "jobs/via-old").await;
    assert!(through_old.token > old_build_write);
    // Meanwhile the leader spoke both versions, both ways: 1 with the
    // protocol-1 node, 2 with the other (its counters name the version of
    // each message it sent and received).
    let other = (1..=3)
        .find(|id| *id != leader && *id != follower)
        .expect("a third node");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = cluster.peer_messages(leader);
        let moved = |protocol: u32, direction: &str| {
            let key = format!("protocol=\"{protocol}\",direction=\"{direction}\"");
            now.get(&key).copied().unwrap_or(0) > mixed_from.get(&key).copied().unwrap_or(0)
        };
        if [1, 2]
            .iter()
            .all(|p| moved(*p, "sent") && moved(*p, "received"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader did not speak protocol 1 with node {follower} and 2 with node {other}: from {mixed_from:?} to {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The protocol-1 node spoke protocol 1 only (and did speak it).
    let old_node = cluster.peer_messages(follower);
    assert!(
        old_node
            .iter()
            .all(|(series, n)| !series.starts_with("protocol=\"2\"") || *n == 0),
        "{old_node:?}"
    );
    for direction in ["sent", "received"] {
        let key = format!("protocol=\"1\",direction=\"{direction}\"");
        assert!(
            old_node.get(&key).copied().unwrap_or(0) > 0,
            "the protocol-1 node {direction} nothing in protocol 1: {old_node:?}"
        );
    }

    // Then as a newer build that speaks only protocol 3.
    cluster.procs.get_mut(&follower).expect("node").kill();
    cluster.spawn_with_env(follower, &[(raftlock_node::PEER_PROTOCOL_TEST_ENV, "3")]);
    // Both sides say why, naming the versions and the procedure.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let theirs = cluster.procs[&follower].log_text();
        let ours = cluster.procs[&leader].log_text();
        if theirs.contains("no version in common") && ours.contains("no version in common") {
            assert!(ours.contains("docs/operations.md, Upgrades"), "{ours}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no PEER_VERSION_MISMATCH in the logs\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The two others serve on; the refused node never joins them.
    let before = acquire_exclusive(port, lease, "jobs/versions").await.token;
    let s = status(cluster.ports[&follower]).await;
    assert!(
        s.as_ref().is_none_or(|s| s.applied_index < before),
        "the refused node applied the write at {before}: {s:?}"
    );

    // Back as this build: it catches up.
    cluster.procs.get_mut(&follower).expect("node").kill();
    cluster.spawn(follower);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if status(cluster.ports[&follower])
            .await
            .is_some_and(|s| s.applied_index >= before)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {follower} never caught up\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_bad_test_protocol_override_is_a_usage_error() {
    let dir = raftlock_testkit::dirs::temp_dir();
    let mut cmd = raftlock();
    cmd.env(raftlock_node::PEER_PROTOCOL_TEST_ENV, "3..1")
        .args([
            "serve",
            "--insecure",
            "--id",
            "1",
            "--data-dir",
            &dir.path().join("d").display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ]);
    let (status, _out, err) = run_bounded(cmd, dir.path(), CLI_BOUND);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("RAFTLOCK_TEST_PEER_PROTOCOL"), "{err}");
}

/// Snapshot data travels between builds: a node of the previous release
/// (0.1.0, peer protocol 1, snapshot data format 3) added to a cluster of
/// this build (which stores format 4) after the log it needs was purged
/// catches up from a snapshot the leader re-encoded in the format it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_the_previous_release_catches_up_from_a_snapshot_of_this_build() {
    let Some(previous) = raftlock_testkit::process::previous_release() else {
        return;
    };
    let (mut cluster, leader) = ServeCluster::start_with(
        Path::new(BIN),
        2,
        &[
            "--snapshot-every",
            "20",
            "--keep-entries-after-snapshot",
            "0",
        ],
    )
    .await;
    let port = cluster.ports[&leader];
    let lease = grant(&mut leases(port).await, 60_000, "snapshot-between-builds").await;
    // Enough writes for snapshots and a purged log on both nodes.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for i in 0..25 {
            last = acquire_exclusive(port, lease, &format!("jobs/{last}-{i}"))
                .await
                .token;
        }
        let s = status_json(&cluster, port);
        if s["purged_index"].as_u64().is_some_and(|p| p > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never purged its log: {s}\n{}",
            cluster.logs()
        );
    }

    cluster.spawn_new_node(3, &previous, &[]);
    let (code, _, err) = run_bounded(
        with_endpoints(
            &[
                "cluster",
                "add-learner",
                "3",
                &format!("127.0.0.1:{}", cluster.peer_ports[&3]),
            ],
            &format!("127.0.0.1:{port}"),
        ),
        cluster.dir.path(),
        CLI_BOUND,
    );
    assert_eq!(
        code.code(),
        Some(0),
        "add-learner: {err}\n{}",
        cluster.logs()
    );

    // It installs the snapshot (it builds none of its own: its default
    // snapshot policy is 5000 entries) and applies everything.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let own = status(cluster.ports[&3]).await;
        if own
            .as_ref()
            .is_some_and(|s| s.applied_index >= last && s.snapshot_index.is_some_and(|i| i > 0))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the previous release never caught up from a snapshot: {own:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = cluster.procs[&3].log_text();
    assert!(
        !log.contains("refused snapshot"),
        "the old node refused a snapshot:\n{log}"
    );
    // The leader knows it as a build before versioning (its Hello named
    // no build and no protocol range: protocol 1).
    let s = status_json(&cluster, port);
    let shown = s["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == 3))
        .map(|n| (n["build_version"].clone(), n["matched_index"].clone()));
    assert_eq!(
        shown,
        Some((
            serde_json::Value::Null,
            serde_json::json!(s["last_log_index"])
        )),
        "{s}"
    );
}
