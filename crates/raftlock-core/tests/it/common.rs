//! A small driver for the state machine: it plays the leader, numbering
//! entries and stamping them with a cluster clock.
#![allow(dead_code)]

use raftlock_core::{
    Applied, Command, LeaseId, LockError, LockSpec, Metadata, Mode, Response, State, Token,
    WaiterId, check_invariants,
};

pub struct Sm {
    pub state: State,
    pub index: u64,
    pub clock_ms: u64,
    pub log: Vec<(u64, raftlock_core::Request)>,
}

impl Default for Sm {
    fn default() -> Self {
        Self::new()
    }
}

impl Sm {
    pub fn new() -> Self {
        Sm {
            state: State::new(),
            index: 0,
            clock_ms: 1_000,
            log: Vec::new(),
        }
    }

    pub fn apply(&mut self, command: Command) -> Applied {
        self.index += 1;
        let request = raftlock_core::Request::new(self.clock_ms, 1_700_000_000_000, command);
        let applied = self.state.apply(self.index, &request);
        self.log.push((self.index, request));
        check_invariants(&self.state).expect("invariants hold after every entry");
        applied
    }

    pub fn ok(&mut self, command: Command) -> Response {
        let applied = self.apply(command.clone());
        match applied.result {
            Ok(r) => r,
            Err(e) => panic!("{command:?} failed: {e}"),
        }
    }

    pub fn err(&mut self, command: Command) -> LockError {
        let applied = self.apply(command.clone());
        match applied.result {
            Ok(r) => panic!("{command:?} succeeded with {r:?}"),
            Err(e) => e,
        }
    }

    pub fn lease(&mut self) -> LeaseId {
        self.lease_with("tester", 10_000)
    }

    pub fn lease_with(&mut self, owner: &str, ttl_ms: u64) -> LeaseId {
        match self.ok(Command::GrantLease {
            ttl_ms,
            owner: owner.to_string(),
            identity: String::new(),
            quota: Default::default(),
        }) {
            Response::LeaseGranted { lease, .. } => lease,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Try to acquire one lock exclusively; returns the token.
    pub fn take(&mut self, lease: LeaseId, name: &str) -> Token {
        self.take_mode(lease, name, Mode::Exclusive)
    }

    pub fn take_mode(&mut self, lease: LeaseId, name: &str, mode: Mode) -> Token {
        match self.ok(acquire(lease, &[(name, mode)], false)) {
            Response::Acquired { token, .. } => token,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Acquire with wait; returns the waiter id if queued, None if granted.
    pub fn wait(&mut self, lease: LeaseId, locks: &[(&str, Mode)]) -> Option<WaiterId> {
        match self.ok(acquire(lease, locks, true)) {
            Response::Queued { waiter, .. } => Some(waiter),
            Response::Acquired { .. } => None,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn release(&mut self, lease: LeaseId, name: &str, token: Token) {
        self.ok(Command::Release {
            lease,
            token,
            names: vec![name.to_string()],
        });
    }

    pub fn holders(&self, name: &str) -> Vec<LeaseId> {
        self.state
            .lock(name)
            .map(|l| l.holds.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn token_of(&self, name: &str, lease: LeaseId) -> Token {
        self.state.lock(name).expect("lock exists").holds[&lease].token
    }

    pub fn queue(&self, name: &str) -> Vec<WaiterId> {
        self.state
            .lock(name)
            .map(|l| l.queue.iter().copied().collect())
            .unwrap_or_default()
    }
}

pub fn acquire(lease: LeaseId, locks: &[(&str, Mode)], wait: bool) -> Command {
    Command::Acquire {
        lease,
        locks: locks
            .iter()
            .map(|(name, mode)| LockSpec {
                name: name.to_string(),
                mode: *mode,
            })
            .collect(),
        wait,
        reason: String::new(),
        metadata: Metadata::new(),
        lock_delay_ms: 0,
        quota: Default::default(),
    }
}

pub const X: Mode = Mode::Exclusive;
pub const S: Mode = Mode::Shared;
