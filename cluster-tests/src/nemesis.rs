//! The nemesis: a seeded schedule of faults on a [`Cluster`], each healed
//! before the next, and everything healed at the end.
//!
//! A quarter of the faults come with a second one of another kind at the
//! same time (`combine_percent`).
//!
//! Kinds (`--nemesis partition,kill,pause,link,clock,member` or `skew`):
//! - `partition`: isolate one node, isolate the leader, a random
//!   majority/minority split, majorities-ring (every node sees a different
//!   majority; 5+ nodes), a bridge (two halves joined by one node), one-way
//!   (a node's inbound links cut, or its outbound calls answered into the
//!   void);
//! - `kill`: kill -9 a random node or the leader, restart it at the heal;
//! - `pause`: SIGSTOP a random node or the leader, SIGCONT at the heal;
//! - `link`: delay or lossy peer links around one node, or the clients'
//!   link to one node delayed, lossy or cut;
//! - `clock`: wall-clock faults through libfaketime (monotonic clocks
//!   untouched, as when an operator or NTP steps a machine's clock): bump
//!   one node's, the leader's or every node's clock by milliseconds to an
//!   hour either way, or strobe it between two offsets every second or so.
//!   raftlock must not care: its safety rests on monotonic clocks only;
//! - `skew`: clock *rate* drift: every node's clocks (monotonic included,
//!   timers too) run at their own rate, up to `skew_percent` faster or
//!   slower, drawn when the node starts; the fault kills a node (or the
//!   leader) and restarts it at a new rate. (A rate is never changed in a
//!   running process: libfaketime then let the monotonic clock step back,
//!   see [`crate::cluster::Faketime`].) DESIGN.md assumes bounded rate
//!   drift, covered by the clients' drift margin: a run with `skew` should
//!   count validity with a margin above `skew_percent` (the jepsen binary
//!   sets 5 %, the Rust client's default). `skew` and `clock` cannot share
//!   a run (an offset would make a faked monotonic clock jump);
//! - `member`: remove a node (sometimes the leader) from the membership
//!   while it keeps running, add it back (learner, caught up, then voter)
//!   at the heal;
//! - `kill-all`: kill -9 every node at the same moment, restart them all at
//!   the heal (the page cache survives: nothing written is lost);
//! - `power`: a power cut of a majority or of every node at the same
//!   moment: the nodes are killed and every write they had not fsynced is
//!   thrown away (each node's data is on its own powerfs mount, LazyFS's
//!   semantics); power and the nodes come back at the heal. Half the cuts
//!   come after disks held every sync for 20-300 ms (a disk slow to
//!   flush), so writes are in flight when the power goes: either every
//!   victim's disk (nothing commits meanwhile) or one victim's only, the
//!   leader's when it is one, while the others go on committing without
//!   it — it then loses entries the cluster committed.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};

use crate::cluster::{ClockSetting, Cluster};
use crate::history::{Args, F, NEMESIS, OpResult, OpType, Recorder};
use crate::proxy::LinkMode;
use crate::rng::Rng;

/// A family of faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    Partition,
    Kill,
    Pause,
    Link,
    Clock,
    Skew,
    Member,
    KillAll,
    Power,
    /// A rolling upgrade: one node at a time stopped as an operator stops
    /// it and started on the newer build (the run's `upgrade_from` is the
    /// older one); once all run it, graceful restarts.
    Upgrade,
}

impl FaultKind {
    /// The nodes' data must be on powerfs mounts.
    pub fn power_disks(kinds: &[FaultKind]) -> bool {
        kinds.contains(&FaultKind::Power)
    }

