//! Hostile input against a serving 3-node cluster: garbage bytes on raw
//! TCP connections to the port peers use, half-written HTTP/2, idle
//! connections; well-formed calls to the internal service carrying garbage,
//! a wrong CRC, a wrong target, a forged Vote and a forged Forward; an
//! oversized message on the client API and on the peer service. After each,
//! a lock acquire and release through raftlock-client succeeds within a
//! bound. docs/security-hostile.md records what each forged message does.
//!
//! Every loop is bounded in count and time; everything is on 127.0.0.1.

use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, SnapshotMeta, StoredMembership, Vote};
use raftlock_client::Client;
use raftlock_core::{Applied, Command};
use raftlock_node::NodeError;
use raftlock_proto::internal::v1::RaftMessage;
use raftlock_proto::internal::v1::raft_transport_client::RaftTransportClient;
use raftlock_proto::v1 as pb;
use raftlock_store::{LogId, NodeId, TypeConfig};
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::rng::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::Channel;

/// How long the cluster may take to serve again after an attack (a forged
/// vote can cost two elections).
const RECOVERY: Duration = Duration::from_secs(15);

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];

/// Where node `id` serves `raftlock.internal.v1` (its one port today; its
/// peer port once the internal service moves there).
fn peer_addr(cluster: &Cluster, id: u64) -> String {
    cluster.peer_listen[&id].clone()
}

async fn transport(addr: &str) -> RaftTransportClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the peer service");
    RaftTransportClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn message(data: Vec<u8>, target_id: u64) -> RaftMessage {
    RaftMessage {
        crc32: crc32fast::hash(&data),
        data,
        target_id,
        ..RaftMessage::default()
    }
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// A lock acquired and released through the product's client, within
/// [`RECOVERY`] (attempts repeated while the cluster elects a leader);
/// panics naming `after` otherwise.
async fn assert_serving(client: &Client, name: &str, after: &str) {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let guard = client.lock(name).acquire().await?;
            let token = guard.token();
            guard.release().await?;
            Ok::<u64, raftlock_client::Error>(token)
        })
        .await;
        let failure = match attempt {
            Ok(Ok(token)) => {
                assert!(token > 0);
                break;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5 s".to_string(),
        };
        assert!(
            started.elapsed() < RECOVERY,
            "after {after}: no acquire/release within {RECOVERY:?} ({attempts} attempts; last: {failure})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "after {after}: acquire + release in {:?} ({attempts} attempts)",
        started.elapsed()
    );
}

