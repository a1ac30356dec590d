//! The nemesis: a seeded schedule of faults on a [`Cluster`], each healed
//! before the next, and everything healed at the end.
//!
//! A quarter of the faults come with a second one of another kind at the
//! same time (`combine_percent`).
//!
//! Kinds (`--nemesis partition,kill,pause,link`):
//! - `partition`: isolate one node, isolate the leader, a random
//!   majority/minority split, majorities-ring (every node sees a different
//!   majority; 5+ nodes), a bridge (two halves joined by one node), one-way
//!   (a node's inbound links cut, or its outbound calls answered into the
//!   void);
//! - `kill`: kill -9 a random node or the leader, restart it at the heal;
//! - `pause`: SIGSTOP a random node or the leader, SIGCONT at the heal;
//! - `link`: delay or lossy links around one node.
//!
//! Not done yet: clock faults (libfaketime) and membership changes.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};

use crate::cluster::Cluster;
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
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "partition" => Ok(FaultKind::Partition),
            "kill" => Ok(FaultKind::Kill),
            "pause" => Ok(FaultKind::Pause),
            "link" => Ok(FaultKind::Link),
            "clock" | "membership" => Err(format!(
                "nemesis `{s}` is not implemented yet (clock faults need libfaketime; membership changes are planned)"
            )),
            other => Err(format!(
                "unknown nemesis `{other}`; use partition, kill, pause, link"
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
    Kill(u64),
    Pause(u64),
}

impl Fault {
    pub fn label(&self) -> String {
        match self {
            Fault::Partition { label, groups } => format!("{label} {groups:?}"),
            Fault::Links { label, .. } => label.clone(),
            Fault::Kill(n) => format!("kill node {n}"),
            Fault::Pause(n) => format!("pause node {n}"),
        }
    }
}

/// Chooses a fault of `kind` for nodes `ids` (leader if known).
pub fn choose(kind: FaultKind, ids: &[u64], leader: Option<u64>, rng: &mut Rng) -> Fault {
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
pub fn apply(cluster: &mut Cluster, fault: &Fault) -> Result<(), crate::cluster::ClusterError> {
    match fault {
        Fault::Partition { groups, .. } => cluster.partition(groups),
        Fault::Links { links, .. } => {
            for ((from, to), mode) in links {
                cluster.set_link(*from, *to, *mode);
            }
        }
        Fault::Kill(n) => cluster.kill(*n)?,
        Fault::Pause(n) => cluster.pause(*n)?,
    }
    Ok(())
}

/// Undoes `fault`.
pub fn heal(cluster: &mut Cluster, fault: &Fault) -> Result<(), crate::cluster::ClusterError> {
    match fault {
        Fault::Partition { .. } | Fault::Links { .. } => cluster.heal_links(),
        Fault::Kill(n) => cluster.restart(*n)?,
        Fault::Pause(n) => cluster.resume(*n)?,
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
}

impl Default for NemesisConfig {
    fn default() -> Self {
        NemesisConfig {
            kinds: vec![FaultKind::Partition, FaultKind::Kill, FaultKind::Pause],
            quiet_ms: (2_000, 5_000),
            fault_ms: (3_000, 8_000),
            combine_percent: 25,
        }
    }
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
            (c.ids(), c.leader().await)
        };
        let mut faults = vec![choose(kind, &ids, leader, &mut rng)];
        let others: Vec<FaultKind> = config
            .kinds
            .iter()
            .copied()
            .filter(|k| *k != kind)
            .collect();
        if rng.chance(config.combine_percent)
            && let Some(second) = rng.pick(&others).copied()
        {
            faults.push(choose(second, &ids, leader, &mut rng));
        }
        let label: Vec<String> = faults.iter().map(Fault::label).collect();
        let inv = record(&recorder, label.join(" + "));
        let mut error = None;
        {
            let mut c = cluster.lock().await;
            for f in &faults {
                if let Err(e) = apply(&mut c, f) {
                    error = Some(e.to_string());
                }
            }
        }
        injected += faults.len() as u64;
        wait(rng.range(config.fault_ms.0, config.fault_ms.1), &mut stop).await;
        {
            let mut c = cluster.lock().await;
            for f in faults.iter().rev() {
                if let Err(e) = heal(&mut c, f) {
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
    let healed = cluster.lock().await.heal_all();
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
    fn kinds_parse_and_unfinished_ones_say_so() {
        assert_eq!(
            parse_kinds("pause,partition,kill,pause").expect("valid"),
            vec![FaultKind::Partition, FaultKind::Kill, FaultKind::Pause]
        );
        assert!(
            parse_kinds("clock")
                .unwrap_err()
                .contains("not implemented")
        );
        assert!(parse_kinds("gremlins").is_err());
        assert!(parse_kinds("").expect("none").is_empty());
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
                    choose(kind, &ids, Some(2), &mut rng)
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
                choose(FaultKind::Partition, &ids, None, &mut rng)
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
