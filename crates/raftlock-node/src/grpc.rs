//! The tonic services clients call (Locks, Leases, Admin): conversions
//! between the proto contract and [`Api`]. The internal node-to-node service
//! is `peer::server`.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::{ChangeMembers, ServerState};
use raftlock_core as core;
use raftlock_proto::errors;
use raftlock_proto::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use crate::api::{AcquireArgs, Api};
use crate::auth::Perm;
use crate::error::NodeError;

type Reply<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

// ----- conversions ---------------------------------------------------------

fn mode_in(mode: i32, permits: u32, field: &str) -> Result<core::Mode, NodeError> {
    let mode = pb::Mode::try_from(mode).unwrap_or(pb::Mode::Unspecified);
    let m = match mode {
        pb::Mode::Exclusive => core::Mode::Exclusive,
        pb::Mode::Shared => core::Mode::Shared,
        pb::Mode::Semaphore => return Ok(core::Mode::Semaphore { permits }),
        pb::Mode::Unspecified => {
            return Err(NodeError::invalid(
                field,
                "mode must be MODE_EXCLUSIVE, MODE_SHARED or MODE_SEMAPHORE",
            ));
        }
    };
    if permits != 0 {
        return Err(NodeError::invalid(
            field,
            "permits may only be set with MODE_SEMAPHORE",
        ));
    }
    Ok(m)
}

fn mode_out(mode: core::Mode) -> (i32, u32) {
    match mode {
        core::Mode::Exclusive => (pb::Mode::Exclusive as i32, 0),
        core::Mode::Shared => (pb::Mode::Shared as i32, 0),
        core::Mode::Semaphore { permits } => (pb::Mode::Semaphore as i32, permits),
    }
}

fn grant_out(g: &core::Granted) -> pb::Grant {
    let (mode, permits) = mode_out(g.mode);
    pb::Grant {
        name: g.name.clone(),
        mode,
        permits,
        token: g.token,
    }
}

fn holder_out(h: &core::Hold) -> pb::Holder {
    pb::Holder {
        lease_id: h.lease,
        owner: h.owner.to_string(),
        mode: mode_out(h.mode).0,
        token: h.token,
        acquired_at_unix_ms: h.acquired_at_wall_ms,
        reason: h.reason.to_string(),
        metadata: h.metadata.clone().into_iter().collect(),
        acquisitions: h.acquisitions.into(),
        extensions: h.extensions.into(),
        lock_delay_ms: h.lock_delay_ms,
    }
}

fn lock_out(state: &core::State, lock: &core::Lock) -> pb::LockInfo {
    let (kind, permits) = match lock.kind {
        core::LockKind::ReadWrite => (pb::LockKind::ReadWrite as i32, 0),
        core::LockKind::Semaphore { permits } => (pb::LockKind::Semaphore as i32, permits),
    };
    let queue = lock
        .queue
        .iter()
        .filter_map(|id| state.waiter(*id))
        .map(|w| pb::QueuedRequest {
            waiter_id: w.id,
            lease_id: w.lease,
            owner: w.owner.clone(),
            mode: w.mode_on(&lock.name).map_or(0, |m| mode_out(m).0),
            names: w.locks.iter().map(|(n, _)| n.clone()).collect(),
            queued_at_unix_ms: w.queued_at_wall_ms,
            reason: w.reason.clone(),
        })
        .collect();
    pb::LockInfo {
        name: lock.name.to_string(),
        kind,
        permits,
        holders: lock.holds.values().map(holder_out).collect(),
        queue,
        delayed_until_cluster_ms: lock.delayed_until_ms,
        grants: lock.grants,
        max_token: lock.max_token,
    }
}

fn lease_end_out(how: core::LeaseEnd) -> i32 {
    match how {
        core::LeaseEnd::Revoked => pb::LeaseEnd::Revoked as i32,
        core::LeaseEnd::Expired => pb::LeaseEnd::Expired as i32,
    }
}

