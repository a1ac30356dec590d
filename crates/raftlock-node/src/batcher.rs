//! The leader's write batcher: independent client commands (acquire,
//! release, extend of distinct leases on distinct locks, see
//! `raftlock_core::batch`) that arrive while earlier writes are in flight
//! share one log entry.
//!
//! Why: every log entry costs an append and a flush on each node, an
//! AppendEntries round trip to each follower (a follower's core waits for
//! its flush before it answers) and an apply pass. One entry carrying many
//! commands pays that once. (Stock openraft 0.9 also made the leader's core
//! wait for its own flush; our patched copy overlaps it with replication,
//! see vendor/README.md, and four entries in flight instead of two measured
//! no better: docs/performance.md.)
//!
//! How: at most [`MAX_IN_FLIGHT`] entries are being written at once. A
//! command that finds a free slot is proposed at once, alone (no added
//! latency when the leader is idle); commands that arrive while every slot
//! is taken wait in the queue and go out together in the next free slot,
//! as many as fit one batch (commands and bytes). A command that does not
//! fit the batch being formed starts the next one. The two entries in
//! flight may reach the log in either order: they hold only commands that
//! were in flight at the same time, which have no order to keep. A command
//! whose caller has already gone (its write timed out, its connection
//! closed) is not proposed at all: "timed out" promised no more than
//! "may have been applied".

use std::sync::Arc;

use raftlock_core::{Applied, BatchPlan, Command, Response};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::Api;
use crate::error::NodeError;

/// Entries being written at once through the batcher.
pub(crate) const MAX_IN_FLIGHT: usize = 2;
/// Commands waiting for a slot; a full queue makes callers wait (back
/// pressure), never drops them.
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Applied, NodeError>>;

/// The sending half, kept in the node's `Api`.
#[derive(Debug)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<(Command, Reply)>,
}

impl Batcher {
    /// The batcher and the receiving half for [`run`].
    pub(crate) fn new() -> (Batcher, mpsc::Receiver<(Command, Reply)>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Batcher { tx }, rx)
    }

    /// Proposes `command` (batchable, on the leader) through the batcher.
    pub(crate) async fn propose(&self, command: Command) -> Result<Applied, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((command, reply))
            .await
            .map_err(|_| NodeError::ShuttingDown)?;
        // A dropped reply: the node stopped with the write in flight.
        answer.await.map_err(|_| NodeError::ShuttingDown)?
    }
}

/// Forms and proposes batches until `stop`.
pub(crate) async fn run(
    api: Arc<Api>,
    mut rx: mpsc::Receiver<(Command, Reply)>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<(Command, Reply)> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let first = match carried.take() {
            Some(item) => item,
            None => tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
                changed = stop.changed() => if changed.is_err() { return } else { continue },
            },
        };
        if first.1.is_closed() {
            continue;
        }
        // Wait for a slot before gathering: what arrives meanwhile joins.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = first.1.send(Err(NodeError::ShuttingDown));
                    return;
                }
                carried = Some(first);
                continue;
            }
        };
        let mut plan = BatchPlan::default();
        let admitted = plan.admit(&first.0);
        let mut items = vec![first];
        if admitted {
            while let Ok(item) = rx.try_recv() {
                if item.1.is_closed() {
                    continue;
                }
                if plan.admit(&item.0) {
                    items.push(item);
                } else {
                    carried = Some(item);
                    break;
                }
            }
        }
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            let _slot = slot;
            propose_items(&api, items).await;
        });
    }
}

/// Proposes one command alone or several as a `Batch`, and answers each.
async fn propose_items(api: &Api, mut items: Vec<(Command, Reply)>) {
    if items.len() == 1 {
        if let Some((command, reply)) = items.pop() {
            let _ = reply.send(api.propose_one(command).await);
        }
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<Reply>) = items.into_iter().unzip();
    let count = commands.len();
    match api.propose_one(Command::Batch { commands }).await {
        Ok(Applied {
            index,
            result: Ok(Response::Batch { results }),
            revision,
            ..
        }) if results.len() == count => {
            for (reply, result) in replies.into_iter().zip(results) {
                // Events reach watchers and waits from the apply feed; the
                // proposer needs only its own answer.
                let _ = reply.send(Ok(Applied {
                    index,
                    result,
                    events: Vec::new(),
                    revision,
                }));
            }
        }
        // Refused as a whole (never for a batch the plan formed): every
        // command gets the refusal, none was applied.
        Ok(Applied {
            index,
            result: Err(e),
            revision,
            ..
        }) => {
            tracing::error!(index, error = %e, "a batch entry was refused");
            for reply in replies {
                let _ = reply.send(Ok(Applied {
                    index,
                    result: Err(e.clone()),
                    events: Vec::new(),
                    revision,
                }));
            }
        }
        Ok(other) => {
            let e = NodeError::Internal(format!(
                "a batch of {count} commands got an unexpected answer: {:?}",
                other.result
            ));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
