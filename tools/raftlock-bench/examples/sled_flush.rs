//! How long a sled insert + flush takes on this disk (the floor of a
//! durable Raft append).
//!
//! cargo run --release -p raftlock-bench --example sled_flush
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 << 20)
        .open()?;
    let tree = db.open_tree("log")?;
    let n = 2_000u64;
    let start = Instant::now();
    for i in 0..n {
        tree.insert(i.to_be_bytes(), vec![0u8; 200])?;
        db.flush()?;
    }
    let per = start.elapsed() / n as u32;
    println!("insert+flush: {per:?} each ({n} times)");
    let start = Instant::now();
    for i in 0..n {
        tree.insert((n + i).to_be_bytes(), vec![0u8; 200])?;
    }
    db.flush()?;
    println!("insert only : {:?} each", start.elapsed() / n as u32);
    Ok(())
}
