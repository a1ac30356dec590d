//! `raftlock exec NAME -- COMMAND ARGS...`: run a command while holding a
//! lock (the "with-lock" recipe), built only on the public client API.
//!
//! 1. A [`Session`] (one lease, kept alive in the background) takes the lock.
//! 2. COMMAND runs in its own process group with the lock's name, fencing
//!    token and lease in its environment.
//! 3. Its exit code is ours (128+s if signal s killed it); the lock is
//!    released afterwards whatever happened.
//!
//! The watchdog: the session knows until when its lease is *certainly*
//! alive (`valid_until`, counted from the send time of the last acknowledged
//! keep-alive). If keep-alives stop getting through, COMMAND gets --signal
//! at `valid_until - margin` and SIGKILL --kill-after later, and we exit 4.
//! The deadline is re-read whenever it is reached, so a renewal in between
//! re-arms it further out.
//!
//! SIGINT, SIGTERM and SIGHUP are forwarded to COMMAND's process group; we
//! wait for it (SIGKILL after --kill-after, or at once on a second signal),
//! release, and exit 128+signal.

use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use raftlock_client::{ClientOptions, LockGuard, Mode, Session, SessionOptions};
use raftlock_proto::auth::env;
use tokio::process::Child;

use crate::commands::{
    self, AuthArgs, DEV_ENDPOINTS, HoldOptions, connect, default_owner, duration, endpoint_list,
};
use crate::exit::client_failure;
use crate::{Failure, runner};

/// Exit codes of `exec`, for --help and docs/cli.md.
pub const EXEC_EXIT_CODES: &str = "Exit codes: COMMAND's own exit code when it ran to the end \
    (128+N if signal N killed it); 1 error before COMMAND ran (no node answered, ...); 2 bad \
    usage or invalid input; 3 lock busy or --wait timed out (COMMAND not run); 4 the lock was \
    lost while COMMAND ran (keep-alives failed; COMMAND was stopped with --signal, then \
    SIGKILL); 5 not allowed (DENIED, UNAUTHENTICATED; COMMAND not run); 126 COMMAND not \
    executable; 127 COMMAND not found; 129/130/143 exec got \
    SIGHUP/SIGINT/SIGTERM (forwarded to COMMAND, lock released). COMMAND's own codes can be \
    1 to 5 too: exec's own failures are the ones with an `error:` line on stderr. See \
    docs/cli.md.";

/// Longest wait for a revoke when giving up before COMMAND ran.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a lost session's revoke may delay the exit.
const LOST_REVOKE_TIMEOUT: Duration = Duration::from_millis(250);

/// Largest --margin when none is given.
const DEFAULT_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The lock's name, such as jobs/nightly (1 to 512 bytes).
    pub name: String,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,

    /// Ttl of the lease held while COMMAND runs (kept alive every ttl/3):
    /// how long the lock outlives this process if it dies.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub ttl: Duration,

    #[command(flatten)]
    pub hold: HoldOptions,

    /// Owner of the lease, shown by inspect.
    #[arg(long, default_value_t = default_owner())]
    pub owner: String,

    /// Signal sent to COMMAND's process group when the lease cannot be kept
    /// alive: TERM, INT, HUP, QUIT, KILL, USR1, USR2 (or SIGTERM, or a number).
    #[arg(long, default_value = "TERM", value_parser = parse_signal)]
    pub signal: Sig,

    /// Stop COMMAND this long before the lease's certain validity ends
    /// [default: 2s, or ttl/4 if smaller]. At most ttl/2 (keep-alives go
    /// every ttl/3).
    #[arg(long, value_parser = duration)]
    pub margin: Option<Duration>,

    /// After --signal (or a forwarded Ctrl-C/SIGTERM), wait this long for
    /// COMMAND to exit, then SIGKILL its process group.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub kill_after: Duration,

    /// Say on stderr when the lock is taken and released, and, if
    /// keep-alives fail, when COMMAND is stopped and why (as Unix ms: the
    /// send time of the last acknowledged keep-alive, the end of the lease's
    /// certain validity).
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// Nodes of the cluster as host:port (comma-separated). The default is
    /// the `raftlock dev` cluster.
    #[arg(
        long,
        env = "RAFTLOCK_ENDPOINTS",
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        default_value = DEV_ENDPOINTS
    )]
    pub endpoints: Vec<String>,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// A signal, by number and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sig {
    pub number: i32,
    pub name: &'static str,
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("TERM", libc::SIGTERM),
];

