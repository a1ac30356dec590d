//! Token floors, and backup and restore of a whole cluster, with real
//! `raftlock serve` processes.

use std::path::Path;

use crate::common::*;
use raftlock_proto::v1 as pb;
use raftlock_testkit::grpc::grant;
use raftlock_testkit::process::ServeCluster;

/// The token of a fresh exclusive hold of `name` by `lease`.
async fn take(port: u16, lease: u64, name: &str) -> u64 {
    acquire_exclusive(port, lease, name).await.token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_floor_makes_the_first_token_exceed_it() {
    // A floor in epoch 2: the first token must be in epoch 3.
    let floor: u64 = (2 << 48) | 123_456;
    let (cluster, leader) =
        ServeCluster::start_with(Path::new(BIN), 3, &["--token-floor", &floor.to_string()]).await;
    let port = cluster.ports[&leader];
    let lease = grant(&mut leases(port).await, 60_000, "floor-test").await;
    assert!(lease > floor, "lease id {lease} is above the floor {floor}");
    let token = take(port, lease, "jobs/floor").await;
    assert!(token > floor, "token {token} is above the floor {floor}");
    assert_eq!(token >> 48, 3, "the epoch just above the floor's");
    let status = status(port).await.expect("status");
    assert_eq!(status.token_epoch, 3);
    assert!(status.token_high_water >= token);

    // `raftlock status` prints both.
    let (code, out, err) = run_bounded(
        with_endpoints(&["status", "--json"], &format!("127.0.0.1:{port}")),
        cluster.dir.path(),
        CLI_BOUND,
    );
    let code = code.code();
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["token_epoch"], 3);
    assert!(v["token_high_water"].as_u64().expect("a number") >= token);
}

/// `raftlock ARGS` (no cluster needed, or `--endpoints` given in ARGS):
/// (exit code, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = raftlock();
    cmd.args(args);
    let (status, out, err) = run_bounded(cmd, dir, CLI_BOUND);
    (status.code().unwrap_or(-1), out, err)
}

