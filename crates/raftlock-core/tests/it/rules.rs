//! One test per rule of the state machine (docs/safety.md).

use crate::common::{S, Sm, X, acquire};
use raftlock_core::{
    Command, EventKind, LeaseEnd, Limit, Limits, LockError, LockKind, LockSpec, Metadata, Mode,
    Request, Response, State,
};

fn sem(permits: u32) -> Mode {
    Mode::Semaphore { permits }
}

// ----- leases -----------------------------------------------------------

#[test]
fn lease_id_is_the_index_of_the_granting_entry() {
    let mut sm = Sm::new();
    sm.apply(Command::Tick);
    let lease = sm.lease();
    assert_eq!(lease, 2);
    let record = sm.state.lease(lease).unwrap();
    assert_eq!(record.ttl_ms, 10_000);
    assert_eq!(&*record.owner, "tester");
}

#[test]
fn lease_ttl_outside_one_second_to_one_day_is_rejected() {
    let mut sm = Sm::new();
    for ttl_ms in [0, 999, 24 * 3600 * 1000 + 1] {
        let err = sm.err(Command::GrantLease {
            ttl_ms,
            owner: "x".into(),
            identity: String::new(),
            quota: Default::default(),
        });
        assert!(matches!(err, LockError::TtlOutOfRange { .. }), "{err:?}");
    }
    sm.lease_with("a", 1_000);
    sm.lease_with("b", 24 * 3600 * 1000);
}

#[test]
fn operations_on_an_unknown_lease_are_rejected() {
    let mut sm = Sm::new();
    let err = sm.err(acquire(77, &[("a", X)], false));
    assert_eq!(err, LockError::LeaseNotFound { lease: 77 });
    let err = sm.err(Command::RevokeLease { lease: 77 });
    assert_eq!(err, LockError::LeaseNotFound { lease: 77 });
}

#[test]
fn revoking_a_lease_releases_its_holds_drops_its_waits_and_hands_over_in_the_same_entry() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    sm.take(a, "x");
    let b_wait = sm.wait(b, &[("x", X)]).unwrap();
    sm.take(b, "y");
    sm.wait(a, &[("y", X)]).unwrap();
    sm.wait(c, &[("y", X)]).unwrap();
    let revoke = sm.apply(Command::RevokeLease { lease: b });
    let index = revoke.index;
    // b's wait on x is gone, its hold on y went to the next waiter: a.
    assert!(sm.state.waiter(b_wait).is_none());
    assert_eq!(sm.holders("x"), vec![a]);
    assert_eq!(sm.holders("y"), vec![a]);
    assert_eq!(sm.token_of("y", a), index);
    assert!(sm.state.lease(b).is_none());
    assert!(revoke.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::LeaseEnded { lease, how: LeaseEnd::Revoked } if *lease == b
    )));
}

#[test]
fn expiring_a_batch_skips_unknown_and_duplicate_ids() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    sm.take(a, "x");
    let next = sm.wait(b, &[("x", X)]);
    assert!(next.is_some());
    let r = sm.ok(Command::ExpireLeases {
        leases: vec![a, 999, a],
    });
    assert_eq!(r, Response::LeasesExpired { leases: vec![a] });
    assert_eq!(sm.holders("x"), vec![b]);
    // A retried proposal of the same batch changes nothing.
    let before = sm.state.clone();
    let r = sm.ok(Command::ExpireLeases { leases: vec![a] });
    assert_eq!(r, Response::LeasesExpired { leases: vec![] });
    assert_eq!(sm.state.lock("x"), before.lock("x"));
}

#[test]
fn total_leases_are_limited() {
    let mut sm = Sm::new();
    let limits = Limits {
        max_leases: 2,
        ..Limits::default()
    };
    sm.ok(Command::SetLimits { limits });
    sm.lease();
    sm.lease();
    let err = sm.err(Command::GrantLease {
        ttl_ms: 5_000,
        owner: "x".into(),
        identity: String::new(),
        quota: Default::default(),
    });
    assert_eq!(
        err,
        LockError::LimitExceeded {
            limit: Limit::Leases,
            max: 2
        }
    );
}

// ----- exclusive --------------------------------------------------------

#[test]
fn exclusive_lock_has_one_holder_and_a_try_by_another_lease_is_busy() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let token = sm.take(a, "jobs/nightly");
    assert_eq!(token, sm.index, "token = index of the granting entry");
    let err = sm.err(acquire(b, &[("jobs/nightly", X)], false));
    assert!(
        matches!(err, LockError::Busy { ref name, holders: 1, waiters: 0, delayed_until_ms: None } if name == "jobs/nightly"),
        "{err:?}"
    );
    assert_eq!(sm.holders("jobs/nightly"), vec![a]);
}

#[test]
fn acquiring_again_with_the_same_lease_returns_the_existing_hold() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let token = sm.take(a, "x");
    sm.apply(Command::Tick);
    let r = sm.ok(acquire(a, &[("x", X)], true));
    match r {
        Response::Acquired {
            token: t,
            retry: true,
            holds,
        } => {
            assert_eq!(t, token);
            assert_eq!(holds.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    let hold = &sm.state.lock("x").unwrap().holds[&a];
    assert_eq!(hold.acquisitions, 2);
    assert_eq!(sm.state.lock("x").unwrap().holds.len(), 1);
}

#[test]
fn acquiring_a_held_lock_in_another_mode_is_rejected() {
    let mut sm = Sm::new();
    let a = sm.lease();
    sm.take_mode(a, "x", S);
    let err = sm.err(acquire(a, &[("x", X)], false));
    assert!(
        matches!(
            err,
            LockError::HeldInOtherMode {
                held: Mode::Shared,
                requested: Mode::Exclusive,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn idle_locks_disappear_after_release() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let t = sm.take(a, "x");
    sm.release(a, "x", t);
    assert!(sm.state.lock("x").is_none());
    assert!(sm.state.lease(a).unwrap().holds.is_empty());
}

// ----- release and extend -----------------------------------------------

#[test]
fn release_by_stale_token_is_rejected() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let t = sm.take(a, "x");
    let err = sm.err(Command::Release {
        lease: a,
        token: t - 1,
        names: vec!["x".into()],
    });
    assert_eq!(
        err,
        LockError::StaleToken {
            name: "x".into(),
            lease: a,
            presented: t - 1,
            current: t
        }
    );
    assert_eq!(sm.holders("x"), vec![a]);
}

#[test]
fn release_by_a_lease_that_does_not_hold_is_rejected() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let t = sm.take(a, "x");
    let err = sm.err(Command::Release {
        lease: b,
        token: t,
        names: vec!["x".into()],
    });
    assert_eq!(
        err,
        LockError::NotHolder {
            name: "x".into(),
            lease: b
        }
    );
    let err = sm.err(Command::Release {
        lease: a,
        token: t,
        names: vec!["nope".into()],
    });
    assert!(matches!(err, LockError::NotHolder { .. }));
}

#[test]
fn release_of_several_names_is_all_or_none() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let t = match sm.ok(acquire(a, &[("x", X), ("y", X)], false)) {
        Response::Acquired { token, .. } => token,
        other => panic!("{other:?}"),
    };
    let err = sm.err(Command::Release {
        lease: a,
        token: t,
        names: vec!["x".into(), "z".into()],
    });
    assert!(matches!(err, LockError::NotHolder { .. }));
    assert_eq!(sm.holders("x"), vec![a]);
    sm.ok(Command::Release {
        lease: a,
        token: t,
        names: vec!["y".into(), "x".into()],
    });
    assert!(sm.state.lock("x").is_none() && sm.state.lock("y").is_none());
}

#[test]
fn extend_by_the_holder_counts_and_may_change_the_lease_ttl() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let t = sm.take(a, "x");
    let r = sm.ok(Command::Extend {
        lease: a,
        name: "x".into(),
        token: t,
        ttl_ms: None,
    });
    assert_eq!(
        r,
        Response::Extended {
            lease: a,
            ttl_ms: 10_000,
            extensions: 1
        }
    );
    let r = sm.ok(Command::Extend {
        lease: a,
        name: "x".into(),
        token: t,
        ttl_ms: Some(60_000),
    });
    assert_eq!(
        r,
        Response::Extended {
            lease: a,
            ttl_ms: 60_000,
            extensions: 2
        }
    );
    assert_eq!(sm.state.lease(a).unwrap().ttl_ms, 60_000);
    let err = sm.err(Command::Extend {
        lease: a,
        name: "x".into(),
        token: t + 1,
        ttl_ms: None,
    });
    assert!(matches!(err, LockError::StaleToken { .. }));
    let err = sm.err(Command::Extend {
        lease: a,
        name: "x".into(),
        token: t,
        ttl_ms: Some(10),
    });
    assert!(matches!(err, LockError::TtlOutOfRange { .. }));
    assert_eq!(sm.state.lease(a).unwrap().ttl_ms, 60_000);
}

// ----- queues -------------------------------------------------------------

#[test]
fn release_grants_the_head_waiter_with_the_release_entry_as_token() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    let t = sm.take(a, "x");
    let wb = sm.wait(b, &[("x", X)]).unwrap();
    sm.wait(c, &[("x", X)]).unwrap();
    let applied = sm.apply(Command::Release {
        lease: a,
        token: t,
        names: vec!["x".into()],
    });
    assert_eq!(sm.holders("x"), vec![b]);
    assert_eq!(sm.token_of("x", b), applied.index);
    assert!(sm.token_of("x", b) > t);
    assert_eq!(sm.state.lock("x").unwrap().holds[&b].from_waiter, Some(wb));
    assert!(applied.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::Acquired { lease, waiter: Some(w), .. } if *lease == b && *w == wb
    )));
    assert_eq!(sm.queue("x").len(), 1);
}

