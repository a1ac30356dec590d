//! `raftlock certs`: the files it writes are what a TLS peer accepts. Each
//! certificate is read back with x509-parser (names, usages) and checked
//! by rustls's own verifiers built from the CA it wrote.

use std::path::Path;
use std::sync::Arc;

use raftlock_proto::auth::{CLIENT_OU, NODE_OU, TOKEN_PREFIX, token_sha256};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::common::{CLI_BOUND, raftlock, run_bounded};

/// Runs `raftlock certs ARGS`; returns (exit code, stdout, stderr).
fn certs(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = raftlock();
    cmd.arg("certs").args(args);
    let (status, out, err) = run_bounded(cmd, dir, CLI_BOUND);
    (status.code().unwrap_or(-1), out, err)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = certs(dir, args);
    assert_eq!(code, 0, "certs {args:?}: {err}");
    out
}

fn der_of(path: &Path) -> CertificateDer<'static> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    CertificateDer::from(pem.contents)
}

/// (common name, organizational unit, DNS names, IP addresses as text,
/// extended key usage (server, client), is CA, issuer text).
struct Seen {
    cn: String,
    ou: Option<String>,
    dns: Vec<String>,
    ips: Vec<String>,
    server_auth: bool,
    client_auth: bool,
    is_ca: bool,
    issuer: String,
    subject: String,
}

fn seen(der: &CertificateDer<'_>) -> Seen {
    let (_, cert) = X509Certificate::from_der(der).expect("X.509");
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    let mut s = Seen {
        cn: first(&mut subject.iter_common_name()).expect("a CN"),
        ou: first(&mut subject.iter_organizational_unit()),
        dns: Vec::new(),
        ips: Vec::new(),
        server_auth: false,
        client_auth: false,
        is_ca: cert.is_ca(),
        issuer: cert.issuer().to_string(),
        subject: subject.to_string(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => s.dns.push(d.to_string()),
                        GeneralName::IPAddress(bytes) => s.ips.push(match bytes.len() {
                            4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("v4"))
                                .to_string(),
                            16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("v6"))
                                .to_string(),
                            n => panic!("IP SAN of {n} bytes"),
                        }),
                        _ => {}
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                s.server_auth = eku.server_auth;
                s.client_auth = eku.client_auth;
            }
            _ => {}
        }
    }
    s
}

fn roots(ca: &CertificateDer<'static>) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("CA accepted as a root");
    Arc::new(roots)
}

/// Whether a TLS client trusting `ca` accepts `cert` from a server it
/// reached as `host`.
fn server_accepted(
    ca: &CertificateDer<'static>,
    cert: &CertificateDer<'_>,
    host: &str,
) -> Result<(), rustls::Error> {
    let verifier = rustls::client::WebPkiServerVerifier::builder(roots(ca))
        .build()
        .expect("server verifier");
    let name = ServerName::try_from(host.to_string()).expect("server name");
    verifier
        .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map(drop)
}

/// Whether a TLS server trusting `ca` for clients accepts `cert`.
fn client_accepted(
    ca: &CertificateDer<'static>,
    cert: &CertificateDer<'_>,
) -> Result<(), rustls::Error> {
    let verifier = rustls::server::WebPkiClientVerifier::builder(roots(ca))
        .build()
        .expect("client verifier");
    verifier
        .verify_client_cert(cert, &[], UnixTime::now())
        .map(drop)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_ca_signs_node_certificates_that_tls_accepts_for_their_hosts_both_ways() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("certs");
    let d = dir.to_str().expect("utf-8 path");
    ok(tmp.path(), &["ca", "--dir", d]);
    ok(
        tmp.path(),
        &[
            "node",
            "--id",
            "2",
            "--host",
            "127.0.0.1",
            "--host",
            "node2.example,::1",
            "--dir",
            d,
        ],
    );

    let ca = der_of(&dir.join("ca.crt"));
    let ca_seen = seen(&ca);
    assert_eq!(ca_seen.cn, "raftlock CA");
    assert!(ca_seen.is_ca);
    assert_eq!(ca_seen.issuer, ca_seen.subject, "self-signed");

    let node = der_of(&dir.join("node-2.crt"));
    let n = seen(&node);
    assert_eq!(n.cn, "node-2");
    assert_eq!(n.ou.as_deref(), Some(NODE_OU));
    assert_eq!(n.dns, ["node2.example"]);
    assert_eq!(n.ips, ["127.0.0.1", "::1"]);
    assert!(n.server_auth && n.client_auth, "nodes serve and dial peers");
    assert!(!n.is_ca);
    assert_eq!(n.issuer, ca_seen.subject);

    // What a client and a peer would check, by rustls itself.
    server_accepted(&ca, &node, "127.0.0.1").expect("valid for 127.0.0.1");
    server_accepted(&ca, &node, "node2.example").expect("valid for its DNS name");
    server_accepted(&ca, &node, "::1").expect("valid for ::1");
    assert!(
        server_accepted(&ca, &node, "node3.example").is_err(),
        "not for other hosts"
    );
    client_accepted(&ca, &node).expect("accepted as a peer's client certificate");

    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("node-2.key")), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn a_node_certificate_without_hosts_names_localhost_and_the_loopback_addresses() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().to_str().expect("utf-8 path");
    ok(tmp.path(), &["ca", "--dir", d]);
    ok(tmp.path(), &["node", "--id", "1", "--dir", d]);
    let n = seen(&der_of(&tmp.path().join("node-1.crt")));
    assert_eq!(n.dns, ["localhost"]);
    assert_eq!(n.ips, ["127.0.0.1", "::1"]);
}