fn parse_signal(text: &str) -> Result<Sig, String> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.strip_prefix("SIG").unwrap_or(&t);
    let found = match t.parse::<i32>() {
        Ok(n) => SIGNALS.iter().find(|(_, num)| *num == n),
        Err(_) => SIGNALS.iter().find(|(name, _)| *name == t),
    };
    found
        .map(|(name, number)| Sig {
            number: *number,
            name,
        })
        .ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown signal; one of {} (or its number)",
                names.join(", ")
            )
        })
}

fn signal_name(number: i32) -> String {
    SIGNALS.iter().find(|(_, n)| *n == number).map_or_else(
        || format!("signal {number}"),
        |(name, _)| format!("SIG{name}"),
    )
}

/// Checked options: the margin and the mode.
struct Plan {
    margin: Duration,
    mode: Mode,
}

fn plan(args: &ExecArgs) -> Result<Plan, Failure> {
    if args.ttl < Duration::from_secs(1) {
        return Err(Failure::Usage(format!(
            "--ttl {:?} is below the shortest lease ttl, 1s",
            args.ttl
        )));
    }
    let margin = args.margin.unwrap_or(DEFAULT_MARGIN.min(args.ttl / 4));
    if margin >= args.ttl {
        return Err(Failure::Usage(format!(
            "--margin ({margin:?}) must be below --ttl ({:?}): COMMAND is stopped --margin \
             before the lease's certain validity ends",
            args.ttl
        )));
    }
    if margin > args.ttl / 2 {
        return Err(Failure::Usage(format!(
            "--margin ({margin:?}) must be at most half of --ttl ({:?}): keep-alives go every \
             ttl/3, so between two of them the lease is certainly valid for only about 2/3 of \
             the ttl, and a larger margin would stop COMMAND while all is well; raise --ttl or \
             lower --margin",
            args.ttl
        )));
    }
    if args.command.first().is_none_or(String::is_empty) {
        return Err(Failure::Usage(
            "no COMMAND given; usage: raftlock exec NAME [OPTIONS] -- COMMAND [ARGS...]".into(),
        ));
    }
    if args.hold.permits == Some(0) {
        return Err(Failure::Usage(
            "--permits must be at least 1 (e.g. --permits 4)".into(),
        ));
    }
    let mode = args.hold.mode();
    Ok(Plan { margin, mode })
}

/// SIGINT, SIGTERM and SIGHUP, caught from before the lock is taken.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new(rt: &tokio::runtime::Runtime) -> Result<Signals, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let _ctx = rt.enter();
        let fail =
            |e: std::io::Error| Failure::Runtime(format!("cannot install signal handlers: {e}"));
        Ok(Signals {
            int: signal(SignalKind::interrupt()).map_err(fail)?,
            term: signal(SignalKind::terminate()).map_err(fail)?,
            hup: signal(SignalKind::hangup()).map_err(fail)?,
        })
    }

    /// The next signal's number.
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

pub fn run(args: ExecArgs) -> Result<(), Failure> {
    let plan = plan(&args)?;
    let endpoints = endpoint_list(&args.endpoints)?;
    let rt = runner::control_runtime()?;
    let mut signals = Signals::new(&rt)?;
    let result = rt.block_on(exec(&args, &plan, &endpoints, &mut signals));
    // Let background work (a dropped guard's release) go without waiting.
    rt.shutdown_background();
    match result? {
        0 => Ok(()),
        code => Err(Failure::Exit(code)),
    }
}

