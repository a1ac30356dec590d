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
    /// Where clients and peers reach each node (its proxy, if proxied).
    pub addrs: BTreeMap<u64, String>,
    /// Where each node listens.
    pub listen: BTreeMap<u64, String>,
    /// In a proxied cluster: every byte to a node, from clients and
    /// peers alike, goes through its proxy.
    pub proxies: BTreeMap<u64, Proxy>,
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
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.insert(id, l.local_addr().expect("addr").to_string());
            listeners.insert(id, l);
        }
        let mut proxies = BTreeMap::new();
        let listen = addrs.clone();
        if proxied {
            for (id, a) in &listen {
                proxies.insert(*id, Proxy::start(a.clone()).await);
            }
            for (id, p) in &proxies {
                addrs.insert(*id, p.addr.clone());
            }
        }
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            addrs,
            listen,
            proxies,
            dirs: BTreeMap::new(),
            configure,
        };
        for (id, listener) in listeners {
            let dir = TempDir::new().expect("tempdir");
            let c = cluster.config(id, dir.path());
            let handle = Node::start_on(c, listener).await.expect("node starts");
            cluster.dirs.insert(id, dir);
            cluster.nodes.insert(id, Some(handle));
        }
        cluster.wait_leader(Duration::from_secs(10)).await;
        cluster
    }

    fn config(&self, id: u64, dir: &std::path::Path) -> NodeConfig {
        let mut c = NodeConfig::new(id, dir, self.listen[&id].clone());
        c.initial_members = self.addrs.clone();
        c.advertise = Some(self.addrs[&id].clone());
        c.raft = fast_timing();
        c.write_timeout = Duration::from_secs(5);
        (self.configure)(&mut c);
        c
    }

    /// Start a stopped node again on its address and data dir.
    pub async fn restart(&mut self, id: u64) {
        let addr = self.listen[&id].clone();
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

/// A client of the given endpoints only.
pub async fn client_of(endpoints: &[String], retry: RetryPolicy) -> Client {
    let options = ClientOptions {
        retry,
        ..ClientOptions::default()
    };
    Client::connect(endpoints.iter().cloned(), options)
        .await
        .expect("connect")
}

/// A TCP proxy in front of one node, to cut a client off the cluster.
/// While cut it is a black hole, like a network partition: open
/// connections stop carrying bytes (without closing) and new ones are
/// accepted but never forwarded.
pub struct Proxy {
    pub addr: String,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let mut cut_rx = cut_rx.clone();
                conns.spawn(async move {
                    if *cut_rx.borrow() {
                        // Hold the socket open, forward nothing.
                        std::future::pending::<()>().await;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = async { drop(cut_rx.wait_for(|c| *c).await) } => {
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        Proxy { addr, cut, task }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forward new connections again (the cut ones stay dead, as TCP
    /// connections through a long partition would).
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops the JoinSet, which aborts every
        // connection task and closes its sockets.
        self.task.abort();
    }
}

/// What [`Faulty`] does to the next calls of one gRPC method.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The node never sees the call; the client gets this plain status (no
    /// raftlock reason), as from a proxy or a broken connection.
    Refuse(tonic::Code),
    /// The node answers the call (a write is applied) and the client gets
    /// this plain status instead of the answer.
    LoseAnswer(tonic::Code),
}

/// Faults to inject, by gRPC method, shared with the [`Faulty`] services.
#[derive(Clone, Default)]
pub struct Faults(std::sync::Arc<std::sync::Mutex<Vec<FaultRule>>>);

/// A method (such as "Locks/Release"), its fault, and how many more calls get it.
type FaultRule = (&'static str, Fault, u32);

impl Faults {
    /// The next `times` calls of `method` (such as "Locks/Release") get
    /// `fault` (u32::MAX: until cleared), after the faults set before for it.
    pub fn set(&self, method: &'static str, fault: Fault, times: u32) {
        self.0.lock().expect("faults").push((method, fault, times));
    }

    pub fn clear(&self) {
        self.0.lock().expect("faults").clear();
    }

    fn take(&self, path: &str) -> Option<Fault> {
        let mut rules = self.0.lock().expect("faults");
        let (_, fault, times) = rules
            .iter_mut()
            .find(|(m, _, t)| *t > 0 && path.ends_with(&format!("v1.{m}")))?;
        if *times != u32::MAX {
            *times -= 1;
        }
        Some(*fault)
    }
}

/// A node's in-process services with [`Faults`] in front, for
/// `Client::in_process`: calls pass unless a fault is set for their method.
#[derive(Clone)]
pub struct Faulty {
    inner: tonic::service::Routes,
    faults: Faults,
}

impl Faulty {
    pub fn new(node: &NodeHandle, faults: &Faults) -> Faulty {
        Faulty {
            inner: node.local_service(),
            faults: faults.clone(),
        }
    }
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl tower::Service<HttpRequest> for Faulty {
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<HttpResponse, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<HttpRequest>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let fault = self.faults.take(req.uri().path());
        match fault {
            None => Box::pin(tower::Service::call(&mut self.inner, req)),
            Some(Fault::Refuse(code)) => Box::pin(async move {
                Ok(tonic::Status::new(code, "refused by the test's fault layer").into_http())
            }),
            Some(Fault::LoseAnswer(code)) => {
                let answered = tower::Service::call(&mut self.inner, req);
                Box::pin(async move {
                    // A unary call's handler has run to its end once its
                    // response is here.
                    drop(answered.await);
                    Ok(
                        tonic::Status::new(code, "answer lost by the test's fault layer")
                            .into_http(),
                    )
                })
            }
        }
    }
}

/// A client of `node` alone, in process, through `faults`.
pub fn faulty_client(node: &NodeHandle, faults: &Faults, retry: RetryPolicy) -> Client {
    let options = ClientOptions {
        retry,
        ..ClientOptions::default()
    };
    Client::in_process(Faulty::new(node, faults), options)
}
