//! How a client's connections are secured: TLS (the CA that signed the
//! nodes' certificates, and a client certificate for mutual TLS) and a
//! bearer token sent with every call (docs/client.md, "TLS and tokens").
//!
//! The rules for endpoints, decided once at connect for every channel the
//! client will ever open (the given endpoints and the leaders replies name):
//! - `https://host:port` always uses TLS, never plaintext;
//! - a bare `host:port` uses TLS when [`ClientOptions::tls`] is set or
//!   another endpoint is `https://`, plaintext otherwise;
//! - `http://host:port` with TLS in use is an [`Error::InvalidEndpoint`]:
//!   mixing plaintext and TLS is a mistake, never silently resolved.
//!
//! [`ClientOptions::tls`]: crate::ClientOptions::tls

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raftlock_proto::auth::BEARER_PREFIX;
use raftlock_proto::errors::ErrorReason;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::codegen::http::HeaderValue;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::Error;

/// TLS settings of a client: PEM bytes, checked when set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM of the CA certificate(s) that signed the nodes' certificates.
    /// `None`: the operating system's trusted roots (for nodes whose
    /// certificates come from a public CA).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client certificate (chain) and of its private key, for
    /// mutual TLS: the certificate's name is the client's identity.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("identity", &self.identity.as_ref().map(|_| "<cert, key>"))
            .finish()
    }
}

/// A TLS file that cannot be used; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsFileError {
    /// The file could not be read.
    #[error("cannot read {what} {}: {message}", path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The file holds no PEM of the kind needed.
    #[error("{what} {} is not PEM: expected {expected}", path.display())]
    NotPem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    /// A certificate without its key, or a key without its certificate.
    #[error("a client certificate needs both the certificate and its key: {0}")]
    Incomplete(String),
}

const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";
const PEM_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY----- (or EC/RSA PRIVATE KEY)";

impl TlsOptions {
    /// TLS with the operating system's trusted roots and no client
    /// certificate.
    pub fn new() -> TlsOptions {
        TlsOptions::default()
    }

