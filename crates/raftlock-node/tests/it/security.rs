//! The network boundary: separate client and peer ports, TLS with mutual
//! TLS between peers, cluster ids and wiped nodes, certificate reload.
//! Real nodes in this process, real TLS over 127.0.0.1.

use std::collections::BTreeMap;
use std::time::Duration;

use raftlock_node::{Node, NodeConfig, NodeHandle, TlsFiles};
use raftlock_proto::internal::v1 as internal;
use raftlock_proto::v1 as pb;
use raftlock_testkit::certs::{CertFiles, TestCa};
use raftlock_testkit::cluster::{Cluster, fast_timing, init_tracing};
use raftlock_testkit::grpc::{acquire_req, grant, reason_of};
use raftlock_testkit::ports::bind_nodes;
use raftlock_testkit::wait::eventually;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Three nodes with TLS from `ca`, each with its node certificate.
struct TlsCluster {
    nodes: BTreeMap<u64, NodeHandle>,
    addrs: BTreeMap<u64, String>,
    peer_addrs: BTreeMap<u64, String>,
    certs: BTreeMap<u64, CertFiles>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn tls_cluster(ca: &TestCa) -> TlsCluster {
    init_tracing();
    let (listeners, addrs) = bind_nodes(3).await;
    let (mut peer_listeners, peer_addrs) = bind_nodes(3).await;
    let mut nodes = BTreeMap::new();
    let mut certs = BTreeMap::new();
    let mut dirs = Vec::new();
    for (id, listener) in listeners {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let files = ca.node(id, "");
        let mut c = NodeConfig::new(id, dir.path(), addrs[&id].clone());
        c.peer_listen = peer_addrs[&id].clone();
        c.initial_members = peer_addrs.clone();
        c.raft = fast_timing();
        c.tls = Some(TlsFiles {
            cert: files.cert.clone(),
            key: files.key.clone(),
            ca: ca.cert.clone(),
        });
        let peer = peer_listeners.remove(&id).expect("peer listener");
        let handle = Node::start_on(c, listener, peer)
            .await
            .expect("node starts");
        nodes.insert(id, handle);
        certs.insert(id, files);
        dirs.push(dir);
    }
    TlsCluster {
        nodes,
        addrs,
        peer_addrs,
        certs,
        _dirs: dirs,
    }
}

impl TlsCluster {
    async fn leader(&self) -> u64 {
        crate::cluster::agreed_leader(&self.nodes).await
    }

    async fn shutdown(self) {
        for (_, n) in self.nodes {
            n.shutdown().await;
        }
    }
}

fn pem(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).expect("read PEM")
}

/// A TLS channel to `addr` trusting `ca`, presenting `identity` if given.
async fn tls_channel(
    addr: &str,
    ca: &std::path::Path,
    identity: Option<&CertFiles>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(ca)))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(pem(&id.cert), pem(&id.key)));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn plain_channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy()
}

