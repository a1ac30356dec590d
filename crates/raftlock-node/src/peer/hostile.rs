//! Every payload a peer can send, decoded from hostile bytes: the requests
//! the server half unpacks (AppendEntries, Vote, InstallSnapshot, Forward's
//! command, KeepAlive's lease; ReadIndex's payload is never read) and the
//! answers the client half unpacks. Random bytes behind a valid CRC (so the
//! decoder, not only the checksum, is tried), mutated valid encodings, a
//! forged huge length, round trips. Never a panic; never an allocation of
//! what a length prefix claims (raftlock-core's `decode` bounds it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::error::{Fatal, Infallible, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, Membership, SnapshotMeta, SnapshotSegmentId,
    StoredMembership, Vote,
};
use openraft::{StorageError, StorageIOError};
use proptest::prelude::*;
use raftlock_core::{Applied, Command, LockError, Request, Response};
use raftlock_proto::internal::v1::RaftMessage;
use raftlock_store::{Entry, LogId, NodeId, TypeConfig};
use raftlock_testkit::hostile::{HUGE_LENGTHS, garbage, mutate, mutations, varint_u64};

use super::forward::KeepAliveForward;
use super::wire::{Wire, WireError, pack1, unpack};
use crate::error::NodeError;

type AppendAnswer = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
type VoteAnswer = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
type SnapshotAnswer =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;
type ForwardAnswer = Result<Applied, NodeError>;
/// ReadIndex's and KeepAlive's answers.
type IndexOrTtlAnswer = Result<u64, NodeError>;

/// `data` as a peer would send it, with its right CRC.
fn with_crc(data: Vec<u8>) -> RaftMessage {
    RaftMessage {
        crc32: crc32fast::hash(&data),
        data,
        ..RaftMessage::default()
    }
}

/// Unpacks `message` as every payload type; returns how many decoded.
fn unpack_as_every_payload(message: &RaftMessage) -> usize {
    fn ok<T: Wire>(message: &RaftMessage) -> usize {
        usize::from(unpack::<T>(message).is_ok())
    }
    ok::<AppendEntriesRequest<TypeConfig>>(message)
        + ok::<VoteRequest<NodeId>>(message)
        + ok::<InstallSnapshotRequest<TypeConfig>>(message)
        + ok::<Command>(message)
        + ok::<KeepAliveForward>(message)
        + ok::<AppendAnswer>(message)
        + ok::<VoteAnswer>(message)
        + ok::<SnapshotAnswer>(message)
        + ok::<ForwardAnswer>(message)
        + ok::<IndexOrTtlAnswer>(message)
}

// ----- generated valid payloads --------------------------------------------

fn log_id() -> impl Strategy<Value = LogId> {
    (any::<u64>(), 0u64..8, any::<u64>())
        .prop_map(|(term, node, index)| LogId::new(CommittedLeaderId::new(term, node), index))
}

fn vote() -> impl Strategy<Value = Vote<NodeId>> {
    (any::<u64>(), 0u64..8, any::<bool>()).prop_map(|(term, node, committed)| {
        if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        }
    })
}

fn membership() -> impl Strategy<Value = Membership<NodeId, BasicNode>> {
    prop::collection::btree_set(0u64..8, 1..4).prop_map(|voters| {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
            .collect();
        Membership::new(vec![voters], nodes)
    })
}

/// Every command, batches nested as deep as protocol 2 carries.
fn command() -> impl Strategy<Value = Command> {
    raftlock_testkit::strategies::command(raftlock_codec::MAX_BATCH_NESTING as u32)
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        log_id(),
        prop_oneof![
            Just(EntryPayload::Blank),
            membership().prop_map(EntryPayload::Membership),
            (any::<u64>(), command())
                .prop_map(|(t, c)| EntryPayload::Normal(Request::new(t, t, c))),
        ],
    )
        .prop_map(|(log_id, payload)| Entry { log_id, payload })
}

fn append_request() -> impl Strategy<Value = AppendEntriesRequest<TypeConfig>> {
    (
        vote(),
        prop::option::of(log_id()),
        prop::collection::vec(entry(), 0..4),
        prop::option::of(log_id()),
    )
        .prop_map(
            |(vote, prev_log_id, entries, leader_commit)| AppendEntriesRequest {
                vote,
                prev_log_id,
                entries,
                leader_commit,
            },
        )
}

