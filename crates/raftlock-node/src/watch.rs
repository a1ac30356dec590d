//! Watches: events from apply, filtered by name prefix, resumable from a
//! revision while it is in a bounded in-memory history. A watcher that falls
//! behind is cut off with an error; it never slows applies down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use raftlock_core::Event;
use tokio::sync::mpsc;

use crate::error::NodeError;

pub(crate) struct WatchHub {
    inner: Mutex<Inner>,
    history_len: usize,
    buffer: usize,
    max_watchers: usize,
    /// Watchers cut off for falling behind, since the node started.
    cut_off: AtomicU64,
}

struct Inner {
    /// Recent events, oldest first, at most `history_len`.
    history: VecDeque<Event>,
    /// Every event with a revision above this is in `history`; revisions at
    /// or below it are (partly) unknown to this hub.
    complete_after: u64,
    watchers: Vec<Watcher>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Vec<Event>>,
    cut: Arc<AtomicBool>,
}

/// The receiving end of a watch.
pub(crate) struct Subscription {
    pub(crate) rx: mpsc::Receiver<Vec<Event>>,
    /// Set when the hub cut the watcher off for being too slow.
    pub(crate) cut: Arc<AtomicBool>,
    pub(crate) buffer: usize,
}

impl Subscription {
    /// The next batch, or the reason the stream ended.
    pub(crate) async fn next(&mut self) -> Option<Result<Vec<Event>, NodeError>> {
        match self.rx.recv().await {
            Some(batch) => Some(Ok(batch)),
            None if self.cut.load(Ordering::Acquire) => Some(Err(NodeError::SlowWatcher {
                buffer: self.buffer,
            })),
            None => None,
        }
    }
}

fn matches(event: &Event, prefix: &str) -> bool {
    match event.kind.lock_name() {
        Some(name) => name.starts_with(prefix),
        // Lease events go to watchers of everything.
        None => prefix.is_empty(),
    }
}

