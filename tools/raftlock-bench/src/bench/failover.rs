//! `--workload failover`: ONE client takes ONE lock once, as soon as the
//! cluster lets it, and says when. `scripts/bench.sh` starts it at the
//! `kill -9` of a leader, with the surviving nodes as `--endpoints` and the
//! kill's time as `--since-epoch`, for raftlock, etcd and ZooKeeper alike.
//!
//! The retry behaviour is the same for the three systems, so the figures
//! differ only by what the systems do:
//! - An attempt is what a client of the system does to take a lock it does
//!   not hold yet: raftlock: grant a lease (ttl 30 s), then Acquire with
//!   that lease (try: the name is fresh, nobody else wants it); etcd: grant
//!   a lease (ttl 30 s), then v3lock's Lock; ZooKeeper: open a session
//!   (timeout 30 s), then the lock recipe of Curator's InterProcessMutex
//!   (create the protected ephemeral sequential znode, creating the lock's
//!   directory when it is missing as Curator's
//!   `creatingParentContainersIfNeeded` does, then list the contenders).
//!   A lease or session that was granted is kept for the next attempts (as
//!   a client would keep it), and a ZooKeeper create that may have happened
//!   without an answer is found again by its protected prefix (Curator's
//!   protected mode) rather than repeated.
//! - Every call has the same deadline (`--call-timeout`, default 1 s, never
//!   past the overall deadline); a call with no answer by then fails the
//!   attempt.
//! - After ANY failed attempt the client pauses the same fixed time
//!   (`--retry-pause`, default 25 ms, what etcd's Go client pauses between
//!   retries), with no backoff and no jitter, and tries again, until it
//!   holds the lock or `--duration` has passed since it started.
//! - Where the next attempt goes is each system's own client protocol:
//!   raftlock: the leader a NOT_LEADER answer named (raftlock's clients
//!   follow it), else the next endpoint in turn; etcd: the next endpoint in
//!   turn after a failure (etcd's members forward to their leader
//!   themselves); ZooKeeper: the client library is given every endpoint and
//!   picks and changes the server itself (it tries each once when opening a
//!   session, and moves an open session to another server when its
//!   connection breaks). A connection to a raftlock or etcd endpoint is
//!   dropped after a failed attempt on it, so the next attempt there
//!   connects afresh.
//!
//! The time reported ends when the lock is held (the answer that grants it
//! has arrived); releasing it, revoking the lease and closing the session
//! afterwards are not timed.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

use super::{
    ErrorCounts, LEASE_TTL_MS, OpError, Plan, Target, ZK_CLOSE_GRACE, ZK_LOCK_NAME, epb, lockpb,
    pb, round2, zk, zk_lock_dir, zk_unlock, zk_wait_first,
};
use crate::{Failure, error_chain};

/// What etcd's Go client pauses between retries of a call (its retry
/// interceptor's `defaultBackoffWaitBetween`).
const DEFAULT_RETRY_PAUSE: Duration = Duration::from_millis(25);
/// Per call: long enough for a synced write on a busy machine, short enough
/// that a call lost with a dead leader does not decide the figure.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest --retry-pause: a pause longer than an election would only hide
/// the system's own time.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);
/// The owner written into the leases (raftlock).
const OWNER: &str = "raftlock-bench/failover";

/// The failover workload's flags, checked.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Settings {
    /// Unix seconds to time from (the kill); None: from the process start.
    pub since_epoch: Option<f64>,
    pub retry_pause: Duration,
    pub call_timeout: Duration,
}

impl Settings {
    pub fn new(
        since_epoch: Option<f64>,
        retry_pause: Option<Duration>,
        call_timeout: Option<Duration>,
    ) -> Result<Settings, Failure> {
        let retry_pause = retry_pause.unwrap_or(DEFAULT_RETRY_PAUSE);
        if retry_pause > MAX_RETRY_PAUSE {
            return Err(Failure::Usage(format!(
                "--retry-pause must be at most {} s",
                MAX_RETRY_PAUSE.as_secs()
            )));
        }
        let call_timeout = call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT);
        if call_timeout.is_zero() {
            return Err(Failure::Usage("--call-timeout must be more than 0".into()));
        }
        Ok(Settings {
            since_epoch,
            retry_pause,
            call_timeout,
        })
    }
}

