//! The floor of one network hop here: a 100-byte ping-pong over loopback
//! TCP (TCP_NODELAY) between two threads, with no gRPC. Compare with the
//! "grpc status round trip" of `RAW=2000 inprocess_bench`.
//!
//! cargo run --release -p raftlock-bench --example loopback_rtt [-- ROUNDS]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 100];
        for _ in 0..rounds {
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = [0u8; 100];
    let start = Instant::now();
    for _ in 0..rounds {
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
    }
    let per = start.elapsed() / rounds;
    echo.join().expect("echo thread")?;
    println!("loopback TCP round trip: {per:?} ({rounds} rounds)");
    Ok(())
}
