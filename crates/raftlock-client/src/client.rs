//! Connection to a cluster: one lazy channel per node, leader following,
//! retries.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use raftlock_proto::v1 as pb;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Response, Status};

use crate::error::{Error, ServerError};
use crate::retry::RetryPolicy;
use crate::session::{Session, SessionOptions};

/// Response metadata keys naming the leader (see the proto's header).
const LEADER_ADDR_KEY: &str = "raftlock-leader-addr";
/// Most channels kept: the given endpoints plus leaders learnt from replies.
const MAX_CHANNELS: usize = 64;

/// How a [`Client`] talks to the cluster.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Retries of retryable failures (see [`RetryPolicy`]).
    pub retry: RetryPolicy,
    /// Deadline of one logical call, all retries included. An acquire that
    /// waits gets its wait on top of this.
    pub call_timeout: Duration,
    /// Longest time to open a TCP connection to one node.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::standard(),
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// A handle to a raftlock cluster. Cheap to clone; clones share channels
/// and the leader hint.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    options: ClientOptions,
    nodes: Mutex<Nodes>,
}

struct Nodes {
    /// (address without scheme, channel), the given endpoints first.
    channels: Vec<(String, Channel)>,
    /// The index of the node the next call goes to: the leader when known.
    current: usize,
}

fn normalize(addr: &str) -> String {
    addr.trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

fn channel_for(addr: &str, options: &ClientOptions) -> Result<Channel, Error> {
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| Error::InvalidEndpoint {
            endpoint: addr.to_string(),
            message: e.to_string(),
        })?;
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// What one failed attempt means for the next one.
enum Failure {
    /// Try again (after a backoff), at this node if it is known to lead.
    Retry { leader_addr: Option<String> },
    /// Give up with this error.
    Fatal,
}

fn classify(status: &Status) -> Failure {
    let info = ServerError::of(status);
    match info.reason.as_deref() {
        Some("NOT_LEADER") => Failure::Retry {
            leader_addr: info.metadata.get("leader_addr").cloned(),
        },
        Some("NO_LEADER" | "SHUTTING_DOWN" | "TIMEOUT") => Failure::Retry { leader_addr: None },
        Some(_) => Failure::Fatal,
        // No reason: the status came from the transport (connection refused
        // or reset, h2 errors), not from a raftlock node.
        None => match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                Failure::Retry { leader_addr: None }
            }
            _ => Failure::Fatal,
        },
    }
}