/// A lock name no earlier run used: a hold that one could not release (its
/// lease or session lives on for up to 30 s) must not be in the way.
pub(super) fn lock_name() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("bench/failover/{}-{micros}", std::process::id())
}

/// The retry loop's bookkeeping: attempts, errors, the fixed pause and the
/// overall deadline. Pure (the caller passes the time), so it is tested
/// without a cluster.
#[derive(Debug)]
struct Attempts {
    deadline: Instant,
    pause: Duration,
    call_timeout: Duration,
    attempts: u32,
    errors: ErrorCounts,
    last_error: Option<String>,
}

impl Attempts {
    fn new(started: Instant, limit: Duration, pause: Duration, call_timeout: Duration) -> Self {
        Attempts {
            deadline: started + limit,
            pause,
            call_timeout,
            attempts: 0,
            errors: ErrorCounts::default(),
            last_error: None,
        }
    }

    /// Starts an attempt.
    fn begin(&mut self) {
        self.attempts += 1;
    }

    /// How long the next call may take: the call timeout, but never past
    /// the deadline. None once the deadline has passed.
    fn call_budget(&self, now: Instant) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        Some(left.min(self.call_timeout))
    }

    /// Counts a failed attempt; returns the pause before the next one, or
    /// None when the deadline passes before that one could start.
    fn failed(&mut self, e: &OpError, now: Instant) -> Option<Duration> {
        self.errors.record(e, true);
        self.last_error = Some(e.detail.clone());
        if now + self.pause >= self.deadline {
            None
        } else {
            Some(self.pause)
        }
    }
}

/// Where the next raftlock or etcd attempt goes: a leader that the last
/// failure named (once), else the endpoints in turn.
#[derive(Debug)]
struct Rotation {
    endpoints: Vec<String>,
    next: usize,
    hint: Option<String>,
}

impl Rotation {
    /// `endpoints` is not empty (Plan::new makes sure).
    fn new(endpoints: Vec<String>) -> Self {
        Rotation {
            endpoints,
            next: 0,
            hint: None,
        }
    }

    fn pick(&mut self) -> String {
        if let Some(hint) = self.hint.take() {
            return hint;
        }
        let endpoint = self.endpoints[self.next % self.endpoints.len()].clone();
        self.next = self.next.wrapping_add(1);
        endpoint
    }

    /// The next attempt goes to `leader`, when a failure named one.
    fn follow(&mut self, leader: Option<&str>) {
        if let Some(leader) = leader.filter(|l| !l.is_empty()) {
            self.hint = Some(leader.to_string());
        }
    }
}

/// Runs `call` with `budget`, a missing answer by then being an error that
/// names `what` and `endpoint`.
async fn within<T, F>(budget: Duration, endpoint: &str, what: &str, call: F) -> Result<T, OpError>
where
    F: Future<Output = Result<T, OpError>>,
{
    match tokio::time::timeout(budget, call).await {
        Ok(result) => result,
        Err(_) => Err(OpError::other(
            "CALL_TIMEOUT",
            format!(
                "{endpoint}: no answer to {what} within {} ms",
                budget.as_millis()
            ),
        )),
    }
}

/// The client's connection (or session), lease and hold, kept between
/// attempts.
enum FailoverClient {
    Raftlock {
        rotation: Rotation,
        channels: HashMap<String, Channel>,
        lease_id: Option<u64>,
        /// Where and with which token the lock is held.
        held: Option<(String, u64)>,
    },
    Etcd {
        rotation: Rotation,
        channels: HashMap<String, Channel>,
        lease_id: Option<i64>,
        /// Where, and etcd's ownership key.
        held: Option<(String, Vec<u8>)>,
    },
    Zookeeper {
        /// Every endpoint, comma-separated: the library picks the server.
        connect_string: String,
        session: Option<zk::Client>,
        /// Curator's protected-mode prefix `_c_<uuid>-`, one for the whole
        /// run (as one InterProcessMutex acquire keeps its id over retries).
        protected: String,
        /// Whether a create was sent in this session (its znode may exist
        /// though its answer was lost).
        create_sent: bool,
        /// Our contender znode, once the lock is held.
        held: Option<String>,
    },
}

