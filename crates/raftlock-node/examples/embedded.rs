//! A raftlock node inside an ordinary tokio program.
//!
//! cargo run -p raftlock-node --example embedded
//!
//! It starts a one-node cluster in a temporary directory, takes a lease and a
//! lock through the in-process API (no network hop), prints the fencing token,
//! releases, and shuts the node down. A real service would list its peers in
//! `initial_members` (the same map on every node) and keep the lease alive.

use std::collections::BTreeMap;
use std::time::Duration;

use raftlock_core::{LockSpec, Mode};
use raftlock_node::{AcquireArgs, Node, NodeConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let mut config = NodeConfig::new(1, dir.path(), addr.clone());
    config.initial_members = BTreeMap::from([(1, addr.clone())]);
    let node = Node::start_on(config, listener).await?;

    // Wait until the node has elected itself.
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "single node leads")
        .await?;
    println!("node 1 serving gRPC on {addr}");

    let api = node.api();
    let (lease, ttl_ms) = api.grant_lease(30_000, "embedded-example".into()).await?;
    let acquired = api
        .acquire(AcquireArgs {
            lease,
            locks: vec![LockSpec {
                name: "jobs/nightly".into(),
                mode: Mode::Exclusive,
            }],
            wait: Duration::from_secs(5),
            reason: "demonstration".into(),
            ..AcquireArgs::default()
        })
        .await?;
    println!(
        "lease {lease} (ttl {ttl_ms} ms) holds jobs/nightly with fencing token {}",
        acquired.token
    );
    api.release(lease, acquired.token, vec!["jobs/nightly".into()])
        .await?;
    api.revoke_lease(lease).await?;
    node.shutdown().await;
    println!("released and shut down");
    Ok(())
}
