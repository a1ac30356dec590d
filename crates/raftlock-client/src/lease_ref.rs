//! Calls on a lease named by its id, without a [`crate::Session`]: nothing
//! is kept alive in the background and nothing is released on drop. For
//! programs that do not outlive the lock — a shell script's `raftlock
//! acquire` and `raftlock release` are two processes — or that hand a lease
//! id to another process. Whoever holds the id keeps the lease alive
//! ([`LeaseRef::keep_alive`]) or lets it expire; a [`crate::Session`] does
//! all of that for you and is what a long-running program wants.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use raftlock_proto::errors;
use raftlock_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Client;
use crate::error::Error;
use crate::lock::{LockOptions, Mode, acquire_call, lock_option_setters};

/// A lease by its id. Cheap to clone.
#[derive(Clone)]
pub struct LeaseRef {
    client: Client,
    lease_id: u64,
}

impl Client {
    /// Calls on the lease `lease_id` (granted by [`Client::grant_lease`],
    /// by another process, or by the CLI) without a session.
    pub fn lease_ref(&self, lease_id: u64) -> LeaseRef {
        LeaseRef {
            client: self.clone(),
            lease_id,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl LeaseRef {
    /// The lease's id.
    pub fn id(&self) -> u64 {
        self.lease_id
    }

    /// An acquire of `name` for this lease. Retried acquires are safe: a
    /// lease that already holds the lock gets its hold back (`retry` in the
    /// answer), a queued request keeps its place.
    pub fn lock(&self, name: impl Into<String>) -> LeaseLockBuilder {
        LeaseLockBuilder {
            lease: self.clone(),
            name: name.into(),
            opts: LockOptions::default(),
        }
    }

    /// Release `names` held with `token`. Not retried once it may have
    /// been applied (the answer of an attempt was lost): a retry would meet
    /// NOT_HOLDER for the release that happened, so such a failure is
    /// returned as [`Error::OutcomeUnknown`] for the caller to check.
    pub async fn release(
        &self,
        names: &[String],
        token: u64,
    ) -> Result<pb::ReleaseResponse, Error> {
        let lease_id = self.lease_id;
        self.client
            .call_once(lease_id, self.client.deadline(), |ch, left| {
                let mut req = tonic::Request::new(pb::ReleaseRequest {
                    lease_id,
                    token,
                    names: names.to_vec(),
                });
                req.set_timeout(left);
                async move { pb::locks_client::LocksClient::new(ch).release(req).await }
            })
            .await
    }

    /// Record an extension of the hold of `name` (with its `token`) and
    /// restart the lease's deadline; with `ttl`, give the lease a new ttl.
    pub async fn extend(
        &self,
        name: &str,
        token: u64,
        ttl: Option<Duration>,
    ) -> Result<pb::ExtendResponse, Error> {
        let lease_id = self.lease_id;
        let ttl_ms = ttl.map(millis);
        self.client
            .call(lease_id, self.client.deadline(), |ch, left| {
                let mut req = tonic::Request::new(pb::ExtendRequest {
                    lease_id,
                    name: name.to_string(),
                    token,
                    ttl_ms,
                });
                req.set_timeout(left);
                async move { pb::locks_client::LocksClient::new(ch).extend(req).await }
            })
            .await
    }

    /// End the lease now: its holds are released, its waits dropped.
    /// `Error::LeaseLost` if it does not exist (any more).
    pub async fn revoke(&self) -> Result<pb::RevokeLeaseResponse, Error> {
        let lease_id = self.lease_id;
        self.client
            .call_once(lease_id, self.client.deadline(), |ch, left| {
                let mut req = tonic::Request::new(pb::RevokeLeaseRequest { lease_id });
                req.set_timeout(left);
                async move { pb::leases_client::LeasesClient::new(ch).revoke(req).await }
            })
            .await
    }

    /// Keep the lease alive until the stream is dropped: a keep-alive every
    /// third of its ttl, each acknowledgement an item. The keep-alives go
    /// on whether or not the items are read (an item not read in time is
    /// dropped, as etcd's KeepAlive does). A broken stream is reopened (at
    /// the leader it names, or the next node) with the client's retries;
    /// the stream ends after an error: [`Error::LeaseLost`] when the lease
    /// is gone, or the failure that made reopening give up.
    ///
    /// Unlike a session it does not count the lease's validity for you.
    /// An item says the lease is valid for `ttl_ms` from when its request
    /// was sent, which is after the previous item was received (each
    /// request goes ttl/3 after the last answer). So on receiving an item,
    /// the lease is certainly valid for `ttl_ms` (less a drift margin) from
    /// the moment you received the item before it, or, for the first, from
    /// your call of `keep_alive()`; never count from the item itself.
    ///
    /// Must be called within a Tokio runtime (the keep-alives run on a task
    /// of their own).
    pub fn keep_alive(&self) -> KeepAliveStream {
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(keep_alive_task(self.client.clone(), self.lease_id, tx));
        KeepAliveStream {
            inner: ReceiverStream::new(rx),
            task,
        }
    }
}

/// An acquire on a [`LeaseRef`], built like a session's
/// ([`crate::LockBuilder`]).
#[must_use = "a lock builder does nothing until acquire() or try_acquire()"]
pub struct LeaseLockBuilder {
    lease: LeaseRef,
    name: String,
    opts: LockOptions,
}

impl LeaseLockBuilder {
    lock_option_setters!();

    /// Exclusive (the default), shared, or one permit of a semaphore.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.opts.mode = mode;
        self
    }

    /// Acquire, waiting in the FIFO queue up to the builder's `wait`. The
    /// answer carries the fencing token; release it with
    /// [`LeaseRef::release`] or let the lease end. An acquire that fails
    /// with [`Error::may_have_been_applied`] may have left a hold or a
    /// queued request for the lease: retry it (the same lease gets the
    /// same hold) or revoke the lease.
    pub async fn acquire(self) -> Result<pb::AcquireResponse, Error> {
        let wait = self.opts.wait;
        self.run(wait).await
    }

    /// Acquire only if it can be granted now, without waiting (LOCK_BUSY
    /// otherwise).
    pub async fn try_acquire(self) -> Result<pb::AcquireResponse, Error> {
        self.run(Duration::ZERO).await
    }

    async fn run(self, wait: Duration) -> Result<pb::AcquireResponse, Error> {
        let client = &self.lease.client;
        let deadline = self.opts.deadline_at(client, wait);
        let spec = self.opts.mode.spec(&self.name);
        acquire_call(
            client,
            self.lease.lease_id,
            vec![spec],
            wait,
            &self.opts,
            deadline,
        )
        .await
    }
}

/// The acknowledgements of [`LeaseRef::keep_alive`]. Dropping it stops the
/// keep-alives (the lease then expires after its ttl).
pub struct KeepAliveStream {
    inner: ReceiverStream<Result<pb::KeepAliveResponse, Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for KeepAliveStream {
    type Item = Result<pb::KeepAliveResponse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Drop for KeepAliveStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pause before reopening a keep-alive stream that broke or ended.
const REOPEN_PAUSE: Duration = Duration::from_millis(300);

async fn keep_alive_task(
    client: Client,
    lease_id: u64,
    out: mpsc::Sender<Result<pb::KeepAliveResponse, Error>>,
) {
    // Until the first answer says the ttl: often enough for any ttl.
    let mut every = Duration::from_secs(1);
    loop {
        let mut sender = None;
        let opened = client
            .call_read(lease_id, client.deadline(), |ch, _left| {
                let (tx, rx) = mpsc::channel(4);
                // The first request goes with the stream's opening.
                let _ = tx.try_send(pb::KeepAliveRequest { lease_id });
                sender = Some(tx);
                async move {
                    pb::leases_client::LeasesClient::new(ch)
                        .keep_alive(ReceiverStream::new(rx))
                        .await
                }
            })
            .await;
        let (mut inbound, tx) = match (opened, sender) {
            (Ok(inbound), Some(tx)) => (inbound, tx),
            (Err(e), _) => {
                let _ = out.send(Err(e)).await;
                return;
            }
            // An opened stream comes from an attempt, which made a sender.
            (Ok(_), None) => return,
        };
        // One request in flight at a time (the first went with the
        // opening): the next goes ttl/3 after the answer, so every request
        // is sent after the previous item was received, which is what
        // `keep_alive`'s validity rule counts on.
        let mut awaiting = true;
        loop {
            tokio::select! {
                answer = inbound.message() => match answer {
                    Ok(Some(r)) => {
                        awaiting = false;
                        every = Duration::from_millis((r.ttl_ms / 3).max(100));
                        // Never wait for the reader: the next keep-alive
                        // must go out on time.
                        match out.try_send(Ok(r)) {
                            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    Ok(None) => {
                        tracing::debug!(lease_id, "the node ended the keep-alive stream; reopening");
                        break;
                    }
                    Err(status) => {
                        let classified = errors::classify(&status);
                        if classified.is_definite_refusal() {
                            // The lease is gone, or the request is wrong:
                            // reopening would get the same answer.
                            let _ = out.send(Err(Error::from_status(&status, lease_id, 1))).await;
                            return;
                        }
                        tracing::debug!(lease_id, error = %status.message(), "keep-alive stream broke; reopening");
                        // A node that answers NOT_LEADER, NO_LEADER... in
                        // the stream: go to the leader it names, or the
                        // next node, not the same one again.
                        client.note_failure(client.current_index(), &status);
                        break;
                    }
                },
                _ = tokio::time::sleep(every), if !awaiting => {
                    if tx.send(pb::KeepAliveRequest { lease_id }).await.is_err() {
                        break;
                    }
                    awaiting = true;
                }
            }
        }
        tokio::time::sleep(REOPEN_PAUSE).await;
    }
}