    /// Trust the CA(s) in `pem` (instead of the system's roots).
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> TlsOptions {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this certificate (PEM, chain allowed) with its key (PEM).
    pub fn with_identity_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> TlsOptions {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Trust the CA(s) in the PEM file at `path`.
    pub fn with_ca_file(self, path: impl AsRef<Path>) -> Result<TlsOptions, TlsFileError> {
        let pem = read_certificates("CA certificate", path.as_ref())?;
        Ok(self.with_ca_pem(pem))
    }

    /// Present the certificate in the PEM file `cert` with the key in `key`.
    pub fn with_identity_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsOptions, TlsFileError> {
        let cert_pem = read_certificates("client certificate", cert.as_ref())?;
        let key_pem = read_key(key.as_ref())?;
        Ok(self.with_identity_pem(cert_pem, key_pem))
    }

    /// From the files of `--ca`, `--cert` and `--key` (each optional, but
    /// `cert` and `key` together or not at all).
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<TlsOptions, TlsFileError> {
        let mut tls = TlsOptions::new();
        if let Some(ca) = ca {
            tls = tls.with_ca_file(ca)?;
        }
        match (cert, key) {
            (Some(cert), Some(key)) => tls.with_identity_files(cert, key),
            (None, None) => Ok(tls),
            (Some(cert), None) => Err(TlsFileError::Incomplete(format!(
                "certificate {} given without its key",
                cert.display()
            ))),
            (None, Some(key)) => Err(TlsFileError::Incomplete(format!(
                "key {} given without its certificate",
                key.display()
            ))),
        }
    }

    /// tonic's configuration for a node reached as `host`.
    fn config(&self, host: &str, handshake_timeout: Duration) -> Result<ClientTlsConfig, String> {
        let mut config = ClientTlsConfig::new()
            .domain_name(host)
            .timeout(handshake_timeout)
            // A node's own TLS acceptor may not offer ALPN: gRPC is HTTP/2
            // whatever it says.
            .assume_http2(true);
        config = match &self.ca_pem {
            Some(pem) => {
                check_certificates(pem).map_err(|e| format!("the CA certificate: {e}"))?;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            check_certificates(cert).map_err(|e| format!("the client certificate: {e}"))?;
            check_key(key).map_err(|e| format!("the client key: {e}"))?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(config)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| TlsFileError::Unreadable {
        what,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let pem = read(what, path)?;
    check_certificates(&pem).map_err(|_| TlsFileError::NotPem {
        what,
        path: path.to_path_buf(),
        expected: PEM_CERTIFICATE,
    })?;
    Ok(pem)
}

fn read_key(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let pem = read("client key", path)?;
    check_key(&pem).map_err(|_| TlsFileError::NotPem {
        what: "client key",
        path: path.to_path_buf(),
        expected: PEM_PRIVATE_KEY,
    })?;
    Ok(pem)
}

/// At least one PEM certificate, and nothing malformed.
fn check_certificates(pem: &[u8]) -> Result<(), String> {
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| format!("bad PEM: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("no PEM certificate ({PEM_CERTIFICATE})"));
    }
    Ok(())
}

fn check_key(pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(drop)
        .map_err(|e| format!("no PEM private key: {e}"))
}

/// The security of a client's channels, decided at connect.
#[derive(Clone, Default)]
pub(crate) struct Security {
    /// TLS settings when channels use TLS.
    pub tls: Option<TlsOptions>,
    /// The `authorization` value sent with every call.
    pub auth: Option<HeaderValue>,
}

/// How an endpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
    Bare,
}

/// The scheme of an endpoint; another scheme than http(s) is an error.
pub(crate) fn scheme_of(endpoint: &str) -> Result<Scheme, Error> {
    let e = endpoint.trim();
    let lower = e.to_ascii_lowercase();
    if lower.starts_with("https://") {
        Ok(Scheme::Https)
    } else if lower.starts_with("http://") {
        Ok(Scheme::Http)
    } else if let Some((scheme, _)) = e.split_once("://") {
        Err(Error::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            message: format!(
                "unknown scheme {scheme:?}; give host:port, http://host:port or https://host:port"
            ),
        })
    } else {
        Ok(Scheme::Bare)
    }
}

/// The host part of `host:port` (an IPv6 address without its brackets),
/// as the TLS server name.
pub(crate) fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[')
        && let Some((host, _)) = rest.split_once(']')
    {
        return host;
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    }
}

impl Security {
    /// Decides TLS for `endpoints` and `tls`, and checks `token`.
    pub(crate) fn decide(
        endpoints: &[String],
        tls: Option<&TlsOptions>,
        token: Option<&str>,
    ) -> Result<Security, Error> {
        let mut schemes = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            schemes.push((e, scheme_of(e)?));
        }
        let any_https = schemes.iter().any(|(_, s)| *s == Scheme::Https);
        let tls = match (tls, any_https) {
            (Some(tls), _) => Some(tls.clone()),
            (None, true) => Some(TlsOptions::new()),
            (None, false) => None,
        };
        if tls.is_some()
            && let Some((e, _)) = schemes.iter().find(|(_, s)| *s == Scheme::Http)
        {
            let why = if any_https {
                "other endpoints are https://"
            } else {
                "TLS is configured (a CA or a client certificate)"
            };
            return Err(Error::InvalidEndpoint {
                endpoint: (*e).clone(),
                message: format!(
                    "http:// is plaintext but {why}; use https://host:port or host:port"
                ),
            });
        }
        Ok(Security {
            tls,
            auth: token.map(auth_header).transpose()?,
        })
    }

    /// The TLS configuration of a channel to `addr` (`host:port`).
    pub(crate) fn tls_config(
        &self,
        addr: &str,
        handshake_timeout: Duration,
    ) -> Result<Option<ClientTlsConfig>, Error> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        tls.config(host_of(addr), handshake_timeout)
            .map(Some)
            .map_err(|message| Error::InvalidEndpoint {
                endpoint: addr.to_string(),
                message: format!("cannot set up TLS: {message}"),
            })
    }
}

/// `Bearer <token>` as a header value, marked sensitive (never logged).
pub(crate) fn auth_header(token: &str) -> Result<HeaderValue, Error> {
    let bad = |message: &str| Error::InvalidArgument {
        field: "token".into(),
        reason: ErrorReason::InvalidArgument,
        message: message.into(),
    };
    if token.is_empty() {
        return Err(bad("the token is empty"));
    }
    if token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(bad(
            "the token has characters other than printable ASCII (spaces, control \
             characters or non-ASCII): was it copied whole?",
        ));
    }
    let mut value = HeaderValue::from_str(&format!("{BEARER_PREFIX}{token}"))
        .map_err(|_| bad("the token is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// What a failed call's error says about TLS, if TLS failed: the rustls
/// error (a certificate that does not verify, a handshake that failed, a
/// plaintext server answering a TLS client) or tonic's own TLS errors.
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        // io::Error hides its inner error from source(): look inside.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r.to_string());
        }
        // h2 keeps only the text of an io::Error: the node's fatal alert
        // (a client certificate it refused, read after a TLS 1.3 client
        // took the handshake for done) arrives as words.
        let text = e.to_string();
        if let Some(at) = text.find(ALERT_RECEIVED) {
            // The words may sit inside a Debug rendering: end at its quote.
            let alert = &text[at..];
            let end = alert.find('"').unwrap_or(alert.len());
            return Some(alert[..end].to_string());
        }
        source = e.source();
    }
    None
}

/// How rustls words a fatal alert from the other side.
pub(crate) const ALERT_RECEIVED: &str = "received fatal alert";

/// Whether a plaintext call got bytes that are not HTTP/2 back, as from a
/// node that serves TLS (its alert, read as a frame header, announces a
/// frame larger than HTTP/2 allows) or from an HTTP/1 server.
pub(crate) fn not_plaintext_http2(status: &tonic::Status) -> bool {
    let says = |text: &str| text.contains("frame with invalid size");
    if says(status.message()) {
        return true;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if says(&e.to_string()) {
            return true;
        }
        source = e.source();
    }
    false
}

/// A status's message and the causes below it, on one line.
pub(crate) fn status_text(status: &tonic::Status) -> String {
    let mut out = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// The hint of [`not_plaintext_http2`].
pub(crate) const PLAINTEXT_TO_TLS_HINT: &str = "the node did not answer in plaintext HTTP/2: if \
    it serves TLS, use https:// endpoints or give its CA (--ca, RAFTLOCK_CA, ClientOptions::tls)";

/// What to check when TLS failed with `message`.
pub(crate) fn tls_hint(message: &str) -> &'static str {
    if message.contains("UnknownIssuer") || message.contains("BadSignature") {
        "the node's certificate is not signed by the trusted CA: give the CA that signed \
         the nodes' certificates (--ca, RAFTLOCK_CA, TlsOptions::with_ca_file)"
    } else if message.contains("NotValidForName") {
        "the node's certificate does not name the host it was reached at: connect by a \
         name or address in its certificate, or make it again with that --host"
    } else if message.contains("Expired") || message.contains("NotValidYet") {
        "the certificate is outside its validity period (check the clocks, or renew it)"
    } else if message.contains("corrupt message") || message.contains("InvalidContentType") {
        "the node does not speak TLS: is it serving plaintext (--insecure)? Use http:// \
         and no --ca/--cert, or enable TLS on the node"
    } else if message.contains(ALERT_RECEIVED)
        && ["UnknownCA", "BadCertificate", "DecryptError"]
            .iter()
            .any(|a| message.contains(a))
    {
        "the node refused the client certificate: use one signed by the cluster's CA \
         (--cert/--key from `raftlock certs client`)"
    } else if message.contains("CertificateRequired") || message.contains("certificate required") {
        "the node requires a client certificate: pass --cert and --key (or a token)"
    } else {
        "check the CA (--ca) and the client certificate (--cert/--key)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fatal_alert_known_only_as_words_is_a_tls_failure_naming_the_client_certificate() {
        // As h2 passes on rustls's error: the text of an io::Error, inside
        // a Debug rendering.
        let e = std::io::Error::other(
            "Custom { kind: InvalidData, error: \"received fatal alert: DecryptError\" }",
        );
        let message = tls_failure(&e).expect("a TLS failure");
        assert_eq!(message, "received fatal alert: DecryptError");
        assert!(tls_hint(&message).contains("refused the client certificate"));
        assert_eq!(
            tls_failure(&std::io::Error::other("connection reset")),
            None
        );
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn https_or_tls_options_mean_tls_for_every_endpoint() {
        let plain = Security::decide(&strings(&["a:1", "http://b:2"]), None, None).expect("plain");
        assert!(plain.tls.is_none());
        let https = Security::decide(&strings(&["https://a:1", "b:2"]), None, None).expect("https");
        assert_eq!(https.tls, Some(TlsOptions::new()), "system roots");
        let ca = TlsOptions::new().with_ca_pem("x");
        let bare = Security::decide(&strings(&["a:1"]), Some(&ca), None).expect("bare");
        assert_eq!(bare.tls, Some(ca));
    }

    #[test]
    fn http_with_tls_is_refused_as_a_mistake() {
        let e = Security::decide(&strings(&["https://a:1", "http://b:2"]), None, None)
            .err()
            .expect("refused");
        assert!(
            matches!(&e, Error::InvalidEndpoint { endpoint, .. } if endpoint == "http://b:2"),
            "{e:?}"
        );
        let tls = TlsOptions::new();
        let e = Security::decide(&strings(&["HTTP://a:1"]), Some(&tls), None)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("TLS is configured"), "{e}");
        assert!(scheme_of("grpc://a:1").is_err());
    }

    #[test]
    fn the_server_name_is_the_endpoint_host() {
        assert_eq!(host_of("node1.example:7401"), "node1.example");
        assert_eq!(host_of("127.0.0.1:7401"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7401"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn a_token_must_be_a_header_value_and_is_sent_as_bearer() {
        let v = auth_header("rlt_abc-_9").expect("ok");
        assert_eq!(v.to_str().ok(), Some("Bearer rlt_abc-_9"));
        assert!(v.is_sensitive());
        for bad in ["", "a b", "line\nbreak", "tök", " lead"] {
            let e = auth_header(bad).expect_err("refused");
            assert!(
                matches!(&e, Error::InvalidArgument { field, .. } if field == "token"),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn tls_files_that_are_missing_or_not_pem_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("nope.crt");
        let e = TlsOptions::new()
            .with_ca_file(&missing)
            .expect_err("missing");
        assert!(e.to_string().contains("nope.crt"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let e = TlsOptions::new().with_ca_file(&junk).expect_err("junk");
        assert!(matches!(e, TlsFileError::NotPem { .. }), "{e:?}");
        assert!(e.to_string().contains("junk.pem"), "{e}");
        let e = TlsOptions::from_files(None, Some(&junk), None).expect_err("no key");
        assert!(matches!(e, TlsFileError::Incomplete(_)), "{e:?}");
        let e = TlsOptions::from_files(None, None, Some(&junk)).expect_err("no cert");
        assert!(matches!(e, TlsFileError::Incomplete(_)), "{e:?}");
    }
}
