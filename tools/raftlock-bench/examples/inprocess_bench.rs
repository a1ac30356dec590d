//! Cycles/s of acquire+release through the in-process API of a 3-node
//! cluster in this process (fsync on, no gRPC between client and leader;
//! the nodes still talk gRPC to each other). A developer's gauge of the Raft
//! write path; the `raftlock-bench` binary measures what clients see.
//!
//! cargo run --release -p raftlock-bench --example inprocess_bench [-- SECONDS]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftlock_core::{LockSpec, Mode};
use raftlock_node::{AcquireArgs, Api, Node, NodeConfig};

async fn cycle(api: &Api, lease: u64, name: &str) {
    let got = api
        .acquire(AcquireArgs {
            lease,
            locks: vec![LockSpec {
                name: name.to_string(),
                mode: Mode::Exclusive,
            }],
            wait: Duration::from_secs(30),
            ..AcquireArgs::default()
        })
        .await
        .expect("acquire");
    api.release(lease, got.token, vec![name.to_string()])
        .await
        .expect("release");
}

async fn run(api: Arc<Api>, clients: usize, shared_name: bool, secs: f64) -> f64 {
    let mut leases = Vec::new();
    for i in 0..clients {
        leases.push(
            api.grant_lease(60_000, format!("bench-{i}"))
                .await
                .expect("lease")
                .0,
        );
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, lease) in leases.into_iter().enumerate() {
        let api = Arc::clone(&api);
        let name = if shared_name {
            "hot".to_string()
        } else {
            format!("n/{i}")
        };
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                cycle(&api, lease, &name).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let n_nodes: u64 = std::env::var("NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dirs: Vec<_> = (0..n_nodes)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    let mut peers = BTreeMap::new();
    for id in 1..=n_nodes {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let p = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        members.insert(id, l.local_addr()?.to_string());
        peers.insert(id, p.local_addr()?.to_string());
        listeners.push((l, p));
    }
    let mut nodes = Vec::new();
    for (i, (l, p)) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let mut c = NodeConfig::new(id, dirs[i].path(), members[&id].clone());
        c.peer_listen = peers[&id].clone();
        c.initial_members = peers.clone();
        nodes.push(Node::start_on(c, l, p).await?);
    }
    nodes[0]
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "leader")
        .await?;
    let leader = nodes[0]
        .raft()
        .metrics()
        .borrow()
        .current_leader
        .unwrap_or(1);
    let api = Arc::clone(nodes[(leader - 1) as usize].api());
    if std::env::var("RAW").is_ok() {
        let raft = nodes[(leader - 1) as usize].raft().clone();
        let n: u32 = std::env::var("RAW")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        let start = Instant::now();
        for _ in 0..n {
            raft.client_write(raftlock_core::Request::new(
                0,
                0,
                raftlock_core::Command::Tick,
            ))
            .await
            .expect("write");
        }
        println!("raw client_write: {:?} each", start.elapsed() / n);
        let addr = members[&leader].clone();
        let mut admin =
            raftlock_proto::v1::admin_client::AdminClient::connect(format!("http://{addr}"))
                .await?;
        let start = Instant::now();
        for _ in 0..n {
            admin.status(raftlock_proto::v1::StatusRequest {}).await?;
        }
        println!("grpc status round trip: {:?} each", start.elapsed() / n);
    }
    println!(
        "seq        1 client : {:>8.0} cycles/s",
        run(Arc::clone(&api), 1, false, secs).await
    );
    println!(
        "distinct  64 clients: {:>8.0} cycles/s",
        run(Arc::clone(&api), 64, false, secs).await
    );
    println!(
        "contended  8 clients: {:>8.0} cycles/s",
        run(Arc::clone(&api), 8, true, secs).await
    );
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
