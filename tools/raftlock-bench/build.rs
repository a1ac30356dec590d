//! Generates a gRPC client for the subset of etcd's API that
//! `raftlock-bench --target etcd` uses (proto/etcd_bench*.proto), with a
//! vendored protoc so a build needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the
    // environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let files = [
        root.join("etcd_bench.proto"),
        root.join("etcd_bench_v3lock.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&files, &[root])?;
    Ok(())
}
