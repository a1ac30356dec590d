//! Encoding of node-to-node messages: bincode (raftlock-core's encoding)
//! inside a `RaftMessage` with a CRC32 the receiver checks, so a damaged
//! frame is an error and never a wrong Raft message. The message names the
//! encoding (peer protocol 1, [`super::version`]); one in a version this
//! build cannot read is refused, never decoded.

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
    #[error(
        "{what}: encoded in peer protocol {version}, which this build (protocol {}) cannot read",
        super::version::SUPPORTED
    )]
    Version { what: &'static str, version: u32 },
}

pub(crate) fn pack<T: Serialize>(value: &T) -> RaftMessage {
    let data = raftlock_core::encode(value);
    RaftMessage {
        crc32: crc32fast::hash(&data),
        data,
        protocol: super::version::BINCODE,
        ..RaftMessage::default()
    }
}

pub(crate) fn unpack<T: DeserializeOwned>(
    what: &'static str,
    message: &RaftMessage,
) -> Result<T, WireError> {
    let version = super::version::of_message(message.protocol);
    if version != super::version::BINCODE {
        return Err(WireError::Version { what, version });
    }
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
        match e {
            WireError::Version { .. } => raftlock_proto::errors::status(
                raftlock_proto::errors::ErrorReason::PeerVersionMismatch,
                e.to_string(),
                Default::default(),
            ),
            e => tonic::Status::invalid_argument(e.to_string()),
        }
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

    #[test]
    fn a_message_in_an_unknown_protocol_version_is_refused_not_decoded() {
        let mut m = pack(&(1u64, "x".to_string()));
        assert_eq!(m.protocol, 1);
        // A build before versioning leaves the field at 0: protocol 1.
        m.protocol = 0;
        assert!(unpack::<(u64, String)>("t", &m).is_ok());
        m.protocol = 2;
        let err = unpack::<(u64, String)>("t", &m).expect_err("version 2");
        assert!(
            matches!(err, WireError::Version { version: 2, .. }),
            "{err}"
        );
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("peer protocol 2"),
            "{}",
            status.message()
        );
    }
}
