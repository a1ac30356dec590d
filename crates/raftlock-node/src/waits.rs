//! Calls waiting for a queued acquire to be granted, resolved by this node's
//! own applies (so a follower can hold a waiting call as well as the leader).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use raftlock_core::{Applied, EventKind, Granted, State, WaiterId};
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// Granted by the entry at `revision`.
    Granted {
        token: u64,
        holds: Vec<Granted>,
        revision: u64,
    },
    /// Left the queue without a grant (cancelled, or its lease ended).
    Dropped,
}

type Pending = HashMap<WaiterId, (u64, Vec<oneshot::Sender<WaitOutcome>>)>;

#[derive(Default)]
pub(crate) struct Waits {
    /// By waiter id: its lease and the calls waiting for it.
    pending: Mutex<Pending>,
}

impl Waits {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait for `waiter`. The caller must already have applied the entry
    /// that queued it, and calls this inside the state's read lock (lock
    /// order everywhere: state, then waits), so whatever happened to the
    /// request up to `state` is read here and anything later reaches
    /// [`Waits::on_applied`] after the registration.
    pub(crate) fn register(
        &self,
        waiter: WaiterId,
        lease: u64,
        state: &State,
    ) -> oneshot::Receiver<WaitOutcome> {
        let (tx, rx) = oneshot::channel();
        match settled(state, waiter, lease) {
            Some(outcome) => {
                let _ = tx.send(outcome);
            }
            None => self
                .lock()
                .entry(waiter)
                .or_insert((lease, Vec::new()))
                .1
                .push(tx),
        }
        rx
    }

    /// Resolve the waiters granted or dropped by these applied entries.
    pub(crate) fn on_applied(&self, batch: &[Applied]) {
        let mut pending = self.lock();
        if pending.is_empty() {
            return;
        }
        for applied in batch {
            let mut granted: HashMap<WaiterId, Vec<Granted>> = HashMap::new();
            for event in &applied.events {
                match &event.kind {
                    EventKind::Acquired {
                        name,
                        mode,
                        token,
                        waiter: Some(w),
                        ..
                    } if pending.contains_key(w) => granted.entry(*w).or_default().push(Granted {
                        name: name.clone(),
                        mode: *mode,
                        token: *token,
                    }),
                    EventKind::WaitDropped { waiter, .. } => {
                        for tx in pending.remove(waiter).map(|p| p.1).unwrap_or_default() {
                            let _ = tx.send(WaitOutcome::Dropped);
                        }
                    }
                    _ => {}
                }
            }
            for (w, holds) in granted {
                for tx in pending.remove(&w).map(|p| p.1).unwrap_or_default() {
                    let _ = tx.send(WaitOutcome::Granted {
                        token: applied.revision,
                        holds: holds.clone(),
                        revision: applied.revision,
                    });
                }
            }
        }
        pending.retain(|_, (_, txs)| {
            txs.retain(|tx| !tx.is_closed());
            !txs.is_empty()
        });
    }

    /// Applied entries were missed: settle every waiter from the state.
    pub(crate) fn resync(&self, state: &State) {
        let mut pending = self.lock();
        pending.retain(|w, (lease, txs)| {
            let Some(outcome) = settled(state, *w, *lease) else {
                return true; // still queued
            };
            for tx in txs.drain(..) {
                let _ = tx.send(outcome.clone());
            }
            false
        });
    }
}

/// `None` while the waiter is still queued.
fn settled(state: &State, waiter: WaiterId, lease: u64) -> Option<WaitOutcome> {
    if state.waiter(waiter).is_some() {
        return None;
    }
    // Not queued any more: the holds granted to it carry its id.
    let mut holds = Vec::new();
    for name in state.lease(lease).map(|l| &l.holds).into_iter().flatten() {
        if let Some(hold) = state.lock(name).and_then(|l| l.holds.get(&lease))
            && hold.from_waiter == Some(waiter)
        {
            holds.push(Granted {
                name: name.to_string(),
                mode: hold.mode,
                token: hold.token,
            });
        }
    }
    Some(match holds.first() {
        Some(first) => WaitOutcome::Granted {
            token: first.token,
            revision: first.token,
            holds,
        },
        None => WaitOutcome::Dropped,
    })
}
