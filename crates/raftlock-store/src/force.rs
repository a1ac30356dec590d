//! `--force-new-cluster`: turn one surviving member's store into the store
//! of a one-member cluster, offline, before openraft starts on it (as
//! etcd's flag does to its WAL).
//!
//! The survivor keeps its state and its log up to C, the last entry it
//! knows was committed. In a term above everything it has seen or voted
//! in, it writes at C+1 the caller's command (raftlock's
//! `ForceNewCluster`: a new cluster id, a raised token epoch, itself as the
//! only recorded member), then the entries it had after C (its uncommitted
//! tail, moved so that they are stamped in the new epoch; old memberships
//! and the old cluster's id and member records become blanks, another
//! node's force only an epoch raise), then a membership of this node
//! alone. The vote moves to
//! that term (never down) and `committed` to the membership entry, all
//! flushed, so when openraft starts it re-applies everything up to there
//! before any peer is contacted, finds itself the only voter and elects
//! itself.
//!
//! The flag left on the command line is harmless: a store already forced,
//! whose membership has not changed since, starts as it is. Once other
//! nodes were added the flag is refused, because forcing again would throw
//! them out. A start without the flag forgets the force
//! ([`forget_forced`]), so the node can be forced again one day.

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, ErrorSubject, ErrorVerb, Membership, RaftLogReader,
};

use raftlock_core::Command;

use crate::error::{damaged_error, sled_error, unencodable_error};
use crate::layout::FORCED_AT_KEY;
use crate::{Entry, LogId, LogStore, NodeId, StateMachineStore, StorageError, Vote, frame};

/// What [`force_new_cluster`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forced {
    /// The store now describes a one-member cluster whose membership entry
    /// is `at`; `term` is the term of the two new entries.
    Now { at: LogId, term: u64 },
    /// The store was forced before (membership entry `at`) and nothing has
    /// changed its membership since: nothing was done.
    Already { at: LogId },
}

#[derive(Debug, thiserror::Error)]
pub enum ForceError {
    #[error(
        "--force-new-cluster needs the data directory of a surviving member, and this one holds no Raft log or state (a new node): start it without the flag"
    )]
    NothingStored,
    #[error(
        "this node was forced into a new cluster at {forced_at} and its membership has changed since (now {now}): remove --force-new-cluster, or it would throw the added members out"
    )]
    MembershipChangedSince { forced_at: LogId, now: String },
    /// Boxed: openraft's error is 224 bytes, and this one travels in the
    /// node's start error.
    #[error(transparent)]
    Storage(Box<StorageError>),
}

impl From<StorageError> for ForceError {
    fn from(e: StorageError) -> Self {
        ForceError::Storage(Box::new(e))
    }
}

