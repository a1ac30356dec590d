//! Coordination recipes built only on the public client API, each one short
//! file (in the manner of etcd's `concurrency` package):
//!
//! - [`LeaderElection`]: campaign, observe, resign; the leader's token fences
//!   its writes.
//! - [`RwLock`]: shared readers or one writer, writers not starved.
//! - [`Semaphore`]: N permits on a name.
//! - [`lock_many`] / [`with_locks`]: several names at once, all or none, and
//!   work run under them.
//! - [`Fenced`]: how a resource refuses stale fencing tokens.

mod election;
mod fenced;
mod lock_many;
mod rwlock;
mod semaphore;

pub use election::{Leader, LeaderElection, Leadership, VALUE_KEY};
pub use fenced::{Fenced, StaleToken};
pub use lock_many::{lock_many, with_locks};
pub use rwlock::RwLock;
pub use semaphore::Semaphore;
