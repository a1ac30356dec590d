//! In-process clusters on 127.0.0.1 for tests: every node binds port 0
//! first, so all addresses are known before any node starts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftlock_node::{Node, NodeConfig, NodeHandle, RaftTiming};
use raftlock_proto::v1 as pb;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub struct Cluster {
    pub nodes: BTreeMap<u64, Option<NodeHandle>>,
    pub addrs: BTreeMap<u64, String>,
    pub dirs: BTreeMap<u64, TempDir>,
    pub configure: fn(&mut NodeConfig),
}

pub fn fast_timing() -> RaftTiming {
    RaftTiming {
        heartbeat: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        rpc_timeout: Duration::from_millis(500),
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

impl Cluster {
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, |_| {}).await
    }

    pub async fn start_with(n: u64, configure: fn(&mut NodeConfig)) -> Cluster {
        init_tracing();
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.insert(id, l.local_addr().unwrap().to_string());
            listeners.insert(id, l);
        }
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            addrs,
            dirs: BTreeMap::new(),
            configure,
        };
        for (id, listener) in listeners {
            let dir = TempDir::new().expect("tempdir");
            let handle = Node::start_on(cluster.config(id, dir.path()), listener)
                .await
                .expect("node starts");
            cluster.dirs.insert(id, dir);
            cluster.nodes.insert(id, Some(handle));
        }
        cluster.wait_leader(Duration::from_secs(10)).await;
        cluster
    }

    fn config(&self, id: u64, dir: &std::path::Path) -> NodeConfig {
        let mut c = NodeConfig::new(id, dir, self.addrs[&id].clone());
        c.initial_members = self.addrs.clone();
        c.raft = fast_timing();
        c.write_timeout = Duration::from_secs(5);
        (self.configure)(&mut c);
        c
    }

    /// The leader's id, once one is known by every live node.
    pub async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<Option<u64>> = self
                .nodes
                .values()
                .flatten()
                .map(|n| n.raft().metrics().borrow().current_leader)
                .collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && self.nodes.get(l).is_some_and(|n| n.is_some())
            {
                return *l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {within:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn leader(&self) -> u64 {
        self.wait_leader(Duration::from_secs(10)).await
    }

    pub async fn follower(&self) -> u64 {
        let leader = self.leader().await;
        *self
            .nodes
            .iter()
            .find(|(id, n)| **id != leader && n.is_some())
            .expect("a live follower")
            .0
    }

    pub async fn channel(&self, id: u64) -> Channel {
        Channel::from_shared(format!("http://{}", self.addrs[&id]))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    pub async fn locks(&self, id: u64) -> pb::locks_client::LocksClient<Channel> {
        pb::locks_client::LocksClient::new(self.channel(id).await)
    }

    pub async fn leases(&self, id: u64) -> pb::leases_client::LeasesClient<Channel> {
        pb::leases_client::LeasesClient::new(self.channel(id).await)
    }

    pub async fn admin(&self, id: u64) -> pb::admin_client::AdminClient<Channel> {
        pb::admin_client::AdminClient::new(self.channel(id).await)
    }

    /// Stop a node (its data stays).
    pub async fn stop(&mut self, id: u64) {
        if let Some(handle) = self.nodes.get_mut(&id).and_then(Option::take) {
            handle.shutdown().await;
        }
    }

    /// Start a stopped node again on its address and data dir.
    pub async fn restart(&mut self, id: u64) {
        let addr = self.addrs[&id].clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebind {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let config = self.config(id, self.dirs[&id].path());
        let handle = Node::start_on(config, listener).await.expect("restart");
        self.nodes.insert(id, Some(handle));
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

pub async fn grant(
    c: &mut pb::leases_client::LeasesClient<Channel>,
    ttl_ms: u64,
    owner: &str,
) -> u64 {
    c.grant(pb::GrantLeaseRequest {
        ttl_ms,
        owner: owner.into(),
    })
    .await
    .expect("grant lease")
    .into_inner()
    .lease_id
}

pub fn exclusive(name: &str) -> pb::LockSpec {
    pb::LockSpec {
        name: name.into(),
        mode: pb::Mode::Exclusive as i32,
        permits: 0,
    }
}

pub fn acquire_req(lease: u64, name: &str, wait_ms: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lease_id: lease,
        locks: vec![exclusive(name)],
        wait_timeout_ms: wait_ms,
        ..Default::default()
    }
}

/// The status's raftlock reason, or "" for a status without one.
pub fn reason_of(status: &tonic::Status) -> String {
    use raftlock_proto::errors::{Reason, classify};
    match classify(status).reason {
        Reason::Known(r) => r.name().to_string(),
        Reason::Unrecognized(r) => r,
        Reason::Absent => String::new(),
    }
}

/// Poll `f` until it returns Some, at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
