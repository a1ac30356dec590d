//! Sessions: a lease kept alive by one background task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftlock_proto::errors::{self, ErrorReason};
use raftlock_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Client;
use crate::error::Error;
use crate::lock::LockBuilder;
use crate::multi::MultiLockBuilder;

/// How a session's lease is granted and counted.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The lease's time to live without a keep-alive (1 s to 24 h). The
    /// session sends a keep-alive every `ttl / 3`.
    pub ttl: Duration,
    /// Free text naming this client (process, host), shown to people.
    pub owner: String,
    /// Subtracted from every validity window, to cover the difference
    /// between this machine's clock rate and the leader's. Must be below `ttl`.
    pub drift_margin: Duration,
}

impl SessionOptions {
    /// A session with this ttl, a drift margin of 5 % of it, and an owner
    /// naming this process.
    pub fn new(ttl: Duration) -> Self {
        SessionOptions {
            ttl,
            owner: format!("raftlock-client pid {}", std::process::id()),
            drift_margin: ttl / 20,
        }
    }

    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    pub fn drift_margin(mut self, margin: Duration) -> Self {
        self.drift_margin = margin;
        self
    }
}

impl Default for SessionOptions {
    /// A 10 s ttl.
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The server no longer knows the lease (LEASE_NOT_FOUND, LEASE_EXPIRING),
    /// or its validity window passed without an acknowledged keep-alive.
    Lost,
    /// Revoked by this client ([`Session::revoke`] or drop).
    Revoked,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Until when the lease is certainly alive, on this process's monotonic
    /// clock: send time of the last acknowledged request + ttl − drift.
    valid_until: Instant,
    ttl: Duration,
    ended: Option<SessionEnd>,
}

/// What the session handle and its keep-alive task share.
pub(crate) struct Shared {
    lease_id: u64,
    drift_margin: Duration,
    state: watch::Sender<State>,
    /// Test hook: a paused session sends no keep-alives and does not revoke
    /// (it behaves like a frozen process).
    paused: AtomicBool,
    /// Revoke the lease when the last handle goes (false for a session
    /// attached to a lease someone else granted).
    revoke_on_drop: bool,
}

impl Shared {
    fn state(&self) -> State {
        *self.state.borrow()
    }

    /// A request sent at `sent_at` was acknowledged and its answer gave
    /// the lease `ttl`: the lease lives at least `ttl` after the leader
    /// received it, which is after `sent_at`. `sets_ttl` is for an
    /// extend's answer, which may change the ttl; a keep-alive's answer
    /// never lengthens it (it may predate an extend that shortened it).
    pub(crate) fn renewed(&self, sent_at: Instant, ttl: Duration, sets_ttl: bool) {
        let now = Instant::now();
        self.state.send_if_modified(|s| {
            if s.ended.is_some() {
                return false;
            }
            if now >= s.valid_until {
                // The window closed before this ack arrived: the session has
                // already been (or may have been) reported lost; stay lost.
                s.ended = Some(SessionEnd::Lost);
                return true;
            }
            if ttl < s.ttl {
                // A shorter ttl: a new leader gives the lease only that from
                // its election, so the older, longer window no longer holds.
                s.ttl = ttl;
                s.valid_until = sent_at + ttl.saturating_sub(self.drift_margin);
                return true;
            }
            if sets_ttl {
                s.ttl = ttl;
            }
            let until = sent_at + s.ttl.saturating_sub(self.drift_margin);
            if until > s.valid_until {
                s.valid_until = until;
            }
            true
        });
    }

    /// A ttl change sent at `sent_at` whose answer was lost: count as if
    /// it was applied when it shortens the ttl.
    pub(crate) fn shrink(&self, sent_at: Instant, ttl: Duration) {
        self.state.send_if_modified(|s| {
            if s.ended.is_some() || ttl >= s.ttl {
                return false;
            }
            s.ttl = ttl;
            let until = sent_at + ttl.saturating_sub(self.drift_margin);
            if until < s.valid_until {
                s.valid_until = until;
            }
            true
        });
    }

