//! Encoding of node-to-node messages: bincode (raftlock-core's encoding)
//! inside a `RaftMessage` with a CRC32 the receiver checks, so a damaged
//! frame is an error and never a wrong Raft message. The message names the
//! encoding (peer protocol 1, [`super::version`]); one in a version this
//! build cannot read is refused, never decoded.

use std::sync::atomic::{AtomicU64, Ordering};

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raftlock_core::{Applied, Command};
use raftlock_proto::internal::v1::RaftMessage;
use raftlock_store::TypeConfig;

use super::codec::{ForwardAnswer, IndexAnswer, KeepAliveRequest, ReadIndexRequest};
use super::forward::KeepAliveForward;
use super::version::{BINCODE, PROTOBUF};
use crate::error::NodeError;

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
    #[error("{what}: {source}")]
    Codec {
        what: &'static str,
        source: raftlock_codec::CodecError,
    },
    #[error(
        "{what}: encoded in peer protocol {version}, which this build (protocol {}) cannot read",
        super::version::SUPPORTED
    )]
    Version { what: &'static str, version: u32 },
}

/// A peer message: its encoding in each peer protocol version this build
/// speaks (1: bincode of the Rust type; 2: raftlock-codec's protobuf).
pub(crate) trait Wire: Sized {
    /// Names the message in errors.
    const WHAT: &'static str;
    fn encode_as(&self, version: u32) -> Result<Vec<u8>, WireError>;
    fn decode_from(version: u32, bytes: &[u8]) -> Result<Self, WireError>;
}

/// What a message read in protocol 1 must satisfy besides decoding: what
/// protocol 2's decoder checks itself and the store needs (a log entry this
/// build could not store would stop the node: openraft takes a storage
/// error for fatal).
trait Storable {
    fn storable(&self) -> Result<(), raftlock_codec::CodecError> {
        Ok(())
    }
}

impl Storable for AppendEntriesRequest<TypeConfig> {
    fn storable(&self) -> Result<(), raftlock_codec::CodecError> {
        for entry in &self.entries {
            if let openraft::EntryPayload::Normal(request) = &entry.payload {
                raftlock_codec::check_nesting(&request.command)?;
            }
        }
        Ok(())
    }
}

impl Storable for Command {
    fn storable(&self) -> Result<(), raftlock_codec::CodecError> {
        raftlock_codec::check_nesting(self)
    }
}

impl Storable for Result<AppendEntriesResponse<u64>, RaftError<u64>> {}
impl Storable for VoteRequest<u64> {}
impl Storable for Result<VoteResponse<u64>, RaftError<u64>> {}
impl Storable for InstallSnapshotRequest<TypeConfig> {}
impl Storable for Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {}

/// A peer answer (of Forward, ReadIndex, KeepAlive): a message that has a
/// failure form, so that whatever goes wrong while answering, the caller
/// gets a failure in the shape it decodes.
pub(crate) trait Answer: Wire {
    /// This answer type's failure carrying `error`.
    fn failure(error: NodeError) -> Self;
}

impl<T> Answer for Result<T, NodeError>
where
    Result<T, NodeError>: Wire,
{
    fn failure(error: NodeError) -> Self {
        Err(error)
    }
}

/// Types whose protocol-2 form is raftlock-codec's own.
macro_rules! wire_by_codec {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl Wire for $t {
            const WHAT: &'static str = $what;
            fn encode_as(&self, version: u32) -> Result<Vec<u8>, WireError> {
                match version {
                    BINCODE => Ok(raftlock_core::encode(self)),
                    PROTOBUF => raftlock_codec::encode(self)
                        .map_err(|source| WireError::Codec { what: $what, source }),
                    version => Err(WireError::Version { what: $what, version }),
                }
            }
            fn decode_from(version: u32, bytes: &[u8]) -> Result<Self, WireError> {
                match version {
                    BINCODE => {
                        let value: Self = raftlock_core::decode($what, bytes)?;
                        value
                            .storable()
                            .map_err(|source| WireError::Codec { what: $what, source })?;
                        Ok(value)
                    }
                    PROTOBUF => raftlock_codec::decode(bytes)
                        .map_err(|source| WireError::Codec { what: $what, source }),
                    version => Err(WireError::Version { what: $what, version }),
                }
            }
        }
    )*};
}

wire_by_codec! {
    AppendEntriesRequest<TypeConfig> => "append entries request",
    Result<AppendEntriesResponse<u64>, RaftError<u64>> => "append entries answer",
    VoteRequest<u64> => "vote request",
    Result<VoteResponse<u64>, RaftError<u64>> => "vote answer",
    InstallSnapshotRequest<TypeConfig> => "install snapshot request",
    Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> => "install snapshot answer",
    Command => "forwarded command",
}