#[test]
fn waiters_are_granted_in_arrival_order() {
    let mut sm = Sm::new();
    let holder = sm.lease();
    let mut t = sm.take(holder, "x");
    let leases: Vec<_> = (0..5).map(|_| sm.lease()).collect();
    for l in &leases {
        sm.wait(*l, &[("x", X)]);
    }
    let mut current = holder;
    for expected in &leases {
        sm.release(current, "x", t);
        assert_eq!(sm.holders("x"), vec![*expected]);
        current = *expected;
        t = sm.token_of("x", current);
    }
}

#[test]
fn queueing_twice_keeps_one_place_and_an_overlapping_request_is_rejected() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    sm.take(a, "x");
    let wb = sm.wait(b, &[("x", X)]).unwrap();
    sm.wait(c, &[("x", X)]).unwrap();
    let r = sm.ok(acquire(b, &[("x", X)], true));
    assert_eq!(
        r,
        Response::Queued {
            waiter: wb,
            position: 0,
            retry: true
        }
    );
    assert_eq!(sm.queue("x").len(), 2);
    let err = sm.err(acquire(b, &[("x", X), ("y", X)], true));
    assert!(matches!(err, LockError::AlreadyWaiting { waiter, .. } if waiter == wb));
}

#[test]
fn a_try_on_a_lock_with_waiters_is_busy_even_when_compatible() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    sm.take_mode(a, "x", S);
    sm.wait(b, &[("x", X)]).unwrap();
    // A reader may not overtake the queued writer.
    let err = sm.err(acquire(c, &[("x", S)], false));
    assert!(matches!(err, LockError::Busy { waiters: 1, .. }), "{err:?}");
}

#[test]
fn waiters_per_lock_are_limited() {
    let mut sm = Sm::new();
    sm.ok(Command::SetLimits {
        limits: Limits {
            max_waiters_per_lock: 2,
            ..Limits::default()
        },
    });
    let a = sm.lease();
    sm.take(a, "x");
    for _ in 0..2 {
        let l = sm.lease();
        sm.wait(l, &[("x", X)]).unwrap();
    }
    let l = sm.lease();
    let err = sm.err(acquire(l, &[("x", X)], true));
    assert_eq!(
        err,
        LockError::LimitExceeded {
            limit: Limit::WaitersPerLock,
            max: 2
        }
    );
}

#[test]
fn holds_and_waits_per_lease_are_limited() {
    let mut sm = Sm::new();
    sm.ok(Command::SetLimits {
        limits: Limits {
            max_holds_per_lease: 3,
            ..Limits::default()
        },
    });
    let a = sm.lease();
    let b = sm.lease();
    sm.take(a, "x");
    sm.take(a, "y");
    sm.take(b, "z");
    sm.wait(a, &[("z", X)]).unwrap();
    let err = sm.err(acquire(a, &[("w", X)], false));
    assert_eq!(
        err,
        LockError::LimitExceeded {
            limit: Limit::HoldsPerLease,
            max: 3
        }
    );
}

// ----- cancel-wait ------------------------------------------------------

#[test]
fn cancel_wait_leaves_the_queue_and_the_next_waiter_moves_up() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    let t = sm.take(a, "x");
    let wb = sm.wait(b, &[("x", X)]).unwrap();
    let wc = sm.wait(c, &[("x", X)]).unwrap();
    let r = sm.ok(Command::CancelWait {
        lease: b,
        waiter: wb,
        as_of: wb,
    });
    assert_eq!(r, Response::WaitCancelled { waiter: wb });
    assert_eq!(sm.queue("x"), vec![wc]);
    sm.release(a, "x", t);
    assert_eq!(sm.holders("x"), vec![c]);
    // Cancelling again finds nothing.
    let err = sm.err(Command::CancelWait {
        lease: b,
        waiter: wb,
        as_of: wb,
    });
    assert_eq!(
        err,
        LockError::WaiterNotFound {
            waiter: wb,
            lease: b
        }
    );
}

#[test]
fn cancel_wait_after_the_grant_releases_exactly_the_granted_holds() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    let t = sm.take(a, "x");
    sm.take(b, "other");
    let wb = sm.wait(b, &[("x", X)]).unwrap();
    sm.wait(c, &[("x", X)]).unwrap();
    sm.release(a, "x", t);
    assert_eq!(sm.holders("x"), vec![b]);
    let token = sm.token_of("x", b);
    let applied = sm.apply(Command::CancelWait {
        lease: b,
        waiter: wb,
        as_of: wb,
    });
    match applied.result {
        Ok(Response::ReleasedAfterGrant { waiter, released }) => {
            assert_eq!(waiter, wb);
            assert_eq!(released.len(), 1);
            assert_eq!(released[0].token, token);
        }
        other => panic!("{other:?}"),
    }
    // The hold b took directly is untouched; x went on to c.
    assert_eq!(sm.holders("other"), vec![b]);
    assert_eq!(sm.holders("x"), vec![c]);
}

