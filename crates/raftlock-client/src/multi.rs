//! Several locks in one acquire: all or none, one fencing token.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::lock::{LockOptions, Mode, Settle, acquire_specs, lock_option_setters};
use crate::session::{Claim, Session, SessionEnd};

/// An acquire of several locks being built:
/// `session.lock_many(["a", "b"]).wait(..).acquire()`.
///
/// The server grants all the locks in one log entry or none of them: a
/// request that waits is queued on every named lock and granted when it is
/// first in line on all of them, so two clients locking overlapping sets in
/// different orders cannot deadlock.
#[must_use = "a lock builder does nothing until acquire() or try_acquire()"]
pub struct MultiLockBuilder<'a> {
    session: &'a Session,
    locks: Vec<(String, Option<Mode>)>,
    opts: LockOptions,
}

impl<'a> MultiLockBuilder<'a> {
    pub(crate) fn new(session: &'a Session, names: Vec<String>) -> Self {
        MultiLockBuilder {
            session,
            locks: names.into_iter().map(|n| (n, None)).collect(),
            opts: LockOptions::default(),
        }
    }

    /// The mode of every lock not added with its own mode (exclusive unless set).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.opts.mode = mode;
        self
    }

    /// One more lock, in its own mode (for example a shared lock on a
    /// configuration beside exclusive locks on the rows being written).
    pub fn with(mut self, name: impl Into<String>, mode: Mode) -> Self {
        self.locks.push((name.into(), Some(mode)));
        self
    }

    lock_option_setters!();

    /// Acquire all the locks, waiting up to the wait; `Error::WaitTimeout`
    /// (nothing held) when the wait ends first.
    pub async fn acquire(self) -> Result<MultiLockGuard, Error> {
        let wait = self.opts.wait;
        self.run(wait).await
    }

    /// Acquire all the locks only if every one can be granted now;
    /// `Error::Busy` (nothing held) otherwise.
    pub async fn try_acquire(self) -> Result<MultiLockGuard, Error> {
        self.run(Duration::ZERO).await
    }

    async fn run(self, wait: Duration) -> Result<MultiLockGuard, Error> {
        let specs = self
            .locks
            .iter()
            .map(|(name, mode)| mode.unwrap_or(self.opts.mode).spec(name))
            .collect();
        let deadline = self.opts.deadline_at(self.session.client(), wait);
        let (acquired, claim) =
            acquire_specs(self.session, specs, wait, &self.opts, deadline, None).await?;
        // The server answers in name order; keep its view of the modes.
        let mut holds: Vec<(String, Mode)> = Vec::with_capacity(acquired.holds.len());
        for grant in &acquired.holds {
            let mode = self
                .locks
                .iter()
                .find(|(n, _)| *n == grant.name)
                .map_or(self.opts.mode, |(_, m)| m.unwrap_or(self.opts.mode));
            holds.push((grant.name.clone(), mode));
        }
        Ok(MultiLockGuard {
            session: self.session.clone(),
            holds,
            token: acquired.token,
            revision: acquired.revision,
            released: false,
            claim: Some(claim),
        })
    }
}

/// Several locks held together under one fencing token. Dropping it
/// releases all of them in the background; [`MultiLockGuard::release`]
/// releases them now, all or none.
#[must_use = "dropping a MultiLockGuard releases the locks at once"]
pub struct MultiLockGuard {
    session: Session,
    holds: Vec<(String, Mode)>,
    token: u64,
    revision: u64,
    released: bool,
    /// The names' claim on the session, kept until the holds are certainly gone.
    claim: Option<Claim>,
}

impl std::fmt::Debug for MultiLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiLockGuard")
            .field("holds", &self.holds)
            .field("token", &self.token)
            .field("lease_id", &self.session.lease_id())
            .finish()
    }
}

impl MultiLockGuard {
    /// The fencing token shared by every hold of the grant.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The held names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.holds.iter().map(|(n, _)| n.as_str())
    }

    /// The holds with their modes, sorted by name.
    pub fn holds(&self) -> &[(String, Mode)] {
        &self.holds
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

    /// How long the holds are certainly valid from now (zero once not).
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

    /// Release every lock now, in one request. As for
    /// [`crate::LockGuard::release`], a failure that does not certainly end
    /// the holds leaves the session releasing them in the background. The
    /// server releases all or none: if one of the names is no longer held
    /// (force-released), the release fails with [`Error::NotHolder`] and
    /// the session releases the others in the background, one look at each
    /// name (a new acquire of them on this session waits for that).
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        let token = self.token;
        self.settle().release(token).await
    }

    fn settle(&mut self) -> Settle {
        let specs = self.holds.iter().map(|(n, m)| m.spec(n)).collect();
        Settle::new(
            self.session.clone(),
            specs,
            Some(self.token),
            self.claim.take(),
        )
    }
}

impl Drop for MultiLockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        // As LockGuard: never blocks; released (or withdrawn) in the
        // background while the names stay claimed on the session.
        drop(self.settle());
    }
}
