//! raftlock-core: the pure lock state machine of raftlock.
//!
//! [`State::apply`] takes a log entry's [`Request`] and its index and returns
//! an [`Applied`]: the reply for the proposer and the [`Event`]s for watchers.
//! Nothing here reads a clock, touches a disk or a network, or is async, so
//! every rule is tested deterministically (see `tests/`).
//!
//! See docs/safety.md for the rules in plain words.

pub mod batch;
pub mod command;
pub mod error;
pub mod event;
pub mod legacy;
pub mod limits;
pub mod state;
pub mod types;

pub use batch::{BatchPlan, MAX_BATCH_BYTES, MAX_BATCH_COMMANDS, approx_bytes};
pub use command::{Applied, Command, Granted, LockSpec, Request, Response};
pub use error::{Limit, LockError};
pub use event::{Event, EventKind};
pub use limits::{IdentityLimits, Limits, MAX_IDENTITY_BYTES};
pub use state::{
    DecodeError, Dirty, Header, IdentityUsage, MAX_INDEX, Record, State, check_invariants, decode,
    encode, epoch_above, stamp,
};
pub use types::{
    ClusterIdentity, Counters, Hold, HoldMap, Lease, LeaseEnd, LeaseId, Lock, LockKind, LogIndex,
    MemberRecord, Metadata, Mode, Token, Waiter, WaiterId,
};
