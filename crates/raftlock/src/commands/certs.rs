//! `raftlock certs ca|node|client|token`: the certificates and tokens of a
//! secured cluster, with no OpenSSL (docs/security-certs.md).
//!
//! - `ca`: a self-signed CA (`ca.crt`, `ca.key`), common name "raftlock CA",
//!   allowed to sign certificates and CRLs; 10 years by default.
//! - `node --id N --host H...`: `node-N.crt`/`.key`, common name `node-N`
//!   and OU `raftlock-node` (raftlock_proto::auth), the hosts as subject
//!   alternative names, for serving and for dialing other nodes.
//! - `client --name NAME`: `client-NAME.crt`/`.key`, common name NAME and
//!   OU `raftlock-client`, for clients only.
//! - `token`: a random bearer token and its SHA-256 digest, the only form
//!   an auth file keeps.
//!
//! Keys are ECDSA P-256. Nothing is overwritten without --force; every file
//! is written to a temporary name, synced, then moved into place and the
//! directory synced, keys with mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use raftlock_proto::auth::{
    CLIENT_OU, NODE_OU, TOKEN_PREFIX, node_common_name, token_sha256, valid_client_name,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::Serialize;
use time::{Duration as TimeDuration, OffsetDateTime};

use crate::Failure;
use crate::output;

/// The CA certificate's common name.
pub const CA_COMMON_NAME: &str = "raftlock CA";
/// Files of the CA in `--dir`.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
/// Default validity of a CA and of a node's or client's certificate.
const CA_DAYS: u32 = 3650;
const LEAF_DAYS: u32 = 365;
/// Longest validity accepted for --days (100 years): rcgen and most TLS
/// stacks stop at year 9999, and a typo should not make a forever cert.
const MAX_DAYS: u32 = 36_500;
/// How far back a new certificate's validity starts, so a verifier whose
/// clock is a little behind ours accepts it at once.
const BACKDATE_MINUTES: i64 = 5;
/// The hosts of a node certificate when --host is not given.
const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Random bytes of a token (256 bits), before base64url (43 characters).
const TOKEN_BYTES: usize = 32;

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// Where and how certificates are written.
#[derive(Debug, Clone, Args)]
pub struct OutArgs {
    /// Directory of the CA and the certificates (created if missing, mode 0700).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Days the certificate is valid (default: 3650 for a CA, 365 otherwise).
    #[arg(long, value_name = "N")]
    pub days: Option<u32>,
    /// Replace files that exist (by default nothing is ever overwritten).
    #[arg(long)]
    pub force: bool,
    /// Print JSON (the files written).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA: DIR/ca.crt and DIR/ca.key (keep ca.key private).
    Ca(OutArgs),
    /// Create node N's certificate, signed by DIR/ca.crt and DIR/ca.key:
    /// DIR/node-N.crt and DIR/node-N.key, for serving clients and peers and
    /// for dialing peers.
    Node {
        /// The node's id (as given to `raftlock serve --id`).
        #[arg(long)]
        id: u64,
        /// A name or IP address clients and peers reach the node by;
        /// repeat or separate with commas (default: localhost, 127.0.0.1, ::1).
        #[arg(long = "host", value_name = "HOST", value_delimiter = ',')]
        hosts: Vec<String>,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Create a client certificate for identity NAME, signed by the CA in
    /// DIR: DIR/client-NAME.crt and DIR/client-NAME.key.
    Client {
        /// The identity (the certificate's common name): letters, digits
        /// and -_.@: (not node-...).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Print a new random bearer token, its SHA-256 digest and the
    /// [[identity]] entry of the auth file that admits it. The token
    /// itself is shown once and stored nowhere.
    Token {
        /// The identity's name in the auth file.
        #[arg(long, default_value = "token-user")]
        name: String,
        /// Print JSON: token, token_sha256, name, identity_toml.
        #[arg(long)]
        json: bool,
    },
}

/// Why a certificate could not be made; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0}")]
    Usage(String),
    #[error("{} exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error(
        "cannot read the CA's {what} {}: {source}; create a CA first with `raftlock certs ca --dir {}`",
        path.display(),
        dir.display()
    )]
    MissingCa {
        what: &'static str,
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    BadCa { path: PathBuf, message: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("no random bytes from the operating system: {0}")]
    Random(getrandom::Error),
}

impl From<CertsError> for Failure {
    fn from(e: CertsError) -> Failure {
        match e {
            CertsError::Usage(_) | CertsError::Exists(_) => Failure::Usage(e.to_string()),
            CertsError::MissingCa { .. } | CertsError::BadCa { .. } => {
                Failure::Usage(e.to_string())
            }
            _ => Failure::Runtime(e.to_string()),
        }
    }
}

