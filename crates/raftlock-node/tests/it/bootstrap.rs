//! When a node whose store is new, started with initial members
//! (`--peers`), makes the cluster: only once every other member answered
//! and none belongs to a cluster (by default), with a majority
//! (`InitialClusterState::New`), or never (`Existing`). A member that does
//! not answer may belong to a cluster (one forced with
//! `--force-new-cluster`, or running while this node's data was wiped), so
//! silence never counts as "no cluster".

use std::collections::BTreeMap;
use std::time::Duration;

use raftlock_node::{InitialClusterState, Node, NodeConfig, NodeHandle, ProtocolRange};
use raftlock_proto::v1 as pb;
use raftlock_testkit::cluster::{fast_timing, init_tracing};
use raftlock_testkit::ports::bind_nodes;
use raftlock_testkit::proxy::{LinkMode, Proxy};
use raftlock_testkit::wait::eventually;
use tokio::net::TcpListener;

/// Longer than the grace a member other than the lowest waits before it
/// asks (4 × fast_timing's 600 ms election timeout), plus several rounds
/// of questions.
const NO_BOOTSTRAP_FOR: Duration = Duration::from_secs(4);

/// Node `id` of the cluster `members` (peer addresses), listening on
/// `listener` for clients and `peer_listener` for peers.
async fn start(
    id: u64,
    dir: &std::path::Path,
    members: &BTreeMap<u64, String>,
    state: InitialClusterState,
    listeners: (TcpListener, TcpListener),
) -> NodeHandle {
    start_speaking(id, dir, members, state, listeners, ProtocolRange::default()).await
}

/// [`start`] posing as a release that speaks peer protocol `protocol`.
async fn start_speaking(
    id: u64,
    dir: &std::path::Path,
    members: &BTreeMap<u64, String>,
    state: InitialClusterState,
    (listener, peer_listener): (TcpListener, TcpListener),
    protocol: ProtocolRange,
) -> NodeHandle {
    let addr = listener.local_addr().expect("addr").to_string();
    let mut c = NodeConfig::new(id, dir, addr);
    c.peer_listen = peer_listener.local_addr().expect("addr").to_string();
    c.initial_members = members.clone();
    c.initial_cluster_state = state;
    c.peer_protocol = protocol;
    c.raft = fast_timing();
    c.write_timeout = Duration::from_secs(5);
    Node::start_on(c, listener, peer_listener)
        .await
        .expect("node starts")
}

async fn initialized(node: &NodeHandle) -> bool {
    node.raft().is_initialized().await.expect("raft answers")
}