impl FailoverClient {
    fn new(plan: &Plan) -> Self {
        match plan.target {
            Target::Raftlock => FailoverClient::Raftlock {
                rotation: Rotation::new(plan.endpoints.clone()),
                channels: HashMap::new(),
                lease_id: None,
                held: None,
            },
            Target::Etcd => FailoverClient::Etcd {
                rotation: Rotation::new(plan.endpoints.clone()),
                channels: HashMap::new(),
                lease_id: None,
                held: None,
            },
            Target::Zookeeper => FailoverClient::Zookeeper {
                connect_string: plan.endpoints.join(","),
                session: None,
                protected: format!("_c_{}-", uuid::Uuid::new_v4()),
                create_sent: false,
                held: None,
            },
        }
    }

    /// One attempt to hold `name`. Ok: where it is held.
    async fn attempt(&mut self, name: &str, attempts: &Attempts) -> Result<String, OpError> {
        let budget = || {
            attempts
                .call_budget(Instant::now())
                .unwrap_or(Duration::ZERO)
        };
        match self {
            FailoverClient::Raftlock {
                rotation,
                channels,
                lease_id,
                held,
            } => {
                let endpoint = rotation.pick();
                let result = async {
                    let channel = channel(channels, &endpoint, budget()).await?;
                    let lease = match *lease_id {
                        Some(id) => id,
                        None => {
                            let mut req = Request::new(pb::GrantLeaseRequest {
                                ttl_ms: LEASE_TTL_MS,
                                owner: OWNER.to_string(),
                            });
                            let b = budget();
                            req.set_timeout(b);
                            let mut leases = pb::leases_client::LeasesClient::new(channel.clone());
                            let id = within(b, &endpoint, "Grant", async {
                                leases
                                    .grant(req)
                                    .await
                                    .map(|r| r.into_inner().lease_id)
                                    .map_err(|s| OpError::raftlock(&s))
                            })
                            .await?;
                            *lease_id = Some(id);
                            id
                        }
                    };
                    let mut req = Request::new(pb::AcquireRequest {
                        lease_id: lease,
                        locks: vec![pb::LockSpec {
                            name: name.to_string(),
                            mode: pb::Mode::Exclusive as i32,
                            permits: 0,
                        }],
                        // Try: the name is fresh, and a retry by the same
                        // lease is idempotent.
                        wait_timeout_ms: 0,
                        ..Default::default()
                    });
                    let b = budget();
                    req.set_timeout(b);
                    let mut locks = pb::locks_client::LocksClient::new(channel);
                    within(b, &endpoint, "Acquire", async {
                        locks
                            .acquire(req)
                            .await
                            .map(|r| r.into_inner().token)
                            .map_err(|s| OpError::raftlock(&s))
                    })
                    .await
                }
                .await;
                match result {
                    Ok(token) => {
                        *held = Some((endpoint.clone(), token));
                        Ok(endpoint)
                    }
                    Err(e) => {
                        channels.remove(&endpoint);
                        rotation.follow(e.leader_addr.as_deref());
                        Err(e)
                    }
                }
            }
            FailoverClient::Etcd {
                rotation,
                channels,
                lease_id,
                held,
            } => {
                let endpoint = rotation.pick();
                let result = async {
                    let channel = channel(channels, &endpoint, budget()).await?;
                    let lease = match *lease_id {
                        Some(id) => id,
                        None => {
                            let mut req = Request::new(epb::LeaseGrantRequest {
                                ttl: i64::try_from(LEASE_TTL_MS / 1000).unwrap_or(30),
                                id: 0,
                            });
                            let b = budget();
                            req.set_timeout(b);
                            let mut leases = epb::lease_client::LeaseClient::new(channel.clone());
                            let id = within(b, &endpoint, "LeaseGrant", async {
                                let r = leases
                                    .lease_grant(req)
                                    .await
                                    .map_err(|s| OpError::etcd(&s))?
                                    .into_inner();
                                if r.error.is_empty() {
                                    Ok(r.id)
                                } else {
                                    Err(OpError::other(
                                        "LEASE_REFUSED",
                                        format!("etcd refused the lease: {}", r.error),
                                    ))
                                }
                            })
                            .await?;
                            *lease_id = Some(id);
                            id
                        }
                    };
                    let mut req = Request::new(lockpb::LockRequest {
                        name: name.as_bytes().to_vec(),
                        lease,
                    });
                    let b = budget();
                    req.set_timeout(b);
                    let mut lock = lockpb::lock_client::LockClient::new(channel);
                    within(b, &endpoint, "Lock", async {
                        lock.lock(req)
                            .await
                            .map(|r| r.into_inner().key)
                            .map_err(|s| OpError::etcd(&s))
                    })
                    .await
                }
                .await;
                match result {
                    Ok(key) => {
                        *held = Some((endpoint.clone(), key));
                        Ok(endpoint)
                    }
                    Err(e) => {
                        channels.remove(&endpoint);
                        Err(e)
                    }
                }
            }
            FailoverClient::Zookeeper {
                connect_string,
                session,
                protected,
                create_sent,
                held,
            } => {
                let endpoint = connect_string.clone();
                if session.as_ref().is_none_or(|s| s.state().is_terminated()) {
                    let connect = zk::Client::connector()
                        .with_session_timeout(Duration::from_millis(LEASE_TTL_MS))
                        // Try each server once and report, rather than
                        // cycle with the library's own backoff: the pause
                        // between attempts is this loop's.
                        .with_fail_eagerly()
                        .connect(connect_string);
                    let client = within(budget(), &endpoint, "the session's creation", async {
                        connect.await.map_err(|e| OpError::zookeeper(&e))
                    })
                    .await?;
                    *session = Some(client);
                    *create_sent = false;
                }
                let Some(zk) = session.as_ref() else {
                    return Err(OpError::other("ZK_NO_SESSION", "no session".into()));
                };
                let dir = zk_lock_dir(name);
                let prefix = format!("{dir}/{protected}{ZK_LOCK_NAME}");
                // Curator's protected mode: a create of an earlier attempt
                // may have made our znode though its answer was lost; look
                // for it by our prefix before creating another (a second
                // one would queue behind the first for good).
                let mut ours = None;
                if *create_sent {
                    let children = within(budget(), &endpoint, "getChildren", async {
                        match zk.list_children(&dir).await {
                            Ok(children) => Ok(children),
                            Err(zk::Error::NoNode) => Ok(Vec::new()),
                            Err(e) => Err(OpError::zookeeper(&e)),
                        }
                    })
                    .await?;
                    ours = children
                        .iter()
                        .find(|c| c.starts_with(protected.as_str()))
                        .map(|c| format!("{dir}/{c}"));
                }
                let ours = match ours {
                    Some(ours) => ours,
                    None => {
                        let mode =
                            zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
                        *create_sent = true;
                        let first = within(budget(), &endpoint, "create", async {
                            Ok(zk.create(&prefix, &[], &mode).await)
                        })
                        .await?;
                        let sequence = match first {
                            Ok((_, sequence)) => sequence,
                            Err(zk::Error::NoNode) => {
                                // The lock's directory is missing: make it,
                                // then create again (Curator's
                                // creatingParentContainersIfNeeded).
                                let persistent =
                                    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                                within(budget(), &endpoint, "mkdir", async {
                                    zk.mkdir(&dir, &persistent)
                                        .await
                                        .map_err(|e| OpError::zookeeper(&e))
                                })
                                .await?;
                                within(budget(), &endpoint, "create", async {
                                    zk.create(&prefix, &[], &mode)
                                        .await
                                        .map(|(_, sequence)| sequence)
                                        .map_err(|e| OpError::zookeeper(&e))
                                })
                                .await?
                            }
                            Err(e) => return Err(OpError::zookeeper(&e)),
                        };
                        format!("{prefix}{sequence}")
                    }
                };
                within(
                    budget(),
                    &endpoint,
                    "the wait for the lock",
                    zk_wait_first(zk, &dir, &ours),
                )
                .await?;
                *held = Some(ours);
                Ok(endpoint)
            }
        }
    }