impl Client {
    /// A client for the cluster reachable at `endpoints` (`host:port` or
    /// `http://host:port`; any subset of the nodes, at least one). Channels
    /// connect lazily, so this does no I/O and succeeds with nodes down.
    pub async fn connect(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ClientOptions,
    ) -> Result<Client, Error> {
        let mut channels: Vec<(String, Channel)> = Vec::new();
        for e in endpoints {
            let addr = normalize(&e.into());
            if channels.iter().any(|(a, _)| *a == addr) {
                continue;
            }
            let ch = channel_for(&addr, &options)?;
            channels.push((addr, ch));
        }
        if channels.is_empty() {
            return Err(Error::InvalidEndpoint {
                endpoint: String::new(),
                message: "no endpoints given".into(),
            });
        }
        Ok(Client {
            inner: Arc::new(Inner {
                options,
                nodes: Mutex::new(Nodes {
                    channels,
                    current: 0,
                }),
            }),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The address the next call goes to (the leader, once a reply named it).
    pub fn current_endpoint(&self) -> String {
        let nodes = self.nodes();
        nodes.channels[nodes.current].0.clone()
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Nodes> {
        // A poisoned lock only means another thread panicked mid-update of
        // a hint; the data is still a usable hint.
        self.inner
            .nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The node to use now: (index for [`Client::note_failure`], channel).
    pub(crate) fn pick(&self) -> (usize, Channel) {
        let nodes = self.nodes();
        (nodes.current, nodes.channels[nodes.current].1.clone())
    }

    /// A call to node `index` failed outside [`Client::call`] (keep-alive
    /// streams): follow a named leader, or move on to the next node.
    pub(crate) fn note_failure(&self, index: usize, status: &Status) {
        match classify(status) {
            Failure::Retry {
                leader_addr: Some(addr),
            } => self.follow_leader(&addr),
            _ => self.rotate_from(index),
        }
    }

    /// Send the next calls to `addr` (learnt from a reply or a NOT_LEADER).
    pub(crate) fn follow_leader(&self, addr: &str) {
        let addr = normalize(addr);
        if addr.is_empty() {
            return;
        }
        let mut nodes = self.nodes();
        if let Some(i) = nodes.channels.iter().position(|(a, _)| *a == addr) {
            nodes.current = i;
        } else if nodes.channels.len() < MAX_CHANNELS {
            if let Ok(ch) = channel_for(&addr, &self.inner.options) {
                nodes.channels.push((addr, ch));
                nodes.current = nodes.channels.len() - 1;
            }
        }
    }

    /// After a failure with no better hint: try the next node.
    fn rotate_from(&self, failed: usize) {
        let mut nodes = self.nodes();
        if nodes.current == failed {
            nodes.current = (failed + 1) % nodes.channels.len();
        }
    }

    pub(crate) fn learn_from(&self, md: &MetadataMap) {
        if let Some(addr) = md.get(LEADER_ADDR_KEY).and_then(|v| v.to_str().ok()) {
            self.follow_leader(addr);
        }
    }

    /// Run one logical call with leader following and retries, until
    /// `deadline`. `attempt` gets a channel and the time left; it is called
    /// once per attempt. `lease_id` only labels LeaseLost errors.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        lease_id: u64,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let policy = &self.inner.options.retry;
        let max_attempts = policy.max_attempts.max(1);
        let mut n = 0u32;
        loop {
            n += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::DeadlineExceeded {
                    message: format!("call deadline passed after {} attempt(s)", n - 1),
                });
            }
            let (index, channel) = self.pick();
            let status = match tokio::time::timeout(left, attempt(channel, left)).await {
                Ok(Ok(response)) => {
                    self.learn_from(response.metadata());
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(Error::DeadlineExceeded {
                        message: format!("no answer within the call deadline (attempt {n})"),
                    });
                }
            };
            let redirected = match classify(&status) {
                Failure::Fatal => return Err(Error::from_status(&status, lease_id, n)),
                Failure::Retry { leader_addr } => {
                    tracing::debug!(attempt = n, error = %status.message(), ?leader_addr, "retryable failure");
                    match leader_addr {
                        Some(addr) if normalize(&addr) != self.nodes().channels[index].0 => {
                            self.follow_leader(&addr);
                            true
                        }
                        _ => {
                            self.rotate_from(index);
                            false
                        }
                    }
                }
            };
            if n >= max_attempts {
                return Err(Error::from_status(&status, lease_id, n));
            }
            // A redirect to a named leader goes at once: it is new
            // information, not a hope that things got better.
            if !redirected {
                let pause = policy.backoff(n);
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(pause.min(left)).await;
            }
        }
    }

    /// The deadline of a call that starts now.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.inner.options.call_timeout
    }

    /// Start a session: grant a lease and keep it alive in the background.
    pub async fn session(&self, options: SessionOptions) -> Result<Session, Error> {
        Session::start(self.clone(), options).await
    }

    /// One lock's holders and queue (linearizable); `None` when it is free
    /// and nobody waits.
    pub async fn inspect(&self, name: &str) -> Result<Option<pb::LockInfo>, Error> {
        let name = name.to_string();
        let r = self
            .call(0, self.deadline(), |ch, left| {
                let mut req = tonic::Request::new(pb::InspectRequest {
                    name: name.clone(),
                    stale: false,
                });
                req.set_timeout(left);
                async move { pb::locks_client::LocksClient::new(ch).inspect(req).await }
            })
            .await?;
        Ok(r.lock)
    }

    /// Every lock whose name starts with `prefix`, in name order (all pages,
    /// each a linearizable read; the whole list is not one snapshot).
    pub async fn list(&self, prefix: &str) -> Result<Vec<pb::LockInfo>, Error> {
        let mut out = Vec::new();
        let mut start_after = String::new();
        loop {
            let (prefix, after) = (prefix.to_string(), start_after.clone());
            let page = self
                .call(0, self.deadline(), |ch, left| {
                    let mut req = tonic::Request::new(pb::ListRequest {
                        prefix: prefix.clone(),
                        stale: false,
                        limit: 1000,
                        start_after: after.clone(),
                    });
                    req.set_timeout(left);
                    async move { pb::locks_client::LocksClient::new(ch).list(req).await }
                })
                .await?;
            let more = page.more;
            out.extend(page.locks);
            match out.last() {
                Some(last) if more => start_after = last.name.clone(),
                _ => return Ok(out),
            }
        }
    }

    /// Events on locks named with `prefix`, from `from_revision` (0: only new
    /// ones), as the proto's [`pb::Event`]. The stream is opened (with
    /// retries) before this returns; it ends with an error when the node
    /// goes away or the watcher falls behind: open a new one from the last
    /// revision received + 1.
    pub async fn watch(
        &self,
        prefix: &str,
        from_revision: u64,
    ) -> Result<impl Stream<Item = Result<pb::Event, Error>> + Send + 'static, Error> {
        let prefix = prefix.to_string();
        let inbound = self
            .call(0, self.deadline(), |ch, _left| {
                let req = pb::WatchRequest {
                    prefix: prefix.clone(),
                    from_revision,
                };
                async move { pb::locks_client::LocksClient::new(ch).watch(req).await }
            })
            .await?;
        Ok(inbound.flat_map(|batch| {
            let items: Vec<Result<pb::Event, Error>> = match batch {
                Ok(b) => b.events.into_iter().map(Ok).collect(),
                Err(status) => vec![Err(Error::from_status(&status, 0, 1))],
            };
            futures::stream::iter(items)
        }))
    }
}
