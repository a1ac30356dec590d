//! The node's two listeners' connections: accepted, limited in number,
//! TLS-terminated when the node has certificates, and labelled with a
//! [`ConnInfo`] that tonic copies into every request of the connection.
//!
//! Handshakes run in their own tasks with a deadline, so a client that
//! opens a connection and sends nothing (or half a handshake) holds one
//! connection slot for at most [`HANDSHAKE_TIMEOUT`] and never delays the
//! others.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use tracing::Instrument;

use crate::conn::ConnInfo;
use crate::tls::{Side, Tls, cert_names};

/// Longest a TLS handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted connection.
pub(crate) struct Conn {
    io: Io,
    info: ConnInfo,
    /// Frees the connection's slot when the connection is dropped.
    _slot: OwnedSemaphorePermit,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Counts of what a listener refused, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// Connections closed because the listener had `max_connections`.
    pub(crate) over_limit: std::sync::atomic::AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub(crate) handshakes: std::sync::atomic::AtomicU64,
}

/// Accepts connections on `listener` until `stop`, at most
/// `max_connections` at once, and yields them (TLS-terminated with `tls`'s
/// current certificates for `side`, when set) as a stream for tonic.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    side: Side,
    max_connections: usize,
    refusals: Arc<Refusals>,
    mut stop: watch::Receiver<bool>,
) -> impl futures::Stream<Item = Result<Conn, io::Error>> {
    let (ready, conns) = mpsc::channel::<Conn>(64);
    let slots = Arc::new(Semaphore::new(max_connections));
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and the like: pause instead of spinning.
                        tracing::warn!(error = %e, ?side, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    refusals
                        .over_limit
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(%remote, ?side, max_connections, "too many connections; closing a new one");
                    continue;
                };
                // tonic's own nodelay applies only to listeners it opens:
                // without it a second small reply waits for a delayed ACK.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let info = ConnInfo {
                    remote: Some(remote),
                    cert: None,
                };
                let Some(tls) = &tls else {
                    let conn = Conn {
                        io: Io::Plain(stream),
                        info,
                        _slot: slot,
                    };
                    if ready.send(conn).await.is_err() {
                        return;
                    }
                    continue;
                };
                let acceptor = TlsAcceptor::from(tls.server_config(side));
                let (ready, refusals) = (ready.clone(), Arc::clone(&refusals));
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(cert_names);
                            let conn = Conn {
                                io: Io::Tls(Box::new(stream)),
                                info: ConnInfo { cert, ..info },
                                _slot: slot,
                            };
                            let _ = ready.send(conn).await;
                        }
                        Ok(Err(e)) => {
                            refusals
                                .handshakes
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!(%remote, ?side, error = %e, "TLS handshake refused");
                        }
                        Err(_) => {
                            refusals
                                .handshakes
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!(%remote, ?side, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
        .instrument(span),
    );
    futures::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(conns),
        Ok::<Conn, io::Error>,
    )
}