    /// libfaketime is needed, and whether it must fake monotonic clocks.
    pub fn faketime(kinds: &[FaultKind]) -> Option<bool> {
        if kinds.contains(&FaultKind::Skew) {
            Some(true)
        } else if kinds.contains(&FaultKind::Clock) {
            Some(false)
        } else {
            None
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "partition" => Ok(FaultKind::Partition),
            "kill" => Ok(FaultKind::Kill),
            "pause" => Ok(FaultKind::Pause),
            "link" => Ok(FaultKind::Link),
            "clock" => Ok(FaultKind::Clock),
            "skew" => Ok(FaultKind::Skew),
            "member" | "membership" => Ok(FaultKind::Member),
            "kill-all" => Ok(FaultKind::KillAll),
            "power" => Ok(FaultKind::Power),
            "upgrade" => Ok(FaultKind::Upgrade),
            other => Err(format!(
                "unknown nemesis `{other}`; use partition, kill, pause, link, clock, skew, member, kill-all, power, upgrade"
            )),
        }
    }
}

/// Parses `partition,kill,pause` (empty: no faults).
pub fn parse_kinds(text: &str) -> Result<Vec<FaultKind>, String> {
    let mut kinds: Vec<FaultKind> = text
        .split(',')
        .filter(|s| !s.trim().is_empty() && s.trim() != "none")
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    kinds.sort();
    kinds.dedup();
    if kinds.contains(&FaultKind::Clock) && kinds.contains(&FaultKind::Skew) {
        return Err(
            "nemesis `clock` and `skew` cannot share a run: wall-clock offsets would make the monotonic clocks that `skew` fakes jump; run them separately".into(),
        );
    }
    Ok(kinds)
}

/// A concrete fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cut every link between the groups (both directions).
    Partition {
        label: String,
        groups: Vec<BTreeSet<u64>>,
    },
    /// Set these directed links.
    Links {
        label: String,
        links: Vec<((u64, u64), LinkMode)>,
    },
    /// Set the clients' link to a node (both directions).
    ClientLink {
        node: u64,
        mode: LinkMode,
    },
    Kill(u64),
    Pause(u64),
    /// Set node clocks; a node with several settings is strobed between
    /// them (about every second) while the fault lasts.
    Clock {
        label: String,
        settings: Vec<(u64, Vec<ClockSetting>)>,
    },
    /// Restart a node (kill -9) with its clocks at a new rate.
    Reskew {
        node: u64,
        rate: ClockSetting,
    },
    /// Remove a node from the membership.
    Remove(u64),
    /// kill -9 every node at once.
    KillAll,
    /// The next step of a rolling upgrade ([`Cluster::upgrade`]), this
    /// node first if it still runs the old build.
    Upgrade(u64),
    /// Cut the power of these nodes at once (unsynced writes are lost),
    /// after holding the syncs of `held` (some of them) for `hold_ms`
    /// (0: at once).
    Power {
        nodes: BTreeSet<u64>,
        held: BTreeSet<u64>,
        hold_ms: u64,
    },
}

impl Fault {
    pub fn label(&self) -> String {
        match self {
            Fault::Partition { label, groups } => format!("{label} {groups:?}"),
            Fault::Links { label, .. } => label.clone(),
            Fault::ClientLink { node, mode } => format!("clients' link to node {node}: {mode:?}"),
            Fault::Kill(n) => format!("kill node {n}"),
            Fault::Pause(n) => format!("pause node {n}"),
            Fault::Clock { label, .. } => label.clone(),
            Fault::Reskew { node, rate } => format!("restart node {node} with clock {rate:?}"),
            Fault::Remove(n) => format!("remove node {n} from the membership"),
            Fault::KillAll => "kill every node".to_string(),
            Fault::Upgrade(n) => format!("upgrade the next node (node {n} if still old)"),
            Fault::Power {
                nodes, hold_ms: 0, ..
            } => format!("power cut of nodes {nodes:?}"),
            Fault::Power {
                nodes,
                held,
                hold_ms,
            } => {
                format!(
                    "power cut of nodes {nodes:?} after holding the syncs of {held:?} {hold_ms} ms"
                )
            }
        }
    }

    fn strobes(&self) -> bool {
        matches!(self, Fault::Clock { settings, .. } if settings.iter().any(|(_, s)| s.len() > 1))
    }
}

