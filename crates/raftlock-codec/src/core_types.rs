//! raftlock-core's log payloads and answers: requests, commands, responses,
//! errors and events.

use raftlock_core::{
    Applied, Command, Event, EventKind, Granted, Hold, IdentityLimits, LeaseEnd, Limit, Limits,
    LockError, LockKind, LockSpec, Metadata, Mode, Request, Response,
};

use crate::{Codec, CodecError, MAX_BATCH_NESTING, pb, required, to_u16, to_u32};

// ----- small types -------------------------------------------------------

pub(crate) fn mode_to(mode: Mode) -> pb::Mode {
    use pb::mode::{Exclusive, Mode as M, Semaphore, Shared};
    pb::Mode {
        mode: Some(match mode {
            Mode::Exclusive => M::Exclusive(Exclusive {}),
            Mode::Shared => M::Shared(Shared {}),
            Mode::Semaphore { permits } => M::Semaphore(Semaphore { permits }),
        }),
    }
}

pub(crate) fn mode_from(mode: Option<pb::Mode>, field: &'static str) -> Result<Mode, CodecError> {
    use pb::mode::Mode as M;
    Ok(match required(required(mode, field)?.mode, field)? {
        M::Exclusive(_) => Mode::Exclusive,
        M::Shared(_) => Mode::Shared,
        M::Semaphore(s) => Mode::Semaphore { permits: s.permits },
    })
}

pub(crate) fn kind_to(kind: LockKind) -> pb::LockKind {
    use pb::lock_kind::{Kind as K, ReadWrite, Semaphore};
    pb::LockKind {
        kind: Some(match kind {
            LockKind::ReadWrite => K::ReadWrite(ReadWrite {}),
            LockKind::Semaphore { permits } => K::Semaphore(Semaphore { permits }),
        }),
    }
}

pub(crate) fn kind_from(
    kind: Option<pb::LockKind>,
    field: &'static str,
) -> Result<LockKind, CodecError> {
    use pb::lock_kind::Kind as K;
    Ok(match required(required(kind, field)?.kind, field)? {
        K::ReadWrite(_) => LockKind::ReadWrite,
        K::Semaphore(s) => LockKind::Semaphore { permits: s.permits },
    })
}

pub(crate) fn spec_to(spec: &LockSpec) -> pb::LockSpec {
    pb::LockSpec {
        name: spec.name.clone(),
        mode: Some(mode_to(spec.mode)),
    }
}

pub(crate) fn spec_from(spec: pb::LockSpec) -> Result<LockSpec, CodecError> {
    Ok(LockSpec {
        name: spec.name,
        mode: mode_from(spec.mode, "LockSpec.mode")?,
    })
}

pub(crate) fn limits_to(l: &Limits) -> pb::Limits {
    pb::Limits {
        max_name_bytes: l.max_name_bytes,
        max_owner_bytes: l.max_owner_bytes,
        max_reason_bytes: l.max_reason_bytes,
        max_metadata_bytes: l.max_metadata_bytes,
        min_ttl_ms: l.min_ttl_ms,
        max_ttl_ms: l.max_ttl_ms,
        max_lock_delay_ms: l.max_lock_delay_ms,
        max_waiters_per_lock: l.max_waiters_per_lock,
        max_holds_per_lease: l.max_holds_per_lease,
        max_leases: l.max_leases,
        max_locks_per_request: l.max_locks_per_request,
        max_permits: l.max_permits,
    }
}

pub(crate) fn limits_from(
    l: Option<pb::Limits>,
    field: &'static str,
) -> Result<Limits, CodecError> {
    let l = required(l, field)?;
    Ok(Limits {
        max_name_bytes: l.max_name_bytes,
        max_owner_bytes: l.max_owner_bytes,
        max_reason_bytes: l.max_reason_bytes,
        max_metadata_bytes: l.max_metadata_bytes,
        min_ttl_ms: l.min_ttl_ms,
        max_ttl_ms: l.max_ttl_ms,
        max_lock_delay_ms: l.max_lock_delay_ms,
        max_waiters_per_lock: l.max_waiters_per_lock,
        max_holds_per_lease: l.max_holds_per_lease,
        max_leases: l.max_leases,
        max_locks_per_request: l.max_locks_per_request,
        max_permits: l.max_permits,
    })
}

fn quota_to(q: &IdentityLimits) -> pb::IdentityLimits {
    pb::IdentityLimits {
        max_leases: q.max_leases,
        max_holds: q.max_holds,
        max_waiters: q.max_waiters,
    }
}

fn quota_from(
    q: Option<pb::IdentityLimits>,
    field: &'static str,
) -> Result<IdentityLimits, CodecError> {
    let q = required(q, field)?;
    Ok(IdentityLimits {
        max_leases: q.max_leases,
        max_holds: q.max_holds,
        max_waiters: q.max_waiters,
    })
}

