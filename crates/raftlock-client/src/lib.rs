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
//!
//! ```no_run
//! use std::time::Duration;
//! use raftlock_client::{Client, ClientOptions, Mode, SessionOptions};
//!
//! # async fn run() -> Result<(), raftlock_client::Error> {
//! let client = Client::connect(
//!     ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"],
//!     ClientOptions::default(),
//! )
//! .await?;
//! let session = client
//!     .session(SessionOptions::new(Duration::from_secs(10)).owner("nightly-job"))
//!     .await?;
//! let guard = session
//!     .lock("jobs/nightly")
//!     .mode(Mode::Exclusive)
//!     .wait(Duration::from_secs(5))
//!     .reason("nightly report")
//!     .acquire()
//!     .await?;
//! // Pass the token with every write to the protected resource, which
//! // rejects tokens lower than the highest it has seen.
//! println!("holding {} with token {}", guard.name(), guard.token());
//! if guard.is_valid() {
//!     // ... do the work ...
//! }
//! guard.release().await?;
//! session.revoke().await?;
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod lock;
mod retry;
mod session;

pub use client::{Client, ClientOptions};
pub use error::Error;
pub use lock::{DEFAULT_WAIT, LockBuilder, LockGuard, Mode};
pub use retry::RetryPolicy;
pub use session::{Session, SessionEnd, SessionOptions};

/// The generated gRPC types of `raftlock.v1`, used by the read calls.
pub use raftlock_proto::v1 as proto;