/// Asserts, for `for_` (polling), that none of `nodes` made or joined a
/// cluster: no membership, no leader, no cluster id.
async fn assert_no_cluster(nodes: &BTreeMap<u64, NodeHandle>, for_: Duration, why: &str) {
    let until = tokio::time::Instant::now() + for_;
    while tokio::time::Instant::now() < until {
        for (id, node) in nodes {
            assert!(
                !initialized(node).await,
                "node {id} bootstrapped or joined a cluster: {why}"
            );
            assert_eq!(
                node.raft().metrics().borrow().current_leader,
                None,
                "node {id}: {why}"
            );
            assert!(node.cluster_id().is_empty(), "node {id}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader, once every node of `nodes` names the same one.
async fn agreed_leader(nodes: &BTreeMap<u64, NodeHandle>) -> u64 {
    crate::cluster::agreed_leader(nodes).await
}

/// Listener pairs (client, peer) for nodes 1..=n and their peer addresses.
async fn bind(
    n: u64,
) -> (
    BTreeMap<u64, (TcpListener, TcpListener)>,
    BTreeMap<u64, String>,
) {
    let (listeners, _) = bind_nodes(n).await;
    let (peer_listeners, peer_addrs) = bind_nodes(n).await;
    let pairs = listeners
        .into_iter()
        .zip(peer_listeners.into_values())
        .map(|((id, l), p)| (id, (l, p)))
        .collect();
    (pairs, peer_addrs)
}

async fn shutdown(nodes: BTreeMap<u64, NodeHandle>) {
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

/// Node 3 is bound but does not answer yet (a slow start): nodes 1 and 2,
/// although they hear each other, do not make the cluster of {1, 2, 3}.
/// Once node 3 answers, the three make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_node_does_not_bootstrap_while_a_peer_does_not_answer_and_does_once_all_answer() {
    init_tracing();
    let (mut pairs, members) = bind(3).await;
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::TempDir::new().expect("tempdir"))
        .collect();
    let mut nodes = BTreeMap::new();
    for id in [1u64, 2] {
        let pair = pairs.remove(&id).expect("listeners");
        let dir = dirs[id as usize - 1].path();
        nodes.insert(
            id,
            start(id, dir, &members, InitialClusterState::Auto, pair).await,
        );
    }
    assert_no_cluster(&nodes, NO_BOOTSTRAP_FOR, "node 3 never answered").await;

    let pair = pairs.remove(&3).expect("listeners");
    nodes.insert(
        3,
        start(3, dirs[2].path(), &members, InitialClusterState::Auto, pair).await,
    );
    let leader = agreed_leader(&nodes).await;
    let voters: Vec<u64> = nodes[&leader]
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, [1, 2, 3]);
    shutdown(nodes).await;
}

/// The essence of a cluster recovered with `--force-new-cluster` on node 1
/// (a new cluster id, node 1 its only member) whose nodes 2 and 3 come back
/// with wiped stores and the old `--peers`: while node 1 is unreachable,
/// they hear only each other ("no cluster") and must not make a second
/// cluster of {1, 2, 3}, whose tokens would restart below the ones node
/// 1's cluster issued. Once node 1 answers, naming its cluster, they never
/// bootstrap: they wait, and node 1's cluster can add them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_wiped_nodes_never_form_a_second_cluster_while_the_forced_node_is_unreachable() {
    init_tracing();
    let (mut pairs, mut members) = bind(3).await;
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::TempDir::new().expect("tempdir"))
        .collect();
    // Node 1: the only member of its cluster, which has an id.
    let pair = pairs.remove(&1).expect("listeners");
    let addr1 = pair.0.local_addr().expect("addr").to_string();
    let alone = BTreeMap::from([(1, members[&1].clone())]);
    let node1 = start(1, dirs[0].path(), &alone, InitialClusterState::Auto, pair).await;
    let cluster = eventually(Duration::from_secs(10), || {
        let id = node1.cluster_id();
        async move { (!id.is_empty()).then_some(id) }
    })
    .await;
    // The others reach it through a proxy that refuses every connection
    // for now: node 1 is unreachable.
    let to_1 = Proxy::start(members[&1].parse().expect("a socket address"))
        .await
        .expect("proxy");
    to_1.set(LinkMode::Cut);
    members.insert(1, to_1.addr().to_string());
    let mut wiped = BTreeMap::new();
    for id in [2u64, 3] {
        let pair = pairs.remove(&id).expect("listeners");
        let dir = dirs[id as usize - 1].path();
        wiped.insert(
            id,
            start(id, dir, &members, InitialClusterState::Auto, pair).await,
        );
    }
    assert_no_cluster(&wiped, NO_BOOTSTRAP_FOR, "node 1 was unreachable").await;

    // Node 1 is back: they hear its cluster and wait to be added.
    to_1.set(LinkMode::Pass);
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr1}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let added = pb::admin_client::AdminClient::new(channel)
        .add_learner(pb::AddLearnerRequest {
            id: 2,
            address: members[&2].clone(),
            wait_caught_up: true,
        })
        .await
        .expect("node 1's cluster adds node 2 as a learner")
        .into_inner();
    assert!(added.learners.contains(&2), "{added:?}");
    let joined = eventually(Duration::from_secs(10), || {
        let id = wiped[&2].cluster_id();
        async move { (!id.is_empty()).then_some(id) }
    })
    .await;
    assert_eq!(joined, cluster);
    // Node 3, not added, still has no cluster after a full round of
    // questions (the longest pause between two is 5 s).
    let node3 = BTreeMap::from([(3, wiped.remove(&3).expect("node 3"))]);
    assert_no_cluster(
        &node3,
        Duration::from_secs(6),
        &format!("node 1 has cluster {cluster}"),
    )
    .await;
    node1.shutdown().await;
    shutdown(wiped).await;
    shutdown(node3).await;
}

/// `InitialClusterState::New` (the operator's word that the cluster is
/// new): with node 1 down at the first start (its ports bound, nothing
/// answering), nodes 2 and 3 (a majority of the three) make the cluster and
/// elect a leader between them; node 1, started later with the default,
/// hears the cluster, does not bootstrap, and is replicated to as the
/// member it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initial_cluster_state_new_bootstraps_with_a_majority_while_a_member_is_down() {
    init_tracing();
    let (mut pairs, members) = bind(3).await;
    let down = pairs.remove(&1).expect("listeners");
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::TempDir::new().expect("tempdir"))
        .collect();
    let mut nodes = BTreeMap::new();
    for id in [2u64, 3] {
        let pair = pairs.remove(&id).expect("listeners");
        let dir = dirs[id as usize - 1].path();
        nodes.insert(
            id,
            start(id, dir, &members, InitialClusterState::New, pair).await,
        );
    }
    let leader = agreed_leader(&nodes).await;
    assert!([2, 3].contains(&leader), "{leader}");

    nodes.insert(
        1,
        start(1, dirs[0].path(), &members, InitialClusterState::Auto, down).await,
    );
    agreed_leader(&nodes).await;
    let cluster = nodes[&leader].cluster_id();
    eventually(Duration::from_secs(10), || {
        let id = nodes[&1].cluster_id();
        let cluster = cluster.clone();
        async move { (id == cluster).then_some(()) }
    })
    .await;
    shutdown(nodes).await;
}