fn endpoints(cluster: &ServeCluster) -> String {
    cluster
        .ports
        .values()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The holder of `name` as the node at `port` reads it (leader-checked):
/// (lease, token), or None when it is free.
async fn holder(port: u16, name: &str) -> Option<(u64, u64)> {
    let info = locks(port)
        .await
        .inspect(pb::InspectRequest {
            name: name.into(),
            stale: false,
        })
        .await
        .expect("inspect")
        .into_inner()
        .lock?;
    info.holders.first().map(|h| (h.lease_id, h.token))
}

/// Saves a backup of `cluster` to `file` with the CLI; returns its JSON.
fn save(cluster: &ServeCluster, file: &Path) -> serde_json::Value {
    let file = file.to_str().expect("utf-8 path");
    let (code, out, err) = cli(
        cluster.dir.path(),
        &[
            "snapshot",
            "save",
            file,
            "--endpoints",
            &endpoints(cluster),
            "--json",
        ],
    );
    assert_eq!(code, 0, "snapshot save: {err}");
    serde_json::from_str(&out).expect("JSON")
}

fn restore_args<'a>(file: &'a str, dir: &'a str, id: &'a str, peers: &'a str) -> Vec<&'a str> {
    vec![
        "snapshot",
        "restore",
        file,
        "--data-dir",
        dir,
        "--id",
        id,
        "--peers",
        peers,
    ]
}

/// The "done when": a backup, more grants, every node and its data
/// lost, a restore of every node from the backup, and the new cluster
/// serves the saved holds with their tokens, has forgotten the grant made
/// after the backup, and grants above everything the old cluster granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_more_grants_wipe_restore_serves_saved_holds_with_higher_tokens() {
    let (mut cluster, leader) = ServeCluster::start(Path::new(BIN), 3).await;
    let port = cluster.ports[&leader];
    let a = grant(&mut leases(port).await, 60_000, "a").await;
    let t_a = take(port, a, "jobs/a").await;
    let b = grant(&mut leases(port).await, 60_000, "b").await;
    let t_b = take(port, b, "jobs/b").await;

    let file = cluster.dir.path().join("backup.rlb");
    let saved = save(&cluster, &file);
    assert_eq!(saved["locks"], 2);
    assert_eq!(saved["leases"], 2);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a backup is private");
    }

    let c = grant(&mut leases(port).await, 60_000, "c").await;
    let t_c = take(port, c, "jobs/c").await;
    assert!(t_c > t_a && t_c > t_b);

    // Every node and all their data are lost.
    for proc in cluster.procs.values_mut() {
        proc.kill();
    }
    for id in 1..=3 {
        std::fs::remove_dir_all(cluster.data_dir(id)).expect("wipe");
    }
    let peers = cluster.peers.clone();
    // Node 1's restore was interrupted once: it left its staging directory.
    let staged = cluster.dir.path().join("node1.restoring");
    std::fs::create_dir_all(&staged).expect("stage");
    std::fs::write(staged.join("half-written"), b"x").expect("stage");
    for id in 1..=3u64 {
        let dir = cluster.data_dir(id);
        let (code, out, err) = cli(
            cluster.dir.path(),
            &restore_args(
                file.to_str().expect("utf-8"),
                dir.to_str().expect("utf-8"),
                &id.to_string(),
                &peers,
            ),
        );
        assert_eq!(code, 0, "restore node {id}: {err}\n{out}");
        assert!(
            dir.join(raftlock_node::restore::MARKER_FILE).exists(),
            "node {id}: the prepared store is in place"
        );
    }
    assert!(
        !staged.exists(),
        "the unfinished staging directory was replaced and moved"
    );
    for id in 1..=3 {
        cluster.spawn(id);
    }
    let leader = match cluster
        .wait_leader(&[1, 2, 3], None, std::time::Duration::from_secs(30))
        .await
    {
        Ok(leader) => leader,
        Err(_) => panic!("the restored cluster elects no leader\n{}", cluster.logs()),
    };
    let port = cluster.ports[&leader];

    assert_eq!(
        holder(port, "jobs/a").await,
        Some((a, t_a)),
        "saved hold, same token"
    );
    assert_eq!(
        holder(port, "jobs/b").await,
        Some((b, t_b)),
        "saved hold, same token"
    );
    assert_eq!(
        holder(port, "jobs/c").await,
        None,
        "the grant after the backup is gone"
    );

    let d = grant(&mut leases(port).await, 60_000, "d").await;
    assert!(d > t_c, "new lease id {d} is above the old cluster's {t_c}");
    let t_new = take(port, d, "jobs/c").await;
    assert!(
        t_new > t_c,
        "new token {t_new} is above the old cluster's {t_c}"
    );
    let status = status(port).await.expect("status");
    assert_eq!(status.token_epoch, 1);
    assert_ne!(
        status.cluster_id,
        saved["cluster_id"].as_str().unwrap_or_default()
    );
    // A watcher of the old cluster resuming at one of its revisions is
    // told to re-list: every revision here is above it.
    let err = locks(port)
        .await
        .watch(pb::WatchRequest {
            prefix: "".into(),
            from_revision: t_c,
        })
        .await
        .map(|_| ())
        .expect_err("an old revision is compacted");
    assert_eq!(raftlock_testkit::grpc::reason_of(&err), "COMPACTED");
    // The restored leases live on, with their ttl restarted: a keep-alive
    // of the saved lease `a` is answered.
    let kept = leases(port)
        .await
        .keep_alive(futures::stream::iter(vec![pb::KeepAliveRequest {
            lease_id: a,
        }]))
        .await
        .expect("keep-alive stream")
        .into_inner()
        .message()
        .await
        .expect("keep-alive answer")
        .expect("one answer");
    assert_eq!(kept.lease_id, a);
}

/// A backup that was changed or cut after it was written is refused
/// before anything is written, naming what is wrong; so is a used data
/// directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_or_a_used_data_dir_is_refused() {
    let (cluster, leader) = ServeCluster::start(Path::new(BIN), 3).await;
    let port = cluster.ports[&leader];
    let a = grant(&mut leases(port).await, 60_000, "a").await;
    take(port, a, "jobs/a").await;
    let file = cluster.dir.path().join("backup.rlb");
    save(&cluster, &file);
    let bytes = std::fs::read(&file).expect("read");
    let tmp = cluster.dir.path();
    let peers = "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3";

    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let cut = bytes[..bytes.len() - 10].to_vec();
    for (name, content, says) in [
        ("flipped.rlb", flipped, "damaged"),
        ("cut.rlb", cut, "damaged"),
        ("other.rlb", b"hello".to_vec(), "not a raftlock backup"),
    ] {
        let path = tmp.join(name);
        std::fs::write(&path, content).expect("write");
        let dir = tmp.join(format!("restore-{name}"));
        let (code, _, err) = cli(
            tmp,
            &restore_args(
                path.to_str().expect("utf-8"),
                dir.to_str().expect("utf-8"),
                "1",
                peers,
            ),
        );
        assert_ne!(code, 0, "{name} is refused");
        assert!(err.contains(says), "{name}: {err}");
        assert!(!dir.exists(), "{name}: nothing was written");
    }

    // A data directory in use: refused, and left as it was.
    let used = cluster.data_dir(1);
    let before: Vec<_> = std::fs::read_dir(&used)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let (code, _, err) = cli(
        tmp,
        &restore_args(
            file.to_str().expect("utf-8"),
            used.to_str().expect("utf-8"),
            "1",
            peers,
        ),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not empty") && err.contains("raftlock store"),
        "{err}"
    );
    let after: Vec<_> = std::fs::read_dir(&used)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(before, after);

    // The intact file restores.
    let fresh = tmp.join("fresh");
    let (code, _, err) = cli(
        tmp,
        &restore_args(
            file.to_str().expect("utf-8"),
            fresh.to_str().expect("utf-8"),
            "1",
            peers,
        ),
    );
    assert_eq!(code, 0, "{err}");
}

