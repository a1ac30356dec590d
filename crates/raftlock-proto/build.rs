//! Generates the gRPC code from ../../proto with a vendored protoc, so a build
//! needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the
    // environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("raftlock/v1/raftlock.proto"),
        root.join("raftlock/internal/v1/raft.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("raftlock_descriptor.bin"))
        .compile_protos(&files, std::slice::from_ref(&root))?;

    // The storage format: messages only (no service), compiled apart so
    // that its BTreeMaps (equal values give equal bytes; prost's default
    // HashMap encodes in a random order) do not change the gRPC types, and
    // so that it stays out of the reflection descriptor set: it is not an
    // API a client can call.
    let storage = root.join("raftlock/storage/v1/storage.proto");
    println!("cargo:rerun-if-changed={}", storage.display());
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .btree_map(".raftlock.storage")
        .compile_protos(&[storage], &[root])?;
    Ok(())
}
