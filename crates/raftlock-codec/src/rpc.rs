//! openraft 0.9's RPC payloads, which nodes send and never store:
//! AppendEntries, Vote and InstallSnapshot requests, and their answers
//! (`Result<response, RaftError>`).
//!
//! Lossy in one place, on purpose: a fatal storage error of the callee
//! arrives as its text (an `StorageError::IO` of subject `None`), because
//! openraft's `StorageError` carries sources and backtraces with no stable
//! shape, and the caller only reports it.

use openraft::error::{Fatal, Infallible, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    AnyError, BasicNode, Entry, ErrorSubject, ErrorVerb, RaftTypeConfig, SnapshotSegmentId,
    StorageError, StorageIOError,
};
use raftlock_core::Request;

use crate::raft::{
    entry_from, entry_to, log_id_from, log_id_to, meta_from, meta_to, vote_from, vote_to,
};
use crate::{Codec, CodecError, pb, required};

/// raftlock's type configurations: any with raftlock's payload, node id,
/// node and entry type.
pub trait RaftlockConfig:
    RaftTypeConfig<D = Request, NodeId = u64, Node = BasicNode, Entry = Entry<Self>>
{
}
impl<C> RaftlockConfig for C where
    C: RaftTypeConfig<D = Request, NodeId = u64, Node = BasicNode, Entry = Entry<C>>
{
}

impl<C: RaftlockConfig> Codec for AppendEntriesRequest<C> {
    const KIND: pb::BodyKind = pb::BodyKind::AppendEntriesRequest;
    const WHAT: &'static str = "AppendEntries request";
    type Proto = pb::AppendEntriesRequest;
    fn to_proto(&self) -> Result<pb::AppendEntriesRequest, CodecError> {
        Ok(pb::AppendEntriesRequest {
            vote: Some(vote_to(&self.vote)),
            prev_log_id: self.prev_log_id.as_ref().map(log_id_to),
            entries: self
                .entries
                .iter()
                .map(entry_to)
                .collect::<Result<_, _>>()?,
            leader_commit: self.leader_commit.as_ref().map(log_id_to),
        })
    }
    fn from_proto(proto: pb::AppendEntriesRequest) -> Result<Self, CodecError> {
        Ok(AppendEntriesRequest {
            vote: vote_from(proto.vote, "AppendEntriesRequest.vote")?,
            prev_log_id: proto
                .prev_log_id
                .map(|l| log_id_from(l, "AppendEntriesRequest.prev_log_id.leader_id"))
                .transpose()?,
            entries: proto
                .entries
                .into_iter()
                .map(entry_from)
                .collect::<Result<_, _>>()?,
            leader_commit: proto
                .leader_commit
                .map(|l| log_id_from(l, "AppendEntriesRequest.leader_commit.leader_id"))
                .transpose()?,
        })
    }
}

fn append_response_to(r: &AppendEntriesResponse<u64>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response as a;
    use pb::append_entries_response::Response as R;
    pb::AppendEntriesResponse {
        response: Some(match r {
            AppendEntriesResponse::Success => R::Success(a::Success {}),
            AppendEntriesResponse::PartialSuccess(matching) => {
                R::PartialSuccess(a::PartialSuccess {
                    matching: matching.as_ref().map(log_id_to),
                })
            }
            AppendEntriesResponse::Conflict => R::Conflict(a::Conflict {}),
            AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to(v)),
        }),
    }
}

fn append_response_from(
    r: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<u64>, CodecError> {
    use pb::append_entries_response::Response as R;
    Ok(
        match required(r.response, "AppendEntriesResponse.response")? {
            R::Success(_) => AppendEntriesResponse::Success,
            R::PartialSuccess(p) => AppendEntriesResponse::PartialSuccess(
                p.matching
                    .map(|l| log_id_from(l, "AppendEntriesResponse.partial_success.matching"))
                    .transpose()?,
            ),
            R::Conflict(_) => AppendEntriesResponse::Conflict,
            R::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from(
                Some(v),
                "AppendEntriesResponse.higher_vote",
            )?),
        },
    )
}

/// The API error of a call: none for AppendEntries and Vote, a snapshot
/// mismatch for InstallSnapshot.
pub trait ApiError: Sized {
    fn to_proto(&self) -> pb::raft_error::Error;
    fn from_proto(error: pb::raft_error::SnapshotMismatch) -> Result<Self, CodecError>;
}

