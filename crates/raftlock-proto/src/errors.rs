//! The error contract of raftlock's API, written once (as etcd's
//! `rpctypes/error.go`): the metadata keys, and for every [`ErrorReason`] its
//! status code, whether a call that failed with it may have been applied, and
//! whether to retry it. Nodes build their statuses with [`status`]; the Rust
//! client, the CLI and the fault harness read them with [`classify`]. No
//! other code spells a reason or a key.
//!
//! The reasons themselves are the proto enum `raftlock.v1.ErrorReason`, so
//! clients in every language get the same names.

use std::collections::HashMap;

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use crate::v1::ErrorReason;

/// The domain of raftlock's google.rpc.ErrorInfo details.
pub const ERROR_DOMAIN: &str = "raftlock.dev";
/// Response metadata key carrying the reason, for clients without
/// rich-error support.
pub const REASON_KEY: &str = "raftlock-reason";
/// Response metadata keys naming the current leader on successful replies
/// (when known), so a client sends its next calls there.
pub const LEADER_ID_KEY: &str = "raftlock-leader-id";
pub const LEADER_ADDR_KEY: &str = "raftlock-leader-addr";

/// Keys of ErrorInfo.metadata.
pub mod detail {
    /// NOT_LEADER and OUTCOME_UNKNOWN: the leader's node id and address.
    pub const LEADER_ID: &str = "leader_id";
    pub const LEADER_ADDR: &str = "leader_addr";
    /// Bad input: the request field at fault.
    pub const FIELD: &str = "field";
    /// The lock name concerned (LOCK_BUSY, NOT_HOLDER, STALE_TOKEN).
    pub const NAME: &str = "name";
    /// COMPACTED: the oldest revision the node still has.
    pub const OLDEST_REVISION: &str = "oldest_revision";
    /// DENIED: the rule the caller's identity lacks (`lock on jobs/x`).
    pub const MISSING: &str = "missing";
    /// DENIED and UNAUTHENTICATED: the identity the node saw, if any.
    pub const IDENTITY: &str = "identity";
    /// PEER_VERSION_MISMATCH between nodes: the cluster id of the node
    /// that answered, when it has one (a node deciding whether to
    /// bootstrap learns from it that the peer is in a cluster, whatever
    /// its version).
    pub const CLUSTER_ID: &str = "cluster_id";
}

/// Whether a call that failed took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Refused: the call changed nothing.
    No,
    /// The call took effect and was withdrawn before the answer (a wait that
    /// timed out or was dropped): nothing of it remains, though a hold may
    /// have existed in between (a grant racing the timeout, then released).
    Undone,
    /// It may or may not have taken effect.
    Unknown,
}

/// What to do next about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Do not retry: the answer is final (the same call gets the same answer)
    /// or says nothing a retry would fix.
    Never,
    /// Retry at once at the leader the status names.
    AtLeader,
    /// Retry after a pause, at another node: nothing was applied.
    AfterPause,
    /// The outcome is unknown: retry (after a pause, at another node) only
    /// a call that is safe to repeat: an acquire, extend or keep-alive of
    /// the same lease (an acquire gets the same hold back), a lease grant
    /// (a retry may leave an unused lease, which expires after its ttl), a
    /// membership change; never a force-release by name or a revoke. A
    /// release by token may be repeated, but a NOT_HOLDER then may mean the
    /// first attempt released it: report that as unknown, or treat
    /// NOT_HOLDER as done (as the Rust client's guards do).
    IfIdempotent,
}

/// Who produces a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Sent by nodes in statuses.
    Node,
    /// Set by client libraries for failures they detect themselves; a node
    /// never sends it.
    Client,
}

/// Everything the contract says about one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The gRPC status code a node answers with.
    pub code: Code,
    pub applied: Applied,
    /// What to do about it (NOT_LEADER: [`Retry::AtLeader`] when the status
    /// names a leader, see [`classify`]).
    pub retry: Retry,
    pub origin: Origin,
}

