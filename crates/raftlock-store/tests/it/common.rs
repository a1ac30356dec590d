//! Helpers shared by the integration tests: entries, a store opener and a
//! generator of realistic raftlock commands (drawn with the test kit's
//! seeded generator).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership};
use raftlock_core::{Command, LockSpec, Mode, Request, State};
use raftlock_store::{Entry, LogId, LogStore, StateMachineStore, StoreOptions};
use raftlock_testkit::rng::Rng;

pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub fn normal(term: u64, index: u64, request: Request) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(request),
    }
}

pub fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

pub fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    }
}

pub fn options() -> StoreOptions {
    StoreOptions {
        cache_capacity_bytes: 8 * 1024 * 1024,
        ..StoreOptions::default()
    }
}

pub fn open(dir: &Path) -> (LogStore, StateMachineStore) {
    raftlock_store::open(dir, options()).expect("store opens")
}

/// Draws of [`Op`]s from the test kit's seeded generator.
pub trait DrawOp {
    fn op(&mut self) -> Op;
}

impl DrawOp for Rng {
    fn op(&mut self) -> Op {
        let x = self.next_u64();
        Op {
            kind: (x & 0xff) as u8,
            a: ((x >> 8) & 0xffff) as u32,
            b: ((x >> 24) & 0xffff) as u32,
            flag: (x >> 40) & 1 == 1,
        }
    }
}

/// An abstract command; [`request`] turns it into a real one against the
/// current state (existing leases, holds, waiters), so that most commands
/// do something and some are deliberately wrong.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub kind: u8,
    pub a: u32,
    pub b: u32,
    pub flag: bool,
}

const NAMES: [&str; 5] = ["jobs/a", "jobs/b", "jobs/c", "db", "sem/x"];

fn mode_for(name: &str, flag: bool) -> Mode {
    if name.starts_with("sem/") {
        Mode::Semaphore { permits: 2 }
    } else if flag {
        Mode::Shared
    } else {
        Mode::Exclusive
    }
}

/// Builds a request for `op`; `cluster_ms` is the leader's clock, advanced
/// here so that lock-delays end.
pub fn request(state: &State, op: Op, cluster_ms: &mut u64) -> Request {
    *cluster_ms += u64::from(op.b % 700);
    let leases: Vec<u64> = state.leases().map(|l| l.id).collect();
    let lease = |x: u32| -> u64 {
        if leases.is_empty() || x.is_multiple_of(13) {
            u64::from(x % 40)
        } else {
            leases[x as usize % leases.len()]
        }
    };
    let holds: Vec<(String, u64, u64)> = state
        .locks_with_prefix("")
        .flat_map(|l| {
            l.holds
                .values()
                .map(|h| (l.name.to_string(), h.lease, h.token))
        })
        .collect();
    let command = match op.kind % 10 {
        0 | 1 => Command::GrantLease {
            ttl_ms: 1_000 + u64::from(op.a % 5_000),
            owner: format!("owner-{}", op.b % 3),
            identity: String::new(),
            quota: Default::default(),
        },
        2..=4 => {
            let first = NAMES[op.a as usize % NAMES.len()];
            let second = NAMES[op.b as usize % NAMES.len()];
            let mut locks = vec![LockSpec {
                name: first.to_string(),
                mode: mode_for(first, op.flag),
            }];
            if op.b.is_multiple_of(3) && second != first {
                locks.push(LockSpec {
                    name: second.to_string(),
                    mode: mode_for(second, op.flag),
                });
            }
            let mut metadata = BTreeMap::new();
            if op.a.is_multiple_of(2) {
                metadata.insert("k".to_string(), format!("v{}", op.b));
            }
            Command::Acquire {
                lease: lease(op.a),
                locks,
                wait: !op.a.is_multiple_of(3),
                reason: "test".to_string(),
                metadata,
                lock_delay_ms: if op.b.is_multiple_of(4) { 500 } else { 0 },
                quota: Default::default(),
            }
        }
        5 | 6 => match holds.get(op.a as usize % holds.len().max(1)) {
            Some((name, lease, token)) => Command::Release {
                lease: *lease,
                token: if op.b.is_multiple_of(7) {
                    token + 1
                } else {
                    *token
                },
                names: vec![name.clone()],
            },
            None => Command::Release {
                lease: lease(op.a),
                token: u64::from(op.b),
                names: vec![NAMES[op.b as usize % NAMES.len()].to_string()],
            },
        },
        7 if op.flag => Command::RevokeLease { lease: lease(op.a) },
        7 => Command::ExpireLeases {
            leases: vec![lease(op.a), lease(op.b)],
        },
        8 => {
            let waiters: Vec<(u64, u64)> = state
                .leases()
                .flat_map(|l| l.waits.iter().map(move |w| (l.id, *w)))
                .collect();
            // Holds granted to a queued request: cancelling one of those
            // releases what it was granted.
            let granted: Vec<(u64, u64)> = state
                .locks_with_prefix("")
                .flat_map(|l| {
                    l.holds
                        .values()
                        .filter_map(|h| Some((h.lease, h.from_waiter?)))
                })
                .collect();
            if op.b.is_multiple_of(3) && !granted.is_empty() {
                let (lease, waiter) = granted[op.a as usize % granted.len()];
                return Request::new(
                    *cluster_ms,
                    1_700_000_000_000 + *cluster_ms,
                    Command::CancelWait {
                        lease,
                        waiter,
                        as_of: waiter,
                    },
                );
            }
            match (waiters.get(op.a as usize % waiters.len().max(1)), op.flag) {
                (Some((lease, waiter)), false) => Command::CancelWait {
                    lease: *lease,
                    waiter: *waiter,
                    as_of: *waiter,
                },
                _ => match holds.get(op.b as usize % holds.len().max(1)) {
                    Some((name, lease, token)) => Command::Extend {
                        lease: *lease,
                        name: name.clone(),
                        token: *token,
                        ttl_ms: op.flag.then_some(2_000),
                    },
                    None => Command::Tick,
                },
            }
        }
        _ if op.flag => Command::ForceRelease {
            name: NAMES[op.a as usize % NAMES.len()].to_string(),
            lease: None,
            by: String::new(),
        },
        _ => Command::Tick,
    };
    Request::new(*cluster_ms, 1_700_000_000_000 + *cluster_ms, command)
}

/// Replays `entries` on a fresh state, the way raftlock-core defines it.
pub fn replay(entries: &[Entry]) -> State {
    let mut state = State::new();
    for entry in entries {
        match &entry.payload {
            EntryPayload::Normal(request) => {
                state.apply(entry.log_id.index, request);
            }
            _ if entry.log_id.index == 0 => {}
            _ => {
                state.apply_noop(entry.log_id.index);
            }
        }
    }
    state
}