/// Metadata is a BTreeMap on both sides: nothing to check or sort.
pub(crate) fn metadata(m: &Metadata) -> std::collections::BTreeMap<String, String> {
    m.clone()
}

fn lease_end_to(how: LeaseEnd) -> i32 {
    match how {
        LeaseEnd::Revoked => pb::LeaseEnd::Revoked as i32,
        LeaseEnd::Expired => pb::LeaseEnd::Expired as i32,
    }
}

fn lease_end_from(value: i32, field: &'static str) -> Result<LeaseEnd, CodecError> {
    match pb::LeaseEnd::try_from(value) {
        Ok(pb::LeaseEnd::Revoked) => Ok(LeaseEnd::Revoked),
        Ok(pb::LeaseEnd::Expired) => Ok(LeaseEnd::Expired),
        Ok(pb::LeaseEnd::Unspecified) | Err(_) => Err(CodecError::UnknownValue { field, value }),
    }
}

fn limit_to(limit: Limit) -> i32 {
    use pb::Limit as P;
    (match limit {
        Limit::WaitersPerLock => P::WaitersPerLock,
        Limit::HoldsPerLease => P::HoldsPerLease,
        Limit::Leases => P::Leases,
        Limit::LocksPerRequest => P::LocksPerRequest,
        Limit::PermitsPerSemaphore => P::PermitsPerSemaphore,
        Limit::LeasesPerIdentity => P::LeasesPerIdentity,
        Limit::HoldsPerIdentity => P::HoldsPerIdentity,
        Limit::WaitersPerIdentity => P::WaitersPerIdentity,
        Limit::WatchersPerIdentity => P::WatchersPerIdentity,
        Limit::LogIndex => P::LogIndex,
        Limit::TokenEpoch => P::TokenEpoch,
    }) as i32
}

fn limit_from(value: i32, field: &'static str) -> Result<Limit, CodecError> {
    use pb::Limit as P;
    Ok(match P::try_from(value) {
        Ok(P::WaitersPerLock) => Limit::WaitersPerLock,
        Ok(P::HoldsPerLease) => Limit::HoldsPerLease,
        Ok(P::Leases) => Limit::Leases,
        Ok(P::LocksPerRequest) => Limit::LocksPerRequest,
        Ok(P::PermitsPerSemaphore) => Limit::PermitsPerSemaphore,
        Ok(P::LeasesPerIdentity) => Limit::LeasesPerIdentity,
        Ok(P::HoldsPerIdentity) => Limit::HoldsPerIdentity,
        Ok(P::WaitersPerIdentity) => Limit::WaitersPerIdentity,
        Ok(P::WatchersPerIdentity) => Limit::WatchersPerIdentity,
        Ok(P::LogIndex) => Limit::LogIndex,
        Ok(P::TokenEpoch) => Limit::TokenEpoch,
        Ok(P::Unspecified) | Err(_) => return Err(CodecError::UnknownValue { field, value }),
    })
}

pub(crate) fn hold_to(h: &Hold) -> pb::Hold {
    pb::Hold {
        lease: h.lease,
        owner: h.owner.to_string(),
        mode: Some(mode_to(h.mode)),
        token: h.token,
        acquired_at_wall_ms: h.acquired_at_wall_ms,
        reason: h.reason.to_string(),
        metadata: metadata(&h.metadata),
        acquisitions: h.acquisitions.into(),
        extensions: h.extensions.into(),
        from_waiter: h.from_waiter,
        requested_at: h.requested_at,
        lock_delay_ms: h.lock_delay_ms,
    }
}

pub(crate) fn hold_from(h: pb::Hold) -> Result<Hold, CodecError> {
    Ok(Hold {
        lease: h.lease,
        owner: h.owner.into(),
        mode: mode_from(h.mode, "Hold.mode")?,
        token: h.token,
        acquired_at_wall_ms: h.acquired_at_wall_ms,
        reason: h.reason.into(),
        metadata: h.metadata,
        acquisitions: to_u32(h.acquisitions, "Hold.acquisitions")?,
        extensions: to_u32(h.extensions, "Hold.extensions")?,
        from_waiter: h.from_waiter,
        requested_at: h.requested_at,
        lock_delay_ms: h.lock_delay_ms,
    })
}

fn granted_to(g: &Granted) -> pb::Granted {
    pb::Granted {
        name: g.name.clone(),
        mode: Some(mode_to(g.mode)),
        token: g.token,
    }
}

fn granted_from(g: pb::Granted) -> Result<Granted, CodecError> {
    Ok(Granted {
        name: g.name,
        mode: mode_from(g.mode, "Granted.mode")?,
        token: g.token,
    })
}

