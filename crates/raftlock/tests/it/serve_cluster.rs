//! Three real `raftlock serve` processes: they form a cluster from the same
//! --peers, survive SIGKILL of the leader, and the killed node rejoins.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use raftlock_proto::v1 as pb;
use raftlock_testkit::process::{ServeCluster, WaitError};

/// Three `raftlock serve` processes of this package's binary.
struct ProcCluster;

impl ProcCluster {
    async fn start() -> (ServeCluster, u64) {
        ServeCluster::start(Path::new(BIN), 3).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_serve_processes_survive_sigkill_of_the_leader_and_it_rejoins() {
    let started = Instant::now();
    let (mut cluster, leader) = ProcCluster::start().await;
    eprintln!("cluster up, leader {leader}, in {:?}", started.elapsed());
    let follower = *cluster
        .ports
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let follower_port = cluster.ports[&follower];

    // A lease and a lock, both through a follower (forwarded to the leader).
    let lease = leases(follower_port)
        .await
        .grant(pb::GrantLeaseRequest {
            ttl_ms: 60_000,
            owner: "process-test".into(),
        })
        .await
        .expect("grant a lease through a follower")
        .into_inner()
        .lease_id;
    let acquired = locks(follower_port)
        .await
        .acquire(pb::AcquireRequest {
            lease_id: lease,
            locks: vec![exclusive("jobs/nightly")],
            ..Default::default()
        })
        .await
        .expect("acquire through a follower")
        .into_inner();
    assert!(acquired.token > 0);

    // SIGKILL the leader: the other two elect a new one.
    cluster
        .procs
        .get_mut(&leader)
        .expect("leader process")
        .kill();
    let killed_at = Instant::now();
    // A script's `raftlock acquire`, started at once against all three
    // addresses, rides out the election by itself.
    let endpoints: Vec<String> = cluster
        .ports
        .values()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let mut cli = raftlock();
    cli.args(["acquire", "jobs/during-election", "--ttl", "30s", "--json"])
        .args(["--endpoints", &endpoints.join(",")]);
    let cli_dir = cluster.dir.path().to_path_buf();
    let cli_run = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (status, out, err) = run_bounded(cli, &cli_dir, Duration::from_secs(30));
        (status, out, err, started.elapsed())
    });
    let survivors: Vec<u64> = cluster
        .ports
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    let new_leader = match cluster
        .wait_leader(&survivors, Some(leader), Duration::from_secs(10))
        .await
    {
        Ok(l) => l,
        Err(WaitError::Exited(id, log)) => panic!("node {id} exited:\n{log}"),
        Err(WaitError::Timeout(why)) => panic!("{why}\n{}", cluster.logs()),
    };
    eprintln!(
        "new leader {new_leader} elected {:?} after SIGKILL of {leader}",
        killed_at.elapsed()
    );

    let (cli_status, cli_out, cli_err, cli_took) = cli_run.await.expect("cli task");
    assert!(
        cli_status.success(),
        "`raftlock acquire` during the election failed ({cli_status}): {cli_err}"
    );
    let cli_json: serde_json::Value = serde_json::from_str(&cli_out).expect("acquire --json");
    assert!(
        cli_json["token"]
            .as_u64()
            .is_some_and(|t| t > acquired.token)
    );
    eprintln!("`raftlock acquire` through the election took {cli_took:?}");

    // The lock is still held, with the same token, by the same lease.
    let new_leader_port = cluster.ports[&new_leader];
    let info = locks(new_leader_port)
        .await
        .inspect(pb::InspectRequest {
            name: "jobs/nightly".into(),
            stale: false,
        })
        .await
        .expect("inspect on the new leader")
        .into_inner();
    let lock = info.lock.expect("the lock is still held");
    assert_eq!(lock.holders.len(), 1);
    assert_eq!(lock.holders[0].token, acquired.token);
    assert_eq!(lock.holders[0].lease_id, lease);

    // A write the killed node has never seen.
    let later = locks(new_leader_port)
        .await
        .acquire(pb::AcquireRequest {
            lease_id: lease,
            locks: vec![exclusive("jobs/after-the-kill")],
            ..Default::default()
        })
        .await
        .expect("acquire on the new leader")
        .into_inner();
    assert!(later.token > acquired.token, "tokens only grow");

    // Restart the killed node on its data dir and port; it rejoins and
    // catches up.
    let restarted_at = Instant::now();
    let port = cluster.ports[&leader];
    let mut rejoined = None;
    for _ in 0..5 {
        cluster.spawn(leader);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = cluster.procs.get_mut(&leader).expect("restarted process");
            if let Some(status) = p.exited() {
                let log = p.log_text();
                // The port may still be held for a moment: try again.
                assert!(
                    log.contains("in use"),
                    "restarted node exited {status}:\n{log}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
            if let Some(s) = status(port).await
                && s.leader_id == Some(new_leader)
                && s.applied_index >= later.revision
            {
                rejoined = Some(s);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {leader} did not rejoin within 20 s\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if rejoined.is_some() {
            break;
        }
    }
    let s = rejoined.expect("the killed node rejoined");
    assert_eq!(s.node_id, leader);
    assert_eq!(s.nodes.len(), 3);
    eprintln!(
        "node {leader} rejoined and caught up to {} in {:?}; whole test {:?}",
        s.applied_index,
        restarted_at.elapsed(),
        started.elapsed()
    );

    // And it serves the lock state it missed.
    let info = locks(port)
        .await
        .inspect(pb::InspectRequest {
            name: "jobs/after-the-kill".into(),
            stale: true,
        })
        .await
        .expect("stale inspect on the restarted node")
        .into_inner();
    assert_eq!(info.lock.expect("held").holders[0].token, later.token);
}
