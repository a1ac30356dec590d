//! A fault-injecting TCP proxy in front of one address (a node, or one
//! directed link between nodes), switched between modes at runtime.
//!
//! - `Pass`: bytes flow both ways.
//! - `Cut`: new connections are refused (accepted and closed at once) and
//!   existing ones stall in both directions (nothing is read, so TCP
//!   back-pressure builds up as in a real partition); they resume when the
//!   link heals unless an endpoint gave up on them first.
//! - `BlackHole`: a partition as TCP sees it when nothing answers at all:
//!   new connections are accepted and held open but never forwarded, and
//!   existing ones stop carrying bytes for good (they stay dead after a
//!   heal, as connections through a long partition would). Neither end
//!   ever sees the other close.
//! - `OneWay`: the dialer's bytes reach the target, the target's replies
//!   stall (the target hears the dialer, the dialer hears nothing back).
//! - `Delay`: every chunk waits `ms` before being passed on.
//! - `Lossy`: a chunk is "lost" with probability `percent` and passed on
//!   only after a retransmission timeout (TCP never loses bytes; it delays
//!   them), so calls over the link become slow and erratic.
//!
//! [`Proxy::close`] stops the proxy for good: its port refuses connections
//! and every connection through it is closed.

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
    BlackHole,
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

    /// Stops for good: the port is closed and so is every connection
    /// through it, so dialers see refusals and resets, not silence.
    pub fn close(&self) {
        // Aborting the acceptor drops its listener and its JoinSet, which
        // aborts every connection task and closes its sockets.
        self.acceptor.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Nothing blocks here: see `close`.
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
                let now = *mode.borrow();
                match now {
                    LinkMode::Cut => drop(inbound),
                    LinkMode::BlackHole => {
                        // Held open, never forwarded, until the proxy goes.
                        tasks.spawn(async move {
                            let _held = inbound;
                            std::future::pending::<()>().await;
                        });
                    }
                    _ => {
                        connections.fetch_add(1, Ordering::Relaxed);
                        seed = seed.wrapping_add(1);
                        tasks.spawn(carry(inbound, target, mode.subscribe(), seed));
                    }
                }
            }
            // Reap finished connections so the set stays small.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn carry(
    mut inbound: TcpStream,
    target: SocketAddr,
    mode: watch::Receiver<LinkMode>,
    seed: u64,
) {
    let Ok(Ok(mut outbound)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let mut black_hole = mode.clone();
    let black_holed = {
        // Borrowed halves: the sockets outlive the pumps, so a black-holed
        // connection can be held open after they are dropped.
        let (in_r, in_w) = inbound.split();
        let (out_r, out_w) = outbound.split();
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
            _ = forward => false,
            _ = backward => false,
            holed = black_hole.wait_for(|m| *m == LinkMode::BlackHole) => holed.is_ok(),
        }
    };
    if black_holed {
        // Dead for good, but never closed: neither end learns anything.
        std::future::pending::<()>().await;
    }
}

/// Whether `mode` stops chunks going `direction` until it changes.
fn blocks(mode: LinkMode, direction: Direction) -> bool {
    match mode {
        LinkMode::Cut | LinkMode::BlackHole => true,
        LinkMode::OneWay => direction == Direction::Backward,
        _ => false,
    }
}

/// Waits until `direction` may carry a chunk and applies the mode's delay.
/// Returns false if the proxy is gone.
async fn admit(mode: &mut watch::Receiver<LinkMode>, direction: Direction, rng: &mut Rng) -> bool {
    loop {
        let m = *mode.borrow_and_update();
        if blocks(m, direction) {
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
        if !blocks(*mode.borrow_and_update(), direction) {
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

    /// Reading `s` ends (EOF or an error) within 2 s rather than hanging.
    async fn closed_soon(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Nothing arrives on `s` for 300 ms, and it is not closed.
    async fn silent(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1];
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf))
            .await
            .is_err()
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
    async fn a_black_hole_holds_connections_open_and_old_ones_stay_dead_after_the_heal() {
        let (target, received, _server) = echo().await;
        let proxy = Proxy::start(target).await.expect("proxy");
        let mut old = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut old, Duration::from_secs(2)).await.is_some());
        proxy.set(LinkMode::BlackHole);
        // A new connection is accepted, neither forwarded nor closed.
        let mut new = TcpStream::connect(proxy.addr()).await.expect("tcp accept");
        new.write_all(b"ping").await.expect("write is buffered");
        assert!(silent(&mut new).await, "held open, no answer");
        // The old one carries nothing, not even after the heal.
        old.write_all(b"ping").await.expect("write is buffered");
        assert!(silent(&mut old).await);
        proxy.set(LinkMode::Pass);
        assert!(silent(&mut old).await, "stays dead after the heal");
        assert!(silent(&mut new).await, "stays dead after the heal");
        assert_eq!(received.load(Ordering::SeqCst), 4, "only the first ping");
        // New connections pass again.
        let mut fresh = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(
            round_trip(&mut fresh, Duration::from_secs(2))
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn close_refuses_new_connections_and_closes_old_ones() {
        let (target, _, _server) = echo().await;
        let proxy = Proxy::start(target).await.expect("proxy");
        let mut old = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut old, Duration::from_secs(2)).await.is_some());
        proxy.close();
        assert!(closed_soon(&mut old).await, "closed, not hanging");
        // The listener goes with the acceptor task, at its next poll.
        let deadline = Instant::now() + Duration::from_secs(2);
        while TcpStream::connect(proxy.addr()).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after close");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