/// A vote request as a peer would send it: stamped `from`, meant for
/// `target`, from cluster `cluster_id`.
fn forged_vote(from: u64, target: u64, cluster_id: &str) -> internal::RaftMessage {
    // An empty payload (whose CRC-32 is 0): the message is refused before
    // it is decoded, or it fails to decode; either way it never reaches
    // Raft.
    internal::RaftMessage {
        data: Vec::new(),
        crc32: 0,
        target_id: target,
        seq: 0,
        from_id: from,
        cluster_id: cluster_id.to_string(),
        store_id: String::new(),
        protocol: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_port_never_serves_the_peer_transport_and_a_peer_port_never_the_client_api() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut internal_on_client_port =
        internal::raft_transport_client::RaftTransportClient::new(cluster.channel(leader).await);
    let status = internal_on_client_port
        .vote(forged_vote(2, leader, ""))
        .await
        .expect_err("no internal service on the client port");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    let peer = plain_channel(&cluster.peer_addrs[&leader]).await;
    let mut leases_on_peer_port = pb::leases_client::LeasesClient::new(peer);
    let status = leases_on_peer_port
        .grant(pb::GrantLeaseRequest {
            ttl_ms: 10_000,
            owner: "x".into(),
        })
        .await
        .expect_err("no client API on the peer port");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_another_cluster_is_refused_with_cluster_mismatch() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    // Every node learns the cluster id the first leader chose.
    let id =
        eventually(Duration::from_secs(10), || {
            let ids: Vec<String> = cluster
                .nodes
                .values()
                .flatten()
                .map(|n| n.cluster_id())
                .collect();
            async move {
                (!ids[0].is_empty() && ids.iter().all(|i| *i == ids[0])).then(|| ids[0].clone())
            }
        })
        .await;
    assert_eq!(id.len(), 32, "{id}");

    let mut peer = internal::raft_transport_client::RaftTransportClient::new(
        plain_channel(&cluster.peer_addrs[&leader]).await,
    );
    let status = peer
        .vote(forged_vote(2, leader, "0123456789abcdef0123456789abcdef"))
        .await
        .expect_err("another cluster's vote");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason_of(&status), "CLUSTER_MISMATCH");
    assert!(
        status.message().contains("different clusters"),
        "{status:?}"
    );

    // A node that is not a member cannot campaign either.
    let status = peer
        .vote(forged_vote(9, leader, &id))
        .await
        .expect_err("a non-member's vote");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The cluster keeps serving.
    let mut leases = cluster.leases(leader).await;
    grant(&mut leases, 10_000, "after").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_coming_back_under_its_old_id_is_refused_and_the_cluster_serves() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    // Wait until the leader has recorded every node's store.
    eventually(Duration::from_secs(10), || {
        let known = cluster.nodes[&leader]
            .as_ref()
            .map(|n| n.api().members().0.len())
            .unwrap_or(0);
        let recorded = cluster.nodes[&leader]
            .as_ref()
            .is_some_and(|n| n.api().recorded_members().len() == 3);
        async move { (known == 3 && recorded).then_some(()) }
    })
    .await;
    cluster.stop(victim).await;
    // Its data is gone; a new store (new store id) under the old id.
    let dir = cluster.dirs[&victim].path().to_path_buf();
    std::fs::remove_dir_all(&dir).expect("wipe");
    std::fs::create_dir_all(&dir).expect("recreate");
    cluster.restart(victim).await;

    // The others keep serving writes (a majority without the victim).
    let mut leases = cluster.leases(leader).await;
    for i in 0..20 {
        grant(&mut leases, 10_000, &format!("w{i}")).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The wiped node never took the cluster's log: it was refused, not
    // merged (openraft's leader would otherwise see a member's log go
    // backwards).
    let node = cluster.nodes[&victim].as_ref().expect("running");
    let applied = node.raft().metrics().borrow().last_applied;
    assert!(
        applied.is_none_or(|l| l.index < 3),
        "the wiped node applied the cluster's log: {applied:?}"
    );
    assert!(
        node.cluster_id().is_empty()
            || node.cluster_id()
                != cluster.nodes[&leader]
                    .as_ref()
                    .expect("leader")
                    .cluster_id()
    );
    // The leader as the two serving nodes see it: the refused node may
    // never learn one (whether a heartbeat reached it before the leader
    // refused it is a race), so it is left out.
    let serving: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    let still = eventually(Duration::from_secs(10), || {
        let seen: Vec<Option<u64>> = serving
            .iter()
            .map(|id| {
                cluster.nodes[id]
                    .as_ref()
                    .and_then(|n| n.raft().metrics().borrow().current_leader)
            })
            .collect();
        async move {
            match seen.first() {
                Some(Some(l)) if seen.iter().all(|x| *x == Some(*l)) && *l != victim => Some(*l),
                _ => None,
            }
        }
    })
    .await;
    let mut leases = cluster.leases(still).await;
    grant(&mut leases, 10_000, "still serving").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_nodes_form_a_cluster_and_refuse_plaintext_and_strangers() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let ca = TestCa::new(dir.path(), "");
    let other = TestCa::new(dir.path(), "other-");
    let cluster = tls_cluster(&ca).await;
    let leader = cluster.leader().await;

    // A client trusting the CA locks through TLS, with or without a client
    // certificate.
    let client = ca.client("worker");
    for (i, identity) in [None, Some(&client)].into_iter().enumerate() {
        let channel = tls_channel(&cluster.addrs[&leader], &ca.cert, identity)
            .await
            .expect("TLS connect");
        let mut leases = pb::leases_client::LeasesClient::new(channel.clone());
        let mut locks = pb::locks_client::LocksClient::new(channel);
        let lease = grant(&mut leases, 10_000, "tls").await;
        let held = locks
            .acquire(acquire_req(lease, &format!("tls/{i}"), 0))
            .await
            .expect("acquire over TLS");
        assert!(held.into_inner().token > 0);
    }

    // Plaintext to a TLS port gets no answer.
    let mut plain =
        pb::leases_client::LeasesClient::new(plain_channel(&cluster.addrs[&leader]).await);
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        plain.grant(pb::GrantLeaseRequest {
            ttl_ms: 10_000,
            owner: "plain".into(),
        }),
    )
    .await
    .expect("answered or failed in time");
    assert!(refused.is_err(), "plaintext got through: {refused:?}");

    // A client that trusts another CA does not trust the nodes.
    assert!(
        tls_channel(&cluster.addrs[&leader], &other.cert, None)
            .await
            .is_err(),
        "a client trusting another CA connected"
    );
    // A client certificate from another CA is refused by the node.
    let stranger = other.client("stranger");
    let refused = match tls_channel(&cluster.addrs[&leader], &ca.cert, Some(&stranger)).await {
        Err(_) => true,
        Ok(channel) => pb::leases_client::LeasesClient::new(channel)
            .grant(pb::GrantLeaseRequest {
                ttl_ms: 10_000,
                owner: "stranger".into(),
            })
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA was accepted");

    // The peer port: no certificate, or a client certificate, or another
    // CA's node certificate: refused.
    let peer_addr = &cluster.peer_addrs[&leader];
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let cases: Vec<(&str, Option<CertFiles>)> = vec![
        ("no certificate", None),
        ("a client certificate", Some(client.clone())),
        (
            "another CA's node certificate",
            Some(other.node(follower, "-other")),
        ),
    ];
    for (what, identity) in cases {
        let result = match tls_channel(peer_addr, &ca.cert, identity.as_ref()).await {
            Err(_) => Err("handshake".to_string()),
            Ok(channel) => internal::raft_transport_client::RaftTransportClient::new(channel)
                .vote(forged_vote(follower, leader, ""))
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        };
        assert!(result.is_err(), "{what} reached Raft on the peer port");
    }
    // Node 2's certificate cannot speak as node 3.
    let (a, b) = {
        let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        (others[0], others[1])
    };
    let channel = tls_channel(peer_addr, &ca.cert, Some(&cluster.certs[&a]))
        .await
        .expect("a node certificate connects");
    let status = internal::raft_transport_client::RaftTransportClient::new(channel)
        .vote(forged_vote(b, leader, ""))
        .await
        .expect_err("node a speaking as node b");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("cannot speak as node {b}")),
        "{status:?}"
    );

    // The cluster serves on.
    let channel = tls_channel(&cluster.addrs[&leader], &ca.cert, None)
        .await
        .expect("TLS connect");
    grant(
        &mut pb::leases_client::LeasesClient::new(channel),
        10_000,
        "after",
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_rotated_on_disk_are_used_for_new_connections() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let old = TestCa::new(dir.path(), "");
    let new = TestCa::new(dir.path(), "new-");
    let cluster = tls_cluster(&old).await;
    let leader = cluster.leader().await;
    // A client that trusts only the new CA cannot connect yet.
    assert!(
        tls_channel(&cluster.addrs[&leader], &new.cert, None)
            .await
            .is_err()
    );
    // Rotate every node to the new CA: the CA file trusts both while the
    // nodes move, each node's certificate is re-issued by the new CA.
    let both = format!(
        "{}{}",
        String::from_utf8(pem(&old.cert)).expect("utf-8"),
        String::from_utf8(pem(&new.cert)).expect("utf-8")
    );
    for (id, files) in &cluster.certs {
        let fresh = new.node(*id, "-new");
        std::fs::write(&files.cert, pem(&fresh.cert)).expect("rotate cert");
        std::fs::write(&files.key, pem(&fresh.key)).expect("rotate key");
    }
    std::fs::write(&old.cert, both).expect("rotate CA");
    // Nodes notice changed files by themselves (every 2 s).
    let addr = cluster.addrs[&leader].clone();
    let new_ca = new.cert.clone();
    eventually(Duration::from_secs(15), || {
        let (addr, new_ca) = (addr.clone(), new_ca.clone());
        async move {
            let channel = tls_channel(&addr, &new_ca, None).await.ok()?;
            pb::admin_client::AdminClient::new(channel)
                .status(pb::StatusRequest {})
                .await
                .ok()
        }
    })
    .await;
    // Peers reconnect with the new certificates too: the cluster still
    // commits writes (through a new connection from every node's side,
    // once their old connections are gone), and clients keep working.
    let channel = tls_channel(&cluster.addrs[&leader], &new.cert, None)
        .await
        .expect("TLS connect");
    let mut leases = pb::leases_client::LeasesClient::new(channel);
    for i in 0..5 {
        grant(&mut leases, 10_000, &format!("rotated{i}")).await;
    }
    // A reload of broken files keeps the working certificates.
    std::fs::write(&cluster.certs[&leader].key, "not a key").expect("break the key");
    let handle = &cluster.nodes[&leader];
    assert!(handle.reload_tls().is_err());
    grant(&mut leases, 10_000, "still").await;
    assert!(
        tls_channel(&cluster.addrs[&leader], &new.cert, None)
            .await
            .is_ok(),
        "a failed reload dropped the working certificates"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_certificate_that_names_another_node_is_refused_at_start() {
    init_tracing();
    let dir = tempfile::TempDir::new().expect("tempdir");
    let ca = TestCa::new(dir.path(), "");
    let wrong = ca.node(2, "");
    let mut c = NodeConfig::new(1, dir.path().join("data"), "127.0.0.1:0");
    c.tls = Some(TlsFiles {
        cert: wrong.cert,
        key: wrong.key,
        ca: ca.cert.clone(),
    });
    let error = Node::start(c).await.err().expect("refused");
    let text = error.to_string();
    assert!(text.contains("node-1") && text.contains("node-2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_hints_name_client_addresses_not_peer_addresses() {
    let cluster = Cluster::start(3).await;
    let follower = cluster.follower().await;
    let leader = cluster.leader().await;
    let mut locks = cluster.locks(follower).await;
    // A lease unknown to the cluster: the follower forwards, the leader
    // refuses; the reply still names the leader's client address.
    let mut leases = cluster.leases(follower).await;
    let lease = grant(&mut leases, 10_000, "hint").await;
    let reply = locks
        .acquire(acquire_req(lease, "hint/x", 0))
        .await
        .expect("acquire");
    let named = reply
        .metadata()
        .get("raftlock-leader-addr")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(named.as_deref(), Some(cluster.addrs[&leader].as_str()));
    assert_ne!(named.as_deref(), Some(cluster.peer_addrs[&leader].as_str()));
    cluster.shutdown().await;
}