impl WatchHub {
    /// `applied` is the index already applied when the hub starts: events at
    /// or below it cannot be replayed.
    pub(crate) fn new(
        applied: u64,
        history_len: usize,
        buffer: usize,
        max_watchers: usize,
    ) -> Self {
        WatchHub {
            inner: Mutex::new(Inner {
                history: VecDeque::new(),
                complete_after: applied,
                watchers: Vec::new(),
            }),
            history_len,
            buffer,
            max_watchers,
            cut_off: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start watching `prefix`. With `from_revision` > 0, first replays the
    /// history from that revision (COMPACTED if it is no longer there).
    pub(crate) fn subscribe(
        &self,
        prefix: String,
        from_revision: u64,
    ) -> Result<Subscription, NodeError> {
        let mut inner = self.lock();
        inner.watchers.retain(|w| !w.tx.is_closed());
        if inner.watchers.len() >= self.max_watchers {
            return Err(NodeError::TooManyWatchers {
                max: self.max_watchers,
            });
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        if from_revision > 0 {
            let oldest = inner.complete_after + 1;
            if from_revision < oldest {
                return Err(NodeError::Compacted {
                    requested: from_revision,
                    oldest,
                });
            }
            let replay: Vec<Event> = inner
                .history
                .iter()
                .filter(|e| e.revision >= from_revision && matches(e, &prefix))
                .cloned()
                .collect();
            // Replay in batches of up to 256 events, more per batch if that
            // many batches would not fit the channel.
            let per_batch = replay.len().div_ceil(self.buffer).max(256);
            for chunk in replay.chunks(per_batch) {
                if tx.try_send(chunk.to_vec()).is_err() {
                    self.cut_off.fetch_add(1, Ordering::Relaxed);
                    return Err(NodeError::SlowWatcher {
                        buffer: self.buffer,
                    });
                }
            }
        }
        let cut = Arc::new(AtomicBool::new(false));
        inner.watchers.push(Watcher {
            prefix,
            tx,
            cut: Arc::clone(&cut),
        });
        Ok(Subscription {
            rx,
            cut,
            buffer: self.buffer,
        })
    }

    /// Events of applied entries, in order.
    pub(crate) fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for e in events {
            inner.history.push_back(e.clone());
        }
        while inner.history.len() > self.history_len {
            if let Some(trimmed) = inner.history.pop_front() {
                // Other events of that revision may remain, but it is no
                // longer complete.
                inner.complete_after = inner.complete_after.max(trimmed.revision);
            }
        }
        inner.watchers.retain(|w| {
            let batch: Vec<Event> = events
                .iter()
                .filter(|e| matches(e, &w.prefix))
                .cloned()
                .collect();
            if batch.is_empty() {
                return !w.tx.is_closed();
            }
            match w.tx.try_send(batch) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.cut.store(true, Ordering::Release);
                    self.cut_off.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Events were missed (the apply feed lagged): every watcher is cut off
    /// and the history restarts after `applied`.
    pub(crate) fn reset(&self, applied: u64) {
        let mut inner = self.lock();
        for w in inner.watchers.drain(..) {
            w.cut.store(true, Ordering::Release);
            if !w.tx.is_closed() {
                self.cut_off.fetch_add(1, Ordering::Relaxed);
            }
        }
        inner.history.clear();
        inner.complete_after = applied;
    }

    /// Watchers cut off for falling behind, since the node started.
    pub(crate) fn cut_off_count(&self) -> u64 {
        self.cut_off.load(Ordering::Relaxed)
    }

    pub(crate) fn watcher_count(&self) -> usize {
        let mut inner = self.lock();
        inner.watchers.retain(|w| !w.tx.is_closed());
        inner.watchers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlock_core::EventKind;

    fn ev(revision: u64, name: &str) -> Event {
        Event {
            revision,
            kind: EventKind::Released {
                name: name.into(),
                lease: 1,
                token: revision,
            },
        }
    }

    #[tokio::test]
    async fn watchers_get_only_their_prefix_and_can_resume() {
        let hub = WatchHub::new(0, 100, 16, 10);
        let mut a = hub.subscribe("jobs/".into(), 0).unwrap();
        hub.publish(&[ev(1, "jobs/x"), ev(1, "other")]);
        hub.publish(&[ev(2, "other")]);
        hub.publish(&[ev(3, "jobs/y")]);
        assert_eq!(a.next().await.unwrap().unwrap(), vec![ev(1, "jobs/x")]);
        assert_eq!(a.next().await.unwrap().unwrap(), vec![ev(3, "jobs/y")]);
        let mut b = hub.subscribe("".into(), 2).unwrap();
        let replay = b.next().await.unwrap().unwrap();
        assert_eq!(replay, vec![ev(2, "other"), ev(3, "jobs/y")]);
    }

    #[tokio::test]
    async fn a_slow_watcher_is_cut_off_and_told_so() {
        let hub = WatchHub::new(0, 100, 2, 10);
        let mut w = hub.subscribe("".into(), 0).unwrap();
        for r in 1..=5 {
            hub.publish(&[ev(r, "x")]);
        }
        assert_eq!(hub.cut_off_count(), 1, "counted once");
        assert!(w.next().await.unwrap().is_ok());
        assert!(w.next().await.unwrap().is_ok());
        assert!(matches!(
            w.next().await,
            Some(Err(NodeError::SlowWatcher { buffer: 2 }))
        ));
    }

    #[test]
    fn a_revision_older_than_the_history_is_compacted() {
        let hub = WatchHub::new(10, 3, 16, 10);
        assert!(matches!(
            hub.subscribe("".into(), 5),
            Err(NodeError::Compacted {
                requested: 5,
                oldest: 11
            })
        ));
        for r in 11..=20 {
            hub.publish(&[ev(r, "x")]);
        }
        assert!(matches!(
            hub.subscribe("".into(), 12),
            Err(NodeError::Compacted { .. })
        ));
        assert!(hub.subscribe("".into(), 19).is_ok());
    }

    #[test]
    fn the_number_of_watchers_is_limited() {
        let hub = WatchHub::new(0, 10, 4, 1);
        let _a = hub.subscribe("".into(), 0).unwrap();
        assert!(matches!(
            hub.subscribe("".into(), 0),
            Err(NodeError::TooManyWatchers { max: 1 })
        ));
    }
}
