//! `--workload holds --holds N`: memory per hold, measured as a user would.
//!
//! Loads N exclusive holds into a running raftlock cluster: `--leases L`
//! leases (default 1,000), each holding N / L names `holds/<lease>/<i>`,
//! granted `--batch` names per Acquire (default 64: the default
//! `max_locks_per_request`), `--clients` acquires in flight at once, each
//! on its own connection to the leader. Then it prints:
//! - the load rate (holds per second over the whole load);
//! - per local node (`--pids`, process ids of `raftlock serve` processes
//!   on this machine): its RSS before and after (VmRSS of
//!   /proc/<pid>/status, read once every node applied the last entry and
//!   `--settle` later, so the store's batched saves are in), its peak
//!   (VmHWM) and bytes per hold = (RSS after - RSS before) / N;
//! - the time to build a snapshot (Admin.Snapshot on the leader: it
//!   answers once a snapshot covers every applied entry) and each node's
//!   RSS and peak after it (the peak is reset just before the snapshot,
//!   so it is the snapshot's).
//!
//! The leases have a ttl of an hour and no keep-alives (the run is bounded
//! well below it); they are revoked at the end (which releases every hold)
//! unless `--keep` is given, e.g. for a restarted follower to catch up on
//! (scripts/holds.sh does that).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raftlock_proto::v1 as pb;
use serde::Serialize;
use tokio::sync::Mutex;
use tonic::Request;
use tonic::transport::Channel;

use crate::Failure;
use crate::bench::{OpError, connect, find_leader};

/// Lease ttl: the whole run fits in it, so no keep-alives are needed.
const LEASE_TTL_MS: u64 = 3_600_000;
/// Deadline of each call but the snapshot.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a snapshot may take to build before the run gives up.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Most failed acquires tolerated before the load gives up.
const MAX_ERRORS: u64 = 100;
/// How long to wait for every node to apply the last entry.
const APPLY_WAIT: Duration = Duration::from_secs(120);
/// The most holds one run loads (100 M: far past any sane memory).
pub const MAX_HOLDS: u64 = 100_000_000;

/// What `--workload holds` needs, checked.
#[derive(Debug, Clone)]
pub struct HoldsPlan {
    pub holds: u64,
    pub leases: u64,
    pub batch: u64,
    pub clients: u32,
    pub endpoints: Vec<String>,
    pub pids: Vec<u32>,
    pub settle: Duration,
    pub keep: bool,
    pub snapshot: bool,
}

impl HoldsPlan {
    /// Checks the numbers fit together: N a multiple of the leases, so
    /// every lease holds as many names.
    pub fn check(&self) -> Result<(), Failure> {
        if self.holds == 0 || self.holds > MAX_HOLDS {
            return Err(Failure::Usage(format!(
                "--holds must be between 1 and {MAX_HOLDS}, got {}",
                self.holds
            )));
        }
        if self.leases == 0 || !self.holds.is_multiple_of(self.leases) {
            return Err(Failure::Usage(format!(
                "--holds ({}) must be a multiple of --leases ({}), so every lease holds as many \
                 names",
                self.holds, self.leases
            )));
        }
        if self.batch == 0 {
            return Err(Failure::Usage("--batch must be at least 1".into()));
        }
        for pid in &self.pids {
            rss(*pid).map_err(Failure::Usage)?;
        }
        Ok(())
    }

    fn per_lease(&self) -> u64 {
        self.holds / self.leases
    }
}

/// Memory of one process, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rss {
    /// Resident now (VmRSS), bytes.
    pub rss_bytes: u64,
    /// Most ever resident (VmHWM), bytes.
    pub peak_bytes: u64,
}

/// VmRSS and VmHWM of `pid` (Linux).
pub fn rss(pid: u32) -> Result<Rss, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {path} (is process {pid} running here?): {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| format!("{path} has no readable {name} line"))
    };
    Ok(Rss {
        rss_bytes: field("VmRSS:")?,
        peak_bytes: field("VmHWM:")?,
    })
}

/// Resets the peak (VmHWM) of `pid` to its RSS now (Linux: writing 5 to
/// /proc/PID/clear_refs); a failure is reported, and the peak is then the
/// process's whole life's.
fn reset_peak(pid: u32) {
    let path = format!("/proc/{pid}/clear_refs");
    if let Err(e) = std::fs::write(&path, "5") {
        eprintln!(
            "warning: cannot reset the peak of process {pid} ({path}: {e}): its peak after the snapshot includes the load's"
        );
    }
}

fn rss_all(pids: &[u32]) -> Result<Vec<Rss>, Failure> {
    pids.iter()
        .map(|p| rss(*p).map_err(Failure::Runtime))
        .collect()
}

/// One node's figures.
#[derive(Debug, Serialize)]
pub struct NodeMemory {
    pub pid: u32,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    pub peak_after_mib: f64,
    /// (RSS after - RSS before) / holds.
    pub bytes_per_hold: f64,
    /// After the snapshot was built (absent with --no-snapshot).
    pub rss_after_snapshot_mib: Option<f64>,
    pub peak_after_snapshot_mib: Option<f64>,
}