    /// Releases the lock and ends the lease or session, best effort, after
    /// the measurement: a failure is noted, not fatal (the lease or session
    /// expires within 30 s and the name is not used again).
    async fn clean_up(&mut self, name: &str, budget: Duration) {
        let mut failed = Vec::new();
        match self {
            FailoverClient::Raftlock {
                channels,
                lease_id,
                held,
                ..
            } => {
                if let (Some((endpoint, _)), Some(lease)) = (held.as_ref(), *lease_id)
                    && let Some(channel) = channels.get(endpoint)
                {
                    // Revoking the lease releases its hold too.
                    let mut req = Request::new(pb::RevokeLeaseRequest { lease_id: lease });
                    req.set_timeout(budget);
                    let mut leases = pb::leases_client::LeasesClient::new(channel.clone());
                    if let Err(s) = leases.revoke(req).await {
                        failed.push(OpError::raftlock(&s).detail);
                    }
                }
            }
            FailoverClient::Etcd {
                channels,
                lease_id,
                held,
                ..
            } => {
                if let (Some((endpoint, _)), Some(lease)) = (held.as_ref(), *lease_id)
                    && let Some(channel) = channels.get(endpoint)
                {
                    // Revoking the lease deletes the ownership key too.
                    let mut req = Request::new(epb::LeaseRevokeRequest { id: lease });
                    req.set_timeout(budget);
                    let mut leases = epb::lease_client::LeaseClient::new(channel.clone());
                    if let Err(s) = leases.lease_revoke(req).await {
                        failed.push(OpError::etcd(&s).detail);
                    }
                }
            }
            FailoverClient::Zookeeper { session, held, .. } => {
                if let (Some(zk), Some(ours)) = (session.as_ref(), held.as_deref()) {
                    if let Err(e) = zk_unlock(zk, ours).await {
                        failed.push(e.detail);
                    }
                    // The lock's directory was made for this run only.
                    let dir = zk_lock_dir(name);
                    let _ = tokio::time::timeout(budget, zk.delete(&dir, None)).await;
                }
                // Dropping the last client closes the session; give the
                // CloseSession request a moment to go out.
                if session.take().is_some() {
                    tokio::time::sleep(ZK_CLOSE_GRACE).await;
                }
            }
        }
        if let Some(first) = failed.first() {
            eprintln!("note: cleaning up after the lock was held failed: {first}");
        }
    }
}