fn all<P, T>(
    items: Vec<P>,
    f: impl FnMut(P) -> Result<T, CodecError>,
) -> Result<Vec<T>, CodecError> {
    items.into_iter().map(f).collect()
}

// ----- commands ----------------------------------------------------------

/// `depth`: how many batches enclose `command` (0 at the top).
pub(crate) fn command_to(command: &Command, depth: usize) -> Result<pb::Command, CodecError> {
    use pb::command as c;
    use pb::command::Command as C;
    let command = match command {
        Command::GrantLease {
            ttl_ms,
            owner,
            identity,
            quota,
        } => C::GrantLease(c::GrantLease {
            ttl_ms: *ttl_ms,
            owner: owner.clone(),
            identity: identity.clone(),
            quota: Some(quota_to(quota)),
        }),
        Command::RevokeLease { lease } => C::RevokeLease(c::RevokeLease { lease: *lease }),
        Command::ExpireLeases { leases } => C::ExpireLeases(c::ExpireLeases {
            leases: leases.clone(),
        }),
        Command::Acquire {
            lease,
            locks,
            wait,
            reason,
            metadata: m,
            lock_delay_ms,
            quota,
        } => C::Acquire(c::Acquire {
            lease: *lease,
            locks: locks.iter().map(spec_to).collect(),
            wait: *wait,
            reason: reason.clone(),
            metadata: metadata(m),
            lock_delay_ms: *lock_delay_ms,
            quota: Some(quota_to(quota)),
        }),
        Command::Release {
            lease,
            token,
            names,
        } => C::Release(c::Release {
            lease: *lease,
            token: *token,
            names: names.clone(),
        }),
        Command::Extend {
            lease,
            name,
            token,
            ttl_ms,
        } => C::Extend(c::Extend {
            lease: *lease,
            name: name.clone(),
            token: *token,
            ttl_ms: *ttl_ms,
        }),
        Command::CancelWait {
            lease,
            waiter,
            as_of,
        } => C::CancelWait(c::CancelWait {
            lease: *lease,
            waiter: *waiter,
            as_of: *as_of,
        }),
        Command::ForceRelease { name, lease, by } => C::ForceRelease(c::ForceRelease {
            name: name.clone(),
            lease: *lease,
            by: by.clone(),
        }),
        Command::Tick => C::Tick(c::Tick {}),
        Command::SetLimits { limits } => C::SetLimits(c::SetLimits {
            limits: Some(limits_to(limits)),
        }),
        Command::InitCluster { cluster_id } => C::InitCluster(c::InitCluster {
            cluster_id: cluster_id.clone(),
        }),
        Command::RecordMember {
            node,
            store_id,
            client_addr,
        } => C::RecordMember(c::RecordMember {
            node: *node,
            store_id: store_id.clone(),
            client_addr: client_addr.clone(),
        }),
        Command::Batch { commands } => {
            if depth >= MAX_BATCH_NESTING {
                return Err(CodecError::TooDeep {
                    field: "Command.batch",
                    max: MAX_BATCH_NESTING,
                });
            }
            C::Batch(c::Batch {
                commands: commands
                    .iter()
                    .map(|c| command_to(c, depth + 1))
                    .collect::<Result<_, _>>()?,
            })
        }
        Command::ForgetMember { node } => C::ForgetMember(c::ForgetMember { node: *node }),
        Command::RaiseTokenEpoch { at_least } => C::RaiseTokenEpoch(c::RaiseTokenEpoch {
            at_least: u32::from(*at_least),
        }),
        Command::ForceNewCluster {
            cluster_id,
            node,
            store_id,
            client_addr,
        } => C::ForceNewCluster(c::ForceNewCluster {
            cluster_id: cluster_id.clone(),
            node: *node,
            store_id: store_id.clone(),
            client_addr: client_addr.clone(),
        }),
    };
    Ok(pb::Command {
        command: Some(command),
    })
}

