//! `jepsen`: run one fault test against a real raftlock cluster (or the
//! unsafe self-test server) and check it.
//!
//! Exit codes: 0 every checker passed; 1 a checker found a violation;
//! 2 usage or setup error; 3 some checker could not decide (unknown).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use cluster_tests::checker::Verdict;
use cluster_tests::history::History;
use cluster_tests::run::{self, RunConfig, RunOutcome, TargetKind};

#[derive(Debug, Parser)]
#[command(name = "jepsen", about = "Jepsen-style fault test of raftlock")]
struct Args {
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Seconds of faults and load before the final heal.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Fault kinds, comma-separated: partition, kill, pause, link, clock
    /// (wall-clock bumps and strobes), skew (clock rate, not with clock),
    /// member (remove a node and add it back), kill-all (kill -9 of every
    /// node at once), power (a majority or every node loses power: unsynced
    /// writes are dropped); `none`. clock and skew need libfaketime
    /// (apt-get install libfaketime); power needs FUSE (root, /dev/fuse).
    #[arg(long, default_value = "partition,kill,pause")]
    nemesis: String,
    /// The largest clock rate change of a `skew` fault, in percent.
    #[arg(long, default_value_t = 3)]
    skew_percent: u64,
    /// Seed of the workload and the fault schedule [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Client processes (spread over the nodes).
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Lease ttl of the clients, ms.
    #[arg(long, default_value_t = 1_500)]
    ttl_ms: u64,
    /// Hot lock names.
    #[arg(long, default_value_t = 2)]
    names: usize,
    /// Percent of acquires that go to the semaphore (`sem/0`, 3 permits)
    /// and readers/writer (`rw/0`) names instead of the hot names.
    #[arg(long, default_value_t = 30)]
    mode_percent: u64,
    /// Percent of the granted ttl the clients take off every validity they
    /// compute, for clock-rate drift [default: 0, or 5 — the Rust client's
    /// default — with the `skew` nemesis].
    #[arg(long)]
    drift_margin_percent: Option<u64>,
    /// Seconds the clients keep working after the final heal; the liveness
    /// bound is this minus 2 s.
    #[arg(long, default_value_t = 12)]
    recovery: u64,
    /// raftlock (a real cluster) or unsafe (the self-test server).
    #[arg(long, default_value = "raftlock")]
    target: String,
    /// Output directory for history.jsonl, results.json, report.html and
    /// the nodes' data and logs [default: jepsen-results/<seed>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The raftlock binary [default: next to this one, or $RAFTLOCK_BIN].
    #[arg(long)]
    raftlock_bin: Option<PathBuf>,
    /// A rolling upgrade: the nodes start on this older raftlock build and
    /// the `upgrade` nemesis moves them, one at a time, to --raftlock-bin
    /// (scripts/build-previous.sh builds the previous release).
    #[arg(long)]
    upgrade_from: Option<PathBuf>,
    /// Seconds the linearizability search may take before "unknown".
    #[arg(long, default_value_t = 120)]
    linear_budget_s: u64,
    /// TLS and auth on: a CA, node certificates and an auth file in
    /// <out>/cluster/certs; every node serves TLS on its client and peer
    /// ports (mutual TLS between peers) and checks calls against the auth
    /// file; the harness connects with TLS as identity `jepsen` (inspect,
    /// lock, watch, admin on every name). Checked on every node before the
    /// clients start (a plaintext call must fail, one without a client
    /// certificate be refused). Only with --target raftlock.
    #[arg(long)]
    secure: bool,
    /// Only check an existing history file (writes results next to it).
    #[arg(long, value_name = "HISTORY_JSONL")]
    check: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let target = match args.target.as_str() {
        "raftlock" => TargetKind::Raftlock,
        "unsafe" => TargetKind::Unsafe,
        other => return usage(format!("--target {other}: use raftlock or unsafe")),
    };
    let kinds = match run::parse_nemesis(&args.nemesis) {
        Ok(k) => k,
        Err(e) => return usage(e),
    };
    if !(1..=9).contains(&args.nodes) {
        return usage("--nodes: 1 to 9".into());
    }
    let drift_margin_percent = args.drift_margin_percent.unwrap_or(
        if kinds.contains(&cluster_tests::nemesis::FaultKind::Skew) {
            5
        } else {
            0
        },
    );
    if drift_margin_percent >= 100 {
        return usage("--drift-margin-percent: 0 to 99".into());
    }
    if args.clients == 0 || args.names == 0 || args.recovery < 4 {
        return usage("--clients and --names must be at least 1, --recovery at least 4".into());
    }
    // Re-checking a history: the seed is only a label (0 unless given).
    let seed = args
        .seed
        .or(args.check.as_ref().map(|_| 0))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut config = RunConfig::new(target, seed);
    config.nodes = args.nodes;
    config.clients = args.clients;
    config.time_limit = Duration::from_secs(args.time_limit);
    config.recovery = Duration::from_secs(args.recovery);
    config.nemesis.kinds = kinds;
    if !(1..=50).contains(&args.skew_percent) {
        return usage("--skew-percent: 1 to 50".into());
    }
    config.nemesis.skew_percent = args.skew_percent;
    if config
        .nemesis
        .kinds
        .contains(&cluster_tests::nemesis::FaultKind::Skew)
        && drift_margin_percent <= args.skew_percent
    {
        eprintln!(
            "warning: clocks may drift {}% but clients count a {drift_margin_percent}% margin: DESIGN.md's assumption does not hold, expect mutual-exclusion violations",
            args.skew_percent
        );
    }
    config.workload.ttl_ms = args.ttl_ms;
    config.workload.names = (0..args.names).map(|i| format!("hot/{i}")).collect();
    config.workload.drift_margin_percent = drift_margin_percent;
    config.workload.mode_percent = args.mode_percent;
    config.check.liveness_bound_ns = (args.recovery - 2) * 1_000_000_000;
    config.check.linear.max_time = Duration::from_secs(args.linear_budget_s);
    config.binary = args.raftlock_bin.clone();
    if args.upgrade_from.is_some() && target != TargetKind::Raftlock {
        return usage("--upgrade-from needs --target raftlock".into());
    }
    config.upgrade_from = args.upgrade_from.clone();
    if args.secure && target != TargetKind::Raftlock {
        return usage("--secure needs --target raftlock".into());
    }
    config.secure = args.secure;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("jepsen-results").join(seed.to_string()));
    config.out_dir = Some(out.clone());

    let outcome = if let Some(path) = &args.check {
        let history = match History::read_jsonl(path) {
            Ok(h) => h,
            Err(e) => return usage(e.to_string()),
        };
        // What the run was, as far as the history tells.
        config.nodes = history.ops.iter().filter_map(|o| o.node).max().unwrap_or(0);
        config.clients = history
            .ops
            .iter()
            .filter(|o| o.process >= 0)
            .map(|o| o.process)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let periods = history.fault_periods();
        let heal = periods.iter().find(|(_, _, label)| label == "heal-all");
        config.time_limit = Duration::from_nanos(heal.map_or(history.end_ns(), |h| h.0));
        let faults = periods.iter().filter(|(_, _, l)| l != "heal-all").count() as u64;
        let summary = run::check_history(&history, &config, faults);
        let outcome = RunOutcome { history, summary };
        let dir = path.parent().map(PathBuf::from).unwrap_or_default();
        if let Err(e) = run::write_outputs(&dir, &outcome) {
            return usage(e.to_string());
        }
        eprintln!("results in {}", dir.display());
        outcome
    } else {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return usage(format!("tokio runtime: {e}")),
        };
        eprintln!(
            "jepsen: seed {seed}, {} nodes, {} clients, {} s, nemesis {:?}{}, results in {}",
            config.nodes,
            config.clients,
            args.time_limit,
            config.nemesis.kinds,
            if config.secure {
                ", TLS and auth on"
            } else {
                ""
            },
            out.display()
        );
        // On Ctrl-C the run is dropped and the runtime with it, which
        // drops the cluster: every node process is killed.
        let result = runtime.block_on(async {
            tokio::select! {
                r = run::run(config) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        drop(runtime);
        match result {
            Some(Ok(o)) => o,
            Some(Err(e)) => return usage(e.to_string()),
            None => return usage("interrupted".into()),
        }
    };
    for c in &outcome.summary.checkers {
        eprintln!(
            "{:<18} {:<8} {}",
            c.checker,
            format!("{:?}", c.verdict).to_lowercase(),
            serde_json::to_string(&c.counts).unwrap_or_default()
        );
        for v in c.violations.iter().take(5) {
            eprintln!("    {} (ops {:?})", v.message, v.ops);
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "verdict": outcome.summary.verdict,
            "seed": seed,
            "faults": outcome.summary.faults_injected,
        })
    );
    match outcome.summary.verdict {
        Verdict::Pass => ExitCode::SUCCESS,
        Verdict::Fail => ExitCode::from(1),
        Verdict::Unknown => ExitCode::from(3),
    }
}

fn usage(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}
