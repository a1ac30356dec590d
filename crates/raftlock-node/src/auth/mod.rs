//! Authentication and authorization of client calls (docs/security-auth.md).
//!
//! With an auth file ([`AuthSource`]), every call on the client services
//! names an identity: a verified client certificate's common name (from
//! the listener's [`ConnInfo`]) or a bearer token (`authorization: Bearer
//! <token>`, compared by its SHA-256 digest). The identity's rules decide
//! what it may do on which names ([`METHODS`] says what each method needs,
//! the services check it before anything reaches Raft), its limits bound
//! what it may hold, and its request rate is limited per node. Without an
//! auth file every caller is "anonymous" and may do everything.
//!
//! Denials and admin actions are logged with target `audit`.

mod file;
mod policy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use raftlock_core::{IdentityLimits, Limit, LockError};
use raftlock_proto::auth::{AUTHORIZATION_KEY, BEARER_PREFIX, NODE_OU, token_sha256};

pub use file::AuthFileError;
pub(crate) use policy::Perm;
use policy::{Identity, Policy};

use crate::conn::ConnInfo;
use crate::error::NodeError;

/// Where a node's auth policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSource {
    /// A TOML file, re-read by [`NodeHandle::reload_auth`](crate::NodeHandle::reload_auth).
    File(PathBuf),
    /// The TOML text itself (embedders, tests).
    Toml(String),
}

impl AuthSource {
    pub(crate) fn load(&self) -> Result<Policy, AuthFileError> {
        match self {
            AuthSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| AuthFileError::Read {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?;
                file::parse(&path.display().to_string(), &text)
            }
            AuthSource::Toml(text) => file::parse("(inline)", text),
        }
    }
}

/// What a client method needs of its caller. Every method of the
/// `raftlock.v1` services has one entry in [`METHODS`] (a test enumerates
/// the services' descriptors against it), and the services ask for their
/// entry before anything else, so a method without one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The permission on every name the call names.
    Names(Perm),
    /// The permission on every name under the requested prefix.
    Prefix(Perm),
    /// The permission on at least one name (a lease is granted to lock).
    AnyName(Perm),
    /// `lock` on every name, and the lease must be the caller's own.
    LockWithLease,
    /// The lease must be the caller's own.
    OwnLease,
    /// Any authenticated identity; what it sees is filtered by `inspect`.
    Filtered,
    /// `admin` on "" (every name): cluster-wide administration.
    Cluster,
    /// Any authenticated identity (health checks).
    Authenticated,
}

/// The needs of every client method, by its gRPC path.
pub(crate) const METHODS: &[(&str, Need)] = &[
    ("/raftlock.v1.Locks/Acquire", Need::LockWithLease),
    ("/raftlock.v1.Locks/Release", Need::LockWithLease),
    ("/raftlock.v1.Locks/Extend", Need::LockWithLease),
    ("/raftlock.v1.Locks/Inspect", Need::Names(Perm::Inspect)),
    ("/raftlock.v1.Locks/List", Need::Prefix(Perm::Inspect)),
    ("/raftlock.v1.Locks/Watch", Need::Prefix(Perm::Watch)),
    ("/raftlock.v1.Leases/Grant", Need::AnyName(Perm::Lock)),
    ("/raftlock.v1.Leases/KeepAlive", Need::OwnLease),
    ("/raftlock.v1.Leases/Revoke", Need::OwnLease),
    ("/raftlock.v1.Leases/List", Need::Filtered),
    ("/raftlock.v1.Admin/Status", Need::Authenticated),
    ("/raftlock.v1.Admin/AddLearner", Need::Cluster),
    ("/raftlock.v1.Admin/Promote", Need::Cluster),
    ("/raftlock.v1.Admin/Remove", Need::Cluster),
    ("/raftlock.v1.Admin/ForceRelease", Need::Names(Perm::Admin)),
    ("/raftlock.v1.Admin/Snapshot", Need::Cluster),
    ("/raftlock.v1.Admin/ForgetMember", Need::Cluster),
    // A backup holds every lease's identity and every hold's metadata.
    ("/raftlock.v1.Admin/SaveSnapshot", Need::Cluster),
];