/// `InitialClusterState::New` never counts a member refused for its peer
/// protocol version as silent when it names its cluster: node 1 runs a
/// cluster speaking protocol 1 only (a release before 2); nodes 2 and 3,
/// new and speaking protocol 2 only, hear each other (a majority of the
/// three) and node 1's refusal, which names its cluster. They must not
/// make a second cluster of {1, 2, 3}.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initial_cluster_state_new_never_bootstraps_beside_a_cluster_of_another_peer_protocol() {
    init_tracing();
    let (mut pairs, members) = bind(3).await;
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::TempDir::new().expect("tempdir"))
        .collect();
    let only_1 = BTreeMap::from([(1, members[&1].clone())]);
    let pair = pairs.remove(&1).expect("listeners");
    let v1: ProtocolRange = "1".parse().expect("a range");
    let node1 = start_speaking(
        1,
        dirs[0].path(),
        &only_1,
        InitialClusterState::Auto,
        pair,
        v1,
    )
    .await;
    let cluster = eventually(Duration::from_secs(10), || {
        let id = node1.cluster_id();
        async move { (!id.is_empty()).then_some(id) }
    })
    .await;
    let v2: ProtocolRange = "2".parse().expect("a range");
    let mut newer = BTreeMap::new();
    for id in [2u64, 3] {
        let pair = pairs.remove(&id).expect("listeners");
        let dir = dirs[id as usize - 1].path();
        newer.insert(
            id,
            start_speaking(id, dir, &members, InitialClusterState::New, pair, v2).await,
        );
    }
    assert_no_cluster(
        &newer,
        NO_BOOTSTRAP_FOR,
        &format!("node 1 has cluster {cluster}, in another peer protocol version"),
    )
    .await;
    node1.shutdown().await;
    shutdown(newer).await;
}

/// `InitialClusterState::New` still needs a majority: node 3 alone of
/// three (nodes 1 and 2 down) does not bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initial_cluster_state_new_does_not_bootstrap_without_a_majority() {
    init_tracing();
    let (mut pairs, members) = bind(3).await;
    drop(pairs.remove(&1));
    drop(pairs.remove(&2));
    let dir = tempfile::TempDir::new().expect("tempdir");
    let pair = pairs.remove(&3).expect("listeners");
    let node = start(3, dir.path(), &members, InitialClusterState::New, pair).await;
    let nodes = BTreeMap::from([(3, node)]);
    assert_no_cluster(&nodes, NO_BOOTSTRAP_FOR, "one of three is no majority").await;
    shutdown(nodes).await;
}

/// `InitialClusterState::Existing`: a node that is the only member of its
/// `--peers` (which bootstraps at once by default) never bootstraps; a
/// running cluster adds it as a learner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initial_cluster_state_existing_never_bootstraps_and_is_added_as_a_learner() {
    init_tracing();
    let (mut pairs, peers) = bind(2).await;
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::TempDir::new().expect("tempdir"))
        .collect();
    let pair = pairs.remove(&2).expect("listeners");
    let only_2 = BTreeMap::from([(2, peers[&2].clone())]);
    let node2 = start(
        2,
        dirs[1].path(),
        &only_2,
        InitialClusterState::Existing,
        pair,
    )
    .await;
    let waiting = BTreeMap::from([(2, node2)]);
    assert_no_cluster(
        &waiting,
        Duration::from_secs(2),
        "existing never bootstraps",
    )
    .await;

    let pair = pairs.remove(&1).expect("listeners");
    let client_addr = pair.0.local_addr().expect("addr").to_string();
    let only_1 = BTreeMap::from([(1, peers[&1].clone())]);
    let node1 = start(1, dirs[0].path(), &only_1, InitialClusterState::Auto, pair).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{client_addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    // Node 1 bootstraps at once (the only member); its first leadership
    // may take an election timeout.
    let added = eventually(Duration::from_secs(10), || {
        let mut admin = pb::admin_client::AdminClient::new(channel.clone());
        let address = peers[&2].clone();
        async move {
            admin
                .add_learner(pb::AddLearnerRequest {
                    id: 2,
                    address,
                    wait_caught_up: true,
                })
                .await
                .ok()
        }
    })
    .await
    .into_inner();
    assert!(added.learners.contains(&2), "{added:?}");
    let node2 = &waiting[&2];
    eventually(Duration::from_secs(10), || async {
        (node2.raft().metrics().borrow().current_leader == Some(1)).then_some(())
    })
    .await;
    node1.shutdown().await;
    shutdown(waiting).await;
}
