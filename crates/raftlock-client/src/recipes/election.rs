//! Leader election on one name, in the manner of etcd's `concurrency.Election`.
//!
//! A candidate campaigns by acquiring the name exclusively, waiting in the
//! server's FIFO queue: the holder is the leader, and the next candidate in
//! line takes over the moment the leader resigns or its session ends
//! (revoked, dropped, or expired because its process died). The leader's
//! value (an address, a host name) is kept as the hold's metadata and its
//! session's owner text, so anyone can see who leads with [`LeaderElection::leader`]
//! or follow changes with [`LeaderElection::observe`].
//!
//! Leadership is a lease, not a fact: a leader checks
//! [`Leadership::is_valid`] before acting, stops when [`Leadership::lost`]
//! resolves, and passes [`Leadership::token`] with every write so that the
//! resource refuses a deposed leader that has not noticed yet (see
//! [`crate::recipes::Fenced`]). Each new leader's token is higher than every
//! earlier leader's.

use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::{Error, LockGuard, Session, SessionEnd, proto};

/// The metadata key holding the leader's value.
pub const VALUE_KEY: &str = "value";

/// Candidates for leadership of one name. Cheap to clone.
///
/// ```
/// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (node, addr, _dir) = doc_node().await?;
/// use std::time::Duration;
/// use futures::StreamExt;
/// use raftlock_client::recipes::LeaderElection;
/// use raftlock_client::{Client, ClientOptions, SessionOptions};
///
/// let client = Client::connect([addr], ClientOptions::default()).await?;
/// let ttl = Duration::from_secs(5);
/// let a = client.session(SessionOptions::new(ttl).owner("scheduler-a")).await?;
/// let b = client.session(SessionOptions::new(ttl).owner("scheduler-b")).await?;
///
/// let election = LeaderElection::new(&a, "elections/scheduler");
/// let mut changes = election.observe().await?;
/// assert_eq!(changes.next().await.expect("open")?, None); // nobody leads yet
///
/// let leading = election.campaign("10.0.0.1:8080", Duration::from_secs(5)).await?;
/// let leader = changes.next().await.expect("open")?.expect("a leader");
/// assert_eq!((leader.owner.as_str(), leader.value.as_str()), ("scheduler-a", "10.0.0.1:8080"));
///
/// // b waits in line; a resigns; b leads with a higher token.
/// let b_election = LeaderElection::new(&b, "elections/scheduler");
/// let b_campaign = tokio::spawn(async move {
///     b_election.campaign("10.0.0.2:8080", Duration::from_secs(10)).await
/// });
/// # while client.inspect("elections/scheduler").await?.map_or(0, |l| l.queue.len()) == 0 {
/// #     tokio::time::sleep(Duration::from_millis(10)).await;
/// # }
/// let a_token = leading.token();
/// leading.resign().await?;
/// let b_leading = b_campaign.await??;
/// assert!(b_leading.token() > a_token);
/// assert!(b_leading.is_valid()); // check before acting as leader
/// // A leader stops when its session is lost:
/// // tokio::select! { _ = b_leading.lost() => stop(), _ = work(b_leading.token()) => {} }
/// # node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LeaderElection {
    session: Session,
    name: String,
}

/// Who leads, as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub lease_id: u64,
    /// The owner text of the leader's session.
    pub owner: String,
    /// The value it campaigned with.
    pub value: String,
    /// Its fencing token.
    pub token: u64,
    /// Leader's Unix time of the grant in ms (informational).
    pub elected_at_unix_ms: u64,
}

/// Being the leader: a held lock with the value it was won with. Dropping
/// it resigns (in the background).
#[must_use = "dropping a Leadership resigns at once"]
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
    value: String,
}