/// Types whose protocol-2 form is a message of [`super::codec`]: `$wrap`
/// made from (`$to`) and taken apart into (`$from`) the value.
macro_rules! wire_by_node_codec {
    ($t:ty, $what:literal, $wrap:ty, $to:expr, $from:expr) => {
        impl Wire for $t {
            const WHAT: &'static str = $what;
            fn encode_as(&self, version: u32) -> Result<Vec<u8>, WireError> {
                match version {
                    BINCODE => Ok(raftlock_core::encode(self)),
                    PROTOBUF => {
                        let to: fn(&$t) -> $wrap = $to;
                        raftlock_codec::encode(&to(self)).map_err(|source| WireError::Codec {
                            what: $what,
                            source,
                        })
                    }
                    version => Err(WireError::Version {
                        what: $what,
                        version,
                    }),
                }
            }
            fn decode_from(version: u32, bytes: &[u8]) -> Result<Self, WireError> {
                match version {
                    BINCODE => Ok(raftlock_core::decode($what, bytes)?),
                    PROTOBUF => {
                        let from: fn($wrap) -> $t = $from;
                        raftlock_codec::decode::<$wrap>(bytes)
                            .map(from)
                            .map_err(|source| WireError::Codec {
                                what: $what,
                                source,
                            })
                    }
                    version => Err(WireError::Version {
                        what: $what,
                        version,
                    }),
                }
            }
        }
    };
}

wire_by_node_codec!(
    Result<Applied, NodeError>,
    "forward answer",
    ForwardAnswer,
    |r| ForwardAnswer(r.clone()),
    |a| a.0
);
wire_by_node_codec!(
    Result<u64, NodeError>,
    "read index or keep-alive answer",
    IndexAnswer,
    |r| IndexAnswer(r.clone()),
    |a| a.0
);
wire_by_node_codec!(
    KeepAliveForward,
    "keep-alive",
    KeepAliveRequest,
    |k| KeepAliveRequest(k.lease),
    |k| KeepAliveForward { lease: k.0 }
);
wire_by_node_codec!(
    (),
    "read-index request",
    ReadIndexRequest,
    |_| ReadIndexRequest,
    |_| ()
);

/// `value` in peer protocol `version`, with its checksum.
pub(crate) fn pack<T: Wire>(value: &T, version: u32) -> Result<RaftMessage, WireError> {
    let data = value.encode_as(version)?;
    Ok(RaftMessage {
        crc32: crc32fast::hash(&data),
        data,
        protocol: version,
        ..RaftMessage::default()
    })
}

/// `value` in peer protocol 1 (which always encodes), for tests.
#[cfg(test)]
pub(crate) fn pack1<T: Wire>(value: &T) -> RaftMessage {
    match pack(value, BINCODE) {
        Ok(m) => m,
        Err(e) => unreachable!("bincode always encodes: {e}"),
    }
}