/// A wall-clock offset: small (under a second) or large (up to an hour),
/// either way.
fn offset_ms(rng: &mut Rng) -> i64 {
    let ms = if rng.chance(50) {
        rng.range(20, 1_000)
    } else {
        rng.range(1_000, 3_600_000)
    } as i64;
    if rng.chance(50) { ms } else { -ms }
}

/// A clock rate between 0.1 % and `skew_percent` off real time, either way.
pub fn skew_rate(skew_percent: u64, rng: &mut Rng) -> ClockSetting {
    let delta = rng.range(1_000, skew_percent.clamp(1, 99) * 10_000);
    let millionths = if rng.chance(50) {
        1_000_000 + delta
    } else {
        1_000_000 - delta
    };
    ClockSetting::Rate { millionths }
}

/// Which nodes a clock fault hits: one, the leader, or all.
fn clock_targets(ids: &[u64], leader: Option<u64>, rng: &mut Rng) -> (String, Vec<u64>) {
    match rng.range(0, 3) {
        0 => match leader {
            Some(l) => (format!("leader {l}"), vec![l]),
            None => {
                let n = *rng.pick(ids).unwrap_or(&1);
                (format!("node {n}"), vec![n])
            }
        },
        1 => ("every node".to_string(), ids.to_vec()),
        _ => {
            let n = *rng.pick(ids).unwrap_or(&1);
            (format!("node {n}"), vec![n])
        }
    }
}