/// SaveSnapshot is the leader's: a follower answers NOT_LEADER with the
/// leader's address, as the other admin calls do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_on_a_follower_names_the_leader() {
    let (cluster, leader) = ServeCluster::start(Path::new(BIN), 3).await;
    // The leader's client address is recorded a moment after its election.
    let leader_addr = format!("127.0.0.1:{}", cluster.ports[&leader]);
    let follower = *cluster
        .ports
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let err = pb::admin_client::AdminClient::new(
            raftlock_testkit::grpc::channel(cluster.ports[&follower])
                .await
                .expect("channel"),
        )
        .save_snapshot(pb::SaveSnapshotRequest {})
        .await
        .expect_err("a follower refuses");
        let named = raftlock_proto::errors::classify(&err)
            .leader
            .map(|hint| hint.addr);
        if named.as_deref() == Some(leader_addr.as_str()) {
            assert_eq!(raftlock_testkit::grpc::reason_of(&err), "NOT_LEADER");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never named the leader: {err:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Through the CLI, given only the follower, the save follows the leader.
    let file = cluster.dir.path().join("via-follower.rlb");
    let (code, _, err) = cli(
        cluster.dir.path(),
        &[
            "snapshot",
            "save",
            file.to_str().expect("utf-8"),
            "--endpoints",
            &format!("127.0.0.1:{}", cluster.ports[&follower]),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(file.exists());
}

/// A backup saved by the previous release (0.1.0: snapshot data format 3,
/// bincode) with its own CLI restores into a cluster of this build, which
/// serves its holds with their tokens and grants above them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_saved_by_the_previous_release_restores_into_this_build() {
    let Some(previous) = raftlock_testkit::process::previous_release() else {
        return;
    };
    let (mut old, leader) = ServeCluster::start(&previous, 1).await;
    let port = old.ports[&leader];
    let lease = grant(&mut leases(port).await, 60_000, "from-0.1").await;
    let token = take(port, lease, "jobs/kept").await;
    let file = old.dir.path().join("old.rlb");
    let mut save = std::process::Command::new(&previous);
    save.args([
        "snapshot",
        "save",
        file.to_str().expect("utf-8"),
        "--endpoints",
        &endpoints(&old),
    ]);
    let (code, _, err) = run_bounded(save, old.dir.path(), CLI_BOUND);
    assert_eq!(code.code(), Some(0), "0.1.0's snapshot save: {err}");
    for proc in old.procs.values_mut() {
        proc.kill();
    }

    // A node of this build, prepared from it on new ports.
    let (mut new, _) = ServeCluster::start(Path::new(BIN), 1).await;
    for proc in new.procs.values_mut() {
        proc.kill();
    }
    std::fs::remove_dir_all(new.data_dir(1)).expect("wipe");
    let dir = new.data_dir(1);
    let peers = new.peers.clone();
    let (code, out, err) = cli(
        new.dir.path(),
        &restore_args(
            file.to_str().expect("utf-8"),
            dir.to_str().expect("utf-8"),
            "1",
            &peers,
        ),
    );
    assert_eq!(code, 0, "restore of 0.1.0's backup: {err}\n{out}");
    new.spawn(1);
    let leader = match new
        .wait_leader(&[1], None, std::time::Duration::from_secs(30))
        .await
    {
        Ok(leader) => leader,
        Err(_) => panic!("the restored node elects itself not\n{}", new.logs()),
    };
    let port = new.ports[&leader];
    assert_eq!(
        holder(port, "jobs/kept").await,
        Some((lease, token)),
        "0.1.0's hold, same token"
    );
    let fresh = grant(&mut leases(port).await, 60_000, "after").await;
    assert!(take(port, fresh, "jobs/new").await > token);
}