/// What a holds run prints; `--json` prints it as one object.
#[derive(Debug, Serialize)]
pub struct HoldsReport {
    pub workload: &'static str,
    pub leader: String,
    pub holds: u64,
    pub leases: u64,
    pub batch: u64,
    pub clients: u32,
    pub load_s: f64,
    pub holds_per_s: f64,
    /// The leader's applied index once loaded (what a follower catches up to).
    pub applied_index: u64,
    pub snapshot_s: Option<f64>,
    pub nodes: Vec<NodeMemory>,
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

impl HoldsReport {
    pub fn table(&self) -> String {
        let mut out = format!(
            "holds {} ({} leases x {} names, {} per acquire, {} clients) at leader {}\n\
             load: {:.1} s, {:.0} holds/s; applied index {}\n",
            self.holds,
            self.leases,
            self.holds / self.leases.max(1),
            self.batch,
            self.clients,
            self.leader,
            self.load_s,
            self.holds_per_s,
            self.applied_index
        );
        if let Some(s) = self.snapshot_s {
            out.push_str(&format!(
                "snapshot build (Admin.Snapshot on the leader): {s:.2} s\n"
            ));
        }
        if !self.nodes.is_empty() {
            out.push_str(
                "pid       RSS before  RSS after  peak after  B/hold  RSS after snap  peak after snap\n",
            );
        }
        for n in &self.nodes {
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} MiB"));
            out.push_str(&format!(
                "{:<9} {:>7.1} MiB {:>7.1} MiB {:>8.1} MiB {:>7.0} {:>15} {:>16}\n",
                n.pid,
                n.rss_before_mib,
                n.rss_after_mib,
                n.peak_after_mib,
                n.bytes_per_hold,
                opt(n.rss_after_snapshot_mib),
                opt(n.peak_after_snapshot_mib)
            ));
        }
        out
    }
}

async fn grant(channel: Channel, owner: String) -> Result<u64, String> {
    let mut req = Request::new(pb::GrantLeaseRequest {
        ttl_ms: LEASE_TTL_MS,
        owner,
    });
    req.set_timeout(RPC_TIMEOUT);
    pb::leases_client::LeasesClient::new(channel)
        .grant(req)
        .await
        .map(|r| r.into_inner().lease_id)
        .map_err(|s| OpError::raftlock(&s).detail)
}

/// The applied index of the node at `endpoint`.
async fn applied(endpoint: &str) -> Result<u64, String> {
    raftlock_client::Client::status_of(endpoint, RPC_TIMEOUT)
        .await
        .map(|s| s.applied_index)
        .map_err(|e| format!("{endpoint}: {e}"))
}

/// Waits until every endpoint has applied `index`.
async fn wait_applied(endpoints: &[String], index: u64) -> Result<(), Failure> {
    let deadline = Instant::now() + APPLY_WAIT;
    for endpoint in endpoints {
        loop {
            match applied(endpoint).await {
                Ok(a) if a >= index => break,
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(a) => {
                    return Err(Failure::Runtime(format!(
                        "{endpoint} applied only {a} of {index} within {} s",
                        APPLY_WAIT.as_secs()
                    )));
                }
                Err(e) => return Err(Failure::Runtime(e)),
            }
        }
    }
    Ok(())
}