fn need_of(method: &str) -> Option<Need> {
    METHODS.iter().find(|(m, _)| *m == method).map(|(_, n)| *n)
}

/// A node's authentication state: the policy (swapped whole on reload)
/// and the per-identity counters this node keeps (request rate, watch
/// streams).
pub(crate) struct Auth {
    source: Option<AuthSource>,
    policy: RwLock<Option<Arc<Policy>>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    watchers: WatcherCounts,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Auth {
    /// Auth from `source`; `None` turns it off. A policy that does not
    /// parse is an error: the node must not start with it.
    pub(crate) fn new(source: Option<AuthSource>) -> Result<Auth, AuthFileError> {
        let policy = match &source {
            Some(s) => Some(Arc::new(s.load()?)),
            None => None,
        };
        if let Some(p) = &policy {
            tracing::info!(target: "audit", identities = p.identity_count(), "auth policy loaded");
        }
        Ok(Auth {
            source,
            policy: RwLock::new(policy),
            buckets: Mutex::new(HashMap::new()),
            watchers: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Re-read the source and swap the policy in whole. On error the old
    /// policy stays and the error is logged and returned. Calls already
    /// authenticated finish under the policy they started with.
    pub(crate) fn reload(&self) -> Result<(), AuthFileError> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        match source.load() {
            Ok(p) => {
                tracing::info!(target: "audit", identities = p.identity_count(), "auth policy reloaded");
                let mut slot = self.policy.write().unwrap_or_else(|e| e.into_inner());
                *slot = Some(Arc::new(p));
                Ok(())
            }
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "auth policy reload failed; keeping the previous policy");
                Err(e)
            }
        }
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The caller of `request` on `method`: authenticated, within its
    /// request rate, and `method` known to need something. Failures are
    /// audited.
    pub(crate) fn caller<T>(
        &self,
        request: &tonic::Request<T>,
        method: &'static str,
    ) -> Result<Caller, NodeError> {
        if need_of(method).is_none() {
            // Fail closed: a method nobody said the needs of is refused.
            return Err(NodeError::Internal(format!(
                "{method} has no permission entry; refusing it"
            )));
        }
        let Some(policy) = self.policy() else {
            return Ok(Caller {
                identity: None,
                method,
            });
        };
        let remote = ConnInfo::of(request).and_then(|c| c.remote);
        let identity = authenticate(&policy, request).inspect_err(|e| {
            tracing::warn!(target: "audit", method, remote = ?remote, result = "unauthenticated", error = %e);
        })?;
        self.check_rate(&identity).inspect_err(|e| {
            tracing::warn!(target: "audit", identity = %identity.name, method, result = "rate_limited", error = %e);
        })?;
        Ok(Caller {
            identity: Some(identity),
            method,
        })
    }

    fn check_rate(&self, identity: &Identity) -> Result<(), NodeError> {
        let Some((per_second, burst)) = identity.limits.rate else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(identity.name.clone()).or_insert(Bucket {
            tokens: burst as f64,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst as f64);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(NodeError::RateLimited {
                identity: identity.name.clone(),
                per_second: per_second.to_string(),
            })
        }
    }

    /// Count a watch stream of `caller` against its limit; the guard
    /// uncounts it when the stream ends.
    pub(crate) fn watcher(&self, caller: &Caller) -> Result<WatcherGuard, NodeError> {
        let Some(identity) = &caller.identity else {
            return Ok(WatcherGuard(None));
        };
        let mut counts = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(identity.name.clone()).or_insert(0);
        if let Some(max) = identity.limits.max_watchers
            && *count >= max
        {
            return Err(NodeError::Lock(LockError::IdentityLimitExceeded {
                identity: identity.name.clone(),
                limit: Limit::WatchersPerIdentity,
                max: max as u64,
            }));
        }
        *count += 1;
        Ok(WatcherGuard(Some((
            Arc::clone(&self.watchers),
            identity.name.clone(),
        ))))
    }
}

/// Keeps one watch stream counted for its identity.
pub(crate) struct WatcherGuard(Option<(WatcherCounts, String)>);

/// Open watch streams per identity on this node.
type WatcherCounts = Arc<Mutex<HashMap<String, u32>>>;

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        if let Some((counts, name)) = self.0.take() {
            let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = counts.get_mut(&name) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    counts.remove(&name);
                }
            }
        }
    }
}

