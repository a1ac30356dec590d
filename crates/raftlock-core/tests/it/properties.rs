//! Property tests over random command sequences. Operations are generated
//! as abstract choices and resolved against the current state, so most of
//! them hit real leases, holds and waiters.
//!
//! Cases per property: 1024 by default (PROPTEST_CASES overrides).

use std::collections::BTreeMap;

use proptest::prelude::*;
use raftlock_core::{
    Applied, BatchPlan, Command, EventKind, Header, IdentityLimits, LockSpec, Metadata, Mode,
    Record, Request, Response, State, check_invariants, decode,
};

const NAMES: [&str; 4] = ["a", "b", "c", "d/e"];

/// Leases are granted by these identities ("" is a caller with auth off);
/// the named ones carry [`QUOTA`].
const IDENTITIES: [&str; 3] = ["", "team-a", "team-b"];
const QUOTA: IdentityLimits = IdentityLimits {
    max_leases: Some(3),
    max_holds: Some(4),
    max_waiters: Some(2),
};

fn quota_of(identity: &str) -> IdentityLimits {
    if identity.is_empty() {
        IdentityLimits::default()
    } else {
        QUOTA
    }
}

#[derive(Debug, Clone)]
enum Op {
    Grant(u8),
    Revoke(u8),
    Expire(Vec<u8>),
    Acquire {
        lease: u8,
        names: Vec<u8>,
        mode: u8,
        wait: bool,
        delay: bool,
    },
    Release {
        lease: u8,
        name: u8,
        right_token: bool,
    },
    Extend {
        lease: u8,
        name: u8,
    },
    Cancel {
        lease: u8,
        waiter: u8,
    },
    Force {
        name: u8,
        one: bool,
    },
    Tick,
    /// Several ops as one batch entry: those the leader's batch plan would
    /// admit together (resolved against the state before the entry).
    Batch(Vec<Op>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => leaf_op(),
        2 => prop::collection::vec(leaf_op(), 2..6).prop_map(Op::Batch),
    ]
}

fn leaf_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..3).prop_map(Op::Grant),
        1 => any::<u8>().prop_map(Op::Revoke),
        1 => prop::collection::vec(any::<u8>(), 1..3).prop_map(Op::Expire),
        6 => (any::<u8>(), prop::collection::vec(0u8..4, 1..3), 0u8..4, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(lease, names, mode, wait, delay)| Op::Acquire { lease, names, mode, wait, delay }),
        4 => (any::<u8>(), 0u8..4, prop::bool::weighted(0.9))
            .prop_map(|(lease, name, right_token)| Op::Release { lease, name, right_token }),
        1 => (any::<u8>(), 0u8..4).prop_map(|(lease, name)| Op::Extend { lease, name }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(lease, waiter)| Op::Cancel { lease, waiter }),
        1 => (0u8..4, any::<bool>()).prop_map(|(name, one)| Op::Force { name, one }),
        1 => Just(Op::Tick),
    ]
}

fn pick<T: Copy>(items: &[T], selector: u8) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        Some(items[selector as usize % items.len()])
    }
}