impl ErrorReason {
    /// Every reason but ERROR_REASON_UNSPECIFIED.
    pub const ALL: [ErrorReason; 37] = [
        ErrorReason::InvalidName,
        ErrorReason::InvalidArgument,
        ErrorReason::TooLarge,
        ErrorReason::TtlOutOfRange,
        ErrorReason::LimitExceeded,
        ErrorReason::LeaseNotFound,
        ErrorReason::LeaseExpiring,
        ErrorReason::LockNotFound,
        ErrorReason::WaiterNotFound,
        ErrorReason::LockBusy,
        ErrorReason::NotHolder,
        ErrorReason::StaleToken,
        ErrorReason::KindConflict,
        ErrorReason::PermitsMismatch,
        ErrorReason::HeldInOtherMode,
        ErrorReason::PartiallyHeld,
        ErrorReason::AlreadyWaiting,
        ErrorReason::WaitTimeout,
        ErrorReason::WaitDropped,
        ErrorReason::NotLeader,
        ErrorReason::NoLeader,
        ErrorReason::OutcomeUnknown,
        ErrorReason::Timeout,
        ErrorReason::ShuttingDown,
        ErrorReason::Compacted,
        ErrorReason::SlowWatcher,
        ErrorReason::Internal,
        ErrorReason::Denied,
        ErrorReason::Unauthenticated,
        ErrorReason::RateLimited,
        ErrorReason::ClusterMismatch,
        ErrorReason::PeerVersionMismatch,
        ErrorReason::LeaseLost,
        ErrorReason::Unavailable,
        ErrorReason::DeadlineExceeded,
        ErrorReason::AlreadyHeld,
        ErrorReason::InvalidEndpoint,
    ];

    /// The contract for this reason: the one table of it.
    pub fn rule(self) -> Rule {
        use Applied::{No, Undone, Unknown};
        use ErrorReason as R;
        use Origin::{Client, Node};
        let (code, applied, retry, origin) = match self {
            R::InvalidName | R::InvalidArgument | R::TooLarge | R::TtlOutOfRange => {
                (Code::InvalidArgument, No, Retry::Never, Node)
            }
            R::LimitExceeded => (Code::ResourceExhausted, No, Retry::Never, Node),
            R::LeaseNotFound | R::LeaseExpiring | R::LockNotFound | R::WaiterNotFound => {
                (Code::NotFound, No, Retry::Never, Node)
            }
            R::NotHolder | R::StaleToken => (Code::PermissionDenied, No, Retry::Never, Node),
            R::LockBusy
            | R::KindConflict
            | R::PermitsMismatch
            | R::HeldInOtherMode
            | R::PartiallyHeld
            | R::AlreadyWaiting => (Code::FailedPrecondition, No, Retry::Never, Node),
            R::WaitTimeout => (Code::DeadlineExceeded, Undone, Retry::Never, Node),
            R::WaitDropped => (Code::Aborted, Undone, Retry::Never, Node),
            R::NotLeader | R::NoLeader => (Code::Unavailable, No, Retry::AfterPause, Node),
            R::OutcomeUnknown | R::ShuttingDown => {
                (Code::Unavailable, Unknown, Retry::IfIdempotent, Node)
            }
            R::Timeout => (Code::DeadlineExceeded, Unknown, Retry::IfIdempotent, Node),
            R::Compacted => (Code::OutOfRange, No, Retry::Never, Node),
            R::SlowWatcher => (Code::ResourceExhausted, No, Retry::Never, Node),
            // A storage fault or a bug: the same call would likely meet it
            // again, and it may have been half done.
            R::Internal => (Code::Internal, Unknown, Retry::Never, Node),
            R::Denied => (Code::PermissionDenied, No, Retry::Never, Node),
            R::Unauthenticated => (Code::Unauthenticated, No, Retry::Never, Node),
            R::RateLimited => (Code::ResourceExhausted, No, Retry::AfterPause, Node),
            R::ClusterMismatch | R::PeerVersionMismatch => {
                (Code::FailedPrecondition, No, Retry::Never, Node)
            }
            R::LeaseLost => (Code::NotFound, No, Retry::Never, Client),
            R::Unavailable => (Code::Unavailable, No, Retry::AfterPause, Client),
            R::DeadlineExceeded => (Code::DeadlineExceeded, Unknown, Retry::Never, Client),
            R::AlreadyHeld => (Code::FailedPrecondition, No, Retry::Never, Client),
            R::InvalidEndpoint => (Code::InvalidArgument, No, Retry::Never, Client),
            // Not a reason: what a status without one gets.
            R::Unspecified => (Code::Unknown, Unknown, Retry::Never, Client),
        };
        Rule {
            code,
            applied,
            retry,
            origin,
        }
    }

    /// The status code a node answers this reason with.
    pub fn code(self) -> Code {
        self.rule().code
    }

