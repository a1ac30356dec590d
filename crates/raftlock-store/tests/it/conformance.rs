//! openraft's own storage conformance suite, run against the sled store.

use crate::common;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};
use raftlock_store::{LogStore, StateMachineStore, StorageError, TypeConfig};
use tempfile::TempDir;

/// Each suite case gets a fresh directory; the `TempDir` guard outlives the
/// stores and deletes it afterwards.
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) = raftlock_store::open(dir.path(), common::options())
            .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite_passes() {
    let started = std::time::Instant::now();
    Suite::test_all(Builder).expect("openraft's storage suite passes");
    eprintln!("openraft storage suite took {:?}", started.elapsed());
}
