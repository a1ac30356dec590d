//! Token floors, and backup and restore of a whole cluster, with real
//! `raftlock serve` processes.

use std::path::Path;

use crate::common::*;
use raftlock_proto::v1 as pb;
use raftlock_testkit::grpc::grant;
use raftlock_testkit::process::ServeCluster;

/// The token of a fresh exclusive hold of `name` by `lease` (through the
/// node at `port`, forwarded to the leader if needed).
async fn take(port: u16, lease: u64, name: &str) -> u64 {
    locks(port)
        .await
        .acquire(pb::AcquireRequest {
            lease_id: lease,
            locks: vec![exclusive(name)],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("acquire {name}: {e}"))
        .into_inner()
        .token
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
