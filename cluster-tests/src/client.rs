//! The harness's client of one node: the public gRPC API
//! (`raftlock.v1.Locks` and `Leases`) through the node's client proxy,
//! one request per operation, every call with a deadline, and every error
//! sorted into "certainly did not happen" (fail) or "may have happened"
//! (info).
//!
//! No leader following: a Jepsen client is bound to one node, and raftlock
//! followers forward writes to the leader themselves.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raftlock_proto::errors::{self, ErrorReason, Reason};
use raftlock_proto::v1 as pb;
use raftlock_proto::v1::leases_client::LeasesClient;
use raftlock_proto::v1::locks_client::LocksClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::history::HoldMode;

/// Reasons that mean the request certainly took no effect, as the proto
/// documents them — NOT_LEADER and NO_LEADER included, so the checkers hold
/// raftlock to that promise (a forward whose answer was lost is
/// OUTCOME_UNKNOWN since 1fd1f53, found by this harness).
pub const DEFINITE: &[ErrorReason] = &[
    ErrorReason::InvalidName,
    ErrorReason::InvalidArgument,
    ErrorReason::TooLarge,
    ErrorReason::TtlOutOfRange,
    ErrorReason::LimitExceeded,
    ErrorReason::LeaseNotFound,
    ErrorReason::LeaseExpiring,
    ErrorReason::LockNotFound,
    ErrorReason::WaiterNotFound,
    ErrorReason::LockBusy,
    ErrorReason::NotHolder,
    ErrorReason::StaleToken,
    ErrorReason::KindConflict,
    ErrorReason::PermitsMismatch,
    ErrorReason::HeldInOtherMode,
    ErrorReason::PartiallyHeld,
    ErrorReason::AlreadyWaiting,
    ErrorReason::NotLeader,
    ErrorReason::NoLeader,
    ErrorReason::Compacted,
    ErrorReason::SlowWatcher,
    ErrorReason::Denied,
    ErrorReason::Unauthenticated,
    ErrorReason::RateLimited,
    ErrorReason::ClusterMismatch,
    ErrorReason::PeerVersionMismatch,
];

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A definite refusal, with its reason (e.g. `LOCK_BUSY`).
    #[error("refused: {0}")]
    Definite(String),
    /// The outcome is unknown.
    #[error("indeterminate: {0}")]
    Indeterminate(String),
}

impl CallError {
    /// Reasons are read with the API's error contract (raftlock-proto's
    /// `errors::classify`), but which of them say "certainly did not
    /// happen" is this harness's own list, [`DEFINITE`], not the product's
    /// table: a reason the product wrongly called "not applied" would
    /// otherwise make the checkers hold raftlock to less, silently. (A test
    /// checks that the two agree.) Everything else (TIMEOUT,
    /// OUTCOME_UNKNOWN, lost connections, and WAIT_TIMEOUT, whose withdrawn
    /// request may have held the lock for a moment) is indeterminate.
    pub fn from_status(status: &tonic::Status) -> CallError {
        let classified = errors::classify(status);
        match &classified.reason {
            Reason::Known(r) if DEFINITE.contains(r) => CallError::Definite(r.name().to_string()),
            Reason::Known(r) => CallError::Indeterminate(r.name().to_string()),
            Reason::Unrecognized(r) => CallError::Indeterminate(r.clone()),
            Reason::Absent => {
                let mut text = format!("{:?}: {}", status.code(), status.message());
                text.truncate(160);
                CallError::Indeterminate(text)
            }
        }
    }

    /// The text recorded in the history's `error` field.
    pub fn reason(&self) -> &str {
        match self {
            CallError::Definite(r) | CallError::Indeterminate(r) => r,
        }
    }
}

/// How the harness reaches a node: plaintext, or TLS checked against the
/// cluster's CA with the harness's client certificate (its identity in the
/// auth file). Every channel the harness opens — workload clients, status
/// polling, membership changes — is made here. Cheap to clone.
#[derive(Clone, Default)]
pub struct Transport {
    tls: Option<Arc<TlsMaterial>>,
}

struct TlsMaterial {
    ca: Vec<u8>,
    /// The client certificate and key (PEM); None: TLS without a client
    /// certificate (the harness's check that auth is really on).
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// The name the harness checks the nodes' certificates against: every node
/// certificate lists `localhost` and 127.0.0.1, and clients connect to
/// 127.0.0.1 (through the client proxies, which pass TLS through).
pub const TLS_DOMAIN: &str = "localhost";

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tls {
            None => f.write_str("Transport(plaintext)"),
            Some(t) if t.identity.is_some() => f.write_str("Transport(tls, client certificate)"),
            Some(_) => f.write_str("Transport(tls, no client certificate)"),
        }
    }
}

impl Transport {
    /// Plaintext HTTP/2.
    pub fn plaintext() -> Transport {
        Transport { tls: None }
    }

