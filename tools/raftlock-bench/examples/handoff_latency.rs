//! Release → next grant through the Rust client: how long after a holder
//! starts its release does a waiter, queued with `acquire().await`, get
//! the lock?
//!
//! cargo run --release -p raftlock-bench --example handoff_latency -- --rounds 500
//! cargo run --release -p raftlock-bench --example handoff_latency -- \
//!     --rounds 500 --endpoints 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403
//!
//! Without `--endpoints` it starts a 3-node cluster in this process (default
//! Raft timing, data in temporary directories, sled flushes as in
//! production). Two sessions take turns: the holder releases while the
//! other is queued, then they swap. Each round measures from just before
//! `release()` is called to the moment the waiter's `acquire()` returns.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftlock_client::{Client, ClientOptions, LockGuard, Session, SessionOptions};
use raftlock_node::{Node, NodeConfig, NodeHandle};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    rounds: usize,
    endpoints: Vec<String>,
    name: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rounds: 200,
        endpoints: Vec::new(),
        name: format!("bench/handoff-{}", std::process::id()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => {
                args.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?;
                if !(1..=100_000).contains(&args.rounds) {
                    return Err("--rounds must be between 1 and 100000".into());
                }
            }
            "--endpoints" => {
                args.endpoints = value()?.split(',').map(str::to_string).collect();
            }
            "--name" => args.name = value()?,
            other => {
                return Err(format!(
                    "unknown argument {other}; use --rounds N [--endpoints a,b,c] [--name LOCK]"
                ));
            }
        }
    }
    Ok(args)
}

async fn start_cluster() -> Result<(Vec<NodeHandle>, Vec<String>, Vec<tempfile::TempDir>), BoxError>
{
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let p = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        members.insert(id, l.local_addr()?.to_string());
        peers.insert(id, p.local_addr()?.to_string());
        listeners.push((id, l, p));
    }
    let (mut nodes, mut dirs) = (Vec::new(), Vec::new());
    for (id, listener, peer_listener) in listeners {
        let dir = tempfile::tempdir()?;
        let mut config = NodeConfig::new(id, dir.path(), members[&id].clone());
        config.peer_listen = peers[&id].clone();
        config.initial_members = peers.clone();
        nodes.push(Node::start_on(config, listener, peer_listener).await?);
        dirs.push(dir);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes
        .iter()
        .any(|n| n.raft().metrics().borrow().current_leader.is_none())
    {
        if Instant::now() > deadline {
            return Err("no leader within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((nodes, members.into_values().collect(), dirs))
}

/// Wait (bounded) until `name` has a queued request.
async fn until_queued(client: &Client, name: &str) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queued = client.inspect(name).await?.map_or(0, |l| l.queue.len());
        if queued > 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the waiter never queued".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let (nodes, endpoints, _dirs) = if args.endpoints.is_empty() {
        let (n, e, d) = start_cluster().await?;
        println!("in-process 3-node cluster: {}", e.join(", "));
        (n, e, d)
    } else {
        (Vec::new(), args.endpoints.clone(), Vec::new())
    };
    let client = Client::connect(endpoints, ClientOptions::default()).await?;
    let ttl = Duration::from_secs(30);
    let sessions: [Session; 2] = [
        client
            .session(SessionOptions::new(ttl).owner("handoff-a"))
            .await?,
        client
            .session(SessionOptions::new(ttl).owner("handoff-b"))
            .await?,
    ];
    let status = client.status().await?;
    println!(
        "calls go to {} (leader: node {:?} at {})",
        client.current_endpoint(),
        status.leader_id,
        status.leader_addr
    );
    let name = args.name.clone();
    let mut holder: LockGuard = sessions[0].lock(name.clone()).try_acquire().await?;
    let mut holder_index = 0;
    let (mut handoff, mut release_call) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let waiter = sessions[1 - holder_index].clone();
        let n = name.clone();
        let wait = tokio::spawn(async move {
            let r = waiter.lock(n).wait(Duration::from_secs(10)).acquire().await;
            (Instant::now(), r)
        });
        until_queued(&client, &name).await?;
        let started = Instant::now();
        holder.release().await?;
        release_call.push(started.elapsed());
        let (granted_at, guard) = wait.await?;
        holder = guard?;
        handoff.push(granted_at.duration_since(started));
        holder_index = 1 - holder_index;
    }
    holder.release().await?;
    for s in &sessions {
        s.revoke().await?;
    }
    handoff.sort();
    release_call.sort();
    println!(
        "{} rounds: release -> next grant  median {}  p90 {}  p99 {}  max {}",
        handoff.len(),
        ms(percentile(&handoff, 0.5)),
        ms(percentile(&handoff, 0.9)),
        ms(percentile(&handoff, 0.99)),
        ms(percentile(&handoff, 1.0)),
    );
    println!(
        "          release() call itself  median {}  p99 {}",
        ms(percentile(&release_call, 0.5)),
        ms(percentile(&release_call, 0.99)),
    );
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