/// Chooses a fault of `kind` for nodes `ids` (leader if known).
/// `skew_percent` bounds rate faults.
pub fn choose(
    kind: FaultKind,
    ids: &[u64],
    leader: Option<u64>,
    skew_percent: u64,
    rng: &mut Rng,
) -> Fault {
    let n = ids.len();
    let mut shuffled = ids.to_vec();
    rng.shuffle(&mut shuffled);
    let random = shuffled.first().copied().unwrap_or(1);
    let leader_or_random = |rng: &mut Rng| match leader {
        Some(l) if rng.chance(50) => (l, true),
        _ => (random, false),
    };
    let rest = |x: u64| -> BTreeSet<u64> { ids.iter().copied().filter(|i| *i != x).collect() };
    match kind {
        FaultKind::Kill => Fault::Kill(leader_or_random(rng).0),
        FaultKind::Pause => Fault::Pause(leader_or_random(rng).0),
        FaultKind::Member => Fault::Remove(leader_or_random(rng).0),
        FaultKind::KillAll => Fault::KillAll,
        FaultKind::Upgrade => Fault::Upgrade(leader_or_random(rng).0),
        FaultKind::Power => {
            // Every node, or a majority (the leader in it half the time).
            let size = if rng.chance(50) { n } else { n / 2 + 1 };
            let mut nodes: BTreeSet<u64> = BTreeSet::new();
            if let Some(l) = leader.filter(|_| rng.chance(50)) {
                nodes.insert(l);
            }
            for id in &shuffled {
                if nodes.len() >= size {
                    break;
                }
                nodes.insert(*id);
            }
            let (held, hold_ms) = if rng.chance(50) {
                let held = if rng.chance(50) {
                    nodes.clone()
                } else {
                    let one = leader
                        .filter(|l| nodes.contains(l))
                        .or_else(|| nodes.first().copied())
                        .unwrap_or(random);
                    BTreeSet::from([one])
                };
                (held, rng.range(20, 300))
            } else {
                (BTreeSet::new(), 0)
            };
            Fault::Power {
                nodes,
                held,
                hold_ms,
            }
        }
        FaultKind::Clock => {
            let (who, nodes) = clock_targets(ids, leader, rng);
            let strobe = rng.chance(40);
            let settings: Vec<(u64, Vec<ClockSetting>)> = nodes
                .iter()
                .map(|n| {
                    let first = ClockSetting::Offset { ms: offset_ms(rng) };
                    if strobe {
                        (*n, vec![first, ClockSetting::Offset { ms: offset_ms(rng) }])
                    } else {
                        (*n, vec![first])
                    }
                })
                .collect();
            let what = if strobe { "strobe" } else { "bump" };
            Fault::Clock {
                label: format!("clock {what} on {who}: {settings:?}"),
                settings,
            }
        }
        FaultKind::Skew => Fault::Reskew {
            node: leader_or_random(rng).0,
            rate: skew_rate(skew_percent, rng),
        },
        FaultKind::Link if rng.chance(35) => {
            let mode = match rng.range(0, 3) {
                0 => LinkMode::Cut,
                1 => LinkMode::Delay {
                    ms: rng.range(50, 300),
                },
                _ => LinkMode::Lossy {
                    percent: rng.range(20, 60) as u8,
                },
            };
            Fault::ClientLink { node: random, mode }
        }
        FaultKind::Link => {
            let x = random;
            let mode = if rng.chance(50) {
                LinkMode::Delay {
                    ms: rng.range(50, 300),
                }
            } else {
                LinkMode::Lossy {
                    percent: rng.range(20, 60) as u8,
                }
            };
            let links = ids
                .iter()
                .filter(|j| **j != x)
                .flat_map(|j| [((x, *j), mode), ((*j, x), mode)])
                .collect();
            Fault::Links {
                label: format!("links of node {x}: {mode:?}"),
                links,
            }
        }
        FaultKind::Partition => {
            let variant = rng.range(0, 5);
            match variant {
                0 => Fault::Partition {
                    label: "isolate one node".into(),
                    groups: vec![BTreeSet::from([random]), rest(random)],
                },
                1 => {
                    let l = leader.unwrap_or(random);
                    Fault::Partition {
                        label: "isolate the leader".into(),
                        groups: vec![BTreeSet::from([l]), rest(l)],
                    }
                }
                2 => {
                    let minority = n.saturating_sub(1) / 2;
                    let minority = rng.range(1, minority.max(1) as u64) as usize;
                    Fault::Partition {
                        label: "majority/minority".into(),
                        groups: vec![
                            shuffled[..minority].iter().copied().collect(),
                            shuffled[minority..].iter().copied().collect(),
                        ],
                    }
                }
                3 if n >= 5 => {
                    // Ring order: each node keeps links to its two ring
                    // neighbours, so it sees itself + 2 = a majority of 5,
                    // a different one for every node.
                    let mut links = Vec::new();
                    for a in 0..n {
                        for b in 0..n {
                            let d = a.abs_diff(b);
                            let ring = d.min(n - d);
                            if ring > 1 {
                                links.push(((shuffled[a], shuffled[b]), LinkMode::Cut));
                            }
                        }
                    }
                    Fault::Links {
                        label: format!("majorities ring {shuffled:?}"),
                        links,
                    }
                }
                3 | 4 => {
                    // Bridge: two halves that only the middle node joins.
                    let mid = n / 2;
                    let a: BTreeSet<u64> = shuffled[..mid].iter().copied().collect();
                    let b: BTreeSet<u64> = shuffled[mid + 1..].iter().copied().collect();
                    let mut links = Vec::new();
                    for i in &a {
                        for j in &b {
                            links.push(((*i, *j), LinkMode::Cut));
                            links.push(((*j, *i), LinkMode::Cut));
                        }
                    }
                    Fault::Links {
                        label: format!("bridge {a:?} <-{}-> {b:?}", shuffled[mid]),
                        links,
                    }
                }
                _ => {
                    let (x, is_leader) = leader_or_random(rng);
                    let who = if is_leader { "leader" } else { "node" };
                    if rng.chance(50) {
                        // Nobody can call x; x's own calls get through.
                        Fault::Links {
                            label: format!("one-way: nobody reaches {who} {x}"),
                            links: ids
                                .iter()
                                .filter(|j| **j != x)
                                .map(|j| ((*j, x), LinkMode::Cut))
                                .collect(),
                        }
                    } else {
                        // x's calls arrive, their answers never come back.
                        Fault::Links {
                            label: format!("one-way: {who} {x} is heard but hears no answers"),
                            links: ids
                                .iter()
                                .filter(|j| **j != x)
                                .map(|j| ((x, *j), LinkMode::OneWay))
                                .collect(),
                        }
                    }
                }
            }
        }
    }
}