/// Turn an abstract op into a concrete command against the current state.
fn resolve(state: &State, op: &Op) -> Command {
    let leases: Vec<u64> = state.leases().map(|l| l.id).collect();
    // A lease id that does not exist, to exercise the error paths too.
    let lease_or_ghost = |sel: u8| pick(&leases, sel).unwrap_or(9_999);
    match op {
        Op::Grant(who) => {
            let identity = IDENTITIES[*who as usize];
            Command::GrantLease {
                ttl_ms: 5_000,
                owner: "p".into(),
                identity: identity.to_string(),
                quota: quota_of(identity),
            }
        }
        Op::Revoke(sel) => Command::RevokeLease {
            lease: lease_or_ghost(*sel),
        },
        Op::Expire(sels) => Command::ExpireLeases {
            leases: sels.iter().map(|s| lease_or_ghost(*s)).collect(),
        },
        Op::Acquire {
            lease,
            names,
            mode,
            wait,
            delay,
        } => Command::Acquire {
            quota: state
                .lease(lease_or_ghost(*lease))
                .map_or_else(IdentityLimits::default, |l| quota_of(&l.identity)),
            lease: lease_or_ghost(*lease),
            locks: names
                .iter()
                .map(|n| LockSpec {
                    name: NAMES[*n as usize].to_string(),
                    mode: match (mode, n) {
                        // Names c and d/e are semaphores, a and b r/w locks,
                        // except now and then to exercise kind conflicts.
                        (3, _) => Mode::Semaphore { permits: 3 },
                        (_, 2 | 3) => Mode::Semaphore { permits: 2 },
                        (0, _) => Mode::Shared,
                        _ => Mode::Exclusive,
                    },
                })
                .collect(),
            wait: *wait,
            reason: String::new(),
            metadata: Metadata::new(),
            lock_delay_ms: if *delay { 1_500 } else { 0 },
        },
        Op::Release {
            lease,
            name,
            right_token,
        } => {
            let lease = lease_or_ghost(*lease);
            let name = NAMES[*name as usize];
            let token = state
                .lock(name)
                .and_then(|l| l.holds.get(&lease))
                .map(|h| if *right_token { h.token } else { h.token + 1 })
                .unwrap_or(1);
            Command::Release {
                lease,
                token,
                names: vec![name.to_string()],
            }
        }
        Op::Extend { lease, name } => {
            let lease = lease_or_ghost(*lease);
            let name = NAMES[*name as usize];
            let token = state
                .lock(name)
                .and_then(|l| l.holds.get(&lease))
                .map_or(1, |h| h.token);
            Command::Extend {
                lease,
                name: name.to_string(),
                token,
                ttl_ms: None,
            }
        }
        Op::Cancel { lease, waiter } => {
            let lease = lease_or_ghost(*lease);
            let waits: Vec<u64> = state
                .lease(lease)
                .map(|l| l.waits.iter().copied().collect())
                .unwrap_or_default();
            // The cancel is for the Acquire that queued the request (its id);
            // a retry of it applied since makes the cancel stale.
            let waiter = pick(&waits, *waiter).unwrap_or(*waiter as u64);
            Command::CancelWait {
                lease,
                waiter,
                as_of: waiter,
            }
        }
        Op::Force { name, one } => {
            let name = NAMES[*name as usize];
            let holder = state
                .lock(name)
                .and_then(|l| l.holds.keys().next().copied());
            Command::ForceRelease {
                name: name.to_string(),
                lease: if *one { holder } else { None },
                by: String::new(),
            }
        }
        Op::Tick => Command::Tick,
        Op::Batch(ops) => {
            let mut plan = BatchPlan::default();
            let mut commands: Vec<Command> = ops
                .iter()
                .map(|o| resolve(state, o))
                .filter(|c| plan.admit(c))
                .collect();
            match commands.len() {
                0 => Command::Tick,
                1 => commands.remove(0),
                _ => Command::Batch { commands },
            }
        }
    }
}

/// Run ops from index 1 with a clock that advances `step_ms` per entry.
fn run(ops: &[(Op, u16)]) -> (State, Vec<(u64, Request)>, Vec<Applied>) {
    let mut state = State::new();
    let mut log = Vec::new();
    let mut applied = Vec::new();
    let mut clock_ms = 0u64;
    for (i, (op, step_ms)) in ops.iter().enumerate() {
        let index = i as u64 + 1;
        clock_ms += *step_ms as u64;
        let request = Request::new(clock_ms, 1_000 + clock_ms, resolve(&state, op));
        applied.push(state.apply(index, &request));
        log.push((index, request));
    }
    (state, log, applied)
}