/// A signal came before the lock was taken: say so; the exit code.
fn gave_up(sig: i32, name: &str) -> u8 {
    eprintln!(
        "raftlock exec: {} before {name} was acquired; COMMAND not run",
        signal_name(sig)
    );
    signal_code(sig)
}

/// 128 + a signal's number, as shells report it.
fn signal_code(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(1)
}

/// How the run ended, when it got as far as COMMAND.
enum Ending {
    /// COMMAND exited by itself.
    Exited(ExitStatus),
    /// We got this signal and forwarded it.
    Signalled(i32, ExitStatus),
    /// The lease could not be kept alive; COMMAND was stopped.
    LeaseLost {
        why: String,
        status: ExitStatus,
        killed: bool,
    },
}

async fn exec(
    args: &ExecArgs,
    plan: &Plan,
    endpoints: &[String],
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let name = args.name.as_str();
    let mut options = ClientOptions::default();
    args.auth.apply(endpoints, &mut options)?;
    let client = connect(endpoints.to_vec(), options).await?;

    // Take the lock. A signal meanwhile gives up: the lease is revoked,
    // which also withdraws a queued wait.
    let session = tokio::select! {
        r = client.session(SessionOptions::new(args.ttl).owner(args.owner.clone())) => {
            r.map_err(|e| client_failure(&e, name, None))?
        }
        sig = signals.recv() => return Ok(gave_up(sig, name)),
    };
    let mut builder = session
        .lock(name)
        .mode(plan.mode)
        .wait(args.hold.wait)
        .reason(args.hold.reason.clone())
        .lock_delay(args.hold.lock_delay);
    for (k, v) in &args.hold.meta {
        builder = builder.metadata(k.clone(), v.clone());
    }
    let acquired = tokio::select! {
        r = builder.acquire() => Ok(r),
        sig = signals.recv() => Err(sig),
    };
    let guard = match acquired {
        Ok(Ok(guard)) => guard,
        Ok(Err(e)) => {
            let failure = client_failure(&e, name, None);
            let _ = tokio::time::timeout(CALL_TIMEOUT, session.revoke()).await;
            return Err(failure);
        }
        Err(sig) => {
            let _ = tokio::time::timeout(CALL_TIMEOUT, session.revoke()).await;
            return Ok(gave_up(sig, name));
        }
    };
    if args.verbose {
        eprintln!(
            "raftlock exec: holding {name} (token {}, lease {}); running {:?}",
            guard.token(),
            session.lease_id(),
            args.command
        );
    }

    // Never start COMMAND on a lease that may not outlive the margin (the
    // acquire itself can take long enough, e.g. across an election).
    let certain = session
        .valid_until()
        .is_some_and(|until| until > Instant::now() + plan.margin);
    if !certain {
        drop(guard);
        let _ = tokio::time::timeout(LOST_REVOKE_TIMEOUT, session.revoke()).await;
        return Err(Failure::LeaseLost(format!(
            "lost the lock {name} before running {:?}: lease {} is not certainly valid for \
             more than --margin {:?}; COMMAND was not run",
            args.command[0],
            session.lease_id(),
            plan.margin
        )));
    }
    let child = match spawn(args, &session, &guard, endpoints) {
        Ok(c) => c,
        Err(e) => {
            release(args, &session, guard).await;
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            eprintln!("error: cannot run {:?}: {e}", args.command[0]);
            return Ok(code);
        }
    };
    let ending = supervise(child, &session, plan.margin, args, signals).await;
    match ending {
        Ending::Exited(status) => {
            release(args, &session, guard).await;
            Ok(exit_code(status))
        }
        Ending::Signalled(sig, status) => {
            release(args, &session, guard).await;
            eprintln!(
                "raftlock exec: {} forwarded to {:?}, which {}; released {name}",
                signal_name(sig),
                args.command[0],
                describe(status)
            );
            Ok(signal_code(sig))
        }
        Ending::LeaseLost {
            why,
            status,
            killed,
        } => {
            // Best effort, briefly (the cluster is probably unreachable, and
            // exiting promptly matters more): if the lease is still alive,
            // ending it frees the lock at once.
            drop(guard);
            let _ = tokio::time::timeout(LOST_REVOKE_TIMEOUT, session.revoke()).await;
            Err(Failure::LeaseLost(format!(
                "lost the lock {name}: lease {} could not be kept alive ({why}); stopped {:?} \
                 with {}{}, which {}. Its work may be incomplete, and another holder may now \
                 have the lock",
                session.lease_id(),
                args.command[0],
                args.signal.name,
                if killed { " and then SIGKILL" } else { "" },
                describe(status)
            )))
        }
    }
}