/// The value of `message`, decoded in the protocol version it names, once
/// its checksum matches. `what` names it in errors.
pub(crate) fn unpack<T: Wire>(message: &RaftMessage) -> Result<T, WireError> {
    let what = T::WHAT;
    let version = super::version::of_message(message.protocol);
    if !super::version::SUPPORTED.contains(version) {
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
    T::decode_from(version, &message.data)
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

    fn forward_answers() -> Vec<Result<Applied, NodeError>> {
        vec![
            Err(NodeError::NotLeader {
                leader_id: 3,
                leader_addr: "127.0.0.1:7403".into(),
            }),
            Err(NodeError::Lock(raftlock_core::LockError::InvalidArgument {
                field: "name".into(),
                reason: "empty".into(),
            })),
            Err(NodeError::WaitTimeout {
                waited_ms: 250,
                released_after_grant: true,
            }),
            Err(NodeError::Denied {
                identity: "worker".into(),
                missing: "lock on billing/x".into(),
                why: "no rule".into(),
            }),
            Err(NodeError::TooManyWatchers { max: 7 }),
            Err(NodeError::Internal("disk".into())),
        ]
    }

    #[test]
    fn every_forwarded_message_round_trips_in_every_protocol_version() {
        for version in [BINCODE, PROTOBUF] {
            for answer in forward_answers() {
                let m = pack(&answer, version).expect("encodes");
                assert_eq!(m.protocol, version);
                let back: Result<Applied, NodeError> = unpack(&m).expect("decodes");
                assert_eq!(back, answer, "protocol {version}");
            }
            for answer in [
                Ok(42u64),
                Err(NodeError::NoLeader),
                Err(NodeError::ShuttingDown),
            ] {
                let m = pack(&answer, version).expect("encodes");
                let back: Result<u64, NodeError> = unpack(&m).expect("decodes");
                assert_eq!(back, answer, "protocol {version}");
            }
            let m = pack(&KeepAliveForward { lease: 9 }, version).expect("encodes");
            assert_eq!(unpack::<KeepAliveForward>(&m).expect("decodes").lease, 9);
            let m = pack(&(), version).expect("encodes");
            unpack::<()>(&m).expect("decodes");
            let command = Command::RevokeLease { lease: 5 };
            let m = pack(&command, version).expect("encodes");
            assert_eq!(unpack::<Command>(&m).expect("decodes"), command);
        }
    }

    /// The failure form of every forwarded call's answer type is decoded
    /// by the caller of that call as the same failure, in every protocol.
    #[test]
    fn each_forwarded_answer_failure_form_round_trips_in_every_protocol_version() {
        let errors = || {
            forward_answers()
                .into_iter()
                .filter_map(Result::err)
                .chain([
                    NodeError::NoLeader,
                    NodeError::ShuttingDown,
                    NodeError::Internal("could not encode".into()),
                ])
        };
        for version in [BINCODE, PROTOBUF] {
            for error in errors() {
                // Forward.
                let failure = <Result<Applied, NodeError> as Answer>::failure(error.clone());
                let m = pack(&failure, version).expect("encodes");
                let back: Result<Applied, NodeError> = unpack(&m).expect("decodes");
                assert_eq!(back, Err(error.clone()), "forward, protocol {version}");
                // ReadIndex and KeepAlive.
                let failure = <Result<u64, NodeError> as Answer>::failure(error.clone());
                let m = pack(&failure, version).expect("encodes");
                let back: Result<u64, NodeError> = unpack(&m).expect("decodes");
                assert_eq!(back, Err(error), "index answer, protocol {version}");
            }
        }
    }

    #[test]
    fn a_protocol_1_entry_this_build_could_not_store_is_refused() {
        let mut command = Command::Tick;
        for _ in 0..=raftlock_codec::MAX_BATCH_NESTING {
            command = Command::Batch {
                commands: vec![command],
            };
        }
        let entry = |command: Command| openraft::Entry::<TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 7),
            payload: openraft::EntryPayload::Normal(raftlock_core::Request::new(1, 2, command)),
        };
        let request = |command: Command| AppendEntriesRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![entry(command)],
            leader_commit: None,
        };
        // Bincode writes it; the store could not (the codec refuses it).
        let m = pack1(&request(command.clone()));
        let err = unpack::<AppendEntriesRequest<TypeConfig>>(&m).expect_err("too deep");
        assert!(err.to_string().contains("append entries request"), "{err}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::InvalidArgument
        );
        assert!(unpack::<Command>(&pack1(&command)).is_err());
        // One level less is stored as usual.
        let Command::Batch { commands } = command else {
            unreachable!("built as a batch")
        };
        let fine = commands.into_iter().next().expect("one inner");
        unpack::<AppendEntriesRequest<TypeConfig>>(&pack1(&request(fine))).expect("storable");
    }

    #[test]
    fn the_two_versions_differ_and_one_is_never_read_as_the_other() {
        let command = Command::RevokeLease { lease: 5 };
        let one = pack(&command, BINCODE).expect("encodes");
        let two = pack(&command, PROTOBUF).expect("encodes");
        assert_ne!(one.data, two.data);
        // A protobuf body labelled protocol 1 is an error, not a command.
        let mut mislabelled = two.clone();
        mislabelled.protocol = BINCODE;
        assert!(unpack::<Command>(&mislabelled).is_err());
        // The envelope names the kind: a vote read as a command is refused.
        let vote = pack(&(), PROTOBUF).expect("encodes");
        assert!(unpack::<Command>(&vote).is_err());
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_error() {
        let mut m = pack(&Command::RevokeLease { lease: 1 }, PROTOBUF).expect("encodes");
        m.data[0] ^= 1;
        assert!(matches!(
            unpack::<Command>(&m),
            Err(WireError::Checksum { .. })
        ));
    }

    #[test]
    fn a_message_in_an_unknown_protocol_version_is_refused_not_decoded() {
        let mut m = pack(&Command::RevokeLease { lease: 1 }, BINCODE).expect("encodes");
        // A build before versioning leaves the field at 0: protocol 1.
        m.protocol = 0;
        assert!(unpack::<Command>(&m).is_ok());
        m.protocol = 7;
        let err = unpack::<Command>(&m).expect_err("version 7");
        assert!(
            matches!(err, WireError::Version { version: 7, .. }),
            "{err}"
        );
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("peer protocol 7"),
            "{}",
            status.message()
        );
        assert!(pack(&Command::RevokeLease { lease: 1 }, 7).is_err());
    }
}