/// Applies `fault`.
pub async fn apply(
    cluster: &mut Cluster,
    fault: &Fault,
) -> Result<(), crate::cluster::ClusterError> {
    match fault {
        Fault::Partition { groups, .. } => cluster.partition(groups),
        Fault::Links { links, .. } => {
            for ((from, to), mode) in links {
                cluster.set_link(*from, *to, *mode);
            }
        }
        Fault::ClientLink { node, mode } => cluster.set_client_link(*node, *mode),
        Fault::Kill(n) => cluster.kill(*n)?,
        Fault::Pause(n) => cluster.pause(*n)?,
        Fault::Clock { settings, .. } => {
            for (node, s) in settings {
                if let Some(first) = s.first() {
                    cluster.set_clock(*node, *first)?;
                }
            }
        }
        Fault::Reskew { node, rate } => cluster.restart_with_clock(*node, *rate)?,
        Fault::Remove(n) => cluster.remove_member(*n).await?,
        Fault::KillAll => cluster.kill_all(),
        Fault::Upgrade(n) => {
            let done = cluster.upgrade(*n).await?;
            tracing::info!("upgrade: node {done} restarted on the newer build");
        }
        Fault::Power {
            nodes,
            held,
            hold_ms,
        } => {
            let ids: Vec<u64> = nodes.iter().copied().collect();
            if *hold_ms > 0 {
                let held: Vec<u64> = held.iter().copied().collect();
                cluster.hold_syncs(&held, true);
                tokio::time::sleep(Duration::from_millis(*hold_ms)).await;
            }
            for line in cluster.power_cut(&ids)? {
                tracing::info!("power cut: {line}");
            }
        }
    }
    Ok(())
}

/// Undoes `fault`.
pub async fn heal(
    cluster: &mut Cluster,
    fault: &Fault,
) -> Result<(), crate::cluster::ClusterError> {
    match fault {
        Fault::Partition { .. } | Fault::Links { .. } | Fault::ClientLink { .. } => {
            cluster.heal_links()
        }
        Fault::Kill(n) => cluster.restart(*n)?,
        Fault::Pause(n) => cluster.resume(*n)?,
        Fault::Clock { settings, .. } => {
            for (node, _) in settings {
                cluster.set_clock(*node, ClockSetting::Real)?;
            }
        }
        // Drift stays: it is what real clocks do, within the bound. An
        // upgraded node stays upgraded (it is running).
        Fault::Reskew { .. } | Fault::Upgrade(_) => {}
        Fault::Remove(n) => cluster.add_member(*n).await?,
        Fault::KillAll => {
            for id in cluster.ids() {
                cluster.restart(id)?;
            }
        }
        Fault::Power { nodes, .. } => {
            let ids: Vec<u64> = nodes.iter().copied().collect();
            cluster.power_on(&ids)?;
        }
    }
    Ok(())
}

/// Flips every strobed clock to its next setting.
fn strobe(
    cluster: &Cluster,
    faults: &[Fault],
    step: usize,
) -> Result<(), crate::cluster::ClusterError> {
    for fault in faults {
        if let Fault::Clock { settings, .. } = fault {
            for (node, s) in settings.iter().filter(|(_, s)| s.len() > 1) {
                cluster.set_clock(*node, s[step % s.len()])?;
            }
        }
    }
    Ok(())
}

/// Timing of the schedule.
#[derive(Debug, Clone)]
pub struct NemesisConfig {
    pub kinds: Vec<FaultKind>,
    /// Healthy time between faults (uniform, ms).
    pub quiet_ms: (u64, u64),
    /// How long a fault lasts (uniform, ms).
    pub fault_ms: (u64, u64),
    /// Percent of faults combined with a second one of another kind at the
    /// same time (e.g. a partition while the leader is paused).
    pub combine_percent: u64,
    /// The largest clock rate change of a `skew` fault, in percent.
    pub skew_percent: u64,
}

