//! Acquiring locks and the guards that hold them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftlock_proto::v1 as pb;

use crate::error::{Error, ServerError};
use crate::session::{Session, SessionEnd};

/// How to hold a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One holder at a time.
    Exclusive,
    /// Many shared holders together, never beside an exclusive one.
    Shared,
    /// One of this many permits (the first acquirer fixes the count).
    Semaphore(u32),
}

impl Mode {
    pub(crate) fn spec(self, name: &str) -> pb::LockSpec {
        let (mode, permits) = match self {
            Mode::Exclusive => (pb::Mode::Exclusive, 0),
            Mode::Shared => (pb::Mode::Shared, 0),
            Mode::Semaphore(p) => (pb::Mode::Semaphore, p),
        };
        pb::LockSpec {
            name: name.to_string(),
            mode: mode as i32,
            permits,
        }
    }
}

/// What every acquire carries besides its names; shared by the builders.
#[derive(Debug, Clone)]
pub(crate) struct LockOptions {
    pub(crate) mode: Mode,
    pub(crate) wait: Duration,
    pub(crate) reason: String,
    pub(crate) metadata: HashMap<String, String>,
    pub(crate) lock_delay: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            mode: Mode::Exclusive,
            wait: DEFAULT_WAIT,
            reason: String::new(),
            metadata: HashMap::new(),
            lock_delay: Duration::ZERO,
        }
    }
}

/// The setters every lock builder has, over its `opts: LockOptions`.
macro_rules! lock_option_setters {
    () => {
        /// How long `acquire()` waits in the FIFO queue (default 30 s).
        pub fn wait(mut self, wait: std::time::Duration) -> Self {
            self.opts.wait = wait;
            self
        }

        /// Why the lock is taken, shown to people inspecting it.
        pub fn reason(mut self, reason: impl Into<String>) -> Self {
            self.opts.reason = reason.into();
            self
        }

        /// One key/value pair kept with the hold.
        pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.opts.metadata.insert(key.into(), value.into());
            self
        }

        /// If the lease expires while holding, keep the lock ungrantable this
        /// long (whole milliseconds, at most 60 s).
        pub fn lock_delay(mut self, delay: std::time::Duration) -> Self {
            self.opts.lock_delay = delay;
            self
        }
    };
}
pub(crate) use lock_option_setters;

/// The ttl of [`crate::Client::lock`]'s session unless
/// [`ClientLockBuilder::ttl`] says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// An acquire on the client's own session: `client.lock("jobs/nightly")`
/// with the session's `ttl` and `owner` on top of [`LockBuilder`]'s options.
#[must_use = "a lock builder does nothing until acquire() or try_acquire()"]
pub struct ClientLockBuilder {
    client: crate::Client,
    name: String,
    ttl: Duration,
    owner: String,
    opts: LockOptions,
}

impl ClientLockBuilder {
    pub(crate) fn new(client: crate::Client, name: String) -> Self {
        ClientLockBuilder {
            client,
            name,
            ttl: DEFAULT_TTL,
            owner: String::new(),
            opts: LockOptions::default(),
        }
    }

    /// The lease's ttl (default 30 s): how long the lock outlives this
    /// process if it stops keeping the lease alive.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Who holds it (the lease's owner, shown by inspect).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Exclusive unless set.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.opts.mode = mode;
        self
    }

    lock_option_setters!();

    /// Acquire, waiting in the lock's FIFO queue up to the wait.
    pub async fn acquire(self) -> Result<LockGuard, Error> {
        let wait = self.opts.wait;
        self.run(wait).await
    }

    /// Acquire only if it can be granted now: `Error::Busy` otherwise.
    pub async fn try_acquire(self) -> Result<LockGuard, Error> {
        self.run(Duration::ZERO).await
    }

    async fn run(self, wait: Duration) -> Result<LockGuard, Error> {
        let session = self.client.lock_session(self.ttl, &self.owner).await?;
        LockBuilder {
            session: &session,
            name: self.name,
            opts: self.opts,
        }
        .run(wait)
        .await
    }
}

/// The wait of [`LockBuilder::acquire`] unless [`LockBuilder::wait`] says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// An acquire being built: `session.lock("jobs/nightly").wait(..).acquire()`.
#[must_use = "a lock builder does nothing until acquire() or try_acquire()"]
pub struct LockBuilder<'a> {
    session: &'a Session,
    name: String,
    opts: LockOptions,
}

impl<'a> LockBuilder<'a> {
    pub(crate) fn new(session: &'a Session, name: String) -> Self {
        LockBuilder {
            session,
            name,
            opts: LockOptions::default(),
        }
    }

