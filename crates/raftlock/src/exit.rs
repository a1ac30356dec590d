//! Why the program stops, and its exit code: 0 ok, 1 a runtime failure, 2
//! bad usage or invalid input, 3 busy or the wait timed out, 4 the lease is
//! lost, 5 not allowed (denied, or no accepted identity) (`exec` passes on
//! its command's own code). A client error becomes
//! a [`Failure`] by its [`ErrorReason`], with a hint of what to do.

use std::process::ExitCode;

use raftlock_client::Error;
use raftlock_proto::auth::env;
use raftlock_proto::errors::ErrorReason;

/// The exit codes, for --help (and docs/cli.md).
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 error (no node answered, stale token or not \
    the holder, ...); 2 bad usage or invalid input (INVALID_*, TTL_OUT_OF_RANGE, TOO_LARGE, \
    LIMIT_EXCEEDED); 3 lock busy or wait timed out (LOCK_BUSY, WAIT_TIMEOUT); 4 lease lost \
    (LEASE_NOT_FOUND, LEASE_EXPIRING); 5 not allowed (DENIED, UNAUTHENTICATED). See \
    docs/cli.md.";

/// Why the program stops with a failure; decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad flags, configuration or environment: exit code 2.
    Usage(String),
    /// Something failed while running: exit code 1.
    Runtime(String),
    /// The lock is busy or the wait timed out: exit code 3.
    Busy(String),
    /// The lease is gone (expired, revoked, unknown): exit code 4.
    LeaseLost(String),
    /// The identity may not make the call, or no identity was accepted
    /// (DENIED, UNAUTHENTICATED): exit code 5.
    NotAllowed(String),
    /// Exit with this code and print nothing (`exec` passing on its
    /// command's exit code).
    Exit(u8),
}

impl Failure {
    /// The exit code.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Runtime(_) => 1,
            Failure::Busy(_) => 3,
            Failure::LeaseLost(_) => 4,
            Failure::NotAllowed(_) => 5,
            Failure::Exit(code) => *code,
        }
    }

    /// Print the message (if any) and give the exit code.
    pub fn exit(self) -> ExitCode {
        let code = self.code();
        match self {
            Failure::Usage(message)
            | Failure::Runtime(message)
            | Failure::Busy(message)
            | Failure::LeaseLost(message)
            | Failure::NotAllowed(message) => eprintln!("error: {message}"),
            Failure::Exit(_) => {}
        }
        ExitCode::from(code)
    }

    /// The failure for a reason: its exit code, the reason, the message and
    /// the hint.
    fn of_reason(reason: Option<ErrorReason>, text: String) -> Failure {
        use ErrorReason as R;
        let Some(reason) = reason else {
            return Failure::Runtime(text);
        };
        match reason {
            r if r.is_invalid_input() => Failure::Usage(text),
            R::LimitExceeded => Failure::Usage(text),
            R::LockBusy | R::WaitTimeout => Failure::Busy(text),
            r if r.is_lease_gone() => Failure::LeaseLost(text),
            R::Denied | R::Unauthenticated => Failure::NotAllowed(text),
            _ => Failure::Runtime(text),
        }
    }
}

/// The failure for a client error on lock `name` (may be empty) and lease
/// `lease` (when the command names one).
pub fn client_failure(e: &Error, name: &str, lease: Option<u64>) -> Failure {
    // A TLS failure says what to check itself; "is the cluster running?"
    // would mislead.
    if let Error::Tls { .. } = e {
        return Failure::Runtime(format!("TLS: {e}"));
    }
    let reason = e.error_reason();
    let hint = match e {
        Error::Denied {
            missing, identity, ..
        } => denied_hint(identity, missing),
        _ => reason.map_or_else(String::new, |r| hint(r, name, lease)),
    };
    let text = if hint.is_empty() {
        format!("{}: {e}", e.reason())
    } else {
        format!("{}: {e}; {hint}", e.reason())
    };
    Failure::of_reason(reason, text)
}

/// What to do about a denial.
fn denied_hint(identity: &str, missing: &str) -> String {
    let who = if identity.is_empty() {
        "this identity".to_string()
    } else {
        format!("the identity {identity:?}")
    };
    let what = if missing.is_empty() {
        "the permission for this call".to_string()
    } else {
        missing.to_string()
    };
    format!("{who} lacks {what}; ask an admin to add a rule to its role in the auth file")
}

