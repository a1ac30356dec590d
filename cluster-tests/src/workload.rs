//! Workloads: seeded clients that lock a few hot names with short leases,
//! and the fenced resource they write while holding a lock.
//!
//! Each client is one process of the history, bound to one node, doing one
//! operation at a time:
//! - keeps one lease: grants it, keeps it alive when half its ttl is gone,
//!   grants a new one when it lapsed or was lost;
//! - acquires a random hot name (try, or wait up to a second), holds it a
//!   little and releases it; now and then it pauses while holding for
//!   longer than its ttl, so its lease expires under it;
//! - with the fenced register (`fenced`), while holding it reads the
//!   register named like the lock with its token, pauses, then writes the
//!   value read plus one with the same token, not knowing whether it still
//!   holds the lock. The resource checks every access.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::client::{CallError, NodeClient};
use crate::history::{Args, F, FINAL_READER, OpResult, OpType, Recorder};
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
        }
    }
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
    matches!(e, CallError::Definite(r) if r == "LEASE_NOT_FOUND" || r == "LEASE_EXPIRING")
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
            // 2. Acquire a hot name.
            let Some(name) = self.rng.pick(&self.config.names).cloned() else {
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
            };
            let inv =
                self.recorder
                    .invoke(self.process, self.node(), F::Acquire, Some(&name), args);
            match self.client.acquire(lease_id, &name, wait_ms).await {
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
                            ..OpResult::default()
                        },
                    );
                    if !self.hold(lease_id, &name, r.token).await {
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
                    if lease_gone(&e) || (kind == OpType::Info && e.reason() != "WAIT_TIMEOUT") {
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
                let until = sent + r.ttl_ms.min(ttl_ms) * 1_000_000;
                self.recorder.complete(
                    inv,
                    OpType::Ok,
                    OpResult {
                        lease_id: Some(r.lease_id),
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
                let until = sent + r.ttl_ms.min(self.config.ttl_ms) * 1_000_000;
                self.recorder.complete(
                    inv,
                    OpType::Ok,
                    OpResult {
                        lease_id: Some(lease_id),
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

    /// Holds `name` (reading and writing the register if fenced), then
    /// releases it. Returns false if the lease turned out to be gone.
    async fn hold(&mut self, lease_id: u64, name: &str, token: u64) -> bool {
        let read = if self.config.fenced {
            self.access(name, token, None)
        } else {
            None
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
                        error: Some("STALE_TOKEN".into()),
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
}
