//! `raftlock acquire NAME`: take a lock for a lease (a new one by
//! default) and print the lease, the fencing token and the expiry.

use std::time::Duration;

use clap::Args as ClapArgs;

use crate::commands::{Conn, HoldOptions, default_owner, duration, millis, mode_parts};
use crate::exit::{Failure, client_failure};
use crate::output::{ms_text, now_unix_ms, print_json, write_line};
use crate::runner;

#[derive(Debug, ClapArgs)]
pub struct AcquireArgs {
    /// The lock's name, such as jobs/nightly (1 to 512 bytes).
    pub name: String,
    /// Hold it for this lease; by default a new lease is granted with --ttl.
    #[arg(long, value_name = "LEASE")]
    pub lease: Option<u64>,
    /// Ttl of the new lease (when no --lease): 500ms, 30s, 5m.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub hold: HoldOptions,
    /// Owner of the new lease (when no --lease).
    #[arg(long, default_value_t = default_owner())]
    pub owner: String,
    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(args: AcquireArgs) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    let mode = args.hold.mode();
    let name = args.name.clone();
    rt.block_on(async {
        let client = args.conn.client().await?;
        let (lease_id, ttl_ms, granted) = match args.lease {
            Some(l) => (l, None, false),
            None => {
                let (id, ttl) = client
                    .grant_lease(args.ttl, &args.owner)
                    .await
                    .map_err(|e| client_failure(&e, "", None))?;
                (id, Some(millis(ttl)), true)
            }
        };
        let lease = client.lease_ref(lease_id);
        let mut lock = lease
            .lock(name.clone())
            .mode(mode)
            .wait(args.hold.wait)
            .reason(args.hold.reason.clone())
            .lock_delay(args.hold.lock_delay);
        for (k, v) in &args.hold.meta {
            lock = lock.metadata(k.clone(), v.clone());
        }
        // A retry (the same lease: it finds its queued request or its hold)
        // waits only for what is left of --wait, not the whole of it again.
        let r = match lock.acquire().await {
            Ok(r) => r,
            Err(e) => {
                if granted {
                    // Best effort: the lease would expire by itself anyway.
                    let _ = lease.revoke().await;
                }
                return Err(client_failure(&e, &name, Some(lease_id)));
            }
        };
        let (mode_text, permits) = mode_parts(mode);
        let permits = permits.unwrap_or(0);
        let expires = ttl_ms.map(|t| now_unix_ms() + t);
        if args.conn.json {
            print_json(
                &serde_json::json!({
                    "name": name,
                    "lease_id": lease_id,
                    "lease_granted": granted,
                    "token": r.token,
                    "mode": mode_text,
                    "permits": permits,
                    "ttl_ms": ttl_ms,
                    "expires_at_unix_ms": expires,
                    "revision": r.revision,
                    "waited_ms": r.waited_ms,
                    "retry": r.retry,
                }),
                true,
            )
        } else {
            let expiry = match ttl_ms {
                Some(t) => format!(
                    "expiry  in {} with the new lease, unless kept alive: raftlock lease \
                     keep-alive {lease_id}",
                    ms_text(t)
                ),
                None => format!(
                    "expiry  when lease {lease_id} expires (its ttl after its last keep-alive)"
                ),
            };
            // A closed stdout (`| head -1`) still leaves the lock acquired:
            // exit 0, as the exit code is what says so.
            write_line(&format!(
                "acquired {name} ({mode_text})\nlease   {lease_id}\ntoken   {}\n{expiry}\n\
                 release with: raftlock release {name} --token {} --lease {lease_id}",
                r.token, r.token
            ))
            .map(drop)
        }
    })
}