fn snapshot_request() -> impl Strategy<Value = InstallSnapshotRequest<TypeConfig>> {
    (
        vote(),
        prop::option::of(log_id()),
        membership(),
        "[a-z0-9-]{0,16}",
        any::<u64>(),
        garbage(64),
        any::<bool>(),
    )
        .prop_map(
            |(vote, last, membership, snapshot_id, offset, data, done)| InstallSnapshotRequest {
                vote,
                meta: SnapshotMeta {
                    last_log_id: last,
                    last_membership: StoredMembership::new(last, membership),
                    snapshot_id,
                },
                offset,
                data,
                done,
            },
        )
}

fn node_error() -> impl Strategy<Value = NodeError> {
    prop_oneof![
        Just(NodeError::NoLeader),
        (any::<u64>(), "[0-9.:]{0,21}").prop_map(|(leader_id, leader_addr)| {
            NodeError::NotLeader {
                leader_id,
                leader_addr,
            }
        }),
        "[ -~]{0,40}".prop_map(NodeError::Internal),
        Just(NodeError::Lock(LockError::LeaseNotFound { lease: 7 })),
    ]
}

fn raft_error<E>() -> impl Strategy<Value = RaftError<NodeId, E>>
where
    E: std::error::Error + std::fmt::Debug + Clone + 'static,
{
    prop_oneof![
        Just(RaftError::Fatal(Fatal::Panicked)),
        Just(RaftError::Fatal(Fatal::Stopped)),
        "[a-z ]{0,20}".prop_map(
            |what| RaftError::Fatal(Fatal::StorageError(StorageError::from(
                StorageIOError::write_vote(&std::io::Error::other(what))
            )))
        ),
    ]
}

/// The payload of `message` re-encoded, which must be its own bytes: what
/// decodes is what was sent.
fn round_trips<T: Wire>(value: &T) -> Result<(), TestCaseError> {
    let message = pack1(value);
    let back: T = unpack(&message).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(pack1(&back).data, message.data);
    Ok(())
}

/// Valid encodings of every payload type.
fn valid_payload() -> impl Strategy<Value = Vec<u8>> {
    let encode = |m: RaftMessage| m.data;
    prop_oneof![
        append_request().prop_map(move |r| encode(pack1(&r))),
        (vote(), prop::option::of(log_id()))
            .prop_map(move |(v, l)| encode(pack1(&VoteRequest::new(v, l)))),
        snapshot_request().prop_map(move |r| encode(pack1(&r))),
        command().prop_map(move |c| encode(pack1(&c))),
        any::<u64>().prop_map(move |lease| encode(pack1(&KeepAliveForward { lease }))),
        vote().prop_map(move |v| encode(pack1(&AppendAnswer::Ok(
            AppendEntriesResponse::HigherVote(v)
        )))),
        raft_error::<Infallible>().prop_map(move |e| encode(pack1(&AppendAnswer::Err(e)))),
        (vote(), any::<bool>(), prop::option::of(log_id())).prop_map(
            move |(vote, granted, last)| {
                encode(pack1(&VoteAnswer::Ok(VoteResponse {
                    vote,
                    vote_granted: granted,
                    last_log_id: last,
                })))
            }
        ),
        vote().prop_map(
            move |vote| encode(pack1(&SnapshotAnswer::Ok(InstallSnapshotResponse { vote })))
        ),
        node_error().prop_map(move |e| encode(pack1(&ForwardAnswer::Err(e)))),
        any::<u64>().prop_map(move |i| encode(pack1(&IndexOrTtlAnswer::Ok(i)))),
    ]
}

// ----- the tests -----------------------------------------------------------

#[test]
fn a_wrong_crc_is_refused_before_decoding() {
    let mut message = pack1(&Command::Tick);
    message.crc32 ^= 1;
    assert!(matches!(
        unpack::<Command>(&message),
        Err(WireError::Checksum { .. })
    ));
}

