//! Generators: arbitrary values of every encoded type (not only valid
//! ones: the codec must carry whatever the types can hold), and states
//! reached by applying random commands through the state machine's public
//! API (a `State` can only be built that way).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use openraft::entry::EntryPayload;
use openraft::{
    BasicNode, CommittedLeaderId, Entry, LeaderId, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote,
};
use proptest::prelude::*;
use raftlock_codec::MAX_BATCH_NESTING;
use raftlock_core::{
    Applied, Command, Event, EventKind, Granted, Hold, IdentityLimits, LeaseEnd, Limit, LockError,
    LockKind, LockSpec, Metadata, Mode, Request, Response, State,
};

openraft::declare_raft_types!(
    /// The store's type configuration, declared again here: the codec
    /// works for any configuration with raftlock's payload, node id and
    /// node.
    pub TypeConfig:
        D = Request,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type RaftEntry = Entry<TypeConfig>;

pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

// ----- core --------------------------------------------------------------

pub use raftlock_testkit::strategies::{metadata, mode, text};

pub fn lock_kind() -> impl Strategy<Value = LockKind> {
    prop_oneof![
        Just(LockKind::ReadWrite),
        any::<u32>().prop_map(|permits| LockKind::Semaphore { permits }),
    ]
}

/// Any command, batches nested as deep as the codec allows.
pub fn command() -> impl Strategy<Value = Command> {
    raftlock_testkit::strategies::command(MAX_BATCH_NESTING as u32)
}

pub fn request() -> impl Strategy<Value = Request> {
    raftlock_testkit::strategies::request(MAX_BATCH_NESTING as u32)
}

fn lease_end() -> impl Strategy<Value = LeaseEnd> {
    prop_oneof![Just(LeaseEnd::Revoked), Just(LeaseEnd::Expired)]
}

fn limit() -> impl Strategy<Value = Limit> {
    prop::sample::select(vec![
        Limit::WaitersPerLock,
        Limit::HoldsPerLease,
        Limit::Leases,
        Limit::LocksPerRequest,
        Limit::PermitsPerSemaphore,
        Limit::LeasesPerIdentity,
        Limit::HoldsPerIdentity,
        Limit::WaitersPerIdentity,
        Limit::WatchersPerIdentity,
        Limit::LogIndex,
        Limit::TokenEpoch,
    ])
}

pub fn lock_error() -> impl Strategy<Value = LockError> {
    prop_oneof![
        (text(), text()).prop_map(|(name, reason)| LockError::InvalidName { name, reason }),
        (text(), text()).prop_map(|(field, reason)| LockError::InvalidArgument { field, reason }),
        (text(), any::<u64>(), any::<u64>()).prop_map(|(field, size, max)| LockError::TooLarge {
            field,
            size,
            max
        }),
        any::<[u64; 3]>().prop_map(|[ttl_ms, min_ms, max_ms]| LockError::TtlOutOfRange {
            ttl_ms,
            min_ms,
            max_ms
        }),
        (limit(), any::<u64>()).prop_map(|(limit, max)| LockError::LimitExceeded { limit, max }),
        (text(), limit(), any::<u64>()).prop_map(|(identity, limit, max)| {
            LockError::IdentityLimitExceeded {
                identity,
                limit,
                max,
            }
        }),
        any::<u64>().prop_map(|lease| LockError::LeaseNotFound { lease }),
        (text(), any::<u32>(), any::<u32>(), any::<Option<u64>>()).prop_map(
            |(name, holders, waiters, delayed_until_ms)| LockError::Busy {
                name,
                holders,
                waiters,
                delayed_until_ms
            }
        ),
        (text(), any::<u64>()).prop_map(|(name, lease)| LockError::NotHolder { name, lease }),
        (text(), any::<[u64; 3]>()).prop_map(|(name, [lease, presented, current])| {
            LockError::StaleToken {
                name,
                lease,
                presented,
                current,
            }
        }),
        (text(), lock_kind(), mode()).prop_map(|(name, existing, requested)| {
            LockError::KindConflict {
                name,
                existing,
                requested,
            }
        }),
        (text(), any::<u32>(), any::<u32>()).prop_map(|(name, existing, requested)| {
            LockError::PermitsMismatch {
                name,
                existing,
                requested,
            }
        }),
        (text(), any::<u64>(), mode(), mode()).prop_map(|(name, lease, held, requested)| {
            LockError::HeldInOtherMode {
                name,
                lease,
                held,
                requested,
            }
        }),
        (text(), any::<u64>()).prop_map(|(name, lease)| LockError::PartiallyHeld { name, lease }),
        (text(), any::<u64>(), any::<u64>()).prop_map(|(name, lease, waiter)| {
            LockError::AlreadyWaiting {
                name,
                lease,
                waiter,
            }
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(waiter, lease)| LockError::WaiterNotFound { waiter, lease }),
        text().prop_map(|name| LockError::LockNotFound { name }),
    ]
}

fn granted() -> impl Strategy<Value = Vec<Granted>> {
    prop::collection::vec(
        (text(), mode(), any::<u64>()).prop_map(|(name, mode, token)| Granted {
            name,
            mode,
            token,
        }),
        0..3,
    )
}

pub fn hold() -> impl Strategy<Value = Hold> {
    (
        (
            any::<u64>(),
            text(),
            mode(),
            any::<u64>(),
            any::<u64>(),
            text(),
        ),
        (
            metadata(),
            any::<u32>(),
            any::<u32>(),
            any::<Option<u64>>(),
            any::<u64>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (lease, owner, mode, token, acquired_at_wall_ms, reason),
                (metadata, acquisitions, extensions, from_waiter, requested_at, lock_delay_ms),
            )| Hold {
                lease,
                owner: owner.into(),
                mode,
                token,
                acquired_at_wall_ms,
                reason: reason.into(),
                metadata,
                acquisitions,
                extensions,
                from_waiter,
                requested_at,
                lock_delay_ms,
            },
        )
}

fn leaf_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u64>(), any::<u64>())
            .prop_map(|(lease, ttl_ms)| Response::LeaseGranted { lease, ttl_ms }),
        (any::<u64>(), lease_end(), granted()).prop_map(|(lease, how, released)| {
            Response::LeaseEnded {
                lease,
                how,
                released,
            }
        }),
        prop::collection::vec(any::<u64>(), 0..3)
            .prop_map(|leases| Response::LeasesExpired { leases }),
        (any::<u64>(), granted(), any::<bool>()).prop_map(|(token, holds, retry)| {
            Response::Acquired {
                token,
                holds,
                retry,
            }
        }),
        (any::<u64>(), any::<u32>(), any::<bool>()).prop_map(|(waiter, position, retry)| {
            Response::Queued {
                waiter,
                position,
                retry,
            }
        }),
        prop::collection::vec(text(), 0..3).prop_map(|names| Response::Released { names }),
        any::<[u64; 3]>().prop_map(|[lease, ttl_ms, extensions]| Response::Extended {
            lease,
            ttl_ms,
            extensions
        }),
        any::<u64>().prop_map(|waiter| Response::WaitCancelled { waiter }),
        any::<u64>().prop_map(|waiter| Response::CancelSuperseded { waiter }),
        (any::<u64>(), granted())
            .prop_map(|(waiter, released)| Response::ReleasedAfterGrant { waiter, released }),
        prop::collection::vec(hold(), 0..2)
            .prop_map(|released| Response::ForceReleased { released }),
        Just(Response::Ticked),
        Just(Response::LimitsSet),
        text().prop_map(|cluster_id| Response::ClusterInit { cluster_id }),
        proptest::option::of(text()).prop_map(|conflict| Response::MemberRecorded { conflict }),
        Just(Response::Nothing),
        any::<bool>().prop_map(|existed| Response::MemberForgotten { existed }),
        any::<u16>().prop_map(|epoch| Response::TokenEpochRaised { epoch }),
        (text(), any::<u16>())
            .prop_map(|(cluster_id, epoch)| Response::ClusterForced { cluster_id, epoch }),
    ]
}

