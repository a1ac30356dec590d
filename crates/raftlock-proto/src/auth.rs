//! The names of the security model at the edges (docs/security.md), used by
//! the node, the client, the CLI's `certs` command and the tests alike, so
//! nothing else spells them.
//!
//! - A node's certificate names its node: common name `node-<id>`, with the
//!   organizational unit [`NODE_OU`]. A peer is accepted only with such a
//!   certificate from the cluster's CA, and only as the node it names.
//! - A client's certificate names an identity: its common name, with the
//!   organizational unit [`CLIENT_OU`]. Names of the form `node-<id>` are
//!   reserved for nodes.
//! - A bearer token is sent as `authorization: Bearer <token>`; nodes keep
//!   only its SHA-256 digest ([`token_sha256`]).

use sha2::{Digest, Sha256};

/// The gRPC metadata key of a bearer token.
pub const AUTHORIZATION_KEY: &str = "authorization";
/// What precedes the token in [`AUTHORIZATION_KEY`]'s value.
pub const BEARER_PREFIX: &str = "Bearer ";
/// The organizational unit of node certificates.
pub const NODE_OU: &str = "raftlock-node";
/// The organizational unit of client certificates.
pub const CLIENT_OU: &str = "raftlock-client";
/// What every token `raftlock certs token` makes starts with, so a leaked
/// one is recognizable (as GitHub's `ghp_` tokens are).
pub const TOKEN_PREFIX: &str = "rlt_";

/// Environment variables of the CLI and the clients.
pub mod env {
    /// PEM file of the CA that signed the nodes' certificates.
    pub const CA: &str = "RAFTLOCK_CA";
    /// PEM file of the client's certificate.
    pub const CERT: &str = "RAFTLOCK_CERT";
    /// PEM file of the client certificate's private key.
    pub const KEY: &str = "RAFTLOCK_KEY";
    /// A bearer token.
    pub const TOKEN: &str = "RAFTLOCK_TOKEN";
}

/// The common name of node `id`'s certificate.
pub fn node_common_name(id: u64) -> String {
    format!("node-{id}")
}

/// The node id a certificate's common name names, if it is a node's
/// (`node-<id>`, id ≥ 1, no leading zeros or signs).
pub fn node_id_of_common_name(cn: &str) -> Option<u64> {
    let digits = cn.strip_prefix("node-")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` may name a client identity: 1 to 128 bytes of letters,
/// digits and `-_.@:`, not a node's name.
pub fn valid_client_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("a client name has 1 to 128 characters".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.@:".contains(*c)))
    {
        return Err(format!(
            "a client name has letters, digits and -_.@: only, not {bad:?}"
        ));
    }
    if name.starts_with("node-") {
        return Err("names starting with node- are reserved for node certificates".into());
    }
    Ok(())
}

/// The lowercase hex SHA-256 digest of a token, as auth files store it.
pub fn token_sha256(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip_and_reject_lookalikes() {
        assert_eq!(node_id_of_common_name(&node_common_name(3)), Some(3));
        for bad in [
            "node-", "node-0", "node-03", "node--1", "node-1x", "Node-1", "node-+1",
        ] {
            assert_eq!(node_id_of_common_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn client_names_exclude_node_names_and_odd_characters() {
        assert!(valid_client_name("worker").is_ok());
        assert!(valid_client_name("ci@build-7").is_ok());
        assert!(valid_client_name("node-2").is_err());
        assert!(valid_client_name("").is_err());
        assert!(valid_client_name("a b").is_err());
        assert!(valid_client_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn token_digest_is_sha256_hex() {
        // sha256("abc"), from FIPS 180-2.
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