impl ApiError for Infallible {
    fn to_proto(&self) -> pb::raft_error::Error {
        match *self {}
    }
    fn from_proto(_: pb::raft_error::SnapshotMismatch) -> Result<Self, CodecError> {
        Err(CodecError::Invalid {
            field: "RaftError.snapshot_mismatch",
            detail: "only an InstallSnapshot answer may carry a snapshot mismatch".into(),
        })
    }
}

fn segment_to(s: &SnapshotSegmentId) -> pb::SnapshotSegmentId {
    pb::SnapshotSegmentId {
        id: s.id.clone(),
        offset: s.offset,
    }
}

fn segment_from(
    s: Option<pb::SnapshotSegmentId>,
    field: &'static str,
) -> Result<SnapshotSegmentId, CodecError> {
    let s = required(s, field)?;
    Ok(SnapshotSegmentId {
        id: s.id,
        offset: s.offset,
    })
}

impl ApiError for InstallSnapshotError {
    fn to_proto(&self) -> pb::raft_error::Error {
        let InstallSnapshotError::SnapshotMismatch(m) = self;
        pb::raft_error::Error::SnapshotMismatch(pb::raft_error::SnapshotMismatch {
            expect: Some(segment_to(&m.expect)),
            got: Some(segment_to(&m.got)),
        })
    }
    fn from_proto(m: pb::raft_error::SnapshotMismatch) -> Result<Self, CodecError> {
        Ok(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: segment_from(m.expect, "RaftError.SnapshotMismatch.expect")?,
            got: segment_from(m.got, "RaftError.SnapshotMismatch.got")?,
        }))
    }
}

fn raft_error_to<E: ApiError>(e: &RaftError<u64, E>) -> pb::RaftError {
    use pb::raft_error::{Error as R, FatalKind as K};
    let fatal = |kind: K, message: String| {
        R::Fatal(pb::raft_error::Fatal {
            kind: kind as i32,
            message,
        })
    };
    pb::RaftError {
        error: Some(match e {
            RaftError::APIError(api) => api.to_proto(),
            RaftError::Fatal(Fatal::StorageError(s)) => fatal(K::Storage, s.to_string()),
            RaftError::Fatal(Fatal::Panicked) => fatal(K::Panicked, String::new()),
            RaftError::Fatal(Fatal::Stopped) => fatal(K::Stopped, String::new()),
        }),
    }
}

fn raft_error_from<E: ApiError>(e: pb::RaftError) -> Result<RaftError<u64, E>, CodecError> {
    use pb::raft_error::{Error as R, FatalKind as K};
    Ok(match required(e.error, "RaftError.error")? {
        R::SnapshotMismatch(m) => RaftError::APIError(E::from_proto(m)?),
        R::Fatal(f) => RaftError::Fatal(match K::try_from(f.kind) {
            Ok(K::Storage) => Fatal::StorageError(StorageError::IO {
                source: StorageIOError::new(
                    ErrorSubject::None,
                    ErrorVerb::Read,
                    AnyError::error(f.message),
                ),
            }),
            Ok(K::Panicked) => Fatal::Panicked,
            Ok(K::Stopped) => Fatal::Stopped,
            Ok(K::Unspecified) | Err(_) => {
                return Err(CodecError::UnknownValue {
                    field: "RaftError.Fatal.kind",
                    value: f.kind,
                });
            }
        }),
    })
}

impl Codec for Result<AppendEntriesResponse<u64>, RaftError<u64>> {
    const KIND: pb::BodyKind = pb::BodyKind::AppendEntriesAnswer;
    const WHAT: &'static str = "AppendEntries answer";
    type Proto = pb::AppendEntriesAnswer;
    fn to_proto(&self) -> Result<pb::AppendEntriesAnswer, CodecError> {
        use pb::append_entries_answer::Answer as A;
        Ok(pb::AppendEntriesAnswer {
            answer: Some(match self {
                Ok(r) => A::Ok(append_response_to(r)),
                Err(e) => A::Err(raft_error_to(e)),
            }),
        })
    }
    fn from_proto(proto: pb::AppendEntriesAnswer) -> Result<Self, CodecError> {
        use pb::append_entries_answer::Answer as A;
        Ok(
            match required(proto.answer, "AppendEntriesAnswer.answer")? {
                A::Ok(r) => Ok(append_response_from(r)?),
                A::Err(e) => Err(raft_error_from(e)?),
            },
        )
    }
}