/// A connection to `endpoint`, kept in `channels` until an attempt on it
/// fails.
async fn channel(
    channels: &mut HashMap<String, Channel>,
    endpoint: &str,
    budget: Duration,
) -> Result<Channel, OpError> {
    if let Some(channel) = channels.get(endpoint) {
        return Ok(channel.clone());
    }
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let builder = Endpoint::from_shared(uri).map_err(|e| {
        OpError::other(
            "BAD_ENDPOINT",
            format!("{endpoint}: not an address ({})", error_chain(&e)),
        )
    })?;
    let builder = builder.connect_timeout(budget).tcp_nodelay(true);
    let channel = within(budget, endpoint, "the connection", async {
        builder
            .connect()
            .await
            .map_err(|e| OpError::other("CONNECT", format!("{endpoint}: {}", error_chain(&e))))
    })
    .await?;
    channels.insert(endpoint.to_string(), channel.clone());
    Ok(channel)
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What the failover workload prints (`--json`: one object).
#[derive(Debug, Serialize)]
pub(super) struct FailoverReport {
    target: Target,
    workload: &'static str,
    endpoints: Vec<String>,
    lock: String,
    /// Where the attempt that took the lock went (ZooKeeper: the connect
    /// string; the library picked the server).
    held_via: String,
    /// From --since-epoch (else from this process's start) to the lock held.
    held_after_ms: f64,
    /// "since-epoch" or "process-start".
    measured_from: &'static str,
    /// Unix seconds when the lock was held.
    held_at_epoch: f64,
    attempts: u32,
    errors_total: u64,
    /// Failed attempts by reason.
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    retry_pause_ms: f64,
    call_timeout_ms: f64,
    deadline_s: f64,
}

impl FailoverReport {
    pub fn table(&self) -> String {
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            format!("{} ({})", self.errors_total, list.join(", "))
        };
        format!(
            "workload  failover\n\
             target    {:?} via {}\n\
             lock      {}\n\
             held      after {:.1} ms (from {})\n\
             attempts  {} (pause {:.0} ms after a failure; {:.0} ms per call)\n\
             errors    {errors}\n",
            self.target,
            self.held_via,
            self.lock,
            self.held_after_ms,
            self.measured_from,
            self.attempts,
            self.retry_pause_ms,
            self.call_timeout_ms,
        )
    }
}

