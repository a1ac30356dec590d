//! One module per command, each with its arguments (`Args`) and its `run`,
//! as cargo's `commands/*.rs`. The commands that talk to a cluster are thin
//! shells over raftlock-client: what they need and the client lacks belongs
//! in the client, not here.

pub mod acquire;
pub mod certs;
pub mod cluster;
pub mod dev;
pub mod exec;
pub mod extend;
pub mod force_release;
pub mod health;
pub mod inspect;
pub mod lease;
pub mod list;
pub mod release;
pub mod serve;
pub mod snapshot;
pub mod status;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use raftlock_client::{Client, ClientOptions, Mode, RetryPolicy, TlsOptions};
use raftlock_proto::auth::env;

use crate::exit::Failure;

pub use dev::DEV_ENDPOINTS;

/// How long one call may take, retries included, on top of an acquire's
/// wait: long enough to ride out a few leader elections on a loaded machine.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pause between two attempts of a command's call. While the
/// cluster elects a leader the pauses are what a command waits beyond the
/// election: with pauses doubling to 1 s, a command found the new leader a
/// median 0.7 s after it was elected (notes/failover-findings.md, cause 2).
/// A command is one process making a few calls, so polling every 200 ms
/// through an election costs the nodes nothing worth saving.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How a command retries: the named leader first, then the other nodes,
/// pausing 100 ms, then [`MAX_RETRY_PAUSE`], until the call's deadline
/// (attempts are not counted); gives up after two rounds in which nothing
/// listens.
pub fn cli_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_millis(100),
        max_backoff: MAX_RETRY_PAUSE,
        jitter: 0.2,
        unreachable_rounds: Some(2),
    }
}

/// Where the cluster is and how to print: shared by every command here.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Nodes of the cluster as host:port (comma-separated); any node
    /// serves any call. The default is the `raftlock dev` cluster.
    #[arg(
        long,
        global = true,
        env = "RAFTLOCK_ENDPOINTS",
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        default_value = DEV_ENDPOINTS
    )]
    pub endpoints: Vec<String>,

    /// Print JSON (one object; JSON lines for `watch` and `keep-alive`).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// How to reach a secured cluster: TLS files and a bearer token. Shared by
/// every command that talks to a cluster (docs/cli.md, "TLS and tokens").
#[derive(Debug, Clone, Default, Args)]
pub struct AuthArgs {
    /// PEM file of the CA that signed the nodes' certificates. With it,
    /// host:port endpoints use TLS (https:// ones always do; without
    /// --ca they trust the system's roots).
    #[arg(long, global = true, env = env::CA, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM file of this client's certificate (mutual TLS; its name is the
    /// identity). Needs --key.
    #[arg(long, global = true, env = env::CERT, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key. Needs --cert.
    #[arg(long, global = true, env = env::KEY, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// A bearer token (from `raftlock certs token`), sent with every call.
    /// Prefer the environment variable: a flag shows in `ps`. (Not
    /// `--token`: that is a fencing token in `release` and `extend`.)
    #[arg(
        long,
        global = true,
        env = env::TOKEN,
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,
}

impl AuthArgs {
    /// The client's TLS options and token for `endpoints`: TLS when --ca,
    /// --cert/--key or an https:// endpoint asks for it. --cert without
    /// --key (or the reverse) and unreadable files are usage errors.
    pub fn apply(&self, endpoints: &[String], options: &mut ClientOptions) -> Result<(), Failure> {
        let files_given = self.ca.is_some() || self.cert.is_some() || self.key.is_some();
        let https = endpoints
            .iter()
            .any(|e| e.trim().to_ascii_lowercase().starts_with("https://"));
        options.tls = if files_given {
            Some(
                TlsOptions::from_files(
                    self.ca.as_deref(),
                    self.cert.as_deref(),
                    self.key.as_deref(),
                )
                .map_err(|e| {
                    Failure::Usage(format!(
                        "{e}; give --ca FILE, and --cert FILE with --key FILE (or {}, {}, {})",
                        env::CA,
                        env::CERT,
                        env::KEY
                    ))
                })?,
            )
        } else if https {
            // Leaders learnt from replies are bare host:port: keep TLS.
            Some(TlsOptions::new())
        } else {
            None
        };
        options.token = self.auth_token.clone().filter(|t| !t.is_empty());
        Ok(())
    }
}

impl Conn {
    /// A client of the cluster with the CLI's retries ([`cli_retry`]): a
    /// call keeps trying for up to [`CALL_TIMEOUT`] while a cluster that
    /// answers elects a leader, and gives up after two rounds in which
    /// nothing listens.
    pub async fn client(&self) -> Result<Client, Failure> {
        self.client_with(CALL_TIMEOUT).await
    }