/// What to do about a reason.
fn hint(reason: ErrorReason, name: &str, lease: Option<u64>) -> String {
    use ErrorReason as R;
    let lease_text = lease.map_or_else(|| "the lease".to_string(), |l| format!("lease {l}"));
    match reason {
        R::LockBusy => format!(
            "{name} is held by another lease; see who holds it with `raftlock inspect {name}`, \
             or wait for it with --wait 30s"
        ),
        R::WaitTimeout => format!(
            "{name} was not granted within --wait; see who holds it with `raftlock inspect \
             {name}`, or wait longer"
        ),
        R::LeaseNotFound | R::LeaseExpiring | R::LeaseLost => format!(
            "{lease_text} is gone (expired or revoked); grant a new one with `raftlock lease \
             grant`, or acquire without --lease"
        ),
        R::StaleToken | R::NotHolder => format!(
            "the token is stale: {lease_text} no longer holds {name} with that token (released, \
             expired or force-released); check with `raftlock inspect {name}`"
        ),
        R::InvalidName => "a lock name is 1 to 512 bytes of UTF-8 without control characters \
                           (e.g. jobs/nightly)"
            .into(),
        R::TtlOutOfRange => "a lease ttl is 1s to 24h (e.g. --ttl 30s)".into(),
        R::TooLarge => "shorten the reason (1024 bytes) or the metadata (4096 bytes)".into(),
        R::KindConflict | R::PermitsMismatch => format!(
            "{name} exists with another kind or permit count; see it with `raftlock inspect \
             {name}`"
        ),
        R::HeldInOtherMode => format!("{lease_text} already holds {name} in another mode"),
        R::LockNotFound => format!("{name} is not held; see `raftlock list`"),
        R::Denied => denied_hint("", ""),
        R::Unauthenticated => format!(
            "the node accepted no identity from this client: pass --cert/--key (a client \
             certificate from the cluster's CA) or --auth-token (or {}/{}, {})",
            env::CERT,
            env::KEY,
            env::TOKEN
        ),
        R::Unavailable | R::DeadlineExceeded => {
            "is the cluster running? Start one with `raftlock dev`, or name its nodes with \
             --endpoints or RAFTLOCK_ENDPOINTS"
                .into()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_to_exit_codes() {
        let code = |r: ErrorReason| Failure::of_reason(Some(r), String::new()).code();
        assert_eq!(code(ErrorReason::InvalidName), 2);
        assert_eq!(code(ErrorReason::TtlOutOfRange), 2);
        assert_eq!(code(ErrorReason::LimitExceeded), 2);
        assert_eq!(code(ErrorReason::InvalidEndpoint), 2);
        assert_eq!(code(ErrorReason::LockBusy), 3);
        assert_eq!(code(ErrorReason::WaitTimeout), 3);
        assert_eq!(code(ErrorReason::LeaseNotFound), 4);
        assert_eq!(code(ErrorReason::LeaseExpiring), 4);
        assert_eq!(code(ErrorReason::LeaseLost), 4);
        assert_eq!(code(ErrorReason::StaleToken), 1);
        assert_eq!(code(ErrorReason::Internal), 1);
        assert_eq!(code(ErrorReason::OutcomeUnknown), 1);
        assert_eq!(code(ErrorReason::Denied), 5);
        assert_eq!(code(ErrorReason::Unauthenticated), 5);
        assert_eq!(Failure::of_reason(None, String::new()).code(), 1);
    }

    #[test]
    fn every_reason_has_an_exit_code_of_the_documented_set() {
        for r in ErrorReason::ALL {
            let code = Failure::of_reason(Some(r), String::new()).code();
            assert!([1, 2, 3, 4, 5].contains(&code), "{r}: {code}");
        }
    }

    #[test]
    fn denials_say_who_lacks_what_and_unauthenticated_says_how_to_sign_in() {
        let e = Error::Denied {
            missing: "lock on billing/x".into(),
            identity: "worker".into(),
            message: "no".into(),
        };
        let f = client_failure(&e, "billing/x", None);
        assert_eq!(f.code(), 5);
        let Failure::NotAllowed(text) = f else {
            panic!("{f:?}")
        };
        assert!(
            text.contains("the identity \"worker\" lacks lock on billing/x")
                && text.contains("auth file"),
            "{text}"
        );
        let f = client_failure(
            &Error::Unauthenticated {
                message: "no identity".into(),
            },
            "",
            None,
        );
        assert_eq!(f.code(), 5);
        assert!(format!("{f:?}").contains("--cert/--key"), "{f:?}");
        let f = client_failure(
            &Error::Tls {
                endpoint: "n:1".into(),
                message: "invalid peer certificate: UnknownIssuer".into(),
                hint: "give the CA".into(),
            },
            "",
            None,
        );
        assert_eq!(f.code(), 1);
        assert!(format!("{f:?}").contains("UnknownIssuer"), "{f:?}");
    }
}
