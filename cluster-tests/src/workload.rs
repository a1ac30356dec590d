//! Workloads: seeded clients that lock a few hot names with short leases,
//! and the fenced resource they write while holding a lock.
//!
//! Each client is one process of the history, bound to one node, doing one
//! operation at a time:
//! - keeps one lease: grants it, keeps it alive when half its ttl is gone,
//!   grants a new one when it lapsed or was lost;
//! - acquires a random hot name exclusively (try, or wait up to a second),
//!   holds it a little and releases it; now and then it pauses while
//!   holding for longer than its ttl, so its lease expires under it;
//! - a share of its acquires (`mode_percent`) go instead to a semaphore
//!   name (`semaphore_names`, `semaphore_permits` holders together) or to a
//!   readers/writer name (`rw_names`: shared readers, `shared_percent` of
//!   them, and exclusive writers);
//! - with the fenced register (`fenced`), while holding exclusively it
//!   reads the register named like the lock with its token, pauses, then
//!   writes the value read plus one with the same token, not knowing
//!   whether it still holds the lock; a shared reader only reads it. The
//!   resource checks every access. Semaphore holders leave it alone
//!   (holders together would lose updates by design).
//!
//! Every validity window the client computes is `send time + granted ttl`
//! (the smaller of the ttl asked for and the ttl the cluster answered),
//! shortened by `drift_margin_percent` ([`valid_until_ns`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use raftlock_proto::errors::ErrorReason;
use tokio::sync::watch;

use crate::client::{CallError, NodeClient};
use crate::history::{Args, F, FINAL_READER, HoldMode, OpResult, OpType, Recorder};
use crate::rng::Rng;

/// A harness-owned resource guarded by fencing tokens: every read and
/// write presents a token and is rejected if a higher one was seen.
#[derive(Clone, Default)]
pub struct FencedResource {
    registers: Arc<Mutex<BTreeMap<String, Register>>>,
}

#[derive(Default, Clone, Copy)]
struct Register {
    highest_token: u64,
    value: u64,
}

impl FencedResource {
    fn access(&self, name: &str, token: u64, write: Option<u64>) -> Result<u64, u64> {
        let mut regs = self
            .registers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let r = regs.entry(name.to_string()).or_default();
        if token < r.highest_token {
            return Err(r.highest_token);
        }
        r.highest_token = token;
        if let Some(v) = write {
            r.value = v;
        }
        Ok(r.value)
    }

    /// Reads with `token`: the value, or the higher token that rejects it.
    pub fn read(&self, name: &str, token: u64) -> Result<u64, u64> {
        self.access(name, token, None)
    }

    /// Writes with `token`, or the higher token that rejects it.
    pub fn write(&self, name: &str, token: u64, value: u64) -> Result<(), u64> {
        self.access(name, token, Some(value)).map(|_| ())
    }

    /// Every register's value (no token: the harness's own final read).
    pub fn values(&self) -> BTreeMap<String, u64> {
        self.registers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, r)| (k.clone(), r.value))
            .collect()
    }

    /// Records the final value of every register in the history.
    pub fn record_final_reads(&self, recorder: &Recorder) {
        for (name, value) in self.values() {
            let inv = recorder.invoke(
                FINAL_READER,
                None,
                F::FinalRead,
                Some(&name),
                Args::default(),
            );
            recorder.complete(
                inv,
                OpType::Ok,
                OpResult {
                    value: Some(value),
                    ..OpResult::default()
                },
            );
        }
    }
}

/// Knobs of the lock workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Hot names every client competes for.
    pub names: Vec<String>,
    pub ttl_ms: u64,
    /// How long a client holds a lock (uniform in the range).
    pub hold_ms: (u64, u64),
    /// Percent of holds during which the client pauses past its ttl.
    pub pause_percent: u64,
    /// Percent of acquires that wait (up to `max_wait_ms`) instead of trying.
    pub wait_percent: u64,
    pub max_wait_ms: u64,
    /// Pause between operations (uniform in 0..=think_ms).
    pub think_ms: u64,
    /// Read-pause-write the fenced register while holding.
    pub fenced: bool,
    /// Percent of acquires that go to a semaphore or readers/writer name
    /// instead of an exclusive hot name (when there are such names).
    pub mode_percent: u64,
    /// Names acquired in semaphore mode with `semaphore_permits`.
    pub semaphore_names: Vec<String>,
    pub semaphore_permits: u32,
    /// Names acquired as readers/writer locks.
    pub rw_names: Vec<String>,
    /// Percent of the acquires of an rw name that are shared (readers).
    pub shared_percent: u64,
    /// Shortens every validity the client computes by this percent of the
    /// granted ttl, for clock-rate drift between client and cluster (the
    /// Rust client's default is 5).
    pub drift_margin_percent: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            names: vec!["hot/a".into(), "hot/b".into()],
            ttl_ms: 1_500,
            hold_ms: (10, 150),
            pause_percent: 5,
            wait_percent: 50,
            max_wait_ms: 1_000,
            think_ms: 30,
            fenced: true,
            mode_percent: 30,
            semaphore_names: vec!["sem/0".into()],
            semaphore_permits: 3,
            rw_names: vec!["rw/0".into()],
            shared_percent: 60,
            drift_margin_percent: 0,
        }
    }
}

