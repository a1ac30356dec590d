//! A fault-injecting TCP proxy: one per directed link (node i dialing node
//! j, or clients dialing node j), switched between modes at runtime.
//!
//! - `Pass`: bytes flow both ways.
//! - `Cut`: new connections are refused (accepted and closed at once) and
//!   existing ones stall in both directions (nothing is read, so TCP
//!   back-pressure builds up as in a real partition); they resume when the
//!   link heals unless an endpoint gave up on them first.
//! - `OneWay`: the dialer's bytes reach the target, the target's replies
//!   stall (the target hears the dialer, the dialer hears nothing back).
//! - `Delay`: every chunk waits `ms` before being passed on.
//! - `Lossy`: a chunk is "lost" with probability `percent` and passed on
//!   only after a retransmission timeout (TCP never loses bytes; it delays
//!   them), so calls over the link become slow and erratic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::rng::Rng;

/// How a link behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum LinkMode {
    Pass,
    Cut,
    OneWay,
    Delay { ms: u64 },
    Lossy { percent: u8 },
}

/// How long a "lost" chunk waits in `Lossy` mode (a TCP retransmission).
pub const RETRANSMIT_MS: u64 = 200;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A running proxy. Dropping it stops accepting and closes every
/// connection it carries.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<LinkMode>,
    acceptor: JoinHandle<()>,
    connections: Arc<AtomicU64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Dialer → target.
    Forward,
    /// Target → dialer.
    Backward,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(LinkMode::Pass);
        let connections = Arc::new(AtomicU64::new(0));
        let acceptor = tokio::spawn(accept_loop(
            listener,
            target,
            mode.clone(),
            connections.clone(),
        ));
        Ok(Proxy {
            addr,
            target,
            mode,
            acceptor,
            connections,
        })
    }

    /// Where dialers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the mode; connections in flight follow at their next chunk.
    pub fn set(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the acceptor drops its JoinSet, which aborts every
        // connection task: nothing blocks here.
        self.acceptor.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Sender<LinkMode>,
    connections: Arc<AtomicU64>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut seed = target.port() as u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((inbound, _)) = accepted else {
                    // Out of descriptors or similar: back off, keep serving.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if *mode.borrow() == LinkMode::Cut {
                    drop(inbound);
                    continue;
                }
                connections.fetch_add(1, Ordering::Relaxed);
                seed = seed.wrapping_add(1);
                tasks.spawn(carry(inbound, target, mode.subscribe(), seed));
            }
            // Reap finished connections so the set stays small.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn carry(inbound: TcpStream, target: SocketAddr, mode: watch::Receiver<LinkMode>, seed: u64) {
    let Ok(Ok(outbound)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_r, in_w) = inbound.into_split();
    let (out_r, out_w) = outbound.into_split();
    let forward = pump(
        in_r,
        out_w,
        mode.clone(),
        Direction::Forward,
        Rng::new(seed),
    );
    let backward = pump(out_r, in_w, mode, Direction::Backward, Rng::new(!seed));
    // When either side ends, the connection ends (like a reset).
    tokio::select! {
        _ = forward => {}
        _ = backward => {}
    }
}

/// Waits until `direction` may carry a chunk and applies the mode's delay.
/// Returns false if the proxy is gone.
async fn admit(mode: &mut watch::Receiver<LinkMode>, direction: Direction, rng: &mut Rng) -> bool {
    loop {
        let m = *mode.borrow_and_update();
        let blocked = match m {
            LinkMode::Cut => true,
            LinkMode::OneWay => direction == Direction::Backward,
            _ => false,
        };
        if blocked {
            if mode.changed().await.is_err() {
                return false;
            }
            continue;
        }
        match m {
            LinkMode::Delay { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            LinkMode::Lossy { percent } if rng.chance(u64::from(percent)) => {
                tokio::time::sleep(Duration::from_millis(RETRANSMIT_MS)).await
            }
            _ => return true,
        }
        // The mode may have changed during the delay: check once more, but
        // without delaying the same chunk twice.
        let m = *mode.borrow_and_update();
        let blocked = match m {
            LinkMode::Cut => true,
            LinkMode::OneWay => direction == Direction::Backward,
            _ => false,
        };
        if !blocked {
            return true;
        }
    }
}

async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    mut mode: watch::Receiver<LinkMode>,
    direction: Direction,
    mut rng: Rng,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = writer.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if !admit(&mut mode, direction, &mut rng).await {
            return;
        }
        if writer.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// An echo server counting the bytes it received.
    async fn echo() -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let received = Arc::new(AtomicUsize::new(0));
        let r = received.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut s, _)) = l.accept().await {
                let r = r.clone();
                conns.spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        r.fetch_add(n, Ordering::SeqCst);
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, received, task)
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"ping" => Some(start.elapsed()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn pass_carries_bytes_both_ways() {
        let (target, _, _server) = echo().await;
        let proxy = Proxy::start(target).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_some());
        assert_eq!(proxy.connections(), 1);
    }

    #[tokio::test]
    async fn cut_refuses_new_connections_and_stalls_old_ones_until_healed() {
        let (target, _, _server) = echo().await;
        let proxy = Proxy::start(target).await.expect("proxy");
        let mut old = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut old, Duration::from_secs(2)).await.is_some());
        proxy.set(LinkMode::Cut);
        // A new connection is closed at once: reading gives EOF or an error.
        let mut new = TcpStream::connect(proxy.addr()).await.expect("tcp accept");
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), new.read(&mut buf))
            .await
            .expect("closed, not hanging");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        // The old one stalls...
        old.write_all(b"ping").await.expect("write is buffered");
        let mut buf = [0u8; 4];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), old.read_exact(&mut buf))
                .await
                .is_err()
        );
        // ...and the bytes arrive once healed.
        proxy.set(LinkMode::Pass);
        tokio::time::timeout(Duration::from_secs(2), old.read_exact(&mut buf))
            .await
            .expect("delivered after the heal")
            .expect("read");
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn one_way_delivers_requests_but_not_replies() {
        let (target, received, _server) = echo().await;
        let proxy = Proxy::start(target).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_some());
        proxy.set(LinkMode::OneWay);
        assert!(
            round_trip(&mut s, Duration::from_millis(300))
                .await
                .is_none()
        );
        // The target got the second ping all the same.
        let deadline = Instant::now() + Duration::from_secs(2);
        while received.load(Ordering::SeqCst) < 8 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(received.load(Ordering::SeqCst), 8);
    }

    #[tokio::test]
    async fn delay_and_loss_slow_every_round_trip() {
        let (target, _, _server) = echo().await;
        let proxy = Proxy::start(target).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        proxy.set(LinkMode::Delay { ms: 100 });
        let rtt = round_trip(&mut s, Duration::from_secs(2))
            .await
            .expect("answer");
        // Delayed on the way there and on the way back.
        assert!(rtt >= Duration::from_millis(200), "{rtt:?}");
        proxy.set(LinkMode::Lossy { percent: 100 });
        let rtt = round_trip(&mut s, Duration::from_secs(2))
            .await
            .expect("answer");
        assert!(rtt >= Duration::from_millis(2 * RETRANSMIT_MS), "{rtt:?}");
        proxy.set(LinkMode::Pass);
        let rtt = round_trip(&mut s, Duration::from_secs(2))
            .await
            .expect("answer");
        assert!(rtt < Duration::from_millis(150), "{rtt:?}");
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let (target, _, _server) = echo().await;
        let proxy = Proxy::start(target).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_some());
        drop(proxy);
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("closed, not hanging");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
}