/// What `--json` prints for a certificate.
#[derive(Debug, Serialize)]
struct Written {
    cert: PathBuf,
    key: PathBuf,
    subject: String,
    not_after: String,
}

/// What `certs token --json` prints.
#[derive(Debug, Serialize)]
struct TokenOut {
    token: String,
    token_sha256: String,
    name: String,
    identity_toml: String,
}

pub fn run(args: CertsArgs) -> Result<(), Failure> {
    match args.command {
        CertsCommand::Ca(out) => {
            let written = make_ca(&out)?;
            print_written(&written, &out, "CA")
        }
        CertsCommand::Node { id, hosts, out } => {
            let written = make_node(id, &hosts, &out)?;
            print_written(&written, &out, "node certificate")
        }
        CertsCommand::Client { name, out } => {
            let written = make_client(&name, &out)?;
            print_written(&written, &out, "client certificate")
        }
        CertsCommand::Token { name, json } => print_token(&name, json),
    }
}

fn print_written(w: &Written, out: &OutArgs, what: &str) -> Result<(), Failure> {
    if out.json {
        return output::print_json(w, false);
    }
    output::write_line(&format!(
        "wrote {what} {} ({}, valid until {})\n      key {} (mode 0600; keep it private)",
        w.cert.display(),
        w.subject,
        w.not_after,
        w.key.display()
    ))
    .map(drop)
}

/// The certificates of a local cluster of `nodes` nodes and one client
/// identity `client`, in `dir` (for `raftlock dev --secure`): made when
/// missing, kept when present (a restarted dev cluster keeps its CA).
pub(crate) struct LocalCerts {
    pub(crate) ca: PathBuf,
    /// Node id → (certificate, key).
    pub(crate) nodes: Vec<(PathBuf, PathBuf)>,
    pub(crate) client: (PathBuf, PathBuf),
}