    /// The wire name (e.g. `"LOCK_BUSY"`).
    pub fn name(self) -> &'static str {
        self.as_str_name()
    }

    /// The reason named `name`, if this build knows it (never
    /// ERROR_REASON_UNSPECIFIED).
    pub fn parse(name: &str) -> Option<ErrorReason> {
        ErrorReason::from_str_name(name).filter(|r| *r != ErrorReason::Unspecified)
    }

    /// Bad input: the caller must change the request.
    pub fn is_invalid_input(self) -> bool {
        matches!(
            self,
            ErrorReason::InvalidName
                | ErrorReason::InvalidArgument
                | ErrorReason::TooLarge
                | ErrorReason::TtlOutOfRange
                | ErrorReason::InvalidEndpoint
        )
    }

    /// The lease is gone, or no longer known to be alive: its locks must
    /// not be used.
    pub fn is_lease_gone(self) -> bool {
        matches!(
            self,
            ErrorReason::LeaseNotFound | ErrorReason::LeaseExpiring | ErrorReason::LeaseLost
        )
    }

    /// The request conflicts with how the lock or lease is held now.
    pub fn is_conflict(self) -> bool {
        matches!(
            self,
            ErrorReason::KindConflict
                | ErrorReason::PermitsMismatch
                | ErrorReason::HeldInOtherMode
                | ErrorReason::PartiallyHeld
                | ErrorReason::AlreadyWaiting
        )
    }
}

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A node's status for `reason`: its code, an ErrorInfo detail with
/// `details` (keys from [`detail`]), and the reason in [`REASON_KEY`].
pub fn status(
    reason: ErrorReason,
    message: impl Into<String>,
    details: HashMap<String, String>,
) -> Status {
    let info = ErrorDetails::with_error_info(reason.name(), ERROR_DOMAIN, details);
    let mut status = Status::with_error_details(reason.code(), message, info);
    status.metadata_mut().insert(
        REASON_KEY,
        tonic::metadata::MetadataValue::from_static(reason.name()),
    );
    status
}

/// The reason a status carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// One this build knows, sent by a node.
    Known(ErrorReason),
    /// A name this build does not know (a newer node's), or a client-side
    /// one that no node sends.
    Unrecognized(String),
    /// None: the status came from the transport, a proxy, or anything that
    /// is not a raftlock node.
    Absent,
}

/// The leader a status names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub id: Option<u64>,
    /// `host:port`, never empty.
    pub addr: String,
}

/// What a failed call's status means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub reason: Reason,
    /// NOT_LEADER and OUTCOME_UNKNOWN name the leader when they know it.
    pub leader: Option<LeaderHint>,
    /// ErrorInfo.metadata (see [`detail`]); empty without ErrorInfo.
    pub metadata: HashMap<String, String>,
    pub applied: Applied,
    pub retry: Retry,
}

impl Classified {
    /// The known reason, if any.
    pub fn known(&self) -> Option<ErrorReason> {
        match self.reason {
            Reason::Known(r) => Some(r),
            _ => None,
        }
    }

    /// The reason's name, or for a status without one its code in capitals
    /// (`UNAVAILABLE`, `INTERNAL`...), for messages and histories.
    pub fn reason_text(&self, status: &Status) -> String {
        match &self.reason {
            Reason::Known(r) => r.name().to_string(),
            Reason::Unrecognized(s) => s.clone(),
            Reason::Absent => code_name(status.code()).to_string(),
        }
    }

    /// Whether the status is a node's final answer to the call: it was not
    /// applied or was undone, and retrying gets the same answer.
    pub fn is_definite_refusal(&self) -> bool {
        self.known().is_some() && self.applied != Applied::Unknown && self.retry == Retry::Never
    }
}

/// Reads a status: its reason (from ErrorInfo of domain [`ERROR_DOMAIN`], or
/// [`REASON_KEY`]), the leader it names, and what the contract says about
/// it. A status without a raftlock reason is judged by its code: a
/// connection that could not be opened ([`never_sent`]) applied nothing; a
/// call cut off in the transport (UNAVAILABLE, UNKNOWN, CANCELLED) may have
/// been applied and may be retried if idempotent; anything else (a proxy's
/// error, the call's own deadline) may have been applied and is final.
pub fn classify(status: &Status) -> Classified {
    let (name, metadata) = match status.get_details_error_info() {
        Some(info) if info.domain == ERROR_DOMAIN => (Some(info.reason), info.metadata),
        _ => (reason_in(status.metadata()), HashMap::new()),
    };
    let reason = match name {
        None => Reason::Absent,
        Some(n) => match ErrorReason::parse(&n) {
            Some(r) if r.rule().origin == Origin::Node => Reason::Known(r),
            _ => Reason::Unrecognized(n),
        },
    };
    let leader = metadata
        .get(detail::LEADER_ADDR)
        .filter(|a| !a.is_empty())
        .map(|addr| LeaderHint {
            id: metadata.get(detail::LEADER_ID).and_then(|i| i.parse().ok()),
            addr: addr.clone(),
        });
    let (applied, retry) = match &reason {
        Reason::Known(r) => {
            let rule = r.rule();
            let retry = match (r, &leader) {
                (ErrorReason::NotLeader, Some(_)) => Retry::AtLeader,
                _ => rule.retry,
            };
            (rule.applied, retry)
        }
        Reason::Unrecognized(_) => (Applied::Unknown, Retry::Never),
        Reason::Absent => match status.code() {
            Code::Unavailable if never_sent(status) => (Applied::No, Retry::AfterPause),
            Code::Unavailable | Code::Unknown | Code::Cancelled => {
                (Applied::Unknown, Retry::IfIdempotent)
            }
            _ => (Applied::Unknown, Retry::Never),
        },
    };
    Classified {
        reason,
        leader,
        metadata,
        applied,
        retry,
    }
}