#[test]
fn an_append_entries_claiming_a_huge_string_is_refused_fast() {
    // One entry granting a lease to "xyz": the owner is encoded as its
    // length (3) and its bytes; forge the length.
    let request = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Request::new(
                1,
                1,
                Command::GrantLease {
                    ttl_ms: 1_000,
                    owner: "xyz".into(),
                    identity: String::new(),
                    quota: Default::default(),
                },
            )),
        }],
        leader_commit: None,
    };
    let data = pack1(&request).data;
    let at = data
        .windows(4)
        .position(|w| w == b"\x03xyz")
        .expect("the owner's length and bytes");
    for claimed in HUGE_LENGTHS {
        let mut forged = data.clone();
        forged.splice(at..=at, varint_u64(claimed));
        let started = Instant::now();
        let err = unpack::<AppendEntriesRequest<TypeConfig>>(&with_crc(forged))
            .expect_err("forged length");
        assert!(matches!(err, WireError::Decode(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1), "{claimed}");
    }
}

#[test]
fn a_vote_request_of_many_entries_claimed_is_refused_fast() {
    // Sequences (entries, membership sets) never preallocate what they
    // claim; their elements run out.
    let mut forged = pack1(&VoteRequest::new(Vote::<NodeId>::new(1, 1), None)).data;
    forged.truncate(2);
    forged.extend(varint_u64(u64::MAX));
    let started = Instant::now();
    assert!(unpack::<AppendEntriesRequest<TypeConfig>>(&with_crc(forged.clone())).is_err());
    assert!(unpack::<InstallSnapshotRequest<TypeConfig>>(&with_crc(forged)).is_err());
    assert!(started.elapsed() < Duration::from_secs(1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn random_bytes_with_a_valid_crc_never_panic(bytes in garbage(512)) {
        // Short ones may decode (one byte is a valid lease id); a value or
        // an error, never a panic.
        unpack_as_every_payload(&with_crc(bytes));
    }

    #[test]
    fn random_bytes_with_a_wrong_crc_are_checksum_errors(bytes in garbage(256), crc in any::<u32>()) {
        prop_assume!(crc != crc32fast::hash(&bytes));
        let message = RaftMessage { data: bytes, crc32: crc, ..RaftMessage::default() };
        let checksum = matches!(
            unpack::<AppendEntriesRequest<TypeConfig>>(&message),
            Err(WireError::Checksum { .. })
        );
        prop_assert!(checksum);
        prop_assert_eq!(unpack_as_every_payload(&message), 0);
    }

    #[test]
    fn mutated_payloads_never_panic(payload in valid_payload(), mutations in mutations()) {
        unpack_as_every_payload(&with_crc(mutate(payload, &mutations)));
    }

    #[test]
    fn requests_round_trip(
        append in append_request(),
        snapshot in snapshot_request(),
        command in command(),
        voted in (vote(), prop::option::of(log_id())),
        lease in any::<u64>(),
    ) {
        round_trips(&append)?;
        round_trips(&snapshot)?;
        round_trips(&command)?;
        round_trips(&VoteRequest::new(voted.0, voted.1))?;
        round_trips(&KeepAliveForward { lease })?;
    }

    #[test]
    fn answers_round_trip(
        error in node_error(),
        raft in raft_error::<InstallSnapshotError>(),
        v in vote(),
        index in any::<u64>(),
    ) {
        round_trips(&ForwardAnswer::Err(error.clone()))?;
        round_trips(&ForwardAnswer::Ok(Applied {
            index,
            result: Ok(Response::Nothing),
            events: Vec::new(),
            revision: index,
        }))?;
        round_trips(&IndexOrTtlAnswer::Err(error))?;
        round_trips(&SnapshotAnswer::Err(raft))?;
        round_trips(&SnapshotAnswer::Err(RaftError::APIError(
            InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                expect: SnapshotSegmentId { id: "a".into(), offset: 0 },
                got: SnapshotSegmentId { id: "a".into(), offset: index },
            }),
        )))?;
        round_trips(&AppendAnswer::Ok(AppendEntriesResponse::HigherVote(v)))?;
        round_trips(&AppendAnswer::Ok(AppendEntriesResponse::Conflict))?;
        round_trips(&VoteAnswer::Ok(VoteResponse { vote: v, vote_granted: true, last_log_id: None }))?;
    }
}