#[test]
fn cancel_wait_of_another_leases_request_is_not_found() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    sm.take(a, "x");
    let wb = sm.wait(b, &[("x", X)]).unwrap();
    let err = sm.err(Command::CancelWait {
        lease: c,
        waiter: wb,
        as_of: wb,
    });
    assert!(matches!(err, LockError::WaiterNotFound { .. }));
    assert_eq!(sm.queue("x"), vec![wb]);
}

/// A node's cancel for a timed-out attempt can be applied after the
/// client's retry (same lease) found the request queued: the retry owns it
/// now and keeps its place; only a cancel issued for the retry withdraws it.
#[test]
fn a_cancel_for_an_earlier_attempt_leaves_a_retried_request_queued() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let t = sm.take(a, "x");
    let wb = sm.wait(b, &[("x", X)]).unwrap();
    let retried = sm.ok(acquire(b, &[("x", X)], true));
    assert!(
        matches!(retried, Response::Queued { waiter, retry: true, .. } if waiter == wb),
        "{retried:?}"
    );
    let retry_index = sm.index;
    let r = sm.ok(Command::CancelWait {
        lease: b,
        waiter: wb,
        as_of: wb,
    });
    assert_eq!(r, Response::CancelSuperseded { waiter: wb });
    assert_eq!(sm.queue("x"), vec![wb], "the retry keeps its place");
    sm.release(a, "x", t);
    assert_eq!(sm.holders("x"), vec![b]);
    // The retry's own cancel (it gave up too) still withdraws: here it
    // releases the hold granted meanwhile.
    let r = sm.ok(Command::CancelWait {
        lease: b,
        waiter: wb,
        as_of: retry_index,
    });
    assert!(matches!(r, Response::ReleasedAfterGrant { .. }), "{r:?}");
    assert!(sm.holders("x").is_empty());
}

/// The same race after the grant: the retry is answered with the hold the
/// queued request was granted; the earlier attempt's cancel, applied after,
/// must not take that hold from the retry's caller (who now believes in it).
#[test]
fn a_cancel_for_an_earlier_attempt_leaves_the_hold_handed_to_a_retry() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    let t = sm.take(a, "x");
    let wb = sm.wait(b, &[("x", X)]).unwrap();
    sm.wait(c, &[("x", X)]).unwrap();
    sm.release(a, "x", t);
    let token = sm.token_of("x", b);
    let retried = sm.ok(acquire(b, &[("x", X)], true));
    assert!(
        matches!(retried, Response::Acquired { token: got, retry: true, .. } if got == token),
        "{retried:?}"
    );
    let r = sm.ok(Command::CancelWait {
        lease: b,
        waiter: wb,
        as_of: wb,
    });
    assert_eq!(r, Response::CancelSuperseded { waiter: wb });
    assert_eq!(
        sm.holders("x"),
        vec![b],
        "b keeps the hold its retry was given"
    );
    assert_eq!(sm.token_of("x", b), token);
}

// ----- shared -------------------------------------------------------------

#[test]
fn shared_holders_coexist_and_a_writer_waits_for_all_of_them() {
    let mut sm = Sm::new();
    let r1 = sm.lease();
    let r2 = sm.lease();
    let w = sm.lease();
    let t1 = sm.take_mode(r1, "doc", S);
    let t2 = sm.take_mode(r2, "doc", S);
    assert_eq!(sm.holders("doc"), vec![r1, r2]);
    sm.wait(w, &[("doc", X)]).unwrap();
    sm.release(r1, "doc", t1);
    assert_eq!(sm.holders("doc"), vec![r2]);
    sm.release(r2, "doc", t2);
    assert_eq!(sm.holders("doc"), vec![w]);
}

#[test]
fn a_writer_is_not_starved_by_readers_arriving_after_it() {
    let mut sm = Sm::new();
    let r1 = sm.lease();
    let w = sm.lease();
    let r2 = sm.lease();
    let t1 = sm.take_mode(r1, "doc", S);
    sm.wait(w, &[("doc", X)]).unwrap();
    // r2 arrives while r1 reads and w waits: it queues behind w.
    assert!(sm.wait(r2, &[("doc", S)]).is_some());
    sm.release(r1, "doc", t1);
    assert_eq!(sm.holders("doc"), vec![w]);
    let tw = sm.token_of("doc", w);
    sm.release(w, "doc", tw);
    assert_eq!(sm.holders("doc"), vec![r2]);
}

#[test]
fn a_reader_does_not_overtake_a_writer_that_waits_for_another_of_its_locks() {
    let mut sm = Sm::new();
    let h = sm.lease();
    let w = sm.lease();
    let r = sm.lease();
    let ty = sm.take(h, "y");
    // w wants x and y together; x is free, y is held: w queues on both.
    sm.wait(w, &[("x", X), ("y", X)]).unwrap();
    assert!(sm.holders("x").is_empty());
    // A reader arriving on x now would stand behind w, whose run is w alone.
    let err = sm.err(acquire(r, &[("x", S)], false));
    assert!(matches!(err, LockError::Busy { .. }), "{err:?}");
    assert!(sm.wait(r, &[("x", S)]).is_some(), "r queues behind w");
    sm.release(h, "y", ty);
    assert_eq!(sm.holders("x"), vec![w]);
    assert_eq!(sm.holders("y"), vec![w]);
    let tw = sm.token_of("x", w);
    sm.apply(Command::Release {
        lease: w,
        token: tw,
        names: vec!["x".into(), "y".into()],
    });
    assert_eq!(sm.holders("x"), vec![r]);
}

#[test]
fn a_release_lets_the_whole_shared_run_at_the_head_in_with_one_token() {
    let mut sm = Sm::new();
    let w1 = sm.lease();
    let (r1, r2, w2, r3) = (sm.lease(), sm.lease(), sm.lease(), sm.lease());
    let t = sm.take(w1, "doc");
    for (l, m) in [(r1, S), (r2, S), (w2, X), (r3, S)] {
        sm.wait(l, &[("doc", m)]).unwrap();
    }
    let applied = sm.apply(Command::Release {
        lease: w1,
        token: t,
        names: vec!["doc".into()],
    });
    assert_eq!(sm.holders("doc"), vec![r1, r2]);
    assert_eq!(sm.token_of("doc", r1), applied.index);
    assert_eq!(sm.token_of("doc", r2), applied.index);
    assert_eq!(sm.queue("doc").len(), 2, "w2 and r3 still wait");
}

// ----- semaphores ---------------------------------------------------------

#[test]
fn a_semaphore_admits_as_many_holders_as_permits() {
    let mut sm = Sm::new();
    let ls: Vec<_> = (0..4).map(|_| sm.lease()).collect();
    for l in &ls[..3] {
        sm.take_mode(*l, "pool", sem(3));
    }
    let err = sm.err(acquire(ls[3], &[("pool", sem(3))], false));
    assert!(matches!(err, LockError::Busy { holders: 3, .. }), "{err:?}");
}

#[test]
fn semaphore_permits_are_fixed_by_the_first_acquirer() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    sm.take_mode(a, "pool", sem(3));
    let err = sm.err(acquire(b, &[("pool", sem(5))], false));
    assert_eq!(
        err,
        LockError::PermitsMismatch {
            name: "pool".into(),
            existing: 3,
            requested: 5
        }
    );
    let err = sm.err(acquire(b, &[("pool", X)], false));
    assert!(matches!(
        err,
        LockError::KindConflict {
            existing: LockKind::Semaphore { permits: 3 },
            ..
        }
    ));
    // Once the lock is gone, a new first acquirer may choose again.
    let t = sm.token_of("pool", a);
    sm.release(a, "pool", t);
    sm.take_mode(b, "pool", sem(5));
}