/// Whether the server closed `stream` (EOF or reset) within `within`,
/// reading and dropping whatever it sent first (a GOAWAY).
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Opens a connection to `addr` and writes `bytes` (a write the server
/// refuses midway is fine: it closed the connection).
async fn send(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("the node accepts connections");
    let _ = stream.write_all(bytes).await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_the_peer_port_leaves_the_cluster_serving() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    assert_serving(&client, "hostile/tcp", "start").await;
    let leader = cluster.leader().await;
    let addr = peer_addr(&cluster, leader);
    let mut rng = Rng::new(0x15_09);

    // Random bytes, half the connections closed at once.
    let mut random = Vec::new();
    for i in 0..16 {
        let len = rng.range(1, 8 * 1024) as usize;
        let stream = send(&addr, &random_bytes(&mut rng, len)).await;
        if i % 2 == 1 {
            random.push(stream);
        }
    }
    // The preface, then garbage.
    let mut after_preface = Vec::new();
    for _ in 0..4 {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(random_bytes(&mut rng, 64));
        after_preface.push(send(&addr, &bytes).await);
    }
    // The preface and SETTINGS, then a DATA frame header claiming the
    // largest length a frame can have (2^24 - 1), half written.
    let mut huge_frame = Vec::new();
    for _ in 0..4 {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(SETTINGS);
        bytes.extend([0xff, 0xff, 0xff, 0x0, 0x0, 0, 0, 0, 1]);
        bytes.extend(random_bytes(&mut rng, 100));
        huge_frame.push(send(&addr, &bytes).await);
    }
    // A valid start of a request: HEADERS claiming 16 KiB, 10 bytes sent.
    let mut half_headers = Vec::new();
    for _ in 0..4 {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(SETTINGS);
        bytes.extend([0x00, 0x40, 0x00, 0x1, 0x4, 0, 0, 0, 1]);
        bytes.extend(random_bytes(&mut rng, 10));
        half_headers.push(send(&addr, &bytes).await);
    }
    // Connections that never say anything.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(send(&addr, &[]).await);
    }

    // All of it still open (as far as this side knows): the cluster and
    // the attacked node serve.
    assert_serving(&client, "hostile/tcp", "garbage connections (open)").await;
    let status = Client::status_of(&cluster.addrs[&leader], Duration::from_secs(5))
        .await
        .expect("the attacked node answers");
    assert_eq!(status.node_id, leader);

    // What the node did with each kind of connection.
    let mut report = Vec::new();
    for (kind, streams) in [
        ("random bytes", &mut random),
        ("preface + garbage", &mut after_preface),
        ("huge frame header", &mut huge_frame),
        ("half-written HEADERS", &mut half_headers),
        ("idle", &mut idle),
    ] {
        // Up to 8 of each kind, 300 ms each.
        let mut closed = 0;
        let sample = streams.len().min(8);
        for s in streams.iter_mut().take(sample) {
            closed += usize::from(closed_by_server(s, Duration::from_millis(300)).await);
        }
        report.push((kind, closed, sample));
    }
    eprintln!("connections closed by the node (closed, of those checked): {report:?}");
    for (kind, closed, of) in &report {
        if matches!(*kind, "random bytes" | "preface + garbage") {
            assert_eq!(
                closed, of,
                "the node closes connections speaking garbage: {kind}"
            );
        }
    }
    drop((random, after_preface, huge_frame, half_headers, idle));
    assert_serving(&client, "hostile/tcp", "garbage connections (closed)").await;
    cluster.shutdown().await;
}

/// Node `id`'s count of refused peer messages, from its metrics.
fn refused(cluster: &Cluster, id: u64) -> u64 {
    let text = cluster.nodes[&id].as_ref().expect("running").metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix("raftlock_peer_messages_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the refusal counter")
}

/// The status of a call to the peer service, or its answer.
type Outcome = Result<RaftMessage, tonic::Status>;