/// The identity of a call, from its certificate or its bearer token.
///
/// - A token, if sent, must be one of the file's; a malformed or unknown
///   one is refused even when a certificate would do.
/// - A certificate counts only if the file names its common name
///   (`cert = ...`). A node certificate (OU `raftlock-node`) is thus never
///   a client identity unless the file names it.
/// - A valid token with a certificate the file names is refused unless
///   both name the same identity (names are unique in the file, so today
///   that means refused): one call never acts as two identities. A
///   certificate the file does not name does not stand in the way of a
///   token (it may only be there for TLS).
fn authenticate<T>(
    policy: &Policy,
    request: &tonic::Request<T>,
) -> Result<Arc<Identity>, NodeError> {
    let by_token = match request.metadata().get(AUTHORIZATION_KEY) {
        None => None,
        Some(value) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix(BEARER_PREFIX))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| NodeError::Unauthenticated {
                    detail: format!(
                        "the {AUTHORIZATION_KEY} header must be \"{BEARER_PREFIX}<token>\""
                    ),
                })?;
            let digest = token_sha256(token);
            Some(policy.by_token_digest(digest.as_bytes()).ok_or_else(|| {
                NodeError::Unauthenticated {
                    detail: "the bearer token is not in this node's auth file".into(),
                }
            })?)
        }
    };
    let cert = ConnInfo::of(request).and_then(|c| c.cert.as_ref());
    let by_cert = cert.and_then(|c| policy.by_cert.get(&c.common_name).cloned());
    match (by_token, by_cert) {
        (Some(t), Some(c)) if t.name != c.name => Err(NodeError::Unauthenticated {
            detail: format!(
                "the certificate names identity {:?} but the token is identity {:?}; send one",
                c.name, t.name
            ),
        }),
        (Some(t), _) => Ok(t),
        (None, Some(c)) => Ok(c),
        (None, None) => Err(NodeError::Unauthenticated {
            detail: match cert {
                Some(c) if c.org_unit.as_deref() == Some(NODE_OU) => format!(
                    "{:?} is a node certificate, not a client identity; use a client certificate or a bearer token",
                    c.common_name
                ),
                Some(c) => format!(
                    "certificate {:?} is not an identity in this node's auth file",
                    c.common_name
                ),
                None => {
                    "no identity: present a client certificate or an authorization: Bearer token"
                        .into()
                }
            },
        }),
    }
}

/// The authenticated caller of one call. Without auth, "anonymous", to
/// whom everything is allowed.
#[derive(Clone)]
pub(crate) struct Caller {
    identity: Option<Arc<Identity>>,
    method: &'static str,
}

/// The name logged for callers when auth is off.
pub(crate) const ANONYMOUS: &str = "anonymous";

impl Caller {
    /// The identity's name, for logs ("anonymous" with auth off).
    pub(crate) fn name(&self) -> &str {
        self.identity
            .as_ref()
            .map_or(ANONYMOUS, |i| i.name.as_str())
    }

    /// The identity a lease granted by this caller records: empty with
    /// auth off.
    pub(crate) fn lease_identity(&self) -> &str {
        self.identity.as_ref().map_or("", |i| i.name.as_str())
    }

    /// Whether leases are checked for ownership (auth is on).
    pub(crate) fn checks_leases(&self) -> bool {
        self.identity.is_some()
    }

    /// The limits its commands carry to the state machine.
    pub(crate) fn quota(&self) -> IdentityLimits {
        self.identity
            .as_ref()
            .map_or_else(IdentityLimits::default, |i| i.limits.core)
    }

