//! TLS for both listeners and for dialing peers, with rustls (ring), and
//! certificates re-read without a restart.
//!
//! One certificate and key per node (a `raftlock certs node` certificate:
//! common name `node-<id>`, organizational unit `raftlock-node`, signed by
//! the cluster's CA) serves both ports and is presented when the node
//! dials a peer. The CA file is the one CA every peer and client
//! certificate must chain to:
//! - the peer port requires a certificate from that CA (mutual TLS); the
//!   services then accept a message only from the node its certificate
//!   names (`node-<from_id>`), so a certificate for node 2 cannot speak as
//!   node 3;
//! - the client port accepts a client certificate from that CA when one is
//!   presented (its common name is the caller's identity) and callers
//!   without one (bearer tokens);
//! - a node dialing a peer checks that the certificate it gets chains to
//!   the CA and names the node it means to reach. It does not check the
//!   certificate's host names: the node id is the identity, and peers may
//!   be dialed through proxies or NAT at other addresses
//!   (`NodeConfig::peer_dial`).
//!
//! [`Tls::reload`] re-reads the three files and swaps them in for new
//! connections (open connections keep the certificates they started with);
//! a failed reload keeps the old ones. The node calls it on SIGHUP and when
//! a file's size or modification time changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use raftlock_proto::auth::{NODE_OU, node_common_name, node_id_of_common_name};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::conn::CertNames;

/// The certificate files of a node (all PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate (`node-<id>.crt`), possibly followed by
    /// intermediates.
    pub cert: PathBuf,
    /// Its private key (`node-<id>.key`).
    pub key: PathBuf,
    /// The CA that signs the cluster's node and client certificates.
    pub ca: PathBuf,
}

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path}: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which listener a server configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Clients: a certificate is optional.
    Client,
    /// Peers: a certificate from the CA is required.
    Peer,
}

struct Loaded {
    client: Arc<ServerConfig>,
    peer: Arc<ServerConfig>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

/// Size and modification time of each file, to notice a change.
type Stamps = Vec<Option<(u64, SystemTime)>>;

/// A node's TLS material, swappable at run time.
pub(crate) struct Tls {
    files: TlsFiles,
    node_id: u64,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
    stamps: Mutex<Stamps>,
}

impl Tls {
    /// Loads the files of node `node_id`; its certificate must name it.
    pub(crate) fn load(files: TlsFiles, node_id: u64) -> Result<Tls, TlsError> {
        // ring, not aws-lc-rs: no C toolchain beyond gcc (cmake, nasm) to
        // build it, and tonic's `tls-ring` uses it too. rustls 0.23.48
        // marks it deprecated for lacking post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = stamps(&files);
        let loaded = load(&files, node_id, &provider)?;
        Ok(Tls {
            files,
            node_id,
            provider,
            current: RwLock::new(Arc::new(loaded)),
            stamps: Mutex::new(stamps),
        })
    }

    /// Re-reads the files; on success new connections use them, on
    /// failure the old ones stay and the error says why.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let stamps = stamps(&self.files);
        let loaded = load(&self.files, self.node_id, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        Ok(())
    }

    /// Reloads if a file's size or modification time changed since the
    /// last load; `Ok(true)` when it reloaded.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.files);
        let changed = *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) != now;
        if !changed {
            return Ok(false);
        }
        match self.reload() {
            Ok(()) => Ok(true),
            Err(e) => {
                // Do not retry the same broken files every poll; a further
                // change (or SIGHUP) tries again.
                *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = now;
                Err(e)
            }
        }
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The server configuration for new connections on `side`.
    pub(crate) fn server_config(&self, side: Side) -> Arc<ServerConfig> {
        let loaded = self.current();
        match side {
            Side::Client => Arc::clone(&loaded.client),
            Side::Peer => Arc::clone(&loaded.peer),
        }
    }