    pub(crate) fn end(&self, how: SessionEnd) {
        self.state.send_if_modified(|s| {
            if s.ended.is_some() {
                return false;
            }
            s.ended = Some(how);
            true
        });
    }

    /// Mark the session lost if its window has passed; returns the end.
    fn check_expiry(&self) -> Option<SessionEnd> {
        let now = Instant::now();
        self.state.send_if_modified(|s| {
            if s.ended.is_none() && now >= s.valid_until {
                s.ended = Some(SessionEnd::Lost);
                return true;
            }
            false
        });
        self.state().ended
    }

    pub(crate) fn is_valid(&self) -> bool {
        let s = self.state();
        s.ended.is_none() && Instant::now() < s.valid_until
    }

    pub(crate) fn valid_until(&self) -> Option<Instant> {
        let s = self.state();
        s.ended.is_none().then_some(s.valid_until)
    }

    pub(crate) async fn lost(&self) -> SessionEnd {
        let mut rx = self.state.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if let Some(end) = s.ended {
                return end;
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return SessionEnd::Lost;
                    }
                }
                _ = tokio::time::sleep_until(s.valid_until.into()) => {
                    self.check_expiry();
                }
            }
        }
    }
}

/// A lease kept alive by one background task. Cheap to clone; the lease is
/// revoked (in the background) when the last clone and the last
/// [`crate::LockGuard`] of it are dropped.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    client: Client,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    names: Arc<Names>,
}

/// What the session is doing with a name, seen from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameState {
    /// An acquire of it is in flight, or a guard holds it.
    Claimed,
    /// Its guard is gone, or an acquire of it failed without a definite
    /// answer, and the session is making sure the lease neither holds nor
    /// waits for it (a release, or a withdrawal, in flight).
    Settling,
}

/// The names this session holds or is busy with. The server answers an
/// acquire by a lease that already holds a name with that same hold, so
/// without this two guards could share one hold (and the first release
/// would end the other's lock), and a background release or withdrawal
/// could end a hold a newer guard believes in. Every acquire claims its
/// names here first; a name stays claimed until nothing of the lease on it
/// can survive without a guard.
pub(crate) struct Names {
    lease_id: u64,
    map: std::sync::Mutex<HashMap<String, NameState>>,
    /// Bumped whenever names are freed, for acquires waiting on them.
    freed: watch::Sender<u64>,
}

/// Why names could not be claimed at once.
pub(crate) enum Taken {
    /// Held by a guard of this session, or an acquire of it is in flight.
    Claimed(String),
    /// Being released or withdrawn; free once that is done.
    Settling(String),
}