/// Any response, batches nested as deep as the codec allows.
pub fn response() -> impl Strategy<Value = Response> {
    leaf_response().prop_recursive(MAX_BATCH_NESTING as u32, 32, 3, |inner| {
        prop::collection::vec(prop::result::maybe_err(inner, lock_error()), 0..3)
            .prop_map(|results| Response::Batch { results })
    })
}

pub fn event() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        (any::<u64>(), text(), any::<u64>()).prop_map(|(lease, owner, ttl_ms)| {
            EventKind::LeaseGranted {
                lease,
                owner,
                ttl_ms,
            }
        }),
        (any::<u64>(), lease_end()).prop_map(|(lease, how)| EventKind::LeaseEnded { lease, how }),
        (
            text(),
            any::<u64>(),
            text(),
            mode(),
            any::<u64>(),
            any::<Option<u64>>()
        )
            .prop_map(
                |(name, lease, owner, mode, token, waiter)| EventKind::Acquired {
                    name,
                    lease,
                    owner,
                    mode,
                    token,
                    waiter,
                }
            ),
        (text(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
            |(name, lease, waiter, position)| EventKind::Queued {
                name,
                lease,
                waiter,
                position
            }
        ),
        (text(), any::<u64>(), any::<u64>()).prop_map(|(name, lease, waiter)| {
            EventKind::WaitDropped {
                name,
                lease,
                waiter,
            }
        }),
        (text(), any::<u64>(), any::<u64>()).prop_map(|(name, lease, token)| EventKind::Released {
            name,
            lease,
            token
        }),
        (text(), any::<u64>(), any::<u64>(), lease_end()).prop_map(|(name, lease, token, how)| {
            EventKind::Expired {
                name,
                lease,
                token,
                how,
            }
        }),
        (text(), any::<u64>(), any::<u64>(), text()).prop_map(|(name, lease, token, by)| {
            EventKind::ForceReleased {
                name,
                lease,
                token,
                by,
            }
        }),
        (text(), any::<u64>()).prop_map(|(name, until_ms)| EventKind::Delayed { name, until_ms }),
    ];
    (any::<u64>(), kind).prop_map(|(revision, kind)| Event { revision, kind })
}

