//! The client's typed errors, mapped from the server's stable reasons by
//! the API's error contract (`raftlock_proto::errors`).

use raftlock_proto::errors::{self, Classified, ErrorReason, Reason, detail};
use tonic::{Code, Status};

/// Everything a client call can fail with. Each variant names what a caller
/// can act on; [`Error::reason`] gives the server's stable reason string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The lock is held (or reserved by earlier waiters) and the call did not wait.
    #[error("lock is busy: {message}")]
    Busy { message: String },

    /// The wait ended without a grant; the queued request was withdrawn.
    #[error("waited without a grant: {message}")]
    WaitTimeout { message: String },

    /// The lease is gone (expired, revoked, or being expired: `reason`
    /// LEASE_NOT_FOUND or LEASE_EXPIRING, from a node), or the client can
    /// no longer be sure it is alive (LEASE_LOST). Its locks must not be used.
    #[error("lease {lease_id} is lost: {message}")]
    LeaseLost {
        lease_id: u64,
        reason: ErrorReason,
        message: String,
    },

    /// The lease does not hold the lock (it was released or taken away).
    #[error("not the holder: {message}")]
    NotHolder { message: String },

    /// The token is not the one of the current hold.
    #[error("stale fencing token: {message}")]
    StaleToken { message: String },

    /// Bad input (INVALID_NAME, INVALID_ARGUMENT, TOO_LARGE, TTL_OUT_OF_RANGE);
    /// `field` names the request field when the server knows it.
    #[error("invalid argument {field}: {message} ({reason})")]
    InvalidArgument {
        field: String,
        reason: ErrorReason,
        message: String,
    },

    /// The caller's identity may not make this call (DENIED): `missing`
    /// names the rule it lacks (e.g. `lock on billing/x`) and `identity`
    /// the identity the node saw, when the node said (empty otherwise).
    /// Not applied.
    #[error("denied: {message}")]
    Denied {
        missing: String,
        identity: String,
        message: String,
    },

    /// The node accepted no identity from this client (UNAUTHENTICATED):
    /// no client certificate or bearer token, or an unknown one.
    #[error("unauthenticated: {message}")]
    Unauthenticated { message: String },

    /// A configured limit was hit (LIMIT_EXCEEDED), or the identity's
    /// request rate (RATE_LIMITED, after the retries paused for it).
    #[error("limit exceeded: {message}")]
    LimitExceeded {
        reason: ErrorReason,
        message: String,
    },

    /// The request conflicts with how the lock or lease is held now
    /// (KIND_CONFLICT, PERMITS_MISMATCH, HELD_IN_OTHER_MODE, PARTIALLY_HELD,
    /// ALREADY_WAITING).
    #[error("conflict ({reason}): {message}")]
    Conflict {
        reason: ErrorReason,
        message: String,
    },

    /// No node took the call before the retries ran out (no leader, nodes
    /// down or unreachable). Every attempt was definitely refused
    /// (NOT_LEADER, NO_LEADER, a connection that could not be opened), so
    /// a write was NOT applied.
    #[error("cluster unavailable after {attempts} attempt(s): {message}")]
    Unavailable { attempts: u32, message: String },

    /// A write failed in a way that does not say whether it was applied,
    /// and the retries ran out: an attempt's answer was lost (a connection
    /// broke after the request was sent, a node's write TIMEOUT, a node
    /// shutting down under it, a forward to the leader whose answer was
    /// lost: OUTCOME_UNKNOWN, a node's INTERNAL, a status with no raftlock
    /// reason), or a later attempt failed in a way that is not a definite
    /// refusal. The write may take effect, or may have.
    /// An acquire on a [`crate::Session`] that ends so withdraws, in the
    /// background, whatever it may have left for the session's lease on
    /// those names (a hold or a queued request); a new acquire of those
    /// names on that session waits for that first.
    #[error(
        "outcome unknown after {attempts} attempt(s), the call may have been applied: {message}"
    )]
    OutcomeUnknown { attempts: u32, message: String },

    /// The call's client-side deadline passed (the client's `call_timeout`,
    /// or the per-call deadline of a builder or of
    /// [`crate::Client::with_call_timeout`]). When `maybe_applied`, a
    /// write may or may not have been applied (an attempt was under way,
    /// or an earlier one's outcome is unknown), and an acquire cleans up
    /// as after [`Error::OutcomeUnknown`]. When not, nothing was applied:
    /// the deadline passed before anything was sent (waiting for this
    /// session's cleanup of the names, starting `client.lock()`'s session)
    /// or after attempts that were all definitely refused.
    #[error("deadline exceeded: {message}")]
    DeadlineExceeded {
        message: String,
        maybe_applied: bool,
    },

    /// This session already holds `name`, or is acquiring it, through
    /// another guard. A session is one holder (one lease): the server would
    /// answer a second acquire with the same hold, and two guards of one
    /// hold would release each other's lock. Use the guard you have, or
    /// another session (as [`crate::Client::lock`] does by itself).
    #[error("this session (lease {lease_id}) already holds or is acquiring {name:?}")]
    AlreadyHeld { name: String, lease_id: u64 },

    /// TLS with the node at `endpoint` failed: its certificate did not
    /// verify against the trusted CA, it does not name the host, the node
    /// does not speak TLS, or it wanted a client certificate. Not retried
    /// (retrying cannot fix it) and not applied (nothing was sent).
    /// `message` is the TLS library's; `hint` says what to check.
    #[error("TLS with {endpoint} failed: {message}; {hint}")]
    Tls {
        endpoint: String,
        message: String,
        hint: String,
    },

    /// A bad endpoint given to [`crate::Client::connect`].
    #[error("invalid endpoint {endpoint:?}: {message}")]
    InvalidEndpoint { endpoint: String, message: String },

    /// Any other server error, with its reason (e.g. COMPACTED, INTERNAL,
    /// a reason this client does not know, or for a status without one its
    /// code, e.g. PERMISSION_DENIED).
    #[error("{reason}: {message}")]
    Other { reason: String, message: String },
}

