//! A raftlock node inside an ordinary tokio program.
//!
//! cargo run -p raftlock-node --example embedded
//!
//! It starts a one-node cluster in a temporary directory and locks through
//! raftlock-client's in-process transport (`Client::in_process` over the
//! node's `local_service()`): the same client API and errors as over the
//! network, with no socket between this code and the node. The session keeps
//! its lease alive in the background; the guard carries the fencing token.
//! A real service would list its peers in `initial_members` (the same map on
//! every node); its clients elsewhere connect to the addresses with
//! `Client::connect`.

use std::collections::BTreeMap;
use std::time::Duration;

use raftlock_client::{Client, ClientOptions, SessionOptions};
use raftlock_node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // One port for clients, one for peers (plaintext: a one-node cluster
    // on loopback; a real one sets `config.tls`, see docs/security.md).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let peer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let peer_addr = peer_listener.local_addr()?.to_string();
    let mut config = NodeConfig::new(1, dir.path(), addr.clone());
    config.peer_listen = peer_addr.clone();
    config.initial_members = BTreeMap::from([(1, peer_addr)]);
    let node = Node::start_on(config, listener, peer_listener).await?;

    // Wait until the node has elected itself.
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "single node leads")
        .await?;
    println!("node 1 serving gRPC on {addr}");

    let client = Client::in_process(node.local_service(), ClientOptions::default());
    let session = client
        .session(SessionOptions::new(Duration::from_secs(30)).owner("embedded-example"))
        .await?;
    let guard = session
        .lock("jobs/nightly")
        .reason("demonstration")
        .wait(Duration::from_secs(5))
        .acquire()
        .await?;
    println!(
        "lease {} holds jobs/nightly with fencing token {} (certainly valid for {:?})",
        session.lease_id(),
        guard.token(),
        guard.remaining()
    );
    guard.release().await?;
    session.revoke().await?;
    node.shutdown().await;
    println!("released and shut down");
    Ok(())
}
