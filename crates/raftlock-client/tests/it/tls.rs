//! TLS and bearer tokens against a real TLS server: a tiny tonic server
//! (rustls, certificates made here with rcgen) that records, for every
//! call, the `authorization` header it got and the client certificate
//! presented, and answers like a node would.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use raftlock_client::{Client, ClientOptions, Error, RetryPolicy, SessionOptions, TlsOptions};
use raftlock_proto::auth::{AUTHORIZATION_KEY, BEARER_PREFIX, CLIENT_OU, NODE_OU};
use raftlock_proto::errors::{self, ErrorReason, detail};
use raftlock_proto::v1 as pb;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

const TOKEN: &str = "rlt_test-token_0123456789";

/// A CA and what it signed, as PEM.
struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn make_pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |cn: &str, ou: &str, sans: Vec<String>, eku: Vec<ExtendedKeyUsagePurpose>| {
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
        params.extended_key_usages = eku;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf(
            "node-1",
            NODE_OU,
            vec!["127.0.0.1".into(), "localhost".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
        client: leaf(
            "worker",
            CLIENT_OU,
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        ),
    }
}

/// One call as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: &'static str,
    authorization: Option<String>,
    /// The DER of the client certificate presented, if any.
    client_cert: Option<Vec<u8>>,
}

/// The fake node: records calls; Status can redirect to a leader.
#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Answer Status with NOT_LEADER naming this address.
    leader: Option<String>,
}

impl Fake {
    fn record<T>(&self, method: &'static str, request: &Request<T>) {
        let seen = Seen {
            method,
            authorization: request
                .metadata()
                .get(AUTHORIZATION_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            client_cert: request
                .peer_certs()
                .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec())),
        };
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(seen);
    }

    fn calls(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this fake"))
}

#[tonic::async_trait]
impl pb::admin_server::Admin for Fake {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.record("status", &request);
        if let Some(leader) = &self.leader {
            let details = [
                (detail::LEADER_ID.to_string(), "2".to_string()),
                (detail::LEADER_ADDR.to_string(), leader.clone()),
            ];
            return Err(errors::status(
                ErrorReason::NotLeader,
                "not the leader",
                details.into_iter().collect(),
            ));
        }
        Ok(Response::new(pb::StatusResponse {
            node_id: 1,
            ..Default::default()
        }))
    }
    async fn add_learner(
        &self,
        _: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        unused()
    }
    async fn promote(
        &self,
        _: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        unused()
    }
    async fn remove(
        &self,
        _: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        unused()
    }
    async fn force_release(
        &self,
        _: Request<pb::ForceReleaseRequest>,
    ) -> Result<Response<pb::ForceReleaseResponse>, Status> {
        unused()
    }
    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        unused()
    }
    async fn forget_member(
        &self,
        _: Request<pb::ForgetMemberRequest>,
    ) -> Result<Response<pb::ForgetMemberResponse>, Status> {
        unused()
    }

    type SaveSnapshotStream = BoxStream<pb::SnapshotChunk>;
    async fn save_snapshot(
        &self,
        _: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        unused()
    }
}

#[tonic::async_trait]
impl pb::leases_server::Leases for Fake {
    type KeepAliveStream = BoxStream<pb::KeepAliveResponse>;

    async fn grant(
        &self,
        request: Request<pb::GrantLeaseRequest>,
    ) -> Result<Response<pb::GrantLeaseResponse>, Status> {
        self.record("grant", &request);
        Ok(Response::new(pb::GrantLeaseResponse {
            lease_id: 7,
            ttl_ms: request.get_ref().ttl_ms,
        }))
    }
    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        self.record("keep_alive", &request);
        let out = request.into_inner().map(|r| {
            r.map(|req| pb::KeepAliveResponse {
                lease_id: req.lease_id,
                ttl_ms: 3000,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
    async fn revoke(
        &self,
        request: Request<pb::RevokeLeaseRequest>,
    ) -> Result<Response<pb::RevokeLeaseResponse>, Status> {
        self.record("revoke", &request);
        Ok(Response::new(pb::RevokeLeaseResponse::default()))
    }
    async fn list(
        &self,
        _: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        unused()
    }
}

#[tonic::async_trait]
impl pb::locks_server::Locks for Fake {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn acquire(
        &self,
        _: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        unused()
    }
    async fn release(
        &self,
        _: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        unused()
    }
    async fn extend(
        &self,
        _: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        unused()
    }
    async fn inspect(
        &self,
        _: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        unused()
    }
    async fn list(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        unused()
    }
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.record("watch", &request);
        let event = pb::Event {
            revision: 1,
            name: request.get_ref().prefix.clone(),
            ..Default::default()
        };
        let first = futures::stream::iter([Ok(pb::WatchResponse {
            events: vec![event],
        })]);
        // Open until the client goes, as a node's watch is.
        Ok(Response::new(Box::pin(
            first.chain(futures::stream::pending()),
        )))
    }
}

/// A fake node on 127.0.0.1:0, with TLS when `tls` is given (its
/// certificate and key, and the CA of client certificates, optional).
struct Served {
    addr: SocketAddr,
    fake: Fake,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(fake: Fake, tls: Option<&Pki>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut builder = Server::builder();
    if let Some(pki) = tls {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.server.0, &pki.server.1))
            .client_ca_root(Certificate::from_pem(&pki.ca_pem))
            .client_auth_optional(true);
        builder = builder.tls_config(config).expect("server TLS");
    }
    let router = builder
        .add_service(pb::admin_server::AdminServer::new(fake.clone()))
        .add_service(pb::leases_server::LeasesServer::new(fake.clone()))
        .add_service(pb::locks_server::LocksServer::new(fake.clone()));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    Served { addr, fake, task }
}

fn options(tls: Option<TlsOptions>, token: Option<&str>) -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy::standard(),
        call_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        tls,
        token: token.map(str::to_string),
    }
}

