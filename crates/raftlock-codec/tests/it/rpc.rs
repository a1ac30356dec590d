//! openraft's RPC payloads: AppendEntries, Vote and InstallSnapshot
//! requests and answers come back equal (a fatal storage error as its
//! text), and an answer of one call cannot pass for another's.

use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, SnapshotSegmentId, StorageError, StorageIOError,
};
use proptest::prelude::*;
use prost::Message;
use raftlock_codec::{CodecError, FORMAT, decode, encode, pb};

use crate::strategies::{self, TypeConfig, cases};

pub type AppendAnswer = Result<AppendEntriesResponse<u64>, RaftError<u64>>;
pub type VoteAnswer = Result<VoteResponse<u64>, RaftError<u64>>;
pub type SnapshotAnswer =
    Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;

pub fn append_request() -> impl Strategy<Value = AppendEntriesRequest<TypeConfig>> {
    (
        strategies::vote(),
        proptest::option::of(strategies::log_id()),
        prop::collection::vec(strategies::entry(), 0..4),
        proptest::option::of(strategies::log_id()),
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

/// Which AppendEntries response, and its parts (the response itself is
/// not `Clone`, which a strategy's values must be).
fn append_response()
-> impl Strategy<Value = (u8, Option<openraft::LogId<u64>>, openraft::Vote<u64>)> {
    (
        0u8..4,
        proptest::option::of(strategies::log_id()),
        strategies::vote(),
    )
}

fn build_response(
    (which, matching, vote): (u8, Option<openraft::LogId<u64>>, openraft::Vote<u64>),
) -> AppendEntriesResponse<u64> {
    match which {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(matching),
        2 => AppendEntriesResponse::Conflict,
        _ => AppendEntriesResponse::HigherVote(vote),
    }
}

/// Fatal errors that travel exactly (a storage error travels as text).
fn exact_fatal() -> impl Strategy<Value = Fatal<u64>> {
    prop_oneof![Just(Fatal::Panicked), Just(Fatal::Stopped)]
}

fn segment() -> impl Strategy<Value = SnapshotSegmentId> {
    (strategies::text(), any::<u64>()).prop_map(|(id, offset)| SnapshotSegmentId { id, offset })
}

pub fn snapshot_request() -> impl Strategy<Value = InstallSnapshotRequest<TypeConfig>> {
    (
        strategies::vote(),
        strategies::snapshot_meta(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(|(vote, meta, offset, data, done)| InstallSnapshotRequest {
            vote,
            meta,
            offset,
            data,
            done,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn append_entries_requests_and_answers_round_trip(
        request in append_request(),
        response in append_response(),
        fatal in exact_fatal(),
    ) {
        let bytes = encode(&request).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: AppendEntriesRequest<TypeConfig> =
            decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.vote, request.vote);
        prop_assert_eq!(back.prev_log_id, request.prev_log_id);
        prop_assert_eq!(back.leader_commit, request.leader_commit);
        prop_assert_eq!(back.entries.len(), request.entries.len());
        for (b, r) in back.entries.iter().zip(&request.entries) {
            prop_assert_eq!(b.log_id, r.log_id);
            prop_assert!(b.payload == r.payload);
        }
        prop_assert_eq!(encode(&back).map_err(|e| TestCaseError::fail(e.to_string()))?, bytes);

        for answer in [Ok(build_response(response)), Err(RaftError::Fatal(fatal))] {
            let answer: AppendAnswer = answer;
            let bytes = encode(&answer).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<AppendAnswer>(&bytes), Ok(answer));
        }
    }

    #[test]
    fn vote_requests_and_answers_round_trip(
        vote in strategies::vote(),
        last_log_id in proptest::option::of(strategies::log_id()),
        granted in any::<bool>(),
        fatal in exact_fatal(),
    ) {
        let request = VoteRequest { vote, last_log_id };
        let bytes = encode(&request).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode::<VoteRequest<u64>>(&bytes), Ok(request));
        let response = VoteResponse { vote, vote_granted: granted, last_log_id };
        for answer in [Ok(response), Err(RaftError::Fatal(fatal))] {
            let answer: VoteAnswer = answer;
            let bytes = encode(&answer).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<VoteAnswer>(&bytes), Ok(answer));
        }
    }

    #[test]
    fn install_snapshot_requests_and_answers_round_trip(
        request in snapshot_request(),
        fatal in exact_fatal(),
        expect in segment(),
        got in segment(),
    ) {
        let bytes = encode(&request).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode::<InstallSnapshotRequest<TypeConfig>>(&bytes), Ok(request.clone()));
        let mismatch = InstallSnapshotError::SnapshotMismatch(SnapshotMismatch { expect, got });
        for answer in [
            Ok(InstallSnapshotResponse { vote: request.vote }),
            Err(RaftError::Fatal(fatal)),
            Err(RaftError::APIError(mismatch)),
        ] {
            let answer: SnapshotAnswer = answer;
            let bytes = encode(&answer).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<SnapshotAnswer>(&bytes), Ok(answer));
        }
    }
}

/// A storage error of the callee arrives as its text: what the caller
/// reports is what the callee said.
#[test]
fn a_remote_storage_error_arrives_as_its_text() {
    let error: RaftError<u64> = RaftError::Fatal(Fatal::StorageError(StorageError::IO {
        source: StorageIOError::new(
            ErrorSubject::Logs,
            ErrorVerb::Write,
            AnyError::error("fdatasync failed: EIO"),
        ),
    }));
    let text = error.to_string();
    let answer: AppendAnswer = Err(error);
    let back = decode::<AppendAnswer>(&encode(&answer).expect("encodes")).expect("decodes");
    match back {
        Err(RaftError::Fatal(Fatal::StorageError(e))) => {
            assert!(e.to_string().contains(&text), "{e} lacks {text}")
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
}

/// AppendEntries and Vote have no API error: a snapshot mismatch in their
/// answer is refused, not turned into something else.
#[test]
fn a_snapshot_mismatch_is_refused_in_an_answer_that_cannot_carry_it() {
    let mismatch: SnapshotAnswer = Err(RaftError::APIError(
        InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: SnapshotSegmentId {
                id: "s".into(),
                offset: 0,
            },
            got: SnapshotSegmentId {
                id: "s".into(),
                offset: 9,
            },
        }),
    ));
    let bytes = encode(&mismatch).expect("encodes");
    let body = pb::Envelope::decode(bytes.as_slice())
        .expect("decodes")
        .body;
    // The same body under a Vote answer's kind (the shapes agree).
    let as_vote = pb::Envelope {
        format: FORMAT,
        min_reader: 1,
        body,
        kind: pb::BodyKind::VoteAnswer as i32,
    }
    .encode_to_vec();
    assert!(matches!(
        decode::<VoteAnswer>(&as_vote),
        Err(CodecError::Invalid {
            field: "RaftError.snapshot_mismatch",
            ..
        })
    ));
    // And under its own kind nothing else can read it.
    assert!(matches!(
        decode::<AppendAnswer>(&bytes),
        Err(CodecError::WrongKind { .. })
    ));
}
