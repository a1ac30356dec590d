//! Why the program stops, and its exit code: 0 ok, 1 a runtime failure, 2
//! bad usage or invalid input, 3 busy or the wait timed out, 4 the lease is
//! lost (`exec` passes on its command's own code). A client error becomes
//! a [`Failure`] by its [`ErrorReason`], with a hint of what to do.

use std::process::ExitCode;

use raftlock_client::Error;
use raftlock_proto::errors::ErrorReason;

/// The exit codes, for --help (and docs/cli.md).
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 error (no node answered, stale token or not \
    the holder, ...); 2 bad usage or invalid input (INVALID_*, TTL_OUT_OF_RANGE, TOO_LARGE, \
    LIMIT_EXCEEDED); 3 lock busy or wait timed out (LOCK_BUSY, WAIT_TIMEOUT); 4 lease lost \
    (LEASE_NOT_FOUND, LEASE_EXPIRING). See docs/cli.md.";

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
            | Failure::LeaseLost(message) => eprintln!("error: {message}"),
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
            _ => Failure::Runtime(text),
        }
    }
}

/// The failure for a client error on lock `name` (may be empty) and lease
/// `lease` (when the command names one).
pub fn client_failure(e: &Error, name: &str, lease: Option<u64>) -> Failure {
    let reason = e.error_reason();
    let hint = reason.map_or_else(String::new, |r| hint(r, name, lease));
    let text = if hint.is_empty() {
        format!("{}: {e}", e.reason())
    } else {
        format!("{}: {e}; {hint}", e.reason())
    };
    Failure::of_reason(reason, text)
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
        assert_eq!(Failure::of_reason(None, String::new()).code(), 1);
    }

    #[test]
    fn every_reason_has_an_exit_code_of_the_documented_set() {
        for r in ErrorReason::ALL {
            let code = Failure::of_reason(Some(r), String::new()).code();
            assert!([1, 2, 3, 4].contains(&code), "{r}: {code}");
        }
    }
}