fn code(outcome: &Outcome) -> Option<Code> {
    outcome.as_ref().err().map(tonic::Status::code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_peer_messages_are_refused_or_survived() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    assert_serving(&client, "hostile/forged", "start").await;
    let leader = cluster.leader().await;
    let mut peer = transport(&peer_addr(&cluster, leader)).await;
    let mut rng = Rng::new(0x15_0a);

    // Garbage data behind a right CRC: the Raft RPCs refuse it as
    // INVALID_ARGUMENT; Forward and KeepAlive answer with the error inside.
    for round in 0..20 {
        let len = rng.range(0, 4096) as usize;
        let data = random_bytes(&mut rng, len);
        let m = || message(data.clone(), leader);
        let outcomes = [
            (
                "AppendEntries",
                peer.append_entries(m()).await.map(|r| r.into_inner()),
            ),
            ("Vote", peer.vote(m()).await.map(|r| r.into_inner())),
            (
                "InstallSnapshot",
                peer.install_snapshot(m()).await.map(|r| r.into_inner()),
            ),
        ];
        for (method, outcome) in &outcomes {
            // A short random payload can decode by chance: then it is a
            // Raft message Raft answers (and refuses on its terms).
            if len > 64 {
                assert_eq!(
                    code(outcome),
                    Some(Code::InvalidArgument),
                    "{method} round {round}"
                );
            }
        }
        let forwarded = peer
            .forward(message(data.clone(), 0))
            .await
            .expect("answered");
        let answer: Result<Applied, NodeError> =
            raftlock_core::decode("forward answer", &forwarded.into_inner().data)
                .expect("an answer");
        if len > 64 {
            assert!(
                matches!(&answer, Err(e) if e.to_string().contains("command")),
                "{answer:?}"
            );
        }
        let kept = peer.keep_alive(message(data, 0)).await.expect("answered");
        let _: Result<u64, NodeError> =
            raftlock_core::decode("keep-alive answer", &kept.into_inner().data).expect("an answer");
    }
    assert_serving(&client, "hostile/forged", "garbage payloads").await;

    // A wrong CRC: INVALID_ARGUMENT naming the checksum, on every call
    // that reads its payload.
    let refused_before = refused(&cluster, leader);
    let mut bad = message(raftlock_core::encode(&Command::Tick), leader);
    bad.crc32 ^= 0xdead;
    for (method, outcome) in [
        (
            "AppendEntries",
            peer.append_entries(bad.clone())
                .await
                .map(|r| r.into_inner()),
        ),
        ("Vote", peer.vote(bad.clone()).await.map(|r| r.into_inner())),
        (
            "InstallSnapshot",
            peer.install_snapshot(bad.clone())
                .await
                .map(|r| r.into_inner()),
        ),
    ] {
        let status = outcome.expect_err(method);
        assert_eq!(status.code(), Code::InvalidArgument, "{method}");
        assert!(
            status.message().contains("checksum"),
            "{method}: {status:?}"
        );
    }
    let forwarded = peer
        .forward(bad.clone())
        .await
        .expect("answered")
        .into_inner();
    let answer: Result<Applied, NodeError> =
        raftlock_core::decode("forward answer", &forwarded.data).expect("an answer");
    assert!(
        matches!(&answer, Err(e) if e.to_string().contains("checksum")),
        "{answer:?}"
    );

    // Mis-addressed: FAILED_PRECONDITION, never handed to Raft.
    let term = cluster.nodes[&leader]
        .as_ref()
        .expect("leader running")
        .raft()
        .metrics()
        .borrow()
        .current_term;
    let vote = VoteRequest::new(Vote::<NodeId>::new(term + 1_000, 2), None);
    let misaddressed = message(raftlock_core::encode(&vote), 99);
    for (method, outcome) in [
        (
            "AppendEntries",
            peer.append_entries(misaddressed.clone())
                .await
                .map(|r| r.into_inner()),
        ),
        (
            "Vote",
            peer.vote(misaddressed.clone())
                .await
                .map(|r| r.into_inner()),
        ),
        (
            "InstallSnapshot",
            peer.install_snapshot(misaddressed.clone())
                .await
                .map(|r| r.into_inner()),
        ),
    ] {
        assert_eq!(
            code(&outcome),
            Some(Code::FailedPrecondition),
            "{method}: {outcome:?}"
        );
    }
    // 4 checksums and 3 targets, counted (and logged) as refused.
    let counted = refused(&cluster, leader) - refused_before;
    assert!(counted >= 7, "{counted} refusals counted");
    assert_serving(&client, "hostile/forged", "wrong CRC and target").await;

    // A forged Vote: a huge term, a candidate that is no member, the
    // longest log there could be, sent as node 2 (from_id) to the leader
    // and to a follower.
    let follower = cluster.follower().await;
    for target in [follower, leader] {
        let term = cluster.nodes[&target]
            .as_ref()
            .expect("running")
            .raft()
            .metrics()
            .borrow()
            .current_term;
        let forged = VoteRequest::new(
            Vote::<NodeId>::new(term + 1_000, 99),
            Some(LogId::new(
                CommittedLeaderId::new(term + 1_000, 99),
                u64::MAX / 2,
            )),
        );
        let mut m = message(raftlock_core::encode(&forged), target);
        // Stamped as node 2 stamps its own (its cluster and store, once
        // the leader recorded them), so that the identity check lets it
        // through and Raft itself must refuse it. (Unstamped, it was
        // refused as a wiped node 2 or not, by whether the record had
        // landed yet.)
        let handle = cluster.nodes[&target].as_ref().expect("running");
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = loop {
            let recorded = handle
                .api()
                .read(true, |s| {
                    s.cluster().members.get(&2).map(|r| r.store_id.clone())
                })
                .await
                .ok()
                .and_then(|(store, _)| store);
            match recorded {
                Some(store) if !handle.cluster_id().is_empty() => break store,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => panic!("node 2 was never recorded"),
            }
        };
        m.from_id = 2;
        m.store_id = store;
        m.cluster_id = handle.cluster_id();
        let mut to = transport(&peer_addr(&cluster, target)).await;
        let answer = to.vote(m).await.expect("a vote answer").into_inner();
        let answer: Result<VoteResponse<NodeId>, openraft::error::RaftError<NodeId>> =
            raftlock_core::decode("vote answer", &answer.data).expect("decodes");
        let role = if target == leader {
            "leader"
        } else {
            "follower"
        };
        eprintln!(
            "forged vote (term {} + 1000) to the {role}: {answer:?}",
            term
        );
        assert_serving(
            &client,
            "hostile/forged",
            &format!("a forged vote to the {role}"),
        )
        .await;
    }
    let terms: Vec<u64> = cluster
        .nodes
        .values()
        .flatten()
        .map(|n| n.raft().metrics().borrow().current_term)
        .collect();
    eprintln!("terms after the forged votes: {terms:?} (were {term})");

    // A forged heartbeat: AppendEntries with no entries from a "leader" 99
    // whose vote is committed in a much higher term, to a follower.
    let follower = cluster.follower().await;
    let term = terms.iter().copied().max().unwrap_or(term);
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term + 1_000, 99),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let mut m = message(raftlock_core::encode(&heartbeat), follower);
    m.from_id = 99;
    let mut to = transport(&peer_addr(&cluster, follower)).await;
    let answer = to.append_entries(m).await.expect("an answer").into_inner();
    let answer: Result<AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>> =
        raftlock_core::decode("append entries answer", &answer.data).expect("decodes");
    eprintln!("forged heartbeat (term {term} + 1000, leader 99) to a follower: {answer:?}");
    assert_serving(&client, "hostile/forged", "a forged heartbeat").await;
    let terms: Vec<u64> = cluster
        .nodes
        .values()
        .flatten()
        .map(|n| n.raft().metrics().borrow().current_term)
        .collect();
    eprintln!(
        "terms after the forged heartbeat: {terms:?}; leader {:?}",
        cluster.leader().await
    );

    // A forged Forward of the leader-only ExpireLeases, naming a lease a
    // client holds a lock with.
    let guard = client
        .lock("hostile/victim")
        .acquire()
        .await
        .expect("acquire");
    let lease = guard.session().lease_id();
    let leader = cluster.leader().await;
    let mut peer = transport(&peer_addr(&cluster, leader)).await;
    let expire = Command::ExpireLeases {
        leases: vec![lease],
    };
    let answer = peer
        .forward(message(raftlock_core::encode(&expire), 0))
        .await
        .expect("answered")
        .into_inner();
    let answer: Result<Applied, NodeError> =
        raftlock_core::decode("forward answer", &answer.data).expect("decodes");
    eprintln!("forged Forward(ExpireLeases [{lease}]): {answer:?}");
    let held = client.inspect("hostile/victim").await.expect("inspect");
    eprintln!("the victim's lock after it: {held:?}");
    drop(guard);
    // That client's cached session is the lease that was ended; a new
    // client stands for everyone else.
    let other = cluster.client().await;
    assert_serving(&other, "hostile/forged", "a forged Forward").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_snapshot_chunks_are_refused_and_the_node_keeps_serving() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    assert_serving(&client, "hostile/snapshot", "start").await;
    let follower = cluster.follower().await;
    let raft = cluster.nodes[&follower]
        .as_ref()
        .expect("running")
        .raft()
        .clone();
    let (vote, membership, term) = {
        let m = raft.metrics().borrow().clone();
        (m.vote, m.membership_config.clone(), m.current_term)
    };
    let mut peer = transport(&peer_addr(&cluster, follower)).await;
    let far = LogId::new(CommittedLeaderId::new(term, 99), 1 << 40);
    let chunk = |offset: u64, data: Vec<u8>, done: bool| {
        let request = InstallSnapshotRequest::<TypeConfig> {
            vote,
            meta: SnapshotMeta {
                last_log_id: Some(far),
                last_membership: StoredMembership::new(Some(far), membership.membership().clone()),
                snapshot_id: "forged".into(),
            },
            offset,
            data,
            done,
        };
        message(raftlock_core::encode(&request), follower)
    };
    // Boxed: openraft's error is large.
    type Answer =
        Box<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>>;
    let decode = |m: RaftMessage| -> Answer {
        Box::new(raftlock_core::decode("install snapshot answer", &m.data).expect("decodes"))
    };

    // A first chunk, then one a terabyte further on: openraft's receiver
    // would have grown its buffer to the offset (and aborted the process).
    let first = peer.install_snapshot(chunk(0, vec![1, 2, 3], false)).await;
    assert!(decode(first.expect("answered").into_inner()).is_ok());
    let far_chunk = peer.install_snapshot(chunk(1 << 40, vec![4], false)).await;
    let far_chunk = decode(far_chunk.expect("answered").into_inner());
    eprintln!("a chunk at offset 2^40: {far_chunk:?}");
    assert!(
        matches!(
            *far_chunk,
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
                _
            )))
        ),
        "{far_chunk:?}"
    );
    // The last chunk of garbage: refused, never handed to the state
    // machine (whose error would stop Raft on this node).
    let last = peer
        .install_snapshot(chunk(3, b"not a snapshot".to_vec(), true))
        .await
        .expect_err("a damaged snapshot is refused");
    eprintln!("the last chunk of a damaged snapshot: {last:?}");
    assert_eq!(last.code(), Code::InvalidArgument);
    assert!(last.message().contains("forged"), "{last:?}");

    assert_serving(&client, "hostile/snapshot", "forged snapshot chunks").await;
    // The follower's Raft runs and keeps applying.
    let leader = cluster.leader().await;
    let target = cluster.nodes[&leader]
        .as_ref()
        .expect("running")
        .raft()
        .metrics()
        .borrow()
        .last_applied;
    raftlock_testkit::wait::eventually(RECOVERY, || {
        let m = raft.metrics().borrow().clone();
        async move { (m.running_state.is_ok() && m.last_applied >= target).then_some(()) }
    })
    .await;
    cluster.shutdown().await;
}