fn bearer() -> Option<String> {
    Some(format!("{BEARER_PREFIX}{TOKEN}"))
}

fn der_of_pem(pem: &str) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM")
        .as_ref()
        .to_vec()
}

/// Waits (bounded) until the server has seen a call of `method`.
async fn wait_for(fake: &Fake, method: &str) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = fake.calls().into_iter().find(|s| s.method == method) {
            return s;
        }
        assert!(Instant::now() < deadline, "no {method} call within 10s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn with_the_right_ca_every_call_carries_the_client_certificate_and_the_token() {
    let pki = make_pki();
    let node = serve(Fake::default(), Some(&pki)).await;
    let tls = TlsOptions::new()
        .with_ca_pem(pki.ca_pem.clone())
        .with_identity_pem(pki.client.0.clone(), pki.client.1.clone());
    let client = Client::connect(
        [format!("https://{}", node.addr)],
        options(Some(tls), Some(TOKEN)),
    )
    .await
    .expect("connect");

    // Unary.
    assert_eq!(client.status().await.expect("status").node_id, 1);
    // A server stream.
    let mut events = client.watch("jobs/", 0).await.expect("watch");
    let first = events.next().await.expect("an event").expect("ok");
    assert_eq!(first.name, "jobs/");
    // A session: a grant, then the keep-alive stream (both ways).
    let session = client
        .session(SessionOptions::new(Duration::from_secs(3)))
        .await
        .expect("session");
    wait_for(&node.fake, "keep_alive").await;
    session.revoke().await.expect("revoke");

    let client_der = der_of_pem(&pki.client.0);
    let calls = node.fake.calls();
    for method in ["status", "watch", "grant", "keep_alive", "revoke"] {
        assert!(
            calls.iter().any(|s| s.method == method),
            "{method}: {calls:?}"
        );
    }
    for s in &calls {
        assert_eq!(s.authorization, bearer(), "{}", s.method);
        assert_eq!(s.client_cert.as_ref(), Some(&client_der), "{}", s.method);
    }
}

#[tokio::test]
async fn a_bare_endpoint_uses_tls_when_tls_is_set_and_the_name_is_checked_as_given() {
    let pki = make_pki();
    let node = serve(Fake::default(), Some(&pki)).await;
    // No client certificate: TLS alone, and the server sees none.
    let tls = TlsOptions::new().with_ca_pem(pki.ca_pem.clone());
    let port = node.addr.port();
    for endpoint in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let client = Client::connect([endpoint.clone()], options(Some(tls.clone()), None))
            .await
            .expect("connect");
        client
            .status()
            .await
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    }
    let calls = node.fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|s| s.client_cert.is_none() && s.authorization.is_none())
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_fails_at_once_saying_so() {
    let pki = make_pki();
    let other = make_pki();
    let node = serve(Fake::default(), Some(&pki)).await;
    let tls = TlsOptions::new().with_ca_pem(other.ca_pem.clone());
    let client = Client::connect([node.addr.to_string()], options(Some(tls), Some(TOKEN)))
        .await
        .expect("connect");
    let started = Instant::now();
    let e = client.status().await.expect_err("refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried until the deadline"
    );
    match &e {
        Error::Tls { message, hint, .. } => {
            assert!(message.contains("certificate"), "{message}");
            assert!(hint.contains("CA"), "{hint}");
        }
        e => panic!("expected a TLS error, got {e:?}"),
    }
    assert!(!e.may_have_been_applied());
    // A write too: the handshake failed while connecting, so nothing was
    // sent and it is not "outcome unknown".
    let e = client
        .grant_lease(Duration::from_secs(5), "w")
        .await
        .expect_err("refused");
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(!e.may_have_been_applied());
    assert!(node.fake.calls().is_empty(), "nothing reached the service");
}