/// The end of a validity the client counts from `sent_ns` (the send time
/// of the acknowledged grant or keep-alive): the granted ttl is the smaller
/// of the ttl asked for and the one the cluster answered (it may clamp it),
/// shortened by `drift_margin_percent` (at most 100).
pub fn valid_until_ns(
    sent_ns: u64,
    requested_ttl_ms: u64,
    answered_ttl_ms: u64,
    drift_margin_percent: u64,
) -> u64 {
    let granted_ms = requested_ttl_ms.min(answered_ttl_ms);
    let kept = 100 - drift_margin_percent.min(100);
    let counted_ns = u128::from(granted_ms) * 1_000_000 * u128::from(kept) / 100;
    sent_ns.saturating_add(u64::try_from(counted_ns).unwrap_or(u64::MAX))
}

/// The next lock a client acquires and how.
fn pick_lock(c: &WorkloadConfig, rng: &mut Rng) -> Option<(String, HoldMode)> {
    let special = c.semaphore_names.len() + c.rw_names.len();
    if special > 0 && (c.names.is_empty() || rng.chance(c.mode_percent)) {
        let i = rng.range(0, special as u64 - 1) as usize;
        if let Some(name) = c.semaphore_names.get(i) {
            let permits = c.semaphore_permits.max(1);
            return Some((name.clone(), HoldMode::Semaphore { permits }));
        }
        let name = c.rw_names.get(i - c.semaphore_names.len())?.clone();
        let mode = if rng.chance(c.shared_percent) {
            HoldMode::Shared
        } else {
            HoldMode::Exclusive
        };
        return Some((name, mode));
    }
    let name = rng.pick(&c.names)?.clone();
    Some((name, HoldMode::Exclusive))
}

struct Lease {
    id: u64,
    valid_until_ns: u64,
}

/// One client process.
pub struct Worker {
    pub process: i64,
    pub client: NodeClient,
    pub recorder: Recorder,
    pub resource: FencedResource,
    pub config: WorkloadConfig,
    pub rng: Rng,
}

fn result_err(e: &CallError) -> (OpType, OpResult) {
    let kind = match e {
        CallError::Definite(_) => OpType::Fail,
        CallError::Indeterminate(_) => OpType::Info,
    };
    (
        kind,
        OpResult {
            error: Some(e.reason().to_string()),
            ..OpResult::default()
        },
    )
}

fn lease_gone(e: &CallError) -> bool {
    matches!(e, CallError::Definite(r) if ErrorReason::parse(r).is_some_and(ErrorReason::is_lease_gone))
}

impl Worker {
    fn node(&self) -> Option<u64> {
        Some(self.client.node)
    }

    async fn sleep_unless_stopped(stop: &mut watch::Receiver<bool>, ms: u64) {
        let _ = tokio::time::timeout(Duration::from_millis(ms), stop.wait_for(|s| *s)).await;
    }