    /// Exclusive unless set.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.opts.mode = mode;
        self
    }

    lock_option_setters!();

    /// Acquire, waiting in the lock's FIFO queue up to the wait.
    /// `Error::WaitTimeout` when the wait ends without a grant.
    pub async fn acquire(self) -> Result<LockGuard, Error> {
        let wait = self.opts.wait;
        self.run(wait).await
    }

    /// Acquire only if it can be granted now: `Error::Busy` otherwise.
    pub async fn try_acquire(self) -> Result<LockGuard, Error> {
        self.run(Duration::ZERO).await
    }

    async fn run(self, wait: Duration) -> Result<LockGuard, Error> {
        let spec = self.opts.mode.spec(&self.name);
        let acquired = acquire_specs(
            self.session,
            vec![spec],
            wait,
            &self.opts.reason,
            &self.opts.metadata,
            self.opts.lock_delay,
        )
        .await?;
        Ok(LockGuard {
            session: self.session.clone(),
            name: self.name,
            mode: self.opts.mode,
            token: acquired.token,
            revision: acquired.revision,
            released: false,
        })
    }
}

/// One Acquire of `specs` (all or none) for the session's lease, waiting up
/// to `wait` (zero: never).
///
/// Retries are safe because every attempt carries the SAME lease: the
/// server answers a lease that already holds the locks with its existing
/// holds (`retry = true`, same token) and lets a lease already queued for
/// them keep its place. So an attempt that was applied but whose answer
/// was lost (leader crash, connection reset, timeout) cannot turn into a
/// second hold or a second place in the queue.
pub(crate) async fn acquire_specs(
    session: &Session,
    specs: Vec<pb::LockSpec>,
    wait: Duration,
    reason: &str,
    metadata: &HashMap<String, String>,
    lock_delay: Duration,
) -> Result<pb::AcquireResponse, Error> {
    let lease_id = session.lease_id();
    if !session.is_valid() {
        return Err(Error::LeaseLost {
            lease_id,
            message: "the session is no longer certainly valid".into(),
        });
    }
    let client = session.client();
    let wait_until = Instant::now() + wait;
    let deadline = wait_until + client.options().call_timeout;
    let lock_delay_ms = u64::try_from(lock_delay.as_millis()).unwrap_or(u64::MAX);
    client
        .call(lease_id, deadline, |ch, left| {
            // A retry waits only for what is left of the caller's wait.
            let wait_ms = if wait.is_zero() {
                0
            } else {
                let left = wait_until.saturating_duration_since(Instant::now());
                u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)
            };
            let mut req = tonic::Request::new(pb::AcquireRequest {
                lease_id,
                locks: specs.clone(),
                wait_timeout_ms: wait_ms,
                reason: reason.to_string(),
                metadata: metadata.clone(),
                lock_delay_ms,
            });
            req.set_timeout(left);
            async move { pb::locks_client::LocksClient::new(ch).acquire(req).await }
        })
        .await
}

/// A held lock. Use [`LockGuard::token`] as the fencing token with every
/// access to the protected resource, and check [`LockGuard::is_valid`]
/// before acting. Dropping it releases the lock in the background.
#[must_use = "dropping a LockGuard releases the lock at once"]
pub struct LockGuard {
    session: Session,
    name: String,
    mode: Mode,
    token: u64,
    revision: u64,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("token", &self.token)
            .field("lease_id", &self.session.lease_id())
            .finish()
    }
}

impl LockGuard {
    /// The fencing token: strictly greater than every earlier token on this name.
    pub fn token(&self) -> u64 {
        self.token
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Log index at which the grant was applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// True while the session is certainly valid and the guard not released.
    pub fn is_valid(&self) -> bool {
        !self.released && self.session.is_valid()
    }

    /// How long the hold is certainly valid from now (zero once not).
    pub fn remaining(&self) -> Duration {
        if self.released {
            return Duration::ZERO;
        }
        self.session.valid_until().map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        })
    }

    /// Resolves when the session is lost or revoked (see [`Session::lost`]).
    pub async fn lost(&self) -> SessionEnd {
        self.session.lost().await
    }

    /// Record an extension of this hold and restart the lease's deadline on
    /// the leader; with `ttl`, the lease gets that ttl. Renews the session's
    /// validity from this call's send time. Returns the hold's extension count.
    pub async fn extend(&self, ttl: Option<Duration>) -> Result<u64, Error> {
        let lease_id = self.session.lease_id();
        let client = self.session.client();
        let ttl_ms = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let sent_at = Instant::now();
        let (name, token) = (self.name.clone(), self.token);
        let r = client
            .call(lease_id, client.deadline(), |ch, left| {
                let mut req = tonic::Request::new(pb::ExtendRequest {
                    lease_id,
                    name: name.clone(),
                    token,
                    ttl_ms,
                });
                req.set_timeout(left);
                async move { pb::locks_client::LocksClient::new(ch).extend(req).await }
            })
            .await?;
        self.session
            .shared()
            .renewed(sent_at, Duration::from_millis(r.ttl_ms));
        Ok(r.extensions)
    }

    /// Release the lock now.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        release_names(&self.session, vec![self.name.clone()], self.token).await
    }
}