pub(crate) fn event_out(e: &core::Event) -> pb::Event {
    use core::EventKind as K;
    let mut out = pb::Event {
        revision: e.revision,
        ..Default::default()
    };
    if let Some(name) = e.kind.lock_name() {
        out.name = name.to_string();
    }
    match &e.kind {
        K::LeaseGranted {
            lease,
            owner,
            ttl_ms,
        } => {
            out.r#type = pb::EventType::LeaseGranted as i32;
            out.lease_id = *lease;
            out.owner = owner.clone();
            out.ttl_ms = *ttl_ms;
        }
        K::LeaseEnded { lease, how } => {
            out.r#type = pb::EventType::LeaseEnded as i32;
            out.lease_id = *lease;
            out.lease_end = lease_end_out(*how);
        }
        K::Acquired {
            lease,
            owner,
            mode,
            token,
            waiter,
            ..
        } => {
            out.r#type = pb::EventType::Acquired as i32;
            out.lease_id = *lease;
            out.owner = owner.clone();
            out.mode = mode_out(*mode).0;
            out.token = *token;
            out.waiter_id = waiter.unwrap_or(0);
        }
        K::Queued {
            lease,
            waiter,
            position,
            ..
        } => {
            out.r#type = pb::EventType::Queued as i32;
            out.lease_id = *lease;
            out.waiter_id = *waiter;
            out.position = *position;
        }
        K::WaitDropped { lease, waiter, .. } => {
            out.r#type = pb::EventType::WaitDropped as i32;
            out.lease_id = *lease;
            out.waiter_id = *waiter;
        }
        K::Released { lease, token, .. } => {
            out.r#type = pb::EventType::Released as i32;
            out.lease_id = *lease;
            out.token = *token;
        }
        K::Expired {
            lease, token, how, ..
        } => {
            out.r#type = pb::EventType::Expired as i32;
            out.lease_id = *lease;
            out.token = *token;
            out.lease_end = lease_end_out(*how);
        }
        K::ForceReleased {
            lease, token, by, ..
        } => {
            out.r#type = pb::EventType::ForceReleased as i32;
            out.lease_id = *lease;
            out.token = *token;
            out.forced_by = by.clone();
        }
        K::Delayed { until_ms, .. } => {
            out.r#type = pb::EventType::Delayed as i32;
            out.delayed_until_cluster_ms = *until_ms;
        }
    }
    out
}

impl Api {
    /// A reply that also names the current leader (when known).
    fn reply<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if let Some((id, addr)) = self.leader() {
            let md = response.metadata_mut();
            if let Ok(v) = id.to_string().parse() {
                md.insert(errors::LEADER_ID_KEY, v);
            }
            if let Ok(v) = addr.parse() {
                md.insert(errors::LEADER_ADDR_KEY, v);
            }
        }
        response
    }
}

// ----- Locks ---------------------------------------------------------------

pub(crate) struct LocksService(pub(crate) Arc<Api>);