    /// [`Conn::client`] whose calls may take `call_timeout`.
    pub async fn client_with(&self, call_timeout: Duration) -> Result<Client, Failure> {
        let endpoints = endpoint_list(&self.endpoints)?;
        let mut options = ClientOptions {
            retry: cli_retry(),
            call_timeout,
            connect_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        self.auth.apply(&endpoints, &mut options)?;
        connect(endpoints, options).await
    }
}

/// [`Client::connect`] with its errors as usage errors that say what to fix.
pub async fn connect(endpoints: Vec<String>, options: ClientOptions) -> Result<Client, Failure> {
    Client::connect(endpoints, options)
        .await
        .map_err(|e| match e {
            raftlock_client::Error::InvalidArgument { ref field, .. } if field == "token" => {
                Failure::Usage(format!("--auth-token (or {}): {e}", env::TOKEN))
            }
            e => Failure::Usage(format!(
                "{e}; give --endpoints as host:port,..., http://host:port or https://host:port"
            )),
        })
}

/// The --endpoints list without blanks; empty is a usage error.
pub fn endpoint_list(raw: &[String]) -> Result<Vec<String>, Failure> {
    let endpoints: Vec<String> = raw
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(Failure::Usage(
            "--endpoints is empty; give host:port of at least one node".into(),
        ));
    }
    Ok(endpoints)
}

/// `--ttl 30s`, `--wait 500ms`: see [`raftlock_client::parse_duration`].
pub fn duration(text: &str) -> Result<Duration, String> {
    raftlock_client::parse_duration(text)
}

/// `--meta KEY=VALUE`.
pub fn meta_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE with a non-empty key (e.g. --meta ticket=OPS-12)".into()),
    }
}

/// The owner of a lease the CLI grants: who and where.
pub fn default_owner() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    if host.is_empty() {
        format!("{user} (raftlock cli)")
    } else {
        format!("{user}@{host} (raftlock cli)")
    }
}

/// How a command that takes a lock wants to hold it (`acquire`, `exec`).
#[derive(Debug, Clone, Args)]
pub struct HoldOptions {
    /// How long to wait in the lock's queue; 0 tries once and never waits.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub wait: Duration,
    /// exclusive (write) or shared (read).
    #[arg(long, value_enum, default_value_t = ModeArg::Exclusive, conflicts_with = "permits")]
    pub mode: ModeArg,
    /// Hold one of N permits of a semaphore instead (the first acquirer
    /// fixes N).
    #[arg(long, value_name = "N")]
    pub permits: Option<u32>,
    /// Why the lock is taken, for people inspecting it.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// KEY=VALUE kept with the hold; repeat for more.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = meta_pair)]
    pub meta: Vec<(String, String)>,
    /// If the lease expires while holding, keep the lock ungrantable this
    /// long (at most 60s).
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub lock_delay: Duration,
}

impl HoldOptions {
    /// The client's mode: a semaphore's when --permits is given.
    pub fn mode(&self) -> Mode {
        self.mode.with_permits(self.permits)
    }
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// One holder at a time (a write lock).
    Exclusive,
    /// Many holders together, never beside an exclusive one (a read lock).
    Shared,
}

impl ModeArg {
    /// The client's mode, a semaphore's when `permits` is given.
    pub fn with_permits(self, permits: Option<u32>) -> Mode {
        match (permits, self) {
            (Some(n), _) => Mode::Semaphore(n),
            (None, ModeArg::Exclusive) => Mode::Exclusive,
            (None, ModeArg::Shared) => Mode::Shared,
        }
    }
}

/// A mode's name and, for a semaphore, its permits.
pub fn mode_parts(mode: Mode) -> (&'static str, Option<u32>) {
    match mode {
        Mode::Exclusive => ("exclusive", None),
        Mode::Shared => ("shared", None),
        Mode::Semaphore(n) => ("semaphore", Some(n)),
    }
}

/// Whole milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_retries_poll_an_election_every_200_ms_at_most_until_the_deadline() {
        let retry = cli_retry();
        // The pause after any number of failures: what a command may wait
        // beyond the moment a new leader is elected.
        let mut waited = Duration::ZERO;
        for attempt in 1..=200 {
            let pause = retry.backoff(attempt);
            assert!(pause <= MAX_RETRY_PAUSE, "pause {attempt}: {pause:?}");
            waited += pause;
        }
        // Attempts do not run out before the deadline does: 200 pauses
        // already cover more than CALL_TIMEOUT (at least 80 % of 200 ms
        // each, jitter only shortens).
        assert!(waited >= CALL_TIMEOUT, "{waited:?}");
        assert!(retry.max_attempts > 400);
        assert_eq!(retry.unreachable_rounds, Some(2));
    }

    #[test]
    fn meta_needs_key_and_equals() {
        assert_eq!(meta_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(meta_pair("=x").is_err());
        assert!(meta_pair("novalue").is_err());
    }
}