    /// Whether the caller may `perm` on `name` (no audit: for filtering).
    pub(crate) fn may(&self, perm: Perm, name: &str) -> bool {
        self.identity.as_ref().is_none_or(|i| i.allows(perm, name))
    }

    /// `perm` on `name`, or DENIED naming the missing rule.
    pub(crate) fn require(&self, perm: Perm, name: &str) -> Result<(), NodeError> {
        if self.may(perm, name) {
            return Ok(());
        }
        Err(self.deny(format!("{} on {name}", perm.as_str()), None, &[name]))
    }

    /// `perm` on every name in `names`.
    pub(crate) fn require_all<'a>(
        &self,
        perm: Perm,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), NodeError> {
        for name in names {
            self.require(perm, name)?;
        }
        Ok(())
    }

    /// `perm` on every name that starts with `prefix`.
    pub(crate) fn require_prefix(&self, perm: Perm, prefix: &str) -> Result<(), NodeError> {
        if self
            .identity
            .as_ref()
            .is_none_or(|i| i.allows_all_under(perm, prefix))
        {
            return Ok(());
        }
        Err(self.deny(
            format!("{} on every name under {prefix:?}", perm.as_str()),
            None,
            &[prefix],
        ))
    }

    /// `perm` on some name.
    pub(crate) fn require_any(&self, perm: Perm) -> Result<(), NodeError> {
        if self.identity.as_ref().is_none_or(|i| i.has_any(perm)) {
            return Ok(());
        }
        Err(self.deny(format!("{} on some name", perm.as_str()), None, &[]))
    }

    /// `admin` on every name: cluster-wide administration.
    pub(crate) fn require_cluster_admin(&self) -> Result<(), NodeError> {
        if self.may(Perm::Admin, "") {
            return Ok(());
        }
        Err(self.deny("admin on \"\" (every name)".into(), None, &[]))
    }

    /// The lease belongs to another identity.
    pub(crate) fn deny_lease(&self, lease: u64) -> NodeError {
        self.deny(
            format!("ownership of lease {lease}"),
            Some(format!("lease {lease} belongs to another identity")),
            &[],
        )
    }

    fn deny(&self, missing: String, why: Option<String>, names: &[&str]) -> NodeError {
        let identity = self.name().to_string();
        tracing::warn!(
            target: "audit",
            identity = %identity,
            method = self.method,
            names = ?names,
            result = "denied",
            missing = %missing,
        );
        NodeError::Denied {
            why: why.unwrap_or_else(|| format!("it has no rule allowing {missing}")),
            identity,
            missing,
        }
    }

    /// Log an admin action and its outcome.
    pub(crate) fn audit_admin<T, E: std::fmt::Display>(
        &self,
        names: &[&str],
        result: &Result<T, E>,
    ) {
        match result {
            Ok(_) => tracing::info!(
                target: "audit",
                identity = %self.name(),
                method = self.method,
                names = ?names,
                result = "ok",
            ),
            Err(e) => tracing::info!(
                target: "audit",
                identity = %self.name(),
                method = self.method,
                names = ?names,
                result = "error",
                error = %e,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::CertNames;
    use prost::Message;

    const POLICY: &str = r#"
[[role]]
name = "jobs"
rules = [{ prefix = "jobs/", allow = ["inspect", "lock", "watch"] }]
[[identity]]
cert = "worker"
roles = ["jobs"]
[[identity]]
cert = "node-1"
roles = []
"#;

    fn policy_with_token(token: &str) -> String {
        format!(
            "{POLICY}[[identity]]\nname = \"ci\"\ntoken_sha256 = \"{}\"\nroles = [\"jobs\"]\n",
            token_sha256(token)
        )
    }

    fn request(token: Option<&str>, cert: Option<(&str, &str)>) -> tonic::Request<()> {
        let mut r = tonic::Request::new(());
        if let Some(t) = token {
            r.metadata_mut()
                .insert(AUTHORIZATION_KEY, t.parse().expect("ascii"));
        }
        if let Some((cn, ou)) = cert {
            r.extensions_mut().insert(ConnInfo {
                remote: None,
                cert: Some(CertNames {
                    common_name: cn.into(),
                    org_unit: Some(ou.into()),
                }),
            });
        }
        r
    }

    const M: &str = "/raftlock.v1.Locks/Acquire";

    #[test]
    fn identities_come_from_named_certificates_or_known_tokens() {
        let auth = Auth::new(Some(AuthSource::Toml(policy_with_token("s3cret")))).unwrap();
        let name = |r| auth.caller(&r, M).map(|c| c.name().to_string());
        let client = raftlock_proto::auth::CLIENT_OU;
        assert_eq!(
            name(request(None, Some(("worker", client)))).unwrap(),
            "worker"
        );
        assert_eq!(name(request(Some("Bearer s3cret"), None)).unwrap(), "ci");
        // A certificate the file does not name leaves the token to decide.
        assert_eq!(
            name(request(Some("Bearer s3cret"), Some(("stranger", client)))).unwrap(),
            "ci"
        );
        for (r, why) in [
            (request(None, None), "no identity"),
            (
                request(Some("Bearer wrong"), None),
                "not in this node's auth file",
            ),
            (request(Some("Basic s3cret"), None), "must be"),
            (
                request(Some("Bearer wrong"), Some(("worker", client))),
                "not in",
            ),
            (request(None, Some(("stranger", client))), "not an identity"),
            (request(None, Some(("node-2", NODE_OU))), "node certificate"),
            (
                request(Some("Bearer s3cret"), Some(("worker", client))),
                "send one",
            ),
        ] {
            let e = auth.caller(&r, M).map(|_| ()).expect_err(why);
            assert_eq!(e.reason().name(), "UNAUTHENTICATED");
            assert!(e.to_string().contains(why), "{e}");
        }
        // A node certificate is an identity when the file names it.
        assert_eq!(
            name(request(None, Some(("node-1", NODE_OU)))).unwrap(),
            "node-1"
        );
    }

    #[test]
    fn without_a_policy_everyone_is_anonymous_and_allowed() {
        let auth = Auth::new(None).unwrap();
        let c = auth.caller(&request(None, None), M).unwrap();
        assert_eq!(c.name(), ANONYMOUS);
        assert_eq!(c.lease_identity(), "");
        assert!(c.require(Perm::Admin, "anything").is_ok());
        assert!(c.require_cluster_admin().is_ok());
    }

    #[test]
    fn denials_name_the_missing_rule() {
        let auth = Auth::new(Some(AuthSource::Toml(POLICY.into()))).unwrap();
        let r = request(None, Some(("worker", raftlock_proto::auth::CLIENT_OU)));
        let c = auth.caller(&r, M).unwrap();
        assert!(c.require(Perm::Lock, "jobs/x").is_ok());
        let e = c.require(Perm::Lock, "billing/x").unwrap_err();
        let status = e.to_status();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        use tonic_types::StatusExt;
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "DENIED");
        assert_eq!(info.metadata["missing"], "lock on billing/x");
        assert_eq!(info.metadata["identity"], "worker");
        assert!(c.require_prefix(Perm::Watch, "jobs/").is_ok());
        assert!(c.require_prefix(Perm::Watch, "").is_err());
        assert!(c.require_cluster_admin().is_err());
        let e = c.deny_lease(7);
        assert!(
            e.to_string()
                .contains("lease 7 belongs to another identity"),
            "{e}"
        );
    }

    /// Collects formatted log lines.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn denials_and_admin_actions_are_audited_with_identity_method_names_and_result() {
        let auth = Auth::new(Some(AuthSource::Toml(POLICY.into()))).unwrap();
        // tracing caches each call site's interest process-wide; a test on
        // another thread hitting the same site while this subscriber is
        // being registered can leave it switched off for a moment (seen
        // once in a full parallel run). Up to three tries, each with fresh
        // interest.
        let mut text = String::new();
        for _ in 0..3 {
            let lines = Lines::default();
            let writer = lines.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::callsite::rebuild_interest_cache();
                let r = request(None, Some(("worker", raftlock_proto::auth::CLIENT_OU)));
                let c = auth.caller(&r, M).unwrap();
                let _ = c.require(Perm::Lock, "billing/x");
                c.audit_admin(&["jobs/x"], &Ok::<(), NodeError>(()));
                let _ = auth.caller(&request(None, None), "/raftlock.v1.Admin/Snapshot");
            });
            text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
            if text.lines().count() == 3 {
                break;
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines.iter().all(|l| l.contains(" audit:")), "{text}");
        assert!(
            lines[0].contains("identity=worker")
                && lines[0].contains("Locks/Acquire")
                && lines[0].contains("billing/x")
                && lines[0].contains("result=\"denied\"")
                && lines[0].contains("missing=lock on billing/x"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("identity=worker") && lines[1].contains("result=\"ok\""),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("Admin/Snapshot") && lines[2].contains("unauthenticated"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn the_request_rate_is_limited_per_identity_with_a_burst() {
        let text = format!(
            "{}[identity.limits]\nrequests_per_second = 0.001\nburst = 3\n",
            policy_with_token("t")
        );
        let auth = Auth::new(Some(AuthSource::Toml(text))).unwrap();
        let r = request(Some("Bearer t"), None);
        for _ in 0..3 {
            auth.caller(&r, M).expect("within the burst");
        }
        let e = auth.caller(&r, M).map(|_| ()).unwrap_err();
        assert_eq!(e.reason().name(), "RATE_LIMITED");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        // Another identity has its own bucket.
        let w = request(None, Some(("worker", raftlock_proto::auth::CLIENT_OU)));
        auth.caller(&w, M).expect("worker is not limited");
    }

    #[test]
    fn watchers_are_counted_per_identity_and_uncounted_on_drop() {
        let text = format!(
            "{}[identity.limits]\nmax_watchers = 1\n",
            policy_with_token("t")
        );
        let auth = Auth::new(Some(AuthSource::Toml(text))).unwrap();
        let c = auth.caller(&request(Some("Bearer t"), None), M).unwrap();
        let first = auth.watcher(&c).expect("first");
        let e = auth.watcher(&c).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("\"ci\""), "{e}");
        assert_eq!(e.reason().name(), "LIMIT_EXCEEDED");
        drop(first);
        auth.watcher(&c).expect("room again");
    }

    #[test]
    fn reload_swaps_the_policy_and_keeps_it_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        std::fs::write(&path, POLICY).unwrap();
        let auth = Auth::new(Some(AuthSource::File(path.clone()))).unwrap();
        let r = request(Some("Bearer new"), None);
        assert!(auth.caller(&r, M).is_err());
        std::fs::write(&path, policy_with_token("new")).unwrap();
        auth.reload().expect("reloads");
        assert_eq!(auth.caller(&r, M).unwrap().name(), "ci");
        std::fs::write(&path, "[[identity]]\ncert = 1\n").unwrap();
        let e = auth.reload().unwrap_err();
        assert!(e.to_string().contains("auth.toml"), "{e}");
        assert_eq!(auth.caller(&r, M).unwrap().name(), "ci", "old policy kept");
        // A file that does not parse refuses the start.
        assert!(Auth::new(Some(AuthSource::File(path))).is_err());
    }

    /// Every method of every `raftlock.v1` service has a permission entry,
    /// and every entry is a real method: a new method without one fails
    /// here (and is refused at run time by `Auth::caller`).
    #[test]
    fn every_client_method_has_a_permission_entry() {
        let set = prost_types::FileDescriptorSet::decode(raftlock_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = Vec::new();
        for file in &set.file {
            if file.package() != "raftlock.v1" {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert!(methods.len() >= 16, "{methods:?}");
        for m in &methods {
            assert!(need_of(m).is_some(), "{m} has no entry in auth::METHODS");
        }
        for (m, _) in METHODS {
            assert!(methods.iter().any(|x| x == m), "{m} is not a method");
        }
        let auth = Auth::new(None).unwrap();
        assert!(
            auth.caller(&request(None, None), "/raftlock.v1.Locks/New")
                .is_err()
        );
    }
}
