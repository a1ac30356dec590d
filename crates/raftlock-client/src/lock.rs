//! Acquiring locks and the guards that hold them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftlock_proto::errors::{self, Applied, ErrorReason};
use raftlock_proto::v1 as pb;

use crate::error::Error;
use crate::session::{Claim, Session, SessionEnd};

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
    /// Bound on the whole acquire; `None`: the wait plus the client's call timeout.
    pub(crate) deadline: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            mode: Mode::Exclusive,
            wait: DEFAULT_WAIT,
            reason: String::new(),
            metadata: HashMap::new(),
            lock_delay: Duration::ZERO,
            deadline: None,
        }
    }
}

impl LockOptions {
    /// When an acquire that starts now and waits up to `wait` must end.
    pub(crate) fn deadline_at(&self, client: &crate::Client, wait: Duration) -> Instant {
        let now = Instant::now();
        match self.deadline {
            Some(d) => now + d,
            None => now + wait + client.call_timeout(),
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

        /// End the whole acquire within `deadline` from the call of
        /// `acquire()` / `try_acquire()`: waiting for this session's
        /// cleanup of an earlier acquire of these names, the queue wait and
        /// every retry included. When it passes, the acquire fails with
        /// `Error::DeadlineExceeded` (and withdraws, in the background,
        /// whatever it may have left queued or held). Without it an acquire
        /// ends within its wait plus the client's call timeout. A deadline
        /// shorter than the wait cuts the wait short: the server is asked
        /// to wait only until a little before the deadline (a quarter of
        /// it, at most 250 ms, is kept for the answer), so such an acquire
        /// normally ends with `Error::WaitTimeout`, a definite answer with
        /// nothing left queued.
        pub fn deadline(mut self, deadline: std::time::Duration) -> Self {
            self.opts.deadline = Some(deadline);
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
        let deadline = self.opts.deadline_at(&self.client, wait);
        let names = [self.name.clone()];
        let found = self.client.lock_session(self.ttl, &self.owner, &names);
        let Ok(found) = tokio::time::timeout_at(deadline.into(), found).await else {
            // The acquire itself was not sent.
            return Err(Error::DeadlineExceeded {
                message: "the deadline passed while starting the lock's session".into(),
                maybe_applied: false,
            });
        };
        let (session, claim) = found?;
        LockBuilder {
            session: &session,
            name: self.name,
            opts: self.opts,
        }
        .run_claimed(wait, deadline, Some(claim))
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
        let deadline = self.opts.deadline_at(self.session.client(), wait);
        self.run_claimed(wait, deadline, None).await
    }

    async fn run_claimed(
        self,
        wait: Duration,
        deadline: Instant,
        claim: Option<Claim>,
    ) -> Result<LockGuard, Error> {
        let spec = self.opts.mode.spec(&self.name);
        let (acquired, claim) =
            acquire_specs(self.session, vec![spec], wait, &self.opts, deadline, claim).await?;
        Ok(LockGuard {
            session: self.session.clone(),
            name: self.name,
            mode: self.opts.mode,
            token: acquired.token,
            revision: acquired.revision,
            released: false,
            claim: Some(claim),
        })
    }
}

/// One Acquire of `specs` (all or none) for the session's lease, waiting up
/// to `wait` (zero: never), ending by `deadline`. Claims the names on the
/// session first (`claim`, when the caller has done so already): a name
/// this session holds or is acquiring is [`Error::AlreadyHeld`], one it is
/// still withdrawing is waited for.
///
/// Retries are safe because every attempt carries the SAME lease: the
/// server answers a lease that already holds the locks with its existing
/// holds (`retry = true`, same token) and lets a lease already queued for
/// them keep its place. So an attempt that was applied but whose answer
/// was lost (leader crash, connection reset, timeout) cannot turn into a
/// second hold or a second place in the queue.
///
/// When the call ends without a definite answer ([`Error::may_have_been_applied`])
/// or is dropped midway, its request may still be queued, or granted, for
/// the lease with no guard to release it: the names then stay taken on the
/// session while a background task withdraws whatever the lease has on
/// them ([`Settle`]).
pub(crate) async fn acquire_specs(
    session: &Session,
    specs: Vec<pb::LockSpec>,
    wait: Duration,
    opts: &LockOptions,
    deadline: Instant,
    claim: Option<Claim>,
) -> Result<(pb::AcquireResponse, Claim), Error> {
    let lease_id = session.lease_id();
    if !session.is_valid() {
        return Err(Error::LeaseLost {
            lease_id,
            reason: raftlock_proto::errors::ErrorReason::LeaseLost,
            message: "the session is no longer certainly valid".into(),
        });
    }
    let claim = match claim {
        Some(claim) => claim,
        None => {
            let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
            session.names().claim(&names, deadline).await?
        }
    };
    let settle = Settle {
        session: session.clone(),
        specs: specs.clone(),
        token: None,
        claim: Some(claim),
    };
    let r = acquire_call(
        session.client(),
        session.lease_id(),
        specs,
        wait,
        opts,
        deadline,
    )
    .await;
    match r {
        Ok(acquired) => match settle.disarm() {
            Some(claim) => Ok((acquired, claim)),
            None => Err(Error::other(
                ErrorReason::Internal,
                "an acquire lost its claim on its names",
            )),
        },
        Err(e) if e.may_have_been_applied() => {
            tracing::debug!(lease_id, error = %e, "acquire outcome unknown; withdrawing in the background");
            drop(settle);
            Err(e)
        }
        // A definite answer: nothing of this request is left on the server.
        Err(e) => {
            drop(settle.disarm());
            Err(e)
        }
    }
}

/// The Acquire RPC itself, with retries, for `acquire_specs` and for the
/// withdrawal's probe.
pub(crate) async fn acquire_call(
    client: &crate::Client,
    lease_id: u64,
    specs: Vec<pb::LockSpec>,
    wait: Duration,
    opts: &LockOptions,
    deadline: Instant,
) -> Result<pb::AcquireResponse, Error> {
    let wait_until = Instant::now() + wait;
    let lock_delay_ms = u64::try_from(opts.lock_delay.as_millis()).unwrap_or(u64::MAX);
    client
        .call(lease_id, deadline, |ch, left| {
            // A retry waits only for what is left of the caller's wait, and
            // no attempt waits past the call's deadline.
            let wait_ms = if wait.is_zero() {
                0
            } else {
                let wait_left = wait_until.saturating_duration_since(Instant::now());
                let wait = wait_within(wait_left, left);
                u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
            };
            let mut req = tonic::Request::new(pb::AcquireRequest {
                lease_id,
                locks: specs.clone(),
                wait_timeout_ms: wait_ms,
                reason: opts.reason.clone(),
                metadata: opts.metadata.clone(),
                lock_delay_ms,
            });
            req.set_timeout(left);
            async move { pb::locks_client::LocksClient::new(ch).acquire(req).await }
        })
        .await
}

/// Most of the time kept, of what is left before a call's deadline, for
/// the answer to a wait that ends: the node withdraws the queued request
/// (one write) and answers, and the answer travels back.
const WAIT_ANSWER_MARGIN_MAX: Duration = Duration::from_millis(250);

/// How long an attempt asks the server to wait, given what is left of the
/// caller's wait and of the call's deadline: never so long that the
/// deadline passes first. A wait cut short by the deadline then ends with
/// the server's WAIT_TIMEOUT, a definite answer (the request withdrawn),
/// rather than with DEADLINE_EXCEEDED, which leaves the request in doubt
/// (a node cancel and the session's cleanup) and throws away a grant that
/// arrives just before the deadline. A quarter of the time left, at most
/// [`WAIT_ANSWER_MARGIN_MAX`], is kept for the answer.
fn wait_within(wait_left: Duration, call_left: Duration) -> Duration {
    let margin = (call_left / 4).min(WAIT_ANSWER_MARGIN_MAX);
    wait_left.min(call_left.saturating_sub(margin))
}

/// Makes sure that nothing of the session's lease on some names outlives
/// their guard: a hold whose guard is gone, or a request (queued or
/// granted) whose acquire ended without a definite answer. Holds the
/// names' claim until that is certain; dropping it while armed does the
/// work in the background (on the current runtime; without one the
/// lease's end frees everything).
pub(crate) struct Settle {
    session: Session,
    /// The locks as they were asked for (the withdrawal's probe repeats them).
    specs: Vec<pb::LockSpec>,
    /// The hold to release first, when one is known.
    token: Option<u64>,
    claim: Option<Claim>,
}

impl Settle {
    pub(crate) fn new(
        session: Session,
        specs: Vec<pb::LockSpec>,
        token: Option<u64>,
        claim: Option<Claim>,
    ) -> Settle {
        Settle {
            session,
            specs,
            token,
            claim,
        }
    }

    /// Nothing to settle: hand back the claim.
    fn disarm(mut self) -> Option<Claim> {
        self.claim.take()
    }

    /// Release the known hold now; if that does not certainly end it, the
    /// rest happens in the background (see [`settle`]).
    pub(crate) async fn release(mut self, token: u64) -> Result<(), Error> {
        if let Some(claim) = &self.claim {
            claim.settling();
        }
        self.token = Some(token);
        let names = self.specs.iter().map(|s| s.name.clone()).collect();
        let r = release_names(&self.session, names, token).await;
        if release_is_final(&r, self.specs.len()) {
            self.claim.take();
        } else if matches!(r, Err(Error::NotHolder { .. } | Error::StaleToken { .. })) {
            // Several names, refused as a whole because one of them is no
            // longer held so: the others still are. The withdrawal looks at
            // each name and releases what the lease still holds.
            self.token = None;
        }
        r
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        claim.settling();
        // Never block or panic in Drop: settle on the runtime if there is
        // one; otherwise the lease's end (revoke or expiry) frees the locks.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let session = self.session.clone();
        let specs = std::mem::take(&mut self.specs);
        let token = self.token;
        handle.spawn(async move {
            settle(&session, &specs, token).await;
            drop(claim);
            // Done or given up (settle is bounded): let go of the session,
            // which is revoked now if nothing else holds it.
            drop(session);
        });
    }
}

/// After a release of `names` names held with one token: whether the
/// holds are certainly gone (released now, or the whole lease is gone; for
/// one name, NOT_HOLDER and STALE_TOKEN say it is already gone). A release
/// is all or none on the server, so for several names NOT_HOLDER or
/// STALE_TOKEN only says that one of them is no longer held so: nothing
/// was released, and the others may still be held.
fn release_is_final(r: &Result<(), Error>, names: usize) -> bool {
    match r {
        Ok(()) | Err(Error::LeaseLost { .. }) => true,
        Err(Error::NotHolder { .. } | Error::StaleToken { .. }) => names == 1,
        Err(_) => false,
    }
}

/// Release `token`'s hold (if given), then withdraw whatever is left.
async fn settle(session: &Session, specs: &[pb::LockSpec], token: Option<u64>) {
    // A session that ended ends its lease: every hold and wait with it.
    if session.valid_until().is_none() {
        return;
    }
    if let Some(token) = token {
        let names = specs.iter().map(|s| s.name.clone()).collect();
        let r = release_names(session, names, token).await;
        if release_is_final(&r, specs.len()) {
            return;
        }
        if let Err(e) = r {
            tracing::debug!(lease_id = session.lease_id(), token, error = %e, "background release failed; withdrawing");
        }
    }
    withdraw(session, specs).await;
}

/// Rounds of withdrawal that got answers but left something, before giving
/// up (the server's answers allow none after the first two: see
/// `withdraw_round`); the lease's end frees what is left.
const MAX_WITHDRAW_ROUNDS: u32 = 6;

/// Rounds of withdrawal in which a call failed, before giving up. With
/// the pauses between them (50 ms doubling to 1 s) that is about 6.5 s
/// plus the calls' own retries: enough to ride out an election, not to
/// keep a session alive for ever where writes fail and keep-alives (which
/// are not written) still get through.
const MAX_FAILED_WITHDRAW_ROUNDS: u32 = 10;

/// A withdrawal gives up this many of the lease's ttls after it started,
/// whatever its rounds did.
const WITHDRAW_TTLS: u32 = 3;

/// Until the lease neither holds nor waits for any of `specs`' names (as
/// read back), or the session ends: look (linearizable inspect), release
/// the lease's holds, withdraw its queued request, look again. Failed
/// rounds are retried with backoff, but the whole is bounded: at most
/// [`MAX_WITHDRAW_ROUNDS`] rounds that leave something,
/// [`MAX_FAILED_WITHDRAW_ROUNDS`] that fail, and [`WITHDRAW_TTLS`] ttls
/// in all. Giving up leaves what is left to the lease's end; the caller
/// then lets go of the session, so a session nobody else holds is revoked
/// (one write frees everything) or, if that fails too, expires.
async fn withdraw(session: &Session, specs: &[pb::LockSpec]) {
    let lease_id = session.lease_id();
    let give_up_at = Instant::now() + session.ttl().saturating_mul(WITHDRAW_TTLS);
    let mut pause = Duration::from_millis(50);
    let (mut rounds, mut failed) = (0u32, 0u32);
    let why = loop {
        if !session.is_valid() {
            // The lease's end takes everything with it.
            return;
        }
        match tokio::time::timeout_at(give_up_at.into(), withdraw_round(session, specs)).await {
            Ok(Ok(true)) => {
                tracing::debug!(
                    lease_id,
                    "withdrawal done: nothing of the lease is left on those names"
                );
                return;
            }
            Ok(Ok(false)) => {
                rounds += 1;
                if rounds >= MAX_WITHDRAW_ROUNDS {
                    break format!("{rounds} rounds released or withdrew something and left more");
                }
                continue;
            }
            Ok(Err(e)) => {
                failed += 1;
                if failed >= MAX_FAILED_WITHDRAW_ROUNDS {
                    break format!("{failed} rounds failed, the last with: {e}");
                }
                tracing::debug!(lease_id, error = %e, failed, "withdrawal round failed; retrying");
            }
            Err(_) => {
                break format!("not done within {WITHDRAW_TTLS} ttls ({failed} rounds failed)");
            }
        }
        if Instant::now() + pause >= give_up_at {
            break format!("not done within {WITHDRAW_TTLS} ttls ({failed} rounds failed)");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    };
    tracing::warn!(
        lease_id,
        names = ?specs.iter().map(|s| &s.name).collect::<Vec<_>>(),
        why,
        "gave up withdrawing what the lease may still hold or wait for on these names; \
         the lease's end frees it (revoked when the session is dropped, or expired)"
    );
}

/// One look and one step. `Ok(true)`: the lease has nothing on the names.
/// `Ok(false)`: something was released or withdrawn (look again). `Err`: a
/// call failed (try again).
async fn withdraw_round(session: &Session, specs: &[pb::LockSpec]) -> Result<bool, Error> {
    let lease_id = session.lease_id();
    let client = session.client();
    let mut holds: Vec<(u64, Vec<String>)> = Vec::new();
    let mut waiting = false;
    for spec in specs {
        let Some(info) = client.inspect(&spec.name).await? else {
            continue;
        };
        for h in info.holders.iter().filter(|h| h.lease_id == lease_id) {
            match holds.iter_mut().find(|(t, _)| *t == h.token) {
                Some((_, names)) => names.push(spec.name.clone()),
                None => holds.push((h.token, vec![spec.name.clone()])),
            }
        }
        waiting |= info.queue.iter().any(|q| q.lease_id == lease_id);
    }
    if holds.is_empty() && !waiting {
        return Ok(true);
    }
    if waiting {
        // The server answers a lease that already waits for exactly these
        // locks with its place in line (`retry = true`); with a 1 ms wait it
        // then withdraws the request, or releases what it was granted in
        // between. If the request was granted before this probe, the probe
        // gets that hold back (released below).
        let probe = LockOptions {
            wait: Duration::from_millis(1),
            ..LockOptions::default()
        };
        let deadline = probe.deadline_at(client, probe.wait);
        match acquire_call(
            session.client(),
            session.lease_id(),
            specs.to_vec(),
            probe.wait,
            &probe,
            deadline,
        )
        .await
        {
            Ok(got) => {
                let names = got.holds.iter().map(|g| g.name.clone()).collect();
                holds.push((got.token, names));
            }
            Err(Error::WaitTimeout { .. } | Error::Busy { .. }) => {}
            // Failed, whether or not it may have been applied: try again.
            Err(
                e @ (Error::OutcomeUnknown { .. }
                | Error::DeadlineExceeded { .. }
                | Error::Unavailable { .. }),
            ) => {
                return Err(e);
            }
            // A definite refusal (say ALREADY_WAITING for another set):
            // counted as a round that left something.
            Err(e) => {
                tracing::debug!(lease_id, error = %e, "withdrawal probe refused");
            }
        }
    }
    for (token, names) in holds {
        match release_names(session, names, token).await {
            // Released, or the holds changed since the look (the next
            // round looks again).
            Ok(())
            | Err(Error::NotHolder { .. } | Error::StaleToken { .. } | Error::LeaseLost { .. }) => {
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
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
    /// The name's claim on the session, kept until the hold is certainly gone.
    claim: Option<Claim>,
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
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                if let (Some(ttl), true) = (ttl, e.may_have_been_applied()) {
                    self.session.shared().shrink(sent_at, ttl);
                }
                return Err(e);
            }
        };
        self.session
            .shared()
            .renewed(sent_at, Duration::from_millis(r.ttl_ms), true);
        Ok(r.extensions)
    }

    /// Release the lock now. When the release fails without certainly
    /// ending the hold (the cluster unreachable, an unknown outcome), the
    /// session keeps releasing it in the background and a new acquire of
    /// the name on this session waits for that.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.settle().release(self.token).await
    }

    fn settle(&mut self) -> Settle {
        Settle {
            session: self.session.clone(),
            specs: vec![self.mode.spec(&self.name)],
            token: Some(self.token),
            claim: self.claim.take(),
        }
    }
}

/// Release `names` (all held with `token`) for the session's lease.
///
/// A retried release of one name that meets NOT_HOLDER counts as done only
/// when an earlier attempt's outcome is unknown (a transport error, a write
/// TIMEOUT, a node shutting down: it may have been applied without its
/// answer arriving, and then the hold is already gone, which is what was
/// asked). NOT_LEADER and NO_LEADER say the attempt was not applied, so
/// after only those a NOT_HOLDER is reported as the error it is. With
/// several names the NOT_HOLDER may instead mean that one of them was taken
/// away while the earlier attempt was not applied (a release is all or
/// none), so the outcome is unknown.
pub(crate) async fn release_names(
    session: &Session,
    names: Vec<String>,
    token: u64,
) -> Result<(), Error> {
    let lease_id = session.lease_id();
    let client = session.client();
    let unknown_outcome = Arc::new(AtomicBool::new(false));
    let mut attempts = 0u32;
    let r = client
        .call(lease_id, client.deadline(), |ch, left| {
            attempts += 1;
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
        Err(Error::NotHolder { message }) if unknown_outcome.load(Ordering::Relaxed) => {
            if names.len() == 1 {
                Ok(())
            } else {
                Err(Error::OutcomeUnknown {
                    attempts,
                    message: format!(
                        "an earlier attempt's outcome is unknown and a retry was refused: {message}"
                    ),
                })
            }
        }
        Err(e) => Err(e),
    }
}

/// True when a failed write attempt may nevertheless have been applied:
/// the node timed out waiting for the write or shut down under it, it
/// failed in a way it did not expect (INTERNAL: a node answers so for a
/// leader's reply it could not read, or a state machine's answer it did
/// not expect, both after the write was applied), or the failure came from
/// the transport (no raftlock reason), so the request may have reached the
/// leader. Every other reason is a definite refusal.
pub(crate) fn outcome_unknown(status: &tonic::Status) -> bool {
    errors::classify(status).applied == Applied::Unknown
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        // Never blocks: the release (and, if it fails, the withdrawal) runs
        // in the background while the name stays claimed on the session.
        drop(self.settle());
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
        assert!(outcome_unknown(&status(Code::Internal, "INTERNAL")));
        assert!(outcome_unknown(&tonic::Status::unavailable(
            "connection reset"
        )));
        assert!(outcome_unknown(&tonic::Status::unknown(
            "h2 protocol error"
        )));
        // A connection that could not be opened carried no request.
        assert!(!outcome_unknown(&tonic::Status::unavailable(
            "tcp connect error"
        )));
    }

    #[test]
    fn a_wait_ends_before_the_calls_deadline_with_room_for_the_answer() {
        let ms = Duration::from_millis;
        // The deadline is far: the wait is the caller's.
        assert_eq!(wait_within(ms(5_000), ms(15_000)), ms(5_000));
        // A deadline shorter than the wait cuts it, leaving time to answer.
        assert_eq!(wait_within(ms(30_000), ms(700)), ms(525));
        assert_eq!(wait_within(ms(30_000), ms(5_000)), ms(4_750));
        assert_eq!(wait_within(ms(30_000), ms(40)), ms(30));
        // Nothing left: nothing to wait (the attempt asks for 1 ms).
        assert_eq!(wait_within(ms(30_000), Duration::ZERO), Duration::ZERO);
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