    /// TLS: nodes checked against the CA certificate in `ca` (PEM), the
    /// harness presenting `cert` and `key` (PEM files) when given.
    pub fn tls(ca: &Path, identity: Option<(&Path, &Path)>) -> std::io::Result<Transport> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", p.display())))
        };
        let identity = match identity {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(Transport {
            tls: Some(Arc::new(TlsMaterial {
                ca: read(ca)?,
                identity,
            })),
        })
    }

    /// The same CA, without a client certificate.
    pub fn without_identity(&self) -> Transport {
        Transport {
            tls: self.tls.as_ref().map(|t| {
                Arc::new(TlsMaterial {
                    ca: t.ca.clone(),
                    identity: None,
                })
            }),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// An endpoint for `addr` (not connected yet).
    pub fn endpoint(&self, addr: SocketAddr) -> Result<Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad address {addr}: {e}"))?;
        match &self.tls {
            None => Ok(endpoint),
            Some(t) => {
                let mut config = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&t.ca))
                    .domain_name(TLS_DOMAIN);
                if let Some((cert, key)) = &t.identity {
                    config = config.identity(Identity::from_pem(cert, key));
                }
                endpoint
                    .tls_config(config)
                    .map_err(|e| format!("TLS settings for {addr}: {e}"))
            }
        }
    }
}

/// A client bound to one node.
#[derive(Clone)]
pub struct NodeClient {
    pub node: u64,
    locks: LocksClient<Channel>,
    leases: LeasesClient<Channel>,
    /// Deadline of one call (a waiting acquire gets its wait on top).
    pub timeout: Duration,
}

impl NodeClient {
    /// A client of `node` at `addr`; connects lazily, never waits here.
    pub fn new(
        node: u64,
        addr: SocketAddr,
        timeout: Duration,
        transport: &Transport,
    ) -> Result<NodeClient, CallError> {
        let endpoint = transport
            .endpoint(addr)
            .map_err(CallError::Definite)?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        Ok(NodeClient {
            node,
            locks: LocksClient::new(channel.clone()),
            leases: LeasesClient::new(channel),
            timeout,
        })
    }

    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(timeout);
        r
    }

    async fn bounded<T, F>(timeout: Duration, call: F) -> Result<T, CallError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(CallError::Indeterminate("client timeout".into())),
            Ok(Err(status)) => Err(CallError::from_status(&status)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    pub async fn grant(
        &self,
        ttl_ms: u64,
        owner: &str,
    ) -> Result<pb::GrantLeaseResponse, CallError> {
        let mut c = self.leases.clone();
        let req = self.request(
            pb::GrantLeaseRequest {
                ttl_ms,
                owner: owner.to_string(),
            },
            self.timeout,
        );
        Self::bounded(self.timeout, c.grant(req)).await
    }

    /// One keep-alive on a fresh stream: send one request, take one answer.
    pub async fn keep_alive(&self, lease_id: u64) -> Result<pb::KeepAliveResponse, CallError> {
        let mut c = self.leases.clone();
        let outbound = tokio_stream::iter(vec![pb::KeepAliveRequest { lease_id }]);
        let req = self.request(outbound, self.timeout);
        let call = async {
            let mut inbound = c.keep_alive(req).await?.into_inner();
            match inbound.message().await? {
                Some(m) => Ok(tonic::Response::new(m)),
                None => Err(tonic::Status::unavailable("keep-alive stream ended")),
            }
        };
        Self::bounded(self.timeout, call).await
    }

    pub async fn acquire(
        &self,
        lease_id: u64,
        name: &str,
        wait_ms: u64,
        mode: HoldMode,
    ) -> Result<pb::AcquireResponse, CallError> {
        let (mode, permits) = match mode {
            HoldMode::Exclusive => (pb::Mode::Exclusive, 0),
            HoldMode::Shared => (pb::Mode::Shared, 0),
            HoldMode::Semaphore { permits } => (pb::Mode::Semaphore, permits),
        };
        let mut c = self.locks.clone();
        let timeout = self.timeout + Duration::from_millis(wait_ms);
        let req = self.request(
            pb::AcquireRequest {
                lease_id,
                locks: vec![pb::LockSpec {
                    name: name.to_string(),
                    mode: mode as i32,
                    permits,
                }],
                wait_timeout_ms: wait_ms,
                ..Default::default()
            },
            timeout,
        );
        Self::bounded(timeout, c.acquire(req)).await
    }

    pub async fn release(
        &self,
        lease_id: u64,
        token: u64,
        name: &str,
    ) -> Result<pb::ReleaseResponse, CallError> {
        let mut c = self.locks.clone();
        let req = self.request(
            pb::ReleaseRequest {
                lease_id,
                token,
                names: vec![name.to_string()],
            },
            self.timeout,
        );
        Self::bounded(self.timeout, c.release(req)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlock_proto::errors::{Applied, Origin};

    #[test]
    fn the_harness_and_the_product_agree_on_what_was_not_applied() {
        let product: Vec<ErrorReason> = ErrorReason::ALL
            .into_iter()
            .filter(|r| r.rule().origin == Origin::Node && r.rule().applied == Applied::No)
            .collect();
        let mut ours = DEFINITE.to_vec();
        ours.sort_by_key(|r| *r as i32);
        assert_eq!(ours, product);
    }
}
