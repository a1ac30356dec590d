//! Log matching across nodes: one log id (index, and the term and leader
//! that appended it) means one entry on every node that holds it.
//!
//! Raft's Log Matching property, which every token rests on: a token is the
//! index of the entry that granted it, so if two nodes held different
//! entries under one log id, the cluster would have decided two things at
//! one index, and a token could be handed out twice. A node that lost
//! acknowledged entries in a power cut and then led (or voted for a leader
//! that reused their ids) shows up here, even when no client happened to
//! observe it. The logs are read from every node's data directory after
//! the run ([`crate::cluster::Cluster::read_logs`]); entries purged by a
//! snapshot are not compared.

use std::collections::BTreeMap;

use crate::checker::CheckResult;
use crate::cluster::NodeLog;

pub const NAME: &str = "log-matching";

/// Compares every pair of nodes at every index both still hold. A node
/// whose log could not be read (its store refused to open: damaged, or
/// emptied by a power cut that lost what it had acknowledged) is a
/// violation too.
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
    // index -> log id -> (payload CRC -> nodes)
    type Holders = BTreeMap<u32, Vec<u64>>;
    let mut by_index: BTreeMap<u64, BTreeMap<(u64, u64), Holders>> = BTreeMap::new();
    for (node, log) in &logs {
        result.count("entries", log.entries.len() as u64);
        let mut previous = log.purged;
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
            by_index
                .entry(*index)
                .or_default()
                .entry(*leader)
                .or_default()
                .entry(*crc)
                .or_default()
                .push(*node);
        }
    }
    for (index, ids) in &by_index {
        let held_by: usize = ids.values().flat_map(|h| h.values()).map(Vec::len).sum();
        if held_by == logs.len() && logs.len() > 1 {
            result.count("indexes-on-every-node", 1);
        }
        for ((term, leader), holders) in ids {
            if holders.len() > 1 {
                let detail: Vec<String> = holders
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