#[tokio::test]
async fn a_tls_client_of_a_plaintext_node_is_told_the_node_does_not_speak_tls() {
    let pki = make_pki();
    let node = serve(Fake::default(), None).await;
    let tls = TlsOptions::new().with_ca_pem(pki.ca_pem.clone());
    let client = Client::connect([node.addr.to_string()], options(Some(tls), None))
        .await
        .expect("connect");
    let e = client.status().await.expect_err("refused");
    match &e {
        Error::Tls { hint, .. } => assert!(hint.contains("does not speak TLS"), "{e}"),
        e => panic!("expected a TLS error, got {e:?}"),
    }
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_node_is_told_it_may_need_tls() {
    let pki = make_pki();
    let node = serve(Fake::default(), Some(&pki)).await;
    let client = Client::connect(
        [node.addr.to_string()],
        ClientOptions {
            retry: RetryPolicy::none(),
            ..options(None, None)
        },
    )
    .await
    .expect("connect");
    let e = client.status().await.expect_err("refused");
    // The node hangs up on it: the error says how, and what to check.
    let text = e.to_string();
    assert!(text.contains("TLS") && text.contains("https://"), "{text}");
    assert_ne!(text, "transport error");
    assert!(!e.may_have_been_applied());
    assert!(node.fake.calls().is_empty());
}

#[tokio::test]
async fn http_with_tls_options_is_refused_at_connect() {
    let pki = make_pki();
    let tls = TlsOptions::new().with_ca_pem(pki.ca_pem);
    let e = Client::connect(["http://127.0.0.1:1"], options(Some(tls), None))
        .await
        .err()
        .expect("refused");
    assert!(matches!(e, Error::InvalidEndpoint { .. }), "{e:?}");
}

#[tokio::test]
async fn a_leader_learnt_from_a_reply_is_reached_with_the_same_tls_and_token() {
    let pki = make_pki();
    let leader = serve(Fake::default(), Some(&pki)).await;
    // The follower names the leader as a bare host:port, as nodes do.
    let follower = serve(
        Fake {
            leader: Some(leader.addr.to_string()),
            ..Fake::default()
        },
        Some(&pki),
    )
    .await;
    let tls = TlsOptions::new()
        .with_ca_pem(pki.ca_pem.clone())
        .with_identity_pem(pki.client.0.clone(), pki.client.1.clone());
    let client = Client::connect(
        [format!("https://{}", follower.addr)],
        options(Some(tls), Some(TOKEN)),
    )
    .await
    .expect("connect");
    client.status().await.expect("status at the leader");
    assert_eq!(client.current_endpoint(), leader.addr.to_string());
    let at_leader = leader.fake.calls();
    assert_eq!(at_leader.len(), 1, "{at_leader:?}");
    assert_eq!(at_leader[0].authorization, bearer());
    assert_eq!(at_leader[0].client_cert, Some(der_of_pem(&pki.client.0)));
}

#[tokio::test]
async fn an_https_endpoint_without_a_ca_trusts_only_the_system_roots() {
    let pki = make_pki();
    let node = serve(Fake::default(), Some(&pki)).await;
    // No TlsOptions: https:// alone. The test CA is in no system store.
    let client = Client::connect([format!("https://{}", node.addr)], options(None, None))
        .await
        .expect("connect");
    let e = client.status().await.expect_err("refused");
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
}

#[tokio::test]
async fn an_in_process_client_sends_its_token_too() {
    let fake = Fake::default();
    let client = Client::in_process(
        pb::admin_server::AdminServer::new(fake.clone()),
        options(None, Some(TOKEN)),
    );
    client.status().await.expect("status");
    assert_eq!(fake.calls()[0].authorization, bearer());

    // A token that is no header value fails every call, clearly.
    let client = Client::in_process(
        pb::admin_server::AdminServer::new(fake.clone()),
        options(None, Some("two words")),
    );
    let e = client.status().await.expect_err("refused");
    assert!(
        matches!(&e, Error::InvalidArgument { field, .. } if field == "token"),
        "{e:?}"
    );
    assert_eq!(fake.calls().len(), 1, "nothing sent");
}
