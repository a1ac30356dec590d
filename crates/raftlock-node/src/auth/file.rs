//! The auth file (`--auth FILE`, TOML): roles of rules, identities that
//! have roles, and their limits. Parsed strictly: a mistake is an error
//! naming the entry (and, for TOML errors, the line), never a policy that
//! quietly allows less or more than written. docs/security-auth.md has the
//! format.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use super::policy::{Identity, IdentityQuota, Perm, Policy, Rule};

/// Why an auth file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFileError {
    /// The file could not be read.
    #[error("cannot read the auth file {path}: {detail}")]
    Read {
        /// The file.
        path: String,
        /// What the operating system said.
        detail: String,
    },
    /// The file is not valid TOML of the expected shape (the message has
    /// the line and column).
    #[error("auth file {source_name}: {detail}")]
    Syntax {
        /// The file (or "inline" for a policy given as text).
        source_name: String,
        /// The TOML parser's message, with the line and column.
        detail: String,
    },
    /// An entry is wrong: the message names the entry and what is wrong.
    #[error("auth file {source_name}: {entry}: {detail}")]
    Entry {
        /// The file (or "inline").
        source_name: String,
        /// The entry: `role[0] "jobs"`, `identity[2] (cert "worker")`.
        entry: String,
        /// What is wrong with it.
        detail: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    defaults: Option<LimitsShape>,
    #[serde(default)]
    role: Vec<RoleShape>,
    #[serde(default)]
    identity: Vec<IdentityShape>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleShape {
    name: String,
    #[serde(default)]
    rules: Vec<RuleShape>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleShape {
    prefix: String,
    allow: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityShape {
    cert: Option<String>,
    token_sha256: Option<String>,
    name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    limits: Option<LimitsShape>,
}

/// Limits of an identity (or the defaults). Absent keys: no limit of
/// that kind (beyond the cluster's own limits).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsShape {
    max_leases: Option<u32>,
    max_holds: Option<u32>,
    max_waiters: Option<u32>,
    max_watchers: Option<u32>,
    requests_per_second: Option<f64>,
    burst: Option<u32>,
}

/// The longest identity name (certificate names are at most 128 bytes too:
/// `raftlock_proto::auth::valid_client_name`).
const MAX_NAME_BYTES: usize = 128;
/// Most roles, identities and rules per role: an auth file is written by
/// people and scripts, not generated per lock.
const MAX_ENTRIES: usize = 10_000;

/// Parse the text of an auth file; `source_name` names it in errors.
pub(crate) fn parse(source_name: &str, text: &str) -> Result<Policy, AuthFileError> {
    let shape: FileShape = toml::from_str(text).map_err(|e| AuthFileError::Syntax {
        source_name: source_name.to_string(),
        detail: e.to_string().trim_end().replace('\n', " | "),
    })?;
    let entry_err = |entry: String, detail: String| AuthFileError::Entry {
        source_name: source_name.to_string(),
        entry,
        detail,
    };
    if shape.role.len() > MAX_ENTRIES || shape.identity.len() > MAX_ENTRIES {
        return Err(entry_err(
            "file".into(),
            format!("at most {MAX_ENTRIES} roles and {MAX_ENTRIES} identities"),
        ));
    }

    let mut roles: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for (i, role) in shape.role.iter().enumerate() {
        let entry = format!("role[{i}] {:?}", role.name);
        if role.name.is_empty() || role.name.len() > MAX_NAME_BYTES {
            return Err(entry_err(entry, "a role name has 1 to 128 bytes".into()));
        }
        if role.rules.len() > MAX_ENTRIES {
            return Err(entry_err(entry, format!("at most {MAX_ENTRIES} rules")));
        }
        let mut rules = Vec::with_capacity(role.rules.len());
        for (j, rule) in role.rules.iter().enumerate() {
            let mut allow = BTreeSet::new();
            if rule.allow.is_empty() {
                return Err(entry_err(
                    format!("{entry} rules[{j}]"),
                    "allow is empty: name at least one of inspect, lock, watch, admin".into(),
                ));
            }
            for word in &rule.allow {
                let perm = Perm::parse(word).ok_or_else(|| {
                    entry_err(
                        format!("{entry} rules[{j}]"),
                        format!(
                            "unknown permission {word:?}; expected inspect, lock, watch or admin"
                        ),
                    )
                })?;
                allow.insert(perm);
            }
            rules.push(Rule {
                prefix: rule.prefix.clone(),
                allow,
            });
        }
        if roles.insert(role.name.clone(), rules).is_some() {
            return Err(entry_err(
                entry,
                "a role of this name is defined twice".into(),
            ));
        }
    }

    let defaults = match shape.defaults {
        Some(d) => quota(d).map_err(|d| entry_err("[defaults]".into(), d))?,
        None => IdentityQuota::default(),
    };

    let mut by_cert: HashMap<String, Arc<Identity>> = HashMap::new();
    let mut by_token: Vec<([u8; 64], Arc<Identity>)> = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (i, id) in shape.identity.iter().enumerate() {
        let label = match (&id.cert, &id.token_sha256) {
            (Some(c), _) => format!("identity[{i}] (cert {c:?})"),
            (None, Some(t)) => format!("identity[{i}] (token_sha256 {:?})", short(t)),
            (None, None) => format!("identity[{i}]"),
        };
        let (name, token) = match (&id.cert, &id.token_sha256) {
            (Some(_), Some(_)) => {
                return Err(entry_err(
                    label,
                    "has both cert and token_sha256; give one per identity".into(),
                ));
            }
            (None, None) => {
                return Err(entry_err(
                    label,
                    "names no credential: give cert = \"NAME\" or token_sha256 = \"HEX\"".into(),
                ));
            }
            (Some(cert), None) => {
                if let Some(n) = &id.name
                    && n != cert
                {
                    return Err(entry_err(
                        label,
                        "a certificate identity's name is its certificate's name; drop name".into(),
                    ));
                }
                if cert.is_empty() || cert.len() > MAX_NAME_BYTES {
                    return Err(entry_err(label, "cert has 1 to 128 bytes".into()));
                }
                (cert.clone(), None)
            }
            (None, Some(hex)) => {
                let digest = digest_of(hex).ok_or_else(|| {
                    entry_err(
                        label.clone(),
                        "token_sha256 must be 64 lowercase hex digits (the SHA-256 of the token, as `raftlock certs token` prints it)".into(),
                    )
                })?;
                let name = match &id.name {
                    Some(n) => n.clone(),
                    None => format!("token:{}", &hex[..12]),
                };
                if name.is_empty() || name.len() > MAX_NAME_BYTES {
                    return Err(entry_err(label, "name has 1 to 128 bytes".into()));
                }
                (name, Some(digest))
            }
        };
        if let Some(digest) = &token
            && by_token.iter().any(|(d, _)| d == digest)
        {
            return Err(entry_err(label, "this token_sha256 is listed twice".into()));
        }
        if !names.insert(name.clone()) {
            return Err(entry_err(
                label,
                format!("duplicate identity {name:?} (every identity has one entry)"),
            ));
        }
        let mut rules = Vec::new();
        let mut seen_roles = BTreeSet::new();
        for role in &id.roles {
            let Some(role_rules) = roles.get(role) else {
                return Err(entry_err(
                    label,
                    format!(
                        "role {role:?} is not defined (define it with [[role]] name = {role:?})"
                    ),
                ));
            };
            if seen_roles.insert(role.clone()) {
                rules.extend(role_rules.iter().cloned());
            }
        }
        let limits = match id.limits {
            Some(l) => quota(l).map_err(|d| entry_err(label.clone(), d))?,
            None => defaults,
        };
        let identity = Arc::new(Identity {
            name: name.clone(),
            roles: id.roles.clone(),
            rules,
            limits,
        });
        match token {
            Some(digest) => by_token.push((digest, identity)),
            None => {
                by_cert.insert(name, identity);
            }
        }
    }
    Ok(Policy { by_cert, by_token })
}

fn quota(l: LimitsShape) -> Result<IdentityQuota, String> {
    let rate = match (l.requests_per_second, l.burst) {
        (None, None) => None,
        (None, Some(_)) => return Err("burst needs requests_per_second".into()),
        (Some(rps), burst) => {
            if !(rps.is_finite() && rps > 0.0 && rps <= 1_000_000.0) {
                return Err("requests_per_second must be above 0 and at most 1000000".into());
            }
            // Default burst: one second's worth, at least 1.
            let burst = burst.unwrap_or((rps.ceil() as u32).max(1));
            if burst == 0 {
                return Err("burst must be at least 1".into());
            }
            Some((rps, burst))
        }
    };
    Ok(IdentityQuota {
        core: raftlock_core::IdentityLimits {
            max_leases: l.max_leases,
            max_holds: l.max_holds,
            max_waiters: l.max_waiters,
        },
        max_watchers: l.max_watchers,
        rate,
    })
}

/// The 64 lowercase hex digits of a SHA-256 digest, as bytes to compare.
fn digest_of(hex: &str) -> Option<[u8; 64]> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(hex.as_bytes());
    Some(out)
}

/// A digest in an error message: enough to find the line, not the whole.
fn short(hex: &str) -> String {
    let end = hex.char_indices().nth(12).map_or(hex.len(), |(i, _)| i);
    format!("{}…", &hex[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlock_proto::auth::token_sha256;

    const ISSUE_SHAPE: &str = r#"
[[role]]
name = "jobs"
rules = [{ prefix = "jobs/", allow = ["inspect", "lock", "watch"] }]
[[identity]]
cert = "worker"            # a client certificate's common name; or token_sha256 = "..."
roles = ["jobs"]
"#;

    fn err(text: &str) -> String {
        parse("test.toml", text).expect_err("refused").to_string()
    }

    #[test]
    fn the_issue_shape_parses_and_grants_what_it_says() {
        let p = parse("test.toml", ISSUE_SHAPE).expect("parses");
        let worker = p.by_cert.get("worker").expect("worker");
        assert!(worker.allows(Perm::Lock, "jobs/x"));
        assert!(worker.allows(Perm::Watch, "jobs/"));
        assert!(!worker.allows(Perm::Lock, "billing/x"));
        assert!(!worker.allows(Perm::Admin, "jobs/x"));
        assert_eq!(worker.limits, IdentityQuota::default());
    }

    #[test]
    fn tokens_defaults_names_and_limits() {
        let digest = token_sha256("secret");
        let text = format!(
            r#"
[defaults]
max_leases = 10
requests_per_second = 5.0

[[role]]
name = "all"
rules = [{{ prefix = "", allow = ["inspect", "admin"] }}]

[[identity]]
token_sha256 = "{digest}"
roles = ["all"]

[[identity]]
token_sha256 = "{other}"
name = "ci"
roles = []
[identity.limits]
max_leases = 2
max_holds = 3
max_waiters = 1
max_watchers = 4
requests_per_second = 0.5
burst = 2
"#,
            other = token_sha256("other")
        );
        let p = parse("t", &text).expect("parses");
        let (_, first) = &p.by_token[0];
        assert_eq!(first.name, format!("token:{}", &digest[..12]));
        assert_eq!(first.limits.core.max_leases, Some(10));
        assert_eq!(first.limits.rate, Some((5.0, 5)));
        assert!(first.allows(Perm::Admin, "anything/at/all"));
        let (_, ci) = &p.by_token[1];
        assert_eq!(ci.name, "ci");
        assert_eq!(ci.limits.core.max_holds, Some(3));
        assert_eq!(ci.limits.max_watchers, Some(4));
        assert_eq!(ci.limits.rate, Some((0.5, 2)));
        assert!(!ci.allows(Perm::Inspect, "x"));
    }

    #[test]
    fn mistakes_are_refused_naming_the_entry() {
        let e = err(r#"
[[role]]
name = "r"
rules = [{ prefix = "a/", allow = ["lock", "write"] }]
"#);
        assert!(
            e.contains("role[0] \"r\" rules[0]") && e.contains("\"write\""),
            "{e}"
        );

        let e = err(r#"
[[identity]]
cert = "worker"
roles = ["nope"]
"#);
        assert!(
            e.contains("identity[0] (cert \"worker\")") && e.contains("\"nope\""),
            "{e}"
        );

        let e = err(r#"
[[identity]]
cert = "worker"
[[identity]]
cert = "worker"
"#);
        assert!(e.contains("identity[1]") && e.contains("duplicate"), "{e}");

        let e = err(r#"
[[identity]]
token_sha256 = "ABCDEF"
"#);
        assert!(
            e.contains("identity[0]") && e.contains("64 lowercase hex"),
            "{e}"
        );
        let upper = token_sha256("x").to_uppercase();
        let e = err(&format!("[[identity]]\ntoken_sha256 = \"{upper}\"\n"));
        assert!(e.contains("64 lowercase hex"), "{e}");

        let e = err(&format!(
            "[[identity]]\ncert = \"w\"\ntoken_sha256 = \"{}\"\n",
            token_sha256("x")
        ));
        assert!(e.contains("both cert and token_sha256"), "{e}");

        let e = err("[[identity]]\nroles = []\n");
        assert!(e.contains("names no credential"), "{e}");

        // Unknown keys are errors with their line, not ignored.
        let e = err("[[identity]]\ncert = \"w\"\nrole = [\"x\"]\n");
        assert!(e.contains("line 3") && e.contains("role"), "{e}");

        let e = err("[defaults]\nburst = 3\n");
        assert!(
            e.contains("[defaults]") && e.contains("requests_per_second"),
            "{e}"
        );

        let e = err("[[role]]\nname = \"r\"\n[[role]]\nname = \"r\"\n");
        assert!(e.contains("role[1]") && e.contains("twice"), "{e}");
    }
}
