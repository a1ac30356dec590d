//! `raftlock serve --force-new-cluster`: losing two of three nodes for
//! good, the survivor becomes a one-member cluster that keeps its holds and
//! grants tokens above every earlier one; the lost nodes come back with
//! wiped data as learners; a node of the old cluster is refused; the flag
//! left in place is harmless until members are added, then refused.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use raftlock_proto::v1 as pb;
use raftlock_testkit::process::{ServeCluster, WaitError, command};

/// Waits until `port` answers Status with `check` true; panics naming the
/// last answer and the cluster's logs otherwise.
async fn wait_status(
    cluster: &mut ServeCluster,
    id: u64,
    what: &str,
    check: impl Fn(&pb::StatusResponse) -> bool,
) -> pb::StatusResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        if let Some(p) = cluster.procs.get_mut(&id)
            && let Some(status) = p.exited()
        {
            panic!(
                "node {id} exited {status} waiting for {what}:\n{}",
                p.log_text()
            );
        }
        if let Some(s) = status(cluster.ports[&id]).await {
            if check(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(
            Instant::now() < deadline,
            "node {id}: {what} did not happen within 30 s; last status {last:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `raftlock serve` for node `id` of `cluster` with extra arguments and no
/// `--peers` (a node that waits to be added, or one that needs none).
fn serve_alone(cluster: &ServeCluster, id: u64, extra: &[&str]) -> Proc {
    let mut cmd = command(Path::new(BIN));
    cmd.arg("serve")
        .arg("--insecure")
        .args(["--id", &id.to_string()])
        .arg("--data-dir")
        .arg(cluster.data_dir(id))
        .args(["--listen", &format!("127.0.0.1:{}", cluster.ports[&id])])
        .args([
            "--peer-listen",
            &format!("127.0.0.1:{}", cluster.peer_ports[&id]),
        ])
        .args(extra);
    let log = cluster.dir.path().join(format!("node{id}.log"));
    Proc::spawn(cmd, &log)
}

fn cli(cluster: &ServeCluster, id: u64, args: &[&str]) -> serde_json::Value {
    let mut cmd = raftlock();
    cmd.args(args)
        .args(["--json", "--endpoints"])
        .arg(format!("127.0.0.1:{}", cluster.ports[&id]));
    let (status, out, err) = run_bounded(cmd, cluster.dir.path(), CLI_BOUND);
    assert!(
        status.success(),
        "raftlock {args:?}: {status}: {err}\n{out}\n{}",
        cluster.logs()
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("raftlock {args:?}: {e}: {out}"))
}

async fn acquire(port: u16, lease: u64, name: &str) -> pb::AcquireResponse {
    acquire_exclusive(port, lease, name).await
}

async fn grant(port: u16, owner: &str) -> u64 {
    raftlock_testkit::grpc::grant(&mut leases(port).await, 60_000, owner).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_two_of_three_then_force_new_cluster_keeps_holds_and_raises_tokens() {
    let (mut cluster, leader) = ServeCluster::start(Path::new(BIN), 3).await;
    let leader_port = cluster.ports[&leader];
    // The survivor is a follower: it was never the leader that granted.
    let survivor = *cluster
        .ports
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let lost: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();

    let lease = grant(leader_port, "before-the-disaster").await;
    let held = acquire(leader_port, lease, "jobs/kept").await;
    let other_lease = grant(leader_port, "another").await;
    let last = acquire(leader_port, other_lease, "jobs/other").await;
    let highest_before = held.token.max(last.token).max(other_lease);
    let old = wait_status(
        &mut cluster,
        survivor,
        "the survivor applies every grant",
        |s| s.token_high_water >= last.revision && !s.cluster_id.is_empty(),
    )
    .await;

    // Two nodes are lost for good; the survivor alone has no quorum.
    for id in &lost {
        cluster.procs.get_mut(id).expect("process").kill();
    }
    for id in &lost {
        std::fs::remove_dir_all(cluster.data_dir(*id)).expect("wipe a lost node");
    }
    cluster.procs.get_mut(&survivor).expect("process").kill();

    // The survivor, forced: it keeps its state and becomes the only member
    // of a new cluster.
    let proc = serve_alone(&cluster, survivor, &["--force-new-cluster"]);
    cluster.procs.insert(survivor, proc);
    let forced = wait_status(&mut cluster, survivor, "a one-member cluster", |s| {
        s.leader_id == Some(survivor)
            && s.nodes.len() == 1
            && s.cluster_id != old.cluster_id
            // A snapshot past the force, so nodes added later start from it
            // and never replay the old cluster's log.
            && s.snapshot_index.is_some_and(|i| i > old.last_log_index)
            && s.purged_index.is_some()
    })
    .await;
    assert!(!forced.cluster_id.is_empty());
    let port = cluster.ports[&survivor];

    // The holds are kept, with their tokens and leases.
    let info = locks(port)
        .await
        .inspect(pb::InspectRequest {
            name: "jobs/kept".into(),
            stale: false,
        })
        .await
        .expect("inspect after the force")
        .into_inner();
    let lock = info.lock.expect("jobs/kept is still held");
    assert_eq!(lock.holders.len(), 1);
    assert_eq!(lock.holders[0].token, held.token);
    assert_eq!(lock.holders[0].lease_id, lease);

    // A new grant's token is above every earlier token, including ones the
    // survivor may never have seen: the token epoch went up.
    let new_lease = grant(port, "after-the-force").await;
    let fresh = acquire(port, new_lease, "jobs/new").await;
    assert!(
        fresh.token > highest_before,
        "{} <= {highest_before}",
        fresh.token
    );
    assert!(
        fresh.token >> 48 > highest_before >> 48,
        "the token epoch was raised: {:#x} after {highest_before:#x}",
        fresh.token
    );
    assert!(
        new_lease > highest_before,
        "lease ids continue above the old ones too"
    );

    // The flag left in place is harmless while the membership is the
    // forced one: a restart keeps the cluster as it is.
    cluster.procs.get_mut(&survivor).expect("process").kill();
    let proc = serve_alone(&cluster, survivor, &["--force-new-cluster"]);
    cluster.procs.insert(survivor, proc);
    let again = wait_status(&mut cluster, survivor, "restart with the flag", |s| {
        s.leader_id == Some(survivor)
    })
    .await;
    assert_eq!(again.cluster_id, forced.cluster_id, "not forced twice");
    let fresh_again = acquire(port, new_lease, "jobs/new").await;
    assert_eq!(fresh_again.token, fresh.token, "the same hold, kept");

    // A lost node comes back with a wiped data dir under its old id, as a
    // learner, then a voter.
    let back = lost[0];
    let proc = serve_alone(&cluster, back, &[]);
    cluster.procs.insert(back, proc);
    let peer_addr = format!("127.0.0.1:{}", cluster.peer_ports[&back]);
    let added = cli(
        &cluster,
        survivor,
        &["cluster", "add-learner", &back.to_string(), &peer_addr],
    );
    assert!(
        added["learners"].to_string().contains(&back.to_string()),
        "{added}"
    );
    let promoted = cli(
        &cluster,
        survivor,
        &["cluster", "promote", &back.to_string()],
    );
    assert_eq!(
        promoted["voters"].as_array().map(Vec::len),
        Some(2),
        "{promoted}"
    );
    let joined = wait_status(&mut cluster, back, "the returning node catches up", |s| {
        s.leader_id == Some(survivor) && s.token_high_water >= fresh.revision
    })
    .await;
    assert_eq!(joined.cluster_id, forced.cluster_id);
    let after = acquire(port, new_lease, "jobs/two-voters").await;
    assert!(after.token > fresh.token);

    // Now the flag is refused: forcing again would throw node `back` out.
    cluster.procs.get_mut(&survivor).expect("process").kill();
    let mut refused = serve_alone(&cluster, survivor, &["--force-new-cluster"]);
    let status = refused
        .wait_exit(Duration::from_secs(30))
        .expect("the forced node exits at once");
    assert_eq!(status.code(), Some(2), "{}", refused.log_text());
    assert!(
        refused.log_text().contains("remove --force-new-cluster"),
        "{}",
        refused.log_text()
    );
    // Without the flag it rejoins its two-voter cluster.
    let proc = serve_alone(&cluster, survivor, &[]);
    cluster.procs.insert(survivor, proc);
    let ids = [survivor, back];
    match cluster
        .wait_leader(&ids, None, Duration::from_secs(30))
        .await
    {
        Ok(_) => {}
        Err(WaitError::Exited(id, log)) => panic!("node {id} exited:\n{log}"),
        Err(WaitError::Timeout(why)) => panic!("{why}\n{}", cluster.logs()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_on_a_new_data_dir_is_refused() {
    let tmp = raftlock_testkit::dirs::temp_dir();
    let mut cmd = raftlock();
    cmd.args(["serve", "--insecure", "--id", "1", "--force-new-cluster"])
        .args(["--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(tmp.path().join("new"));
    let (status, out, err) = run_bounded(cmd, tmp.path(), CLI_BOUND);
    assert_eq!(status.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("surviving member"), "{err}");
}

/// Waits (bounded) until node `id`'s log contains `text`; returns the log.
async fn wait_log(cluster: &ServeCluster, id: u64, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = cluster.procs[&id].log_text();
        if log.contains(text) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} never logged {text:?}:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The review's scenario: a cluster recovered with `--force-new-cluster`
/// on one node (its cluster has a new id and only that member); the two
/// others come back with wiped data dirs and the OLD `--peers` while the
/// forced node is down. They hear only each other ("no cluster") and must
/// not make a second cluster of the three, which would grant tokens from
/// the bottom again: they wait for every member of --peers. Once the
/// forced node answers, naming its cluster, they never bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_nodes_with_the_old_peers_never_form_a_second_cluster_while_the_forced_node_is_down()
{
    let (mut cluster, leader) = ServeCluster::start(Path::new(BIN), 3).await;
    let survivor = leader;
    let lost: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();
    let old = wait_status(&mut cluster, survivor, "a named cluster", |s| {
        !s.cluster_id.is_empty()
    })
    .await;
    for id in 1..=3 {
        cluster.procs.get_mut(&id).expect("process").kill();
    }
    for id in &lost {
        std::fs::remove_dir_all(cluster.data_dir(*id)).expect("wipe a lost node");
    }
    let proc = serve_alone(&cluster, survivor, &["--force-new-cluster"]);
    cluster.procs.insert(survivor, proc);
    let forced = wait_status(&mut cluster, survivor, "a one-member cluster", |s| {
        s.leader_id == Some(survivor) && s.nodes.len() == 1 && s.cluster_id != old.cluster_id
    })
    .await;
    let lease = grant(cluster.ports[&survivor], "forced").await;
    let token = acquire(cluster.ports[&survivor], lease, "jobs/forced")
        .await
        .token;

    // The forced node is briefly unreachable; the wiped ones start with
    // the old --peers.
    cluster.procs.get_mut(&survivor).expect("process").kill();
    for id in &lost {
        cluster.spawn(*id);
    }
    for id in &lost {
        let log = wait_log(&cluster, *id, "not bootstrapping yet").await;
        assert!(
            log.contains(&format!("node {survivor} (")),
            "node {id} names the member it waits for:\n{log}"
        );
    }
    // Well past the moment the old guard bootstrapped (at once for the
    // lowest id, after 4 election timeouts for the others) and elected.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for id in &lost {
        let s = wait_status(&mut cluster, *id, "an answer", |_| true).await;
        assert!(
            s.nodes.is_empty() && s.leader_id.is_none() && s.cluster_id.is_empty(),
            "node {id} made a second cluster: {s:?}\n{}",
            cluster.logs()
        );
    }

    // The forced node is back: they hear its cluster and wait to be added.
    let proc = serve_alone(&cluster, survivor, &["--force-new-cluster"]);
    cluster.procs.insert(survivor, proc);
    for id in &lost {
        // It names the forced cluster's id, or the forced node refuses it
        // (that cluster still knows the id with its old store).
        let log = wait_log(&cluster, *id, "the cluster of --peers already exists").await;
        assert!(
            log.contains(&forced.cluster_id) || log.contains("refused this node"),
            "{log}"
        );
        let s = wait_status(&mut cluster, *id, "an answer", |_| true).await;
        assert!(s.nodes.is_empty(), "node {id}: {s:?}");
    }
    let again = wait_status(&mut cluster, survivor, "the forced cluster serves", |s| {
        s.leader_id == Some(survivor)
    })
    .await;
    assert_eq!(again.cluster_id, forced.cluster_id);
    let after = grant(cluster.ports[&survivor], "after").await;
    assert!(after > token, "tokens keep growing in the one cluster");
}