#[tonic::async_trait]
impl pb::locks_server::Locks for LocksService {
    async fn acquire(&self, request: Request<pb::AcquireRequest>) -> Reply<pb::AcquireResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Locks/Acquire")?;
        let r = request.into_inner();
        caller.require_all(Perm::Lock, r.locks.iter().map(|l| l.name.as_str()))?;
        self.0.check_lease(&caller, r.lease_id).await?;
        let mut locks = Vec::with_capacity(r.locks.len());
        for (i, spec) in r.locks.into_iter().enumerate() {
            let mode = mode_in(spec.mode, spec.permits, &format!("locks[{i}].mode"))?;
            locks.push(core::LockSpec {
                name: spec.name,
                mode,
            });
        }
        let args = AcquireArgs {
            lease: r.lease_id,
            locks,
            wait: Duration::from_millis(r.wait_timeout_ms),
            reason: r.reason,
            metadata: r.metadata.into_iter().collect(),
            lock_delay_ms: r.lock_delay_ms,
        };
        let acquired = self.0.acquire_within(args, caller.quota()).await?;
        Ok(self.0.reply(pb::AcquireResponse {
            token: acquired.token,
            holds: acquired.holds.iter().map(grant_out).collect(),
            retry: acquired.retry,
            revision: acquired.revision,
            waited_ms: acquired.waited.as_millis() as u64,
        }))
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Reply<pb::ReleaseResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Locks/Release")?;
        let r = request.into_inner();
        caller.require_all(Perm::Lock, r.names.iter().map(String::as_str))?;
        self.0.check_lease(&caller, r.lease_id).await?;
        let (names, revision) = self.0.release(r.lease_id, r.token, r.names).await?;
        Ok(self.0.reply(pb::ReleaseResponse { names, revision }))
    }

    async fn extend(&self, request: Request<pb::ExtendRequest>) -> Reply<pb::ExtendResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Locks/Extend")?;
        let r = request.into_inner();
        caller.require(Perm::Lock, &r.name)?;
        self.0.check_lease(&caller, r.lease_id).await?;
        let (ttl_ms, extensions, revision) =
            self.0.extend(r.lease_id, r.name, r.token, r.ttl_ms).await?;
        Ok(self.0.reply(pb::ExtendResponse {
            ttl_ms,
            extensions,
            revision,
        }))
    }

    async fn inspect(&self, request: Request<pb::InspectRequest>) -> Reply<pb::InspectResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Locks/Inspect")?;
        let r = request.into_inner();
        caller.require(Perm::Inspect, &r.name)?;
        let name = r.name;
        let (lock, revision) = self
            .0
            .read(r.stale, |s| {
                s.limits().check_name(&name)?;
                Ok::<_, core::LockError>(s.lock(&name).map(|l| lock_out(s, l)))
            })
            .await?;
        Ok(self.0.reply(pb::InspectResponse {
            lock: lock.map_err(NodeError::Lock)?,
            revision,
        }))
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Reply<pb::ListResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Locks/List")?;
        let r = request.into_inner();
        // Like etcd's range permissions: the whole requested prefix must
        // be covered, so a listing never depends on what it would hide.
        caller.require_prefix(Perm::Inspect, &r.prefix)?;
        let limit = match r.limit {
            0 => 100,
            n if n > 1_000 => return Err(NodeError::invalid("limit", "at most 1000").into()),
            n => n as usize,
        };
        let ((locks, more), revision) = self
            .0
            .read(r.stale, |s| {
                let mut page: Vec<pb::LockInfo> = Vec::new();
                let mut more = false;
                for lock in s
                    .locks_with_prefix(&r.prefix)
                    .filter(|l| r.start_after.is_empty() || *l.name > *r.start_after)
                {
                    if page.len() == limit {
                        more = true;
                        break;
                    }
                    page.push(lock_out(s, lock));
                }
                (page, more)
            })
            .await?;
        Ok(self.0.reply(pb::ListResponse {
            locks,
            revision,
            more,
        }))
    }

    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Reply<Self::WatchStream> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Locks/Watch")?;
        let r = request.into_inner();
        caller.require_prefix(Perm::Watch, &r.prefix)?;
        // Counted for the identity as long as the stream lives.
        let counted = self.0.auth.watcher(&caller)?;
        let subscription = self.0.watch.subscribe(r.prefix, r.from_revision)?;
        let stopping = self.0.stopping.clone();
        let start = Some((subscription, stopping, counted));
        let stream = futures::stream::unfold(start, |st| async move {
            let (mut sub, mut stopping, counted) = st?;
            let next = tokio::select! {
                next = sub.next() => next,
                _ = stopping.wait_for(|s| *s) => Some(Err(NodeError::ShuttingDown)),
            };
            match next {
                Some(Ok(events)) => Some((
                    Ok(pb::WatchResponse {
                        events: events.iter().map(event_out).collect(),
                    }),
                    Some((sub, stopping, counted)),
                )),
                Some(Err(e)) => Some((Err(e.to_status()), None)),
                None => None,
            }
        });
        Ok(self.0.reply(Box::pin(stream)))
    }
}

// ----- Leases --------------------------------------------------------------

pub(crate) struct LeasesService(pub(crate) Arc<Api>);