fn spawn(
    args: &ExecArgs,
    session: &Session,
    guard: &LockGuard,
    endpoints: &[String],
) -> std::io::Result<Child> {
    let mut cmd = tokio::process::Command::new(&args.command[0]);
    let (mode, permits) = commands::mode_parts(guard.mode());
    let mut vars: Vec<(&str, String)> = vec![
        ("RAFTLOCK_LOCK_NAME", guard.name().to_string()),
        ("RAFTLOCK_FENCING_TOKEN", guard.token().to_string()),
        ("RAFTLOCK_LEASE_ID", session.lease_id().to_string()),
        (
            "RAFTLOCK_LEASE_TTL_MS",
            session.ttl().as_millis().to_string(),
        ),
        ("RAFTLOCK_LOCK_MODE", mode.to_string()),
        ("RAFTLOCK_ENDPOINTS", endpoints.join(",")),
    ];
    if let Some(n) = permits {
        vars.push(("RAFTLOCK_LOCK_PERMITS", n.to_string()));
    }
    // The TLS files and the token exec used, for the same reason as the
    // endpoints (given as environment variables, COMMAND has them already).
    for (key, path) in [
        (env::CA, &args.auth.ca),
        (env::CERT, &args.auth.cert),
        (env::KEY, &args.auth.key),
    ] {
        if let Some(path) = path {
            vars.push((key, path.display().to_string()));
        }
    }
    if let Some(token) = &args.auth.auth_token {
        vars.push((env::TOKEN, token.clone()));
    }
    cmd.args(&args.command[1..])
        .envs(vars)
        // Its own process group, so signals reach its children too.
        .process_group(0)
        // If we die in a way that still runs destructors, do not leave it.
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    {
        // If we are killed outright (SIGKILL, OOM), nobody keeps the lease
        // alive any more and nobody would send a later SIGKILL: COMMAND is
        // killed at once rather than run on unlocked.
        let sig = libc::SIGKILL;
        let parent = i32::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: between fork and exec only async-signal-safe calls
        // (prctl, getppid) and no allocation on the success path.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::c_ulong::try_from(sig).unwrap_or(0),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other(
                        "raftlock exec ended before COMMAND started",
                    ));
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

/// Sends `sig` to the process group led by `pid`.
fn signal_group(pid: Option<u32>, sig: i32) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // SAFETY: kill(2) on the process group of a child we spawned and have not
    // reaped yet (`Child::id` is None once reaped), so the id is not reused.
    unsafe {
        libc::kill(-pid, sig);
    }
}

/// Why the watchdog fired, and the end of the lease's certain validity it
/// judged by (`None`: already ended).
struct Fired {
    why: String,
    valid_until: Option<Instant>,
}

/// Resolves when COMMAND must be stopped because the lease is no longer
/// certainly alive for long enough: at `valid_until - margin` (re-read when
/// reached, so renewals in between push it out), or as soon as the session
/// is known lost.
async fn watchdog(session: &Session, margin: Duration) -> Fired {
    loop {
        let Some(valid_until) = session.valid_until() else {
            return Fired {
                why: "the cluster ended the lease".into(),
                valid_until: None,
            };
        };
        let fire_at = valid_until.checked_sub(margin).unwrap_or(valid_until);
        if Instant::now() >= fire_at {
            return Fired {
                why: format!(
                    "no keep-alive acknowledged in time; its certain validity ends in {:?}",
                    valid_until.saturating_duration_since(Instant::now())
                ),
                valid_until: Some(valid_until),
            };
        }
        tokio::select! {
            _ = tokio::time::sleep_until(fire_at.into()) => {}
            _ = session.lost() => {
                return Fired {
                    why: "the cluster no longer knows the lease, or its validity passed".into(),
                    valid_until: None,
                };
            }
        }
    }
}