pub fn applied() -> impl Strategy<Value = Applied> {
    (
        any::<u64>(),
        prop::result::maybe_err(response(), lock_error()),
        prop::collection::vec(event(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(index, result, events, revision)| Applied {
            index,
            result,
            events,
            revision,
        })
}

// ----- openraft ----------------------------------------------------------

pub fn log_id() -> impl Strategy<Value = LogId<u64>> {
    (any::<u64>(), any::<u64>(), any::<u64>())
        .prop_map(|(term, node, index)| LogId::new(CommittedLeaderId::new(term, node), index))
}

pub fn vote() -> impl Strategy<Value = Vote<u64>> {
    (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(term, node, committed)| Vote {
        leader_id: LeaderId::new(term, node),
        committed,
    })
}

/// Memberships as openraft builds them: one or two voter sets (two during
/// a joint change), every voter a node, learners beside them.
pub fn membership() -> impl Strategy<Value = Membership<u64, BasicNode>> {
    (
        prop::collection::vec(prop::collection::btree_set(0u64..12, 1..4), 1..3),
        prop::collection::btree_map(0u64..16, "[a-z0-9.:]{0,15}", 0..4),
    )
        .prop_map(|(configs, learners)| {
            let voters: BTreeSet<u64> = configs.iter().flatten().copied().collect();
            let mut nodes: BTreeMap<u64, BasicNode> = voters
                .iter()
                .map(|id| (*id, BasicNode::new(format!("10.0.0.{id}:7001"))))
                .collect();
            for (id, addr) in learners {
                nodes.entry(id).or_insert(BasicNode { addr });
            }
            Membership::new(configs, nodes)
        })
}

pub fn stored_membership() -> impl Strategy<Value = StoredMembership<u64, BasicNode>> {
    prop_oneof![
        1 => Just(StoredMembership::default()),
        4 => (proptest::option::of(log_id()), membership())
            .prop_map(|(log_id, m)| StoredMembership::new(log_id, m)),
    ]
}

pub fn snapshot_meta() -> impl Strategy<Value = SnapshotMeta<u64, BasicNode>> {
    (proptest::option::of(log_id()), stored_membership(), text()).prop_map(
        |(last_log_id, last_membership, snapshot_id)| SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        },
    )
}

pub fn entry() -> impl Strategy<Value = RaftEntry> {
    let payload = prop_oneof![
        1 => Just(EntryPayload::<TypeConfig>::Blank),
        6 => request().prop_map(EntryPayload::Normal),
        1 => membership().prop_map(EntryPayload::Membership),
    ];
    (log_id(), payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
}

// ----- states reached by applying commands --------------------------------

const NAMES: [&str; 4] = ["a", "b", "c", "d/e"];
const IDENTITIES: [&str; 3] = ["", "team-a", "team-b"];

/// One abstract step, resolved against the state it is applied to so that
/// most steps hit real leases, holds and waiters.
#[derive(Debug, Clone)]
pub enum Op {
    Grant(u8),
    Revoke(u8),
    Expire(u8),
    Acquire {
        lease: u8,
        names: Vec<u8>,
        mode: u8,
        wait: bool,
        delay: bool,
        tagged: bool,
    },
    Release(u8, u8),
    Extend(u8, u8),
    Cancel(u8, u8),
    Force(u8),
    Tick,
    Member(u8),
    Epoch,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3).prop_map(Op::Grant),
        1 => any::<u8>().prop_map(Op::Revoke),
        2 => any::<u8>().prop_map(Op::Expire),
        6 => (
            any::<u8>(),
            prop::collection::vec(0u8..4, 1..3),
            0u8..4,
            any::<bool>(),
            prop::bool::weighted(0.3),
            any::<bool>()
        )
            .prop_map(|(lease, names, mode, wait, delay, tagged)| Op::Acquire {
                lease,
                names,
                mode,
                wait,
                delay,
                tagged
            }),
        3 => (any::<u8>(), 0u8..4).prop_map(|(l, n)| Op::Release(l, n)),
        1 => (any::<u8>(), 0u8..4).prop_map(|(l, n)| Op::Extend(l, n)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(l, w)| Op::Cancel(l, w)),
        1 => (0u8..4).prop_map(Op::Force),
        1 => Just(Op::Tick),
        1 => (0u8..3).prop_map(Op::Member),
        1 => Just(Op::Epoch),
    ]
}

