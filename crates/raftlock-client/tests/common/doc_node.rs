// Included (hidden) by the crate's documentation examples so that
// `cargo test --doc` runs them against a real one-node cluster: a node in a
// temporary directory on a free port, elected before it is returned. Keep
// the returned TempDir alive as long as the node.

async fn doc_node() -> Result<
    (raftlock_node::NodeHandle, String, tempfile::TempDir),
    Box<dyn std::error::Error>,
> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let peer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let peer_addr = peer_listener.local_addr()?.to_string();
    let mut config = raftlock_node::NodeConfig::new(1, dir.path(), addr.clone());
    config.peer_listen = peer_addr.clone();
    config.initial_members = std::collections::BTreeMap::from([(1, peer_addr)]);
    let node = raftlock_node::Node::start_on(config, listener, peer_listener).await?;
    node.raft()
        .wait(Some(std::time::Duration::from_secs(10)))
        .current_leader(1, "the documentation node leads")
        .await?;
    Ok((node, addr, dir))
}