pub(crate) fn local_cluster_certs(
    dir: &Path,
    nodes: u64,
    client: &str,
) -> Result<LocalCerts, Failure> {
    let out = OutArgs {
        dir: dir.to_path_buf(),
        days: None,
        force: false,
        json: false,
    };
    let fail = |e: CertsError| Failure::Runtime(format!("certificates in {}: {e}", dir.display()));
    let exists = |p: &Path| p.exists();
    let ca = dir.join(CA_CERT_FILE);
    if !exists(&ca) {
        make_ca(&out).map_err(fail)?;
    }
    let mut made = Vec::new();
    for id in 1..=nodes {
        let cn = node_common_name(id);
        let (cert, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
        if !exists(&cert) {
            make_node(id, &[], &out).map_err(fail)?;
        }
        made.push((cert, key));
    }
    let (cert, key) = (
        dir.join(format!("client-{client}.crt")),
        dir.join(format!("client-{client}.key")),
    );
    if !exists(&cert) {
        make_client(client, &out).map_err(fail)?;
    }
    Ok(LocalCerts {
        ca,
        nodes: made,
        client: (cert, key),
    })
}

/// `raftlock certs ca`.
fn make_ca(out: &OutArgs) -> Result<Written, CertsError> {
    let days = days(out.days, CA_DAYS)?;
    let cert_path = out.dir.join(CA_CERT_FILE);
    let key_path = out.dir.join(CA_KEY_FILE);
    refuse_existing(&[&cert_path, &key_path], out.force)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let not_after = validity(&mut params, days)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_pair(
        out,
        &cert_path,
        &cert.pem(),
        &key_path,
        &key.serialize_pem(),
    )?;
    Ok(Written {
        cert: cert_path,
        key: key_path,
        subject: format!("CN={CA_COMMON_NAME}"),
        not_after,
    })
}

/// `raftlock certs node`.
fn make_node(id: u64, hosts: &[String], out: &OutArgs) -> Result<Written, CertsError> {
    if id == 0 {
        return Err(CertsError::Usage(
            "--id 0 is not a node id; node ids start at 1".into(),
        ));
    }
    let days = days(out.days, LEAF_DAYS)?;
    let cn = node_common_name(id);
    let sans = subject_alt_names(hosts)?;
    let cert_path = out.dir.join(format!("{cn}.crt"));
    let key_path = out.dir.join(format!("{cn}.key"));
    refuse_existing(&[&cert_path, &key_path], out.force)?;
    let issuer_parts = read_ca(&out.dir)?;
    let mut params = leaf_params(&cn, NODE_OU)?;
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let not_after = validity(&mut params, days)?;
    sign_and_write(params, &issuer_parts, out, &cert_path, &key_path)?;
    Ok(Written {
        cert: cert_path,
        key: key_path,
        subject: format!("CN={cn}, OU={NODE_OU}"),
        not_after,
    })
}

/// `raftlock certs client`.
fn make_client(name: &str, out: &OutArgs) -> Result<Written, CertsError> {
    valid_client_name(name).map_err(|e| CertsError::Usage(format!("--name {name:?}: {e}")))?;
    let days = days(out.days, LEAF_DAYS)?;
    let cert_path = out.dir.join(format!("client-{name}.crt"));
    let key_path = out.dir.join(format!("client-{name}.key"));
    refuse_existing(&[&cert_path, &key_path], out.force)?;
    let issuer_parts = read_ca(&out.dir)?;
    let mut params = leaf_params(name, CLIENT_OU)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let not_after = validity(&mut params, days)?;
    sign_and_write(params, &issuer_parts, out, &cert_path, &key_path)?;
    Ok(Written {
        cert: cert_path,
        key: key_path,
        subject: format!("CN={name}, OU={CLIENT_OU}"),
        not_after,
    })
}

/// The CA of `dir`: its certificate's PEM and its key, checked to match.
struct CaParts {
    cert_pem: String,
    key: KeyPair,
}

fn read_ca(dir: &Path) -> Result<CaParts, CertsError> {
    let read = |what: &'static str, name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(|source| CertsError::MissingCa {
            what,
            path: path.clone(),
            dir: dir.to_path_buf(),
            source,
        })
    };
    let cert_pem = read("certificate", CA_CERT_FILE)?;
    let key_pem = read("key", CA_KEY_FILE)?;
    let key_path = dir.join(CA_KEY_FILE);
    let cert_path = dir.join(CA_CERT_FILE);
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CertsError::BadCa {
        path: key_path.clone(),
        message: format!("not a PEM private key rcgen can sign with: {e}"),
    })?;
    let bad_cert = |message: String| CertsError::BadCa {
        path: cert_path.clone(),
        message,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| bad_cert(format!("not a PEM certificate: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad_cert(format!("not an X.509 certificate: {e}")))?;
    if !cert.is_ca() {
        return Err(bad_cert(
            "is not a CA certificate (basic constraints)".into(),
        ));
    }
    let cert_key = cert.public_key().subject_public_key.data.as_ref();
    if cert_key != rcgen::PublicKeyData::der_bytes(&key) {
        return Err(CertsError::BadCa {
            path: key_path,
            message: format!("is not the key of {}", cert_path.display()),
        });
    }
    Ok(CaParts { cert_pem, key })
}

/// A leaf certificate's parameters: subject CN and OU, a digital-signature
/// key usage, the CA's key identifier, a random serial.
fn leaf_params(cn: &str, ou: &str) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, ou);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn sign_and_write(
    params: CertificateParams,
    ca: &CaParts,
    out: &OutArgs,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), CertsError> {
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, &ca.key).map_err(|e| CertsError::BadCa {
            path: out.dir.join(CA_CERT_FILE),
            message: format!("cannot sign with it: {e}"),
        })?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(out, cert_path, &cert.pem(), key_path, &key.serialize_pem())
}

/// 20 random bytes with the top bit clear: a positive serial number.
fn random_serial() -> Result<SerialNumber, CertsError> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(CertsError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn days(given: Option<u32>, default: u32) -> Result<u32, CertsError> {
    match given.unwrap_or(default) {
        0 => Err(CertsError::Usage("--days must be at least 1".into())),
        d if d > MAX_DAYS => Err(CertsError::Usage(format!(
            "--days {d} is more than {MAX_DAYS} (100 years)"
        ))),
        d => Ok(d),
    }
}

/// Sets not_before (a few minutes ago) and not_after (`days` from now);
/// returns not_after as text.
fn validity(params: &mut CertificateParams, days: u32) -> Result<String, CertsError> {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - TimeDuration::minutes(BACKDATE_MINUTES);
    params.not_after = now + TimeDuration::days(i64::from(days));
    let d = params.not_after;
    Ok(format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute()
    ))
}