#[test]
fn a_semaphore_release_grants_queued_requests_up_to_the_free_permits() {
    let mut sm = Sm::new();
    let h: Vec<_> = (0..2).map(|_| sm.lease()).collect();
    let w: Vec<_> = (0..3).map(|_| sm.lease()).collect();
    let t0 = sm.take_mode(h[0], "pool", sem(2));
    let t1 = sm.take_mode(h[1], "pool", sem(2));
    for l in &w {
        sm.wait(*l, &[("pool", sem(2))]).unwrap();
    }
    sm.ok(Command::Release {
        lease: h[0],
        token: t0,
        names: vec!["pool".into()],
    });
    assert_eq!(sm.holders("pool"), vec![h[1], w[0]]);
    sm.release(h[1], "pool", t1);
    assert_eq!(sm.holders("pool"), vec![w[0], w[1]]);
    assert_eq!(sm.queue("pool").len(), 1);
}

#[test]
fn zero_or_too_many_permits_are_rejected() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let err = sm.err(acquire(a, &[("p", sem(0))], false));
    assert!(matches!(err, LockError::InvalidArgument { ref field, .. } if field == "permits"));
    let err = sm.err(acquire(a, &[("p", sem(u32::MAX))], false));
    assert!(matches!(
        err,
        LockError::LimitExceeded {
            limit: Limit::PermitsPerSemaphore,
            ..
        }
    ));
}

// ----- multi-lock -----------------------------------------------------------

#[test]
fn a_multi_lock_try_is_all_or_none() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    sm.take(a, "y");
    let err = sm.err(acquire(b, &[("x", X), ("y", X)], false));
    assert!(matches!(err, LockError::Busy { ref name, .. } if name == "y"));
    assert!(sm.state.lock("x").is_none(), "x was not taken alone");
    let r = sm.ok(acquire(b, &[("x", X), ("z", S)], false));
    match r {
        Response::Acquired { token, holds, .. } => {
            assert_eq!(holds.len(), 2);
            assert!(holds.iter().all(|g| g.token == token));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_multi_lock_waiter_holds_nothing_until_it_gets_everything() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let m = sm.lease();
    let ta = sm.take(a, "x");
    let tb = sm.take(b, "y");
    sm.wait(m, &[("x", X), ("y", X)]).unwrap();
    sm.release(a, "x", ta);
    assert!(sm.holders("x").is_empty(), "x stays free, reserved for m");
    assert!(sm.state.lease(m).unwrap().holds.is_empty());
    let applied = sm.apply(Command::Release {
        lease: b,
        token: tb,
        names: vec!["y".into()],
    });
    assert_eq!(sm.holders("x"), vec![m]);
    assert_eq!(sm.holders("y"), vec![m]);
    assert_eq!(sm.token_of("x", m), applied.index);
    assert_eq!(sm.token_of("y", m), applied.index);
}

#[test]
fn a_later_request_for_a_free_lock_waits_behind_an_earlier_multi_lock_waiter() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let m = sm.lease();
    let c = sm.lease();
    let ta = sm.take(a, "y");
    sm.wait(m, &[("x", X), ("y", X)]).unwrap();
    // x is free but m is first in its queue.
    let err = sm.err(acquire(c, &[("x", X)], false));
    assert!(matches!(err, LockError::Busy { waiters: 1, .. }));
    sm.wait(c, &[("x", X)]).unwrap();
    sm.release(a, "y", ta);
    assert_eq!(sm.holders("x"), vec![m]);
}

#[test]
fn crossing_multi_lock_waiters_cannot_deadlock() {
    let mut sm = Sm::new();
    let h = sm.lease();
    let p = sm.lease();
    let q = sm.lease();
    let tx = sm.take(h, "x");
    let ty = sm.take(h, "y");
    // p and q both want x and y, in opposite order of naming.
    sm.wait(p, &[("x", X), ("y", X)]).unwrap();
    sm.wait(q, &[("y", X), ("x", X)]).unwrap();
    sm.release(h, "x", tx);
    sm.release(h, "y", ty);
    assert_eq!(sm.holders("x"), vec![p]);
    assert_eq!(sm.holders("y"), vec![p]);
    let t = sm.token_of("x", p);
    sm.ok(Command::Release {
        lease: p,
        token: t,
        names: vec!["x".into(), "y".into()],
    });
    assert_eq!(sm.holders("x"), vec![q]);
    assert_eq!(sm.holders("y"), vec![q]);
}

#[test]
fn a_multi_lock_naming_a_lock_twice_or_too_many_locks_is_rejected() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let err = sm.err(acquire(a, &[("x", X), ("x", S)], false));
    assert!(matches!(err, LockError::InvalidArgument { ref field, .. } if field == "locks"));
    let err = sm.err(acquire(a, &[], false));
    assert!(matches!(err, LockError::InvalidArgument { .. }));
    let names: Vec<String> = (0..65).map(|i| format!("n{i}")).collect();
    let specs: Vec<(&str, Mode)> = names.iter().map(|n| (n.as_str(), X)).collect();
    let err = sm.err(acquire(a, &specs, false));
    assert!(matches!(
        err,
        LockError::LimitExceeded {
            limit: Limit::LocksPerRequest,
            max: 64
        }
    ));
}

#[test]
fn a_multi_lock_that_holds_some_of_its_names_is_rejected() {
    let mut sm = Sm::new();
    let a = sm.lease();
    sm.take(a, "x");
    let err = sm.err(acquire(a, &[("x", X), ("y", X)], false));
    assert!(matches!(err, LockError::PartiallyHeld { ref name, .. } if name == "x"));
}

// ----- lock-delay -----------------------------------------------------------

fn acquire_with_delay(lease: u64, name: &str, delay_ms: u64) -> Command {
    Command::Acquire {
        lease,
        locks: vec![LockSpec {
            name: name.into(),
            mode: X,
        }],
        wait: false,
        reason: String::new(),
        metadata: Metadata::new(),
        lock_delay_ms: delay_ms,
        quota: Default::default(),
    }
}

#[test]
fn after_an_expiry_the_lock_delay_keeps_the_lock_until_a_later_entry_passes_the_delay() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    sm.ok(acquire_with_delay(a, "x", 5_000));
    sm.wait(b, &[("x", X)]).unwrap();
    sm.clock_ms = 10_000;
    sm.ok(Command::ExpireLeases { leases: vec![a] });
    assert!(sm.holders("x").is_empty());
    assert_eq!(sm.state.next_delay_end_ms(), Some(15_000));
    let err = sm.err(acquire(c, &[("x", X)], false));
    assert!(matches!(
        err,
        LockError::Busy {
            delayed_until_ms: Some(15_000),
            ..
        }
    ));
    sm.clock_ms = 14_999;
    sm.ok(Command::Tick);
    assert!(sm.holders("x").is_empty());
    sm.clock_ms = 15_000;
    let tick = sm.apply(Command::Tick);
    assert_eq!(sm.holders("x"), vec![b]);
    assert_eq!(sm.token_of("x", b), tick.index);
    assert_eq!(sm.state.next_delay_end_ms(), None);
}

#[test]
fn a_lock_delay_is_not_applied_on_revoke_or_release() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    sm.ok(acquire_with_delay(a, "x", 5_000));
    sm.ok(Command::RevokeLease { lease: a });
    sm.take(b, "x");
}

