//! The operations of a node, in Rust types. The gRPC services and the
//! embedded handle are thin layers over this.
//!
//! Writes go through the leader: on the leader they are stamped with the
//! cluster clock and proposed; a follower forwards them one hop (the leader
//! answers NOT_LEADER with its successor if it lost leadership meanwhile).
//! Reads are linearizable through a read-index check at the leader unless
//! the caller asks for a stale read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use raftlock_core::{
    Applied, BatchPlan, Command, Granted, IdentityLimits, LeaseId, LockError, LockSpec, Metadata,
    Request, Response, State, WaiterId,
};
use raftlock_store::{NodeId, StateHandle};

use crate::Raft;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::keeper::Keeper;
use crate::peer::client::Network;
use crate::waits::{WaitOutcome, Waits};
use crate::watch::WatchHub;

/// How long an admin snapshot waits before it triggers openraft again
/// (a trigger that came while another snapshot was being built is dropped).
const SNAPSHOT_RETRIGGER: Duration = Duration::from_millis(200);

/// The operations of one node, in Rust types: what its gRPC services call,
/// and what [`NodeHandle::api`](crate::NodeHandle::api) gives an embedder
/// in process (no network hop).
pub struct Api {
    /// This node's own Arc, for work that must outlive a call.
    pub(crate) me: std::sync::Weak<Api>,
    pub(crate) id: NodeId,
    /// Where clients reach this node (its advertised client address).
    pub(crate) client_addr: String,
    /// This node's store id (see `raftlock_core::MemberRecord`).
    pub(crate) store_id: String,
    /// Stamps this node's peer messages and checks its peers'.
    pub(crate) peer_identity: crate::peer::identity::PeerIdentity,
    /// The node's TLS material, when it serves TLS.
    pub(crate) tls: Option<Arc<crate::tls::Tls>>,
    pub(crate) raft: Raft,
    pub(crate) state: StateHandle,
    pub(crate) network: Network,
    pub(crate) keeper: Keeper,
    pub(crate) waits: Waits,
    pub(crate) watch: WatchHub,
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) metrics: crate::metrics::NodeMetrics,
    pub(crate) batcher: crate::batcher::Batcher,
    /// Becomes true when the node shuts down: long calls (waits, watches,
    /// keep-alive streams) end instead of holding the server open.
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
    /// Who may call what (the client services ask it before anything).
    pub(crate) auth: crate::auth::Auth,
    /// One `RaiseTokenEpoch` proposal at a time (`ensure_token_floor`).
    pub(crate) epoch_raise: tokio::sync::Mutex<()>,
}

/// An acquire as a client asks for it.
#[derive(Debug, Clone, Default)]
pub struct AcquireArgs {
    /// The lease the holds will belong to.
    pub lease: LeaseId,
    /// The locks to acquire, all or none.
    pub locks: Vec<LockSpec>,
    /// Zero: try once. Otherwise wait up to this long in the queues.
    pub wait: Duration,
    /// Why the locks are taken, for people inspecting them.
    pub reason: String,
    /// Small key/value metadata kept with the holds.
    pub metadata: Metadata,
    /// If the lease expires while holding, keep these locks ungrantable for
    /// this many milliseconds; 0 for none.
    pub lock_delay_ms: u64,
}

