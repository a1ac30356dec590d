//! Errors: [`OpenError`] for opening a store, [`Damaged`] for a record that
//! fails its checksum or does not decode, and the mapping of both to
//! openraft's `StorageError`.

use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::StorageError;

/// A stored record failed its checksum or could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is damaged: {detail}")]
pub struct Damaged {
    /// The record, e.g. "log entry 42", "vote", "state machine lock \"a\"".
    pub what: String,
    pub detail: String,
}

impl Damaged {
    pub fn new(what: &dyn std::fmt::Display, detail: impl Into<String>) -> Self {
        Damaged {
            what: what.to_string(),
            detail: detail.into(),
        }
    }
}

/// Why [`crate::open`] failed. Each variant names the directory so that an
/// operator can act on the message alone.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// sled could not take its exclusive file lock: another process (or
    /// this one) has the store open.
    #[error(
        "the store in {dir} is already open by another process or by this one (sled's file lock is taken): {detail}"
    )]
    AlreadyOpen { dir: PathBuf, detail: String },
    /// Written by a newer raftlock; opening it could misread its records.
    #[error(
        "the store in {dir} has format version {found}, newer than the newest this build supports ({supported}); run a newer raftlock"
    )]
    NewerFormat {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Written by an older raftlock whose records this build cannot read
    /// (there is no migration yet: pre-1.0 formats are not kept).
    #[error(
        "the store in {dir} has format version {found}, older than this build's ({supported}), which cannot read it; start this node with a new data directory (raftlock dev: --fresh) and add it to the cluster under a new id, or run the raftlock that wrote it"
    )]
    OlderFormat {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A record failed its checksum, did not decode, or the records
    /// contradict each other.
    #[error("the store in {dir} is damaged: {what}: {detail}")]
    Corrupt {
        dir: PathBuf,
        what: String,
        detail: String,
    },
    /// The file system refused (permissions, not a directory, disk full...).
    #[error("I/O error on the store in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// sled refused for another reason (unsupported use, internal bug).
    #[error("sled refused to open the store in {dir}: {detail}")]
    Database { dir: PathBuf, detail: String },
}

impl OpenError {
    pub(crate) fn corrupt(dir: &std::path::Path, damaged: Damaged) -> Self {
        OpenError::Corrupt {
            dir: dir.to_path_buf(),
            what: damaged.what,
            detail: damaged.detail,
        }
    }

    /// Classifies a sled error met while opening.
    pub(crate) fn from_sled(dir: &std::path::Path, error: sled::Error) -> Self {
        let dir = dir.to_path_buf();
        match error {
            // sled turns fs2's WouldBlock into ErrorKind::Other with this
            // message (sled 0.34.7 config.rs `try_lock`).
            sled::Error::Io(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                OpenError::AlreadyOpen {
                    dir,
                    detail: e.to_string(),
                }
            }
            sled::Error::Io(source) => OpenError::Io { dir, source },
            sled::Error::Corruption { at, .. } => OpenError::Corrupt {
                dir,
                what: "sled database file".to_string(),
                detail: format!("sled detected corruption at {at:?}"),
            },
            other => OpenError::Database {
                dir,
                detail: other.to_string(),
            },
        }
    }
}

/// A sled error as openraft's storage error.
pub(crate) fn sled_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: sled::Error,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// A damaged record as openraft's storage error.
pub(crate) fn damaged_error(subject: ErrorSubject<u64>, d: Damaged) -> StorageError {
    StorageIOError::new(subject, ErrorVerb::Read, AnyError::new(&d)).into()
}

/// A value the codec refused to encode, as a storage error (a write that
/// never reached the disk).
pub(crate) fn unencodable_error(subject: ErrorSubject<u64>, d: Damaged) -> StorageError {
    StorageIOError::new(subject, ErrorVerb::Write, AnyError::new(&d)).into()
}

/// A failed background task (panic or cancellation) as a storage error.
pub(crate) fn join_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: tokio::task::JoinError,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}
