//! One test: start the target, run the clients and the nemesis for the
//! time limit, heal, let the clients recover, read the registers, check
//! the history, write the results.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use crate::checker::{CheckOptions, CheckResult, Verdict, check_all};
use crate::client::{NodeClient, Transport};
use crate::cluster::{Cluster, ClusterConfig, ClusterError, Faketime, raftlock_binary};
use crate::history::{History, HistoryError, Recorder};
use crate::nemesis::{self, FaultKind, NemesisConfig};
use crate::rng::Rng;
use crate::unsafe_server::UnsafeCluster;
use crate::workload::{FencedResource, Worker, WorkloadConfig};

/// What the clients talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A real cluster of `raftlock serve` processes.
    Raftlock,
    /// [`crate::unsafe_server`]: grants without consensus (self-test).
    Unsafe,
}

/// Everything one test needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: TargetKind,
    pub nodes: u64,
    pub clients: usize,
    pub time_limit: Duration,
    /// How long clients keep working after the final heal (must exceed
    /// the liveness bound).
    pub recovery: Duration,
    pub seed: u64,
    pub nemesis: NemesisConfig,
    pub workload: WorkloadConfig,
    pub check: CheckOptions,
    /// Deadline of one client call.
    pub op_timeout: Duration,
    /// Where to write history.jsonl, results.json, report.html and the
    /// nodes' data and logs (cluster/). None: nothing is written.
    pub out_dir: Option<PathBuf>,
    /// The raftlock binary (default: [`raftlock_binary`]).
    pub binary: Option<PathBuf>,
    /// A rolling upgrade: the nodes start on this older build, and the
    /// `upgrade` nemesis (and the final heal) moves them to `binary` one
    /// at a time.
    pub upgrade_from: Option<PathBuf>,
    /// TLS on every node port, mutual TLS between peers, an auth file, and
    /// the harness's clients on TLS as their own identity (see
    /// [`crate::cluster`]); checked on every node before the clients start.
    /// Only for the raftlock target.
    pub secure: bool,
}

impl RunConfig {
    /// A test of `target` with the defaults.
    pub fn new(target: TargetKind, seed: u64) -> Self {
        RunConfig {
            target,
            nodes: 3,
            clients: 6,
            time_limit: Duration::from_secs(30),
            recovery: Duration::from_secs(12),
            seed,
            nemesis: NemesisConfig::default(),
            workload: WorkloadConfig::default(),
            check: CheckOptions {
                liveness_bound_ns: 10_000_000_000,
                ..CheckOptions::default()
            },
            op_timeout: Duration::from_secs(2),
            out_dir: None,
            binary: None,
            upgrade_from: None,
            secure: false,
        }
    }
}

/// Errors that stop a test before it can be checked.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Something the machine lacks (e.g. libfaketime for clock faults).
    #[error("{0}")]
    Setup(String),
}

/// The results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub verdict: Verdict,
    pub seed: u64,
    pub target: TargetKind,
    pub nodes: u64,
    pub clients: usize,
    pub time_limit_s: u64,
    pub nemesis: Vec<String>,
    pub faults_injected: u64,
    /// Whether the cluster ran with TLS and auth (`secure`), and what the
    /// check before the clients started saw on each node.
    #[serde(default)]
    pub secure: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secure_checks: Vec<String>,
    /// "f type" → count, e.g. "acquire ok".
    pub ops: BTreeMap<String, u64>,
    /// A rolling upgrade's end: the nodes on the newer build, and each
    /// node's release and peer protocol range as the leader's status named
    /// them after the final heal ("0.2.0 protocol 1..2"; empty for a build
    /// that does not say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgraded: Vec<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub builds: BTreeMap<u64, String>,
    /// A rolling upgrade's peer messages (`raftlock_peer_messages_total`,
    /// by `protocol="…",direction="…"`): the most the nodes on the newer
    /// build had counted together at a step taken while the cluster was
    /// mixed, and what every node counted at the end (all on the newer
    /// build; counts since each node's last start).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_messages_mixed: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_messages_end: BTreeMap<String, u64>,
    pub checkers: Vec<CheckResult>,
}

/// The history and what the checkers said.
pub struct RunOutcome {
    pub history: History,
    pub summary: Summary,
}