/// The reason in a status's [`REASON_KEY`] metadata.
fn reason_in(md: &MetadataMap) -> Option<String> {
    md.get(REASON_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The leader's address a successful reply names ([`LEADER_ADDR_KEY`]).
pub fn leader_addr_in(md: &MetadataMap) -> Option<&str> {
    md.get(LEADER_ADDR_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty())
}

/// Whether a failed call certainly never reached its server: tonic could
/// not open the connection (a name that does not resolve, refused,
/// unreachable, connect timeout), so no byte of the request was sent.
/// tonic keeps the cause, a `tonic::ConnectError`, in the status's source
/// chain; a status that lost its source (one passed through a channel) is
/// known by hyper's words for the two ways connecting fails.
pub fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let says_so = |text: &str| text.contains("tcp connect error") || text.contains("dns error");
    if says_so(status.message()) {
        return true;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() || says_so(&e.to_string()) {
            return true;
        }
        source = e.source();
    }
    false
}

/// A status code's name as gRPC spells it (`UNAVAILABLE`,
/// `DEADLINE_EXCEEDED`...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader_details() -> HashMap<String, String> {
        HashMap::from([
            (detail::LEADER_ID.to_string(), "2".to_string()),
            (
                detail::LEADER_ADDR.to_string(),
                "127.0.0.1:7402".to_string(),
            ),
        ])
    }

    #[test]
    fn every_reason_round_trips_through_a_status_and_classify() {
        let mut names = std::collections::HashSet::new();
        for r in ErrorReason::ALL {
            assert!(names.insert(r.name()), "{r} named twice");
            assert_eq!(ErrorReason::parse(r.name()), Some(r));
            let rule = r.rule();
            let s = status(r, "msg", leader_details());
            assert_eq!(s.code(), rule.code, "{r}");
            assert_eq!(s.metadata().get(REASON_KEY).unwrap(), r.name());
            let c = classify(&s);
            match rule.origin {
                Origin::Node => {
                    assert_eq!(c.reason, Reason::Known(r));
                    assert_eq!(c.applied, rule.applied, "{r}");
                    let retry = if r == ErrorReason::NotLeader {
                        Retry::AtLeader
                    } else {
                        rule.retry
                    };
                    assert_eq!(c.retry, retry, "{r}");
                    assert_eq!(c.leader.as_ref().map(|l| l.id), Some(Some(2)));
                    // Only a definite, final answer says the call changed
                    // nothing and retrying is pointless.
                    assert_eq!(
                        c.is_definite_refusal(),
                        rule.applied != Applied::Unknown && rule.retry == Retry::Never,
                        "{r}"
                    );
                }
                // A node never sends these: arriving in a status they are
                // as good as unknown.
                Origin::Client => {
                    assert_eq!(c.reason, Reason::Unrecognized(r.name().into()));
                    assert_eq!((c.applied, c.retry), (Applied::Unknown, Retry::Never));
                }
            }
            // The plain metadata key alone gives the same reason.
            let mut plain = Status::new(rule.code, "msg");
            plain
                .metadata_mut()
                .insert(REASON_KEY, r.name().parse().unwrap());
            assert_eq!(classify(&plain).reason, c.reason, "{r}");
        }
        // Every value of the proto enum is in ALL, or is UNSPECIFIED.
        let in_proto = (0..=1000)
            .filter_map(|i| ErrorReason::try_from(i).ok())
            .filter(|r| *r != ErrorReason::Unspecified)
            .count();
        assert_eq!(in_proto, ErrorReason::ALL.len());
        assert_eq!(ErrorReason::parse("ERROR_REASON_UNSPECIFIED"), None);
    }

    #[test]
    fn refusals_that_change_nothing_are_not_applied_and_final() {
        for r in [
            ErrorReason::LockBusy,
            ErrorReason::NotHolder,
            ErrorReason::StaleToken,
            ErrorReason::InvalidName,
            ErrorReason::LeaseNotFound,
            ErrorReason::LimitExceeded,
        ] {
            let c = classify(&status(r, "m", HashMap::new()));
            assert_eq!((c.applied, c.retry), (Applied::No, Retry::Never), "{r}");
        }
    }

    #[test]
    fn a_forward_whose_answer_was_lost_is_unknown_and_retried_only_if_idempotent() {
        for r in [
            ErrorReason::OutcomeUnknown,
            ErrorReason::Timeout,
            ErrorReason::ShuttingDown,
        ] {
            let c = classify(&status(r, "m", HashMap::new()));
            assert_eq!(
                (c.applied, c.retry),
                (Applied::Unknown, Retry::IfIdempotent),
                "{r}"
            );
        }
        // INTERNAL may have been half done, and a retry would meet it again.
        let c = classify(&status(ErrorReason::Internal, "m", HashMap::new()));
        assert_eq!((c.applied, c.retry), (Applied::Unknown, Retry::Never));
    }

    #[test]
    fn not_leader_goes_to_the_named_leader_or_pauses() {
        let c = classify(&status(ErrorReason::NotLeader, "m", leader_details()));
        assert_eq!(c.retry, Retry::AtLeader);
        assert_eq!(
            c.leader,
            Some(LeaderHint {
                id: Some(2),
                addr: "127.0.0.1:7402".into()
            })
        );
        assert_eq!(c.applied, Applied::No);
        let c = classify(&status(ErrorReason::NotLeader, "m", HashMap::new()));
        assert_eq!((c.retry, c.leader), (Retry::AfterPause, None));
        let c = classify(&status(ErrorReason::NoLeader, "m", HashMap::new()));
        assert_eq!((c.applied, c.retry), (Applied::No, Retry::AfterPause));
    }

    #[test]
    fn statuses_without_a_reason_are_judged_by_code() {
        // A refused connection, or a name that does not resolve, sent nothing.
        for s in [
            Status::unavailable("tcp connect error"),
            Status::unavailable("dns error"),
        ] {
            let c = classify(&s);
            assert_eq!(
                (c.reason.clone(), c.applied, c.retry),
                (Reason::Absent, Applied::No, Retry::AfterPause)
            );
        }
        // A connection cut mid-call, reset or cancelled: maybe applied.
        for s in [
            Status::unavailable("connection reset"),
            Status::unknown("h2 protocol error"),
            Status::cancelled("stream reset"),
        ] {
            let c = classify(&s);
            assert_eq!(
                (c.applied, c.retry),
                (Applied::Unknown, Retry::IfIdempotent),
                "{s:?}"
            );
        }
        // A proxy's or the call's own error: maybe applied, final.
        for s in [
            Status::internal("proxy error"),
            Status::deadline_exceeded("late"),
            Status::invalid_argument("a proxy's answer"),
            Status::permission_denied("no"),
        ] {
            let c = classify(&s);
            assert_eq!(
                (c.applied, c.retry),
                (Applied::Unknown, Retry::Never),
                "{s:?}"
            );
            assert!(!c.is_definite_refusal());
        }
        assert_eq!(
            classify(&Status::internal("x")).reason_text(&Status::internal("x")),
            "INTERNAL"
        );
    }

    #[test]
    fn an_unknown_reason_from_a_newer_node_is_maybe_applied_and_final() {
        let mut s = Status::failed_precondition("new");
        s.metadata_mut()
            .insert(REASON_KEY, "SOMETHING_NEW".parse().unwrap());
        let c = classify(&s);
        assert_eq!(c.reason, Reason::Unrecognized("SOMETHING_NEW".into()));
        assert_eq!((c.applied, c.retry), (Applied::Unknown, Retry::Never));
        assert_eq!(c.reason_text(&s), "SOMETHING_NEW");
    }

    #[test]
    fn error_info_of_another_domain_is_not_ours() {
        let s = Status::with_error_details(
            Code::FailedPrecondition,
            "m",
            ErrorDetails::with_error_info("LOCK_BUSY", "example.com", HashMap::new()),
        );
        assert_eq!(classify(&s).reason, Reason::Absent);
    }
}