pub(crate) fn command_from(command: pb::Command, depth: usize) -> Result<Command, CodecError> {
    use pb::command::Command as C;
    Ok(match required(command.command, "Command.command")? {
        C::GrantLease(c) => Command::GrantLease {
            ttl_ms: c.ttl_ms,
            owner: c.owner,
            identity: c.identity,
            quota: quota_from(c.quota, "GrantLease.quota")?,
        },
        C::RevokeLease(c) => Command::RevokeLease { lease: c.lease },
        C::ExpireLeases(c) => Command::ExpireLeases { leases: c.leases },
        C::Acquire(c) => Command::Acquire {
            lease: c.lease,
            locks: all(c.locks, spec_from)?,
            wait: c.wait,
            reason: c.reason,
            metadata: c.metadata,
            lock_delay_ms: c.lock_delay_ms,
            quota: quota_from(c.quota, "Acquire.quota")?,
        },
        C::Release(c) => Command::Release {
            lease: c.lease,
            token: c.token,
            names: c.names,
        },
        C::Extend(c) => Command::Extend {
            lease: c.lease,
            name: c.name,
            token: c.token,
            ttl_ms: c.ttl_ms,
        },
        C::CancelWait(c) => Command::CancelWait {
            lease: c.lease,
            waiter: c.waiter,
            as_of: c.as_of,
        },
        C::ForceRelease(c) => Command::ForceRelease {
            name: c.name,
            lease: c.lease,
            by: c.by,
        },
        C::Tick(_) => Command::Tick,
        C::SetLimits(c) => Command::SetLimits {
            limits: limits_from(c.limits, "SetLimits.limits")?,
        },
        C::InitCluster(c) => Command::InitCluster {
            cluster_id: c.cluster_id,
        },
        C::RecordMember(c) => Command::RecordMember {
            node: c.node,
            store_id: c.store_id,
            client_addr: c.client_addr,
        },
        C::Batch(c) => {
            if depth >= MAX_BATCH_NESTING {
                return Err(CodecError::TooDeep {
                    field: "Command.batch",
                    max: MAX_BATCH_NESTING,
                });
            }
            Command::Batch {
                commands: all(c.commands, |c| command_from(c, depth + 1))?,
            }
        }
        C::ForgetMember(c) => Command::ForgetMember { node: c.node },
        C::RaiseTokenEpoch(c) => Command::RaiseTokenEpoch {
            at_least: to_u16(c.at_least, "RaiseTokenEpoch.at_least")?,
        },
        C::ForceNewCluster(c) => Command::ForceNewCluster {
            cluster_id: c.cluster_id,
            node: c.node,
            store_id: c.store_id,
            client_addr: c.client_addr,
        },
    })
}

pub(crate) fn request_to(r: &Request) -> Result<pb::Request, CodecError> {
    Ok(pb::Request {
        cluster_ms: r.cluster_ms,
        wall_ms: r.wall_ms,
        command: Some(command_to(&r.command, 0)?),
    })
}

pub(crate) fn request_from(r: pb::Request) -> Result<Request, CodecError> {
    Ok(Request {
        cluster_ms: r.cluster_ms,
        wall_ms: r.wall_ms,
        command: command_from(required(r.command, "Request.command")?, 0)?,
    })
}

impl Codec for Command {
    const KIND: pb::BodyKind = pb::BodyKind::Command;
    const WHAT: &'static str = "command";
    type Proto = pb::Command;
    fn to_proto(&self) -> Result<pb::Command, CodecError> {
        command_to(self, 0)
    }
    fn from_proto(proto: pb::Command) -> Result<Self, CodecError> {
        command_from(proto, 0)
    }
}

impl Codec for Request {
    const KIND: pb::BodyKind = pb::BodyKind::Request;
    const WHAT: &'static str = "request";
    type Proto = pb::Request;
    fn to_proto(&self) -> Result<pb::Request, CodecError> {
        request_to(self)
    }
    fn from_proto(proto: pb::Request) -> Result<Self, CodecError> {
        request_from(proto)
    }
}

// ----- answers -----------------------------------------------------------

