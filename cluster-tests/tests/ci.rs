//! The harness end to end, short enough for CI: a real 3-node raftlock
//! cluster (separate `raftlock serve` processes) under partitions and
//! kills must pass every checker, and the unsafe self-test server must be
//! caught.

use std::collections::BTreeSet;
use std::time::Duration;

use cluster_tests::checker::Verdict;
use cluster_tests::cluster::{Cluster, ClusterConfig, raftlock_binary};
use cluster_tests::nemesis::FaultKind;
use cluster_tests::run::{RunConfig, TargetKind, run};

fn describe(summary: &cluster_tests::run::Summary) -> String {
    serde_json::to_string_pretty(summary).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_links_go_through_the_proxies_and_a_cut_leader_is_replaced() {
    let binary = raftlock_binary().expect("raftlock binary");
    let cluster = Cluster::start(ClusterConfig {
        nodes: 3,
        binary,
        extra_args: Vec::new(),
        keep_dir: None,
    })
    .await
    .expect("cluster starts");
    let leader = cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("leader");
    let others: BTreeSet<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    // The leader replicates to every follower through its own links.
    for f in &others {
        assert!(
            cluster.link_connections(leader, *f) > 0,
            "link {leader}->{f} unused"
        );
    }
    cluster.partition(&[BTreeSet::from([leader]), others.clone()]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut new_leaders = BTreeSet::new();
        for f in &others {
            if let Some(l) = cluster.status(*f).await.and_then(|s| s.leader_id) {
                new_leaders.insert(l);
            }
        }
        if new_leaders.len() == 1 && new_leaders.first().is_some_and(|l| others.contains(l)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader among {others:?} after cutting {leader}: {new_leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.heal_links();
    cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("one leader after the heal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_cluster_keeps_its_promises_under_partitions_and_kills() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = RunConfig::new(TargetKind::Raftlock, 20_261_125);
    config.nodes = 3;
    config.clients = 6;
    config.time_limit = Duration::from_secs(40);
    config.recovery = Duration::from_secs(12);
    config.nemesis.kinds = vec![FaultKind::Partition, FaultKind::Kill];
    config.nemesis.quiet_ms = (2_000, 4_000);
    config.nemesis.fault_ms = (3_000, 6_000);
    config.check.liveness_bound_ns = 10_000_000_000;
    config.check.linear.max_time = Duration::from_secs(30);
    config.out_dir = Some(out.path().to_path_buf());
    let outcome = run(config).await.expect("the test runs");
    let s = &outcome.summary;
    assert!(s.faults_injected >= 3, "{}", describe(s));
    assert!(
        s.ops.get("acquire ok").copied().unwrap_or(0) > 20,
        "too little work to mean anything: {}",
        describe(s)
    );
    assert_eq!(s.verdict, Verdict::Pass, "{}", describe(s));
    for file in ["history.jsonl", "results.json", "report.html"] {
        assert!(out.path().join(file).is_file(), "{file} written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_harness_catches_a_lock_server_without_consensus() {
    let mut config = RunConfig::new(TargetKind::Unsafe, 5);
    config.nodes = 3;
    config.clients = 6;
    config.time_limit = Duration::from_secs(8);
    config.recovery = Duration::from_secs(4);
    config.nemesis.kinds = Vec::new();
    config.check.liveness_bound_ns = 2_000_000_000;
    config.check.linear.max_time = Duration::from_secs(20);
    let outcome = run(config).await.expect("the test runs");
    let s = &outcome.summary;
    assert_eq!(s.verdict, Verdict::Fail, "{}", describe(s));
    for checker in ["mutual-exclusion", "fencing-tokens", "linearizability"] {
        let c = s
            .checkers
            .iter()
            .find(|c| c.checker == checker)
            .expect("checker ran");
        assert_eq!(c.verdict, Verdict::Fail, "{checker}: {}", describe(s));
        assert!(!c.violations.is_empty());
    }
}
