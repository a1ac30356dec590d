//! Encoding of node-to-node messages: bincode (raftlock-core's encoding)
//! inside a `RaftMessage` with a CRC32 the receiver checks, so a damaged
//! frame is an error and never a wrong Raft message.

use std::sync::atomic::{AtomicU64, Ordering};

use raftlock_proto::internal::v1::RaftMessage;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{what}: checksum mismatch (stored {expected:#010x}, computed {actual:#010x})")]
    Checksum {
        what: &'static str,
        expected: u32,
        actual: u32,
    },
    #[error("{0}")]
    Decode(#[from] raftlock_core::DecodeError),
}

pub(crate) fn pack<T: Serialize>(value: &T) -> RaftMessage {
    let data = raftlock_core::encode(value);
    RaftMessage {
        crc32: crc32fast::hash(&data),
        data,
        ..RaftMessage::default()
    }
}

pub(crate) fn unpack<T: DeserializeOwned>(
    what: &'static str,
    message: &RaftMessage,
) -> Result<T, WireError> {
    let actual = crc32fast::hash(&message.data);
    if actual != message.crc32 {
        return Err(WireError::Checksum {
            what,
            expected: message.crc32,
            actual,
        });
    }
    Ok(raftlock_core::decode(what, &message.data)?)
}

/// Counts a peer message this node refused and says why in the log: every
/// one at debug, the 1st, 2nd, 4th, 8th... at warn, so a flood of garbage
/// cannot flood the log (`raftlock_peer_messages_refused_total` has them all).
pub(crate) fn note_refused(count: &AtomicU64, method: &'static str, why: &dyn std::fmt::Display) {
    let n = count.fetch_add(1, Ordering::Relaxed).saturating_add(1);
    if n.is_power_of_two() {
        tracing::warn!(method, refused_total = n, "refused a peer message: {why}");
    } else {
        tracing::debug!(method, refused_total = n, "refused a peer message: {why}");
    }
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_is_a_checksum_error() {
        let mut m = pack(&(1u64, "x".to_string()));
        assert_eq!(
            unpack::<(u64, String)>("t", &m).unwrap(),
            (1, "x".to_string())
        );
        m.data[0] ^= 1;
        assert!(matches!(
            unpack::<(u64, String)>("t", &m),
            Err(WireError::Checksum { .. })
        ));
    }
}