pub(super) async fn run(plan: &Plan, settings: &Settings) -> Result<FailoverReport, Failure> {
    let started = Instant::now();
    let started_epoch = epoch_now();
    let name = plan.lock_name(0);
    let mut attempts = Attempts::new(
        started,
        plan.duration,
        settings.retry_pause,
        settings.call_timeout,
    );
    let mut client = FailoverClient::new(plan);
    loop {
        attempts.begin();
        match client.attempt(&name, &attempts).await {
            Ok(held_via) => {
                let held_at_epoch = epoch_now();
                let (held_after_ms, measured_from) = match settings.since_epoch {
                    Some(since) => ((held_at_epoch - since) * 1000.0, "since-epoch"),
                    None => ((held_at_epoch - started_epoch) * 1000.0, "process-start"),
                };
                client.clean_up(&name, settings.call_timeout).await;
                let first_error = attempts.errors.first.take();
                return Ok(FailoverReport {
                    target: plan.target,
                    workload: "failover",
                    endpoints: plan.endpoints.clone(),
                    lock: name,
                    held_via,
                    held_after_ms: round2(held_after_ms),
                    measured_from,
                    held_at_epoch,
                    attempts: attempts.attempts,
                    errors_total: attempts.errors.total,
                    errors: attempts.errors.by_reason,
                    first_error,
                    retry_pause_ms: round2(settings.retry_pause.as_secs_f64() * 1000.0),
                    call_timeout_ms: round2(settings.call_timeout.as_secs_f64() * 1000.0),
                    deadline_s: round2(plan.duration.as_secs_f64()),
                });
            }
            Err(e) => match attempts.failed(&e, Instant::now()) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    let reasons: Vec<String> = attempts
                        .errors
                        .by_reason
                        .iter()
                        .map(|(reason, n)| format!("{reason} {n}"))
                        .collect();
                    client.clean_up(&name, settings.call_timeout).await;
                    return Err(Failure::Runtime(format!(
                        "held no lock within {:.1} s: {} attempt(s) at {} failed ({}); the last \
                         error: {}",
                        plan.duration.as_secs_f64(),
                        attempts.attempts,
                        plan.endpoints.join(","),
                        reasons.join(", "),
                        attempts.last_error.as_deref().unwrap_or("none")
                    )));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn failed_attempts_pause_the_same_fixed_time_until_the_deadline() {
        let t0 = Instant::now();
        let mut a = Attempts::new(t0, ms(1000), ms(25), ms(300));
        let e = OpError::other("UNAVAILABLE", "node down".into());
        // No backoff: every pause is the same.
        for i in 0..10 {
            a.begin();
            assert_eq!(a.failed(&e, t0 + ms(i * 30)), Some(ms(25)));
        }
        assert_eq!(a.attempts, 10);
        assert_eq!(a.errors.total, 10);
        assert_eq!(a.errors.by_reason.get("UNAVAILABLE"), Some(&10));
        // A pause that would end at or past the deadline ends the loop.
        a.begin();
        assert_eq!(a.failed(&e, t0 + ms(975)), None);
        assert_eq!(a.attempts, 11);
        assert_eq!(a.last_error.as_deref(), Some("node down"));
    }

    #[test]
    fn each_call_gets_the_call_timeout_but_never_past_the_deadline() {
        let t0 = Instant::now();
        let a = Attempts::new(t0, ms(1000), ms(25), ms(300));
        assert_eq!(a.call_budget(t0), Some(ms(300)));
        assert_eq!(a.call_budget(t0 + ms(800)), Some(ms(200)));
        assert_eq!(a.call_budget(t0 + ms(1000)), None);
        assert_eq!(a.call_budget(t0 + ms(1500)), None);
    }

    #[test]
    fn attempts_go_round_the_endpoints_and_follow_a_named_leader_once() {
        let mut r = Rotation::new(vec!["a:1".into(), "b:2".into()]);
        assert_eq!(r.pick(), "a:1");
        assert_eq!(r.pick(), "b:2");
        r.follow(Some("c:3"));
        assert_eq!(r.pick(), "c:3");
        // Once: then the turn continues where it was.
        assert_eq!(r.pick(), "a:1");
        r.follow(None);
        r.follow(Some(""));
        assert_eq!(r.pick(), "b:2");
    }

    #[test]
    fn settings_default_to_a_25ms_pause_and_1s_calls_and_refuse_bad_values() {
        let s = Settings::new(None, None, None).expect("defaults are valid");
        assert_eq!(s.retry_pause, ms(25));
        assert_eq!(s.call_timeout, ms(1000));
        assert!(matches!(
            Settings::new(None, None, Some(Duration::ZERO)),
            Err(Failure::Usage(m)) if m.contains("--call-timeout")
        ));
        assert!(matches!(
            Settings::new(None, Some(ms(10_001)), None),
            Err(Failure::Usage(m)) if m.contains("--retry-pause")
        ));
        // A zero pause is allowed (a busy retry, for experiments).
        assert!(Settings::new(Some(1.5), Some(Duration::ZERO), None).is_ok());
    }

    /// The ZooKeeper client is given every endpoint and moves past one that
    /// refuses; it holds the lock with the Curator recipe (making the lock's
    /// directory first), and cleans up after itself.
    #[test]
    fn the_zookeeper_failover_client_moves_past_a_dead_server_and_holds_the_lock() {
        use super::super::tests::{ZK_JAR, ZkServer};
        if !std::path::Path::new(ZK_JAR).exists() {
            eprintln!(
                "skipped: ZooKeeper is not installed ({ZK_JAR}; scripts/zookeeper.sh install)"
            );
            return;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = ZkServer::start();
        let dead = raftlock_testkit::ports::free_ports(1)[0];
        rt.block_on(async {
            // Wait until the server takes sessions (a JVM start).
            let watcher = server.session().await;
            let plan = Plan {
                workload: super::super::Workload::Failover,
                target: Target::Zookeeper,
                clients: 1,
                duration: Duration::from_secs(20),
                warmup: Duration::ZERO,
                hold: Duration::ZERO,
                endpoints: vec![format!("127.0.0.1:{dead}"), server.endpoint.clone()],
                threads: 1,
                failover: None,
            };
            let settings = Settings::new(None, None, None).expect("settings");
            let report = run(&plan, &settings).await.expect("the lock is held");
            assert_eq!(report.measured_from, "process-start");
            assert!(report.attempts >= 1);
            assert_eq!(u64::from(report.attempts), report.errors_total + 1);
            assert!(
                report.held_via.contains(&server.endpoint),
                "{}",
                report.held_via
            );
            // Released, and the run's own lock directory removed.
            let dir = zk_lock_dir(&report.lock);
            let left = watcher.check_stat(&dir).await.expect("stat");
            assert!(left.is_none(), "{dir} is still there");
        });
    }

    #[test]
    fn failover_lock_names_are_fresh_each_run() {
        let a = lock_name();
        std::thread::sleep(ms(2));
        let b = lock_name();
        assert!(a.starts_with("bench/failover/"), "{a}");
        assert_ne!(a, b);
    }
}