#[test]
fn a_lock_delay_with_no_waiters_keeps_the_lock_record_then_drops_it() {
    let mut sm = Sm::new();
    let a = sm.lease();
    sm.ok(acquire_with_delay(a, "x", 2_000));
    sm.ok(Command::ExpireLeases { leases: vec![a] });
    assert!(sm.state.lock("x").unwrap().delayed_until_ms.is_some());
    sm.clock_ms += 2_000;
    sm.ok(Command::Tick);
    assert!(sm.state.lock("x").is_none());
}

#[test]
fn the_cluster_clock_never_goes_back() {
    let mut sm = Sm::new();
    sm.clock_ms = 5_000;
    sm.ok(Command::Tick);
    sm.clock_ms = 1_000; // a new leader with a lagging clock
    sm.ok(Command::Tick);
    assert_eq!(sm.state.cluster_ms(), 5_000);
}

#[test]
fn a_lock_delay_above_the_limit_is_rejected() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let err = sm.err(acquire_with_delay(a, "x", 60_001));
    assert!(
        matches!(err, LockError::InvalidArgument { ref field, .. } if field == "lock_delay_ms")
    );
}

// ----- force release ----------------------------------------------------------

#[test]
fn force_release_removes_every_holder_and_hands_the_lock_on() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    sm.take_mode(a, "doc", S);
    sm.take_mode(b, "doc", S);
    sm.wait(c, &[("doc", X)]).unwrap();
    let applied = sm.apply(Command::ForceRelease {
        name: "doc".into(),
        lease: None,
        by: String::new(),
    });
    match &applied.result {
        Ok(Response::ForceReleased { released }) => assert_eq!(released.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        applied
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ForceReleased { .. }))
            .count(),
        2
    );
    assert_eq!(sm.holders("doc"), vec![c]);
    assert!(sm.state.lease(a).unwrap().holds.is_empty());
}

#[test]
fn force_release_of_one_holder_or_of_an_unknown_lock() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    sm.take_mode(a, "doc", S);
    sm.take_mode(b, "doc", S);
    sm.ok(Command::ForceRelease {
        name: "doc".into(),
        lease: Some(a),
        by: String::new(),
    });
    assert_eq!(sm.holders("doc"), vec![b]);
    let err = sm.err(Command::ForceRelease {
        name: "doc".into(),
        lease: Some(a),
        by: String::new(),
    });
    assert!(matches!(err, LockError::NotHolder { .. }));
    let err = sm.err(Command::ForceRelease {
        name: "nope".into(),
        lease: None,
        by: String::new(),
    });
    assert_eq!(
        err,
        LockError::LockNotFound {
            name: "nope".into()
        }
    );
}

// ----- input limits -----------------------------------------------------------

#[test]
fn bad_names_are_rejected_with_the_reason() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let long = "n".repeat(513);
    for (name, needle) in [
        ("", "empty"),
        (long.as_str(), "513 bytes"),
        ("a\nb", "U+000A"),
        ("nul\0", "U+0000"),
    ] {
        let err = sm.err(acquire(a, &[(name, X)], false));
        match err {
            LockError::InvalidName { reason, .. } => assert!(reason.contains(needle), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    let ok = "n".repeat(512);
    sm.take(a, &ok);
    sm.take(a, "ünïcödé/路径");
}

#[test]
fn oversized_metadata_reason_and_owner_are_rejected() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let mut metadata = Metadata::new();
    metadata.insert("k".into(), "v".repeat(4096));
    let cmd = Command::Acquire {
        lease: a,
        locks: vec![LockSpec {
            name: "x".into(),
            mode: X,
        }],
        wait: false,
        reason: String::new(),
        metadata,
        lock_delay_ms: 0,
        quota: Default::default(),
    };
    let err = sm.err(cmd);
    assert!(
        matches!(err, LockError::TooLarge { ref field, size: 4097, max: 4096 } if field == "metadata")
    );
    let cmd = Command::Acquire {
        lease: a,
        locks: vec![LockSpec {
            name: "x".into(),
            mode: X,
        }],
        wait: false,
        reason: "r".repeat(1025),
        metadata: Metadata::new(),
        lock_delay_ms: 0,
        quota: Default::default(),
    };
    assert!(matches!(sm.err(cmd), LockError::TooLarge { ref field, .. } if field == "reason"));
    let err = sm.err(Command::GrantLease {
        ttl_ms: 5_000,
        owner: "o".repeat(257),
        identity: String::new(),
        quota: Default::default(),
    });
    assert!(matches!(err, LockError::TooLarge { ref field, .. } if field == "owner"));
}

#[test]
fn invalid_limits_are_rejected() {
    let mut sm = Sm::new();
    let err = sm.err(Command::SetLimits {
        limits: Limits {
            min_ttl_ms: 10_000,
            max_ttl_ms: 1_000,
            ..Limits::default()
        },
    });
    assert!(matches!(err, LockError::InvalidArgument { .. }));
    assert_eq!(sm.state.limits(), &Limits::default());
}

// ----- records, events, determinism --------------------------------------------

#[test]
fn a_hold_records_owner_reason_metadata_time_and_counters() {
    let mut sm = Sm::new();
    let a = sm.lease_with("worker-7@host", 30_000);
    let mut metadata = Metadata::new();
    metadata.insert("job".into(), "backup".into());
    sm.ok(Command::Acquire {
        lease: a,
        locks: vec![LockSpec {
            name: "x".into(),
            mode: X,
        }],
        wait: false,
        reason: "nightly backup".into(),
        metadata: metadata.clone(),
        lock_delay_ms: 0,
        quota: Default::default(),
    });
    let hold = &sm.state.lock("x").unwrap().holds[&a];
    assert_eq!(&*hold.owner, "worker-7@host");
    assert_eq!(&*hold.reason, "nightly backup");
    assert_eq!(hold.metadata, metadata);
    assert_eq!(hold.acquired_at_wall_ms, 1_700_000_000_000);
    assert_eq!((hold.acquisitions, hold.extensions), (1, 0));
}

#[test]
fn every_event_carries_the_index_of_its_entry_as_revision() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let t = sm.take(a, "x");
    let q = sm.apply(acquire(b, &[("x", X)], true));
    assert!(matches!(
        q.events.as_slice(),
        [e] if matches!(e.kind, EventKind::Queued { position: 0, .. }) && e.revision == q.index
    ));
    let r = sm.apply(Command::Release {
        lease: a,
        token: t,
        names: vec!["x".into()],
    });
    let kinds: Vec<_> = r.events.iter().map(|e| &e.kind).collect();
    assert!(matches!(kinds[0], EventKind::Released { .. }));
    assert!(matches!(kinds[1], EventKind::Acquired { .. }));
    assert!(r.events.iter().all(|e| e.revision == r.index));
    let e = sm.apply(Command::ExpireLeases { leases: vec![b] });
    assert!(e.events.iter().any(|e| matches!(
        e.kind,
        EventKind::Expired {
            how: LeaseEnd::Expired,
            ..
        }
    )));
}

#[test]
fn a_failed_command_changes_nothing_but_the_applied_index() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    sm.take(a, "x");
    let before = sm.state.clone();
    sm.err(acquire(b, &[("y", X), ("x", X)], false));
    let mut after = sm.state.clone();
    assert_ne!(after, before);
    // Equal once the applied index and the rejection counter are set back.
    let bytes_after = after.to_bytes();
    let mut replay = State::new();
    for (i, r) in &sm.log[..sm.log.len() - 1] {
        replay.apply(*i, r);
    }
    assert_eq!(replay, before);
    after = State::from_bytes(&bytes_after).unwrap();
    assert_eq!(after.lock("x"), before.lock("x"));
    assert!(after.lock("y").is_none());
    assert_eq!(after.lease(b), before.lease(b));
}

