//! Whether preallocating a log file matters for `fdatasync` on this disk:
//! 512-byte appends, each followed by `fdatasync`, to a file that grows
//! with every write (as sled's log file does) against one whose space was
//! allocated first (`posix_fallocate`, as etcd's WAL segments are) and one
//! whose blocks were written with zeros first.
//!
//! cargo run --release -p raftlock-bench --example fdatasync_prealloc
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::time::Instant;

const WRITES: u64 = 3_000;
const SIZE: u64 = 512;

fn run(dir: &std::path::Path, how: &str) -> std::io::Result<f64> {
    let path = dir.join(how);
    let file: File = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let total = WRITES * SIZE + 4096;
    match how {
        "fallocate" => {
            // SAFETY: a plain syscall on a descriptor we own.
            let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, total as libc::off_t) };
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            file.sync_all()?;
        }
        "zeroed" => {
            file.write_all_at(&vec![0u8; total as usize], 0)?;
            file.sync_all()?;
        }
        _ => {}
    }
    let buf = vec![b'x'; SIZE as usize];
    let start = Instant::now();
    for i in 0..WRITES {
        file.write_all_at(&buf, i * SIZE)?;
        file.sync_data()?;
    }
    let per_us = start.elapsed().as_secs_f64() * 1e6 / WRITES as f64;
    std::fs::remove_file(&path)?;
    Ok(per_us)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Next to the target directory: the disk the data directories use.
    let dir = tempfile::tempdir_in(".")?;
    for round in 1..=3 {
        let mut line = format!("round {round}:");
        for how in ["growing", "fallocate", "zeroed"] {
            line.push_str(&format!(" {how} {:.0} µs", run(dir.path(), how)?));
        }
        println!("{line}  (512-byte write + fdatasync, {WRITES} times)");
    }
    Ok(())
}