/// The subject alternative names of a node: IP addresses as IP SANs, the
/// rest as DNS names (checked), the defaults when none is given.
fn subject_alt_names(hosts: &[String]) -> Result<Vec<SanType>, CertsError> {
    let given: Vec<&str> = hosts
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .collect();
    let hosts: Vec<&str> = if given.is_empty() {
        DEFAULT_HOSTS.to_vec()
    } else {
        given
    };
    let mut sans = Vec::with_capacity(hosts.len());
    for host in hosts {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let san = if let Ok(ip) = bare.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else {
            if rustls_pki_types::DnsName::try_from(host).is_err() {
                return Err(CertsError::Usage(format!(
                    "--host {host:?} is neither an IP address nor a DNS name (give hosts \
                     without ports or schemes, e.g. --host node1.example.com --host 10.0.0.1)"
                )));
            }
            let name = rcgen::string::Ia5String::try_from(host.to_string()).map_err(|e| {
                CertsError::Usage(format!("--host {host:?} is not a DNS name: {e}"))
            })?;
            SanType::DnsName(name)
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn refuse_existing(paths: &[&Path], force: bool) -> Result<(), CertsError> {
    if force {
        return Ok(());
    }
    for p in paths {
        if p.symlink_metadata().is_ok() {
            return Err(CertsError::Exists(p.to_path_buf()));
        }
    }
    Ok(())
}

/// Writes the key (0600) then the certificate (0644), each atomically.
fn write_pair(
    out: &OutArgs,
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key_pem: &str,
) -> Result<(), CertsError> {
    create_dir(&out.dir)?;
    write_atomic(key_path, key_pem.as_bytes(), 0o600, out.force)?;
    write_atomic(cert_path, cert_pem.as_bytes(), 0o644, out.force)?;
    sync_dir(&out.dir)
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, syncs it,
/// and moves it into place: with `replace`, over what is there (rename);
/// without, only if nothing is (a hard link fails on an existing name, so
/// a file that appeared meanwhile is not replaced either).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut file: File = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        if replace {
            fs::rename(&tmp, path)
        } else {
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !replace => {
            Err(CertsError::Exists(path.to_path_buf()))
        }
        r => r.map_err(err),
    }
}

fn sync_dir(dir: &Path) -> Result<(), CertsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CertsError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// A new token: [`TOKEN_PREFIX`] and 32 random bytes in base64url without
/// padding (43 characters), e.g. `rlt_3q2-7w...`.
pub fn new_token() -> Result<String, CertsError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(CertsError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{}", base64url(&bytes)))
}

/// Base64url (RFC 4648 §5) without padding.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

/// The auth file's entry for a token: its digest, never the token.
fn identity_toml(digest: &str, name: &str) -> String {
    format!(
        "[[identity]]\ntoken_sha256 = \"{digest}\"\nname = \"{}\"\nroles = []",
        toml_escape(name)
    )
}

fn toml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

fn print_token(name: &str, json: bool) -> Result<(), Failure> {
    if name.trim().is_empty() {
        return Err(Failure::Usage("--name must not be empty".into()));
    }
    let token = new_token()?;
    let digest = token_sha256(&token);
    let snippet = identity_toml(&digest, name);
    if json {
        return output::print_json(
            &TokenOut {
                token,
                token_sha256: digest,
                name: name.to_string(),
                identity_toml: snippet,
            },
            false,
        );
    }
    output::write_line(&format!(
        "token:        {token}\ntoken_sha256: {digest}\n\n\
         Give the token to the client (RAFTLOCK_TOKEN or --auth-token); it is shown only now.\n\
         Add this to the auth file (the digest, never the token), with the roles it needs:\n\n\
         {snippet}"
    ))
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        // RFC 4648 §10, in the URL-safe alphabet and without padding.
        for (input, expected) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), expected, "{input}");
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn tokens_are_prefixed_43_url_safe_characters_and_differ() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        let body = a.strip_prefix(TOKEN_PREFIX).expect("prefix");
        assert_eq!(body.len(), 43);
        assert!(
            body.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn identity_snippet_is_toml_with_the_digest() {
        let snippet = identity_toml("ab12", "ci \"bot\"");
        let doc: toml::Value = toml::from_str(&snippet).expect("toml");
        let identity = &doc["identity"][0];
        assert_eq!(identity["token_sha256"].as_str(), Some("ab12"));
        assert_eq!(identity["name"].as_str(), Some("ci \"bot\""));
        assert_eq!(identity["roles"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn hosts_become_ip_and_dns_names_and_bad_ones_are_refused() {
        let sans = subject_alt_names(&["10.0.0.1".into(), "[::1]".into(), "db.example".into()])
            .expect("sans");
        assert_eq!(sans.len(), 3);
        assert!(matches!(sans[0], SanType::IpAddress(_)));
        assert!(matches!(sans[1], SanType::IpAddress(_)));
        assert!(matches!(sans[2], SanType::DnsName(_)));
        assert_eq!(subject_alt_names(&[]).expect("defaults").len(), 3);
        for bad in ["host:7401", "https://x", "a b"] {
            assert!(subject_alt_names(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