impl Default for NemesisConfig {
    fn default() -> Self {
        NemesisConfig {
            kinds: vec![FaultKind::Partition, FaultKind::Kill, FaultKind::Pause],
            quiet_ms: (2_000, 5_000),
            fault_ms: (3_000, 8_000),
            combine_percent: 25,
            skew_percent: 3,
        }
    }
}

/// Records a setting of the run (no fault) in the history.
pub fn note(recorder: &Recorder, label: String) {
    let inv = record(recorder, label);
    recorder.complete(inv, OpType::Info, OpResult::default());
}

fn record(recorder: &Recorder, label: String) -> crate::history::Invocation {
    recorder.invoke(
        NEMESIS,
        None,
        F::Nemesis,
        None,
        Args {
            fault: Some(label),
            ..Args::default()
        },
    )
}

/// Runs faults until `stop`, then heals everything (recorded as the final
/// `heal-all`). Returns how many faults it injected.
pub async fn run(
    cluster: Arc<Mutex<Cluster>>,
    config: NemesisConfig,
    recorder: Recorder,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let mut injected = 0;
    let wait = |ms: u64, stop: &mut watch::Receiver<bool>| {
        let mut stop = stop.clone();
        async move {
            let _ = tokio::time::timeout(Duration::from_millis(ms), stop.wait_for(|s| *s)).await;
        }
    };
    while !*stop.borrow() && !config.kinds.is_empty() {
        wait(rng.range(config.quiet_ms.0, config.quiet_ms.1), &mut stop).await;
        if *stop.borrow() {
            break;
        }
        let Some(kind) = rng.pick(&config.kinds).copied() else {
            break;
        };
        let (ids, leader) = {
            let c = cluster.lock().await;
            (c.members(), c.leader().await)
        };
        let skew = config.skew_percent;
        let mut faults = vec![choose(kind, &ids, leader, skew, &mut rng)];
        let others: Vec<FaultKind> = config
            .kinds
            .iter()
            .copied()
            .filter(|k| *k != kind)
            .collect();
        if rng.chance(config.combine_percent)
            && let Some(second) = rng.pick(&others).copied()
        {
            faults.push(choose(second, &ids, leader, skew, &mut rng));
        }
        let label: Vec<String> = faults.iter().map(Fault::label).collect();
        let inv = record(&recorder, label.join(" + "));
        let mut error = None;
        {
            let mut c = cluster.lock().await;
            for f in &faults {
                if let Err(e) = apply(&mut c, f).await {
                    error = Some(e.to_string());
                }
            }
        }
        injected += faults.len() as u64;
        let fault_ms = rng.range(config.fault_ms.0, config.fault_ms.1);
        if faults.iter().any(Fault::strobes) {
            let end = tokio::time::Instant::now() + Duration::from_millis(fault_ms);
            let mut step = 1;
            while tokio::time::Instant::now() < end && !*stop.borrow() {
                let left = end.saturating_duration_since(tokio::time::Instant::now());
                let pause = Duration::from_millis(rng.range(900, 1_600)).min(left);
                wait(pause.as_millis() as u64, &mut stop).await;
                if let Err(e) = strobe(&*cluster.lock().await, &faults, step) {
                    error = Some(e.to_string());
                }
                step += 1;
            }
        } else {
            wait(fault_ms, &mut stop).await;
        }
        {
            let mut c = cluster.lock().await;
            // Membership last: adding a node back needs a working cluster.
            let mut order: Vec<&Fault> = faults.iter().rev().collect();
            order.sort_by_key(|f| matches!(f, Fault::Remove(_)));
            for f in order {
                if let Err(e) = heal(&mut c, f).await {
                    error = Some(e.to_string());
                }
            }
        }
        recorder.complete(
            inv,
            OpType::Info,
            OpResult {
                error,
                ..OpResult::default()
            },
        );
    }
    let inv = record(&recorder, "heal-all".into());
    let healed = cluster.lock().await.heal_all().await;
    recorder.complete(
        inv,
        OpType::Info,
        OpResult {
            error: healed.err().map(|e| e.to_string()),
            ..OpResult::default()
        },
    );
    injected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_clock_excludes_skew() {
        assert_eq!(
            parse_kinds("pause,partition,kill,pause").expect("valid"),
            vec![FaultKind::Partition, FaultKind::Kill, FaultKind::Pause]
        );
        assert_eq!(
            parse_kinds("member,clock").expect("valid"),
            vec![FaultKind::Clock, FaultKind::Member]
        );
        assert!(
            parse_kinds("clock,skew")
                .unwrap_err()
                .contains("separately")
        );
        assert_eq!(FaultKind::faketime(&[FaultKind::Clock]), Some(false));
        assert_eq!(FaultKind::faketime(&[FaultKind::Skew]), Some(true));
        assert_eq!(FaultKind::faketime(&[FaultKind::Kill]), None);
        assert!(parse_kinds("gremlins").is_err());
        assert!(parse_kinds("").expect("none").is_empty());
    }

    #[test]
    fn skew_rates_stay_within_the_bound_and_go_both_ways() {
        let mut rng = Rng::new(3);
        let (mut faster, mut slower) = (0, 0);
        for _ in 0..500 {
            let ClockSetting::Rate { millionths } = skew_rate(3, &mut rng) else {
                panic!("a rate");
            };
            let off = millionths.abs_diff(1_000_000);
            assert!((1_000..30_000).contains(&off), "{millionths}");
            if millionths > 1_000_000 {
                faster += 1;
            } else {
                slower += 1;
            }
        }
        assert!(faster > 100 && slower > 100, "{faster} {slower}");
    }

    #[test]
    fn clock_faults_are_offsets_and_strobes_member_faults_name_a_member() {
        let ids = [1, 2, 3];
        let mut rng = Rng::new(9);
        let (mut bumps, mut strobes) = (0, 0);
        for _ in 0..200 {
            match choose(FaultKind::Clock, &ids, Some(2), 3, &mut rng) {
                Fault::Clock { settings, .. } => {
                    assert!(!settings.is_empty());
                    for (node, s) in &settings {
                        assert!(ids.contains(node));
                        assert!(s.iter().all(|c| matches!(c, ClockSetting::Offset { .. })));
                    }
                    if settings.iter().any(|(_, s)| s.len() > 1) {
                        strobes += 1;
                    } else {
                        bumps += 1;
                    }
                }
                other => panic!("{other:?}"),
            }
            match choose(FaultKind::Member, &ids, Some(2), 3, &mut rng) {
                Fault::Remove(n) => assert!(ids.contains(&n)),
                other => panic!("{other:?}"),
            }
        }
        assert!(bumps > 20 && strobes > 20, "{bumps} {strobes}");
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let ids = [1, 2, 3, 4, 5];
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..20)
                .map(|_| {
                    let kind = *rng
                        .pick(&[FaultKind::Partition, FaultKind::Kill])
                        .expect("kind");
                    choose(kind, &ids, Some(2), 3, &mut rng)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn every_node_in_a_majorities_ring_sees_a_majority() {
        let ids = [1, 2, 3, 4, 5];
        let mut rng = Rng::new(1);
        for _ in 0..200 {
            if let Fault::Links { label, links } =
                choose(FaultKind::Partition, &ids, None, 3, &mut rng)
            {
                if !label.starts_with("majorities ring") {
                    continue;
                }
                for i in ids {
                    let cut = links.iter().filter(|((a, _), _)| *a == i).count();
                    // Reaches itself and 4 - cut others: 3 of 5.
                    assert_eq!(5 - cut, 3, "{label}");
                }
                return;
            }
        }
        panic!("no ring in 200 draws");
    }
}
