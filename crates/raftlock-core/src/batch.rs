//! Which commands may share one log entry (`Command::Batch`).
//!
//! The leader puts independent client commands into one entry so that one
//! append, one flush and one replication carry many of them. Applying the
//! batch must give every command the answer it would get in an entry of its
//! own, so a batch holds only commands that cannot see each other:
//! - only Acquire, Release and Extend (no lease starts or ends, no cancels,
//!   no admin commands);
//! - no two commands of the same lease, and no lock named by two commands
//!   (so on each name at most one command acts, and the entry's one grant
//!   pass comes after every release in it, as for a single command);
//! - at most one Acquire that may queue (a queued request's id is the
//!   entry's index, so two would collide).
//!
//! Holds granted by one entry share its index as their token, which the
//! fencing rule allows (tokens grow across entries; within an entry every
//! grant comes after every release).
//!
//! The node's batcher and `State::apply` use the same [`BatchPlan`], so what
//! the leader forms is exactly what the state machine accepts.

use std::collections::BTreeSet;

use crate::command::Command;
use crate::types::LeaseId;

/// Most commands in one batch entry.
pub const MAX_BATCH_COMMANDS: usize = 256;
/// Most bytes of names, reasons and metadata in one batch entry (as
/// [`approx_bytes`] counts them), so an entry stays far below the peers'
/// message limit (4 MiB) and one entry's events below a watch message's.
/// A single command is never refused for its size here (its own limits
/// bound it to ~40 KiB).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// About how many bytes `command` adds to an entry: its names, reason and
/// metadata, plus a fixed overhead for ids and framing.
pub fn approx_bytes(command: &Command) -> usize {
    const FIXED: usize = 64;
    match command {
        Command::Acquire {
            locks,
            reason,
            metadata,
            ..
        } => {
            FIXED
                + reason.len()
                + locks.iter().map(|l| l.name.len() + 16).sum::<usize>()
                + metadata
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 16)
                    .sum::<usize>()
        }
        Command::Release { names, .. } => FIXED + names.iter().map(|n| n.len() + 8).sum::<usize>(),
        Command::Extend { name, .. } => FIXED + name.len(),
        _ => FIXED,
    }
}

/// The leases, names and waiting acquires of a batch being formed.
#[derive(Debug, Default, Clone)]
pub struct BatchPlan {
    leases: BTreeSet<LeaseId>,
    names: BTreeSet<String>,
    waiting_acquire: bool,
    len: usize,
    bytes: usize,
}