/// The overall verdict: any Fail fails, else any Unknown is unknown.
pub fn overall(results: &[CheckResult]) -> Verdict {
    if results.iter().any(|r| r.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if results.iter().any(|r| r.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Pass
    }
}

/// Counts of ops by function and completion type.
pub fn op_counts(history: &History) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for op in &history.ops {
        if op.kind == crate::history::OpType::Invoke {
            continue;
        }
        let key = serde_json::to_value(op.f)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let kind = serde_json::to_value(op.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *counts.entry(format!("{key} {kind}")).or_insert(0) += 1;
    }
    counts
}

/// Checks a history and builds the summary (also used to re-check a
/// history file).
pub fn check_history(history: &History, config: &RunConfig, faults_injected: u64) -> Summary {
    let checkers = check_all(history, &config.check);
    Summary {
        verdict: overall(&checkers),
        seed: config.seed,
        target: config.target,
        nodes: config.nodes,
        clients: config.clients,
        time_limit_s: config.time_limit.as_secs(),
        nemesis: config
            .nemesis
            .kinds
            .iter()
            .map(|k| format!("{k:?}").to_lowercase())
            .collect(),
        faults_injected,
        secure: config.secure,
        secure_checks: Vec::new(),
        ops: op_counts(history),
        upgraded: Vec::new(),
        builds: BTreeMap::new(),
        peer_messages_mixed: BTreeMap::new(),
        peer_messages_end: BTreeMap::new(),
        checkers,
    }
}

/// Writes history.jsonl, results.json and report.html into `dir`.
pub fn write_outputs(dir: &std::path::Path, outcome: &RunOutcome) -> Result<(), RunError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| RunError::Io { what, source }
    };
    std::fs::create_dir_all(dir).map_err(io("creating the output directory"))?;
    outcome.history.write_jsonl(&dir.join("history.jsonl"))?;
    let json = serde_json::to_string_pretty(&outcome.summary).map_err(|e| RunError::Io {
        what: "encoding results".into(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(dir.join("results.json"), json).map_err(io("writing results.json"))?;
    let html = crate::report::html(&outcome.history, &outcome.summary);
    std::fs::write(dir.join("report.html"), html).map_err(io("writing report.html"))?;
    Ok(())
}

enum Target {
    Raftlock(Arc<Mutex<Cluster>>),
    Unsafe(UnsafeCluster),
}

/// Runs one test.
pub async fn run(config: RunConfig) -> Result<RunOutcome, RunError> {
    let recorder = Recorder::new();
    let mut rng = Rng::new(config.seed);
    if config.secure && config.target != TargetKind::Raftlock {
        return Err(RunError::Setup(
            "secure (TLS and auth) needs the raftlock target".into(),
        ));
    }
    let mut secure_checks = Vec::new();
    let target = match config.target {
        TargetKind::Raftlock => {
            let binary = match &config.binary {
                Some(b) => b.clone(),
                None => raftlock_binary()?,
            };
            let (binary, upgrade_to) = match &config.upgrade_from {
                Some(old) => (old.clone(), Some(binary)),
                None => (binary, None),
            };
            let cluster = Cluster::start(ClusterConfig {
                nodes: config.nodes,
                binary,
                upgrade_to,
                extra_args: Vec::new(),
                keep_dir: config.out_dir.as_ref().map(|d| d.join("cluster")),
                power_disks: FaultKind::power_disks(&config.nemesis.kinds),
                secure: config.secure,
                faketime: match FaultKind::faketime(&config.nemesis.kinds) {
                    Some(fake_monotonic) => {
                        let mut f = Faketime::find(fake_monotonic).map_err(RunError::Setup)?;
                        if fake_monotonic {
                            // Every node drifts from the start.
                            let mut clocks = rng.fork(u64::MAX - 1);
                            f.start_clocks = (1..=config.nodes)
                                .map(|id| {
                                    let rate = nemesis::skew_rate(
                                        config.nemesis.skew_percent,
                                        &mut clocks,
                                    );
                                    (id, rate)
                                })
                                .collect();
                        }
                        Some(f)
                    }
                    None => None,
                },
            })
            .await?;
            if let Some(f) = cluster.faketime().filter(|f| !f.start_clocks.is_empty()) {
                nemesis::note(&recorder, format!("clocks at start: {:?}", f.start_clocks));
            }
            if config.secure {
                // Never a "secure" run on a plaintext or auth-less cluster.
                secure_checks = cluster.check_secure().await?;
                nemesis::note(
                    &recorder,
                    format!("tls and auth on: {}", secure_checks.join("; ")),
                );
            }
            Target::Raftlock(Arc::new(Mutex::new(cluster)))
        }
        TargetKind::Unsafe => {
            Target::Unsafe(UnsafeCluster::start(config.nodes).await.map_err(|source| {
                RunError::Io {
                    what: "starting the unsafe server".into(),
                    source,
                }
            })?)
        }
    };
    let (endpoints, transport) = match &target {
        Target::Raftlock(c) => {
            let c = c.lock().await;
            let endpoints = c
                .ids()
                .into_iter()
                .filter_map(|id| Some((id, c.client_addr(id)?)))
                .collect::<Vec<_>>();
            (endpoints, c.transport())
        }
        Target::Unsafe(u) => (u.nodes.clone(), Transport::plaintext()),
    };

    let resource = FencedResource::default();
    let (stop_clients, clients_stop) = watch::channel(false);
    let mut workers = Vec::new();
    for p in 0..config.clients {
        let (node, addr) = endpoints[p % endpoints.len()];
        let client = NodeClient::new(node, addr, config.op_timeout, &transport).map_err(|e| {
            RunError::Io {
                what: "making a client".into(),
                source: std::io::Error::other(e),
            }
        })?;
        let worker = Worker {
            process: p as i64,
            client,
            recorder: recorder.clone(),
            resource: resource.clone(),
            config: config.workload.clone(),
            rng: rng.fork(p as u64),
        };
        workers.push(tokio::spawn(worker.run(clients_stop.clone())));
    }

    let (stop_nemesis, nemesis_stop) = watch::channel(false);
    let nemesis_task = match &target {
        Target::Raftlock(c) if !config.nemesis.kinds.is_empty() => {
            Some(tokio::spawn(nemesis::run(
                c.clone(),
                config.nemesis.clone(),
                recorder.clone(),
                rng.fork(u64::MAX),
                nemesis_stop,
            )))
        }
        _ => None,
    };
    tokio::time::sleep(config.time_limit).await;
    stop_nemesis.send_replace(true);
    let faults_injected = match nemesis_task {
        Some(t) => t.await.unwrap_or(0),
        None => 0,
    };
    tokio::time::sleep(config.recovery).await;
    stop_clients.send_replace(true);
    // Every call has a deadline and a paused client sleeps at most ttl + 1 s.
    let bound = config.op_timeout * 3
        + Duration::from_millis(config.workload.max_wait_ms + config.workload.ttl_ms + 2_000);
    for w in workers {
        let abort = w.abort_handle();
        if tokio::time::timeout(bound, w).await.is_err() {
            abort.abort();
        }
    }
    resource.record_final_reads(&recorder);
    // The nodes' logs, read from their disks once they are stopped (on
    // powerfs the disks go with the cluster).
    let mut upgraded = Vec::new();
    let mut builds = BTreeMap::new();
    let mut peer_messages_mixed = BTreeMap::new();
    let mut peer_messages_end = BTreeMap::new();
    if let (Target::Raftlock(c), Some(_)) = (&target, &config.upgrade_from) {
        let c = c.lock().await;
        upgraded = c.upgraded();
        peer_messages_mixed = c.mixed_phase_peer_messages().clone();
        for id in c.ids() {
            for (series, n) in c.peer_messages(id).await.unwrap_or_default() {
                *peer_messages_end.entry(series).or_insert(0) += n;
            }
        }
        if let Some(leader) = c.leader().await
            && let Some(status) = c.status(leader).await
        {
            builds = status
                .nodes
                .iter()
                .map(|n| {
                    let said = if n.build_version.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "{} protocol {}..{}",
                            n.build_version, n.protocol_min, n.protocol_max
                        )
                    };
                    (n.id, said)
                })
                .collect();
        }
    }
    let logs = match &target {
        Target::Raftlock(c) => Some(c.lock().await.read_logs().await),
        Target::Unsafe(_) => None,
    };
    drop(target);

    let history = recorder.history();
    let mut summary = check_history(&history, &config, faults_injected);
    summary.secure_checks = secure_checks;
    summary.upgraded = upgraded;
    summary.builds = builds;
    summary.peer_messages_mixed = peer_messages_mixed;
    summary.peer_messages_end = peer_messages_end;
    if let Some(logs) = &logs {
        let start = std::time::Instant::now();
        let mut result = crate::checker::logs::check(logs);
        result.count("elapsed-ms", start.elapsed().as_millis() as u64);
        summary.checkers.push(result);
        summary.verdict = overall(&summary.checkers);
    }
    let outcome = RunOutcome { history, summary };
    if let Some(dir) = &config.out_dir {
        write_outputs(dir, &outcome)?;
    }
    Ok(outcome)
}

/// The fault kinds of a `--nemesis` list (re-exported for the binary).
pub fn parse_nemesis(text: &str) -> Result<Vec<FaultKind>, String> {
    nemesis::parse_kinds(text)
}