/// A moment on the monotonic clock as Unix ms on the wall clock (for
/// people and logs only: nothing is decided by it).
fn unix_ms(at: Instant) -> u128 {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let wall_at = if at <= now {
        wall.checked_sub(now - at)
    } else {
        wall.checked_add(at - now)
    };
    wall_at
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis())
}

/// The --verbose line for a watchdog that fired: what the lease's certain
/// validity was counted from, and when COMMAND got --signal.
fn say_stopping(session: &Session, args: &ExecArgs, margin: Duration, fired: &Fired, sent: &str) {
    let signal_at = unix_ms(Instant::now());
    let times = fired.valid_until.map_or_else(String::new, |until| {
        // valid_until = send time of the last acknowledged keep-alive + ttl
        // - drift margin (SessionOptions::new's, as used by `exec`).
        let counted = session
            .ttl()
            .saturating_sub(SessionOptions::new(session.ttl()).drift_margin);
        let ack_sent = until.checked_sub(counted).unwrap_or(until);
        format!(
            " last_ack_sent_unix_ms={} valid_until_unix_ms={}",
            unix_ms(ack_sent),
            unix_ms(until)
        )
    });
    eprintln!(
        "raftlock exec: lease {} cannot be kept alive ({}); sent {sent} to {:?}: \
         signal_at_unix_ms={signal_at}{times} margin_ms={} ttl_ms={}",
        session.lease_id(),
        fired.why,
        args.command[0],
        margin.as_millis(),
        session.ttl().as_millis()
    );
}

/// Runs COMMAND to its end, stopping it on a signal or when the lease
/// cannot be kept alive.
async fn supervise(
    mut child: Child,
    session: &Session,
    margin: Duration,
    args: &ExecArgs,
    signals: &mut Signals,
) -> Ending {
    let pid = child.id();
    // Why we are stopping COMMAND, and when SIGKILL goes.
    let mut forwarded: Option<i32> = None;
    let mut lost: Option<String> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let status = loop {
        let kill_deadline = kill_at.filter(|_| !killed);
        let kill_wait = async move {
            match kill_deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => break status,
            sig = signals.recv() => {
                if forwarded.is_some() || lost.is_some() {
                    // A second signal: stop now.
                    signal_group(pid, libc::SIGKILL);
                    killed = true;
                } else {
                    signal_group(pid, sig);
                    forwarded = Some(sig);
                    kill_at = Some(Instant::now() + args.kill_after);
                }
            }
            fired = watchdog(session, margin), if lost.is_none() => {
                // SIGKILL goes no later than the end of the lease's certain
                // validity, whatever --kill-after says: after that instant
                // another client may hold the lock. A lease already gone
                // leaves no time at all.
                let now = Instant::now();
                let validity_end = session.valid_until().unwrap_or(now);
                let watchdog_kill = (now + args.kill_after).min(validity_end);
                let sent = if args.signal.number == libc::SIGKILL || watchdog_kill <= now {
                    signal_group(pid, libc::SIGKILL);
                    killed = true;
                    signal_name(libc::SIGKILL)
                } else {
                    signal_group(pid, args.signal.number);
                    signal_name(args.signal.number)
                };
                if args.verbose {
                    say_stopping(session, args, margin, &fired, &sent);
                }
                lost = Some(fired.why);
                // After a forwarded signal, keep its (earlier) SIGKILL time.
                kill_at = Some(kill_at.map_or(watchdog_kill, |t| t.min(watchdog_kill)));
            }
            () = kill_wait => {
                signal_group(pid, libc::SIGKILL);
                killed = true;
            }
        }
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            // Cannot wait for it (should not happen): make sure it is gone.
            eprintln!("raftlock exec: cannot wait for COMMAND ({e}); killing it");
            signal_group(pid, libc::SIGKILL);
            let _ = child.kill().await;
            use std::os::unix::process::ExitStatusExt;
            ExitStatus::from_raw(libc::SIGKILL)
        }
    };
    // Whatever else COMMAND started in its group goes with it.
    if killed {
        signal_group(pid, libc::SIGKILL);
    }
    match (lost, forwarded) {
        (Some(why), _) => Ending::LeaseLost {
            why,
            status,
            killed,
        },
        (None, Some(sig)) => Ending::Signalled(sig, status),
        (None, None) => Ending::Exited(status),
    }
}

