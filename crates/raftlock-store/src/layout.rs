//! The on-disk layout: tree names and keys. Every value is framed by
//! [`crate::frame`] (CRC32 + raftlock's versioned encoding, [`raftlock_codec`]).
//!
//! | tree       | key                         | value                                   |
//! |------------|-----------------------------|-----------------------------------------|
//! | `log`      | index, u64 big-endian       | `openraft::Entry<TypeConfig>`           |
//! | `meta`     | `format_version`            | one byte ([`crate::frame::encode_format_version`]) |
//! | `meta`     | `store_id`                  | UTF-8 text                              |
//! | `meta`     | `vote`                      | `Vote<u64>`                             |
//! | `meta`     | `committed`                 | `Option<LogId<u64>>`                    |
//! | `meta`     | `last_purged`               | `LogId<u64>`                            |
//! | `meta`     | `forced_at`                 | `LogId<u64>` (see [`crate::force`])     |
//! | `sm`       | `H`                         | [`SmHeader`]                            |
//! | `sm`       | `L` + lock name (UTF-8)     | `raftlock_core::Record::Lock`           |
//! | `sm`       | `S` + lease id, u64 BE      | `raftlock_core::Record::Lease`          |
//! | `sm`       | `W` + waiter id, u64 BE     | `raftlock_core::Record::Waiter`         |
//! | `snapshot` | `current`                   | [`StoredSnapshot`] (formats up to 5)    |
//!
//! Since format 6 the current snapshot, the same framed [`StoredSnapshot`],
//! is the file `snapshot` beside sled's files ([`crate::snapshot_file`]),
//! and the `snapshot` tree is empty.
//!
//! Big-endian integer keys sort numerically, so sled ranges are log ranges.

pub use raftlock_codec::{SmHeader, StoredSnapshot};

pub const LOG_TREE: &str = "log";
pub const META_TREE: &str = "meta";
pub const SM_TREE: &str = "sm";
pub const SNAPSHOT_TREE: &str = "snapshot";

pub const FORMAT_VERSION_KEY: &[u8] = b"format_version";
/// The store's random id (a hex string), made with the store.
pub const STORE_ID_KEY: &[u8] = b"store_id";
pub const VOTE_KEY: &[u8] = b"vote";
pub const COMMITTED_KEY: &[u8] = b"committed";
pub const LAST_PURGED_KEY: &[u8] = b"last_purged";
pub const SNAPSHOT_KEY: &[u8] = b"current";
/// The membership entry a `--force-new-cluster` wrote, once it is durable.
pub const FORCED_AT_KEY: &[u8] = b"forced_at";

pub const SM_HEADER_KEY: &[u8] = b"H";
pub const LOCK_PREFIX: u8 = b'L';
pub const LEASE_PREFIX: u8 = b'S';
pub const WAITER_PREFIX: u8 = b'W';

/// Key of the log entry at `index`.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Index of a log key, if it is one.
pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub fn lock_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(LOCK_PREFIX);
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn lease_key(id: u64) -> [u8; 9] {
    id_key(LEASE_PREFIX, id)
}

pub fn waiter_key(id: u64) -> [u8; 9] {
    id_key(WAITER_PREFIX, id)
}

fn id_key(prefix: u8, id: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}