fn response_to(response: &Response, depth: usize) -> Result<pb::Response, CodecError> {
    use pb::response as r;
    use pb::response::Response as R;
    let granted = |g: &[Granted]| g.iter().map(granted_to).collect();
    let response = match response {
        Response::LeaseGranted { lease, ttl_ms } => R::LeaseGranted(r::LeaseGranted {
            lease: *lease,
            ttl_ms: *ttl_ms,
        }),
        Response::LeaseEnded {
            lease,
            how,
            released,
        } => R::LeaseEnded(r::LeaseEnded {
            lease: *lease,
            how: lease_end_to(*how),
            released: granted(released),
        }),
        Response::LeasesExpired { leases } => R::LeasesExpired(r::LeasesExpired {
            leases: leases.clone(),
        }),
        Response::Acquired {
            token,
            holds,
            retry,
        } => R::Acquired(r::Acquired {
            token: *token,
            holds: granted(holds),
            retry: *retry,
        }),
        Response::Queued {
            waiter,
            position,
            retry,
        } => R::Queued(r::Queued {
            waiter: *waiter,
            position: *position,
            retry: *retry,
        }),
        Response::Released { names } => R::Released(r::Released {
            names: names.clone(),
        }),
        Response::Extended {
            lease,
            ttl_ms,
            extensions,
        } => R::Extended(r::Extended {
            lease: *lease,
            ttl_ms: *ttl_ms,
            extensions: *extensions,
        }),
        Response::WaitCancelled { waiter } => {
            R::WaitCancelled(r::WaitCancelled { waiter: *waiter })
        }
        Response::CancelSuperseded { waiter } => {
            R::CancelSuperseded(r::CancelSuperseded { waiter: *waiter })
        }
        Response::ReleasedAfterGrant { waiter, released } => {
            R::ReleasedAfterGrant(r::ReleasedAfterGrant {
                waiter: *waiter,
                released: granted(released),
            })
        }
        Response::ForceReleased { released } => R::ForceReleased(r::ForceReleased {
            released: released.iter().map(hold_to).collect(),
        }),
        Response::Ticked => R::Ticked(r::Ticked {}),
        Response::LimitsSet => R::LimitsSet(r::LimitsSet {}),
        Response::ClusterInit { cluster_id } => R::ClusterInit(r::ClusterInit {
            cluster_id: cluster_id.clone(),
        }),
        Response::MemberRecorded { conflict } => R::MemberRecorded(r::MemberRecorded {
            conflict: conflict.clone(),
        }),
        Response::Batch { results } => {
            if depth >= MAX_BATCH_NESTING {
                return Err(CodecError::TooDeep {
                    field: "Response.batch",
                    max: MAX_BATCH_NESTING,
                });
            }
            R::Batch(r::Batch {
                results: results
                    .iter()
                    .map(|o| outcome_to(o, depth + 1))
                    .collect::<Result<_, _>>()?,
            })
        }
        Response::Nothing => R::Nothing(r::Nothing {}),
        Response::MemberForgotten { existed } => {
            R::MemberForgotten(r::MemberForgotten { existed: *existed })
        }
        Response::TokenEpochRaised { epoch } => R::TokenEpochRaised(r::TokenEpochRaised {
            epoch: u32::from(*epoch),
        }),
        Response::ClusterForced { cluster_id, epoch } => R::ClusterForced(r::ClusterForced {
            cluster_id: cluster_id.clone(),
            epoch: u32::from(*epoch),
        }),
    };
    Ok(pb::Response {
        response: Some(response),
    })
}

fn response_from(response: pb::Response, depth: usize) -> Result<Response, CodecError> {
    use pb::response::Response as R;
    let granted = |g: Vec<pb::Granted>| all(g, granted_from);
    Ok(match required(response.response, "Response.response")? {
        R::LeaseGranted(r) => Response::LeaseGranted {
            lease: r.lease,
            ttl_ms: r.ttl_ms,
        },
        R::LeaseEnded(r) => Response::LeaseEnded {
            lease: r.lease,
            how: lease_end_from(r.how, "Response.LeaseEnded.how")?,
            released: granted(r.released)?,
        },
        R::LeasesExpired(r) => Response::LeasesExpired { leases: r.leases },
        R::Acquired(r) => Response::Acquired {
            token: r.token,
            holds: granted(r.holds)?,
            retry: r.retry,
        },
        R::Queued(r) => Response::Queued {
            waiter: r.waiter,
            position: r.position,
            retry: r.retry,
        },
        R::Released(r) => Response::Released { names: r.names },
        R::Extended(r) => Response::Extended {
            lease: r.lease,
            ttl_ms: r.ttl_ms,
            extensions: r.extensions,
        },
        R::WaitCancelled(r) => Response::WaitCancelled { waiter: r.waiter },
        R::CancelSuperseded(r) => Response::CancelSuperseded { waiter: r.waiter },
        R::ReleasedAfterGrant(r) => Response::ReleasedAfterGrant {
            waiter: r.waiter,
            released: granted(r.released)?,
        },
        R::ForceReleased(r) => Response::ForceReleased {
            released: all(r.released, hold_from)?,
        },
        R::Ticked(_) => Response::Ticked,
        R::LimitsSet(_) => Response::LimitsSet,
        R::ClusterInit(r) => Response::ClusterInit {
            cluster_id: r.cluster_id,
        },
        R::MemberRecorded(r) => Response::MemberRecorded {
            conflict: r.conflict,
        },
        R::Batch(r) => {
            if depth >= MAX_BATCH_NESTING {
                return Err(CodecError::TooDeep {
                    field: "Response.batch",
                    max: MAX_BATCH_NESTING,
                });
            }
            Response::Batch {
                results: all(r.results, |o| outcome_from(o, depth + 1))?,
            }
        }
        R::Nothing(_) => Response::Nothing,
        R::MemberForgotten(r) => Response::MemberForgotten { existed: r.existed },
        R::TokenEpochRaised(r) => Response::TokenEpochRaised {
            epoch: to_u16(r.epoch, "TokenEpochRaised.epoch")?,
        },
        R::ClusterForced(r) => Response::ClusterForced {
            cluster_id: r.cluster_id,
            epoch: to_u16(r.epoch, "ClusterForced.epoch")?,
        },
    })
}

