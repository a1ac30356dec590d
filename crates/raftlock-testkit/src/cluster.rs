//! In-process clusters on 127.0.0.1 for the node's and the client's tests:
//! every node binds port 0 first, so all addresses are known before any
//! node starts. Optionally every node sits behind a fault proxy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftlock_client::{Client, ClientOptions, RetryPolicy};
use raftlock_node::{Node, NodeConfig, NodeHandle, RaftTiming};
use raftlock_proto::v1 as pb;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::ports::{bind_nodes, rebind};
use crate::proxy::{LinkMode, Proxy};

pub struct Cluster {
    /// None while a node is stopped. Declared before `dirs`: the nodes
    /// stop before their directories go.
    pub nodes: BTreeMap<u64, Option<NodeHandle>>,
    /// Where clients reach each node (its proxy, if proxied).
    pub addrs: BTreeMap<u64, String>,
    /// Where peers reach each node (its peer proxy, if proxied).
    pub peer_addrs: BTreeMap<u64, String>,
    /// Where each node listens for clients.
    pub listen: BTreeMap<u64, String>,
    /// Where each node listens for peers.
    pub peer_listen: BTreeMap<u64, String>,
    /// In a proxied cluster: every byte to a node, from clients and
    /// peers alike, goes through its proxies.
    pub proxies: BTreeMap<u64, NodeProxy>,
    pub dirs: BTreeMap<u64, TempDir>,
    pub configure: fn(&mut NodeConfig),
}

/// Raft timing for tests: elections in well under a second.
pub fn fast_timing() -> RaftTiming {
    RaftTiming {
        heartbeat: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        rpc_timeout: Duration::from_millis(500),
    }
}

/// Logs to the test's output, at `RUST_LOG` or else warn.
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

    /// A cluster whose node configurations `configure` adjusts.
    pub async fn start_with(n: u64, configure: fn(&mut NodeConfig)) -> Cluster {
        Self::start_inner(n, configure, false).await
    }

    /// A cluster whose members are known by their proxies' addresses, so
    /// cutting a node's proxy cuts it off from clients and peers (what it
    /// sends on its own connections to others still arrives).
    pub async fn start_proxied(n: u64) -> Cluster {
        Self::start_inner(n, |_| {}, true).await
    }

    async fn start_inner(n: u64, configure: fn(&mut NodeConfig), proxied: bool) -> Cluster {
        init_tracing();
        let (listeners, mut addrs) = bind_nodes(n).await;
        let (mut peer_listeners, mut peer_addrs) = bind_nodes(n).await;
        let mut proxies = BTreeMap::new();
        let listen = addrs.clone();
        let peer_listen = peer_addrs.clone();
        if proxied {
            for id in listen.keys() {
                let start = |a: &String| {
                    let target = a.parse().expect("a listen address");
                    async move { Proxy::start(target).await.expect("start a proxy") }
                };
                let client = start(&listen[id]).await;
                let peer = start(&peer_listen[id]).await;
                proxies.insert(*id, NodeProxy { client, peer });
            }
            for (id, p) in &proxies {
                addrs.insert(*id, p.addr());
                peer_addrs.insert(*id, p.peer_addr());
            }
        }
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            addrs,
            peer_addrs,
            listen,
            peer_listen,
            proxies,
            dirs: BTreeMap::new(),
            configure,
        };
        for (id, listener) in listeners {
            let dir = crate::dirs::temp_dir();
            let c = cluster.config(id, dir.path());
            let peer_listener = peer_listeners.remove(&id).expect("a peer listener");
            let handle = Node::start_on(c, listener, peer_listener)
                .await
                .expect("node starts");
            cluster.dirs.insert(id, dir);
            cluster.nodes.insert(id, Some(handle));
        }
        cluster.wait_leader(Duration::from_secs(10)).await;
        cluster
    }

    fn config(&self, id: u64, dir: &std::path::Path) -> NodeConfig {
        let mut c = NodeConfig::new(id, dir, self.listen[&id].clone());
        c.peer_listen = self.peer_listen[&id].clone();
        c.initial_members = self.peer_addrs.clone();
        c.advertise = Some(self.addrs[&id].clone());
        c.peer_advertise = Some(self.peer_addrs[&id].clone());
        c.raft = fast_timing();
        c.write_timeout = Duration::from_secs(5);
        (self.configure)(&mut c);
        c
    }

    /// The leader's id, once every live node agrees on it.
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

    /// A channel to node `id` (through its proxy, if proxied).
    pub async fn channel(&self, id: u64) -> Channel {
        Channel::from_shared(format!("http://{}", self.addrs[&id]))
            .expect("uri")
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

    /// A client of every node, with the given retry policy.
    pub async fn client_with(&self, retry: RetryPolicy) -> Client {
        let options = ClientOptions {
            retry,
            ..ClientOptions::default()
        };
        Client::connect(self.addrs.values().cloned(), options)
            .await
            .expect("connect")
    }

    pub async fn client(&self) -> Client {
        self.client_with(RetryPolicy::standard()).await
    }

    /// Stop a node (its data stays).
    pub async fn stop(&mut self, id: u64) {
        if let Some(handle) = self.nodes.get_mut(&id).and_then(Option::take) {
            handle.shutdown().await;
        }
    }

    /// Start a stopped node again on its address and data dir.
    pub async fn restart(&mut self, id: u64) {
        let listener = rebind(&self.listen[&id], Duration::from_secs(5)).await;
        let peer_listener = rebind(&self.peer_listen[&id], Duration::from_secs(5)).await;
        let config = self.config(id, self.dirs[&id].path());
        let handle = Node::start_on(config, listener, peer_listener)
            .await
            .expect("restart");
        self.nodes.insert(id, Some(handle));
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// The proxies in front of one node of a proxied cluster: one for its
/// client port, one for its peer port.
pub struct NodeProxy {
    client: Proxy,
    peer: Proxy,
}

impl NodeProxy {
    /// Where clients reach the node.
    pub fn addr(&self) -> String {
        self.client.addr().to_string()
    }

    /// Where peers reach the node.
    pub fn peer_addr(&self) -> String {
        self.peer.addr().to_string()
    }

    /// Cuts the node off from everyone who dials it, like a network
    /// partition: [`LinkMode::BlackHole`] on both ports (open connections
    /// stop carrying bytes without closing; new ones are accepted but never
    /// forwarded).
    pub fn cut(&self) {
        self.client.set(LinkMode::BlackHole);
        self.peer.set(LinkMode::BlackHole);
    }

    /// Forward new connections again (the cut ones stay dead, as TCP
    /// connections through a long partition would).
    pub fn heal(&self) {
        self.client.set(LinkMode::Pass);
        self.peer.set(LinkMode::Pass);
    }

    /// The client port's proxy.
    pub fn proxy(&self) -> &Proxy {
        &self.client
    }

    /// The peer port's proxy.
    pub fn peer_proxy(&self) -> &Proxy {
        &self.peer
    }
}
