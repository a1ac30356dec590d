//! Apply throughput of the pure state machine, no I/O.
//!
//! cargo run --release -p raftlock-bench --example apply_bench [-- SECONDS_PER_WORKLOAD]
//!
//! Workloads:
//! - distinct: 1,000 leases acquire and release their own lock (no contention);
//! - contended: 64 leases queue on one lock; each release hands it to the next;
//! - shared: 64 leases take one lock shared and release it;
//! - multi: acquire 4 locks at once and release them.
//!
//! Every workload also applies the 1,000-lease setup; states stay small
//! (debug_assert invariant checks are off in release builds).

use std::time::{Duration, Instant};

use raftlock_core::{Command, LockSpec, Metadata, Mode, Request, Response, State};

struct Driver {
    state: State,
    index: u64,
    applied: u64,
}

impl Driver {
    fn new() -> Self {
        Driver {
            state: State::new(),
            index: 0,
            applied: 0,
        }
    }

    fn apply(&mut self, command: Command) -> Response {
        self.index += 1;
        self.applied += 1;
        let request = Request::new(self.index, self.index, command);
        match self.state.apply(self.index, &request).result {
            Ok(r) => r,
            Err(e) => panic!("bench command failed: {e}"),
        }
    }

    fn leases(&mut self, n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| {
                match self.apply(Command::GrantLease {
                    ttl_ms: 60_000,
                    owner: format!("bench-{i}"),
                    identity: String::new(),
                    quota: Default::default(),
                }) {
                    Response::LeaseGranted { lease, .. } => lease,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }
}

fn acquire(lease: u64, names: &[String], mode: Mode, wait: bool) -> Command {
    Command::Acquire {
        lease,
        locks: names
            .iter()
            .map(|n| LockSpec {
                name: n.clone(),
                mode,
            })
            .collect(),
        wait,
        reason: String::new(),
        metadata: Metadata::new(),
        lock_delay_ms: 0,
        quota: Default::default(),
    }
}

fn token_of(r: &Response) -> u64 {
    match r {
        Response::Acquired { token, .. } => *token,
        other => panic!("{other:?}"),
    }
}

fn measure(name: &str, budget: Duration, mut round: impl FnMut(&mut Driver)) {
    let mut d = Driver::new();
    round(&mut d); // warm-up and setup
    let start_applied = d.applied;
    let start = Instant::now();
    while start.elapsed() < budget {
        round(&mut d);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = d.applied - start_applied;
    println!(
        "{name:<10} {:>12.0} commands/s  ({n} commands in {secs:.2} s, {:.2} µs each)",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let budget = Duration::from_secs_f64(secs);

    let mut leases: Vec<u64> = Vec::new();
    measure("distinct", budget, |d| {
        if leases.is_empty() {
            leases = d.leases(1_000);
        }
        for (i, lease) in leases.iter().enumerate() {
            let names = [format!("jobs/{i}")];
            let token = token_of(&d.apply(acquire(*lease, &names, Mode::Exclusive, false)));
            d.apply(Command::Release {
                lease: *lease,
                token,
                names: names.to_vec(),
            });
        }
    });

    let mut leases: Vec<u64> = Vec::new();
    measure("contended", budget, |d| {
        let names = ["hot".to_string()];
        if leases.is_empty() {
            leases = d.leases(64);
            for lease in &leases {
                d.apply(acquire(*lease, &names, Mode::Exclusive, true));
            }
        }
        // Whoever holds releases; the head waiter gets the lock; the releaser
        // queues again at the tail.
        for _ in 0..64 {
            let lock = d.state.lock("hot").expect("hot lock exists");
            let (holder, hold) = lock.holds.iter().next().expect("held");
            let (holder, token) = (*holder, hold.token);
            d.apply(Command::Release {
                lease: holder,
                token,
                names: names.to_vec(),
            });
            d.apply(acquire(holder, &names, Mode::Exclusive, true));
        }
    });

    let mut leases: Vec<u64> = Vec::new();
    measure("shared", budget, |d| {
        let names = ["doc".to_string()];
        if leases.is_empty() {
            leases = d.leases(64);
        }
        let tokens: Vec<u64> = leases
            .iter()
            .map(|l| token_of(&d.apply(acquire(*l, &names, Mode::Shared, false))))
            .collect();
        for (lease, token) in leases.iter().zip(tokens) {
            d.apply(Command::Release {
                lease: *lease,
                token,
                names: names.to_vec(),
            });
        }
    });

    let mut leases: Vec<u64> = Vec::new();
    measure("multi", budget, |d| {
        if leases.is_empty() {
            leases = d.leases(100);
        }
        for (i, lease) in leases.iter().enumerate() {
            let names: Vec<String> = (0..4).map(|k| format!("m/{i}/{k}")).collect();
            let token = token_of(&d.apply(acquire(*lease, &names, Mode::Exclusive, false)));
            d.apply(Command::Release {
                lease: *lease,
                token,
                names,
            });
        }
    });
}
