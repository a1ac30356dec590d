//! Rust client for raftlock, a Raft-replicated lock service.
//!
//! - [`Client`]: one lazy channel per node; calls go to the leader when a
//!   reply has named it (saving the follower's forward hop), and retryable
//!   failures (UNAVAILABLE, NOT_LEADER, NO_LEADER, transport errors) are
//!   retried by a [`RetryPolicy`] within a per-call deadline.
//! - [`Session`]: a lease kept alive by one background task (a keep-alive
//!   stream, a request every ttl/3). It counts the lease as certainly
//!   valid until the send time of the last acknowledged request + ttl −
//!   drift margin, on this process's monotonic clock; the server counts
//!   from when the leader *received* it, which is later, so the client
//!   always gives up first.
//! - [`LockGuard`]: a held lock with its fencing token. Dropping it releases
//!   the lock in the background.
//! - Reads ([`Client::inspect`], [`Client::list`], [`Client::watch`])
//!   return the generated proto types, re-exported as [`proto`]: they are
//!   documented field by field in `proto/raftlock/v1/raftlock.proto`.
//!   [`Client::watch_resuming`] reopens a broken watch from where it was.
//! - Several locks at once, all or none: [`Session::lock_many`].
//! - Leases and administration: [`Client::grant_lease`],
//!   [`Client::attach_session`], [`Client::revoke_lease`], [`Client::leases`],
//!   [`Client::force_release`], [`Client::status`], membership
//!   ([`Client::add_learner`], [`Client::promote`], [`Client::remove_member`]).
//! - A lease by its id, without a session ([`Client::lease_ref`]): acquire,
//!   release, extend, keep alive and revoke, with nothing kept alive or
//!   released for you; what the CLI's `acquire`/`release` and scripts use.
//! - [`recipes`]: leader election, readers/writer lock, semaphore, several
//!   locks at once, and a fenced resource, each built on the API above.
//!
//! The guide with every call and its reasoning is `docs/client.md`.
//!
//! ```
//! # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (node, addr, _dir) = doc_node().await?;
//! # let endpoints = [addr];
//! use std::time::Duration;
//! use raftlock_client::{Client, ClientOptions, Error, Mode, SessionOptions};
//!
//! // Any subset of the nodes; the client finds the leader.
//! let client = Client::connect(endpoints, ClientOptions::default()).await?;
//! // One lease for all of this process's locks, kept alive in the background.
//! let session = client
//!     .session(SessionOptions::new(Duration::from_secs(10)).owner("nightly-job"))
//!     .await?;
//! let guard = session
//!     .lock("jobs/nightly")
//!     .mode(Mode::Exclusive)
//!     .wait(Duration::from_secs(5))
//!     .reason("nightly report")
//!     .metadata("host", "build-7")
//!     .acquire()
//!     .await?;
//! // Pass the token with every access to the protected resource, which
//! // rejects tokens lower than the highest it has seen.
//! assert!(guard.token() > 0);
//! if guard.is_valid() {
//!     // ... work for at most guard.remaining() before checking again ...
//!     assert!(guard.remaining() > Duration::from_secs(5));
//! }
//!
//! // Someone else is told, with a stable reason, that it is taken.
//! let other = client.session(SessionOptions::new(Duration::from_secs(10))).await?;
//! match other.lock("jobs/nightly").try_acquire().await {
//!     Err(Error::Busy { .. }) => {}
//!     r => panic!("expected busy, got {r:?}"),
//! }
//! let info = client.inspect("jobs/nightly").await?.expect("held");
//! let holder = &info.holders[0];
//! assert_eq!((holder.owner.as_str(), holder.reason.as_str()), ("nightly-job", "nightly report"));
//!
//! guard.extend(None).await?; // record an extension, restart the lease's deadline
//! guard.release().await?;
//! let next = other.lock("jobs/nightly").try_acquire().await?;
//! drop(next); // released in the background
//! session.revoke().await?;
//! # node.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod backup;
mod client;
mod duration;
mod error;
mod lease_ref;
mod lock;
mod multi;
pub mod recipes;
mod retry;
mod session;
mod tls;

pub use backup::{Backup, BackupError};
pub use client::{Client, ClientOptions, HealthStatus};
pub use duration::{MAX_DURATION, parse_duration};
pub use error::Error;
pub use lease_ref::{KeepAliveStream, LeaseLockBuilder, LeaseRef};
pub use lock::{ClientLockBuilder, DEFAULT_TTL, DEFAULT_WAIT, LockBuilder, LockGuard, Mode};
pub use multi::{MultiLockBuilder, MultiLockGuard};
pub use retry::RetryPolicy;
pub use session::{Session, SessionEnd, SessionOptions};
pub use tls::{TlsFileError, TlsOptions};

/// The generated gRPC types of `raftlock.v1`, used by the read calls.
pub use raftlock_proto::v1 as proto;
