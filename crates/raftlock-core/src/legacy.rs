//! Frozen shapes of what earlier on-disk formats stored, so a store written
//! by an older build is migrated, never guessed at: the store picks the
//! decoder by the format version it finds (bincode has no field names, so
//! old bytes read with a newer struct can decode into garbage instead of
//! failing). Only the types whose encoding changed are frozen here; the
//! records nested in them (locks, leases, waiters, limits, counters) encode
//! as they did.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::limits::Limits;
use crate::state::{DecodeError, Header, Record, State, decode};
use crate::types::{ClusterIdentity, Counters, Lease, LeaseId, Lock, Waiter, WaiterId};

/// `Header` as store format 3 wrote it (no token epoch).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HeaderV3 {
    pub last_applied: u64,
    pub cluster_ms: u64,
    pub limits: Limits,
    pub counters: Counters,
    pub cluster: ClusterIdentity,
}

impl From<HeaderV3> for Header {
    /// Format 3 had no epoch: its stamps were indexes, which epoch 0 keeps.
    fn from(h: HeaderV3) -> Header {
        Header {
            last_applied: h.last_applied,
            cluster_ms: h.cluster_ms,
            limits: h.limits,
            counters: h.counters,
            cluster: h.cluster,
            token_epoch: 0,
        }
    }
}

/// `State` as snapshot format 2 (store format 3) encoded it.
#[derive(Debug, Deserialize)]
struct StateV3 {
    last_applied: u64,
    cluster_ms: u64,
    limits: Limits,
    counters: Counters,
    cluster: ClusterIdentity,
    leases: BTreeMap<LeaseId, Lease>,
    locks: BTreeMap<String, Lock>,
    waiters: BTreeMap<WaiterId, Waiter>,
}

/// Decodes state bytes written by format 3 (`State::to_bytes` of that
/// build) into today's state, in token epoch 0, with its invariants checked.
pub fn state_from_v3_bytes(bytes: &[u8]) -> Result<State, DecodeError> {
    let old: StateV3 = decode("state (format 3)", bytes)?;
    let header = HeaderV3 {
        last_applied: old.last_applied,
        cluster_ms: old.cluster_ms,
        limits: old.limits,
        counters: old.counters,
        cluster: old.cluster,
    };
    let records = (old.locks.into_values().map(Record::Lock))
        .chain(old.leases.into_values().map(Record::Lease))
        .chain(old.waiters.into_values().map(Record::Waiter));
    State::from_records(header.into(), records)
}