    /// Runs until `stop` turns true (the operation in flight completes
    /// first: every call has a deadline).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let ttl_ns = self.config.ttl_ms * 1_000_000;
        let mut lease: Option<Lease> = None;
        while !*stop.borrow() {
            let now = self.recorder.now_ns();
            // 1. A lease we believe in.
            let current = match &lease {
                Some(l) if l.valid_until_ns > now => l,
                _ => {
                    lease = self.grant().await;
                    if lease.is_none() {
                        Self::sleep_unless_stopped(&mut stop, 100).await;
                    }
                    continue;
                }
            };
            if current.valid_until_ns - now < ttl_ns / 2 {
                let id = current.id;
                match self.keep_alive(id).await {
                    Ok(Some(until)) => {
                        if let Some(l) = lease.as_mut() {
                            l.valid_until_ns = l.valid_until_ns.max(until);
                        }
                    }
                    Ok(None) => {}
                    Err(()) => lease = None,
                }
                continue;
            }
            let (lease_id, valid_until_ns) = (current.id, current.valid_until_ns);
            // 2. Acquire a hot name, or a semaphore or rw name.
            let Some((name, mode)) = pick_lock(&self.config, &mut self.rng) else {
                return;
            };
            let wait_ms = if self.rng.chance(self.config.wait_percent) {
                self.rng.range(100, self.config.max_wait_ms)
            } else {
                0
            };
            let args = Args {
                lease_id: Some(lease_id),
                wait_ms: Some(wait_ms),
                ..Args::default()
            }
            .with_mode(mode);
            let inv =
                self.recorder
                    .invoke(self.process, self.node(), F::Acquire, Some(&name), args);
            match self.client.acquire(lease_id, &name, wait_ms, mode).await {
                Ok(r) => {
                    let now = self.recorder.now_ns();
                    self.recorder.complete(
                        inv,
                        OpType::Ok,
                        OpResult {
                            lease_id: Some(lease_id),
                            token: Some(r.token),
                            valid_from_ns: Some(now),
                            valid_until_ns: Some(valid_until_ns),
                            retry: Some(r.retry),
                            ..OpResult::default()
                        },
                    );
                    if !self.hold(lease_id, &name, r.token, mode).await {
                        lease = None;
                    }
                }
                Err(e) => {
                    let (kind, result) = result_err(&e);
                    self.recorder.complete(inv, kind, result);
                    // After an indeterminate acquire we cannot know what we
                    // hold: abandon the lease and let it expire. (A wait
                    // that timed out was withdrawn by the cluster, its hold
                    // released if the grant won the race: the lease holds
                    // nothing from it.)
                    if lease_gone(&e)
                        || (kind == OpType::Info && e.reason() != ErrorReason::WaitTimeout.name())
                    {
                        lease = None;
                    }
                }
            }
            let think = self.rng.range(0, self.config.think_ms);
            Self::sleep_unless_stopped(&mut stop, think).await;
        }
    }

    async fn grant(&mut self) -> Option<Lease> {
        let ttl_ms = self.config.ttl_ms;
        let args = Args {
            ttl_ms: Some(ttl_ms),
            ..Args::default()
        };
        let inv = self
            .recorder
            .invoke(self.process, self.node(), F::Grant, None, args);
        let sent = inv.time_ns;
        let owner = format!("jepsen-{}", self.process);
        match self.client.grant(ttl_ms, &owner).await {
            Ok(r) => {
                let until =
                    valid_until_ns(sent, ttl_ms, r.ttl_ms, self.config.drift_margin_percent);
                self.recorder.complete(
                    inv,
                    OpType::Ok,
                    OpResult {
                        lease_id: Some(r.lease_id),
                        ttl_ms: Some(r.ttl_ms),
                        valid_until_ns: Some(until),
                        ..OpResult::default()
                    },
                );
                Some(Lease {
                    id: r.lease_id,
                    valid_until_ns: until,
                })
            }
            Err(e) => {
                let (kind, result) = result_err(&e);
                self.recorder.complete(inv, kind, result);
                None
            }
        }
    }

    /// Ok(Some(new bound)), Ok(None) when indeterminate, Err when the lease
    /// is gone.
    async fn keep_alive(&mut self, lease_id: u64) -> Result<Option<u64>, ()> {
        let args = Args {
            lease_id: Some(lease_id),
            ..Args::default()
        };
        let inv = self
            .recorder
            .invoke(self.process, self.node(), F::KeepAlive, None, args);
        let sent = inv.time_ns;
        match self.client.keep_alive(lease_id).await {
            Ok(r) => {
                let until = valid_until_ns(
                    sent,
                    self.config.ttl_ms,
                    r.ttl_ms,
                    self.config.drift_margin_percent,
                );
                self.recorder.complete(
                    inv,
                    OpType::Ok,
                    OpResult {
                        lease_id: Some(lease_id),
                        ttl_ms: Some(r.ttl_ms),
                        valid_until_ns: Some(until),
                        ..OpResult::default()
                    },
                );
                Ok(Some(until))
            }
            Err(e) => {
                let (kind, result) = result_err(&e);
                self.recorder.complete(inv, kind, result);
                if lease_gone(&e) { Err(()) } else { Ok(None) }
            }
        }
    }

    /// Holds `name` (reading and writing the register if fenced and
    /// exclusive, only reading it if shared), then releases it. Returns
    /// false if the lease turned out to be gone.
    async fn hold(&mut self, lease_id: u64, name: &str, token: u64, mode: HoldMode) -> bool {
        let read = match mode {
            _ if !self.config.fenced => None,
            HoldMode::Exclusive => self.access(name, token, None),
            HoldMode::Shared => {
                let _ = self.access(name, token, None);
                None
            }
            HoldMode::Semaphore { .. } => None,
        };
        let pause = if self.rng.chance(self.config.pause_percent) {
            // Past the lease: the cluster may give the lock to another.
            self.config.ttl_ms + self.rng.range(200, 1_000)
        } else {
            self.rng.range(self.config.hold_ms.0, self.config.hold_ms.1)
        };
        // A paused client is not interrupted by the stop signal: it wakes
        // up late, as a paused process would.
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if let Some(v) = read {
            let _ = self.access(name, token, Some(v + 1));
        }
        let args = Args {
            lease_id: Some(lease_id),
            token: Some(token),
            ..Args::default()
        };
        let inv = self
            .recorder
            .invoke(self.process, self.node(), F::Release, Some(name), args);
        match self.client.release(lease_id, token, name).await {
            Ok(_) => {
                self.recorder.complete(inv, OpType::Ok, OpResult::default());
                true
            }
            Err(e) => {
                let (kind, result) = result_err(&e);
                self.recorder.complete(inv, kind, result);
                !lease_gone(&e)
            }
        }
    }

    /// A read (`write` None) or write of the fenced register, recorded.
    /// Returns the value read, if accepted.
    fn access(&mut self, name: &str, token: u64, write: Option<u64>) -> Option<u64> {
        let args = Args {
            token: Some(token),
            value: write,
            ..Args::default()
        };
        let f = if write.is_some() { F::Write } else { F::Read };
        let inv = self
            .recorder
            .invoke(self.process, None, f, Some(name), args);
        let outcome = match write {
            Some(v) => self.resource.write(name, token, v).map(|_| v),
            None => self.resource.read(name, token),
        };
        match outcome {
            Ok(v) => {
                self.recorder.complete(
                    inv,
                    OpType::Ok,
                    OpResult {
                        value: write.is_none().then_some(v),
                        ..OpResult::default()
                    },
                );
                Some(v)
            }
            Err(higher) => {
                self.recorder.complete(
                    inv,
                    OpType::Fail,
                    OpResult {
                        token: Some(higher),
                        error: Some(ErrorReason::StaleToken.name().into()),
                        ..OpResult::default()
                    },
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_rejects_lower_tokens_on_reads_and_writes() {
        let r = FencedResource::default();
        assert_eq!(r.read("x", 5), Ok(0));
        assert_eq!(r.write("x", 5, 1), Ok(()));
        assert_eq!(r.read("x", 7), Ok(1));
        // The paused holder of 5 can neither write nor read any more.
        assert_eq!(r.write("x", 5, 9), Err(7));
        assert_eq!(r.read("x", 5), Err(7));
        assert_eq!(r.values()["x"], 1);
    }

    #[test]
    fn validity_counts_the_granted_ttl_not_the_requested_one() {
        // The cluster clamped a 10 s request to 2 s: the client counts 2 s.
        assert_eq!(
            valid_until_ns(1_000, 10_000, 2_000, 0),
            1_000 + 2_000_000_000
        );
        // It answered more than asked: the client counts what it asked for.
        assert_eq!(
            valid_until_ns(1_000, 1_500, 3_000, 0),
            1_000 + 1_500_000_000
        );
    }

    #[test]
    fn the_drift_margin_shortens_every_validity() {
        assert_eq!(valid_until_ns(0, 2_000, 2_000, 5), 1_900_000_000);
        assert_eq!(valid_until_ns(7, 1_500, 1_000, 10), 7 + 900_000_000);
        // A margin past 100 % leaves nothing, never wraps.
        assert_eq!(valid_until_ns(7, 1_500, 1_500, 250), 7);
    }

    #[test]
    fn by_default_a_modest_share_of_acquires_use_semaphore_and_rw_modes() {
        let config = WorkloadConfig::default();
        assert!(config.mode_percent > 0 && config.mode_percent <= 50);
        let mut rng = Rng::new(3);
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for _ in 0..1_000 {
            let (name, mode) = pick_lock(&config, &mut rng).expect("a lock");
            let key = match mode {
                HoldMode::Exclusive if name.starts_with("hot/") => "exclusive".to_string(),
                HoldMode::Exclusive => format!("{name} writer"),
                HoldMode::Shared => format!("{name} reader"),
                HoldMode::Semaphore { permits } => format!("{name} permits {permits}"),
            };
            *seen.entry(key).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen["exclusive"] > 500, "{seen:?}");
        assert!(seen["sem/0 permits 3"] > 50, "{seen:?}");
        assert!(seen["rw/0 reader"] > seen["rw/0 writer"], "{seen:?}");
    }
}