impl Codec for VoteRequest<u64> {
    const KIND: pb::BodyKind = pb::BodyKind::VoteRequest;
    const WHAT: &'static str = "Vote request";
    type Proto = pb::VoteRequest;
    fn to_proto(&self) -> Result<pb::VoteRequest, CodecError> {
        Ok(pb::VoteRequest {
            vote: Some(vote_to(&self.vote)),
            last_log_id: self.last_log_id.as_ref().map(log_id_to),
        })
    }
    fn from_proto(proto: pb::VoteRequest) -> Result<Self, CodecError> {
        Ok(VoteRequest {
            vote: vote_from(proto.vote, "VoteRequest.vote")?,
            last_log_id: proto
                .last_log_id
                .map(|l| log_id_from(l, "VoteRequest.last_log_id.leader_id"))
                .transpose()?,
        })
    }
}

impl Codec for Result<VoteResponse<u64>, RaftError<u64>> {
    const KIND: pb::BodyKind = pb::BodyKind::VoteAnswer;
    const WHAT: &'static str = "Vote answer";
    type Proto = pb::VoteAnswer;
    fn to_proto(&self) -> Result<pb::VoteAnswer, CodecError> {
        use pb::vote_answer::Answer as A;
        Ok(pb::VoteAnswer {
            answer: Some(match self {
                Ok(r) => A::Ok(pb::VoteResponse {
                    vote: Some(vote_to(&r.vote)),
                    vote_granted: r.vote_granted,
                    last_log_id: r.last_log_id.as_ref().map(log_id_to),
                }),
                Err(e) => A::Err(raft_error_to(e)),
            }),
        })
    }
    fn from_proto(proto: pb::VoteAnswer) -> Result<Self, CodecError> {
        use pb::vote_answer::Answer as A;
        Ok(match required(proto.answer, "VoteAnswer.answer")? {
            A::Ok(r) => Ok(VoteResponse {
                vote: vote_from(r.vote, "VoteResponse.vote")?,
                vote_granted: r.vote_granted,
                last_log_id: r
                    .last_log_id
                    .map(|l| log_id_from(l, "VoteResponse.last_log_id.leader_id"))
                    .transpose()?,
            }),
            A::Err(e) => Err(raft_error_from(e)?),
        })
    }
}

impl<C: RaftlockConfig> Codec for InstallSnapshotRequest<C> {
    const KIND: pb::BodyKind = pb::BodyKind::InstallSnapshotRequest;
    const WHAT: &'static str = "InstallSnapshot request";
    type Proto = pb::InstallSnapshotRequest;
    fn to_proto(&self) -> Result<pb::InstallSnapshotRequest, CodecError> {
        Ok(pb::InstallSnapshotRequest {
            vote: Some(vote_to(&self.vote)),
            meta: Some(meta_to(&self.meta)),
            offset: self.offset,
            data: self.data.clone(),
            done: self.done,
        })
    }
    fn from_proto(proto: pb::InstallSnapshotRequest) -> Result<Self, CodecError> {
        Ok(InstallSnapshotRequest {
            vote: vote_from(proto.vote, "InstallSnapshotRequest.vote")?,
            meta: meta_from(proto.meta, "InstallSnapshotRequest.meta")?,
            offset: proto.offset,
            data: proto.data,
            done: proto.done,
        })
    }
}

impl Codec for Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
    const KIND: pb::BodyKind = pb::BodyKind::InstallSnapshotAnswer;
    const WHAT: &'static str = "InstallSnapshot answer";
    type Proto = pb::InstallSnapshotAnswer;
    fn to_proto(&self) -> Result<pb::InstallSnapshotAnswer, CodecError> {
        use pb::install_snapshot_answer::Answer as A;
        Ok(pb::InstallSnapshotAnswer {
            answer: Some(match self {
                Ok(r) => A::Ok(pb::InstallSnapshotResponse {
                    vote: Some(vote_to(&r.vote)),
                }),
                Err(e) => A::Err(raft_error_to(e)),
            }),
        })
    }
    fn from_proto(proto: pb::InstallSnapshotAnswer) -> Result<Self, CodecError> {
        use pb::install_snapshot_answer::Answer as A;
        Ok(
            match required(proto.answer, "InstallSnapshotAnswer.answer")? {
                A::Ok(r) => Ok(InstallSnapshotResponse {
                    vote: vote_from(r.vote, "InstallSnapshotResponse.vote")?,
                }),
                A::Err(e) => Err(raft_error_from(e)?),
            },
        )
    }
}