    /// The client configuration for dialing peer `expected` (0: any node
    /// of the cluster, as when an address is dialed before its id is
    /// known).
    pub(crate) fn peer_client_config(&self, expected: u64) -> Result<ClientConfig, TlsError> {
        let loaded = self.current();
        let verifier = NodeVerifier {
            roots: Arc::clone(&loaded.roots),
            algorithms: self.provider.signature_verification_algorithms,
            expected,
        };
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| self.bad_cert(e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(loaded.chain.clone(), loaded.key.clone_key())
            .map_err(|e| self.bad_cert(e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    fn bad_cert(&self, e: impl std::fmt::Display) -> TlsError {
        TlsError::Bad {
            path: self.files.cert.clone(),
            reason: e.to_string(),
        }
    }
}

fn stamps(files: &TlsFiles) -> Stamps {
    [&files.cert, &files.key, &files.ca]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.len(), m.modified().ok()?))
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn bad(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Bad {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn load(
    files: &TlsFiles,
    node_id: u64,
    provider: &Arc<CryptoProvider>,
) -> Result<Loaded, TlsError> {
    let chain = certificates(&files.cert)?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad(&files.key, format!("not a PEM private key: {e}")))?;
    let mut roots = RootCertStore::empty();
    for ca in certificates(&files.ca)? {
        roots
            .add(ca)
            .map_err(|e| bad(&files.ca, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);

    // The node's own certificate must be one its peers accept: from the CA,
    // naming this node.
    let names =
        cert_names(&chain[0]).ok_or_else(|| bad(&files.cert, "cannot parse the certificate"))?;
    let wanted = node_common_name(node_id);
    if names.common_name != wanted || names.org_unit.as_deref() != Some(NODE_OU) {
        return Err(bad(
            &files.cert,
            format!(
                "names {:?} (OU {:?}); node {node_id} needs a node certificate for {wanted:?} (OU {NODE_OU:?}): make one with `raftlock certs node --id {node_id}`",
                names.common_name, names.org_unit
            ),
        ));
    }
    let parsed =
        ParsedCertificate::try_from(&chain[0]).map_err(|e| bad(&files.cert, e.to_string()))?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &chain[1..],
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| {
        bad(
            &files.cert,
            format!("is not valid under the CA in {}: {e}", files.ca.display()),
        )
    })?;

    let server = |side: Side| -> Result<Arc<ServerConfig>, TlsError> {
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider));
        let verifier = match side {
            Side::Client => builder.allow_unauthenticated().build(),
            Side::Peer => builder.build(),
        }
        .map_err(|e| bad(&files.ca, e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&files.cert, e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad(&files.key, format!("does not match the certificate: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    };
    Ok(Loaded {
        client: server(Side::Client)?,
        peer: server(Side::Peer)?,
        roots,
        chain: chain.clone(),
        key: Arc::new(key),
    })
}

/// The subject's common name and organizational unit of a certificate.
pub(crate) fn cert_names(der: &CertificateDer<'_>) -> Option<CertNames> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let org_unit = subject
        .iter_organizational_unit()
        .next()
        .and_then(|ou| ou.as_str().ok())
        .map(str::to_string);
    Some(CertNames {
        common_name,
        org_unit,
    })
}

/// The node id a verified certificate names, if it is a node certificate.
pub(crate) fn node_of(names: &CertNames) -> Option<u64> {
    if names.org_unit.as_deref() != Some(NODE_OU) {
        return None;
    }
    node_id_of_common_name(&names.common_name)
}

/// Accepts a peer's certificate when it chains to the cluster's CA and
/// names the node being dialed.
#[derive(Debug)]
struct NodeVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    expected: u64,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let names = cert_names(end_entity).ok_or_else(|| {
            rustls::Error::General("the peer's certificate has no common name".into())
        })?;
        match node_of(&names) {
            Some(id) if self.expected == 0 || id == self.expected => {
                Ok(ServerCertVerified::assertion())
            }
            Some(id) => Err(rustls::Error::General(format!(
                "dialed node {} but its certificate names node {id}",
                self.expected
            ))),
            None => Err(rustls::Error::General(format!(
                "the peer's certificate ({:?}, OU {:?}) is not a node certificate",
                names.common_name, names.org_unit
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Dials a peer with mutual TLS for a tonic channel: TCP, then a handshake
/// with the certificates current at that moment, checking that the peer's
/// certificate names `expected` (see [`Tls::peer_client_config`]).
#[derive(Clone)]
pub(crate) struct PeerConnector {
    tls: Arc<Tls>,
    expected: u64,
}

impl PeerConnector {
    pub(crate) fn new(tls: Arc<Tls>, expected: u64) -> Self {
        PeerConnector { tls, expected }
    }
}

type Connecting = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                    std::io::Error,
                >,
            > + Send,
    >,
>;

impl tower::Service<tonic::transport::Uri> for PeerConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::transport::Uri) -> Self::Future {
        let (tls, expected) = (Arc::clone(&self.tls), self.expected);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("peer address {uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| std::io::Error::other(format!("peer address {uri} has no port")))?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let config = tls
                .peer_client_config(expected)
                .map_err(std::io::Error::other)?;
            // The name only selects SNI; the verifier checks the node id.
            let name = ServerName::try_from(host.clone())
                .unwrap_or_else(|_| ServerName::try_from("raftlock-node").expect("a valid name"))
                .to_owned();
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}