/// A granted acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// The fencing token of the holds: the log index of the entry that
    /// granted them.
    pub token: u64,
    /// The holds granted, one per requested lock.
    pub holds: Vec<Granted>,
    /// True when the lease already held all the locks (an idempotent retry).
    pub retry: bool,
    /// The log index at which the grant was applied.
    pub revision: u64,
    /// How long the request waited in the queues (zero if granted at once).
    pub waited: Duration,
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Api {
    // ----- leadership ------------------------------------------------------

    /// The current leader as this node knows it, with its client address
    /// (where clients should go), if the cluster has recorded one.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let id = self.raft.metrics().borrow().current_leader?;
        self.client_addr_of(id).map(|addr| (id, addr))
    }

    /// Where clients reach node `id`: this node's own address for itself;
    /// else what `id` said in its latest `Hello` to or from this node (a
    /// leader introduces itself to each follower before replicating to
    /// it); else the cluster's record (each leader records itself and the
    /// peers it reaches).
    pub(crate) fn client_addr_of(&self, id: NodeId) -> Option<String> {
        if id == self.id {
            return Some(self.client_addr.clone());
        }
        self.network.introduced_client_addr(id).or_else(|| {
            self.state.read(|s| {
                s.cluster()
                    .members
                    .get(&id)
                    .map(|m| m.client_addr.clone())
                    .filter(|a| !a.is_empty())
            })
        })
    }

    /// The current leader with its peer address (what this node dials), as
    /// the membership has it.
    pub(crate) fn leader_peer(&self) -> Option<(NodeId, String)> {
        // Called on every forward: read the metrics in place, no clone.
        let rx = self.raft.metrics();
        let metrics = rx.borrow();
        let id = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Whether this node is the leader, as its Raft metrics say now.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id) && m.state == ServerState::Leader
    }

    pub(crate) fn not_leader(
        &self,
        hint: Option<&ForwardToLeader<NodeId, BasicNode>>,
    ) -> NodeError {
        let leader = hint
            .and_then(|f| f.leader_id)
            .or_else(|| self.raft.metrics().borrow().current_leader);
        match leader {
            Some(leader_id) if leader_id != self.id => match self.client_addr_of(leader_id) {
                Some(leader_addr) => NodeError::NotLeader {
                    leader_id,
                    leader_addr,
                },
                // A leader whose client address is not recorded yet (it
                // was elected a moment ago): no hint is better than a
                // peer address clients cannot use.
                None => NodeError::NoLeader,
            },
            _ => NodeError::NoLeader,
        }
    }

    // ----- writes -------------------------------------------------------------

    /// Apply a command through the leader and return what applying it gave.
    /// Not public: the commands include the leader's own (ExpireLeases,
    /// SetLimits, Tick), which no caller may propose; callers use the typed
    /// operations below, which build only client commands.
    pub(crate) async fn write(&self, command: Command) -> Result<Applied, NodeError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(
            self.config.write_timeout,
            self.write_inner(command),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(NodeError::Timeout {
                timeout_ms: self.config.write_timeout.as_millis() as u64,
            }),
        };
        self.metrics.writes.observe(started.elapsed());
        result
    }

    /// This node's metrics in the Prometheus text format 0.0.4 (what the
    /// metrics endpoint serves a scraper that does not ask for OpenMetrics;
    /// embedders can serve it themselves). Empty if they could not be
    /// encoded (logged; no series of ours should ever be refused).
    pub fn metrics_text(&self) -> String {
        self.metrics_in(crate::MetricsFormat::Prometheus)
    }

    /// This node's metrics in `format`; serve them with
    /// [`MetricsFormat::content_type`](crate::MetricsFormat::content_type).
    /// Empty if they could not be encoded (logged).
    pub fn metrics_in(&self, format: crate::MetricsFormat) -> String {
        crate::metrics::render(self, format).unwrap_or_default()
    }

    async fn write_inner(&self, command: Command) -> Result<Applied, NodeError> {
        if self.is_leader() {
            match self.propose(command.clone()).await {
                Err(NodeError::NotLeader { .. }) | Err(NodeError::NoLeader) => {}
                other => return other,
            }
        }
        self.forward_write(&command).await
    }

    /// Propose on this node, which must be the leader (no forwarding: the
    /// Forward RPC lands here, which keeps forwarding to one hop). Client
    /// commands that may share an entry go through the batcher.
    pub(crate) async fn propose(&self, command: Command) -> Result<Applied, NodeError> {
        if BatchPlan::batchable(&command) {
            self.batcher.propose(command).await
        } else {
            self.propose_one(command).await
        }
    }

    /// A consistent copy of the whole state for a backup: on the leader
    /// only (a follower's state may lag; it answers NOT_LEADER naming the
    /// leader), after a read barrier, so it includes every write
    /// acknowledged before the call.
    pub(crate) async fn save_snapshot(&self) -> Result<raftlock_store::SnapshotCopy, NodeError> {
        if !self.is_leader() {
            return Err(self.not_leader(None));
        }
        self.read_barrier(false).await?;
        let state = self.state.clone();
        // Encoding a large state is blocking work.
        tokio::task::spawn_blocking(move || state.snapshot_copy())
            .await
            .map_err(|e| NodeError::Internal(format!("the snapshot copy failed: {e}")))
    }

    /// With a `token_floor`, makes sure every stamp proposed from here on is
    /// above it: if the applied state's high water is below the floor,
    /// proposes `RaiseTokenEpoch` past it and returns once it is applied
    /// here (`client_write` answers after the leader applied the entry, so
    /// every later proposal of this leader comes after it in the log).
    pub(crate) async fn ensure_token_floor(&self) -> Result<(), NodeError> {
        let floor = self.config.token_floor;
        // Cheap enough per proposal: one read lock (none without a floor).
        let reached = || floor == 0 || self.state.read(|s| s.token_high_water() >= floor);
        if reached() {
            return Ok(());
        }
        let _one = self.epoch_raise.lock().await;
        if reached() {
            return Ok(());
        }
        // `NodeConfig::validate` refused a floor with no epoch above it.
        let at_least = raftlock_core::epoch_above(floor).ok_or_else(|| {
            NodeError::Internal(format!("no token epoch is above the floor {floor}"))
        })?;
        let applied = self
            .propose_entry(Command::RaiseTokenEpoch { at_least })
            .await?;
        applied.result.map_err(NodeError::Lock)?;
        tracing::info!(
            floor,
            epoch = at_least,
            "token epoch raised past the configured floor"
        );
        Ok(())
    }

    /// Propose `command` as one entry of its own.
    pub(crate) async fn propose_one(&self, command: Command) -> Result<Applied, NodeError> {
        // Every entry may hand out a stamp (a grant, or a waiter granted
        // after a release, an expiry or a lock-delay that ended, which any
        // entry can do): none before the floor. Batches come here too.
        self.ensure_token_floor().await?;
        self.propose_entry(command).await
    }

    /// `propose_one` without the floor check (the raise itself).
    async fn propose_entry(&self, command: Command) -> Result<Applied, NodeError> {
        let cluster_ms = self.keeper.stamp(self.state.read(State::cluster_ms));
        let request = Request::new(cluster_ms, wall_ms(), command);
        match self.raft.client_write(request).await {
            Ok(reply) => Ok(reply.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(Some(&f)))
            }
            Err(RaftError::APIError(e)) => Err(NodeError::Internal(e.to_string())),
            Err(RaftError::Fatal(e)) => {
                tracing::error!(error = %e, "raft stopped");
                Err(NodeError::ShuttingDown)
            }
        }
    }

    /// The response and the entry's revision (its stamp: what clients see).
    fn ok(applied: Applied) -> Result<(Response, u64), NodeError> {
        let revision = applied.revision;
        applied
            .result
            .map(|r| (r, revision))
            .map_err(NodeError::Lock)
    }

    // ----- reads ----------------------------------------------------------------

    /// Make the local state at least as new as every write acknowledged
    /// before this call (unless `stale`).
    pub async fn read_barrier(&self, stale: bool) -> Result<(), NodeError> {
        if stale {
            return Ok(());
        }
        let index = if self.is_leader() {
            self.read_index_local().await?
        } else {
            self.forward_read_index().await?
        };
        self.wait_applied(index).await
    }

    pub(crate) async fn read_index_local(&self) -> Result<u64, NodeError> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(self.not_leader(Some(&f)))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(NodeError::NoLeader)
            }
            Err(RaftError::Fatal(_)) => Err(NodeError::ShuttingDown),
        }
    }

    /// Wait until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), NodeError> {
        if self.state.last_applied().is_some_and(|l| l.index >= index) {
            return Ok(());
        }
        self.raft
            .wait(Some(self.config.write_timeout))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => NodeError::Timeout {
                    timeout_ms: self.config.write_timeout.as_millis() as u64,
                },
                openraft::metrics::WaitError::ShuttingDown => NodeError::ShuttingDown,
            })
    }

    /// Read the state after a read barrier; also returns the applied index
    /// the answer reflects.
    pub async fn read<R>(
        &self,
        stale: bool,
        f: impl FnOnce(&State) -> R,
    ) -> Result<(R, u64), NodeError> {
        self.read_barrier(stale).await?;
        Ok(self.state.read(|s| (f(s), s.token_high_water())))
    }

    // ----- leases -----------------------------------------------------------------

    /// Grant a lease of `ttl_ms` to `owner`; returns its id and its ttl.
    pub async fn grant_lease(
        &self,
        ttl_ms: u64,
        owner: String,
    ) -> Result<(LeaseId, u64), NodeError> {
        self.grant_lease_for(ttl_ms, owner, String::new(), IdentityLimits::default())
            .await
    }

    /// Grant a lease that belongs to `identity` (empty: to nobody in
    /// particular, auth off), within `quota`.
    pub(crate) async fn grant_lease_for(
        &self,
        ttl_ms: u64,
        owner: String,
        identity: String,
        quota: IdentityLimits,
    ) -> Result<(LeaseId, u64), NodeError> {
        let command = Command::GrantLease {
            ttl_ms,
            owner,
            identity,
            quota,
        };
        let (r, _) = Self::ok(self.write(command).await?)?;
        match r {
            Response::LeaseGranted { lease, ttl_ms } => Ok((lease, ttl_ms)),
            other => Err(unexpected(&other)),
        }
    }

    /// End `lease` now; returns the holds it released and the revision
    /// (log index) of the revocation.
    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<(Vec<Granted>, u64), NodeError> {
        let (r, index) = Self::ok(self.write(Command::RevokeLease { lease }).await?)?;
        match r {
            Response::LeaseEnded { released, .. } => Ok((released, index)),
            other => Err(unexpected(&other)),
        }
    }

    /// Keep a lease alive; returns its ttl. The lease then lives at least
    /// that long after the leader received the request.
    pub async fn keep_alive(&self, lease: LeaseId) -> Result<u64, NodeError> {
        let received_at = Instant::now();
        if self.is_leader() {
            return self.keep_alive_local(lease, received_at).await;
        }
        self.forward_keep_alive(lease).await
    }

    pub(crate) async fn keep_alive_local(
        &self,
        lease: LeaseId,
        received_at: Instant,
    ) -> Result<u64, NodeError> {
        if self.state.read(|s| s.lease(lease).is_none()) {
            return Err(NodeError::Lock(LockError::LeaseNotFound { lease }));
        }
        let term = self.keeper.leader_term().ok_or(NodeError::NoLeader)?;
        // Confirm leadership with a quorum before promising anything. The
        // read index includes this term's first entry, so every expiry a
        // previous leader managed to log is applied by the time we look at
        // the state below: a lease already ended is never "renewed".
        self.read_index_local().await?;
        self.state.read(|s| {
            let ttl_ms = s.lease(lease).map_or(0, |l| l.ttl_ms);
            self.keeper.renew(
                term,
                lease,
                Duration::from_millis(ttl_ms),
                received_at,
                s.lease(lease).is_some(),
            )?;
            Ok(ttl_ms)
        })
    }

    /// The caller may use `lease`: auth is off, or the lease belongs to
    /// the caller's identity. A lease this node does not know yet is
    /// looked up again after a read barrier, and if it is still unknown
    /// the call is refused (LEASE_NOT_FOUND) rather than proposed: a lease
    /// id is never reused and a lease's identity never changes, so the
    /// check is exact even if the lease is granted concurrently.
    pub(crate) async fn check_lease(
        &self,
        caller: &crate::auth::Caller,
        lease: LeaseId,
    ) -> Result<(), NodeError> {
        if !caller.checks_leases() {
            return Ok(());
        }
        let identity_of = || {
            self.state
                .read(|s| s.lease(lease).map(|l| l.identity.clone()))
        };
        let identity = match identity_of() {
            Some(identity) => identity,
            None => {
                self.read_barrier(false).await?;
                identity_of().ok_or(NodeError::Lock(LockError::LeaseNotFound { lease }))?
            }
        };
        if identity == caller.lease_identity() {
            Ok(())
        } else {
            Err(caller.deny_lease(lease))
        }
    }

    // ----- locks ------------------------------------------------------------------

    /// Acquire, waiting in the queue up to `args.wait`. If the wait times
    /// out, the queued request is withdrawn; if it was granted meanwhile,
    /// that grant is released: the caller is told exactly which happened.
    pub async fn acquire(&self, args: AcquireArgs) -> Result<Acquired, NodeError> {
        self.acquire_within(args, IdentityLimits::default()).await
    }

    /// [`Api::acquire`] within the limits of the identity the lease
    /// belongs to.
    pub(crate) async fn acquire_within(
        &self,
        args: AcquireArgs,
        quota: IdentityLimits,
    ) -> Result<Acquired, NodeError> {
        let started = Instant::now();
        if args.wait > self.config.max_wait {
            return Err(NodeError::invalid(
                "wait_timeout_ms",
                format!("at most {} ms", self.config.max_wait.as_millis()),
            ));
        }
        let lease = args.lease;
        // For the per-group wait timeouts, should this wait time out.
        let names: Vec<String> = if args.wait.is_zero() {
            Vec::new()
        } else {
            args.locks.iter().map(|l| l.name.clone()).collect()
        };
        let command = Command::Acquire {
            lease,
            locks: args.locks,
            wait: !args.wait.is_zero(),
            reason: args.reason,
            metadata: args.metadata,
            lock_delay_ms: args.lock_delay_ms,
            quota,
        };
        let applied = self.write(command).await?;
        // The raw index: what `as_of` and `wait_applied` compare with.
        let index = applied.index;
        let (response, revision) = Self::ok(applied)?;
        let waiter = match response {
            Response::Acquired {
                token,
                holds,
                retry,
            } => {
                return Ok(Acquired {
                    token,
                    holds,
                    retry,
                    revision,
                    waited: Duration::ZERO,
                });
            }
            Response::Queued { waiter, .. } => waiter,
            other => return Err(unexpected(&other)),
        };
        // Armed before waiting for this node to apply the entry: if it
        // cannot within the write timeout (it lags, or gets no replication)
        // or the caller goes away meanwhile, the request is already queued
        // on the leader and must be withdrawn, or it would be granted later
        // to a caller that was told TIMEOUT or is gone.
        let mut guard = CancelOnDrop {
            api: self,
            lease,
            waiter,
            as_of: index,
            armed: true,
        };
        // Whatever happens to the request is seen in this node's applies.
        if let Err(e) = self.wait_applied(index).await {
            // As below: while stopping, the request stays for a retry elsewhere.
            guard.armed = !matches!(e, NodeError::ShuttingDown);
            return Err(e);
        }
        let rx = self.state.read(|s| self.waits.register(waiter, lease, s));
        let remaining = args.wait.saturating_sub(started.elapsed());
        let mut stopping = self.stopping.clone();
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(remaining, rx) => outcome,
            _ = stopping.wait_for(|s| *s) => {
                // The queued request stays; a retry elsewhere keeps its place.
                guard.armed = false;
                return Err(NodeError::ShuttingDown);
            }
        };
        guard.armed = false;
        match outcome {
            Ok(Ok(WaitOutcome::Granted {
                token,
                holds,
                revision,
            })) => Ok(Acquired {
                token,
                holds,
                retry: false,
                revision,
                waited: started.elapsed(),
            }),
            Ok(Ok(WaitOutcome::Dropped)) => Err(self.why_dropped(lease, waiter)),
            Ok(Err(_)) => Err(NodeError::ShuttingDown),
            Err(_elapsed) => {
                let answer = self.withdraw(lease, waiter, index, started).await;
                if let Err(NodeError::WaitTimeout { .. }) = &answer {
                    self.metrics
                        .lock_groups
                        .wait_timed_out(names.iter().map(String::as_str));
                }
                answer
            }
        }
    }

    fn why_dropped(&self, lease: LeaseId, waiter: WaiterId) -> NodeError {
        if self.state.read(|s| s.lease(lease).is_none()) {
            NodeError::Lock(LockError::LeaseNotFound { lease })
        } else {
            NodeError::WaitDropped { waiter }
        }
    }

    /// Propose a CancelWait for a queued request, riding out an election.
    ///
    /// The request is in the log: it must be withdrawn, or the caller told
    /// that the outcome is unknown. NOT_LEADER and NO_LEADER are promised to
    /// mean "not applied, retry": passing them on would tell a client its
    /// acquire did nothing while the queued request could still be granted
    /// later (found by cluster-tests: seed 2612, a wait timing out during an
    /// election). So the cancel is retried through the election, and if no
    /// leader takes it within the write timeout the answer is TIMEOUT (may
    /// have been applied). TIMEOUT, OUTCOME_UNKNOWN and SHUTTING_DOWN are
    /// indeterminate already and returned as they are.
    ///
    /// `as_of` is the index of the Acquire entry whose caller gave up: a
    /// retry by the same lease applied after it owns the request, and the
    /// cancel then changes nothing (CancelSuperseded).
    async fn cancel_wait(
        &self,
        lease: LeaseId,
        waiter: WaiterId,
        as_of: u64,
    ) -> Result<Applied, NodeError> {
        let deadline = Instant::now() + self.config.write_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let command = Command::CancelWait {
                lease,
                waiter,
                as_of,
            };
            match self.write(command).await {
                Err(NodeError::NotLeader { .. } | NodeError::NoLeader) => {
                    if Instant::now() + pause >= deadline {
                        return Err(NodeError::Timeout {
                            timeout_ms: self.config.write_timeout.as_millis() as u64,
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                other => return other,
            }
        }
    }

    async fn withdraw(
        &self,
        lease: LeaseId,
        waiter: WaiterId,
        as_of: u64,
        started: Instant,
    ) -> Result<Acquired, NodeError> {
        let applied = self.cancel_wait(lease, waiter, as_of).await?;
        let waited_ms = started.elapsed().as_millis() as u64;
        match applied.result {
            // Superseded: a retry by the same lease owns the request now;
            // this call got nothing.
            Ok(Response::WaitCancelled { .. } | Response::CancelSuperseded { .. }) => {
                Err(NodeError::WaitTimeout {
                    waited_ms,
                    released_after_grant: false,
                })
            }
            Ok(Response::ReleasedAfterGrant { .. }) => Err(NodeError::WaitTimeout {
                waited_ms,
                released_after_grant: true,
            }),
            Err(LockError::WaiterNotFound { .. }) => Err(self.why_dropped(lease, waiter)),
            Err(e) => Err(NodeError::Lock(e)),
            Ok(other) => Err(unexpected(&other)),
        }
    }

    /// Release the holds of `lease` on `names`, all granted with `token`;
    /// returns the names released and the revision of the release.
    pub async fn release(
        &self,
        lease: LeaseId,
        token: u64,
        names: Vec<String>,
    ) -> Result<(Vec<String>, u64), NodeError> {
        let (r, index) = Self::ok(
            self.write(Command::Release {
                lease,
                token,
                names,
            })
            .await?,
        )?;
        match r {
            Response::Released { names } => Ok((names, index)),
            other => Err(unexpected(&other)),
        }
    }

    /// Extend a hold: recorded in the log, and the lease's deadline restarts
    /// from when this node received the request.
    pub async fn extend(
        &self,
        lease: LeaseId,
        name: String,
        token: u64,
        ttl_ms: Option<u64>,
    ) -> Result<(u64, u64, u64), NodeError> {
        let (r, index) = Self::ok(
            self.write(Command::Extend {
                lease,
                name,
                token,
                ttl_ms,
            })
            .await?,
        )?;
        let Response::Extended {
            ttl_ms, extensions, ..
        } = r
        else {
            return Err(unexpected(&r));
        };
        // The entry does not restart the deadline by itself: a keep-alive
        // does, answered only if the lease is not already being expired.
        self.keep_alive(lease).await?;
        Ok((ttl_ms, extensions, index))
    }

    /// Administrative: remove the holds on `name` regardless of token (all
    /// of them, or only `lease`'s); returns them and the revision.
    pub async fn force_release(
        &self,
        name: String,
        lease: Option<LeaseId>,
    ) -> Result<(Vec<raftlock_core::Hold>, u64), NodeError> {
        self.force_release_by(name, lease, String::new()).await
    }

    /// [`Api::force_release`] by the identity `by` (recorded in the event).
    pub(crate) async fn force_release_by(
        &self,
        name: String,
        lease: Option<LeaseId>,
        by: String,
    ) -> Result<(Vec<raftlock_core::Hold>, u64), NodeError> {
        let command = Command::ForceRelease { name, lease, by };
        let (r, index) = Self::ok(self.write(command).await?)?;
        match r {
            Response::ForceReleased { released } => Ok((released, index)),
            other => Err(unexpected(&other)),
        }
    }

    // ----- administration -------------------------------------------------------------

    /// Add node `id` at `addr` as a learner (on the leader); with
    /// `blocking`, return once it has caught up. Returns the membership
    /// entry's index.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: String,
        blocking: bool,
    ) -> Result<u64, NodeError> {
        self.require_leader()?;
        let reply = self
            .raft
            .add_learner(id, BasicNode { addr }, blocking)
            .await
            .map_err(|e| self.membership_error(e))?;
        // Revisions are stamps, as every other answer's.
        Ok(self.state.read(|s| s.stamp(reply.log_id.index)))
    }

    /// Change the voters or nodes; returns the entry's revision (stamp) and the voters
    /// and learners after the change.
    pub async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
    ) -> Result<(u64, Vec<NodeId>, Vec<NodeId>), NodeError> {
        self.require_leader()?;
        let reply = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        let (voters, learners) = match &reply.membership {
            Some(m) => (m.voter_ids().collect(), m.learner_ids().collect()),
            None => {
                let (v, l) = self.members();
                (v.into_keys().collect(), l.into_keys().collect())
            }
        };
        let revision = self.state.read(|s| s.stamp(reply.log_id.index));
        Ok((revision, voters, learners))
    }

    /// Forget the cluster's record of node `id` (on the leader), so its id
    /// may come back with a new store; refused while it is a voter or
    /// learner. Returns whether there was a record, and the entry's revision.
    pub async fn forget_member(&self, id: NodeId) -> Result<(bool, u64), NodeError> {
        self.require_leader()?;
        let (voters, learners) = self.members();
        // The store checks again at apply (the membership may change
        // meanwhile); this answers the common mistake at once.
        for (role, members) in [("voter", &voters), ("learner", &learners)] {
            if members.contains_key(&id) {
                return Err(NodeError::invalid(
                    "id",
                    format!(
                        "node {id} is still a {role}: remove it first (raftlock cluster remove {id})"
                    ),
                ));
            }
        }
        let (r, index) = Self::ok(self.write(Command::ForgetMember { node: id }).await?)?;
        match r {
            Response::MemberForgotten { existed } => {
                tracing::info!(node = id, existed, "member record forgotten");
                Ok((existed, index))
            }
            other => Err(unexpected(&other)),
        }
    }

    fn require_leader(&self) -> Result<(), NodeError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(self.not_leader(None))
        }
    }

    fn membership_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> NodeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => self.not_leader(Some(&f)),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                NodeError::invalid("membership", e.to_string())
            }
            RaftError::Fatal(_) => NodeError::ShuttingDown,
        }
    }

    /// The cluster's record of its nodes (see `raftlock_core::MemberRecord`):
    /// id → client address, for every node the leaders have recorded.
    pub fn recorded_members(&self) -> BTreeMap<NodeId, String> {
        self.state.read(|s| {
            s.cluster()
                .members
                .iter()
                .map(|(id, m)| (*id, m.client_addr.clone()))
                .collect()
        })
    }

    /// Voters and learners by id (with their peer addresses), from the
    /// latest membership.
    pub fn members(&self) -> (BTreeMap<NodeId, String>, BTreeMap<NodeId, String>) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut v = BTreeMap::new();
        let mut l = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if voters.contains(id) {
                v.insert(*id, node.addr.clone());
            } else {
                l.insert(*id, node.addr.clone());
            }
        }
        (v, l)
    }

    /// Build a snapshot that covers everything applied so far; returns the
    /// snapshot's last index.
    pub async fn snapshot(&self) -> Result<u64, NodeError> {
        let target = self.state.last_applied().map_or(0, |l| l.index);
        let timeout = NodeError::Timeout {
            timeout_ms: self.config.write_timeout.as_millis() as u64,
        };
        let deadline = tokio::time::Instant::now() + self.config.write_timeout;
        // openraft ignores a trigger while it is building a snapshot (one
        // its snapshot policy started, say), and that one may end below
        // `target`: so trigger again until a snapshot covers `target`.
        loop {
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|_| NodeError::ShuttingDown)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(timeout);
            }
            let wait = self
                .raft
                .wait(Some(left.min(SNAPSHOT_RETRIGGER)))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= target),
                    "snapshot built",
                )
                .await;
            match wait {
                Ok(metrics) => return Ok(metrics.snapshot.map_or(0, |s| s.index)),
                Err(openraft::metrics::WaitError::ShuttingDown) => {
                    return Err(NodeError::ShuttingDown);
                }
                Err(openraft::metrics::WaitError::Timeout(..)) => {}
            }
        }
    }
}

fn unexpected(r: &Response) -> NodeError {
    NodeError::Internal(format!("unexpected reply from the state machine: {r:?}"))
}

/// A waiting acquire whose caller went away withdraws its queued request, so
/// it is never granted to nobody. A retry with the same lease applied before
/// the cancel owns the request (its place, or the hold it was granted and
/// handed to the retry): the cancel, issued `as_of` this attempt's Acquire,
/// is then stale and changes nothing. A retry applied after the cancel
/// queues again.
struct CancelOnDrop<'a> {
    api: &'a Api,
    lease: LeaseId,
    waiter: WaiterId,
    as_of: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(api) = self.api.me.upgrade() else {
            return;
        };
        let (lease, waiter, as_of) = (self.lease, self.waiter, self.as_of);
        // Drop must not block (the cancel is proposed in the background) and
        // must not panic outside a runtime (then the lease's end cleans up).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = api.cancel_wait(lease, waiter, as_of).await {
                tracing::debug!(lease, waiter, error = %e, "cancel of an abandoned wait failed");
            }
        });
    }
}
