//! Real 3-node clusters in one process, over gRPC on 127.0.0.1.

use std::time::{Duration, Instant};

use raftlock_proto::v1 as pb;
use raftlock_testkit::cluster::{Cluster, fast_timing, init_tracing};
use raftlock_testkit::grpc::{acquire_req, grant, reason_of};
use raftlock_testkit::ports::bind_nodes;
use raftlock_testkit::proxy::Proxy;
use raftlock_testkit::wait::eventually;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_forwards_writes_and_reads_are_linearizable() {
    let cluster = Cluster::start(3).await;
    let follower = cluster.follower().await;
    let mut leases = cluster.leases(follower).await;
    let mut locks = cluster.locks(follower).await;
    let lease = grant(&mut leases, 10_000, "tester").await;
    let acquired = locks
        .acquire(acquire_req(lease, "jobs/nightly", 0))
        .await
        .expect("acquire through a follower");
    // The reply names the leader, for clients that want to go direct.
    let leader = cluster.leader().await;
    assert_eq!(
        acquired.metadata().get("raftlock-leader-id").unwrap(),
        leader.to_string().as_str()
    );
    assert_eq!(
        acquired.metadata().get("raftlock-leader-addr").unwrap(),
        cluster.addrs[&leader].as_str()
    );
    let acquired = acquired.into_inner();
    assert_eq!(acquired.holds.len(), 1);
    assert!(acquired.token >= lease);
    // Every node, asked right after, sees the hold (read-index reads).
    for id in 1..=3 {
        let info = cluster
            .locks(id)
            .await
            .inspect(pb::InspectRequest {
                name: "jobs/nightly".into(),
                stale: false,
            })
            .await
            .unwrap()
            .into_inner();
        let lock = info.lock.expect("held");
        assert_eq!(lock.holders.len(), 1);
        assert_eq!(lock.holders[0].token, acquired.token);
        assert_eq!(lock.holders[0].owner, "tester");
    }
    locks
        .release(pb::ReleaseRequest {
            lease_id: lease,
            token: acquired.token,
            names: vec!["jobs/nightly".into()],
        })
        .await
        .unwrap();
    let info = locks
        .inspect(pb::InspectRequest {
            name: "jobs/nightly".into(),
            stale: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.lock.is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_acquire_is_granted_on_release_with_a_higher_token() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let mut leases = cluster.leases(leader).await;
    let a = grant(&mut leases, 10_000, "a").await;
    let b = grant(&mut leases, 10_000, "b").await;
    let mut la = cluster.locks(leader).await;
    let first = la
        .acquire(acquire_req(a, "x", 0))
        .await
        .unwrap()
        .into_inner();

    // b waits through a follower: the follower holds the call open.
    let mut lb = cluster.locks(follower).await;
    let waiting = tokio::spawn(async move { lb.acquire(acquire_req(b, "x", 10_000)).await });
    let mut probe = cluster.locks(leader).await;
    eventually(Duration::from_secs(5), || {
        let mut probe = probe.clone();
        async move {
            let info = probe
                .inspect(pb::InspectRequest {
                    name: "x".into(),
                    stale: false,
                })
                .await
                .ok()?
                .into_inner();
            (info.lock?.queue.len() == 1).then_some(())
        }
    })
    .await;
    la.release(pb::ReleaseRequest {
        lease_id: a,
        token: first.token,
        names: vec!["x".into()],
    })
    .await
    .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("granted in time")
        .unwrap()
        .expect("granted")
        .into_inner();
    assert!(second.token > first.token);
    assert!(second.waited_ms > 0);
    let info = probe
        .inspect(pb::InspectRequest {
            name: "x".into(),
            stale: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.lock.unwrap().holders[0].lease_id, b);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_that_times_out_is_withdrawn_and_says_so() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut leases = cluster.leases(leader).await;
    let a = grant(&mut leases, 10_000, "a").await;
    let b = grant(&mut leases, 10_000, "b").await;
    let mut locks = cluster.locks(leader).await;
    locks.acquire(acquire_req(a, "x", 0)).await.unwrap();
    let err = locks
        .acquire(acquire_req(b, "x", 300))
        .await
        .expect_err("times out");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(reason_of(&err), "WAIT_TIMEOUT");
    let info = locks
        .inspect(pb::InspectRequest {
            name: "x".into(),
            stale: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        info.lock.unwrap().queue.is_empty(),
        "the wait was withdrawn"
    );
    // A try on a busy lock is LOCK_BUSY at once.
    let err = locks.acquire(acquire_req(b, "x", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&err), "LOCK_BUSY");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_keep_alives_a_lease_expires_and_its_lock_passes_to_the_next_waiter() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut leases = cluster.leases(leader).await;
    let dead = grant(&mut leases, 1_000, "silent").await;
    let live = grant(&mut leases, 30_000, "patient").await;
    let mut locks = cluster.locks(leader).await;
    let first = locks
        .acquire(acquire_req(dead, "x", 0))
        .await
        .unwrap()
        .into_inner();
    let started = std::time::Instant::now();
    let second = locks
        .acquire(acquire_req(live, "x", 10_000))
        .await
        .expect("granted after the expiry")
        .into_inner();
    let waited = started.elapsed();
    assert!(second.token > first.token);
    assert!(
        waited >= Duration::from_millis(800),
        "the lease did not end early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "expired promptly: {waited:?}"
    );
    let all = leases
        .list(pb::ListLeasesRequest { stale: false })
        .await
        .unwrap()
        .into_inner();
    assert!(all.leases.iter().all(|l| l.lease_id != dead));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alives_keep_a_lease_past_its_ttl() {
    let cluster = Cluster::start(3).await;
    let follower = cluster.follower().await;
    let mut leases = cluster.leases(follower).await;
    let lease = grant(&mut leases, 1_000, "kept").await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = leases
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..10 {
        tx.send(pb::KeepAliveRequest { lease_id: lease })
            .await
            .unwrap();
        let r = replies.message().await.unwrap().expect("a reply");
        assert_eq!(r.ttl_ms, 1_000);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let all = leases
        .list(pb::ListLeasesRequest { stale: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        all.leases.iter().any(|l| l.lease_id == lease),
        "3 s later the lease lives"
    );
    drop(tx);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_error() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut leases = cluster.leases(leader).await;
    let err = leases
        .grant(pb::GrantLeaseRequest {
            ttl_ms: 10,
            owner: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason_of(&err), "TTL_OUT_OF_RANGE");
    let lease = grant(&mut leases, 5_000, "x").await;
    let mut locks = cluster.locks(leader).await;
    let err = locks.acquire(acquire_req(lease, "", 0)).await.unwrap_err();
    assert_eq!(reason_of(&err), "INVALID_NAME");
    let mut req = acquire_req(lease, "ok", 0);
    req.locks[0].mode = 0;
    let err = locks.acquire(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("mode"), "{}", err.message());
    let t = locks
        .acquire(acquire_req(lease, "ok", 0))
        .await
        .unwrap()
        .into_inner()
        .token;
    let err = locks
        .release(pb::ReleaseRequest {
            lease_id: lease,
            token: t + 1,
            names: vec!["ok".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason_of(&err), "STALE_TOKEN");
    let err = locks
        .acquire(acquire_req(999_999, "y", 0))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), "LEASE_NOT_FOUND");
    cluster.shutdown().await;
}

/// With `peer_dial`, nodes reach each other at the dial addresses even when
/// the membership advertises addresses where nothing listens: elections,
/// replication and a follower's forwarded write all use the override.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_dial_reaches_peers_whose_advertised_addresses_are_dead() {
    use std::collections::BTreeMap;

    use raftlock_node::{Node, NodeConfig};

    init_tracing();
    let (listeners, real) = bind_three().await;
    let (mut peer_listeners, real_peers) = bind_three().await;
    // Ports 1-3 on loopback: privileged, nothing listens there.
    let advertised: BTreeMap<u64, String> = (1..=3u64)
        .map(|id| (id, format!("127.0.0.1:{id}")))
        .collect();
    let mut dirs = Vec::new();
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut c = NodeConfig::new(id, dir.path(), real[&id].clone());
        c.peer_listen = real_peers[&id].clone();
        c.initial_members = advertised.clone();
        c.peer_dial = real_peers
            .iter()
            .filter(|(peer, _)| **peer != id)
            .map(|(peer, addr)| (*peer, addr.clone()))
            .collect();
        c.raft = fast_timing();
        c.write_timeout = Duration::from_secs(5);
        let peer_listener = peer_listeners.remove(&id).expect("a peer listener");
        let handle = Node::start_on(c, listener, peer_listener)
            .await
            .expect("node starts");
        nodes.insert(id, handle);
        dirs.push(dir);
    }
    let leader = agreed_leader(&nodes).await;
    let follower = (1..=3u64).find(|id| *id != leader).expect("a follower");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", real[&follower]))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut leases = pb::leases_client::LeasesClient::new(channel.clone());
    let mut locks = pb::locks_client::LocksClient::new(channel);
    let lease = grant(&mut leases, 10_000, "dialer").await;
    let acquired = locks
        .acquire(acquire_req(lease, "dial/through", 0))
        .await
        .expect("a write forwarded to the leader over the dial address")
        .into_inner();
    assert!(acquired.token > 0);
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

/// Concurrent client writes on the leader share log entries (the batcher),
/// and each still gets exactly its own answer: distinct names are all
/// granted, holds of one entry share its token, and of many leases racing
/// for one name exactly one wins (commands on one name never share an
/// entry). Followers apply the same.
///
/// Whether two writes of a burst meet in the queue depends on how fast the
/// 48 requests reach the leader compared with how fast it writes (a loaded
/// CI machine once delivered them one by one): up to five bursts are sent,
/// every one is checked in full, and at least one must have shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_entries_and_each_gets_its_own_answer() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut leases = cluster.leases(leader).await;
    let channel = cluster.channel(leader).await;
    let follower = cluster.follower().await;
    let mut at_follower = cluster.locks(follower).await;
    let mut locks = cluster.locks(leader).await;
    let mut bursts = Vec::new();
    for burst in 0..5 {
        let mut ids = Vec::new();
        for i in 0..48 {
            ids.push(grant(&mut leases, 30_000, &format!("c{burst}/{i}")).await);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, lease) in ids.iter().copied().enumerate() {
            let mut locks = pb::locks_client::LocksClient::new(channel.clone());
            tasks.spawn(async move {
                // Half on names of their own, half racing for one name.
                let name = if i % 2 == 0 {
                    format!("own/{burst}/{i}")
                } else {
                    format!("same/{burst}")
                };
                let answer = locks.acquire(acquire_req(lease, &name, 0)).await;
                (lease, name, answer)
            });
        }
        let same = format!("same/{burst}");
        let mut tokens: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        let mut same_winners = 0;
        let mut granted = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (lease, name, answer) = joined.expect("task");
            match answer {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    assert!(!reply.retry, "{name}: a first acquire is no retry");
                    tokens.entry(reply.token).or_default().push(name.clone());
                    if name == same {
                        same_winners += 1;
                    }
                    granted.push((lease, name, reply.token));
                }
                Err(status) => {
                    assert_eq!(name, same, "{name}: {status:?}");
                    assert_eq!(reason_of(&status), "LOCK_BUSY", "{status:?}");
                }
            }
        }
        assert_eq!(
            same_winners, 1,
            "exactly one lease holds the contended name"
        );
        assert_eq!(granted.len(), 25);
        for (lease, name, token) in granted {
            let lock = at_follower
                .inspect(pb::InspectRequest {
                    name: name.clone(),
                    stale: false,
                })
                .await
                .expect("inspect")
                .into_inner()
                .lock
                .expect("held");
            assert_eq!(lock.holders.len(), 1, "{name}");
            assert_eq!(lock.holders[0].token, token, "{name} on the follower");
            assert_eq!(lock.holders[0].lease_id, lease, "{name} on the follower");
            locks
                .release(pb::ReleaseRequest {
                    lease_id: lease,
                    token,
                    names: vec![name],
                })
                .await
                .expect("release");
        }
        let shared = tokens.values().any(|names| names.len() > 1);
        bursts.push(tokens);
        if shared {
            break;
        }
    }
    assert!(
        bursts
            .last()
            .expect("a burst")
            .values()
            .any(|names| names.len() > 1),
        "in {} bursts no two writes shared an entry: {bursts:?}",
        bursts.len()
    );
    cluster.shutdown().await;
}

/// Three listeners on free loopback ports, and their addresses by node id,
/// for tests that start their nodes by hand.
async fn bind_three() -> (
    std::collections::BTreeMap<u64, tokio::net::TcpListener>,
    std::collections::BTreeMap<u64, String>,
) {
    bind_nodes(3).await
}

/// The leader, once every node of `nodes` names the same one.
pub(crate) async fn agreed_leader(
    nodes: &std::collections::BTreeMap<u64, raftlock_node::NodeHandle>,
) -> u64 {
    eventually(Duration::from_secs(10), || {
        let leaders: Vec<Option<u64>> = nodes
            .values()
            .map(|n| n.raft().metrics().borrow().current_leader)
            .collect();
        async move {
            match leaders.first() {
                Some(Some(l)) if leaders.iter().all(|x| *x == Some(*l)) => Some(*l),
                _ => None,
            }
        }
    })
    .await
}

/// A TCP proxy to `target` that can be cut: cutting closes its listener and
/// every connection through it, so nothing sent to it arrives any more.
struct CutProxy {
    addr: String,
    proxy: Proxy,
}

impl CutProxy {
    async fn start(target: String) -> CutProxy {
        let target = target.parse().expect("a socket address");
        let proxy = Proxy::start(target).await.expect("bind proxy");
        CutProxy {
            addr: proxy.addr().to_string(),
            proxy,
        }
    }

    fn cut(&self) {
        self.proxy.close();
    }
}

/// A follower forwards a waiting acquire; the leader queues it, but the
/// follower does not see the entry applied within its write timeout (it
/// gets no replication). The answer is TIMEOUT (may have been applied),
/// and the queued request must not stay behind with nobody waiting for it:
/// it would be granted later to a lease whose caller has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queued_acquire_its_node_cannot_see_applied_is_withdrawn() {
    use std::collections::BTreeMap;

    use raftlock_node::{Node, NodeConfig, RaftTiming};

    init_tracing();
    let (listeners, real) = bind_three().await;
    let (mut peer_listeners, real_peers) = bind_three().await;
    // Node 3 is reached by its peers only through the proxy, and never
    // campaigns, so it keeps following (and forwarding to) the leader after
    // the cut.
    let to_3 = CutProxy::start(real_peers[&3].clone()).await;
    let mut dirs = Vec::new();
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut c = NodeConfig::new(id, dir.path(), real[&id].clone());
        c.peer_listen = real_peers[&id].clone();
        c.initial_members = real_peers.clone();
        c.raft = fast_timing();
        if id == 3 {
            c.raft = RaftTiming {
                election_timeout_min: Duration::from_secs(60),
                election_timeout_max: Duration::from_secs(61),
                ..fast_timing()
            };
        } else {
            c.peer_dial = BTreeMap::from([(3, to_3.addr.clone())]);
        }
        c.write_timeout = Duration::from_secs(1);
        let peer_listener = peer_listeners.remove(&id).expect("a peer listener");
        let handle = Node::start_on(c, listener, peer_listener)
            .await
            .expect("node starts");
        nodes.insert(id, handle);
        dirs.push(dir);
    }
    let leader = agreed_leader(&nodes).await;
    assert_ne!(leader, 3, "node 3 never campaigns");
    let channel = |id: u64| {
        tonic::transport::Channel::from_shared(format!("http://{}", real[&id]))
            .expect("uri")
            .connect_lazy()
    };
    let mut leases = pb::leases_client::LeasesClient::new(channel(3));
    let mut locks = pb::locks_client::LocksClient::new(channel(3));
    let mut at_leader = pb::locks_client::LocksClient::new(channel(leader));
    let a = grant(&mut leases, 60_000, "a").await;
    let b = grant(&mut leases, 60_000, "b").await;
    let held = locks
        .acquire(acquire_req(a, "x", 0))
        .await
        .expect("a holds x")
        .into_inner();

    to_3.cut();
    let status = locks
        .acquire(acquire_req(b, "x", 10_000))
        .await
        .expect_err("node 3 cannot see the request applied");
    assert_eq!(reason_of(&status), "TIMEOUT", "{status:?}");

    // The leader has b's request withdrawn soon, not at the end of its wait.
    let started = std::time::Instant::now();
    loop {
        let lock = at_leader
            .inspect(pb::InspectRequest {
                name: "x".into(),
                stale: false,
            })
            .await
            .expect("inspect at the leader")
            .into_inner()
            .lock
            .expect("x is held");
        if !lock.queue.iter().any(|q| q.lease_id == b) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "b's request is still queued with nobody waiting for it: {:?}",
            lock.queue
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // So a's release does not hand x to b.
    at_leader
        .release(pb::ReleaseRequest {
            lease_id: a,
            token: held.token,
            names: vec!["x".into()],
        })
        .await
        .expect("release");
    let lock = at_leader
        .inspect(pb::InspectRequest {
            name: "x".into(),
            stale: false,
        })
        .await
        .expect("inspect")
        .into_inner()
        .lock;
    assert!(lock.is_none(), "x went to nobody's request: {lock:?}");
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

/// A follower's server ends the leader's long-lived AppendEntries stream
/// when the node stops, so its graceful shutdown is quick, not cut off by
/// the 5 s grace period for connections that stay busy; and the leader
/// opens a new stream to the node once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_stops_promptly_and_is_replicated_to_after_its_restart() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let mut leases = cluster.leases(leader).await;
    grant(&mut leases, 60_000, "before").await;

    let started = Instant::now();
    cluster.stop(follower).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "stopping a follower took {took:?}"
    );

    cluster.restart(follower).await;
    grant(&mut leases, 60_000, "after").await;
    let target = cluster.nodes[&leader]
        .as_ref()
        .expect("leader")
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .expect("applied")
        .index;
    let node = cluster.nodes[&follower].as_ref().expect("restarted");
    eventually(Duration::from_secs(10), || async {
        node.raft()
            .metrics()
            .borrow()
            .last_applied
            .is_some_and(|l| l.index >= target)
            .then_some(())
    })
    .await;
    cluster.shutdown().await;
}