/// Makes the store a one-member cluster of node `me`, reached by its peers
/// at `node`. `command` is the payload of the first new entry; it is called
/// only when the store is forced now.
pub async fn force_new_cluster(
    log: &mut LogStore,
    sm: &mut StateMachineStore,
    me: NodeId,
    node: BasicNode,
    command: impl FnOnce() -> raftlock_core::Request,
) -> Result<Forced, ForceError> {
    let forced_at: Option<LogId> = read_forced_at(log)?;
    let (last_applied, applied_membership) = sm.applied_state().await?;
    let state = log.get_log_state().await?;

    if let Some(at) = forced_at {
        // The membership in force: the last membership entry in the log, else
        // the state machine's.
        let mut now = applied_membership.log_id().map(|l| (l, "state"));
        let mut reader = log.get_log_reader().await;
        for entry in reader.try_get_log_entries(at.index + 1..).await? {
            if matches!(entry.payload, EntryPayload::Membership(_)) {
                now = Some((entry.log_id, "log"));
            }
        }
        return match now {
            Some((l, _)) if l.index > at.index => Err(ForceError::MembershipChangedSince {
                forced_at: at,
                now: l.to_string(),
            }),
            _ => Ok(Forced::Already { at }),
        };
    }

    let Some(last) = state.last_log_id.max(last_applied) else {
        return Err(ForceError::NothingStored);
    };
    // What this node knows was committed. Entries after it (the tail) may
    // differ from what the lost majority committed at the same indexes, so
    // applied as they are they could repeat an acknowledged token of the
    // old epoch. They are moved behind the force entry instead, where they
    // are stamped in the new epoch: every stamp they hand out is above every
    // stamp of the old cluster. (A tail entry that was in fact committed is
    // applied again with a higher token: safe, if surprising to its client.)
    let Some(committed) = log.read_committed().await?.max(last_applied) else {
        // Nothing was ever committed here: no state worth keeping.
        return Err(ForceError::NothingStored);
    };
    let tail = if committed.index < last.index {
        let mut reader = log.get_log_reader().await;
        reader
            .try_get_log_entries(committed.index + 1..=last.index)
            .await?
    } else {
        Vec::new()
    };
    // The token epoch once the force entry is applied: the state's, raised
    // by what the committed entries not yet applied raise it to, plus one.
    let mut epoch = sm.read(|s| s.token_epoch());
    let unapplied = last_applied.map_or(0, |a| a.index + 1)..=committed.index;
    if !unapplied.is_empty() {
        let mut reader = log.get_log_reader().await;
        for entry in reader.try_get_log_entries(unapplied).await? {
            if let EntryPayload::Normal(request) = &entry.payload {
                // A refused raise leaves the epoch as it was.
                epoch = request.command.token_epoch_after(epoch).unwrap_or(epoch);
            }
        }
    }
    epoch = epoch.saturating_add(1);
    let vote: Vote = log.read_vote().await?.unwrap_or_default();
    // Above every term this node has written, seen in a log id or voted
    // in: the new entries' ids are above every log id any node may hold,
    // and the vote never goes down.
    let term = vote.leader_id().term.max(last.leader_id.term) + 1;
    let leader = CommittedLeaderId::new(term, me);
    let mut index = committed.index;
    let mut next_id = || {
        index += 1;
        LogId::new(leader, index)
    };
    let mut entries = vec![Entry {
        log_id: next_id(),
        payload: EntryPayload::Normal(command()),
    }];
    for old in &tail {
        let payload = match &old.payload {
            // A force another node wrote (replicated here, never known to
            // be committed) keeps only its token epoch raise: its stamps
            // may have reached clients, so the epoch still goes up by one
            // for it, as it did when this copied the entry whole; its
            // cluster id and member record are the old cluster's.
            EntryPayload::Normal(request)
                if matches!(request.command, Command::ForceNewCluster { .. }) =>
            {
                epoch = epoch.saturating_add(1);
                EntryPayload::Normal(raftlock_core::Request {
                    command: Command::RaiseTokenEpoch { at_least: epoch },
                    ..request.clone()
                })
            }
            // What the old cluster recorded about itself must not come back
            // either: applied after the force entry, a tail's `RecordMember`
            // would give the new cluster a record of a lost node's old
            // store, and that node, wiped and added back under its id, would
            // be refused as a replaced store.
            EntryPayload::Normal(request) if request.command.is_about_the_cluster() => {
                EntryPayload::Blank
            }
            EntryPayload::Normal(request) => EntryPayload::Normal(request.clone()),
            // An old membership must not come back.
            EntryPayload::Blank | EntryPayload::Membership(_) => EntryPayload::Blank,
        };
        entries.push(Entry {
            log_id: next_id(),
            payload,
        });
    }
    let at = next_id();
    entries.push(Entry {
        log_id: at,
        payload: EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([me])],
            BTreeMap::from([(me, node)]),
        )),
    });
    // The vote first (flushed): entries of a term above the stored vote
    // would be a log no vote explains. A crash after it leaves a higher
    // vote and no entries; running the flag again forces from there.
    log.save_vote(&Vote::new(term, me)).await?;
    // Then the tail goes (flushed; a crash here loses only entries never
    // known to be committed, as forcing does anyway), and comes back behind
    // the force entry.
    if let Some(first) = tail.first() {
        log.truncate(first.log_id).await?;
    }
    log.blocking_append(entries).await?;
    log.save_committed(Some(at)).await?;
    // Written last and flushed with the rest: once it is durable, the
    // entries and `committed` before it are too (sled keeps a prefix of
    // its writes), and a restart with the flag knows this store is done.
    log.shared()
        .meta
        .insert(
            FORCED_AT_KEY,
            frame::encode(&"forced-at log id", &at)
                .map_err(|d| unencodable_error(ErrorSubject::Store, d))?,
        )
        .map_err(|e| sled_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
    crate::log_store::flush(log.shared(), ErrorSubject::Store).await?;
    tracing::warn!(
        %at,
        term,
        restamped = tail.len(),
        "forced into a new one-member cluster"
    );
    Ok(Forced::Now { at, term })
}

fn read_forced_at(log: &LogStore) -> Result<Option<LogId>, StorageError> {
    let bytes = log
        .shared()
        .meta
        .get(FORCED_AT_KEY)
        .map_err(|e| sled_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
    bytes
        .map(|b| frame::decode(&"forced-at log id", &b))
        .transpose()
        .map_err(|d| damaged_error(ErrorSubject::Store, d))
}

/// Forgets that this store was forced (a start without the flag): a later
/// `--force-new-cluster` forces again instead of being taken for a flag
/// left in place. Not flushed: the next flush of the log makes it durable,
/// and until then a forced start is only refused, never wrong.
pub fn forget_forced(log: &LogStore) -> Result<bool, StorageError> {
    let removed = log
        .shared()
        .meta
        .remove(FORCED_AT_KEY)
        .map_err(|e| sled_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
    Ok(removed.is_some())
}