/// An error and its causes on one line (tonic's transport errors say
/// only "transport error" at the top).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl Error {
    /// The stable reason string: the server's reason when the error came
    /// from it (e.g. `LOCK_BUSY`), or a client-side one (`UNAVAILABLE`,
    /// `OUTCOME_UNKNOWN`, `DEADLINE_EXCEEDED`, `ALREADY_HELD`,
    /// `INVALID_ENDPOINT`, `LEASE_LOST`): a name of [`ErrorReason`], or for
    /// [`Error::Other`] possibly one this client does not know.
    pub fn reason(&self) -> &str {
        match self {
            Error::Other { reason, .. } => reason,
            e => e.known_reason().name(),
        }
    }

    /// The reason as the contract's enum, when it is one.
    pub fn error_reason(&self) -> Option<ErrorReason> {
        match self {
            Error::Other { reason, .. } => ErrorReason::parse(reason),
            e => Some(e.known_reason()),
        }
    }

    /// The reason of every variant but [`Error::Other`], whose reason is a
    /// string (possibly one this client does not know).
    fn known_reason(&self) -> ErrorReason {
        match self {
            Error::Busy { .. } => ErrorReason::LockBusy,
            Error::WaitTimeout { .. } => ErrorReason::WaitTimeout,
            Error::NotHolder { .. } => ErrorReason::NotHolder,
            Error::StaleToken { .. } => ErrorReason::StaleToken,
            Error::InvalidArgument { reason, .. }
            | Error::Conflict { reason, .. }
            | Error::LeaseLost { reason, .. } => *reason,
            Error::LimitExceeded { reason, .. } => *reason,
            Error::Denied { .. } => ErrorReason::Denied,
            Error::Unauthenticated { .. } => ErrorReason::Unauthenticated,
            Error::Unavailable { .. } | Error::Tls { .. } => ErrorReason::Unavailable,
            Error::OutcomeUnknown { .. } => ErrorReason::OutcomeUnknown,
            Error::DeadlineExceeded { .. } => ErrorReason::DeadlineExceeded,
            Error::AlreadyHeld { .. } => ErrorReason::AlreadyHeld,
            Error::InvalidEndpoint { .. } => ErrorReason::InvalidEndpoint,
            Error::Other { .. } => ErrorReason::Unspecified,
        }
    }

    /// A client-side [`Error::Other`] with a reason of the contract.
    pub(crate) fn other(reason: ErrorReason, message: impl Into<String>) -> Error {
        Error::Other {
            reason: reason.name().to_string(),
            message: message.into(),
        }
    }

    /// True when a watch cannot resume because the events it needs are no
    /// longer in the nodes' in-memory history (reason `COMPACTED`).
    pub fn is_compacted(&self) -> bool {
        self.error_reason() == Some(ErrorReason::Compacted)
    }

    /// True when the call failed but may nevertheless have taken effect:
    /// [`Error::OutcomeUnknown`], and [`Error::DeadlineExceeded`] unless
    /// nothing was sent or every attempt was definitely refused. Every
    /// other error is a definite answer: nothing was applied. (A write's
    /// failure that says nothing definite, such as INTERNAL or a status with
    /// no raftlock reason, is `OutcomeUnknown` whenever an attempt may have
    /// been applied.)
    pub fn may_have_been_applied(&self) -> bool {
        match self {
            Error::OutcomeUnknown { .. } => true,
            Error::DeadlineExceeded { maybe_applied, .. } => *maybe_applied,
            _ => false,
        }
    }

    /// True when the session's lease is known to be gone.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Error::LeaseLost { .. })
    }

    /// [`Error::from_write_classified`] of a status not yet classified.
    #[cfg(test)]
    pub(crate) fn from_write_status(
        status: &Status,
        lease_id: u64,
        attempts: u32,
        maybe_applied: bool,
    ) -> Error {
        Error::from_write_classified(
            status,
            &errors::classify(status),
            lease_id,
            attempts,
            maybe_applied,
        )
    }

    /// Map the last status of a write whose outcome may be unknown: when
    /// `maybe_applied` (this attempt or an earlier one failed without
    /// saying whether it was applied), every failure that is not a definite
    /// raftlock answer is [`Error::OutcomeUnknown`]: "unavailable" after
    /// it, but also INTERNAL, an unknown reason, or a status with no reason
    /// at all (a proxy's, the transport's). Only a raftlock reason that
    /// refuses the request itself (LOCK_BUSY, NOT_HOLDER, INVALID_ARGUMENT,
    /// ...: [`Classified::is_definite_refusal`]) stays what it is, and
    /// [`Error::DeadlineExceeded`] says "maybe applied" already.
    pub(crate) fn from_write_classified(
        status: &Status,
        classified: &Classified,
        lease_id: u64,
        attempts: u32,
        maybe_applied: bool,
    ) -> Error {
        let e = Error::from_classified(status, classified, lease_id, attempts);
        if !maybe_applied || classified.is_definite_refusal() {
            return e;
        }
        match e {
            Error::Unavailable { attempts, message } => Error::OutcomeUnknown { attempts, message },
            e @ Error::DeadlineExceeded { .. } => e,
            e => Error::OutcomeUnknown {
                attempts,
                message: e.to_string(),
            },
        }
    }

    /// Map a server status (after retries gave up on it, or for a
    /// non-retryable one). `lease_id` names the caller's lease, if any.
    /// Failures that say nothing about an outcome (TIMEOUT, SHUTTING_DOWN,
    /// OUTCOME_UNKNOWN, transport errors) are `Unavailable` here; a write
    /// goes through [`Error::from_write_status`].
    pub(crate) fn from_status(status: &Status, lease_id: u64, attempts: u32) -> Error {
        Error::from_classified(status, &errors::classify(status), lease_id, attempts)
    }

    fn from_classified(
        status: &Status,
        classified: &Classified,
        lease_id: u64,
        attempts: u32,
    ) -> Error {
        use ErrorReason as R;
        let message = status.message().to_string();
        let reason = match &classified.reason {
            Reason::Known(r) => *r,
            Reason::Unrecognized(name) => {
                return Error::Other {
                    reason: name.clone(),
                    message,
                };
            }
            Reason::Absent => {
                return match status.code() {
                    Code::Unavailable | Code::Unknown | Code::Cancelled => {
                        Error::Unavailable { attempts, message }
                    }
                    // A server's or a proxy's deadline: the request got there.
                    Code::DeadlineExceeded => Error::DeadlineExceeded {
                        message,
                        maybe_applied: true,
                    },
                    Code::InvalidArgument => Error::InvalidArgument {
                        field: String::new(),
                        reason: R::InvalidArgument,
                        message,
                    },
                    code => Error::Other {
                        reason: errors::code_name(code).to_string(),
                        message,
                    },
                };
            }
        };
        match reason {
            R::LockBusy => Error::Busy { message },
            R::WaitTimeout => Error::WaitTimeout { message },
            R::LeaseNotFound | R::LeaseExpiring | R::LeaseLost => Error::LeaseLost {
                lease_id,
                reason,
                message,
            },
            R::NotHolder => Error::NotHolder { message },
            R::StaleToken => Error::StaleToken { message },
            R::InvalidName
            | R::InvalidArgument
            | R::TooLarge
            | R::TtlOutOfRange
            | R::InvalidEndpoint => Error::InvalidArgument {
                field: classified
                    .metadata
                    .get(detail::FIELD)
                    .cloned()
                    .unwrap_or_default(),
                reason,
                message,
            },
            R::LimitExceeded | R::RateLimited => Error::LimitExceeded { reason, message },
            R::Denied => Error::Denied {
                missing: classified
                    .metadata
                    .get(detail::MISSING)
                    .cloned()
                    .unwrap_or_default(),
                identity: classified
                    .metadata
                    .get(detail::IDENTITY)
                    .cloned()
                    .unwrap_or_default(),
                message,
            },
            R::Unauthenticated => Error::Unauthenticated { message },
            R::KindConflict
            | R::PermitsMismatch
            | R::HeldInOtherMode
            | R::PartiallyHeld
            | R::AlreadyWaiting
            | R::AlreadyHeld => Error::Conflict { reason, message },
            // Retries gave up on these; a write's may be OutcomeUnknown
            // instead (from_write_status).
            R::NotLeader
            | R::NoLeader
            | R::ShuttingDown
            | R::OutcomeUnknown
            | R::Timeout
            | R::Unavailable => Error::Unavailable { attempts, message },
            R::DeadlineExceeded => Error::DeadlineExceeded {
                message,
                maybe_applied: true,
            },
            R::LockNotFound
            | R::WaiterNotFound
            | R::WaitDropped
            | R::Compacted
            | R::SlowWatcher
            | R::Internal
            | R::ClusterMismatch
            | R::PeerVersionMismatch
            | R::Unspecified => Error::Other {
                reason: reason.name().to_string(),
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::{ErrorDetails, StatusExt};

    fn status(code: Code, reason: &str, md: &[(&str, &str)]) -> Status {
        let md = md
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>();
        Status::with_error_details(
            code,
            "msg",
            ErrorDetails::with_error_info(reason, "raftlock.dev", md),
        )
    }

    #[test]
    fn server_reasons_map_to_typed_errors() {
        let e = Error::from_status(&status(Code::FailedPrecondition, "LOCK_BUSY", &[]), 7, 1);
        assert!(matches!(e, Error::Busy { .. }));
        assert_eq!(e.reason(), "LOCK_BUSY");
        let e = Error::from_status(&status(Code::NotFound, "LEASE_EXPIRING", &[]), 7, 1);
        assert_eq!(
            e,
            Error::LeaseLost {
                lease_id: 7,
                reason: ErrorReason::LeaseExpiring,
                message: "msg".into()
            }
        );
        let e = Error::from_status(
            &status(Code::InvalidArgument, "INVALID_NAME", &[("field", "name")]),
            0,
            1,
        );
        assert!(
            matches!(&e, Error::InvalidArgument { field, reason, .. } if field == "name" && *reason == ErrorReason::InvalidName)
        );
        let e = Error::from_status(&status(Code::OutOfRange, "COMPACTED", &[]), 0, 1);
        assert_eq!(e.reason(), "COMPACTED");
    }

    #[test]
    fn a_denial_names_the_missing_rule_and_the_identity() {
        let e = Error::from_status(
            &status(
                Code::PermissionDenied,
                "DENIED",
                &[("missing", "lock on billing/x"), ("identity", "worker")],
            ),
            0,
            1,
        );
        assert!(
            matches!(&e, Error::Denied { missing, identity, .. } if missing == "lock on billing/x" && identity == "worker"),
            "{e:?}"
        );
        let e = Error::from_status(&status(Code::Unauthenticated, "UNAUTHENTICATED", &[]), 0, 1);
        assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
        assert!(!e.may_have_been_applied());
    }

    #[test]
    fn plain_metadata_reason_is_read_too() {
        let mut s = Status::new(Code::PermissionDenied, "no");
        s.metadata_mut()
            .insert(errors::REASON_KEY, "STALE_TOKEN".parse().unwrap());
        assert!(matches!(
            Error::from_status(&s, 0, 1),
            Error::StaleToken { .. }
        ));
    }

    #[test]
    fn a_write_that_may_have_been_applied_is_outcome_unknown_not_unavailable() {
        for r in ["OUTCOME_UNKNOWN", "TIMEOUT", "SHUTTING_DOWN"] {
            let e = Error::from_write_status(&status(Code::Unavailable, r, &[]), 0, 2, true);
            assert!(
                matches!(e, Error::OutcomeUnknown { attempts: 2, .. }),
                "{r}: {e:?}"
            );
            assert!(e.may_have_been_applied());
            assert_eq!(e.reason(), "OUTCOME_UNKNOWN");
        }
        // Only definite refusals: not applied.
        let e = Error::from_write_status(&status(Code::Unavailable, "NO_LEADER", &[]), 0, 3, false);
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(!e.may_have_been_applied());
        // A definite answer stays what it is even after an unknown attempt.
        let e = Error::from_write_status(&status(Code::NotFound, "NOT_HOLDER", &[]), 0, 2, true);
        assert!(matches!(e, Error::NotHolder { .. }), "{e:?}");
    }

    #[test]
    fn a_failure_that_says_nothing_after_a_maybe_applied_attempt_is_outcome_unknown() {
        // An unknown attempt, then a fatal status that is not a refusal of
        // the request: the first attempt may still have been applied.
        for s in [
            status(Code::Internal, "INTERNAL", &[]),
            status(Code::Unknown, "SOMETHING_NEW", &[]),
            Status::internal("proxy error"),
            Status::resource_exhausted("response too large"),
            Status::permission_denied("a proxy's answer"),
        ] {
            let e = Error::from_write_status(&s, 0, 2, true);
            assert!(
                matches!(e, Error::OutcomeUnknown { attempts: 2, .. }),
                "{s:?}: {e:?}"
            );
            assert!(e.may_have_been_applied());
            // Without an unknown attempt it is the error it is.
            let e = Error::from_write_status(&s, 0, 1, false);
            assert!(!e.may_have_been_applied(), "{s:?}: {e:?}");
        }
        // The status's own words are kept.
        let e = Error::from_write_status(&status(Code::Internal, "INTERNAL", &[]), 0, 1, true);
        assert!(e.to_string().contains("INTERNAL: msg"), "{e}");
    }

    #[test]
    fn raftlock_refusals_stay_definite_after_a_maybe_applied_attempt() {
        for (code, reason) in [
            (Code::FailedPrecondition, "LOCK_BUSY"),
            (Code::DeadlineExceeded, "WAIT_TIMEOUT"),
            (Code::NotFound, "LEASE_NOT_FOUND"),
            (Code::NotFound, "LEASE_EXPIRING"),
            (Code::PermissionDenied, "NOT_HOLDER"),
            (Code::PermissionDenied, "STALE_TOKEN"),
            (Code::InvalidArgument, "INVALID_ARGUMENT"),
            (Code::InvalidArgument, "INVALID_NAME"),
            (Code::ResourceExhausted, "LIMIT_EXCEEDED"),
            (Code::FailedPrecondition, "ALREADY_WAITING"),
            (Code::FailedPrecondition, "HELD_IN_OTHER_MODE"),
        ] {
            let e = Error::from_write_status(&status(code, reason, &[]), 0, 2, true);
            assert!(e.reason() == reason || e.is_lease_lost(), "{reason}: {e:?}");
            assert!(!e.may_have_been_applied(), "{reason}: {e:?}");
        }
        // A plain INVALID_ARGUMENT status is not raftlock's refusal.
        let e = Error::from_write_status(&Status::invalid_argument("bad"), 0, 2, true);
        assert!(matches!(e, Error::OutcomeUnknown { .. }), "{e:?}");
        // The call's deadline says "maybe applied" by itself.
        let e = Error::from_write_status(&Status::deadline_exceeded("late"), 0, 2, true);
        assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e:?}");
        assert!(e.may_have_been_applied());
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let e = Error::from_status(&Status::unavailable("tcp connect error"), 0, 3);
        assert!(matches!(e, Error::Unavailable { attempts: 3, .. }));
    }
}