#[test]
fn an_entry_at_or_below_the_applied_index_is_refused() {
    let mut sm = Sm::new();
    sm.lease();
    let before = sm.state.clone();
    let applied = sm.state.apply(1, &Request::new(0, 0, Command::Tick));
    assert!(
        matches!(applied.result, Err(LockError::InvalidArgument { ref field, .. }) if field == "index")
    );
    assert_eq!(sm.state, before);
}

#[test]
fn locks_with_prefix_lists_only_that_prefix_in_order() {
    let mut sm = Sm::new();
    let a = sm.lease();
    for n in ["jobs/b", "jobs/a", "jobsx", "other", "jobs/c/d"] {
        sm.take(a, n);
    }
    let names: Vec<_> = sm
        .state
        .locks_with_prefix("jobs/")
        .map(|l| &*l.name)
        .collect();
    assert_eq!(names, vec!["jobs/a", "jobs/b", "jobs/c/d"]);
    assert_eq!(sm.state.locks_with_prefix("").count(), 5);
}

#[test]
fn error_messages_say_what_went_wrong() {
    let msg = LockError::StaleToken {
        name: "x".into(),
        lease: 3,
        presented: 4,
        current: 9,
    }
    .to_string();
    assert!(
        msg.contains("stale fencing token 4") && msg.contains("token 9"),
        "{msg}"
    );
}

#[test]
fn a_reader_may_join_readers_that_wait_only_for_another_of_their_locks() {
    let mut sm = Sm::new();
    let h = sm.lease();
    let m = sm.lease();
    let r = sm.lease();
    let w = sm.lease();
    sm.take(h, "y");
    // m waits to read x and write y; x has no holder.
    sm.wait(m, &[("x", S), ("y", X)]).unwrap();
    // A reader of x overtakes nobody by reading beside m's future read.
    assert_eq!(sm.wait(r, &[("x", S)]), None);
    assert_eq!(sm.holders("x"), vec![r]);
    // A writer of x must queue behind m.
    assert!(sm.wait(w, &[("x", X)]).is_some());
}

#[test]
fn a_lock_freed_by_a_delay_and_a_revoke_in_one_entry_is_granted_once() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    sm.ok(acquire_with_delay(a, "x", 1_000));
    sm.wait(b, &[("x", X)]).unwrap();
    sm.wait(c, &[("x", X)]).unwrap();
    sm.ok(Command::ExpireLeases { leases: vec![a] });
    sm.clock_ms += 1_000;
    // The delay has ended by the time b's lease is revoked in the same entry:
    // x must go to c only, never to b and then c with one token.
    let applied = sm.apply(Command::RevokeLease { lease: b });
    let grants: Vec<_> = applied
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Acquired { .. }))
        .collect();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(sm.holders("x"), vec![c]);
}

// ----- batches -----------------------------------------------------------

fn release_cmd(lease: u64, name: &str, token: u64) -> Command {
    Command::Release {
        lease,
        token,
        names: vec![name.to_string()],
    }
}

/// Independent commands in one entry get the answers they would get alone;
/// the holds it grants share the entry's index as their token.
#[test]
fn a_batch_answers_each_command_as_if_alone_and_its_grants_share_the_token() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    let d = sm.lease();
    let ta = sm.take(a, "held");
    sm.take(d, "busy");
    let applied = sm.apply(Command::Batch {
        commands: vec![
            acquire(b, &[("x", X)], false),
            release_cmd(a, "held", ta),
            acquire(c, &[("busy", X)], false),
            acquire(d, &[("y", X), ("z", X)], false),
        ],
    });
    let index = sm.index;
    let Ok(Response::Batch { results }) = applied.result else {
        panic!("{:?}", applied.result)
    };
    assert_eq!(results.len(), 4);
    assert!(
        matches!(&results[0], Ok(Response::Acquired { token, .. }) if *token == index),
        "{:?}",
        results[0]
    );
    assert_eq!(
        results[1],
        Ok(Response::Released {
            names: vec!["held".to_string()]
        })
    );
    assert!(
        matches!(results[2], Err(LockError::Busy { .. })),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(&results[3], Ok(Response::Acquired { token, holds, .. }) if *token == index && holds.len() == 2),
        "{:?}",
        results[3]
    );
    assert_eq!(sm.token_of("x", b), index);
    assert_eq!(sm.token_of("y", d), index);
    assert!(sm.holders("held").is_empty());
    assert_eq!(sm.holders("busy"), vec![d]);
    assert_eq!(sm.state.counters().rejected, 1, "the busy acquire counts");
}

/// The entry's grant pass comes after every command of the batch: a
/// release in it hands its lock to the next waiter at the entry's index.
#[test]
fn a_release_in_a_batch_hands_the_lock_to_the_next_waiter_at_the_entrys_index() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    let t = sm.take(a, "x");
    let wc = sm.wait(c, &[("x", X)]).unwrap();
    let applied = sm.apply(Command::Batch {
        commands: vec![release_cmd(a, "x", t), acquire(b, &[("y", X)], true)],
    });
    let index = sm.index;
    assert!(
        matches!(applied.result, Ok(Response::Batch { .. })),
        "{applied:?}"
    );
    assert_eq!(sm.holders("x"), vec![c]);
    assert_eq!(sm.token_of("x", c), index);
    assert!(index > t && wc < index);
    assert_eq!(sm.token_of("y", b), index);
}

/// The one waiting acquire of a batch queues under the entry's index, and
/// is granted and cancelled like any other.
#[test]
fn a_waiting_acquire_in_a_batch_queues_with_the_entrys_index_as_its_id() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let c = sm.lease();
    let t = sm.take(a, "x");
    let applied = sm.apply(Command::Batch {
        commands: vec![
            acquire(b, &[("x", X)], true),
            acquire(c, &[("y", X)], false),
        ],
    });
    let index = sm.index;
    let Ok(Response::Batch { results }) = applied.result else {
        panic!("{:?}", applied.result)
    };
    assert!(
        matches!(results[0], Ok(Response::Queued { waiter, .. }) if waiter == index),
        "{:?}",
        results[0]
    );
    assert_eq!(sm.queue("x"), vec![index]);
    sm.release(a, "x", t);
    assert_eq!(sm.holders("x"), vec![b]);
}

