//! The harness end to end, short enough for CI: a real 3-node raftlock
//! cluster (separate `raftlock serve` processes) under partitions and
//! kills must pass every checker, and the unsafe self-test server must be
//! caught.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cluster_tests::checker::Verdict;
use cluster_tests::cluster::{Cluster, ClusterConfig, raftlock_binary};
use cluster_tests::nemesis::FaultKind;
use cluster_tests::run::{RunConfig, TargetKind, run};

fn describe(summary: &cluster_tests::run::Summary) -> String {
    serde_json::to_string_pretty(summary).unwrap_or_default()
}

/// A short real-cluster run: 3 nodes, 6 clients, faults of `kinds`.
fn short_run(seed: u64, seconds: u64, kinds: Vec<FaultKind>) -> RunConfig {
    let mut config = RunConfig::new(TargetKind::Raftlock, seed);
    config.nodes = 3;
    config.clients = 6;
    config.time_limit = Duration::from_secs(seconds);
    config.recovery = Duration::from_secs(12);
    config.nemesis.kinds = kinds;
    config.nemesis.quiet_ms = (1_500, 3_000);
    config.nemesis.fault_ms = (3_000, 5_000);
    config.check.liveness_bound_ns = 10_000_000_000;
    config.check.linear.max_time = Duration::from_secs(30);
    config
}

/// Runs `config`: enough faults and work to mean something, every checker
/// passing.
async fn assert_passes(config: RunConfig) {
    let outcome = run(config).await.expect("the test runs");
    let s = &outcome.summary;
    assert!(s.faults_injected >= 3, "{}", describe(s));
    assert!(
        s.ops.get("acquire ok").copied().unwrap_or(0) > 20,
        "too little work to mean anything: {}",
        describe(s)
    );
    assert_eq!(s.verdict, Verdict::Pass, "{}", describe(s));
}

