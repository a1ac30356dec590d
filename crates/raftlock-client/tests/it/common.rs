//! The client's own fixtures on top of the test kit: sessions, clients of
//! chosen endpoints, and a fault layer in front of a node's in-process
//! services (the cluster, proxies and waits are raftlock_testkit's).
#![allow(dead_code)]

use std::time::Duration;

use raftlock_client::{Client, ClientOptions, RetryPolicy, Session, SessionOptions};
use raftlock_node::NodeHandle;
use raftlock_testkit::wait::bounded;

pub async fn session(client: &Client, ttl_ms: u64, owner: &str) -> Session {
    bounded(client.session(SessionOptions::new(Duration::from_millis(ttl_ms)).owner(owner)))
        .await
        .expect("session")
}

/// A client of the given endpoints only.
pub async fn client_of(endpoints: &[String], retry: RetryPolicy) -> Client {
    let options = ClientOptions {
        retry,
        ..ClientOptions::default()
    };
    Client::connect(endpoints.iter().cloned(), options)
        .await
        .expect("connect")
}

/// What [`Faulty`] does to the next calls of one gRPC method.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The node never sees the call; the client gets this plain status (no
    /// raftlock reason), as from a proxy or a broken connection.
    Refuse(tonic::Code),
    /// The node answers the call (a write is applied) and the client gets
    /// this plain status instead of the answer.
    LoseAnswer(tonic::Code),
}

/// Faults to inject, by gRPC method, shared with the [`Faulty`] services.
#[derive(Clone, Default)]
pub struct Faults(std::sync::Arc<std::sync::Mutex<Vec<FaultRule>>>);

/// A method (such as "Locks/Release"), its fault, and how many more calls get it.
type FaultRule = (&'static str, Fault, u32);

impl Faults {
    /// The next `times` calls of `method` (such as "Locks/Release") get
    /// `fault` (u32::MAX: until cleared), after the faults set before for it.
    pub fn set(&self, method: &'static str, fault: Fault, times: u32) {
        self.0.lock().expect("faults").push((method, fault, times));
    }

    pub fn clear(&self) {
        self.0.lock().expect("faults").clear();
    }

    fn take(&self, path: &str) -> Option<Fault> {
        let mut rules = self.0.lock().expect("faults");
        let (_, fault, times) = rules
            .iter_mut()
            .find(|(m, _, t)| *t > 0 && path.ends_with(&format!("v1.{m}")))?;
        if *times != u32::MAX {
            *times -= 1;
        }
        Some(*fault)
    }
}

/// A node's in-process services with [`Faults`] in front, for
/// `Client::in_process`: calls pass unless a fault is set for their method.
#[derive(Clone)]
pub struct Faulty {
    inner: tonic::service::Routes,
    faults: Faults,
}

impl Faulty {
    pub fn new(node: &NodeHandle, faults: &Faults) -> Faulty {
        Faulty {
            inner: node.local_service(),
            faults: faults.clone(),
        }
    }
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl tower::Service<HttpRequest> for Faulty {
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<HttpResponse, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<HttpRequest>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let fault = self.faults.take(req.uri().path());
        match fault {
            None => Box::pin(tower::Service::call(&mut self.inner, req)),
            Some(Fault::Refuse(code)) => Box::pin(async move {
                Ok(tonic::Status::new(code, "refused by the test's fault layer").into_http())
            }),
            Some(Fault::LoseAnswer(code)) => {
                let answered = tower::Service::call(&mut self.inner, req);
                Box::pin(async move {
                    // A unary call's handler has run to its end once its
                    // response is here.
                    drop(answered.await);
                    Ok(
                        tonic::Status::new(code, "answer lost by the test's fault layer")
                            .into_http(),
                    )
                })
            }
        }
    }
}

/// A client of `node` alone, in process, through `faults`.
pub fn faulty_client(node: &NodeHandle, faults: &Faults, retry: RetryPolicy) -> Client {
    let options = ClientOptions {
        retry,
        ..ClientOptions::default()
    };
    Client::in_process(Faulty::new(node, faults), options)
}