impl Names {
    fn new(lease_id: u64) -> Arc<Names> {
        Arc::new(Names {
            lease_id,
            map: std::sync::Mutex::new(HashMap::new()),
            freed: watch::channel(0).0,
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, NameState>> {
        // Poisoned only if a thread panicked between two plain map
        // operations: the map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim all of `names` now, or none.
    pub(crate) fn try_claim(self: &Arc<Self>, names: &[String]) -> Result<Claim, Taken> {
        let mut map = self.map();
        for name in names {
            match map.get(name) {
                Some(NameState::Claimed) => return Err(Taken::Claimed(name.clone())),
                Some(NameState::Settling) => return Err(Taken::Settling(name.clone())),
                None => {}
            }
        }
        for name in names {
            map.insert(name.clone(), NameState::Claimed);
        }
        Ok(Claim {
            names: Arc::clone(self),
            held: names.to_vec(),
        })
    }

    /// Claim all of `names`, waiting (until `deadline`) while any of them
    /// is settling. A name held or being acquired by this session is
    /// [`Error::AlreadyHeld`] at once.
    pub(crate) async fn claim(
        self: &Arc<Self>,
        names: &[String],
        deadline: Instant,
    ) -> Result<Claim, Error> {
        loop {
            // Subscribed before looking, so a free in between is not missed.
            let mut freed = self.freed.subscribe();
            match self.try_claim(names) {
                Ok(claim) => return Ok(claim),
                Err(Taken::Claimed(name)) => {
                    return Err(Error::AlreadyHeld {
                        name,
                        lease_id: self.lease_id,
                    });
                }
                Err(Taken::Settling(name)) => {
                    if tokio::time::timeout_at(deadline.into(), freed.changed())
                        .await
                        .is_err()
                    {
                        return Err(Error::DeadlineExceeded {
                            message: format!(
                                "the deadline passed while this session was still withdrawing \
                                 an earlier acquire or release of {name:?}"
                            ),
                            // Nothing of this acquire was sent.
                            maybe_applied: false,
                        });
                    }
                }
            }
        }
    }

    /// Whether `name` is claimed or settling (for tests and diagnostics).
    pub(crate) fn is_busy(&self, name: &str) -> bool {
        self.map().contains_key(name)
    }
}

/// Names claimed by one acquire (then by its guard). Dropping it frees them.
pub(crate) struct Claim {
    names: Arc<Names>,
    held: Vec<String>,
}

impl Claim {
    /// The names stay taken, but a new acquire of them on this session will
    /// wait for them instead of failing: their release or withdrawal is
    /// under way.
    pub(crate) fn settling(&self) {
        let mut map = self.names.map();
        for name in &self.held {
            map.insert(name.clone(), NameState::Settling);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        {
            let mut map = self.names.map();
            for name in &self.held {
                map.remove(name);
            }
        }
        self.names.freed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // Never blocks: the keep-alive task sees this, stops and revokes.
        self.stop.send_replace(true);
    }
}

/// A session that does not keep itself alive: held by a [`Client`] for
/// [`Client::lock`], so the session ends when its last guard is dropped.
#[derive(Clone)]
pub(crate) struct WeakSession(std::sync::Weak<SessionInner>);

impl WeakSession {
    pub(crate) fn upgrade(&self) -> Option<Session> {
        self.0.upgrade().map(|inner| Session { inner })
    }
}

impl Session {
    pub(crate) fn downgrade(&self) -> WeakSession {
        WeakSession(Arc::downgrade(&self.inner))
    }

    pub(crate) async fn start(client: Client, options: SessionOptions) -> Result<Session, Error> {
        if options.drift_margin >= options.ttl {
            return Err(Error::InvalidArgument {
                field: "drift_margin".into(),
                reason: ErrorReason::InvalidArgument,
                message: "the drift margin must be below the ttl".into(),
            });
        }
        let ttl_ms = u64::try_from(options.ttl.as_millis()).unwrap_or(u64::MAX);
        // Counted from before the first attempt: whichever attempt was
        // granted, the leader received it after this.
        let sent_at = Instant::now();
        let owner = options.owner.clone();
        let granted = client
            .call(0, client.deadline(), |ch, left| {
                let mut req = tonic::Request::new(pb::GrantLeaseRequest {
                    ttl_ms,
                    owner: owner.clone(),
                });
                req.set_timeout(left);
                async move { pb::leases_client::LeasesClient::new(ch).grant(req).await }
            })
            .await?;
        let ttl = Duration::from_millis(granted.ttl_ms);
        let (state, _) = watch::channel(State {
            valid_until: sent_at + ttl.saturating_sub(options.drift_margin),
            ttl,
            ended: None,
        });
        let shared = Arc::new(Shared {
            lease_id: granted.lease_id,
            drift_margin: options.drift_margin,
            state,
            paused: AtomicBool::new(false),
            revoke_on_drop: true,
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(keep_alive_task(
            client.clone(),
            Arc::clone(&shared),
            stop_rx,
        ));
        tracing::debug!(
            lease_id = granted.lease_id,
            ttl_ms = granted.ttl_ms,
            "session started"
        );
        Ok(Session {
            inner: Arc::new(SessionInner {
                client,
                names: Names::new(shared.lease_id),
                shared,
                stop,
            }),
        })
    }

    /// Keep an existing lease alive (granted by another process, the CLI's
    /// `raftlock lease grant`, or [`Client::grant_lease`]). The first
    /// keep-alive is sent before this returns; the validity window counts
    /// from its send time like any other. Dropping an attached session
    /// does NOT revoke the lease (it belongs to whoever granted it): it just
    /// stops keeping it alive. [`Session::revoke`] still revokes it.
    pub(crate) async fn attach(
        client: Client,
        lease_id: u64,
        drift_margin: Option<Duration>,
    ) -> Result<Session, Error> {
        let sent_at = Instant::now();
        let answer = client
            .call_read(lease_id, client.deadline(), |ch, left| async move {
                let mut req =
                    tonic::Request::new(futures::stream::iter([pb::KeepAliveRequest { lease_id }]));
                req.set_timeout(left);
                let (md, mut inbound, ext) = pb::leases_client::LeasesClient::new(ch)
                    .keep_alive(req)
                    .await?
                    .into_parts();
                match inbound.message().await? {
                    Some(m) => Ok(tonic::Response::from_parts(md, m, ext)),
                    None => Err(tonic::Status::unavailable(
                        "the keep-alive stream ended without an answer",
                    )),
                }
            })
            .await?;
        let ttl = Duration::from_millis(answer.ttl_ms);
        let drift_margin = drift_margin.unwrap_or(ttl / 20);
        if drift_margin >= ttl {
            return Err(Error::InvalidArgument {
                field: "drift_margin".into(),
                reason: ErrorReason::InvalidArgument,
                message: "the drift margin must be below the ttl".into(),
            });
        }
        let (state, _) = watch::channel(State {
            valid_until: sent_at + ttl.saturating_sub(drift_margin),
            ttl,
            ended: None,
        });
        let shared = Arc::new(Shared {
            lease_id,
            drift_margin,
            state,
            paused: AtomicBool::new(false),
            revoke_on_drop: false,
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(keep_alive_task(
            client.clone(),
            Arc::clone(&shared),
            stop_rx,
        ));
        tracing::debug!(lease_id, ttl_ms = answer.ttl_ms, "session attached");
        Ok(Session {
            inner: Arc::new(SessionInner {
                client,
                names: Names::new(shared.lease_id),
                shared,
                stop,
            }),
        })
    }

    /// The lease id.
    pub fn lease_id(&self) -> u64 {
        self.inner.shared.lease_id
    }

    /// The lease's ttl as last acknowledged by the cluster.
    pub fn ttl(&self) -> Duration {
        self.inner.shared.state().ttl
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub(crate) fn names(&self) -> &Arc<Names> {
        &self.inner.names
    }

    /// Test hook: true while this session holds `name` through a guard, is
    /// acquiring it, or is still releasing or withdrawing it.
    #[doc(hidden)]
    pub fn is_busy_with(&self, name: &str) -> bool {
        self.inner.names.is_busy(name)
    }

    /// Until when the lease is certainly alive, on this process's monotonic
    /// clock: the send time of the last acknowledged keep-alive (at first,
    /// of the grant) + ttl − drift margin. `None` once the session is known
    /// lost or revoked.
    pub fn valid_until(&self) -> Option<Instant> {
        self.inner.shared.valid_until()
    }

    /// True while the lease is certainly alive (see [`Session::valid_until`]).
    pub fn is_valid(&self) -> bool {
        self.inner.shared.is_valid()
    }

    /// Resolves when the session is known lost (the server refused a
    /// keep-alive with LEASE_NOT_FOUND or LEASE_EXPIRING, or the validity
    /// window passed without renewal) or revoked. It resolves no later than
    /// [`Session::valid_until`], so before the cluster can expire the lease.
    pub async fn lost(&self) -> SessionEnd {
        self.inner.shared.lost().await
    }

    /// Start building an acquire of `name` for this session.
    pub fn lock(&self, name: impl Into<String>) -> LockBuilder<'_> {
        LockBuilder::new(self, name.into())
    }

    /// Start building an all-or-none acquire of several locks (one request,
    /// one fencing token): `session.lock_many(["a", "b"]).acquire()`.
    ///
    /// ```
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (node, addr, _dir) = doc_node().await?;
    /// use std::time::Duration;
    /// use raftlock_client::{Client, ClientOptions, Error, Mode, SessionOptions};
    ///
    /// let client = Client::connect([addr], ClientOptions::default()).await?;
    /// let me = client.session(SessionOptions::new(Duration::from_secs(10))).await?;
    /// let other = client.session(SessionOptions::new(Duration::from_secs(10))).await?;
    /// let busy = other.lock("accounts/b").try_acquire().await?;
    ///
    /// // One of the names is busy: nothing is held.
    /// let r = me.lock_many(["accounts/a", "accounts/b"]).try_acquire().await;
    /// assert!(matches!(r, Err(Error::Busy { .. })));
    /// assert!(client.inspect("accounts/a").await?.is_none());
    ///
    /// busy.release().await?;
    /// let both = me
    ///     .lock_many(["accounts/a", "accounts/b"])
    ///     .with("accounts/config", Mode::Shared) // another mode for one name
    ///     .wait(Duration::from_secs(5))
    ///     .acquire()
    ///     .await?;
    /// assert_eq!(both.names().collect::<Vec<_>>(), ["accounts/a", "accounts/b", "accounts/config"]);
    /// let token = both.token(); // one token for the whole grant
    /// assert_eq!(client.inspect("accounts/b").await?.expect("held").holders[0].token, token);
    /// both.release().await?; // all together
    /// # node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lock_many<I, S>(&self, names: I) -> MultiLockBuilder<'_>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        MultiLockBuilder::new(self, names.into_iter().map(Into::into).collect())
    }

    /// The owner text and the other details the cluster keeps about this
    /// session's lease (holds, waits, remaining time on the leader); `None`
    /// when the cluster no longer knows it.
    pub async fn info(&self) -> Result<Option<pb::LeaseInfo>, Error> {
        let id = self.lease_id();
        Ok(self
            .client()
            .leases()
            .await?
            .into_iter()
            .find(|l| l.lease_id == id))
    }

    /// End the lease now: its holds are released and its waits dropped.
    /// A lease the server no longer knows counts as revoked.
    pub async fn revoke(&self) -> Result<(), Error> {
        self.inner.shared.end(SessionEnd::Revoked);
        self.inner.stop.send_replace(true);
        revoke_lease(&self.inner.client, self.lease_id()).await
    }

    /// Test hook: stop (or resume) sending keep-alives, as if this process
    /// froze; a paused session whose task ends does not revoke its lease.
    #[doc(hidden)]
    pub fn pause_keep_alives(&self, paused: bool) {
        self.inner.shared.paused.store(paused, Ordering::SeqCst);
    }
}

async fn revoke_lease(client: &Client, lease_id: u64) -> Result<(), Error> {
    let r = client
        .call(lease_id, client.deadline(), |ch, left| {
            let mut req = tonic::Request::new(pb::RevokeLeaseRequest { lease_id });
            req.set_timeout(left);
            async move { pb::leases_client::LeasesClient::new(ch).revoke(req).await }
        })
        .await;
    match r {
        Ok(_) | Err(Error::LeaseLost { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn lease_gone(status: &tonic::Status) -> bool {
    errors::classify(status)
        .known()
        .is_some_and(ErrorReason::is_lease_gone)
}

/// The one keep-alive task of a session: a bidi stream to the leader (or
/// any node, which forwards), one request every ttl/3, one answer awaited at
/// a time so each answer pairs with its request's send time. The stream is
/// reopened (on the next node) when it fails.
async fn keep_alive_task(client: Client, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let lease_id = shared.lease_id;
    let mut reopen_pause = Duration::from_millis(20);
    'outer: loop {
        if *stop.borrow() || shared.check_expiry().is_some() {
            break;
        }
        if shared.paused.load(Ordering::SeqCst) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        let Some(valid_until) = shared.valid_until() else {
            break;
        };
        let (index, channel) = client.pick();
        let (tx, rx) = mpsc::channel::<pb::KeepAliveRequest>(1);
        // The first request goes with the stream's opening.
        let mut sent_at = Instant::now();
        if tx.send(pb::KeepAliveRequest { lease_id }).await.is_err() {
            break;
        }
        let mut leases = pb::leases_client::LeasesClient::new(channel);
        let open = leases.keep_alive(ReceiverStream::new(rx));
        let opened = tokio::select! {
            r = tokio::time::timeout_at(valid_until.into(), open) => r,
            _ = stop.changed() => break,
        };
        let mut inbound = match opened {
            Ok(Ok(r)) => {
                client.learn_from(r.metadata());
                r.into_inner()
            }
            Ok(Err(status)) => {
                if lease_gone(&status) {
                    shared.end(SessionEnd::Lost);
                    break;
                }
                tracing::debug!(lease_id, error = %status.message(), "keep-alive stream failed to open");
                client.note_failure(index, &status);
                tokio::select! {
                    _ = tokio::time::sleep(reopen_pause) => {}
                    _ = stop.changed() => break,
                }
                reopen_pause = (reopen_pause * 2).min(Duration::from_millis(500));
                continue;
            }
            Err(_) => continue,
        };
        loop {
            let Some(valid_until) = shared.valid_until() else {
                break 'outer;
            };
            let answer = tokio::select! {
                r = tokio::time::timeout_at(valid_until.into(), inbound.message()) => r,
                _ = stop.changed() => break 'outer,
            };
            match answer {
                Ok(Ok(Some(resp))) => {
                    shared.renewed(sent_at, Duration::from_millis(resp.ttl_ms), false);
                    reopen_pause = Duration::from_millis(20);
                }
                Ok(Ok(None)) => break,
                Ok(Err(status)) => {
                    if lease_gone(&status) {
                        shared.end(SessionEnd::Lost);
                        break 'outer;
                    }
                    tracing::debug!(lease_id, error = %status.message(), "keep-alive stream failed");
                    client.note_failure(index, &status);
                    break;
                }
                // No answer before the window closed: the outer loop
                // marks the session lost.
                Err(_) => break,
            }
            // Due ttl/3 after the last send, with the ttl as it is now: an
            // extend may shorten it while this waits.
            let mut state = shared.state.subscribe();
            loop {
                let next = sent_at + shared.state().ttl / 3;
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => break,
                    r = state.changed() => if r.is_err() { break },
                    _ = stop.changed() => break 'outer,
                }
            }
            if shared.paused.load(Ordering::SeqCst) {
                break;
            }
            sent_at = Instant::now();
            if tx.send(pb::KeepAliveRequest { lease_id }).await.is_err() {
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(reopen_pause) => {}
            _ = stop.changed() => break,
        }
    }
    // Stopped (session dropped) or lost locally: revoke, so the locks free up
    // now rather than after the server's ttl. A lost lease was already
    // reported to the user; a paused one plays a frozen process.
    let state = shared.state();
    if state.ended != Some(SessionEnd::Revoked) && !shared.paused.load(Ordering::SeqCst) {
        shared.end(SessionEnd::Revoked);
        if !shared.revoke_on_drop {
            return;
        }
        if let Err(e) = revoke_lease(&client, lease_id).await {
            tracing::debug!(lease_id, error = %e, "background revoke failed; the lease will expire");
        }
    }
}