impl BatchPlan {
    /// Whether `command` is of a kind that may ever go into a batch.
    pub fn batchable(command: &Command) -> bool {
        matches!(
            command,
            Command::Acquire { .. } | Command::Release { .. } | Command::Extend { .. }
        )
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `command` if it fits beside what the batch holds (and records
    /// it); otherwise leaves the plan as it was and returns false.
    pub fn admit(&mut self, command: &Command) -> bool {
        let bytes = approx_bytes(command);
        if self.len >= MAX_BATCH_COMMANDS || (self.len > 0 && self.bytes + bytes > MAX_BATCH_BYTES)
        {
            return false;
        }
        let (lease, names, waits): (LeaseId, Vec<&String>, bool) = match command {
            Command::Acquire {
                lease, locks, wait, ..
            } => (*lease, locks.iter().map(|l| &l.name).collect(), *wait),
            Command::Release { lease, names, .. } => (*lease, names.iter().collect(), false),
            Command::Extend { lease, name, .. } => (*lease, vec![name], false),
            _ => return false,
        };
        if self.leases.contains(&lease)
            || (waits && self.waiting_acquire)
            || names.iter().any(|n| self.names.contains(*n))
        {
            return false;
        }
        // A command naming one lock twice is refused by its own apply;
        // deduplicating here keeps the plan's sets exact either way.
        let unique: BTreeSet<&String> = names.iter().copied().collect();
        if unique.len() != names.len() {
            return false;
        }
        self.leases.insert(lease);
        self.names.extend(unique.into_iter().cloned());
        self.waiting_acquire |= waits;
        self.len += 1;
        self.bytes += bytes;
        true
    }

    /// Whether `commands` may form one batch entry, and if not, why.
    pub fn check(commands: &[Command]) -> Result<(), String> {
        if commands.len() < 2 {
            return Err(format!(
                "a batch holds 2 to {MAX_BATCH_COMMANDS} commands, not {}",
                commands.len()
            ));
        }
        let mut plan = BatchPlan::default();
        for (i, command) in commands.iter().enumerate() {
            if !plan.admit(command) {
                return Err(format!(
                    "command {i} cannot share the entry: only Acquire, Release and Extend \
                     of distinct leases on distinct locks, at most one acquire that waits, \
                     at most {MAX_BATCH_COMMANDS} commands and {MAX_BATCH_BYTES} bytes"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::LockSpec;
    use crate::types::Mode;

    fn acquire(lease: LeaseId, names: &[String], metadata_bytes: usize) -> Command {
        Command::Acquire {
            lease,
            locks: names
                .iter()
                .map(|n| LockSpec {
                    name: n.clone(),
                    mode: Mode::Exclusive,
                })
                .collect(),
            wait: false,
            reason: String::new(),
            metadata: [("k".to_string(), "v".repeat(metadata_bytes))].into(),
            lock_delay_ms: 0,
            quota: Default::default(),
        }
    }

    #[test]
    fn a_batch_stops_at_its_byte_budget_but_one_command_always_fits() {
        let mut plan = BatchPlan::default();
        // ~40 KiB each: 64 names of 500 bytes and 4 KiB of metadata.
        let big = |lease: LeaseId| {
            let names: Vec<String> = (0..64)
                .map(|i| format!("{lease}/{i}/{}", "n".repeat(490)))
                .collect();
            acquire(lease, &names, 4096)
        };
        let mut admitted = 0;
        for lease in 1..=100 {
            if !plan.admit(&big(lease)) {
                break;
            }
            admitted += 1;
        }
        assert!(
            (20..=30).contains(&admitted),
            "{admitted} big commands fit 1 MiB"
        );
        assert!(plan.bytes <= MAX_BATCH_BYTES);
        let commands: Vec<Command> = (1..=admitted + 1).map(big).collect();
        let refused = BatchPlan::check(&commands).unwrap_err();
        assert!(refused.contains("bytes"), "{refused}");
        // Alone, a command over the budget is still admitted.
        let mut alone = BatchPlan::default();
        assert!(alone.admit(&acquire(1, &["x".to_string()], MAX_BATCH_BYTES + 1)));
        assert!(!alone.admit(&acquire(2, &["y".to_string()], 10)));
    }

    #[test]
    fn the_plan_refuses_shared_leases_names_a_second_wait_and_other_kinds() {
        let x = vec!["x".to_string()];
        let y = vec!["y".to_string()];
        let mut plan = BatchPlan::default();
        assert!(plan.admit(&acquire(1, &x, 0)));
        assert!(!plan.admit(&acquire(1, &y, 0)), "same lease");
        assert!(!plan.admit(&acquire(2, &x, 0)), "same name");
        assert!(!plan.admit(&Command::Tick), "not a client command");
        assert!(
            !plan.admit(&acquire(3, &["z".to_string(), "z".to_string()], 0)),
            "a name twice"
        );
        let waiting = |lease, name: &str| Command::Acquire {
            lease,
            locks: vec![LockSpec {
                name: name.to_string(),
                mode: Mode::Shared,
            }],
            wait: true,
            reason: String::new(),
            metadata: Default::default(),
            lock_delay_ms: 0,
            quota: Default::default(),
        };
        assert!(plan.admit(&waiting(4, "w1")));
        assert!(
            !plan.admit(&waiting(5, "w2")),
            "a second acquire that may queue"
        );
        assert_eq!(plan.len(), 2);
    }
}