fn ops() -> impl Strategy<Value = Vec<(Op, u16)>> {
    prop::collection::vec((op(), 0u16..1_000), 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1024)
    ))]

    /// Invariants hold after every step; per-identity limits are never
    /// exceeded; tokens never decrease; on each name
    /// an exclusive grant's token is above every earlier token on that name;
    /// a granted waiter never overtakes an earlier incompatible waiter.
    /// A token epoch raise at a random step changes none of it: tokens,
    /// ids and revisions are the granting entry's stamp.
    #[test]
    fn invariants_tokens_and_fifo_hold_after_every_step(
        ops in ops(),
        raise_at in any::<prop::sample::Index>(),
        raise_to in 0u16..4,
    ) {
        let mut state = State::new();
        let mut clock_ms = 0u64;
        let mut last_token = 0u64;
        let mut max_token_by_name: BTreeMap<String, u64> = BTreeMap::new();
        let raise_at = raise_at.index(ops.len());
        for (i, (op, step_ms)) in ops.iter().enumerate() {
            let index = i as u64 + 1;
            clock_ms += *step_ms as u64;
            let before = state.clone();
            let command = if i == raise_at {
                Command::RaiseTokenEpoch { at_least: raise_to }
            } else {
                resolve(&state, op)
            };
            let request = Request::new(clock_ms, 0, command);
            let applied = state.apply(index, &request);
            prop_assert_eq!(check_invariants(&state), Ok(()));
            // Per-identity limits hold exactly: they are checked in apply.
            for identity in &IDENTITIES[1..] {
                let usage = state.identity_usage(identity);
                prop_assert!(usage.leases <= 3 && usage.holds <= 4 && usage.waiters <= 2,
                    "{} uses {:?}", identity, usage);
            }
            let mut grants_here: BTreeMap<&str, Vec<Mode>> = BTreeMap::new();
            for event in &applied.events {
                if let EventKind::Acquired { name, mode, .. } = &event.kind {
                    grants_here.entry(name).or_default().push(*mode);
                }
            }
            for (name, modes) in &grants_here {
                prop_assert!(
                    modes.len() == 1 || !modes.contains(&Mode::Exclusive),
                    "entry {} granted {:?} on {}", index, modes, name
                );
            }
            let stamp = raftlock_core::stamp(state.token_epoch(), index);
            prop_assert_eq!(applied.revision, stamp);
            for event in &applied.events {
                prop_assert_eq!(event.revision, stamp);
                if let EventKind::Acquired { name, mode, token, waiter, .. } = &event.kind {
                    prop_assert_eq!(*token, stamp, "token = stamp of the granting entry");
                    prop_assert!(*token >= last_token);
                    last_token = *token;
                    let earlier = max_token_by_name.get(name).copied().unwrap_or(0);
                    if *mode == Mode::Exclusive {
                        prop_assert!(*token > earlier, "exclusive token {} not above {} on {}", token, earlier, name);
                    }
                    max_token_by_name.insert(name.clone(), earlier.max(*token));
                    if let Some(w) = waiter {
                        // Earlier waiters still queued on this name must be
                        // compatible with this grant (a shared run).
                        if let Some(lock) = before.lock(name) {
                            for other in lock.queue.iter().filter(|o| *o < w) {
                                let still_waiting = state.lock(name).is_some_and(|l| l.queue.contains(other));
                                if still_waiting {
                                    let other_mode = before.waiter(*other).and_then(|o| o.mode_on(name));
                                    prop_assert!(
                                        *mode != Mode::Exclusive && other_mode != Some(Mode::Exclusive),
                                        "waiter {} overtook incompatible waiter {} on {}", w, other, name
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Replaying the same log gives a byte-identical state and identical replies.
    #[test]
    fn replaying_the_log_gives_byte_identical_state(ops in ops()) {
        let (state, log, applied) = run(&ops);
        let mut replay = State::new();
        for ((index, request), original) in log.iter().zip(&applied) {
            let again = replay.apply(*index, request);
            prop_assert_eq!(&again, original);
        }
        prop_assert_eq!(replay.to_bytes(), state.to_bytes());
    }

    /// A snapshot taken at any point restores to an identical state that
    /// continues identically.
    #[test]
    fn snapshot_then_restore_continues_identically(ops in ops(), cut in any::<prop::sample::Index>()) {
        let (_, log, applied) = run(&ops);
        let cut = cut.index(log.len() + 1);
        let mut original = State::new();
        for (index, request) in &log[..cut] {
            original.apply(*index, request);
        }
        let mut restored = State::from_bytes(&original.to_bytes()).expect("snapshot restores");
        prop_assert_eq!(&restored, &original);
        prop_assert_eq!(restored.next_delay_end_ms(), original.next_delay_end_ms());
        for ((index, request), expected) in log[cut..].iter().zip(&applied[cut..]) {
            let a = original.apply(*index, request);
            let b = restored.apply(*index, request);
            prop_assert_eq!(&a, expected);
            prop_assert_eq!(&b, expected);
        }
        prop_assert_eq!(restored.to_bytes(), original.to_bytes());
    }

    /// A backup restored into a new cluster with its epoch raised out-grants
    /// every continuation of the original: whatever the original went on
    /// to grant after the backup (reusing the same log indexes), every
    /// token, lease id and waiter id the restored one grants on its own log
    /// is above all of them, and the restored holds keep their tokens.
    #[test]
    fn a_restored_state_with_a_raised_epoch_outgrants_every_continuation(
        ops in ops(),
        cut in any::<prop::sample::Index>(),
        other in ops(),
    ) {
        let (_, log, applied) = run(&ops);
        let cut = cut.index(log.len() + 1);
        let mut backup = State::new();
        for (index, request) in &log[..cut] {
            backup.apply(*index, request);
        }
        // Everything the original handed out, before and after the backup.
        let mut old_max = 0u64;
        for a in &applied {
            old_max = old_max.max(a.revision);
            for e in &a.events {
                old_max = old_max.max(e.revision);
            }
        }
        let epoch = backup.token_epoch() + 1;
        let mut restored = State::from_bytes(&backup.to_bytes())
            .expect("backup decodes")
            .into_new_cluster("restored".into(), epoch);
        for lock in backup.locks_with_prefix("") {
            prop_assert_eq!(restored.lock(&lock.name), Some(lock), "restored holds keep their tokens");
        }
        let mut clock_ms = backup.cluster_ms();
        for (i, (op, step_ms)) in other.iter().enumerate() {
            let index = cut as u64 + 1 + i as u64;
            clock_ms += *step_ms as u64;
            let request = Request::new(clock_ms, 0, resolve(&restored, op));
            let a = restored.apply(index, &request);
            prop_assert_eq!(check_invariants(&restored), Ok(()));
            prop_assert!(a.revision > old_max);
            let mut handed_out = Vec::new();
            match &a.result {
                Ok(Response::LeaseGranted { lease, .. }) => handed_out.push(*lease),
                Ok(Response::Queued { waiter, retry: false, .. }) => handed_out.push(*waiter),
                Ok(Response::Acquired { token, retry: false, .. }) => handed_out.push(*token),
                _ => {}
            }
            for e in &a.events {
                if let EventKind::Acquired { token, .. } = &e.kind {
                    handed_out.push(*token);
                }
            }
            for value in handed_out {
                prop_assert!(value > old_max, "granted {} at or below the original's {}", value, old_max);
            }
        }
    }

    /// The records named by `take_dirty` are enough to keep a stored copy
    /// equal to the state (what raftlock-store relies on).
    #[test]
    fn dirty_records_keep_an_incremental_copy_exact(ops in ops()) {
        let mut state = State::new();
        let mut stored: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut clock_ms = 0u64;
        for (i, (op, step_ms)) in ops.iter().enumerate() {
            clock_ms += *step_ms as u64;
            let request = Request::new(clock_ms, 0, resolve(&state, op));
            state.apply(i as u64 + 1, &request);
            let dirty = state.take_dirty();
            for name in dirty.locks {
                let key = [b"L".as_slice(), name.as_bytes()].concat();
                match state.lock_bytes(&name) { Some(v) => stored.insert(key, v), None => stored.remove(&key) };
            }
            for id in dirty.leases {
                let key = [b"S".as_slice(), &id.to_be_bytes()].concat();
                match state.lease_bytes(id) { Some(v) => stored.insert(key, v), None => stored.remove(&key) };
            }
            for id in dirty.waiters {
                let key = [b"W".as_slice(), &id.to_be_bytes()].concat();
                match state.waiter_bytes(id) { Some(v) => stored.insert(key, v), None => stored.remove(&key) };
            }
            let header: Header = state.header();
            let records: Vec<Record> = stored
                .values()
                .map(|v| decode::<Record>("record", v).expect("stored record decodes"))
                .collect();
            let rebuilt = State::from_records(header, records).expect("records rebuild a valid state");
            prop_assert_eq!(&rebuilt, &state);
        }
    }
}

#[test]
fn corrupt_snapshot_bytes_are_an_error_not_a_panic() {
    let (state, _, _) = run(&[
        (Op::Grant(1), 0),
        (
            Op::Acquire {
                lease: 0,
                names: vec![0],
                mode: 1,
                wait: false,
                delay: false,
            },
            0,
        ),
    ]);
    let bytes = state.to_bytes();
    assert!(State::from_bytes(&bytes[..bytes.len() - 3]).is_err());
    assert!(State::from_bytes(&[0xff; 16]).is_err());
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(State::from_bytes(&extra).is_err());
}