fn pick(items: &[u64], selector: u8) -> u64 {
    if items.is_empty() {
        9_999
    } else {
        items[selector as usize % items.len()]
    }
}

pub fn resolve(state: &State, op: &Op) -> Command {
    let leases: Vec<u64> = state.leases().map(|l| l.id).collect();
    match op {
        Op::Grant(who) => Command::GrantLease {
            ttl_ms: 5_000,
            owner: format!("worker-{who}"),
            identity: IDENTITIES[*who as usize].to_string(),
            quota: IdentityLimits::default(),
        },
        Op::Revoke(sel) => Command::RevokeLease {
            lease: pick(&leases, *sel),
        },
        Op::Expire(sel) => Command::ExpireLeases {
            leases: vec![pick(&leases, *sel)],
        },
        Op::Acquire {
            lease,
            names,
            mode,
            wait,
            delay,
            tagged,
        } => Command::Acquire {
            lease: pick(&leases, *lease),
            locks: names
                .iter()
                .map(|n| LockSpec {
                    name: NAMES[*n as usize].to_string(),
                    mode: match (mode, n) {
                        (_, 2 | 3) => Mode::Semaphore { permits: 2 },
                        (0, _) => Mode::Shared,
                        _ => Mode::Exclusive,
                    },
                })
                .collect(),
            wait: *wait,
            reason: if *tagged {
                "nightly".into()
            } else {
                String::new()
            },
            metadata: if *tagged {
                BTreeMap::from([
                    ("host".to_string(), "h1".to_string()),
                    ("pid".to_string(), "42".to_string()),
                ])
            } else {
                Metadata::new()
            },
            lock_delay_ms: if *delay { 30_000 } else { 0 },
            quota: IdentityLimits::default(),
        },
        Op::Release(lease, name) => {
            let lease = pick(&leases, *lease);
            let name = NAMES[*name as usize];
            let token = state
                .lock(name)
                .and_then(|l| l.holds.get(&lease))
                .map_or(1, |h| h.token);
            Command::Release {
                lease,
                token,
                names: vec![name.to_string()],
            }
        }
        Op::Extend(lease, name) => {
            let lease = pick(&leases, *lease);
            let name = NAMES[*name as usize];
            let token = state
                .lock(name)
                .and_then(|l| l.holds.get(&lease))
                .map_or(1, |h| h.token);
            Command::Extend {
                lease,
                name: name.to_string(),
                token,
                ttl_ms: Some(6_000),
            }
        }
        Op::Cancel(lease, waiter) => {
            let lease = pick(&leases, *lease);
            let waits: Vec<u64> = state
                .lease(lease)
                .map(|l| l.waits.iter().copied().collect())
                .unwrap_or_default();
            let waiter = pick(&waits, *waiter);
            Command::CancelWait {
                lease,
                waiter,
                as_of: waiter,
            }
        }
        Op::Force(name) => Command::ForceRelease {
            name: NAMES[*name as usize].to_string(),
            lease: None,
            by: "admin".into(),
        },
        Op::Tick => Command::Tick,
        Op::Member(node) => {
            if state.cluster().id.is_empty() {
                Command::InitCluster {
                    cluster_id: "c-1".into(),
                }
            } else {
                Command::RecordMember {
                    node: u64::from(*node) + 1,
                    store_id: format!("store-{node}"),
                    client_addr: format!("10.0.0.{node}:7000"),
                }
            }
        }
        Op::Epoch => Command::RaiseTokenEpoch {
            at_least: state.token_epoch() + 1,
        },
    }
}

/// The state after applying `ops` from index 1, the clock advancing
/// `step_ms` per entry.
pub fn run(ops: &[(Op, u16)]) -> State {
    let mut state = State::new();
    let mut clock_ms = 0u64;
    for (i, (op, step_ms)) in ops.iter().enumerate() {
        clock_ms += u64::from(*step_ms);
        let request = Request::new(clock_ms, 1_700_000_000_000 + clock_ms, resolve(&state, op));
        state.apply(i as u64 + 1, &request);
    }
    state
}

pub fn ops() -> impl Strategy<Value = Vec<(Op, u16)>> {
    prop::collection::vec((op(), 0u16..1_000), 0..60)
}