#[test]
fn a_client_certificate_is_only_for_clients_and_only_from_its_ca() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().to_str().expect("utf-8 path");
    ok(tmp.path(), &["ca", "--dir", d]);
    let out = ok(
        tmp.path(),
        &["client", "--name", "worker", "--dir", d, "--json"],
    );
    let printed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        printed["cert"].as_str().map(Path::new),
        Some(tmp.path().join("client-worker.crt").as_path())
    );

    let ca = der_of(&tmp.path().join("ca.crt"));
    let client = der_of(&tmp.path().join("client-worker.crt"));
    let c = seen(&client);
    assert_eq!(c.cn, "worker");
    assert_eq!(c.ou.as_deref(), Some(CLIENT_OU));
    assert!(c.client_auth && !c.server_auth);
    assert!(c.dns.is_empty() && c.ips.is_empty());
    client_accepted(&ca, &client).expect("accepted as a client");
    assert!(
        server_accepted(&ca, &client, "worker").is_err(),
        "a client certificate cannot serve"
    );
    #[cfg(unix)]
    assert_eq!(mode(&tmp.path().join("client-worker.key")), 0o600);

    // Another CA's servers and peers do not accept it.
    let other = tmp.path().join("other");
    ok(tmp.path(), &["ca", "--dir", other.to_str().expect("utf-8")]);
    let other_ca = der_of(&other.join("ca.crt"));
    assert!(client_accepted(&other_ca, &client).is_err());
}

#[test]
fn nothing_is_overwritten_without_force() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().to_str().expect("utf-8 path");
    ok(tmp.path(), &["ca", "--dir", d]);
    let before = std::fs::read(tmp.path().join("ca.key")).expect("key");
    let (code, _, err) = certs(tmp.path(), &["ca", "--dir", d]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ca.crt exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("ca.key")).expect("key"),
        before
    );

    ok(tmp.path(), &["client", "--name", "a", "--dir", d]);
    let (code, _, err) = certs(tmp.path(), &["client", "--name", "a", "--dir", d]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("client-a.crt exists"), "{err}");

    // --force replaces, with a new key.
    ok(tmp.path(), &["ca", "--dir", d, "--force"]);
    assert_ne!(
        std::fs::read(tmp.path().join("ca.key")).expect("key"),
        before
    );
}

#[test]
fn bad_input_is_a_usage_error_that_says_what_to_do() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().to_str().expect("utf-8 path");
    // No CA yet.
    let (code, _, err) = certs(tmp.path(), &["node", "--id", "1", "--dir", d]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ca.crt") && err.contains("raftlock certs ca"),
        "{err}"
    );
    assert!(!tmp.path().join("node-1.key").exists());

    ok(tmp.path(), &["ca", "--dir", d]);
    for (args, says) in [
        (vec!["node", "--id", "0"], "--id 0"),
        (
            vec!["node", "--id", "1", "--host", "h:7401"],
            "neither an IP address nor a DNS name",
        ),
        (vec!["client", "--name", "node-1"], "reserved"),
        (vec!["client", "--name", "a b"], "letters, digits"),
        (vec!["client", "--name", "w", "--days", "0"], "--days"),
    ] {
        let mut all = args.clone();
        all.extend(["--dir", d]);
        let (code, _, err) = certs(tmp.path(), &all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }

    // A CA key that is not the certificate's key.
    let other = tmp.path().join("other");
    ok(tmp.path(), &["ca", "--dir", other.to_str().expect("utf-8")]);
    std::fs::copy(other.join("ca.key"), tmp.path().join("ca.key")).expect("copy");
    let (code, _, err) = certs(tmp.path(), &["client", "--name", "w", "--dir", d]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not the key of"), "{err}");
}

#[test]
fn a_token_comes_with_its_digest_and_the_auth_file_entry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = ok(tmp.path(), &["token", "--name", "ci", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let token = v["token"].as_str().expect("token");
    assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 43);
    let digest = token_sha256(token);
    assert_eq!(v["token_sha256"].as_str(), Some(digest.as_str()));
    let snippet = v["identity_toml"].as_str().expect("snippet");
    assert!(
        snippet.contains(&format!("token_sha256 = \"{digest}\"")),
        "{snippet}"
    );
    assert!(snippet.contains("name = \"ci\"") && snippet.contains("roles = []"));
    assert!(
        !snippet.contains(token),
        "the auth file never holds the token"
    );

    let text = ok(tmp.path(), &["token"]);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .expect("a token line")
        .trim();
    assert!(
        text.contains(&format!("token_sha256 = \"{}\"", token_sha256(line))),
        "{text}"
    );
    assert_ne!(line, token, "a new token each time");
}
