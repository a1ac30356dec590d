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

/// The leases, names and waiting acquires of a batch being formed.
#[derive(Debug, Default, Clone)]
pub struct BatchPlan {
    leases: BTreeSet<LeaseId>,
    names: BTreeSet<String>,
    waiting_acquire: bool,
    len: usize,
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
        if self.len >= MAX_BATCH_COMMANDS {
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
                     at most {MAX_BATCH_COMMANDS} commands"
                ));
            }
        }
        Ok(())
    }
}
