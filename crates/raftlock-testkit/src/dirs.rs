//! Temporary directories of the kit's fixtures. They go when their owner
//! is dropped; an owner that also runs processes kills them first (a
//! process still writing would leave files behind). The prefix names
//! whatever a killed test run leaves in the temporary directory.

use tempfile::TempDir;

/// A new, empty temporary directory `raftlock-test-*`.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("raftlock-test-")
        .tempdir()
        .expect("create a temporary directory")
}
