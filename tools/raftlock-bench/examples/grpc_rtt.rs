//! One gRPC unary round trip between two processes over loopback: a
//! `grpc.health.v1` Check, answered by a tonic server on a one-worker
//! runtime (as `raftlock serve` runs). Measured twice per client runtime:
//! through tonic's `Channel` (a tower Buffer task in front of the HTTP/2
//! connection, as every raftlock client uses) and through a bare hyper
//! HTTP/2 connection; then a 100-byte echo over tokio TCP between the same
//! two runtimes, which is the share of the runtimes and the kernel. Compare
//! with `loopback_rtt`, the same hop between two blocking threads.
//!
//! cargo run --release -p raftlock-bench --example grpc_rtt [-- ROUNDS]

use std::future::Future;
use std::io::BufRead;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::body::Body;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A hyper HTTP/2 connection as a tonic client transport, with no task
/// between the caller and the connection.
#[derive(Clone)]
struct Bare(hyper::client::conn::http2::SendRequest<Body>);

impl tower::Service<http::Request<Body>> for Bare {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // tonic gives a path only; HTTP/2 wants the scheme and authority.
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(http::uri::Authority::from_static("127.0.0.1"));
        *request.uri_mut() = http::Uri::from_parts(parts).expect("a path and an authority");
        Box::pin(self.0.send_request(request))
    }
}

/// The server process: prints its gRPC port and its echo port, serves until
/// its stdin closes.
fn serve() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!(
            "{} {}",
            listener.local_addr().expect("local addr").port(),
            echo.local_addr().expect("local addr").port()
        );
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = echo.accept().await {
                stream.set_nodelay(true).expect("TCP_NODELAY");
                tokio::spawn(async move {
                    let mut buf = [0u8; 100];
                    while stream.read_exact(&mut buf).await.is_ok() {
                        if stream.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let (_reporter, health) = tonic_health::server::health_reporter();
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |accepted| {
                if let Ok(stream) = &accepted {
                    stream.set_nodelay(true).expect("TCP_NODELAY");
                }
                accepted
            },
        );
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().lines().count();
        });
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stdin_closed.await;
            })
            .await
            .expect("serve");
    });
}

async fn per_call<T>(client: &mut HealthClient<T>, rounds: u32) -> Duration
where
    T: tonic::client::GrpcService<Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    for _ in 0..rounds / 10 {
        client.check(check()).await.expect("warm-up check");
    }
    let started = Instant::now();
    for _ in 0..rounds {
        client.check(check()).await.expect("check");
    }
    started.elapsed() / rounds
}

fn main() {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("serve") {
        return serve();
    }
    let rounds: u32 = arg.and_then(|s| s.parse().ok()).unwrap_or(5_000).max(10);
    let exe = std::env::current_exe().expect("current exe");
    let mut server = Command::new(exe)
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().expect("server stdout"))
        .read_line(&mut line)
        .expect("server port");
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|p| p.parse().expect("a port"))
        .collect();
    let (port, echo_port) = (ports[0], ports[1]);

    for (name, mut builder) in [
        (
            "current-thread",
            tokio::runtime::Builder::new_current_thread(),
        ),
        ("one-worker", {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(1);
            b
        }),
    ] {
        let rt = builder.enable_all().build().expect("runtime");
        rt.block_on(async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("endpoint")
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .expect("connect");
            let t = per_call(&mut HealthClient::new(channel), rounds).await;
            println!("{name} client, tonic Channel:     {t:?} per call");

            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let (send, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .expect("HTTP/2 handshake");
            tokio::spawn(connection);
            let t = per_call(&mut HealthClient::new(Bare(send)), rounds).await;
            println!("{name} client, bare hyper HTTP/2: {t:?} per call");

            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", echo_port))
                .await
                .expect("connect");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let mut buf = [0u8; 100];
            let started = Instant::now();
            for _ in 0..rounds {
                stream.write_all(&buf).await.expect("echo write");
                stream.read_exact(&mut buf).await.expect("echo read");
            }
            let t = started.elapsed() / rounds;
            println!("{name} client, tokio TCP echo:    {t:?} per round trip ({rounds} rounds)");
        });
    }
    drop(server.stdin.take());
    let _ = server.wait();
}
