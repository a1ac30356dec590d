//! A deliberately unsafe lock service for the harness's self-test: the
//! same public `Locks`/`Leases` gRPC API as raftlock, but every "node"
//! grants locks from its own memory with no consensus, and numbers tokens
//! with its own counter. Clients spread over its nodes hold one name at
//! once and share tokens, and the checkers must say so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::Stream;
use raftlock_proto::v1 as pb;
use raftlock_proto::v1::leases_server::{Leases, LeasesServer};
use raftlock_proto::v1::locks_server::{Locks, LocksServer};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use raftlock_proto::errors::{self, ErrorReason};

#[derive(Default)]
struct State {
    next_lease: u64,
    next_token: u64,
    /// lease → (ttl, deadline)
    leases: HashMap<u64, (Duration, Instant)>,
    /// name → (lease, token)
    locks: HashMap<String, (u64, u64)>,
}

impl State {
    fn alive(&self, lease: u64) -> bool {
        self.leases
            .get(&lease)
            .is_some_and(|(_, deadline)| *deadline > Instant::now())
    }
}

/// One node of the unsafe service.
#[derive(Clone)]
struct UnsafeNode {
    id: u64,
    state: Arc<Mutex<State>>,
}

fn refused(reason: ErrorReason, message: String) -> Status {
    errors::status(reason, message, HashMap::new())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl UnsafeNode {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_acquire(&self, lease: u64, name: &str) -> Result<Option<u64>, Status> {
        let mut s = self.state();
        if !s.alive(lease) {
            return Err(refused(
                ErrorReason::LeaseNotFound,
                format!("lease {lease} does not exist"),
            ));
        }
        match s.locks.get(name).copied() {
            Some((l, t)) if l == lease => Ok(Some(t)),
            Some((l, _)) if s.alive(l) => Ok(None),
            _ => {
                s.next_token += 1;
                let token = s.next_token;
                s.locks.insert(name.to_string(), (lease, token));
                Ok(Some(token))
            }
        }
    }
}

#[tonic::async_trait]
impl Locks for UnsafeNode {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let r = request.into_inner();
        let [spec] = r.locks.as_slice() else {
            return Err(Status::invalid_argument("one lock per request here"));
        };
        let deadline = Instant::now() + Duration::from_millis(r.wait_timeout_ms.min(60_000));
        loop {
            if let Some(token) = self.try_acquire(r.lease_id, &spec.name)? {
                return Ok(Response::new(pb::AcquireResponse {
                    token,
                    holds: vec![pb::Grant {
                        name: spec.name.clone(),
                        mode: pb::Mode::Exclusive as i32,
                        permits: 0,
                        token,
                    }],
                    ..Default::default()
                }));
            }
            if r.wait_timeout_ms == 0 {
                return Err(refused(
                    ErrorReason::LockBusy,
                    format!("lock \"{}\" is busy", spec.name),
                ));
            }
            if Instant::now() >= deadline {
                return Err(refused(ErrorReason::WaitTimeout, "wait timed out".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let r = request.into_inner();
        let mut s = self.state();
        for name in &r.names {
            if s.locks.get(name) != Some(&(r.lease_id, r.token)) {
                return Err(refused(
                    ErrorReason::NotHolder,
                    format!("lease {} does not hold \"{name}\"", r.lease_id),
                ));
            }
        }
        for name in &r.names {
            s.locks.remove(name);
        }
        Ok(Response::new(pb::ReleaseResponse {
            names: r.names,
            revision: 0,
        }))
    }

    async fn extend(
        &self,
        _request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        Err(Status::unimplemented("extend"))
    }

    async fn inspect(
        &self,
        _request: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        Err(Status::unimplemented("inspect"))
    }

    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        Err(Status::unimplemented("list"))
    }

    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

#[tonic::async_trait]
impl Leases for UnsafeNode {
    async fn grant(
        &self,
        request: Request<pb::GrantLeaseRequest>,
    ) -> Result<Response<pb::GrantLeaseResponse>, Status> {
        let r = request.into_inner();
        let ttl = Duration::from_millis(r.ttl_ms);
        let mut s = self.state();
        s.next_lease += 1;
        // Lease ids distinct across nodes (tokens are not).
        let lease_id = self.id * 1_000_000_000 + s.next_lease;
        s.leases.insert(lease_id, (ttl, Instant::now() + ttl));
        Ok(Response::new(pb::GrantLeaseResponse {
            lease_id,
            ttl_ms: r.ttl_ms,
        }))
    }

    type KeepAliveStream = BoxStream<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let node = self.clone();
        let out = request.into_inner().map(move |req| {
            let req = req?;
            let mut s = node.state();
            let alive = s.alive(req.lease_id);
            match s.leases.get_mut(&req.lease_id) {
                Some((ttl, deadline)) if alive => {
                    *deadline = Instant::now() + *ttl;
                    Ok(pb::KeepAliveResponse {
                        lease_id: req.lease_id,
                        ttl_ms: ttl.as_millis() as u64,
                    })
                }
                _ => Err(refused(
                    ErrorReason::LeaseNotFound,
                    format!("lease {} does not exist", req.lease_id),
                )),
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeLeaseRequest>,
    ) -> Result<Response<pb::RevokeLeaseResponse>, Status> {
        let lease = request.into_inner().lease_id;
        let mut s = self.state();
        s.leases.remove(&lease);
        s.locks.retain(|_, (l, _)| *l != lease);
        Ok(Response::new(pb::RevokeLeaseResponse::default()))
    }

    async fn list(
        &self,
        _request: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        Err(Status::unimplemented("list"))
    }
}

/// N unsafe nodes on free ports of 127.0.0.1; dropping it stops them.
pub struct UnsafeCluster {
    pub nodes: Vec<(u64, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
}

impl UnsafeCluster {
    pub async fn start(n: u64) -> std::io::Result<UnsafeCluster> {
        let mut nodes = Vec::new();
        let mut tasks = Vec::new();
        for id in 1..=n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let node = UnsafeNode {
                id,
                state: Arc::new(Mutex::new(State::default())),
            };
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let server = tonic::transport::Server::builder()
                .add_service(LocksServer::new(node.clone()))
                .add_service(LeasesServer::new(node))
                .serve_with_incoming(incoming);
            tasks.push(tokio::spawn(async move {
                let _ = server.await;
            }));
            nodes.push((id, addr));
        }
        Ok(UnsafeCluster { nodes, tasks })
    }
}

impl Drop for UnsafeCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