/// A 3-node cluster (under libfaketime if given) and its leader.
async fn start_three(faketime: Option<cluster_tests::cluster::Faketime>) -> (Cluster, u64) {
    let cluster = Cluster::start(ClusterConfig {
        nodes: 3,
        binary: raftlock_binary().expect("raftlock binary"),
        extra_args: Vec::new(),
        keep_dir: None,
        faketime,
        power_disks: false,
        secure: false,
        upgrade_to: None,
    })
    .await
    .expect("cluster starts");
    let leader = cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("leader");
    (cluster, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_links_go_through_the_proxies_and_a_cut_leader_is_replaced() {
    let (cluster, leader) = start_three(None).await;
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
    let mut config = short_run(20_261_125, 40, vec![FaultKind::Partition, FaultKind::Kill]);
    config.nemesis.quiet_ms = (2_000, 4_000);
    config.nemesis.fault_ms = (3_000, 6_000);
    config.out_dir = Some(out.path().to_path_buf());
    assert_passes(config).await;
    for file in ["history.jsonl", "results.json", "report.html"] {
        assert!(out.path().join(file).is_file(), "{file} written");
    }
}

/// Power cuts of a majority or of every node at once (each node's data on
/// a powerfs mount that drops what was not fsynced), and kill -9 of every
/// node: nothing acknowledged may be lost, and the nodes' logs must agree
/// on every log id. Needs FUSE: skipped (saying so) without it, unless
/// `RAFTLOCK_REQUIRE_FUSE` is set (.ci/run sets it where FUSE exists).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_cluster_loses_nothing_acknowledged_in_power_cuts_of_every_node() {
    if !powerfs::usable_in_test("the power nemesis") {
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = short_run(20_261_206, 36, vec![FaultKind::Power, FaultKind::KillAll]);
    config.nemesis.quiet_ms = (2_000, 4_000);
    config.nemesis.fault_ms = (1_000, 3_000);
    config.out_dir = Some(out.path().to_path_buf());
    let outcome = run(config).await.expect("the test runs");
    let s = &outcome.summary;
    assert!(s.faults_injected >= 3, "{}", describe(s));
    assert_eq!(s.verdict, Verdict::Pass, "{}", describe(s));
    let logs = s
        .checkers
        .iter()
        .find(|c| c.checker == "log-matching")
        .expect("the logs were compared");
    assert!(
        logs.counts
            .get("indexes-on-every-node")
            .copied()
            .unwrap_or(0)
            > 20,
        "{}",
        describe(s)
    );
    let cuts =
        std::fs::read_to_string(out.path().join("cluster/power-cuts.log")).unwrap_or_default();
    let dropped: u64 = cuts
        .split_whitespace()
        .filter_map(|kv| kv.strip_prefix("last_cut_dropped_bytes="))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    let fault_labels = outcome
        .history
        .ops
        .iter()
        .filter_map(|op| op.args.fault.clone())
        .collect::<Vec<_>>();
    assert!(
        fault_labels.iter().any(|f| f.contains("power cut")) && !cuts.is_empty(),
        "the seed's schedule cuts power, and each cut is recorded: {fault_labels:?}"
    );
    // Half the cuts come after the disks held their syncs a while, so
    // writes are in flight when the power goes: something must be lost
    // (else the run proved nothing about what was not synced).
    assert!(dropped > 0, "no cut dropped anything:\n{cuts}");
    eprintln!("power cuts dropped {dropped} unsynced bytes in all:\n{cuts}");
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

/// libfaketime, or `None` (the test skips, saying so) when it is missing —
/// unless `RAFTLOCK_REQUIRE_FAKETIME` is set (`.ci/run` sets it once it has
/// installed or found the library), so CI cannot skip these silently.
fn faketime(fake_monotonic: bool) -> Option<cluster_tests::cluster::Faketime> {
    match cluster_tests::cluster::Faketime::find(fake_monotonic) {
        Ok(f) => Some(f),
        Err(e) if std::env::var_os("RAFTLOCK_REQUIRE_FAKETIME").is_none() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Grants a lease and takes `name` through node `addr`, returns the Unix
/// time (ms) the cluster recorded for the grant.
async fn lock_and_read_grant_time(addr: std::net::SocketAddr, name: &str) -> u64 {
    use raftlock_proto::v1 as pb;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut leases = pb::leases_client::LeasesClient::new(channel.clone());
    let mut locks = pb::locks_client::LocksClient::new(channel);
    let lease = leases
        .grant(pb::GrantLeaseRequest {
            ttl_ms: 10_000,
            owner: "ci".into(),
        })
        .await
        .expect("grant")
        .into_inner()
        .lease_id;
    locks
        .acquire(pb::AcquireRequest {
            lease_id: lease,
            locks: vec![pb::LockSpec {
                name: name.into(),
                mode: pb::Mode::Exclusive as i32,
                permits: 0,
            }],
            ..Default::default()
        })
        .await
        .expect("acquire");
    let info = locks
        .inspect(pb::InspectRequest {
            name: name.into(),
            stale: false,
        })
        .await
        .expect("inspect")
        .into_inner();
    info.lock.expect("the lock exists").holders[0].acquired_at_unix_ms
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clock_faults_reach_the_nodes_and_a_removed_node_comes_back() {
    use cluster_tests::cluster::ClockSetting;
    let Some(faketime) = faketime(false) else {
        return;
    };
    let (mut cluster, leader) = start_three(Some(faketime)).await;
    let addr = cluster.client_addr(leader).expect("address");

    // The leader stamps grants with its wall clock: an hour ahead once
    // its clock is bumped (libfaketime re-reads the setting every second).
    let before = lock_and_read_grant_time(addr, "clock/before").await;
    assert!(before.abs_diff(unix_ms()) < 60_000, "real time at first");
    for id in cluster.ids() {
        cluster
            .set_clock(id, ClockSetting::Offset { ms: 3_600_000 })
            .expect("set clock");
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let bumped = lock_and_read_grant_time(addr, "clock/bumped").await;
    let ahead = bumped as i64 - unix_ms() as i64;
    assert!(
        (3_500_000..3_700_000).contains(&ahead),
        "the leader's wall clock is {ahead} ms ahead"
    );
    cluster.heal_clocks().expect("heal clocks");

    // Remove a follower from the membership; the others go on; add it back.
    let follower = cluster
        .ids()
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    cluster.remove_member(follower).await.expect("remove");
    assert_eq!(cluster.members().len(), 2);
    let voters = |s: &raftlock_proto::v1::StatusResponse| -> BTreeSet<u64> {
        s.nodes.iter().filter(|n| n.voter).map(|n| n.id).collect()
    };
    let status = cluster.status(leader).await.expect("leader status");
    assert!(!voters(&status).contains(&follower), "{status:?}");
    lock_and_read_grant_time(addr, "member/while-removed").await;
    cluster.add_member(follower).await.expect("add back");
    let status = cluster.status(leader).await.expect("leader status");
    assert!(voters(&status).contains(&follower), "{status:?}");
    cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("one leader, the re-added node agreeing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_cluster_keeps_its_promises_under_clock_membership_and_link_faults() {
    if faketime(false).is_none() {
        return;
    }
    let kinds = vec![FaultKind::Link, FaultKind::Clock, FaultKind::Member];
    assert_passes(short_run(20_261_126, 35, kinds)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skewed_leader_clock_really_ends_leases_early_in_real_time() {
    use cluster_tests::cluster::ClockSetting;
    use raftlock_proto::v1 as pb;
    let Some(mut faketime) = faketime(true) else {
        return;
    };
    // Far beyond any real drift, so the effect is unmistakable: every
    // node's clocks run 1.5 times as fast.
    faketime.start_clocks = (1..=3)
        .map(|id| {
            (
                id,
                ClockSetting::Rate {
                    millionths: 1_500_000,
                },
            )
        })
        .collect();
    let (cluster, _) = start_three(Some(faketime)).await;
    // A leader change during the measurement restarts the lease's count on
    // the new leader (as it must), which says nothing about skew: on a
    // loaded machine an election can happen, so a measurement is kept only
    // if one leader in one term saw it through, and is otherwise repeated.
    let mut ended = None;
    for _ in 0..3 {
        let leader = cluster
            .wait_leader(Duration::from_secs(20))
            .await
            .expect("a leader");
        let term_of = |s: Option<pb::StatusResponse>| s.map(|s| (s.term, s.leader_id));
        let before = term_of(cluster.status(leader).await);
        let addr = cluster.client_addr(leader).expect("address");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut leases = pb::leases_client::LeasesClient::new(channel);
        let sent = std::time::Instant::now();
        let lease = leases
            .grant(pb::GrantLeaseRequest {
                ttl_ms: 3_000,
                owner: "skew".into(),
            })
            .await
            .expect("grant")
            .into_inner()
            .lease_id;
        // No keep-alives: the leader ends it after 3 s of its clock, 2 s of
        // ours.
        let this_run = loop {
            let listed = match leases.list(pb::ListLeasesRequest { stale: false }).await {
                Ok(listed) => listed.into_inner(),
                // NO_LEADER and the like: an election.
                Err(_) => break None,
            };
            if !listed.leases.iter().any(|l| l.lease_id == lease) {
                break Some(sent.elapsed());
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "lease never ended"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        if this_run.is_some() && term_of(cluster.status(leader).await) == before {
            ended = this_run;
            break;
        }
    }
    let ended = ended.expect("three measurements in a row were cut by elections");
    assert!(
        ended > Duration::from_millis(1_500) && ended < Duration::from_millis(2_800),
        "a 3 s lease ended after {ended:?} of real time with the leader's clock 1.5 times fast"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_cluster_keeps_its_promises_under_clock_rate_skew_within_the_margin() {
    if faketime(true).is_none() {
        return;
    }
    let mut config = short_run(20_261_127, 30, vec![FaultKind::Skew, FaultKind::Pause]);
    config.nemesis.skew_percent = 3;
    config.workload.drift_margin_percent = 5;
    assert_passes(config).await;
}

/// The same harness with security on (`secure`): every node serves TLS on
/// its client and peer ports (mutual TLS between peers through the fault
/// proxies) and checks every call against an auth file, and every channel
/// of the harness — workload, status polling, membership changes — is TLS
/// as identity `jepsen`. Partitions, kill -9 and membership removals must
/// leave every checker passing. The run refuses to start its clients
/// unless each node refused a plaintext call and a TLS call without a
/// client certificate, so TLS or auth silently off fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_cluster_with_tls_and_auth_keeps_its_promises_under_partitions_kills_and_removals() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = short_run(
        20_261_215,
        22,
        vec![FaultKind::Partition, FaultKind::Kill, FaultKind::Member],
    );
    config.secure = true;
    config.out_dir = Some(out.path().to_path_buf());
    let outcome = run(config).await.expect("the test runs");
    let s = &outcome.summary;
    assert!(s.secure, "{}", describe(s));
    assert_eq!(
        s.secure_checks.len(),
        3,
        "TLS and auth checked on every node: {}",
        describe(s)
    );
    for line in &s.secure_checks {
        assert!(
            line.contains("plaintext refused") && line.contains("UNAUTHENTICATED"),
            "{line}"
        );
    }
    let auth = std::fs::read_to_string(out.path().join("cluster/certs/auth.toml")).expect("auth");
    assert!(auth.contains("cert = \"jepsen\""), "{auth}");
    // The harness's identity may do all it does: no call was refused by auth.
    let refused: Vec<_> = outcome
        .history
        .ops
        .iter()
        .filter(|o| {
            o.result
                .as_ref()
                .and_then(|r| r.error.as_deref())
                .is_some_and(|e| {
                    e.contains("DENIED")
                        || e.contains("UNAUTHENTICATED")
                        || e.contains("RATE_LIMITED")
                })
        })
        .map(|o| format!("{o:?}"))
        .take(3)
        .collect();
    assert!(refused.is_empty(), "refused by auth: {refused:?}");
    assert!(s.faults_injected >= 3, "{}", describe(s));
    assert!(
        s.ops.get("acquire ok").copied().unwrap_or(0) > 20,
        "too little work to mean anything: {}",
        describe(s)
    );
    assert_eq!(s.verdict, Verdict::Pass, "{}", describe(s));
}

/// `BIN --version`.
fn version_of(bin: &std::path::Path) -> String {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", bin.display()));
    assert!(out.status.success(), "{} --version failed", bin.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A rolling upgrade: the nodes start on the previous release, clients lock
/// all along, and nodes are stopped one at a time (as an operator stops
/// them, sometimes the leader) and started on this build, among kill -9s;
/// a mixed cluster must keep every promise, and at the end every node runs
/// this build and says so to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_from_the_previous_release_keeps_every_promise() {
    let Some(previous) = raftlock_testkit::process::previous_release() else {
        return;
    };
    let current = raftlock_binary().expect("raftlock binary");
    let (old, new) = (version_of(&previous), version_of(&current));
    assert_ne!(old, new, "the previous release must be another build");
    eprintln!("rolling upgrade from {old} to {new}");
    let mut config = short_run(20_261_207, 30, vec![FaultKind::Upgrade, FaultKind::Kill]);
    config.upgrade_from = Some(previous);
    let outcome = run(config).await.expect("the test runs");
    let s = &outcome.summary;
    assert_eq!(s.upgraded, vec![1, 2, 3], "{}", describe(s));
    // Every node runs this build and told the leader it speaks protocol 2
    // (so they speak protobuf among themselves, as they spoke 1 with the
    // old nodes before).
    let said = format!("{} protocol 1..2", env!("CARGO_PKG_VERSION"));
    assert!(
        s.builds.len() == 3 && s.builds.values().all(|b| *b == said),
        "every node says {said:?} to the leader: {}",
        describe(s)
    );
    // Both peer protocol versions carried messages: while the cluster was
    // mixed the nodes on this build spoke protocol 1 with the old ones,
    // both ways; at the end, all on this build, they speak protocol 2
    // among themselves. (Protocol 2 in the mixed phase needs a node of
    // this build to lead, or campaign, while an old one runs, which the
    // nemesis does not always bring about: followers never talk to each
    // other.)
    let count = |of: &BTreeMap<String, u64>, protocol: u32, direction: &str| {
        of.get(&format!(
            "protocol=\"{protocol}\",direction=\"{direction}\""
        ))
        .copied()
        .unwrap_or(0)
    };
    for direction in ["sent", "received"] {
        assert!(
            count(&s.peer_messages_mixed, 1, direction) > 0,
            "no protocol-1 message {direction} by the upgraded nodes while the cluster was mixed: {:?}",
            s.peer_messages_mixed
        );
        assert!(
            count(&s.peer_messages_end, 2, direction) > 0,
            "no protocol-2 message {direction} once every node was upgraded: {:?}",
            s.peer_messages_end
        );
    }
    eprintln!(
        "peer messages: mixed phase {:?}; end {:?}",
        s.peer_messages_mixed, s.peer_messages_end
    );
    let upgrades = outcome
        .history
        .ops
        .iter()
        .filter(|o| {
            o.args
                .fault
                .as_deref()
                .is_some_and(|f| f.contains("upgrade the next node"))
        })
        .count();
    assert!(upgrades >= 1, "no upgrade step ran: {}", describe(s));
    assert!(s.faults_injected >= 3, "{}", describe(s));
    assert!(
        s.ops.get("acquire ok").copied().unwrap_or(0) > 20,
        "too little work to mean anything: {}",
        describe(s)
    );
    assert_eq!(s.verdict, Verdict::Pass, "{}", describe(s));
}