impl Leadership {
    /// The fencing token of this term of leadership.
    pub fn token(&self) -> u64 {
        self.guard.token()
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// True while the session is certainly alive: act as leader only then.
    pub fn is_valid(&self) -> bool {
        self.guard.is_valid()
    }

    /// How long leadership is certainly held from now.
    pub fn remaining(&self) -> Duration {
        self.guard.remaining()
    }

    /// Resolves when leadership is lost (the session was lost or revoked).
    pub async fn lost(&self) -> SessionEnd {
        self.guard.lost().await
    }

    /// The underlying hold.
    pub fn guard(&self) -> &LockGuard {
        &self.guard
    }

    /// Step down now; the next candidate in line becomes leader.
    pub async fn resign(self) -> Result<(), Error> {
        self.guard.release().await
    }
}

impl LeaderElection {
    /// An election on `name` for `session` (whose owner text names the candidate).
    pub fn new(session: &Session, name: impl Into<String>) -> Self {
        LeaderElection {
            session: session.clone(),
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait up to `wait` to become leader, announcing `value`.
    /// `Error::WaitTimeout` if someone else still leads then (the place in
    /// line is given up); `Error::LeaseLost` if the session ends first.
    /// Dropping the future withdraws the candidacy.
    pub async fn campaign(&self, value: &str, wait: Duration) -> Result<Leadership, Error> {
        let acquire = self
            .session
            .lock(self.name.clone())
            .wait(wait)
            .reason("leader election")
            .metadata(VALUE_KEY, value)
            .acquire();
        tokio::select! {
            r = acquire => Ok(Leadership { guard: r?, value: value.to_string() }),
            end = self.session.lost() => Err(Error::LeaseLost {
                lease_id: self.session.lease_id(),
                reason: raftlock_proto::errors::ErrorReason::LeaseLost,
                message: format!("the session ended ({end:?}) while campaigning"),
            }),
        }
    }

    /// The current leader, if any (a linearizable read).
    pub async fn leader(&self) -> Result<Option<Leader>, Error> {
        let lock = self.session.client().inspect(&self.name).await?;
        Ok(lock
            .and_then(|l| l.holders.into_iter().next())
            .map(leader_of))
    }

    /// The current leader, then every change of leader (`None` while nobody
    /// leads). Survives broken connections (see [`crate::Client::watch_resuming`]);
    /// ends with an error only if it cannot resume.
    pub async fn observe(
        &self,
    ) -> Result<impl Stream<Item = Result<Option<Leader>, Error>> + Send + Unpin + 'static, Error>
    {
        let client = self.session.client().clone();
        // Watch first, then read: a change between the two is seen twice
        // (and shown once), never missed.
        let events = client.watch_resuming(&self.name, 0).await?;
        let first = self.leader().await?;
        let name = self.name.clone();
        let state = (events, client, name, Some(first), None::<Option<Leader>>);
        Ok(futures::stream::unfold(
            state,
            |(mut events, client, name, mut pending, mut last)| async move {
                loop {
                    if let Some(now) = pending.take() {
                        let key = now.as_ref().map(|l| l.token);
                        if last
                            .as_ref()
                            .map(|l: &Option<Leader>| l.as_ref().map(|l| l.token))
                            != Some(key)
                        {
                            last = Some(now.clone());
                            return Some((Ok(now), (events, client, name, None, last)));
                        }
                    }
                    let event = match events.next().await? {
                        Ok(e) => e,
                        Err(e) => return Some((Err(e), (events, client, name, None, last))),
                    };
                    // The prefix watch also sees longer names: keep this one.
                    if event.name != name || !changes_holder(event.r#type) {
                        continue;
                    }
                    match client.inspect(&name).await {
                        Ok(lock) => {
                            pending = Some(
                                lock.and_then(|l| l.holders.into_iter().next())
                                    .map(leader_of),
                            );
                        }
                        Err(e) => return Some((Err(e), (events, client, name, None, last))),
                    }
                }
            },
        )
        .boxed())
    }
}

fn changes_holder(t: i32) -> bool {
    use proto::EventType as T;
    [T::Acquired, T::Released, T::Expired, T::ForceReleased]
        .iter()
        .any(|x| *x as i32 == t)
}

fn leader_of(h: proto::Holder) -> Leader {
    Leader {
        lease_id: h.lease_id,
        value: h.metadata.get(VALUE_KEY).cloned().unwrap_or_default(),
        owner: h.owner,
        token: h.token,
        elected_at_unix_ms: h.acquired_at_unix_ms,
    }
}