/// Release the lock and end the lease; a failure is reported, not fatal
/// (the lease expires after its ttl anyway).
async fn release(args: &ExecArgs, session: &Session, guard: LockGuard) {
    let name = guard.name().to_string();
    if let Err(e) = guard.release().await {
        eprintln!(
            "raftlock exec: warning: could not release {name} ({e}); it is freed when lease {} \
             ends",
            session.lease_id()
        );
    }
    if let Err(e) = session.revoke().await {
        eprintln!(
            "raftlock exec: warning: could not revoke lease {} ({e}); it expires after its ttl",
            session.lease_id()
        );
    } else if args.verbose {
        eprintln!("raftlock exec: released {name}");
    }
}

/// A shell's exit code for a status: the code, or 128+signal.
fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(s)) => u8::try_from((128 + s) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by {}", signal_name(s)),
        (None, None) => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        exec: ExecArgs,
    }

    fn parse(argv: &[&str]) -> Result<ExecArgs, clap::Error> {
        let mut full = vec!["exec"];
        full.extend_from_slice(argv);
        Wrap::try_parse_from(full).map(|w| w.exec)
    }

    #[test]
    fn signals_parse_by_name_prefix_or_number() {
        assert_eq!(parse_signal("TERM").map(|s| s.number), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sigint").map(|s| s.number), Ok(libc::SIGINT));
        assert_eq!(parse_signal("9").map(|s| s.name), Ok("KILL"));
        assert!(parse_signal("BOGUS").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn the_margin_defaults_to_2s_or_a_quarter_of_the_ttl() {
        let a = parse(&["n", "--", "true"]).expect("parse");
        assert_eq!(
            plan(&a).map(|p| p.margin).ok(),
            Some(Duration::from_secs(2))
        );
        let a = parse(&["n", "--ttl", "2s", "--", "true"]).expect("parse");
        assert_eq!(
            plan(&a).map(|p| p.margin).ok(),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn a_margin_above_half_the_ttl_is_a_usage_error() {
        for margin in ["30s", "40s", "16s"] {
            let a = parse(&["n", "--ttl", "30s", "--margin", margin, "--", "true"]).expect("parse");
            assert_eq!(plan(&a).err().map(|f| f.code()), Some(2), "{margin}");
        }
        let a = parse(&["n", "--ttl", "30s", "--margin", "15s", "--", "true"]).expect("parse");
        assert!(plan(&a).is_ok());
    }

    #[test]
    fn the_command_comes_after_a_double_dash() {
        let a = parse(&["jobs/x", "--wait", "0", "--", "sh", "-c", "exit 3"]).expect("parse");
        assert_eq!(a.command, ["sh", "-c", "exit 3"]);
        assert_eq!(a.hold.wait, Duration::ZERO);
        assert!(parse(&["jobs/x"]).is_err(), "COMMAND is required");
        assert!(parse(&["jobs/x", "--permits", "2", "--mode", "shared", "--", "true"]).is_err());
        let a = parse(&["jobs/x", "--permits", "0", "--", "true"]).expect("parse");
        assert_eq!(plan(&a).err().map(|f| f.code()), Some(2));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