fn outcome_to(
    outcome: &Result<Response, LockError>,
    depth: usize,
) -> Result<pb::Outcome, CodecError> {
    use pb::outcome::Outcome as O;
    Ok(pb::Outcome {
        outcome: Some(match outcome {
            Ok(r) => O::Ok(response_to(r, depth)?),
            Err(e) => O::Err(lock_error_to(e)),
        }),
    })
}

fn outcome_from(
    outcome: pb::Outcome,
    depth: usize,
) -> Result<Result<Response, LockError>, CodecError> {
    use pb::outcome::Outcome as O;
    Ok(match required(outcome.outcome, "Outcome.outcome")? {
        O::Ok(r) => Ok(response_from(r, depth)?),
        O::Err(e) => Err(lock_error_from(e)?),
    })
}

fn lock_error_to(e: &LockError) -> pb::LockError {
    use pb::lock_error as l;
    use pb::lock_error::Error as E;
    let error = match e.clone() {
        LockError::InvalidName { name, reason } => E::InvalidName(l::InvalidName { name, reason }),
        LockError::InvalidArgument { field, reason } => {
            E::InvalidArgument(l::InvalidArgument { field, reason })
        }
        LockError::TooLarge { field, size, max } => E::TooLarge(l::TooLarge { field, size, max }),
        LockError::TtlOutOfRange {
            ttl_ms,
            min_ms,
            max_ms,
        } => E::TtlOutOfRange(l::TtlOutOfRange {
            ttl_ms,
            min_ms,
            max_ms,
        }),
        LockError::LimitExceeded { limit, max } => E::LimitExceeded(l::LimitExceeded {
            limit: limit_to(limit),
            max,
        }),
        LockError::IdentityLimitExceeded {
            identity,
            limit,
            max,
        } => E::IdentityLimitExceeded(l::IdentityLimitExceeded {
            identity,
            limit: limit_to(limit),
            max,
        }),
        LockError::LeaseNotFound { lease } => E::LeaseNotFound(l::LeaseNotFound { lease }),
        LockError::Busy {
            name,
            holders,
            waiters,
            delayed_until_ms,
        } => E::Busy(l::Busy {
            name,
            holders,
            waiters,
            delayed_until_ms,
        }),
        LockError::NotHolder { name, lease } => E::NotHolder(l::NotHolder { name, lease }),
        LockError::StaleToken {
            name,
            lease,
            presented,
            current,
        } => E::StaleToken(l::StaleToken {
            name,
            lease,
            presented,
            current,
        }),
        LockError::KindConflict {
            name,
            existing,
            requested,
        } => E::KindConflict(l::KindConflict {
            name,
            existing: Some(kind_to(existing)),
            requested: Some(mode_to(requested)),
        }),
        LockError::PermitsMismatch {
            name,
            existing,
            requested,
        } => E::PermitsMismatch(l::PermitsMismatch {
            name,
            existing,
            requested,
        }),
        LockError::HeldInOtherMode {
            name,
            lease,
            held,
            requested,
        } => E::HeldInOtherMode(l::HeldInOtherMode {
            name,
            lease,
            held: Some(mode_to(held)),
            requested: Some(mode_to(requested)),
        }),
        LockError::PartiallyHeld { name, lease } => {
            E::PartiallyHeld(l::PartiallyHeld { name, lease })
        }
        LockError::AlreadyWaiting {
            name,
            lease,
            waiter,
        } => E::AlreadyWaiting(l::AlreadyWaiting {
            name,
            lease,
            waiter,
        }),
        LockError::WaiterNotFound { waiter, lease } => {
            E::WaiterNotFound(l::WaiterNotFound { waiter, lease })
        }
        LockError::LockNotFound { name } => E::LockNotFound(l::LockNotFound { name }),
    };
    pb::LockError { error: Some(error) }
}

