//! Connection to a cluster: one lazy channel per node, leader following,
//! retries.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use raftlock_proto::auth::AUTHORIZATION_KEY;
use raftlock_proto::errors::{self, Applied, ErrorReason, Reason, Retry};
use raftlock_proto::v1 as pb;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::transport::Endpoint;
use tonic::{Response, Status};
use tower::util::BoxCloneSyncService;

use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::session::{Session, SessionOptions};
use crate::tls::{Security, TlsOptions};

/// How often an HTTP/2 ping checks that a connection still carries bytes.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(2);
/// Most channels kept: the given endpoints plus leaders learnt from replies.
const MAX_CHANNELS: usize = 64;

/// How a [`Client`] talks to the cluster.
#[derive(Clone)]
pub struct ClientOptions {
    /// Retries of retryable failures (see [`RetryPolicy`]).
    pub retry: RetryPolicy,
    /// Deadline of one logical call, all retries included. An acquire that
    /// waits gets its wait on top of this.
    pub call_timeout: Duration,
    /// Longest time to open a TCP connection to one node (and, with TLS,
    /// to complete its handshake).
    pub connect_timeout: Duration,
    /// TLS for every channel (the CA of the nodes' certificates, a client
    /// certificate): bare `host:port` endpoints then use TLS too, and
    /// `http://` ones are refused. `None`: plaintext, unless an endpoint
    /// is `https://` (then TLS with the system's trusted roots). See
    /// [`TlsOptions`].
    pub tls: Option<TlsOptions>,
    /// A bearer token (`raftlock certs token`), sent with every call as
    /// `authorization: Bearer <token>`. Printable ASCII only; anything else
    /// is an error at connect.
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::standard(),
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            tls: None,
            token: None,
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ClientOptions")
            .field("retry", &self.retry)
            .field("call_timeout", &self.call_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A handle to a raftlock cluster. Cheap to clone; clones share channels
/// and the leader hint.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// This handle's deadline for one call, when it is not the options'
    /// `call_timeout` ([`Client::with_call_timeout`]).
    call_timeout: Option<Duration>,
}

/// What a call does, for what its failures mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Changes nothing: a failure is never "maybe applied".
    Read,
    /// A write that is safe to repeat: retried after any retryable failure.
    Write,
    /// A write that must not be repeated once it may have taken effect.
    WriteOnce,
}

struct Inner {
    options: ClientOptions,
    /// TLS and the token of every channel, decided at connect.
    security: Security,
    /// Why every call fails at once: an in-process client given a token
    /// that is not a valid header value ([`Client::in_process`] cannot
    /// return the error itself).
    unusable: Option<Error>,
    nodes: Mutex<Nodes>,
    /// The sessions of [`Client::lock`], by (ttl, owner), held weakly: the
    /// guards keep them alive, and the client never keeps a lease alive by
    /// itself (a session holds its client, so a strong reference here would
    /// never be dropped).
    lock_sessions: tokio::sync::Mutex<Vec<((Duration, String), crate::session::WeakSession)>>,
}

/// Most distinct (ttl, owner) sessions [`Client::lock`] remembers.
const MAX_LOCK_SESSIONS: usize = 16;

/// How calls reach a node: a network channel, or a node's services in this
/// process ([`Client::in_process`]). The generated gRPC clients run over it.
#[derive(Clone)]
pub(crate) struct Channel(
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>,
);

/// A failure below gRPC (connecting, HTTP/2). A concrete type rather than a
/// boxed trait object, which keeps the futures of calls `Send` for every
/// lifetime; tonic still finds the cause through `source()`.
#[derive(Debug)]
pub(crate) struct TransportError(tonic::codegen::StdError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl tower::Service<http::Request<Body>> for Channel {
    type Response = http::Response<Body>;
    type Error = TransportError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.0.call(request)
    }
}

impl Channel {
    /// A channel over `service` that puts `auth` (the bearer token) on
    /// every request: unary calls, streams (keep-alives, watches) and
    /// in-process calls alike, since all of them go through here.
    fn new<S, E>(service: S, auth: Option<http::HeaderValue>) -> Channel
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = E>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        E: Into<tonic::codegen::StdError> + 'static,
    {
        let service = tower::ServiceExt::map_err(service, |e: E| TransportError(e.into()));
        match auth {
            None => Channel(BoxCloneSyncService::new(service)),
            Some(value) => Channel(BoxCloneSyncService::new(tower::ServiceExt::map_request(
                service,
                move |mut request: http::Request<Body>| {
                    request.headers_mut().insert(
                        http::HeaderName::from_static(AUTHORIZATION_KEY),
                        value.clone(),
                    );
                    request
                },
            ))),
        }
    }
}

/// The address shown for an in-process client's only "node".
const IN_PROCESS: &str = "in-process";

struct Nodes {
    /// (address without scheme, channel), the given endpoints first.
    channels: Vec<(String, Channel)>,
    /// An in-process client stays on its node: the node forwards what its
    /// leader must answer, so leader hints are not followed.
    local: bool,
    /// The index of the node the next call goes to: the leader when known.
    current: usize,
}

/// `host:port` of an endpoint: without its `http://` or `https://` (any
/// case), spaces and trailing `/`. Whether TLS is used is decided for the
/// whole client at connect ([`Security::decide`]), not per address.
fn normalize(addr: &str) -> String {
    let addr = addr.trim();
    let rest = match addr.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest
        }
        _ => addr,
    };
    rest.trim_end_matches('/').to_string()
}