#[tonic::async_trait]
impl pb::leases_server::Leases for LeasesService {
    async fn grant(
        &self,
        request: Request<pb::GrantLeaseRequest>,
    ) -> Reply<pb::GrantLeaseResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Leases/Grant")?;
        caller.require_any(Perm::Lock)?;
        let r = request.into_inner();
        let (lease_id, ttl_ms) = self
            .0
            .grant_lease_for(
                r.ttl_ms,
                r.owner,
                caller.lease_identity().to_string(),
                caller.quota(),
            )
            .await?;
        Ok(self.0.reply(pb::GrantLeaseResponse { lease_id, ttl_ms }))
    }

    type KeepAliveStream = BoxStream<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Reply<Self::KeepAliveStream> {
        // Authenticated (and rate-counted) once, when the stream opens;
        // every lease it names must be the caller's.
        let caller = self
            .0
            .auth
            .caller(&request, "/raftlock.v1.Leases/KeepAlive")?;
        let inbound = request.into_inner();
        let api = Arc::clone(&self.0);
        let stream = futures::stream::unfold(Some((api, inbound, caller)), |st| async move {
            let (api, mut inbound, caller) = st?;
            let mut stopping = api.stopping.clone();
            let next = tokio::select! {
                next = inbound.next() => next,
                _ = stopping.wait_for(|s| *s) => {
                    return Some((Err(NodeError::ShuttingDown.to_status()), None));
                }
            };
            match next {
                Some(Ok(req)) => match async {
                    api.check_lease(&caller, req.lease_id).await?;
                    api.keep_alive(req.lease_id).await
                }
                .await
                {
                    Ok(ttl_ms) => Some((
                        Ok(pb::KeepAliveResponse {
                            lease_id: req.lease_id,
                            ttl_ms,
                        }),
                        Some((api, inbound, caller)),
                    )),
                    Err(e) => Some((Err(e.to_status()), None)),
                },
                Some(Err(status)) => Some((Err(status), None)),
                None => None,
            }
        });
        Ok(self.0.reply(Box::pin(stream)))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeLeaseRequest>,
    ) -> Reply<pb::RevokeLeaseResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Leases/Revoke")?;
        let r = request.into_inner();
        self.0.check_lease(&caller, r.lease_id).await?;
        let (released, revision) = self.0.revoke_lease(r.lease_id).await?;
        Ok(self.0.reply(pb::RevokeLeaseResponse {
            released: released.iter().map(grant_out).collect(),
            revision,
        }))
    }

    async fn list(&self, request: Request<pb::ListLeasesRequest>) -> Reply<pb::ListLeasesResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Leases/List")?;
        let r = request.into_inner();
        let api = &self.0;
        // A caller sees its own leases whole; another identity's only for
        // the names it may inspect (all of them with inspect on ""), and
        // not at all if that leaves nothing.
        let sees_all = !caller.checks_leases() || caller.may(Perm::Inspect, "");
        let (leases, revision) = api
            .read(r.stale, |s| {
                s.leases()
                    .filter_map(|l| {
                        let whole = sees_all || l.identity == caller.lease_identity();
                        let holds: Vec<String> = l
                            .holds
                            .iter()
                            .filter(|n| whole || caller.may(Perm::Inspect, n))
                            .map(|n| n.to_string())
                            .collect();
                        let waits: Vec<u64> = l
                            .waits
                            .iter()
                            .copied()
                            .filter(|w| {
                                whole
                                    || s.waiter(*w).is_some_and(|w| {
                                        w.locks.iter().any(|(n, _)| caller.may(Perm::Inspect, n))
                                    })
                            })
                            .collect();
                        if !whole && holds.is_empty() && waits.is_empty() {
                            return None;
                        }
                        Some(pb::LeaseInfo {
                            lease_id: l.id,
                            owner: l.owner.to_string(),
                            ttl_ms: l.ttl_ms,
                            granted_at_unix_ms: l.granted_at_wall_ms,
                            holds,
                            waits,
                            remaining_ms: api.keeper.remaining(l.id).map(|d| d.as_millis() as u64),
                            identity: l.identity.clone(),
                        })
                    })
                    .collect()
            })
            .await?;
        Ok(self.0.reply(pb::ListLeasesResponse { leases, revision }))
    }
}

// ----- Admin ---------------------------------------------------------------

pub(crate) struct AdminService(pub(crate) Arc<Api>);