pub async fn run(plan: &HoldsPlan) -> Result<HoldsReport, Failure> {
    plan.check()?;
    let leader = find_leader(&plan.endpoints).await?;
    let admin = connect(&leader).await.map_err(Failure::Runtime)?;
    let before = rss_all(&plan.pids)?;

    let mut ids = Vec::with_capacity(plan.leases as usize);
    for l in 0..plan.leases {
        let id = grant(admin.clone(), format!("raftlock-bench/holds/{l}"))
            .await
            .map_err(|e| Failure::Runtime(format!("cannot grant lease {l} at {leader}: {e}")))?;
        ids.push(id);
    }
    let ids = Arc::new(ids);

    // The work: (lease index, first name) per Acquire, handed out in order.
    let per = plan.per_lease();
    let chunks: Vec<(usize, u64)> = (0..plan.leases as usize)
        .flat_map(|l| (0..per).step_by(plan.batch as usize).map(move |i| (l, i)))
        .collect();
    let chunks = Arc::new(chunks);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));

    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..plan.clients {
        let channel = connect(&leader).await.map_err(Failure::Runtime)?;
        let (ids, chunks, next, errors, first_error) = (
            ids.clone(),
            chunks.clone(),
            next.clone(),
            errors.clone(),
            first_error.clone(),
        );
        let batch = plan.batch;
        tasks.push(tokio::spawn(async move {
            let mut locks = pb::locks_client::LocksClient::new(channel);
            loop {
                let at = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&(l, first)) = chunks.get(at) else {
                    return;
                };
                let names: Vec<pb::LockSpec> = (first..(first + batch).min(per))
                    .map(|i| pb::LockSpec {
                        name: format!("holds/{l}/{i}"),
                        mode: pb::Mode::Exclusive as i32,
                        permits: 0,
                    })
                    .collect();
                // A failed acquire is retried (an acquire by the same lease
                // of names it holds is answered with the holds it has).
                loop {
                    let mut req = Request::new(pb::AcquireRequest {
                        lease_id: ids[l],
                        locks: names.clone(),
                        wait_timeout_ms: 0,
                        ..Default::default()
                    });
                    req.set_timeout(RPC_TIMEOUT);
                    match locks.acquire(req).await {
                        Ok(_) => break,
                        Err(s) => {
                            let e = OpError::raftlock(&s);
                            let mut first = first_error.lock().await;
                            first.get_or_insert(e.detail);
                            if errors.fetch_add(1, Ordering::Relaxed) >= MAX_ERRORS {
                                return;
                            }
                            drop(first);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| Failure::Runtime(format!("a load task failed: {e}")))?;
    }
    let load = start.elapsed();
    if errors.load(Ordering::Relaxed) >= MAX_ERRORS {
        let first = first_error.lock().await.clone().unwrap_or_default();
        return Err(Failure::Runtime(format!(
            "more than {MAX_ERRORS} acquires failed; the first: {first}"
        )));
    }

    let applied_index = applied(&leader).await.map_err(Failure::Runtime)?;
    wait_applied(&plan.endpoints, applied_index).await?;
    tokio::time::sleep(plan.settle).await;
    let after = rss_all(&plan.pids)?;

    let mut snapshot_s = None;
    let mut after_snapshot = None;
    if plan.snapshot {
        // The peak after the snapshot is then the snapshot's, not the
        // load's.
        for pid in &plan.pids {
            reset_peak(*pid);
        }
        let mut req = Request::new(pb::SnapshotRequest {});
        req.set_timeout(SNAPSHOT_TIMEOUT);
        let t = Instant::now();
        pb::admin_client::AdminClient::new(admin.clone())
            .snapshot(req)
            .await
            .map_err(|s| {
                Failure::Runtime(format!(
                    "the snapshot failed: {}",
                    OpError::raftlock(&s).detail
                ))
            })?;
        snapshot_s = Some(t.elapsed().as_secs_f64());
        after_snapshot = Some(rss_all(&plan.pids)?);
    }

    if !plan.keep {
        let mut client = pb::leases_client::LeasesClient::new(admin);
        for id in ids.iter() {
            let mut req = Request::new(pb::RevokeLeaseRequest { lease_id: *id });
            req.set_timeout(RPC_TIMEOUT);
            if let Err(s) = client.revoke(req).await {
                eprintln!(
                    "note: lease {id} not revoked: {}",
                    OpError::raftlock(&s).detail
                );
            }
        }
    }

    let nodes = plan
        .pids
        .iter()
        .enumerate()
        .map(|(i, pid)| NodeMemory {
            pid: *pid,
            rss_before_mib: mib(before[i].rss_bytes),
            rss_after_mib: mib(after[i].rss_bytes),
            peak_after_mib: mib(after[i].peak_bytes),
            bytes_per_hold: ((after[i].rss_bytes as f64 - before[i].rss_bytes as f64)
                / plan.holds as f64)
                .round(),
            rss_after_snapshot_mib: after_snapshot.as_ref().map(|s| mib(s[i].rss_bytes)),
            peak_after_snapshot_mib: after_snapshot.as_ref().map(|s| mib(s[i].peak_bytes)),
        })
        .collect();
    let load_s = load.as_secs_f64();
    Ok(HoldsReport {
        workload: "holds",
        leader,
        holds: plan.holds,
        leases: plan.leases,
        batch: plan.batch,
        clients: plan.clients,
        load_s: (load_s * 100.0).round() / 100.0,
        holds_per_s: (plan.holds as f64 / load_s.max(1e-9)).round(),
        applied_index,
        snapshot_s: snapshot_s.map(|s| (s * 100.0).round() / 100.0),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> HoldsPlan {
        HoldsPlan {
            holds: 1_000,
            leases: 10,
            batch: 64,
            clients: 2,
            endpoints: vec![],
            pids: vec![],
            settle: Duration::ZERO,
            keep: false,
            snapshot: true,
        }
    }

    #[test]
    fn holds_must_split_evenly_over_the_leases() {
        assert!(plan().check().is_ok());
        let mut p = plan();
        p.holds = 1_001;
        assert!(matches!(p.check(), Err(Failure::Usage(m)) if m.contains("multiple of --leases")));
        p.holds = 0;
        assert!(matches!(p.check(), Err(Failure::Usage(_))));
        let mut p = plan();
        p.batch = 0;
        assert!(matches!(p.check(), Err(Failure::Usage(_))));
    }

    #[test]
    fn rss_of_this_process_is_read_and_a_missing_pid_is_a_clear_error() {
        let own = rss(std::process::id()).expect("this process has a status file");
        assert!(own.rss_bytes > 0 && own.peak_bytes >= own.rss_bytes);
        // Pids are below 2^22 on Linux.
        let e = rss(u32::MAX).expect_err("no such process");
        assert!(e.contains("is process"), "{e}");
    }
}