fn lock_error_from(e: pb::LockError) -> Result<LockError, CodecError> {
    use pb::lock_error::Error as E;
    Ok(match required(e.error, "LockError.error")? {
        E::InvalidName(e) => LockError::InvalidName {
            name: e.name,
            reason: e.reason,
        },
        E::InvalidArgument(e) => LockError::InvalidArgument {
            field: e.field,
            reason: e.reason,
        },
        E::TooLarge(e) => LockError::TooLarge {
            field: e.field,
            size: e.size,
            max: e.max,
        },
        E::TtlOutOfRange(e) => LockError::TtlOutOfRange {
            ttl_ms: e.ttl_ms,
            min_ms: e.min_ms,
            max_ms: e.max_ms,
        },
        E::LimitExceeded(e) => LockError::LimitExceeded {
            limit: limit_from(e.limit, "LockError.LimitExceeded.limit")?,
            max: e.max,
        },
        E::IdentityLimitExceeded(e) => LockError::IdentityLimitExceeded {
            identity: e.identity,
            limit: limit_from(e.limit, "LockError.IdentityLimitExceeded.limit")?,
            max: e.max,
        },
        E::LeaseNotFound(e) => LockError::LeaseNotFound { lease: e.lease },
        E::Busy(e) => LockError::Busy {
            name: e.name,
            holders: e.holders,
            waiters: e.waiters,
            delayed_until_ms: e.delayed_until_ms,
        },
        E::NotHolder(e) => LockError::NotHolder {
            name: e.name,
            lease: e.lease,
        },
        E::StaleToken(e) => LockError::StaleToken {
            name: e.name,
            lease: e.lease,
            presented: e.presented,
            current: e.current,
        },
        E::KindConflict(e) => LockError::KindConflict {
            name: e.name,
            existing: kind_from(e.existing, "LockError.KindConflict.existing")?,
            requested: mode_from(e.requested, "LockError.KindConflict.requested")?,
        },
        E::PermitsMismatch(e) => LockError::PermitsMismatch {
            name: e.name,
            existing: e.existing,
            requested: e.requested,
        },
        E::HeldInOtherMode(e) => LockError::HeldInOtherMode {
            name: e.name,
            lease: e.lease,
            held: mode_from(e.held, "LockError.HeldInOtherMode.held")?,
            requested: mode_from(e.requested, "LockError.HeldInOtherMode.requested")?,
        },
        E::PartiallyHeld(e) => LockError::PartiallyHeld {
            name: e.name,
            lease: e.lease,
        },
        E::AlreadyWaiting(e) => LockError::AlreadyWaiting {
            name: e.name,
            lease: e.lease,
            waiter: e.waiter,
        },
        E::WaiterNotFound(e) => LockError::WaiterNotFound {
            waiter: e.waiter,
            lease: e.lease,
        },
        E::LockNotFound(e) => LockError::LockNotFound { name: e.name },
    })
}

fn event_to(e: &Event) -> pb::Event {
    use pb::event as v;
    use pb::event::Kind as K;
    let kind = match e.kind.clone() {
        EventKind::LeaseGranted {
            lease,
            owner,
            ttl_ms,
        } => K::LeaseGranted(v::LeaseGranted {
            lease,
            owner,
            ttl_ms,
        }),
        EventKind::LeaseEnded { lease, how } => K::LeaseEnded(v::LeaseEnded {
            lease,
            how: lease_end_to(how),
        }),
        EventKind::Acquired {
            name,
            lease,
            owner,
            mode,
            token,
            waiter,
        } => K::Acquired(v::Acquired {
            name,
            lease,
            owner,
            mode: Some(mode_to(mode)),
            token,
            waiter,
        }),
        EventKind::Queued {
            name,
            lease,
            waiter,
            position,
        } => K::Queued(v::Queued {
            name,
            lease,
            waiter,
            position,
        }),
        EventKind::WaitDropped {
            name,
            lease,
            waiter,
        } => K::WaitDropped(v::WaitDropped {
            name,
            lease,
            waiter,
        }),
        EventKind::Released { name, lease, token } => {
            K::Released(v::Released { name, lease, token })
        }
        EventKind::Expired {
            name,
            lease,
            token,
            how,
        } => K::Expired(v::Expired {
            name,
            lease,
            token,
            how: lease_end_to(how),
        }),
        EventKind::ForceReleased {
            name,
            lease,
            token,
            by,
        } => K::ForceReleased(v::ForceReleased {
            name,
            lease,
            token,
            by,
        }),
        EventKind::Delayed { name, until_ms } => K::Delayed(v::Delayed { name, until_ms }),
    };
    pb::Event {
        revision: e.revision,
        kind: Some(kind),
    }
}

fn event_from(e: pb::Event) -> Result<Event, CodecError> {
    use pb::event::Kind as K;
    let kind = match required(e.kind, "Event.kind")? {
        K::LeaseGranted(k) => EventKind::LeaseGranted {
            lease: k.lease,
            owner: k.owner,
            ttl_ms: k.ttl_ms,
        },
        K::LeaseEnded(k) => EventKind::LeaseEnded {
            lease: k.lease,
            how: lease_end_from(k.how, "Event.LeaseEnded.how")?,
        },
        K::Acquired(k) => EventKind::Acquired {
            name: k.name,
            lease: k.lease,
            owner: k.owner,
            mode: mode_from(k.mode, "Event.Acquired.mode")?,
            token: k.token,
            waiter: k.waiter,
        },
        K::Queued(k) => EventKind::Queued {
            name: k.name,
            lease: k.lease,
            waiter: k.waiter,
            position: k.position,
        },
        K::WaitDropped(k) => EventKind::WaitDropped {
            name: k.name,
            lease: k.lease,
            waiter: k.waiter,
        },
        K::Released(k) => EventKind::Released {
            name: k.name,
            lease: k.lease,
            token: k.token,
        },
        K::Expired(k) => EventKind::Expired {
            name: k.name,
            lease: k.lease,
            token: k.token,
            how: lease_end_from(k.how, "Event.Expired.how")?,
        },
        K::ForceReleased(k) => EventKind::ForceReleased {
            name: k.name,
            lease: k.lease,
            token: k.token,
            by: k.by,
        },
        K::Delayed(k) => EventKind::Delayed {
            name: k.name,
            until_ms: k.until_ms,
        },
    };
    Ok(Event {
        revision: e.revision,
        kind,
    })
}