/// The client API's message limit in the oversized test.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_messages_are_refused_and_the_connection_stays_usable() {
    let cluster = Cluster::start_with(3, |c| c.max_message_bytes = MAX_MESSAGE_BYTES).await;
    let client = cluster.client().await;
    let leader = cluster.leader().await;
    let max = MAX_MESSAGE_BYTES;

    // The client API: a grant whose owner alone is over the node's
    // max_message_bytes, on a channel then used again.
    let channel = cluster.channel(leader).await;
    let mut leases =
        pb::leases_client::LeasesClient::new(channel.clone()).max_encoding_message_size(usize::MAX);
    let huge = pb::GrantLeaseRequest {
        ttl_ms: 10_000,
        owner: "o".repeat(max + 1),
    };
    let status = leases.grant(huge).await.expect_err("too large");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    eprintln!(
        "oversized client call: {:?}: {}",
        status.code(),
        status.message()
    );
    let small = pb::GrantLeaseRequest {
        ttl_ms: 10_000,
        owner: "after".into(),
    };
    leases
        .grant(small)
        .await
        .expect("the same channel serves the next call");

    // The peer service: over its 64 MiB limit.
    let mut peer = transport(&peer_addr(&cluster, leader)).await;
    let status = peer
        .append_entries(message(vec![0; 64 * 1024 * 1024 + 1], leader))
        .await
        .expect_err("too large");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    eprintln!(
        "oversized peer call: {:?}: {}",
        status.code(),
        status.message()
    );
    // Large but allowed garbage: refused by the decoder, quickly.
    let started = Instant::now();
    let status = peer
        .append_entries(message(vec![0xfd; 8 * 1024 * 1024], leader))
        .await
        .expect_err("garbage");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_serving(&client, "hostile/oversized", "oversized messages").await;
    cluster.shutdown().await;
}
