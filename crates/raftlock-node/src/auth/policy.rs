//! What an auth file means: identities, their rules and limits, and the
//! questions the services ask of them (may this identity do this on this
//! name, or on everything under this prefix).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A permission a rule grants on the names under its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Perm {
    /// Inspect and list locks (and see leases' holds on them).
    Inspect,
    /// Acquire, release and extend locks, and hold leases to do it.
    Lock,
    /// Watch events.
    Watch,
    /// Force-release; on "" also membership, snapshots and limits.
    Admin,
}

impl Perm {
    pub(crate) fn parse(word: &str) -> Option<Perm> {
        Some(match word {
            "inspect" => Perm::Inspect,
            "lock" => Perm::Lock,
            "watch" => Perm::Watch,
            "admin" => Perm::Admin,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Perm::Inspect => "inspect",
            Perm::Lock => "lock",
            Perm::Watch => "watch",
            Perm::Admin => "admin",
        }
    }
}

/// `allow` on every name starting with `prefix` ("" is every name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) prefix: String,
    pub(crate) allow: BTreeSet<Perm>,
}

/// An identity's limits: those the state machine checks (carried in its
/// commands) and those this node checks (watch streams, request rate).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct IdentityQuota {
    pub(crate) core: raftlock_core::IdentityLimits,
    /// Watch streams open at once on one node.
    pub(crate) max_watchers: Option<u32>,
    /// Requests per second and burst, per node (a token bucket).
    pub(crate) rate: Option<(f64, u32)>,
}

/// One identity of the auth file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Identity {
    /// Its name: the certificate's common name, or a token identity's
    /// `name` (default `token:<first 12 hex digits of the digest>`).
    pub(crate) name: String,
    /// The roles it has, for logs.
    pub(crate) roles: Vec<String>,
    /// The rules of all its roles.
    pub(crate) rules: Vec<Rule>,
    pub(crate) limits: IdentityQuota,
}

impl Identity {
    /// Whether some rule allows `perm` on `name`.
    pub(crate) fn allows(&self, perm: Perm, name: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.allow.contains(&perm) && name.starts_with(r.prefix.as_str()))
    }

    /// Whether some rule allows `perm` on every name that starts with
    /// `prefix` (a rule whose prefix is a prefix of it).
    pub(crate) fn allows_all_under(&self, perm: Perm, prefix: &str) -> bool {
        self.allows(perm, prefix)
    }

    /// Whether some rule allows `perm` on any name at all.
    pub(crate) fn has_any(&self, perm: Perm) -> bool {
        self.rules.iter().any(|r| r.allow.contains(&perm))
    }
}

/// A parsed auth file.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    /// Certificate identities by common name.
    pub(crate) by_cert: HashMap<String, Arc<Identity>>,
    /// Token identities by the hex digest of their token (as bytes).
    pub(crate) by_token: Vec<([u8; 64], Arc<Identity>)>,
}

impl Policy {
    /// The identity whose token has this digest. Every stored digest is
    /// compared in full, in constant time, so the time taken says nothing
    /// about how much of a digest matched.
    pub(crate) fn by_token_digest(&self, digest_hex: &[u8]) -> Option<Arc<Identity>> {
        let mut found = None;
        for (d, identity) in &self.by_token {
            if constant_time_eq(d, digest_hex) {
                found = Some(Arc::clone(identity));
            }
        }
        found
    }

    /// Every identity, for tests and logs.
    pub(crate) fn identity_count(&self) -> usize {
        self.by_cert.len() + self.by_token.len()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(rules: &[(&str, &[Perm])]) -> Identity {
        Identity {
            name: "t".into(),
            roles: vec![],
            rules: rules
                .iter()
                .map(|(p, a)| Rule {
                    prefix: p.to_string(),
                    allow: a.iter().copied().collect(),
                })
                .collect(),
            limits: IdentityQuota::default(),
        }
    }

    #[test]
    fn a_rule_covers_names_under_its_prefix_only() {
        let id = identity(&[("jobs/", &[Perm::Lock]), ("", &[Perm::Inspect])]);
        assert!(id.allows(Perm::Lock, "jobs/x"));
        assert!(id.allows(Perm::Lock, "jobs/"));
        assert!(!id.allows(Perm::Lock, "jobs"));
        assert!(!id.allows(Perm::Lock, "billing/x"));
        assert!(id.allows(Perm::Inspect, "billing/x"));
        assert!(!id.allows(Perm::Watch, "jobs/x"));
        assert!(id.has_any(Perm::Lock) && !id.has_any(Perm::Admin));
    }

    #[test]
    fn a_prefix_is_covered_only_by_a_rule_at_or_above_it() {
        let id = identity(&[("jobs/", &[Perm::Watch])]);
        assert!(id.allows_all_under(Perm::Watch, "jobs/"));
        assert!(id.allows_all_under(Perm::Watch, "jobs/nightly/"));
        // "jobs" also covers "jobs-billing/...", which the rule does not.
        assert!(!id.allows_all_under(Perm::Watch, "jobs"));
        assert!(!id.allows_all_under(Perm::Watch, ""));
    }

    #[test]
    fn token_digests_match_whole_and_only_whole() {
        let a = Arc::new(identity(&[]));
        let mut d = [b'a'; 64];
        let policy = Policy {
            by_cert: HashMap::new(),
            by_token: vec![(d, Arc::clone(&a))],
        };
        assert!(policy.by_token_digest(&d).is_some());
        d[63] = b'b';
        assert!(policy.by_token_digest(&d).is_none());
        assert!(policy.by_token_digest(&d[..63]).is_none());
    }
}