/// A batch the leader should never form is refused whole and changes
/// nothing: two commands of one lease, one lock named twice, two acquires
/// that may queue, a command that may not share an entry, a lone command.
#[test]
fn a_batch_that_breaks_the_rules_is_refused_whole_and_changes_nothing() {
    let mut sm = Sm::new();
    let a = sm.lease();
    let b = sm.lease();
    let bad = [
        vec![
            acquire(a, &[("x", X)], false),
            acquire(a, &[("y", X)], false),
        ],
        vec![
            acquire(a, &[("x", X)], false),
            acquire(b, &[("x", X)], false),
        ],
        vec![acquire(a, &[("x", X)], true), acquire(b, &[("y", X)], true)],
        vec![
            acquire(a, &[("x", X)], false),
            Command::GrantLease {
                ttl_ms: 10_000,
                owner: "o".into(),
                identity: String::new(),
                quota: Default::default(),
            },
        ],
        vec![Command::Batch {
            commands: vec![
                acquire(a, &[("x", X)], false),
                acquire(b, &[("y", X)], false),
            ],
        }],
        vec![acquire(a, &[("x", X)], false)],
        vec![],
    ];
    for commands in bad {
        let grants = sm.state.counters().grants;
        let err = sm.err(Command::Batch {
            commands: commands.clone(),
        });
        assert!(
            matches!(&err, LockError::InvalidArgument { field, .. } if field == "batch"),
            "{commands:?}: {err:?}"
        );
        assert!(sm.holders("x").is_empty() && sm.holders("y").is_empty());
        assert!(sm.queue("x").is_empty() && sm.queue("y").is_empty());
        assert_eq!(sm.state.counters().grants, grants, "{commands:?} granted");
        assert_eq!(sm.state.lease_count(), 2, "{commands:?} started a lease");
        assert_eq!(sm.state.lock_count(), 0, "{commands:?} left a lock");
    }
}

#[test]
fn the_first_cluster_id_stays_and_a_recorded_store_is_never_replaced() {
    let mut sm = Sm::new();
    let first = sm.ok(Command::InitCluster {
        cluster_id: "a".into(),
    });
    assert_eq!(
        first,
        Response::ClusterInit {
            cluster_id: "a".into()
        }
    );
    // A later leader's proposal (say, one that raced the first) changes nothing.
    let second = sm.ok(Command::InitCluster {
        cluster_id: "b".into(),
    });
    assert_eq!(
        second,
        Response::ClusterInit {
            cluster_id: "a".into()
        }
    );
    let record = |store: &str, addr: &str| Command::RecordMember {
        node: 2,
        store_id: store.into(),
        client_addr: addr.into(),
    };
    assert_eq!(
        sm.ok(record("s1", "h:1")),
        Response::MemberRecorded { conflict: None }
    );
    // The same store at a new client address: recorded.
    assert_eq!(
        sm.ok(record("s1", "h:2")),
        Response::MemberRecorded { conflict: None }
    );
    // Another store under the same id (a wiped node): refused, record kept.
    assert_eq!(
        sm.ok(record("s2", "h:3")),
        Response::MemberRecorded {
            conflict: Some("s1".into())
        }
    );
    let cluster = sm.state.cluster();
    assert_eq!(cluster.id, "a");
    assert_eq!(cluster.members[&2].store_id, "s1");
    assert_eq!(cluster.members[&2].client_addr, "h:2");
}

#[test]
fn forgetting_a_member_lets_its_id_return_with_another_store() {
    let mut sm = Sm::new();
    let record = |store: &str| Command::RecordMember {
        node: 2,
        store_id: store.into(),
        client_addr: "h:1".into(),
    };
    sm.ok(record("s1"));
    assert_eq!(
        sm.ok(record("s2")),
        Response::MemberRecorded {
            conflict: Some("s1".into())
        }
    );
    assert_eq!(
        sm.ok(Command::ForgetMember { node: 2 }),
        Response::MemberForgotten { existed: true }
    );
    assert!(!sm.state.cluster().members.contains_key(&2));
    // Forgetting it again, or an id never recorded, changes nothing.
    assert_eq!(
        sm.ok(Command::ForgetMember { node: 2 }),
        Response::MemberForgotten { existed: false }
    );
    assert_eq!(
        sm.ok(record("s2")),
        Response::MemberRecorded { conflict: None }
    );
    assert_eq!(sm.state.cluster().members[&2].store_id, "s2");
}

// ----- identities ------------------------------------------------------------

fn grant_as(identity: &str, quota: raftlock_core::IdentityLimits) -> Command {
    Command::GrantLease {
        ttl_ms: 10_000,
        owner: "o".into(),
        identity: identity.into(),
        quota,
    }
}