/// A lazy channel to `addr` (`host:port`): TLS or plaintext as
/// `security` decided for the whole client, never by the address.
fn channel_for(addr: &str, options: &ClientOptions, security: &Security) -> Result<Channel, Error> {
    let invalid = |e: &dyn std::fmt::Display| Error::InvalidEndpoint {
        endpoint: addr.to_string(),
        message: e.to_string(),
    };
    let handshake_timeout = options.connect_timeout.max(Duration::from_secs(1));
    let endpoint = match security.tls_config(addr, handshake_timeout)? {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| invalid(&e))?
            .tls_config(tls)
            .map_err(|e| invalid(&format!("cannot set up TLS: {}", crate::error::chain(&e))))?,
        None => Endpoint::from_shared(format!("http://{addr}")).map_err(|e| invalid(&e))?,
    };
    let channel = endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        // A connection whose peer vanished without closing it (a partition,
        // a host that lost power) would otherwise hold every call sent on
        // it until the call's deadline, and the channel would never
        // reconnect: HTTP/2 pings find it dead and close it, failing its
        // calls so they are retried (elsewhere) and the next call reconnects.
        .http2_keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(options.connect_timeout.max(Duration::from_secs(1)))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(Channel::new(channel, security.auth.clone()))
}

impl Client {
    /// A client for the cluster reachable at `endpoints` (`host:port`,
    /// `http://host:port` or `https://host:port`; any subset of the nodes,
    /// at least one). Channels connect lazily, so this does no I/O and
    /// succeeds with nodes down.
    ///
    /// `https://` endpoints, or [`ClientOptions::tls`], make every channel
    /// use TLS, those to leaders learnt from replies too; `http://` with
    /// TLS is an [`Error::InvalidEndpoint`] (see [`TlsOptions`]). A
    /// [`ClientOptions::token`] that is not printable ASCII is an
    /// [`Error::InvalidArgument`] with field `token`.
    pub async fn connect(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ClientOptions,
    ) -> Result<Client, Error> {
        let given: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        let security = Security::decide(&given, options.tls.as_ref(), options.token.as_deref())?;
        let mut channels: Vec<(String, Channel)> = Vec::new();
        for e in &given {
            let addr = normalize(e);
            if channels.iter().any(|(a, _)| *a == addr) {
                continue;
            }
            let ch = channel_for(&addr, &options, &security)?;
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
                security,
                unusable: None,
                nodes: Mutex::new(Nodes {
                    channels,
                    local: false,
                    current: 0,
                }),
                lock_sessions: tokio::sync::Mutex::new(Vec::new()),
            }),
            call_timeout: None,
        })
    }

    /// A client that calls a node in this same process, with no socket and
    /// no network hop: give it an embedded node's
    /// `NodeHandle::local_service()` (raftlock-node). Calls, replies and
    /// errors are exactly those of [`Client::connect`]; writes the node
    /// cannot answer itself it forwards to its leader. A
    /// [`ClientOptions::token`] is sent with every call (TLS options do not
    /// apply: there is no connection); a token that is not printable ASCII
    /// makes every call fail with [`Error::InvalidArgument`].
    ///
    /// ```
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (node, _addr, _dir) = doc_node().await?;
    /// use std::time::Duration;
    /// use raftlock_client::{Client, ClientOptions, SessionOptions};
    ///
    /// // `node` is a raftlock_node::NodeHandle started in this program.
    /// let client = Client::in_process(node.local_service(), ClientOptions::default());
    /// let session = client.session(SessionOptions::new(Duration::from_secs(10))).await?;
    /// let guard = session.lock("jobs/nightly").try_acquire().await?;
    /// assert!(guard.token() > 0);
    /// guard.release().await?;
    /// # node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn in_process<S, E>(service: S, options: ClientOptions) -> Client
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = E>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        E: Into<tonic::codegen::StdError> + 'static,
    {
        let (auth, unusable) = match options.token.as_deref().map(crate::tls::auth_header) {
            None => (None, None),
            Some(Ok(value)) => (Some(value), None),
            Some(Err(e)) => (None, Some(e)),
        };
        let channel = Channel::new(service, auth.clone());
        Client {
            inner: Arc::new(Inner {
                options,
                security: Security { tls: None, auth },
                unusable,
                nodes: Mutex::new(Nodes {
                    channels: vec![(IN_PROCESS.to_string(), channel)],
                    local: true,
                    current: 0,
                }),
                lock_sessions: tokio::sync::Mutex::new(Vec::new()),
            }),
            call_timeout: None,
        }
    }

    /// The options given at connect (`call_timeout` there is the default;
    /// see [`Client::call_timeout`] for this handle's).
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The deadline of one call made through this handle, retries included.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout.unwrap_or(self.inner.options.call_timeout)
    }

    /// A handle to the same cluster (same channels, same leader hint) whose
    /// every call ends within `timeout`, retries included, with
    /// [`Error::DeadlineExceeded`] when it passes: for one call
    /// (`client.with_call_timeout(d).inspect(name)`) or for everything
    /// done through the handle, sessions started from it included (their
    /// releases, extends and revokes). An acquire waits on top of it unless
    /// its builder's own `deadline` says otherwise.
    pub fn with_call_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            call_timeout: Some(timeout),
        }
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
    /// The index of the node calls go to now.
    pub(crate) fn current_index(&self) -> usize {
        self.nodes().current
    }

    pub(crate) fn pick(&self) -> (usize, Channel) {
        let nodes = self.nodes();
        (nodes.current, nodes.channels[nodes.current].1.clone())
    }

    /// A call to node `index` failed outside [`Client::call`] (keep-alive
    /// streams): follow a named leader, or move on to the next node.
    pub(crate) fn note_failure(&self, index: usize, status: &Status) {
        let classified = errors::classify(status);
        match (classified.retry, classified.leader) {
            (Retry::AtLeader, Some(leader)) => self.follow_leader(&leader.addr),
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
        if nodes.local {
            return;
        }
        if let Some(i) = nodes.channels.iter().position(|(a, _)| *a == addr) {
            nodes.current = i;
        } else if nodes.channels.len() < MAX_CHANNELS
            && let Ok(ch) = channel_for(&addr, &self.inner.options, &self.inner.security)
        {
            nodes.channels.push((addr, ch));
            nodes.current = nodes.channels.len() - 1;
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
        if let Some(addr) = errors::leader_addr_in(md) {
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
        attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call_with(lease_id, deadline, Kind::Write, attempt)
            .await
    }

    /// [`Client::call`] for a call that changes nothing (reads, watches,
    /// the first keep-alive of an attached session): its failures are
    /// never "maybe applied".
    pub(crate) async fn call_read<T, F, Fut>(
        &self,
        lease_id: u64,
        deadline: Instant,
        attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call_with(lease_id, deadline, Kind::Read, attempt)
            .await
    }

    /// [`Client::call`] for a call that must not be repeated once it may
    /// have taken effect (force-release by name, revoke): a failure whose
    /// outcome is unknown (TIMEOUT, OUTCOME_UNKNOWN, a broken connection) is
    /// returned, not retried. A force-release retried after it was applied
    /// would take the lock from the waiter it had just been handed to.
    pub(crate) async fn call_once<T, F, Fut>(
        &self,
        lease_id: u64,
        deadline: Instant,
        attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call_with(lease_id, deadline, Kind::WriteOnce, attempt)
            .await
    }

    async fn call_with<T, F, Fut>(
        &self,
        lease_id: u64,
        deadline: Instant,
        kind: Kind,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        if let Some(e) = &self.inner.unusable {
            return Err(e.clone());
        }
        let policy = &self.inner.options.retry;
        let max_attempts = policy.max_attempts.max(1);
        let mut n = 0u32;
        // Attempts counted against `max_attempts`: not an answer naming
        // the leader (it is followed at once, and is news rather than a
        // failure), unless that attempt had itself gone to a named leader
        // (so two nodes naming each other still use attempts up). In a
        // failover each pause then costs one attempt, not two: a follower
        // names the dead leader, the dead leader refuses the connection.
        let mut counted = 0u32;
        // Set once an attempt of a write failed without saying whether it
        // was applied: giving up after that is OutcomeUnknown, even if
        // later attempts were definitely refused.
        let mut maybe_applied = false;
        // Attempts in a row whose connection could not be opened, for
        // `RetryPolicy::unreachable_rounds`.
        let mut unreached = 0u32;
        // Pauses taken, for the backoff's doubling.
        let mut pauses = 0u32;
        // Whether this attempt went to a leader named by the last answer.
        let mut redirected = false;
        loop {
            n += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Between attempts: in doubt only if an earlier one is.
                return Err(Error::DeadlineExceeded {
                    message: format!("call deadline passed after {} attempt(s)", n - 1),
                    maybe_applied,
                });
            }
            let (index, channel) = self.pick();
            let status = match tokio::time::timeout(left, attempt(channel, left)).await {
                Ok(Ok(response)) => {
                    self.learn_from(response.metadata());
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => {
                    // A TLS failure (a certificate that does not verify, a
                    // node that does not speak TLS) is a setup mistake
                    // that retrying cannot fix. Only while connecting
                    // (tonic's ConnectError wraps the handshake) is it
                    // certain that nothing was sent; a write's failure
                    // after that goes the usual way.
                    let unapplied = kind == Kind::Read || errors::never_sent(&status);
                    // A fatal alert from the node is its TLS layer refusing
                    // the connection: no request on it was read.
                    if let Some(message) = crate::tls::tls_failure(&status)
                        && (unapplied || message.contains(crate::tls::ALERT_RECEIVED))
                    {
                        return Err(Error::Tls {
                            endpoint: self.nodes().channels[index].0.clone(),
                            hint: crate::tls::tls_hint(&message).to_string(),
                            message,
                        });
                    }
                    // Not only when unapplied: a write's bytes did go out
                    // on a plaintext connection, but an answer that is not
                    // HTTP/2 (a TLS alert) means no raftlock node read them,
                    // so nothing was applied and retrying cannot help.
                    if self.inner.security.tls.is_none()
                        && !self.nodes().local
                        && crate::tls::not_plaintext_http2(&status)
                    {
                        return Err(Error::Tls {
                            endpoint: self.nodes().channels[index].0.clone(),
                            message: crate::tls::status_text(&status),
                            hint: crate::tls::PLAINTEXT_TO_TLS_HINT.to_string(),
                        });
                    }
                    status
                }
                Err(_) => {
                    // An attempt was under way: a write may have landed.
                    return Err(Error::DeadlineExceeded {
                        message: format!("no answer within the call deadline (attempt {n})"),
                        maybe_applied: kind != Kind::Read,
                    });
                }
            };
            // One reading of the status decides everything below.
            let classified = errors::classify(&status);
            let refused_connection =
                classified.reason == Reason::Absent && classified.applied == Applied::No;
            unreached = if refused_connection { unreached + 1 } else { 0 };
            let unknown = kind != Kind::Read && classified.applied == Applied::Unknown;
            maybe_applied |= unknown;
            let give_up = |maybe_applied| {
                Err(self.explain_transport(
                    Error::from_write_classified(&status, &classified, lease_id, n, maybe_applied),
                    &status,
                ))
            };
            if kind == Kind::WriteOnce && unknown {
                return give_up(true);
            }
            let after_redirect = redirected;
            redirected = match (classified.retry, &classified.leader) {
                (Retry::Never, _) => return give_up(maybe_applied),
                // Only a leader other than the node that answered is news
                // (`Retry::IfIdempotent` comes here only for a call that may
                // be repeated: `Kind::WriteOnce` returned above).
                (Retry::AtLeader, Some(leader))
                    if normalize(&leader.addr) != self.nodes().channels[index].0 =>
                {
                    self.follow_leader(&leader.addr);
                    true
                }
                _ => {
                    self.rotate_from(index);
                    false
                }
            };
            tracing::debug!(attempt = n, error = %status.message(), redirected, "retryable failure");
            if !redirected || after_redirect {
                counted += 1;
            }
            let endpoints = self.nodes().channels.len() as u32;
            let nothing_listens = policy
                .unreachable_rounds
                .is_some_and(|rounds| unreached >= rounds.saturating_mul(endpoints));
            if counted >= max_attempts || nothing_listens {
                return give_up(maybe_applied);
            }
            // A redirect to a named leader goes at once: it is new
            // information, not a hope that things got better. So does the
            // next node after one whose connection could not be opened,
            // until a whole round of them was refused: a node that is down
            // says nothing about the others. But a named leader that is
            // down (the others still name it: an election is due) is waited
            // for, or two nodes would be asked in a tight loop.
            let next_node_now =
                unreached > 0 && !unreached.is_multiple_of(endpoints) && !after_redirect;
            if !redirected && !next_node_now {
                pauses += 1;
                let pause = policy.backoff(pauses);
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(pause.min(left)).await;
            }
        }
    }

    /// `e`, made from a transport failure (no raftlock reason; tonic says
    /// only "transport error"), with its causes (`connection refused`,
    /// `broken pipe`...) and, for a plaintext client whose connection was
    /// opened and then broke, the likeliest mistake: a node serving TLS
    /// (it hangs up on a plaintext client without a word it could read).
    fn explain_transport(&self, e: Error, status: &Status) -> Error {
        if std::error::Error::source(status).is_none() {
            return e;
        }
        let causes = crate::tls::status_text(status);
        let tls_hint =
            self.inner.security.tls.is_none() && !self.nodes().local && !errors::never_sent(status);
        let explained = |message: String| {
            let message = message.replacen(status.message(), &causes, 1);
            if tls_hint {
                format!(
                    "{message} (if the nodes serve TLS, give their CA or use https:// endpoints)"
                )
            } else {
                message
            }
        };
        match e {
            Error::Unavailable { attempts, message } => Error::Unavailable {
                attempts,
                message: explained(message),
            },
            Error::OutcomeUnknown { attempts, message } => Error::OutcomeUnknown {
                attempts,
                message: explained(message),
            },
            e => e,
        }
    }

    /// The deadline of a call that starts now.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.call_timeout()
    }

    /// Start a session: grant a lease and keep it alive in the background.
    pub async fn session(&self, options: SessionOptions) -> Result<Session, Error> {
        Session::start(self.clone(), options).await
    }

    /// Start building an acquire of `name` on the client's own session: one
    /// lease per (ttl, owner), kept alive by one heartbeat stream however
    /// many locks it holds, granted on the first lock and revoked when the
    /// last of its guards is gone (or replaced once lost). For a loop that
    /// takes and releases locks, a [`Session`] of your own saves the lease
    /// grant each time nothing is held.
    ///
    /// ```
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (node, addr, _dir) = doc_node().await?;
    /// use std::time::Duration;
    /// use raftlock_client::{Client, ClientOptions, Mode};
    ///
    /// let client = Client::connect([addr], ClientOptions::default()).await?;
    /// let a = client
    ///     .lock("reports/daily")
    ///     .ttl(Duration::from_secs(15))
    ///     .owner("report-runner")
    ///     .reason("nightly build")
    ///     .metadata("host", "worker-7")
    ///     .wait(Duration::from_secs(5))
    ///     .acquire()
    ///     .await?;
    /// let b = client
    ///     .lock("reports/weekly")
    ///     .ttl(Duration::from_secs(15))
    ///     .owner("report-runner")
    ///     .mode(Mode::Shared)
    ///     .try_acquire()
    ///     .await?;
    /// // Same ttl and owner: one lease (one keep-alive stream) for both.
    /// assert_eq!(a.session().lease_id(), b.session().lease_id());
    /// a.release().await?;
    /// b.release().await?;
    /// # node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lock(&self, name: impl Into<String>) -> crate::lock::ClientLockBuilder {
        crate::lock::ClientLockBuilder::new(self.clone(), name.into())
    }

    /// A live session of [`Client::lock`] for (ttl, owner) that is not
    /// already holding, acquiring or withdrawing any of `names`, with those
    /// names claimed on it; or a new session. Two concurrent holders of one
    /// name therefore get two leases and queue for it like any two clients,
    /// instead of sharing one hold through one lease.
    pub(crate) async fn lock_session(
        &self,
        ttl: Duration,
        owner: &str,
        names: &[String],
    ) -> Result<(Session, crate::session::Claim), Error> {
        let key = (ttl, owner.to_string());
        let mut sessions = self.inner.lock_sessions.lock().await;
        sessions.retain(|(_, weak)| weak.upgrade().is_some_and(|s| s.is_valid()));
        for (k, weak) in sessions.iter() {
            if *k != key {
                continue;
            }
            if let Some(session) = weak.upgrade()
                && let Ok(claim) = session.names().try_claim(names)
            {
                return Ok((session, claim));
            }
        }
        let session = self.session(SessionOptions::new(ttl).owner(owner)).await?;
        let Ok(claim) = session.names().try_claim(names) else {
            return Err(Error::other(
                ErrorReason::Internal,
                "a new session already had a claim on a name",
            ));
        };
        if sessions.len() >= MAX_LOCK_SESSIONS {
            sessions.remove(0);
        }
        sessions.push((key, session.downgrade()));
        Ok((session, claim))
    }

    /// One lock's holders and queue (linearizable); `None` when it is free
    /// and nobody waits.
    pub async fn inspect(&self, name: &str) -> Result<Option<pb::LockInfo>, Error> {
        let name = name.to_string();
        let r = self
            .call_read(0, self.deadline(), |ch, left| {
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
    /// each a linearizable read; the whole list is not one snapshot). One
    /// call deadline covers every page.
    pub async fn list(&self, prefix: &str) -> Result<Vec<pb::LockInfo>, Error> {
        let mut out = Vec::new();
        let mut start_after = String::new();
        let deadline = self.deadline();
        loop {
            let (prefix, after) = (prefix.to_string(), start_after.clone());
            let page = self
                .call_read(0, deadline, |ch, left| {
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
            .call_read(0, self.deadline(), |ch, _left| {
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

    /// Like [`Client::watch`], but the stream survives broken connections:
    /// when it breaks (the node stops, restarts, cuts off a slow watcher)
    /// it is reopened, on another node if need be, from the revision after
    /// the last event delivered, so no event is lost or repeated. With
    /// `from_revision` 0 it starts after the cluster's current revision (a
    /// linearizable read), so even a break before the first event loses
    /// nothing.
    ///
    /// The stream ends with an error only when it cannot go on: the events
    /// it needs are no longer in any node's in-memory history
    /// ([`Error::is_compacted`]; re-read the state with [`Client::list`] and
    /// watch again from its revision), or no node could be reached within
    /// the client's retry policy.
    ///
    /// ```
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (node, addr, _dir) = doc_node().await?;
    /// use std::time::Duration;
    /// use futures::StreamExt;
    /// use raftlock_client::{Client, ClientOptions, SessionOptions, proto::EventType};
    ///
    /// let client = Client::connect([addr], ClientOptions::default()).await?;
    /// // Starts after the current revision; reopens itself if the stream breaks.
    /// let mut events = client.watch_resuming("jobs/", 0).await?;
    /// let session = client.session(SessionOptions::new(Duration::from_secs(10))).await?;
    /// let guard = session.lock("jobs/nightly").try_acquire().await?;
    /// let token = guard.token();
    /// guard.release().await?;
    ///
    /// let acquired = events.next().await.expect("open")?;
    /// assert_eq!((acquired.name.as_str(), acquired.r#type), ("jobs/nightly", EventType::Acquired as i32));
    /// let released = events.next().await.expect("open")?;
    /// assert_eq!((released.r#type, released.token), (EventType::Released as i32, token));
    /// assert!(released.revision > acquired.revision);
    /// # node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn watch_resuming(
        &self,
        prefix: &str,
        from_revision: u64,
    ) -> Result<impl Stream<Item = Result<pb::Event, Error>> + Send + Unpin + 'static, Error> {
        let next = if from_revision == 0 {
            self.revision(prefix).await? + 1
        } else {
            from_revision
        };
        let inbound = self.open_watch(prefix, next).await?;
        let state = Resuming {
            client: self.clone(),
            prefix: prefix.to_string(),
            from: next,
            last: None,
            skip: 0,
            inbound: Some(inbound),
            buffered: std::collections::VecDeque::new(),
            breaks: 0,
            done: false,
        };
        Ok(futures::stream::unfold(state, |mut st| async move {
            let item = st.next_event().await?;
            Some((item, st))
        })
        .boxed())
    }

    /// The applied revision a linearizable read of `prefix` reflects.
    async fn revision(&self, prefix: &str) -> Result<u64, Error> {
        let prefix = prefix.to_string();
        let page = self
            .call_read(0, self.deadline(), |ch, left| {
                let mut req = tonic::Request::new(pb::ListRequest {
                    prefix: prefix.clone(),
                    stale: false,
                    limit: 1,
                    start_after: String::new(),
                });
                req.set_timeout(left);
                async move { pb::locks_client::LocksClient::new(ch).list(req).await }
            })
            .await?;
        Ok(page.revision)
    }

    /// Open a watch stream from `from_revision`. A node that restarted
    /// lately may not have the events any more while another still does,
    /// so COMPACTED moves on to the next node; it is returned only when
    /// every node said so.
    async fn open_watch(
        &self,
        prefix: &str,
        from_revision: u64,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, Error> {
        let tries = self.nodes().channels.len();
        let mut compacted = None;
        for _ in 0..tries {
            let (index, _) = self.pick();
            let r = self
                .call_streaming(0, self.deadline(), |ch| {
                    let req = pb::WatchRequest {
                        prefix: prefix.to_string(),
                        from_revision,
                    };
                    async move { pb::locks_client::LocksClient::new(ch).watch(req).await }
                })
                .await;
            match r {
                Err(e) if e.is_compacted() => {
                    self.rotate_from(index);
                    compacted = Some(e);
                }
                other => return other,
            }
        }
        let why = compacted.map_or_else(String::new, |e| e.to_string());
        Err(Error::other(
            ErrorReason::Compacted,
            format!(
                "cannot watch {prefix:?} from revision {from_revision}: no node still has \
                 those events ({why}); read the current state (list) and watch again from its revision"
            ),
        ))
    }

    /// [`Client::call`] for a call whose reply is a stream.
    async fn call_streaming<T, F, Fut>(
        &self,
        lease_id: u64,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<tonic::Streaming<T>, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<Response<tonic::Streaming<T>>, Status>>,
    {
        self.call_read(lease_id, deadline, |ch, _left| attempt(ch))
            .await
    }

    /// Remove holds of `name` regardless of their tokens (admin): every
    /// hold, or only `lease_id`'s. Queued requests are then granted in
    /// order. Returns the holds removed (empty when there were none).
    ///
    /// ```
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/doc_node.rs"));
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let (node, addr, _dir) = doc_node().await?;
    /// use std::time::Duration;
    /// use raftlock_client::{Client, ClientOptions, SessionOptions};
    ///
    /// let client = Client::connect([addr], ClientOptions::default()).await?;
    /// let status = client.status().await?;
    /// assert_eq!(status.leader_id, Some(1));
    ///
    /// // A stuck holder (its process hung but keeps its lease alive).
    /// let stuck = client
    ///     .session(SessionOptions::new(Duration::from_secs(30)).owner("worker-3"))
    ///     .await?;
    /// let guard = stuck.lock("jobs/import").reason("import").try_acquire().await?;
    ///
    /// // Who holds what: the lease list names owners, holds and waits.
    /// let leases = client.leases().await?;
    /// let worker = leases.iter().find(|l| l.owner == "worker-3").expect("listed");
    /// assert_eq!(worker.holds, ["jobs/import"]);
    ///
    /// // The operator takes the lock away regardless of its token ...
    /// let removed = client.force_release("jobs/import", None).await?;
    /// assert_eq!(removed.released[0].owner, "worker-3");
    /// // ... and the former holder's token is refused from now on.
    /// assert!(guard.release().await.is_err());
    /// // Or ends the whole lease (all its holds and waits).
    /// client.revoke_lease(worker.lease_id).await?;
    /// # node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn force_release(
        &self,
        name: &str,
        lease_id: Option<u64>,
    ) -> Result<pb::ForceReleaseResponse, Error> {
        let name = name.to_string();
        self.call_once(0, self.deadline(), |ch, left| {
            let mut req = tonic::Request::new(pb::ForceReleaseRequest {
                name: name.clone(),
                lease_id,
            });
            req.set_timeout(left);
            async move {
                pb::admin_client::AdminClient::new(ch)
                    .force_release(req)
                    .await
            }
        })
        .await
    }

    /// Grant a bare lease that nothing keeps alive (for handing to another
    /// process, or to [`Client::attach_session`]). Most programs want
    /// [`Client::session`] instead. Returns the lease id and its ttl.
    pub async fn grant_lease(&self, ttl: Duration, owner: &str) -> Result<(u64, Duration), Error> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let owner = owner.to_string();
        let r = self
            .call(0, self.deadline(), |ch, left| {
                let mut req = tonic::Request::new(pb::GrantLeaseRequest {
                    ttl_ms,
                    owner: owner.clone(),
                });
                req.set_timeout(left);
                async move { pb::leases_client::LeasesClient::new(ch).grant(req).await }
            })
            .await?;
        Ok((r.lease_id, Duration::from_millis(r.ttl_ms)))
    }

    /// Keep a lease granted elsewhere alive in a [`Session`] of this client
    /// (see [`Session::lost`] and [`Session::is_valid`]; its window counts
    /// from the first keep-alive's send time). `drift_margin` defaults to 5 %
    /// of the lease's ttl. Dropping the session stops the keep-alives but
    /// does not revoke the lease; [`Session::revoke`] does.
    pub async fn attach_session(
        &self,
        lease_id: u64,
        drift_margin: Option<Duration>,
    ) -> Result<Session, Error> {
        Session::attach(self.clone(), lease_id, drift_margin).await
    }

    /// End any lease now (its holds are released, its waits dropped).
    /// Returns the holds released; `Error::LeaseLost` if it did not exist.
    pub async fn revoke_lease(&self, lease_id: u64) -> Result<Vec<pb::Grant>, Error> {
        Ok(self.lease_ref(lease_id).revoke().await?.released)
    }

    /// Every live lease with its owner, holds and waits (linearizable).
    pub async fn leases(&self) -> Result<Vec<pb::LeaseInfo>, Error> {
        let r = self
            .call_read(0, self.deadline(), |ch, left| {
                let mut req = tonic::Request::new(pb::ListLeasesRequest { stale: false });
                req.set_timeout(left);
                async move { pb::leases_client::LeasesClient::new(ch).list(req).await }
            })
            .await?;
        Ok(r.leases)
    }

    /// Add node `id`, reachable by the other nodes at `address`
    /// (`host:port`), as a non-voting learner. With `wait_caught_up` the
    /// call returns once it has caught up with the log (give the handle a
    /// long enough [`Client::with_call_timeout`]); otherwise once the
    /// membership entry is committed. Then [`Client::promote`] it.
    pub async fn add_learner(
        &self,
        id: u64,
        address: &str,
        wait_caught_up: bool,
    ) -> Result<pb::MembershipResponse, Error> {
        self.call(0, self.deadline(), |ch, left| {
            let mut req = tonic::Request::new(pb::AddLearnerRequest {
                id,
                address: address.to_string(),
                wait_caught_up,
            });
            req.set_timeout(left);
            async move {
                pb::admin_client::AdminClient::new(ch)
                    .add_learner(req)
                    .await
            }
        })
        .await
    }

    /// Make learner `id` a voter (joint consensus).
    pub async fn promote(&self, id: u64) -> Result<pb::MembershipResponse, Error> {
        self.call(0, self.deadline(), |ch, left| {
            let mut req = tonic::Request::new(pb::PromoteRequest { id });
            req.set_timeout(left);
            async move { pb::admin_client::AdminClient::new(ch).promote(req).await }
        })
        .await
    }

    /// Remove node `id` (voter or learner) from the cluster.
    pub async fn remove_member(&self, id: u64) -> Result<pb::MembershipResponse, Error> {
        self.call(0, self.deadline(), |ch, left| {
            let mut req = tonic::Request::new(pb::RemoveRequest { id });
            req.set_timeout(left);
            async move { pb::admin_client::AdminClient::new(ch).remove(req).await }
        })
        .await
    }

    /// Forget the cluster's record of node `id` (its store and client
    /// address) once it is no longer a member, so that the id can come back
    /// with a new store. Refused (`Error::InvalidArgument`) while `id` is a
    /// voter or learner. Repeating it is harmless (`existed` is then false).
    pub async fn forget_member(&self, id: u64) -> Result<pb::ForgetMemberResponse, Error> {
        self.call(0, self.deadline(), |ch, left| {
            let mut req = tonic::Request::new(pb::ForgetMemberRequest { id });
            req.set_timeout(left);
            async move {
                pb::admin_client::AdminClient::new(ch)
                    .forget_member(req)
                    .await
            }
        })
        .await
    }

    /// Admin.Status of the node at `endpoint` itself, not of the leader:
    /// one attempt within `timeout` (connecting included). For tools that
    /// look at each node (`raftlock status`, finding the leader).
    pub async fn status_of(endpoint: &str, timeout: Duration) -> Result<pb::StatusResponse, Error> {
        Client::status_of_with(endpoint, timeout, &ClientOptions::default()).await
    }

    /// [`Client::status_of`] with the TLS settings and token of `options`
    /// (its retries and timeouts are not used).
    pub async fn status_of_with(
        endpoint: &str,
        timeout: Duration,
        options: &ClientOptions,
    ) -> Result<pb::StatusResponse, Error> {
        let options = ClientOptions {
            retry: RetryPolicy::none(),
            call_timeout: timeout,
            connect_timeout: timeout,
            tls: options.tls.clone(),
            token: options.token.clone(),
        };
        Client::connect([endpoint], options).await?.status().await
    }

    /// The gRPC health check (`grpc.health.v1.Health/Check`) of `service`
    /// (`""`: the node as a whole) on the node at `endpoint` itself, not
    /// the leader: one attempt within `timeout`, with the TLS settings and
    /// token of `options`. A raftlock node answers [`HealthStatus::Serving`]
    /// while it knows a leader. For probes (`raftlock health`).
    pub async fn health_of_with(
        endpoint: &str,
        service: &str,
        timeout: Duration,
        options: &ClientOptions,
    ) -> Result<HealthStatus, Error> {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let options = ClientOptions {
            retry: RetryPolicy::none(),
            call_timeout: timeout,
            connect_timeout: timeout,
            tls: options.tls.clone(),
            token: options.token.clone(),
        };
        let client = Client::connect([endpoint], options).await?;
        let answer = client
            .call_read(0, client.deadline(), |ch, left| {
                let mut req = tonic::Request::new(HealthCheckRequest {
                    service: service.to_string(),
                });
                req.set_timeout(left);
                async move { HealthClient::new(ch).check(req).await }
            })
            .await?;
        Ok(HealthStatus::from_wire(answer.status))
    }

    /// A backup of the whole cluster state (`Admin.SaveSnapshot`): one
    /// consistent copy made by the leader (this call follows it), checked
    /// against the length and SHA-256 the stream carries. It holds every
    /// lease's identity and every hold's metadata: keep it private.
    pub async fn save_snapshot(&self) -> Result<crate::Backup, Error> {
        self.call_read(0, self.deadline(), |ch, left| {
            let mut req = tonic::Request::new(pb::SaveSnapshotRequest {});
            req.set_timeout(left);
            async move {
                let response = pb::admin_client::AdminClient::new(ch)
                    .save_snapshot(req)
                    .await?;
                let (metadata, mut stream, extensions) = response.into_parts();
                let mut chunks = Vec::new();
                while let Some(chunk) = stream.message().await? {
                    chunks.push(chunk);
                }
                let backup = crate::Backup::from_chunks(chunks)
                    .map_err(|e| Status::data_loss(e.to_string()))?;
                Ok(Response::from_parts(metadata, backup, extensions))
            }
        })
        .await
    }

    /// The cluster as seen by the node this client talks to (the leader
    /// once known): roles, term, log and applied indexes, members with
    /// their replication lag (when that node leads), counts of leases and locks.
    pub async fn status(&self) -> Result<pb::StatusResponse, Error> {
        self.call_read(0, self.deadline(), |ch, left| {
            let mut req = tonic::Request::new(pb::StatusRequest {});
            req.set_timeout(left);
            async move { pb::admin_client::AdminClient::new(ch).status(req).await }
        })
        .await
    }
}

/// What a node answered to a gRPC health check
/// ([`Client::health_of_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// It can serve requests (a raftlock node: it knows a leader).
    Serving,
    /// It cannot now (no quorum, an election, not yet a member).
    NotServing,
    /// The service named in the check is not one the node serves.
    ServiceUnknown,
    /// UNKNOWN, or a status this client does not know.
    Unknown,
}

impl HealthStatus {
    fn from_wire(status: i32) -> HealthStatus {
        use tonic_health::pb::health_check_response::ServingStatus as S;
        match S::try_from(status) {
            Ok(S::Serving) => HealthStatus::Serving,
            Ok(S::NotServing) => HealthStatus::NotServing,
            Ok(S::ServiceUnknown) => HealthStatus::ServiceUnknown,
            Ok(S::Unknown) | Err(_) => HealthStatus::Unknown,
        }
    }

    /// The protocol's name of the status (`SERVING`, `NOT_SERVING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Serving => "SERVING",
            HealthStatus::NotServing => "NOT_SERVING",
            HealthStatus::ServiceUnknown => "SERVICE_UNKNOWN",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }
}

/// The state of a [`Client::watch_resuming`] stream.
struct Resuming {
    client: Client,
    prefix: String,
    /// Where a reopened stream starts when nothing was delivered yet.
    from: u64,
    /// The revision of the last event delivered, and how many events of
    /// that revision were delivered. A stream is reopened AT that revision
    /// (a batch boundary may split one entry's events) and its first
    /// `seen_at_last` events there, already delivered, are skipped: every
    /// node produces an entry's events in the same order.
    last: Option<(u64, usize)>,
    /// Events of revision `last` still to skip on the current stream.
    skip: usize,
    inbound: Option<tonic::Streaming<pb::WatchResponse>>,
    buffered: std::collections::VecDeque<pb::Event>,
    /// Breaks since the last batch, for the pause before reopening.
    breaks: u32,
    done: bool,
}

impl Resuming {
    async fn next_event(&mut self) -> Option<Result<pb::Event, Error>> {
        loop {
            if let Some(e) = self.buffered.pop_front() {
                match &mut self.last {
                    Some((rev, _)) if e.revision < *rev => continue,
                    Some((rev, seen)) if e.revision == *rev => {
                        if self.skip > 0 {
                            self.skip -= 1;
                            continue;
                        }
                        *seen += 1;
                    }
                    _ => {
                        self.last = Some((e.revision, 1));
                        self.skip = 0;
                    }
                }
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            let Some(inbound) = self.inbound.as_mut() else {
                if self.breaks > 0 {
                    let pause = self.client.options().retry.backoff(self.breaks);
                    tokio::time::sleep(pause.max(Duration::from_millis(20))).await;
                }
                let (from, skip) = match self.last {
                    Some((rev, seen)) => (rev, seen),
                    None => (self.from, 0),
                };
                match self.client.open_watch(&self.prefix, from).await {
                    Ok(s) => {
                        self.inbound = Some(s);
                        self.skip = skip;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            match inbound.message().await {
                Ok(Some(batch)) => {
                    self.breaks = 0;
                    self.buffered.extend(batch.events);
                }
                Ok(None) => {
                    tracing::debug!(last = ?self.last, "watch stream ended; reopening");
                    self.inbound = None;
                    self.breaks = self.breaks.saturating_add(1);
                }
                Err(status) => {
                    tracing::debug!(last = ?self.last, error = %status.message(), "watch stream broke; reopening");
                    self.inbound = None;
                    self.breaks = self.breaks.saturating_add(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nothing listens on: bound, then closed.
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        addr.to_string()
    }

    #[test]
    fn endpoints_normalize_to_host_and_port() {
        assert_eq!(normalize(" http://a:1/ "), "a:1");
        assert_eq!(normalize("HTTPS://a:1"), "a:1");
        assert_eq!(normalize("[::1]:7401"), "[::1]:7401");
        assert_eq!(normalize("a:1"), "a:1");
    }

    #[tokio::test]
    async fn https_endpoints_are_never_downgraded_and_leaders_learnt_keep_tls() {
        // The same address given as https:// and bare is one node, reached
        // over TLS; so is a leader named by a reply (with or without a
        // scheme): the client was made for TLS.
        let client = Client::connect(
            ["https://a.invalid:1", "a.invalid:1"],
            ClientOptions::default(),
        )
        .await
        .expect("client");
        assert!(client.inner.security.tls.is_some());
        assert_eq!(client.nodes().channels.len(), 1);
        client.follow_leader("http://b.invalid:2");
        assert_eq!(client.current_endpoint(), "b.invalid:2");
        assert!(client.inner.security.tls.is_some());
        // Plaintext only when nothing asks for TLS.
        let plain = Client::connect(["http://a.invalid:1"], ClientOptions::default())
            .await
            .expect("client");
        assert!(plain.inner.security.tls.is_none());
    }

    #[tokio::test]
    async fn a_token_that_is_no_header_value_is_refused_at_connect() {
        let options = ClientOptions {
            token: Some("two words".into()),
            ..ClientOptions::default()
        };
        let e = Client::connect(["a.invalid:1"], options.clone())
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&e, Error::InvalidArgument { field, .. } if field == "token"),
            "{e:?}"
        );
        assert!(
            !format!("{options:?}").contains("two words"),
            "Debug shows no token"
        );
    }

    #[tokio::test]
    async fn a_client_gives_up_after_the_rounds_in_which_nothing_listens() {
        let endpoints = [closed_port(), closed_port()];
        let options = ClientOptions {
            retry: RetryPolicy {
                max_attempts: u32::MAX,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(1),
                jitter: 0.0,
                unreachable_rounds: Some(2),
            },
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        };
        let client = Client::connect(endpoints.clone(), options.clone())
            .await
            .expect("client");
        match client.status().await {
            // Two rounds over two endpoints, then it stops: not the 30 s deadline.
            Err(Error::Unavailable { attempts, .. }) => assert_eq!(attempts, 4),
            r => panic!("expected Unavailable, got {r:?}"),
        }
        // Without the rule it retries until its attempts run out.
        let options = ClientOptions {
            retry: RetryPolicy {
                max_attempts: 9,
                unreachable_rounds: None,
                ..options.retry
            },
            ..options
        };
        let client = Client::connect(endpoints, options).await.expect("client");
        match client.status().await {
            Err(Error::Unavailable { attempts, .. }) => assert_eq!(attempts, 9),
            r => panic!("expected Unavailable, got {r:?}"),
        }
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_never_sent_so_a_write_was_not_applied() {
        let options = ClientOptions {
            retry: RetryPolicy {
                unreachable_rounds: Some(2),
                ..RetryPolicy::standard()
            },
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        let client = Client::connect(["no-such-node.invalid:7401", &closed_port()], options)
            .await
            .expect("client");
        // A release stops at the first failure whose outcome is unknown; a
        // name that does not resolve sent nothing, so it goes on to the
        // next node and ends as "not applied".
        let e = client
            .lease_ref(1)
            .release(&["x".to_string()], 1)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unavailable { attempts: 4, .. }), "{e:?}");
        assert!(!e.may_have_been_applied());
    }
}