impl Codec for Response {
    const KIND: pb::BodyKind = pb::BodyKind::Response;
    const WHAT: &'static str = "response";
    type Proto = pb::Response;
    fn to_proto(&self) -> Result<pb::Response, CodecError> {
        response_to(self, 0)
    }
    fn from_proto(proto: pb::Response) -> Result<Self, CodecError> {
        response_from(proto, 0)
    }
}

impl Codec for LockError {
    const KIND: pb::BodyKind = pb::BodyKind::LockError;
    const WHAT: &'static str = "lock error";
    type Proto = pb::LockError;
    fn to_proto(&self) -> Result<pb::LockError, CodecError> {
        Ok(lock_error_to(self))
    }
    fn from_proto(proto: pb::LockError) -> Result<Self, CodecError> {
        lock_error_from(proto)
    }
}

impl Codec for Event {
    const KIND: pb::BodyKind = pb::BodyKind::Event;
    const WHAT: &'static str = "event";
    type Proto = pb::Event;
    fn to_proto(&self) -> Result<pb::Event, CodecError> {
        Ok(event_to(self))
    }
    fn from_proto(proto: pb::Event) -> Result<Self, CodecError> {
        event_from(proto)
    }
}

impl Codec for Applied {
    const KIND: pb::BodyKind = pb::BodyKind::Applied;
    const WHAT: &'static str = "applied entry";
    type Proto = pb::Applied;
    fn to_proto(&self) -> Result<pb::Applied, CodecError> {
        Ok(pb::Applied {
            index: self.index,
            result: Some(outcome_to(&self.result, 0)?),
            revision: self.revision,
            events: self.events.iter().map(event_to).collect(),
        })
    }
    fn from_proto(proto: pb::Applied) -> Result<Self, CodecError> {
        Ok(Applied {
            index: proto.index,
            result: outcome_from(required(proto.result, "Applied.result")?, 0)?,
            events: all(proto.events, event_from)?,
            revision: proto.revision,
        })
    }
}

/// Checks that `command` nests batches no deeper than the codec writes
/// and reads ([`MAX_BATCH_NESTING`]): for commands that arrive in another
/// encoding (peer protocol 1's bincode), which this build must be able to
/// store.
pub fn check_nesting(command: &Command) -> Result<(), CodecError> {
    fn at(command: &Command, depth: usize) -> Result<(), CodecError> {
        if let Command::Batch { commands } = command {
            if depth >= MAX_BATCH_NESTING {
                return Err(CodecError::TooDeep {
                    field: "Command.batch",
                    max: MAX_BATCH_NESTING,
                });
            }
            for inner in commands {
                at(inner, depth + 1)?;
            }
        }
        Ok(())
    }
    at(command, 0)
}

#[cfg(test)]
mod hold_counter_tests {
    use super::*;

    fn stored(acquisitions: u64, extensions: u64) -> pb::Hold {
        pb::Hold {
            lease: 3,
            owner: "w".into(),
            mode: Some(mode_to(raftlock_core::Mode::Exclusive)),
            token: 9,
            acquisitions,
            extensions,
            ..Default::default()
        }
    }

    #[test]
    fn hold_counters_kept_as_u32_read_every_u32_and_refuse_larger_values() {
        let max = u64::from(u32::MAX);
        let hold = hold_from(stored(max, max)).expect("the largest u32 is read");
        assert_eq!((hold.acquisitions, hold.extensions), (u32::MAX, u32::MAX));
        assert_eq!(
            hold_to(&hold),
            stored(max, max),
            "and written back as it was"
        );
        for (a, e, field) in [
            (max + 1, 0, "Hold.acquisitions"),
            (0, max + 1, "Hold.extensions"),
        ] {
            match hold_from(stored(a, e)) {
                Err(CodecError::OutOfRange { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field} above u32::MAX must be refused, got {other:?}"),
            }
        }
    }
}