fn role_out(state: ServerState) -> i32 {
    match state {
        ServerState::Leader => pb::Role::Leader as i32,
        ServerState::Follower => pb::Role::Follower as i32,
        ServerState::Candidate => pb::Role::Candidate as i32,
        ServerState::Learner => pb::Role::Learner as i32,
        ServerState::Shutdown => pb::Role::Unknown as i32,
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn status(&self, request: Request<pb::StatusRequest>) -> Reply<pb::StatusResponse> {
        // Any authenticated identity: health checks and dashboards.
        self.0.auth.caller(&request, "/raftlock.v1.Admin/Status")?;
        let api = &self.0;
        let m = api.raft.metrics().borrow().clone();
        let (voters, learners) = api.members();
        let leader_addr = api.leader().map(|(_, a)| a).unwrap_or_default();
        let last_log = m.last_log_index.unwrap_or(0);
        let mut nodes = Vec::new();
        for (id, addr, voter) in voters
            .iter()
            .map(|(i, a)| (*i, a, true))
            .chain(learners.iter().map(|(i, a)| (*i, a, false)))
        {
            let role = if id == api.id {
                role_out(m.state)
            } else if Some(id) == m.current_leader {
                pb::Role::Leader as i32
            } else if !voter {
                pb::Role::Learner as i32
            } else if m.current_leader.is_some() {
                pb::Role::Follower as i32
            } else {
                pb::Role::Unknown as i32
            };
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id))
                .map(|l| l.map_or(0, |l| l.index));
            let matched = if id == api.id && m.state == ServerState::Leader {
                Some(last_log)
            } else {
                matched
            };
            let (build_version, protocol) = if id == api.id {
                (
                    env!("CARGO_PKG_VERSION").to_string(),
                    Some(api.peer_identity.protocol),
                )
            } else {
                match api.network.introduction(id) {
                    // A build before versioning says nothing of either.
                    Some(i) if !i.build_version.is_empty() => (i.build_version, Some(i.protocol)),
                    _ => (String::new(), None),
                }
            };
            nodes.push(pb::NodeStatus {
                id,
                address: api.client_addr_of(id).unwrap_or_default(),
                peer_address: addr.clone(),
                role,
                voter,
                matched_index: matched,
                lag: matched.map(|x| last_log.saturating_sub(x)),
                build_version,
                protocol_min: protocol.map_or(0, |p| p.min),
                protocol_max: protocol.map_or(0, |p| p.max),
            });
        }
        let (leases, locks, token_epoch, token_high_water) = api.state.read(|s| {
            (
                s.lease_count() as u64,
                s.lock_count() as u64,
                u32::from(s.token_epoch()),
                s.token_high_water(),
            )
        });
        Ok(self.0.reply(pb::StatusResponse {
            node_id: api.id,
            role: role_out(m.state),
            term: m.current_term,
            leader_id: m.current_leader,
            leader_addr,
            last_log_index: last_log,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            cluster_id: api.state.read(|s| s.cluster().id.clone()),
            nodes,
            leases,
            locks,
            token_epoch,
            token_high_water,
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Reply<pb::MembershipResponse> {
        let caller = self
            .0
            .auth
            .caller(&request, "/raftlock.v1.Admin/AddLearner")?;
        caller.require_cluster_admin()?;
        let r = request.into_inner();
        let target = format!("node {} at {}", r.id, r.address);
        let result = self.add_learner_inner(r).await;
        caller.audit_admin(&[&target], &result);
        result
    }

    async fn promote(&self, request: Request<pb::PromoteRequest>) -> Reply<pb::MembershipResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Admin/Promote")?;
        caller.require_cluster_admin()?;
        let id = request.into_inner().id;
        let result = self.promote_inner(id).await;
        caller.audit_admin(&[&format!("node {id}")], &result);
        result
    }

    async fn remove(&self, request: Request<pb::RemoveRequest>) -> Reply<pb::MembershipResponse> {
        let caller = self.0.auth.caller(&request, "/raftlock.v1.Admin/Remove")?;
        caller.require_cluster_admin()?;
        let id = request.into_inner().id;
        let result = self.remove_inner(id).await;
        caller.audit_admin(&[&format!("node {id}")], &result);
        result
    }

    async fn force_release(
        &self,
        request: Request<pb::ForceReleaseRequest>,
    ) -> Reply<pb::ForceReleaseResponse> {
        let caller = self
            .0
            .auth
            .caller(&request, "/raftlock.v1.Admin/ForceRelease")?;
        let r = request.into_inner();
        caller.require(Perm::Admin, &r.name)?;
        let name = r.name.clone();
        let result = self
            .0
            .force_release_by(r.name, r.lease_id, caller.lease_identity().to_string())
            .await;
        caller.audit_admin(&[&name], &result);
        let (released, revision) = result?;
        Ok(self.0.reply(pb::ForceReleaseResponse {
            released: released.iter().map(holder_out).collect(),
            revision,
        }))
    }

    async fn forget_member(
        &self,
        request: Request<pb::ForgetMemberRequest>,
    ) -> Reply<pb::ForgetMemberResponse> {
        let caller = self
            .0
            .auth
            .caller(&request, "/raftlock.v1.Admin/ForgetMember")?;
        caller.require_cluster_admin()?;
        let id = request.into_inner().id;
        let result = self.forget_member_inner(id).await;
        caller.audit_admin(&[&format!("node {id}")], &result);
        result
    }

    async fn snapshot(&self, request: Request<pb::SnapshotRequest>) -> Reply<pb::SnapshotResponse> {
        let caller = self
            .0
            .auth
            .caller(&request, "/raftlock.v1.Admin/Snapshot")?;
        caller.require_cluster_admin()?;
        let result = self.0.snapshot().await;
        caller.audit_admin(&[], &result);
        Ok(self.0.reply(pb::SnapshotResponse { index: result? }))
    }

    type SaveSnapshotStream = BoxStream<pb::SnapshotChunk>;

    async fn save_snapshot(
        &self,
        request: Request<pb::SaveSnapshotRequest>,
    ) -> Reply<Self::SaveSnapshotStream> {
        let caller = self
            .0
            .auth
            .caller(&request, "/raftlock.v1.Admin/SaveSnapshot")?;
        caller.require_cluster_admin()?;
        let result = self.0.save_snapshot().await;
        caller.audit_admin(&[], &result);
        let copy = result?;
        let data_sha256 = {
            use sha2::Digest;
            sha2::Sha256::digest(&copy.data).to_vec()
        };
        let header = pb::BackupHeader {
            cluster_id: copy.cluster_id,
            index: copy.last_applied.map_or(0, |l| l.index),
            term: copy.last_applied.map_or(0, |l| l.leader_id.term),
            voters: copy.voters,
            token_epoch: u32::from(copy.token_epoch),
            token_high_water: copy.token_high_water,
            snapshot_format: raftlock_store::SNAPSHOT_FORMAT_VERSION,
            build_version: env!("CARGO_PKG_VERSION").to_string(),
            data_bytes: copy.data.len() as u64,
            leases: copy.leases,
            locks: copy.locks,
        };
        // Chunks of at most 1 MiB: far below the message limit either side.
        const CHUNK_BYTES: usize = 1024 * 1024;
        let mut parts = vec![pb::snapshot_chunk::Part::Header(header)];
        parts.extend(
            copy.data
                .chunks(CHUNK_BYTES)
                .map(|c| pb::snapshot_chunk::Part::Data(c.to_vec())),
        );
        parts.push(pb::snapshot_chunk::Part::Trailer(pb::BackupTrailer {
            data_sha256,
        }));
        let stream = futures::stream::iter(
            parts
                .into_iter()
                .map(|part| Ok(pb::SnapshotChunk { part: Some(part) })),
        );
        Ok(self.0.reply(Box::pin(stream) as Self::SaveSnapshotStream))
    }
}

impl AdminService {
    async fn forget_member_inner(&self, id: u64) -> Reply<pb::ForgetMemberResponse> {
        if id == 0 {
            return Err(NodeError::invalid("id", "node ids start at 1").into());
        }
        let (existed, revision) = self.0.forget_member(id).await?;
        Ok(self.0.reply(pb::ForgetMemberResponse { existed, revision }))
    }

    async fn add_learner_inner(&self, r: pb::AddLearnerRequest) -> Reply<pb::MembershipResponse> {
        if r.id == 0 {
            return Err(NodeError::invalid("id", "node ids start at 1").into());
        }
        if r.address.parse::<std::net::SocketAddr>().is_err() && !r.address.contains(':') {
            return Err(NodeError::invalid("address", "expected host:port").into());
        }
        let revision = self
            .0
            .add_learner(r.id, r.address, r.wait_caught_up)
            .await?;
        let (v, l) = self.0.members();
        Ok(self.0.reply(pb::MembershipResponse {
            voters: v.into_keys().collect(),
            learners: l.into_keys().collect(),
            revision,
        }))
    }

    async fn promote_inner(&self, id: u64) -> Reply<pb::MembershipResponse> {
        let (_, learners) = self.0.members();
        if !learners.contains_key(&id) {
            return Err(NodeError::invalid(
                "id",
                format!("node {id} is not a learner; add it first"),
            )
            .into());
        }
        let (revision, voters, learners) = self
            .0
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await?;
        Ok(self.0.reply(pb::MembershipResponse {
            voters,
            learners,
            revision,
        }))
    }

    async fn remove_inner(&self, id: u64) -> Reply<pb::MembershipResponse> {
        let (voters, learners) = self.0.members();
        let change = if voters.contains_key(&id) {
            if voters.len() == 1 {
                return Err(NodeError::invalid("id", "cannot remove the last voter").into());
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if learners.contains_key(&id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(NodeError::invalid("id", format!("node {id} is not a member")).into());
        };
        let (revision, voters, learners) = self.0.change_membership(change).await?;
        Ok(self.0.reply(pb::MembershipResponse {
            voters,
            learners,
            revision,
        }))
    }
}
