//! Generators of raftlock-core's commands (proptest), one copy for every
//! crate whose tests encode or decode them: arbitrary values of every
//! variant (not only valid ones: an encoding must carry whatever the types
//! can hold), text sometimes not ASCII, batches nested as deep as asked.
//! Feature `strategies`.

use proptest::prelude::*;
use raftlock_core::{Command, IdentityLimits, Limits, LockSpec, Metadata, Mode, Request};

/// Short text, sometimes not ASCII (protobuf strings are UTF-8 checked).
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z/._-]{0,12}",
        1 => "\\PC{0,6}",
    ]
}

pub fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Exclusive),
        Just(Mode::Shared),
        any::<u32>().prop_map(|permits| Mode::Semaphore { permits }),
    ]
}

pub fn metadata() -> impl Strategy<Value = Metadata> {
    prop::collection::btree_map(text(), text(), 0..4)
}

pub fn quota() -> impl Strategy<Value = IdentityLimits> {
    (
        any::<Option<u32>>(),
        any::<Option<u32>>(),
        any::<Option<u32>>(),
    )
        .prop_map(|(max_leases, max_holds, max_waiters)| IdentityLimits {
            max_leases,
            max_holds,
            max_waiters,
        })
}

pub fn limits() -> impl Strategy<Value = Limits> {
    (any::<[u32; 4]>(), any::<[u64; 3]>(), any::<[u32; 5]>()).prop_map(|(a, b, c)| Limits {
        max_name_bytes: a[0],
        max_owner_bytes: a[1],
        max_reason_bytes: a[2],
        max_metadata_bytes: a[3],
        min_ttl_ms: b[0],
        max_ttl_ms: b[1],
        max_lock_delay_ms: b[2],
        max_waiters_per_lock: c[0],
        max_holds_per_lease: c[1],
        max_leases: c[2],
        max_locks_per_request: c[3],
        max_permits: c[4],
    })
}

fn spec() -> impl Strategy<Value = LockSpec> {
    (text(), mode()).prop_map(|(name, mode)| LockSpec { name, mode })
}

/// Every command but `Batch`.
pub fn leaf_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (any::<u64>(), text(), text(), quota()).prop_map(|(ttl_ms, owner, identity, quota)| {
            Command::GrantLease {
                ttl_ms,
                owner,
                identity,
                quota,
            }
        }),
        any::<u64>().prop_map(|lease| Command::RevokeLease { lease }),
        prop::collection::vec(any::<u64>(), 0..4)
            .prop_map(|leases| Command::ExpireLeases { leases }),
        (
            any::<u64>(),
            prop::collection::vec(spec(), 0..4),
            any::<bool>(),
            text(),
            metadata(),
            any::<u64>(),
            quota()
        )
            .prop_map(
                |(lease, locks, wait, reason, metadata, lock_delay_ms, quota)| {
                    Command::Acquire {
                        lease,
                        locks,
                        wait,
                        reason,
                        metadata,
                        lock_delay_ms,
                        quota,
                    }
                }
            ),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(text(), 0..3)
        )
            .prop_map(|(lease, token, names)| Command::Release {
                lease,
                token,
                names
            }),
        (any::<u64>(), text(), any::<u64>(), any::<Option<u64>>()).prop_map(
            |(lease, name, token, ttl_ms)| Command::Extend {
                lease,
                name,
                token,
                ttl_ms
            }
        ),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(lease, waiter, as_of)| {
            Command::CancelWait {
                lease,
                waiter,
                as_of,
            }
        }),
        (text(), any::<Option<u64>>(), text())
            .prop_map(|(name, lease, by)| Command::ForceRelease { name, lease, by }),
        Just(Command::Tick),
        limits().prop_map(|limits| Command::SetLimits { limits }),
        text().prop_map(|cluster_id| Command::InitCluster { cluster_id }),
        (any::<u64>(), text(), text()).prop_map(|(node, store_id, client_addr)| {
            Command::RecordMember {
                node,
                store_id,
                client_addr,
            }
        }),
        any::<u64>().prop_map(|node| Command::ForgetMember { node }),
        any::<u16>().prop_map(|at_least| Command::RaiseTokenEpoch { at_least }),
        (text(), any::<u64>(), text(), text()).prop_map(
            |(cluster_id, node, store_id, client_addr)| Command::ForceNewCluster {
                cluster_id,
                node,
                store_id,
                client_addr,
            }
        ),
    ]
}

/// Any command, batches nested up to `max_nesting` deep (raftlock-codec's
/// `MAX_BATCH_NESTING` is the most the protobuf form carries).
pub fn command(max_nesting: u32) -> impl Strategy<Value = Command> {
    leaf_command().prop_recursive(max_nesting, 48, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(|commands| Command::Batch { commands })
    })
}

/// A log entry's payload: [`command`] with the leader's clocks.
pub fn request(max_nesting: u32) -> impl Strategy<Value = Request> {
    (any::<u64>(), any::<u64>(), command(max_nesting)).prop_map(|(cluster_ms, wall_ms, command)| {
        Request {
            cluster_ms,
            wall_ms,
            command,
        }
    })
}
