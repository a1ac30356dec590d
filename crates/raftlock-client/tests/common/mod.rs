//! In-process 3-node clusters on 127.0.0.1 (the approach of
//! raftlock-node's tests): every node binds port 0 first, so all addresses
//! are known before any node starts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use raftlock_client::{Client, ClientOptions, RetryPolicy, Session, SessionOptions};
use raftlock_node::{Node, NodeConfig, NodeHandle, RaftTiming};
use tempfile::TempDir;
use tokio::net::TcpListener;

pub struct Cluster {
    pub nodes: BTreeMap<u64, Option<NodeHandle>>,
    pub addrs: BTreeMap<u64, String>,
    pub dirs: BTreeMap<u64, TempDir>,
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
        init_tracing();
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.insert(id, l.local_addr().expect("addr").to_string());
            listeners.insert(id, l);
        }
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            addrs,
            dirs: BTreeMap::new(),
        };
        for (id, listener) in listeners {
            let dir = TempDir::new().expect("tempdir");
            let mut c = NodeConfig::new(id, dir.path(), cluster.addrs[&id].clone());
            c.initial_members = cluster.addrs.clone();
            c.raft = fast_timing();
            c.write_timeout = Duration::from_secs(5);
            let handle = Node::start_on(c, listener).await.expect("node starts");
            cluster.dirs.insert(id, dir);
            cluster.nodes.insert(id, Some(handle));
        }
        cluster.wait_leader(Duration::from_secs(10)).await;
        cluster
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
            if let Some(Some(l)) = leaders.first() {
                if leaders.iter().all(|x| *x == Some(*l))
                    && self.nodes.get(l).is_some_and(|n| n.is_some())
                {
                    return *l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {within:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self, id: u64) {
        if let Some(handle) = self.nodes.get_mut(&id).and_then(Option::take) {
            handle.shutdown().await;
        }
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
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
}

pub async fn session(client: &Client, ttl_ms: u64, owner: &str) -> Session {
    bounded(client.session(SessionOptions::new(Duration::from_millis(ttl_ms)).owner(owner)))
        .await
        .expect("session")
}

/// Every wait in the tests is bounded.
pub async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("bounded wait")
}
