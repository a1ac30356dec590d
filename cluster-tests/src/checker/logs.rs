//! The nodes' logs after the run, against Raft's two safety properties that
//! every token rests on (a token is the index of the entry that granted it):
//!
//! - **Log matching**: one log id (index, and the term and leader that
//!   appended it) means one entry on every node that holds it, and two
//!   logs that hold the same log id hold the same log ids at every lower
//!   index they both still have;
//! - **State machine safety**: two nodes that both applied index i (so it
//!   was committed) applied the same entry there.
//!
//! A node that lost acknowledged entries in a power cut and then took
//! other entries at their indexes breaks one of them even when no client
//! happened to observe it. A node whose store does not open at all (a cut
//! that emptied it) is a violation too. The logs are read from every
//! node's data directory after the run
//! ([`crate::cluster::Cluster::read_logs`]); entries purged by a snapshot
//! are not compared.

use std::collections::BTreeMap;

use crate::checker::CheckResult;
use crate::cluster::NodeLog;

pub const NAME: &str = "log-matching";

/// An entry as compared: its log id's (term, leader) and its payload CRC.
type Held = ((u64, u64), u32);
/// A node's entries by index.
type ById = BTreeMap<u64, Held>;

/// Checks the logs read from every node (see the module documentation).
pub fn check(read: &BTreeMap<u64, Result<NodeLog, String>>) -> CheckResult {
    let mut result = CheckResult::new(NAME);
    let mut logs = BTreeMap::new();
    for (node, log) in read {
        match log {
            Ok(log) => {
                logs.insert(*node, log);
            }
            Err(e) => {
                result.violation(format!("node {node}'s log cannot be read: {e}"), Vec::new())
            }
        }
    }
    result.count("nodes", logs.len() as u64);
    let mut by_node: BTreeMap<u64, ById> = BTreeMap::new();
    for (node, log) in &logs {
        result.count("entries", log.entries.len() as u64);
        let mut previous = log.purged;
        let entries = by_node.entry(*node).or_default();
        for (index, leader, crc) in &log.entries {
            if previous.is_some_and(|p| *index != p + 1) {
                result.violation(
                    format!(
                        "node {node}'s log has a hole: entry {index} follows {}",
                        previous.unwrap_or(0)
                    ),
                    Vec::new(),
                );
            }
            previous = Some(*index);
            entries.insert(*index, (*leader, *crc));
        }
    }
    let indexes: std::collections::BTreeSet<u64> =
        by_node.values().flat_map(|e| e.keys().copied()).collect();
    for index in indexes {
        let holders: Vec<(u64, &Held)> = by_node
            .iter()
            .filter_map(|(node, e)| e.get(&index).map(|v| (*node, v)))
            .collect();
        if holders.len() == logs.len() && logs.len() > 1 {
            result.count("indexes-on-every-node", 1);
        }
        // Log matching: one log id, one payload.
        let mut payloads: BTreeMap<(u64, u64), BTreeMap<u32, Vec<u64>>> = BTreeMap::new();
        for (node, (id, crc)) in &holders {
            payloads
                .entry(*id)
                .or_default()
                .entry(*crc)
                .or_default()
                .push(*node);
        }
        for ((term, leader), crcs) in &payloads {
            if crcs.len() > 1 {
                let detail: Vec<String> = crcs
                    .iter()
                    .map(|(crc, nodes)| format!("payload crc {crc:08x} on nodes {nodes:?}"))
                    .collect();
                result.violation(
                    format!(
                        "log id {term}-{leader}-{index} holds different entries: {}",
                        detail.join("; ")
                    ),
                    Vec::new(),
                );
            }
        }
        // State machine safety: every node that applied this index holds
        // the same entry there.
        let applied: Vec<(u64, &Held)> = holders
            .iter()
            .copied()
            .filter(|(node, _)| logs[node].applied.is_some_and(|a| a >= index))
            .collect();
        if applied.len() > 1 {
            result.count("applied-indexes-compared", 1);
            if applied.windows(2).any(|w| w[0].1 != w[1].1) {
                let detail: Vec<String> = applied
                    .iter()
                    .map(|(node, ((term, leader), crc))| {
                        format!("node {node}: {term}-{leader}-{index} crc {crc:08x}")
                    })
                    .collect();
                result.violation(
                    format!(
                        "index {index} was applied as different entries: {}",
                        detail.join("; ")
                    ),
                    Vec::new(),
                );
            }
        }
    }
    // Log matching, the prefix half: below the highest log id two logs
    // share, they share every log id.
    let nodes: Vec<&u64> = by_node.keys().collect();
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let (ea, eb) = (&by_node[*a], &by_node[*b]);
            let common: Vec<u64> = ea.keys().filter(|k| eb.contains_key(k)).copied().collect();
            let Some(top) = common.iter().rev().find(|k| ea[*k].0 == eb[*k].0) else {
                continue;
            };
            if let Some(diverged) = common
                .iter()
                .take_while(|k| *k < top)
                .find(|k| ea[*k].0 != eb[*k].0)
            {
                let (ta, tb) = (ea[diverged].0, eb[diverged].0);
                result.violation(
                    format!(
                        "nodes {a} and {b} agree on log id {}-{}-{top} but not at index {diverged} ({}-{} vs {}-{})",
                        ea[top].0.0, ea[top].0.1, ta.0, ta.1, tb.0, tb.1
                    ),
                    Vec::new(),
                );
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;

    fn log(entries: &[(u64, u64, u32)]) -> Result<NodeLog, String> {
        Ok(NodeLog {
            entries: entries.iter().map(|(i, t, c)| (*i, (*t, 1), *c)).collect(),
            purged: None,
            applied: None,
        })
    }

    fn applied(log: Result<NodeLog, String>, upto: u64) -> Result<NodeLog, String> {
        log.map(|mut l| {
            l.applied = Some(upto);
            l
        })
    }

    #[test]
    fn logs_that_agree_where_they_overlap_pass() {
        let logs = BTreeMap::from([
            (1, log(&[(1, 1, 10), (2, 1, 20), (3, 2, 30)])),
            (2, log(&[(1, 1, 10), (2, 1, 20)])),
            // A different term at one index is an uncommitted entry that a
            // later leader replaced: allowed.
            (3, log(&[(1, 1, 10), (2, 1, 20), (3, 1, 99)])),
        ]);
        let r = check(&logs);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts["indexes-on-every-node"], 2);
    }

    #[test]
    fn one_log_id_with_two_entries_fails() {
        let logs = BTreeMap::from([
            (1, log(&[(1, 1, 10), (2, 3, 20)])),
            (2, log(&[(1, 1, 10), (2, 3, 21)])),
        ]);
        let r = check(&logs);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.violations[0].message.contains("3-1-2"), "{r:?}");
    }

    #[test]
    fn a_hole_after_the_purged_index_fails() {
        let mut holey = log(&[(6, 1, 1), (8, 1, 2)]).expect("log");
        holey.purged = Some(5);
        let r = check(&BTreeMap::from([(1, Ok(holey))]));
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.violations[0].message.contains("hole"), "{r:?}");
    }

    #[test]
    fn a_committed_entry_replaced_by_another_fails() {
        // Node 2 lost entry 2 (term 1) in a power cut and took a term-2
        // entry there, and both nodes applied index 2.
        let logs = BTreeMap::from([
            (1, applied(log(&[(1, 1, 10), (2, 1, 20)]), 2)),
            (2, applied(log(&[(1, 1, 10), (2, 2, 21)]), 2)),
        ]);
        let r = check(&logs);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(
            r.violations[0].message.contains("index 2 was applied"),
            "{r:?}"
        );
        // Not applied by both: a replaced uncommitted entry, allowed.
        let logs = BTreeMap::from([
            (1, applied(log(&[(1, 1, 10), (2, 1, 20)]), 1)),
            (2, applied(log(&[(1, 1, 10), (2, 2, 21)]), 2)),
        ]);
        assert_eq!(check(&logs).verdict, Verdict::Pass);
    }

    #[test]
    fn logs_that_agree_above_a_difference_fail() {
        let logs = BTreeMap::from([
            (1, log(&[(1, 1, 10), (2, 1, 20), (3, 2, 30)])),
            (2, log(&[(1, 1, 10), (2, 2, 21), (3, 2, 30)])),
        ]);
        let r = check(&logs);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(
            r.violations
                .iter()
                .any(|v| v.message.contains("not at index 2")),
            "{r:?}"
        );
    }

    #[test]
    fn a_log_that_cannot_be_read_fails() {
        let logs = BTreeMap::from([
            (1, log(&[(1, 1, 10)])),
            (2, Err("sled lost its data".to_string())),
        ]);
        let r = check(&logs);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.violations[0].message.contains("node 2"), "{r:?}");
    }
}