/// Release `names` (all held with `token`) for the session's lease.
///
/// A retried release that meets NOT_HOLDER counts as done only when an
/// earlier attempt's outcome is unknown (a transport error, a write
/// TIMEOUT, a node shutting down: it may have been applied without its
/// answer arriving, and then the hold is already gone, which is what was
/// asked). NOT_LEADER and NO_LEADER say the attempt was not applied, so
/// after only those a NOT_HOLDER is reported as the error it is.
pub(crate) async fn release_names(
    session: &Session,
    names: Vec<String>,
    token: u64,
) -> Result<(), Error> {
    let lease_id = session.lease_id();
    let client = session.client();
    let unknown_outcome = Arc::new(AtomicBool::new(false));
    let r = client
        .call(lease_id, client.deadline(), |ch, left| {
            let mut req = tonic::Request::new(pb::ReleaseRequest {
                lease_id,
                token,
                names: names.clone(),
            });
            req.set_timeout(left);
            let unknown_outcome = Arc::clone(&unknown_outcome);
            async move {
                let r = pb::locks_client::LocksClient::new(ch).release(req).await;
                if let Err(status) = &r
                    && outcome_unknown(status)
                {
                    unknown_outcome.store(true, Ordering::Relaxed);
                }
                r
            }
        })
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(Error::NotHolder { .. }) if unknown_outcome.load(Ordering::Relaxed) => Ok(()),
        Err(e) => Err(e),
    }
}

/// True when a failed write attempt may nevertheless have been applied:
/// the node timed out waiting for the write or shut down under it, or the
/// failure came from the transport (no raftlock reason), so the request may
/// have reached the leader. Every other reason is a definite refusal.
pub(crate) fn outcome_unknown(status: &tonic::Status) -> bool {
    match ServerError::of(status).reason.as_deref() {
        Some("TIMEOUT" | "SHUTTING_DOWN" | "OUTCOME_UNKNOWN") => true,
        Some(_) => false,
        None => true,
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        // Never block or panic in Drop: release on the runtime if there is
        // one; otherwise the lease's end (revoke or expiry) frees the lock.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (session, name, token) = (self.session.clone(), self.name.clone(), self.token);
        handle.spawn(async move {
            if session.valid_until().is_none() {
                return;
            }
            if let Err(e) = release_names(&session, vec![name.clone()], token).await {
                tracing::debug!(name, token, error = %e, "background release failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::{ErrorDetails, StatusExt};

    fn status(code: Code, reason: &str) -> tonic::Status {
        tonic::Status::with_error_details(
            code,
            "msg",
            ErrorDetails::with_error_info(reason, "raftlock.dev", HashMap::new()),
        )
    }

    #[test]
    fn only_failures_that_may_have_been_applied_make_a_later_not_holder_a_success() {
        // The server says it did not apply the request.
        for r in ["NOT_LEADER", "NO_LEADER", "NOT_HOLDER", "STALE_TOKEN"] {
            assert!(!outcome_unknown(&status(Code::Unavailable, r)), "{r}");
        }
        // The write may have been applied without its answer arriving.
        assert!(outcome_unknown(&status(Code::DeadlineExceeded, "TIMEOUT")));
        assert!(outcome_unknown(&status(Code::Unavailable, "SHUTTING_DOWN")));
        assert!(outcome_unknown(&status(
            Code::Unavailable,
            "OUTCOME_UNKNOWN"
        )));
        assert!(outcome_unknown(&tonic::Status::unavailable(
            "connection reset"
        )));
        assert!(outcome_unknown(&tonic::Status::unknown(
            "h2 protocol error"
        )));
    }

    #[test]
    fn modes_become_lock_specs() {
        let s = Mode::Semaphore(3).spec("pool");
        assert_eq!(
            (s.name.as_str(), s.mode, s.permits),
            ("pool", pb::Mode::Semaphore as i32, 3)
        );
        assert_eq!(Mode::Shared.spec("r").mode, pb::Mode::Shared as i32);
        assert_eq!(Mode::Exclusive.spec("w").permits, 0);
    }
}
