//! Certificates for tests, made the way `raftlock certs` makes them
//! (docs/security.md): a CA; node certificates with common name
//! `node-<id>`, organizational unit `raftlock-node`, 127.0.0.1 and
//! localhost as names, for server and client authentication; client
//! certificates with the identity as common name and `raftlock-client` as
//! organizational unit. Written as PEM files into a directory.

use std::path::{Path, PathBuf};

use raftlock_proto::auth::{CLIENT_OU, NODE_OU, node_common_name};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA that signs certificates into `dir`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    /// `dir/ca.crt`.
    pub cert: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/ca.crt`
    /// (`dir/<prefix>ca.crt` for a second CA in the same directory).
    pub fn new(dir: &Path, prefix: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{prefix}raftlock test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let path = dir.join(format!("{prefix}ca.crt"));
        std::fs::write(&path, cert.pem()).expect("write the CA");
        TestCa {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            cert: path,
        }
    }

    fn sign(&self, file: &str, cn: &str, ou: &str, eku: Vec<ExtendedKeyUsagePurpose>) -> CertFiles {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
        params.extended_key_usages = eku;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }

    /// Node `id`'s certificate, `node-<id>.crt/.key` (with `suffix` before
    /// the extension, to keep several).
    pub fn node(&self, id: u64, suffix: &str) -> CertFiles {
        self.sign(
            &format!("node-{id}{suffix}"),
            &node_common_name(id),
            NODE_OU,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate for identity `name`, `client-<name>.crt/.key`.
    pub fn client(&self, name: &str) -> CertFiles {
        self.sign(
            &format!("client-{name}"),
            name,
            CLIENT_OU,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }
}
