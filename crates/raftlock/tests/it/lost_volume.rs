//! A node whose data was lost comes back with a new, empty store and the
//! same `--peers` (a StatefulSet pod whose volume was lost): it must not
//! start a cluster of its own but wait to be added; and once the operator
//! removed and forgot its id, it rejoins under that id as a learner and is
//! promoted. Real `raftlock serve` processes, driven through the CLI.

use std::path::Path;
use std::time::{Duration, Instant};

use raftlock_proto::v1 as pb;
use raftlock_testkit::process::ServeCluster;

use crate::common::*;

/// `raftlock ARGS --endpoints ENDPOINTS`: (exit code, stdout, stderr).
fn cli(dir: &Path, args: &[&str], endpoints: &str) -> (i32, String, String) {
    let (status, out, err) = run_bounded(with_endpoints(args, endpoints), dir, CLI_BOUND);
    (status.code().unwrap_or(-1), out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_waits_to_be_added_and_rejoins_under_its_id_once_forgotten() {
    let (mut cluster, _) = ServeCluster::start(Path::new(BIN), 3).await;
    // Once the leader has named the cluster and recorded node 1's store
    // (what its peers later check the wiped node against).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = status(cluster.ports[&2]).await;
        let recorded = seen.as_ref().is_some_and(|s| {
            !s.cluster_id.is_empty() && s.nodes.iter().any(|n| n.id == 1 && !n.address.is_empty())
        });
        if recorded {
            break;
        }
        assert!(Instant::now() < deadline, "node 1 never recorded: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Node 1: the lowest id, which bootstraps at once when its store is new.
    let victim = 1;
    cluster.procs.get_mut(&victim).expect("node 1").kill();
    let survivors = cluster
        .wait_leader(&[2, 3], None, Duration::from_secs(30))
        .await;
    assert!(
        survivors.is_ok(),
        "no leader among 2 and 3\n{}",
        cluster.logs()
    );
    std::fs::remove_dir_all(cluster.data_dir(victim)).expect("wipe node 1's data");
    cluster.spawn(victim);

    // It asks its peers first, hears of a running cluster, and waits.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = cluster.procs[&victim].log_text();
        if log.contains("not bootstrapping") || Instant::now() >= deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(log.contains("not bootstrapping"), "{log}");
    // Its own view: no membership, no leader (a bootstrapped node would
    // list the three voters of --peers).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let own = status(cluster.ports[&victim])
        .await
        .expect("node 1 answers");
    assert!(own.nodes.is_empty(), "node 1 made a cluster: {own:?}");
    assert_eq!(own.leader_id, None, "{own:?}");

    let dir = cluster.dir.path().to_path_buf();
    let endpoints = format!(
        "127.0.0.1:{},127.0.0.1:{}",
        cluster.ports[&2], cluster.ports[&3]
    );
    // Forgetting a member is refused.
    let (code, _, err) = cli(&dir, &["cluster", "forget", "1"], &endpoints);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("still a voter"), "{err}");
    // remove → forget → add-learner → promote.
    let (code, _, err) = cli(&dir, &["cluster", "remove", "1"], &endpoints);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&dir, &["cluster", "forget", "1"], &endpoints);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("forgot node 1"), "{out}");
    let peer_addr = format!("127.0.0.1:{}", cluster.peer_ports[&victim]);
    let (code, _, err) = cli(
        &dir,
        &["cluster", "add-learner", "1", &peer_addr],
        &endpoints,
    );
    assert_eq!(code, 0, "add-learner: {err}\n{}", cluster.logs());
    let (code, _, err) = cli(&dir, &["cluster", "promote", "1"], &endpoints);
    assert_eq!(code, 0, "promote: {err}\n{}", cluster.logs());

    let leader = cluster
        .wait_leader(&[1, 2, 3], None, Duration::from_secs(30))
        .await;
    assert!(leader.is_ok(), "no common leader\n{}", cluster.logs());
    let own = status(cluster.ports[&victim])
        .await
        .expect("node 1 answers");
    assert!(
        own.nodes.iter().any(|n| n.id == victim && n.voter),
        "node 1 is not a voter again: {own:?}"
    );
    // It serves: a lease granted through it (forwarded to the leader).
    let lease = leases(cluster.ports[&victim])
        .await
        .grant(pb::GrantLeaseRequest {
            ttl_ms: 10_000,
            owner: "lost-volume-test".into(),
        })
        .await;
    assert!(lease.is_ok(), "{lease:?}\n{}", cluster.logs());
}
