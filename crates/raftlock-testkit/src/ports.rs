//! Free ports on 127.0.0.1. Whatever can bind port 0 does (the OS picks);
//! these are for what cannot: a process told its port on the command line,
//! or a whole cluster whose addresses must be known before any node starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

/// `n` distinct ports that were free a moment ago (bound together, then
/// released). Another process may take one before we use it: callers retry.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// A port P such that P..P+n were free a moment ago (`raftlock dev
/// --base-port`). Callers retry if one is taken before they use it.
pub fn free_port_run(n: u16) -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let base = first.local_addr().expect("local_addr").port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let rest: Result<Vec<std::net::TcpListener>, _> = (1..n)
            .map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if rest.is_ok() {
            return base;
        }
    }
    panic!("no run of {n} free ports found");
}

/// A free port, kept bound until the returned listener is dropped, so that
/// nothing binding port 0 meanwhile (a proxy, another test) is handed it.
/// Drop the listener just before the process that needs the port starts.
pub fn reserve() -> std::io::Result<(SocketAddr, std::net::TcpListener)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    Ok((addr, l))
}

/// Listeners on port 0 for nodes 1..=n and their addresses by node id,
/// so that every address is known before any node starts.
pub async fn bind_nodes(n: u64) -> (BTreeMap<u64, TcpListener>, BTreeMap<u64, String>) {
    let mut listeners = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.insert(id, l.local_addr().expect("addr").to_string());
        listeners.insert(id, l);
    }
    (listeners, addrs)
}

/// Binds `addr` again after whoever had it stopped; the port may take a
/// moment to be free. Panics after `within`.
pub async fn rebind(addr: &str, within: Duration) -> TcpListener {
    let deadline = Instant::now() + within;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "rebind {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