fn lease_as(sm: &mut Sm, identity: &str, quota: raftlock_core::IdentityLimits) -> u64 {
    let cmd = grant_as(identity, quota);
    match sm.ok(cmd) {
        Response::LeaseGranted { lease, .. } => lease,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lease_records_the_identity_that_granted_it_and_survives_a_snapshot() {
    let mut sm = Sm::new();
    let lease = lease_as(&mut sm, "worker", Default::default());
    assert_eq!(sm.state.lease(lease).unwrap().identity, "worker");
    let restored = State::from_bytes(&sm.state.to_bytes()).unwrap();
    assert_eq!(restored.lease(lease).unwrap().identity, "worker");
    assert_eq!(restored.identity_usage("worker").leases, 1);
    assert_eq!(restored.leases_of("worker").count(), 1);
    assert_eq!(restored.identity_usage("other").leases, 0);
}

#[test]
fn an_identity_at_its_lease_limit_is_refused_by_name_and_others_are_not() {
    let mut sm = Sm::new();
    let quota = raftlock_core::IdentityLimits {
        max_leases: Some(2),
        ..Default::default()
    };
    let first = lease_as(&mut sm, "worker", quota);
    lease_as(&mut sm, "worker", quota);
    let cmd = grant_as("worker", quota);
    let err = sm.err(cmd);
    assert_eq!(
        err,
        LockError::IdentityLimitExceeded {
            identity: "worker".into(),
            limit: Limit::LeasesPerIdentity,
            max: 2
        }
    );
    assert!(err.to_string().contains("\"worker\""), "{err}");
    lease_as(&mut sm, "other", quota);
    // A lease that ends makes room again.
    sm.ok(Command::RevokeLease { lease: first });
    lease_as(&mut sm, "worker", quota);
}

#[test]
fn holds_and_waiters_are_counted_over_all_leases_of_an_identity() {
    let mut sm = Sm::new();
    let quota = raftlock_core::IdentityLimits {
        max_holds: Some(2),
        max_waiters: Some(1),
        ..Default::default()
    };
    let a = lease_as(&mut sm, "worker", quota);
    let b = lease_as(&mut sm, "worker", quota);
    let other = lease_as(&mut sm, "other", Default::default());
    let with_quota = |lease, names: &[(&str, Mode)], wait| match acquire(lease, names, wait) {
        Command::Acquire {
            lease,
            locks,
            wait,
            reason,
            metadata,
            lock_delay_ms,
            ..
        } => Command::Acquire {
            lease,
            locks,
            wait,
            reason,
            metadata,
            lock_delay_ms,
            quota,
        },
        _ => unreachable!(),
    };
    sm.take(other, "busy1");
    sm.take(other, "busy2");
    sm.ok(with_quota(a, &[("x", X)], false));
    // One name waited for counts as a hold too; one queued request at most.
    sm.ok(with_quota(b, &[("busy1", X)], true));
    let err = sm.err(with_quota(a, &[("busy2", X)], true));
    assert!(
        matches!(
            err,
            LockError::IdentityLimitExceeded {
                limit: Limit::HoldsPerIdentity,
                ..
            }
        ),
        "{err:?}"
    );
    let err = sm.err(with_quota(b, &[("y", X)], false));
    assert!(
        matches!(
            err,
            LockError::IdentityLimitExceeded {
                limit: Limit::HoldsPerIdentity,
                ..
            }
        ),
        "{err:?}"
    );
    let usage = sm.state.identity_usage("worker");
    assert_eq!((usage.leases, usage.holds, usage.waiters), (2, 2, 1));
    let quota_waiters = raftlock_core::IdentityLimits {
        max_waiters: Some(1),
        ..Default::default()
    };
    let c = lease_as(&mut sm, "worker", quota_waiters);
    let err = sm.err(Command::Acquire {
        lease: c,
        locks: vec![LockSpec {
            name: "busy2".into(),
            mode: X,
        }],
        wait: true,
        reason: String::new(),
        metadata: Metadata::new(),
        lock_delay_ms: 0,
        quota: quota_waiters,
    });
    assert!(
        matches!(err, LockError::IdentityLimitExceeded { limit: Limit::WaitersPerIdentity, ref identity, .. } if identity == "worker"),
        "{err:?}"
    );
}

#[test]
fn a_force_release_event_names_who_forced_it() {
    let mut sm = Sm::new();
    let a = sm.lease();
    sm.take(a, "doc");
    let applied = sm.apply(Command::ForceRelease {
        name: "doc".into(),
        lease: None,
        by: "ops".into(),
    });
    assert!(applied.events.iter().any(
        |e| matches!(&e.kind, EventKind::ForceReleased { by, name, .. } if by == "ops" && name == "doc")
    ));
}

// ----- token epoch ------------------------------------------------------

#[test]
fn tokens_lease_ids_waiter_ids_and_revisions_carry_the_epoch() {
    let mut sm = Sm::new();
    let before = sm.lease();
    let old_token = sm.take(before, "a");
    assert_eq!((before, old_token), (1, 2), "epoch 0: stamps are indexes");
    let raised = sm.apply(Command::RaiseTokenEpoch { at_least: 3 });
    assert_eq!(raised.result, Ok(Response::TokenEpochRaised { epoch: 3 }));
    assert_eq!(
        raised.revision,
        (3 << 48) | 3,
        "the raising entry is stamped in the new epoch"
    );
    assert_eq!(sm.state.token_epoch(), 3);

    let lease = sm.lease();
    assert_eq!(lease, (3 << 48) | 4);
    let token = sm.take(lease, "b");
    assert_eq!(token, (3 << 48) | 5);
    let queued = sm.apply(crate::common::acquire(lease, &[("a", X)], true));
    assert!(
        matches!(queued.result, Ok(Response::Queued { waiter, .. }) if waiter == (3 << 48) | 6),
        "{queued:?}"
    );
    assert!(queued.events.iter().all(|e| e.revision == (3 << 48) | 6));
    assert_eq!(queued.revision, (3 << 48) | 6);
    // The old hold keeps its token; the waiter granted after it gets a
    // token of the new epoch, above it.
    sm.release(before, "a", old_token);
    let granted = sm.token_of("a", lease);
    assert_eq!(granted, (3 << 48) | 7);
    assert!(granted > old_token);
    assert_eq!(sm.state.token_high_water(), (3 << 48) | 7);
}

#[test]
fn raise_token_epoch_never_lowers_it() {
    let mut sm = Sm::new();
    sm.apply(Command::RaiseTokenEpoch { at_least: 5 });
    let lower = sm.apply(Command::RaiseTokenEpoch { at_least: 2 });
    assert_eq!(lower.result, Ok(Response::TokenEpochRaised { epoch: 5 }));
    assert_eq!(sm.state.token_epoch(), 5);
    let lease = sm.lease();
    assert_eq!(lease >> 48, 5);
}

#[test]
fn a_raise_cannot_share_a_batch_entry() {
    let mut sm = Sm::new();
    let err = sm.err(Command::Batch {
        commands: vec![Command::RaiseTokenEpoch { at_least: 1 }],
    });
    assert!(matches!(err, LockError::InvalidArgument { .. }), "{err:?}");
    assert_eq!(sm.state.token_epoch(), 0);
}

#[test]
fn an_index_past_2_48_is_refused_not_wrapped() {
    let mut state = State::new();
    let last = raftlock_core::MAX_INDEX - 1;
    let grant = |ttl_ms| Command::GrantLease {
        ttl_ms,
        owner: "o".into(),
        identity: String::new(),
        quota: Default::default(),
    };
    let ok = state.apply(last, &Request::new(1, 1, grant(5_000)));
    assert_eq!(
        ok.result,
        Ok(Response::LeaseGranted {
            lease: last,
            ttl_ms: 5_000
        })
    );
    let refused = state.apply(last + 1, &Request::new(2, 2, grant(5_000)));
    assert_eq!(
        refused.result,
        Err(LockError::LimitExceeded {
            limit: Limit::LogIndex,
            max: last
        })
    );
    assert_eq!(
        state.last_applied(),
        last + 1,
        "the entry itself is applied"
    );
    assert_eq!(state.lease_count(), 1, "no lease with a wrapped id");
    raftlock_core::check_invariants(&state).expect("invariants");
}

#[test]
fn a_state_moved_to_a_new_cluster_keeps_its_holds_and_grants_above_the_old_epoch() {
    let mut sm = Sm::new();
    let lease = sm.lease();
    let token = sm.take(lease, "a");
    let mut restored = State::from_bytes(&sm.state.to_bytes())
        .expect("decodes")
        .into_new_cluster("new-cluster".into(), 1);
    assert_eq!(restored.cluster().id, "new-cluster");
    assert!(restored.cluster().members.is_empty());
    assert_eq!(restored.token_epoch(), 1);
    assert_eq!(restored.lock("a").expect("held").holds[&lease].token, token);
    let next = restored.apply(
        sm.index + 1,
        &Request::new(
            sm.clock_ms,
            0,
            crate::common::acquire(lease, &[("b", X)], false),
        ),
    );
    assert!(
        matches!(next.result, Ok(Response::Acquired { token: t, .. }) if t == (1 << 48) | (sm.index + 1)),
        "{next:?}"
    );
}

#[test]
fn force_new_cluster_names_a_new_cluster_of_one_and_raises_the_epoch_for_its_own_entry() {
    let mut sm = Sm::new();
    let lease = sm.lease();
    let token = sm.take(lease, "a");
    sm.apply(Command::RecordMember {
        node: 2,
        store_id: "old-store-2".into(),
        client_addr: "10.0.0.2:7401".into(),
    });
    let forced = sm.apply(Command::ForceNewCluster {
        cluster_id: "forced".into(),
        node: 1,
        store_id: "store-1".into(),
        client_addr: "10.0.0.1:7401".into(),
    });
    assert_eq!(
        forced.result,
        Ok(Response::ClusterForced {
            cluster_id: "forced".into(),
            epoch: 1
        })
    );
    assert_eq!(
        forced.revision,
        (1 << 48) | forced.index,
        "stamped in the new epoch"
    );
    let cluster = sm.state.cluster();
    assert_eq!(cluster.id, "forced");
    assert_eq!(
        cluster.members.keys().copied().collect::<Vec<_>>(),
        vec![1],
        "only the survivor is recorded: the others may come back with new stores"
    );
    assert_eq!(cluster.members[&1].store_id, "store-1");
    // Holds are kept; new tokens are above every old one.
    assert_eq!(sm.state.lock("a").expect("held").holds[&lease].token, token);
    let next = sm.take(lease, "b");
    assert!(next > token && next >> 48 == 1, "{next:#x}");
    // A second force raises it again.
    let again = sm.apply(Command::ForceNewCluster {
        cluster_id: "forced-again".into(),
        node: 1,
        store_id: "store-1".into(),
        client_addr: "10.0.0.1:7401".into(),
    });
    assert!(matches!(
        again.result,
        Ok(Response::ClusterForced { epoch: 2, .. })
    ));
    raftlock_core::check_invariants(&sm.state).expect("invariants");
}
