//! A real 3-node openraft cluster over the tonic transport on 127.0.0.1,
//! each node with its own sled store: election, replication, leader
//! failover and restart, and snapshot installation over InstallSnapshot.

use super::identity::Caller;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::{BasicNode, Config, SnapshotPolicy};
use raftlock_core::{Command, Request, State};
use raftlock_proto::internal::v1::RaftMessage;
use raftlock_proto::internal::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
use raftlock_store::{Closed, NodeId, StateHandle, StoreOptions, TypeConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Response, Status};

use super::client::{Method, Network, NetworkOptions, is_transport_failure};
use super::server::RaftRpcs;
use super::wire::pack1;
use crate::Raft;

/// Upper bound for every wait in these tests (elections, replication,
/// snapshot transfer). Generous: the tests share 2 cores with each other.
const WAIT: Duration = Duration::from_secs(20);

/// The service the node will serve, reduced to the three Raft RPCs.
struct TestTransport {
    rpcs: RaftRpcs,
    snapshot_chunks: Arc<AtomicU64>,
    /// AppendEntriesStream calls accepted.
    streams_opened: Arc<AtomicU64>,
    /// Answer AppendEntriesStream with UNIMPLEMENTED, as a build without it.
    unary_only: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl RaftTransport for TestTransport {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.rpcs
            .append_entries(Caller::Unverified, request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendEntriesStreamStream = super::server::AnswerStream;

    async fn append_entries_stream(
        &self,
        request: tonic::Request<tonic::Streaming<RaftMessage>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        if self.unary_only.load(Ordering::Relaxed) {
            return Err(Status::unimplemented("not in this build"));
        }
        self.streams_opened.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(self.rpcs.append_entries_stream(
            Caller::Unverified,
            request.into_inner(),
            None,
        )))
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.rpcs
            .vote(Caller::Unverified, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.snapshot_chunks.fetch_add(1, Ordering::Relaxed);
        self.rpcs
            .install_snapshot(Caller::Unverified, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn forward(
        &self,
        _request: tonic::Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn read_index(
        &self,
        _request: tonic::Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn keep_alive(
        &self,
        _request: tonic::Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn hello(
        &self,
        request: tonic::Request<raftlock_proto::internal::v1::HelloRequest>,
    ) -> Result<Response<raftlock_proto::internal::v1::HelloResponse>, Status> {
        Ok(Response::new(raftlock_proto::internal::v1::HelloResponse {
            node_id: request.get_ref().target_id,
            ..Default::default()
        }))
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn config(snapshot_every: Option<u64>) -> Arc<Config> {
    let mut config = Config {
        cluster_name: "raftlock-test".to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    if let Some(every) = snapshot_every {
        config.snapshot_policy = SnapshotPolicy::LogsSinceLast(every);
        config.max_in_snapshot_log_to_keep = 0;
    }
    Arc::new(config.validate().expect("valid config"))
}

struct Node {
    id: NodeId,
    addr: SocketAddr,
    raft: Raft,
    state: StateHandle,
    closed: Closed,
    snapshot_chunks: Arc<AtomicU64>,
    streams_opened: Arc<AtomicU64>,
    unary_only: Arc<AtomicBool>,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Node {
    async fn start(id: NodeId, dir: &Path, listener: TcpListener, config: Arc<Config>) -> Node {
        let addr = listener.local_addr().expect("local addr");
        let (log_store, state_machine) =
            raftlock_store::open(dir, StoreOptions::default()).expect("open store");
        let state = state_machine.handle();
        let closed = state_machine.closed();
        let network = Network::new(id, NetworkOptions::default());
        let raft = Raft::new(id, config, network, log_store, state_machine)
            .await
            .expect("start raft");
        let snapshot_chunks = Arc::new(AtomicU64::new(0));
        let streams_opened = Arc::new(AtomicU64::new(0));
        let unary_only = Arc::new(AtomicBool::new(false));
        let service = RaftTransportServer::new(TestTransport {
            rpcs: RaftRpcs::new(raft.clone(), id),
            snapshot_chunks: Arc::clone(&snapshot_chunks),
            streams_opened: Arc::clone(&streams_opened),
            unary_only: Arc::clone(&unary_only),
        })
        .max_decoding_message_size(NetworkOptions::default().max_message_bytes);
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "test server failed");
            }
        });
        Node {
            id,
            addr,
            raft,
            state,
            closed,
            snapshot_chunks,
            streams_opened,
            unary_only,
            stop_server,
            server,
        }
    }

    fn basic_node(&self) -> BasicNode {
        BasicNode::new(self.addr.to_string())
    }

    /// Stops Raft, then the server (gracefully, so peers' open connections
    /// are closed and not served by a stopped Raft), then waits until the
    /// store is closed so its directory can be opened again.
    async fn stop(self) {
        let Node {
            raft,
            closed,
            stop_server,
            mut server,
            ..
        } = self;
        tokio::time::timeout(WAIT, raft.shutdown())
            .await
            .expect("raft shuts down in time")
            .expect("raft core task ends cleanly");
        let _ = stop_server.send(());
        if tokio::time::timeout(WAIT, &mut server).await.is_err() {
            server.abort();
        }
        drop(raft);
        tokio::time::timeout(WAIT, closed.wait())
            .await
            .expect("store closes after shutdown");
    }
}

async fn bind_any() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Binds `addr` again after its node stopped; the port may take a moment
/// to be free.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%addr, error = %e, "port not free yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts nodes 1..=n in their own directories and initializes them as one
/// cluster.
async fn start_cluster(
    n: u64,
    config: &Arc<Config>,
) -> (Vec<tempfile::TempDir>, Vec<Option<Node>>) {
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for id in 1..=n {
        let dir = tempfile::tempdir().expect("tempdir");
        nodes.push(Some(
            Node::start(id, dir.path(), bind_any().await, Arc::clone(config)).await,
        ));
        dirs.push(dir);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes
        .iter()
        .flatten()
        .map(|node| (node.id, node.basic_node()))
        .collect();
    nodes[0]
        .as_ref()
        .expect("node 1")
        .raft
        .initialize(members)
        .await
        .expect("initialize");
    (dirs, nodes)
}

/// The running node all running nodes agree is the leader.
async fn leader(nodes: &[Option<Node>]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let running: Vec<(usize, &Node)> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
            .collect();
        let leaders: Vec<Option<NodeId>> = running
            .iter()
            .map(|(_, n)| n.raft.metrics().borrow().current_leader)
            .collect();
        if let Some(Some(id)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*id))
            && let Some((i, _)) = running.iter().find(|(_, n)| n.id == *id)
        {
            return *i;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Grants a lease through the current leader (retrying across leader
/// changes) and returns its id.
async fn grant_lease(nodes: &[Option<Node>], owner: &str, clock_ms: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let i = leader(nodes).await;
        let raft = &nodes[i].as_ref().expect("leader runs").raft;
        let request = Request::new(
            clock_ms,
            clock_ms,
            Command::GrantLease {
                ttl_ms: 5_000,
                owner: owner.to_string(),
                identity: String::new(),
                quota: Default::default(),
            },
        );
        match tokio::time::timeout(WAIT, raft.client_write(request)).await {
            Ok(Ok(response)) => {
                assert!(
                    response.data.result.is_ok(),
                    "grant refused: {:?}",
                    response.data
                );
                return response.log_id.index;
            }
            Ok(Err(e)) => tracing::info!(error = %e, "write failed, retrying"),
            Err(_) => tracing::info!("write timed out, retrying"),
        }
        assert!(Instant::now() < deadline, "no write succeeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has_lease(node: &Node, lease: u64) -> bool {
    node.state.read(|s| s.lease(lease).is_some())
}

async fn stop_all(nodes: Vec<Option<Node>>) {
    for node in nodes.into_iter().flatten() {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_the_leader_is_applied_on_every_node() {
    init_tracing();
    let config = config(None);
    let (_dirs, nodes) = start_cluster(3, &config).await;

    let lease = grant_lease(&nodes, "writer", 1).await;

    for node in nodes.iter().flatten() {
        eventually(&format!("node {} applies lease {lease}", node.id), || {
            has_lease(node, lease)
        })
        .await;
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_a_restarted_node_catches_up() {
    init_tracing();
    let config = config(None);
    let (dirs, mut nodes) = start_cluster(3, &config).await;
    let first = grant_lease(&nodes, "before", 1).await;

    let old = leader(&nodes).await;
    let old_node = nodes[old].take().expect("leader runs");
    let (old_id, old_addr) = (old_node.id, old_node.addr);
    let stopped_at = Instant::now();
    old_node.stop().await;

    let new = leader(&nodes).await;
    let new_id = nodes[new].as_ref().expect("new leader").id;
    assert_ne!(new_id, old_id);
    let second = grant_lease(&nodes, "after", 2).await;
    tracing::info!(elapsed = ?stopped_at.elapsed(), "failover write done");

    let restarted = Node::start(
        old_id,
        dirs[old].path(),
        rebind(old_addr).await,
        Arc::clone(&config),
    )
    .await;
    assert!(
        has_lease(&restarted, first),
        "the applied state survives the restart"
    );
    nodes[old] = Some(restarted);

    let back = nodes[old].as_ref().expect("restarted");
    eventually("the restarted node catches up", || has_lease(back, second)).await;
    let leader_state: State = nodes[leader(&nodes).await]
        .as_ref()
        .expect("leader")
        .state
        .read(Clone::clone);
    eventually("the restarted node reaches the leader's state", || {
        back.state.read(|s| *s == leader_state)
    })
    .await;
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_learner_behind_purged_logs_receives_a_snapshot() {
    init_tracing();
    let config = config(Some(50));
    let (_dirs, mut nodes) = start_cluster(3, &config).await;

    let l = leader(&nodes).await;
    let follower = (0..nodes.len()).find(|i| *i != l).expect("a follower");
    nodes[follower].take().expect("follower runs").stop().await;

    let mut last = 0;
    for i in 0..200u64 {
        last = grant_lease(&nodes, &format!("owner-{i}"), i + 1).await;
    }

    let l = leader(&nodes).await;
    let leader_raft = nodes[l].as_ref().expect("leader").raft.clone();
    let mut metrics = leader_raft.metrics();
    let purged = tokio::time::timeout(
        WAIT,
        metrics.wait_for(|m| m.purged.is_some_and(|p| p.index >= 100)),
    )
    .await
    .expect("the leader builds a snapshot and purges its log in time")
    .expect("metrics channel open")
    .purged
    .expect("purged");
    drop(metrics);

    let dir = tempfile::tempdir().expect("tempdir");
    let learner = Node::start(4, dir.path(), bind_any().await, Arc::clone(&config)).await;
    tokio::time::timeout(
        WAIT,
        leader_raft.add_learner(learner.id, learner.basic_node(), true),
    )
    .await
    .expect("add_learner in time")
    .expect("add_learner");

    eventually("the learner applies the last write", || {
        has_lease(&learner, last)
    })
    .await;
    let leader_state: State = nodes[l].as_ref().expect("leader").state.read(Clone::clone);
    eventually("the learner reaches the leader's state", || {
        learner.state.read(|s| *s == leader_state)
    })
    .await;
    assert!(
        learner.snapshot_chunks.load(Ordering::Relaxed) > 0,
        "the learner got InstallSnapshot chunks"
    );
    let snapshot = learner.raft.metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|s| s.index >= purged.index),
        "the learner's snapshot {snapshot:?} covers the purged log up to {purged}"
    );
    nodes.push(Some(learner));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_unreachable() {
    init_tracing();
    let addr = bind_any().await.local_addr().expect("addr");
    // The listener is dropped: nothing listens on `addr` any more.
    let mut network = Network::new(1, NetworkOptions::default());
    let mut client = network
        .new_client(2, &BasicNode::new(addr.to_string()))
        .await;
    let request = VoteRequest::new(openraft::Vote::new(1, 1), None);
    let error = client
        .vote(request.clone(), RPCOption::new(Duration::from_secs(2)))
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
    // Again, on a channel built after the failure evicted the first one.
    let error = client
        .vote(request, RPCOption::new(Duration::from_secs(2)))
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");

    let status = network
        .call(
            0,
            &addr.to_string(),
            Method::Forward,
            pack1(&()),
            Duration::from_secs(2),
        )
        .await
        .expect_err("nothing listens")
        .no_answer();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(is_transport_failure(&status), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_is_a_timeout() {
    init_tracing();
    // Accepts connections but never speaks HTTP/2.
    let listener = bind_any().await;
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut network = Network::new(1, NetworkOptions::default());
    let mut client = network
        .new_client(2, &BasicNode::new(addr.to_string()))
        .await;
    let started = Instant::now();
    let error = client
        .vote(
            VoteRequest::new(openraft::Vote::new(1, 1), None),
            RPCOption::new(Duration::from_millis(200)),
        )
        .await
        .expect_err("no answer");
    assert!(matches!(error, RPCError::Timeout(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_entries_share_one_stream_that_a_failure_replaces() {
    init_tracing();
    let config = config(None);
    let (_dirs, nodes) = start_cluster(1, &config).await;
    let node = nodes[0].as_ref().expect("node");
    let opened = || node.streams_opened.load(Ordering::Relaxed);
    let option = || RPCOption::new(Duration::from_secs(5));
    // From a "leader" of term 0: the node, in a later term, answers with
    // its own vote. Any answer shows the round trip worked.
    let request = || AppendEntriesRequest::<TypeConfig> {
        vote: openraft::Vote::new_committed(0, 9),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let mut network = Network::new(9, NetworkOptions::default());
    let mut client = network.new_client(node.id, &node.basic_node()).await;
    for _ in 0..3 {
        let answer = client
            .append_entries(request(), option())
            .await
            .expect("answered");
        assert!(
            matches!(answer, AppendEntriesResponse::HigherVote(_)),
            "{answer:?}"
        );
    }
    assert_eq!(opened(), 1, "three requests, one stream");

    // A request the peer refuses (meant for another node id) ends its
    // stream; the next request opens a new one. The refusal is
    // "unreachable" to openraft, which backs off: nothing changes until an
    // operator acts.
    let mut misaddressed = network.new_client(node.id + 1, &node.basic_node()).await;
    for _ in 0..2 {
        let error = misaddressed
            .append_entries(request(), option())
            .await
            .expect_err("meant for another node");
        assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
    }
    assert_eq!(opened(), 3);
    // The first client's stream is untouched.
    client
        .append_entries(request(), option())
        .await
        .expect("answered");
    assert_eq!(opened(), 3);

    // A peer without the stream: after its UNIMPLEMENTED the client sends
    // unary AppendEntries.
    node.unary_only.store(true, Ordering::Relaxed);
    let mut fresh = network.new_client(node.id, &node.basic_node()).await;
    let error = fresh
        .append_entries(request(), option())
        .await
        .expect_err("no stream on this peer");
    assert!(matches!(error, RPCError::Network(_)), "{error:?}");
    for _ in 0..2 {
        fresh
            .append_entries(request(), option())
            .await
            .expect("answered as a unary call");
    }
    assert_eq!(opened(), 3);
    // This test server ends a stream only when its Raft has stopped and a
    // request comes: close ours, so the graceful stop need not wait.
    drop((client, misaddressed, fresh));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_messages_share_the_channel_and_see_the_peer_status() {
    init_tracing();
    let config = config(None);
    let (_dirs, nodes) = start_cluster(1, &config).await;
    let node = nodes[0].as_ref().expect("node");
    let network = Network::new(9, NetworkOptions::default());
    let status = network
        .call(
            0,
            &node.addr.to_string(),
            Method::KeepAlive,
            pack1(&crate::peer::forward::KeepAliveForward { lease: 7 }),
            Duration::from_secs(2),
        )
        .await
        .expect_err("the test server does not serve KeepAlive")
        .no_answer();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(!is_transport_failure(&status), "{status:?}");
    // A damaged Raft message is refused by the peer, not misread.
    let mut damaged = pack1(&VoteRequest::new(openraft::Vote::<NodeId>::new(1, 1), None));
    damaged.crc32 ^= 1;
    let status = network
        .call(
            0,
            &node.addr.to_string(),
            Method::Vote,
            damaged,
            Duration::from_secs(2),
        )
        .await
        .expect_err("checksum mismatch")
        .no_answer();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A Raft message meant for another node id is refused.
    let mut misaddressed = pack1(&VoteRequest::new(openraft::Vote::<NodeId>::new(1, 1), None));
    misaddressed.target_id = 5;
    let status = network
        .call(
            0,
            &node.addr.to_string(),
            Method::Vote,
            misaddressed,
            Duration::from_secs(2),
        )
        .await
        .expect_err("wrong target")
        .no_answer();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("node 5"), "{status:?}");
    stop_all(nodes).await;
}
