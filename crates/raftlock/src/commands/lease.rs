//! `raftlock lease grant|revoke|list|keep-alive`.

use std::time::Duration;

use clap::{Args as ClapArgs, Subcommand};
use futures::StreamExt;
use serde::Serialize;

use crate::commands::{Conn, default_owner, duration, millis};
use crate::exit::{Failure, client_failure};
use crate::output::{ago, json_text, ms_text, now_unix_ms, print_json, table, write_line};
use crate::runner::{self, Signals};

#[derive(Debug, ClapArgs)]
pub struct LeaseArgs {
    #[command(subcommand)]
    pub command: LeaseCommand,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease; prints its id and ttl. It expires after --ttl unless
    /// kept alive (`raftlock lease keep-alive ID`).
    Grant {
        /// Time to live without a keep-alive (1s to 24h): 500ms, 30s, 5m.
        #[arg(long, default_value = "30s", value_parser = duration)]
        ttl: Duration,
        /// Who holds it (shown by inspect): a person, job or host.
        #[arg(long, default_value_t = default_owner())]
        owner: String,
    },
    /// End a lease now: its locks are released, its waits dropped.
    Revoke {
        /// The lease id.
        lease: u64,
    },
    /// Leases alive, with owner, ttl and the locks they hold.
    List,
    /// Keep a lease alive until Ctrl-C, printing each renewal.
    KeepAlive {
        /// The lease id.
        lease: u64,
    },
}

pub fn run(args: LeaseArgs) -> Result<(), Failure> {
    let json = args.conn.json;
    let rt = runner::control_runtime()?;
    match args.command {
        LeaseCommand::Grant { ttl, owner } => rt.block_on(async {
            let client = args.conn.client().await?;
            let (lease_id, ttl) = client
                .grant_lease(ttl, &owner)
                .await
                .map_err(|e| client_failure(&e, "", None))?;
            let ttl_ms = millis(ttl);
            if json {
                print_json(
                    &serde_json::json!({
                        "lease_id": lease_id,
                        "ttl_ms": ttl_ms,
                        "owner": owner,
                        "expires_at_unix_ms": now_unix_ms() + ttl_ms,
                    }),
                    true,
                )
            } else {
                println!(
                    "lease {lease_id} granted, ttl {} (expires unless kept alive: raftlock lease \
                     keep-alive {lease_id})",
                    ms_text(ttl_ms),
                );
                Ok(())
            }
        }),
        LeaseCommand::Revoke { lease } => rt.block_on(async {
            let client = args.conn.client().await?;
            let r = client
                .lease_ref(lease)
                .revoke()
                .await
                .map_err(|e| client_failure(&e, "", Some(lease)))?;
            let released: Vec<String> = r.released.iter().map(|g| g.name.clone()).collect();
            if json {
                print_json(
                    &serde_json::json!({
                        "lease_id": lease,
                        "released": released,
                        "revision": r.revision,
                    }),
                    true,
                )
            } else {
                if released.is_empty() {
                    println!("lease {lease} revoked (it held no locks)");
                } else {
                    println!("lease {lease} revoked; released {}", released.join(", "));
                }
                Ok(())
            }
        }),
        LeaseCommand::List => rt.block_on(async {
            let client = args.conn.client().await?;
            let leases = client
                .leases()
                .await
                .map_err(|e| client_failure(&e, "", None))?;
            if json {
                #[derive(Serialize)]
                struct LeaseOut {
                    lease_id: u64,
                    owner: String,
                    ttl_ms: u64,
                    granted_at_unix_ms: u64,
                    holds: Vec<String>,
                    waits: Vec<u64>,
                    remaining_ms: Option<u64>,
                }
                let out: Vec<LeaseOut> = leases
                    .into_iter()
                    .map(|l| LeaseOut {
                        lease_id: l.lease_id,
                        owner: l.owner,
                        ttl_ms: l.ttl_ms,
                        granted_at_unix_ms: l.granted_at_unix_ms,
                        holds: l.holds,
                        waits: l.waits,
                        remaining_ms: l.remaining_ms,
                    })
                    .collect();
                print_json(&out, true)
            } else {
                if leases.is_empty() {
                    println!("no leases");
                    return Ok(());
                }
                let rows: Vec<Vec<String>> = leases
                    .iter()
                    .map(|l| {
                        vec![
                            l.lease_id.to_string(),
                            l.owner.clone(),
                            ms_text(l.ttl_ms),
                            l.remaining_ms.map_or("-".into(), ms_text),
                            ago(l.granted_at_unix_ms),
                            l.holds.join(","),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["LEASE", "OWNER", "TTL", "REMAINING", "GRANTED", "HOLDS"],
                        &rows
                    )
                );
                Ok(())
            }
        }),
        LeaseCommand::KeepAlive { lease } => {
            let mut signals = Signals::new(&rt)?;
            rt.block_on(async {
                tokio::select! {
                    r = keep_alive(&args.conn, lease, json) => r,
                    sig = signals.recv() => {
                        eprintln!("{sig}: stopped keeping lease {lease} alive; it expires after its ttl");
                        Ok(())
                    }
                }
            })
        }
    }
}

/// Renews every ttl/3 through [`raftlock_client::LeaseRef::keep_alive`]
/// (which reopens a broken stream), printing each renewal; ends on
/// LEASE_NOT_FOUND / LEASE_EXPIRING (exit 4), or when stdout closes.
async fn keep_alive(conn: &Conn, lease: u64, json: bool) -> Result<(), Failure> {
    let client = conn.client().await?;
    let mut renewals = client.lease_ref(lease).keep_alive();
    while let Some(renewal) = renewals.next().await {
        let r = renewal.map_err(|e| client_failure(&e, "", Some(lease)))?;
        let line = if json {
            json_text(
                &serde_json::json!({
                    "lease_id": r.lease_id,
                    "ttl_ms": r.ttl_ms,
                    "renewed_at_unix_ms": now_unix_ms(),
                }),
                false,
            )?
        } else {
            format!("lease {} renewed, ttl {}", r.lease_id, ms_text(r.ttl_ms))
        };
        if !write_line(&line)? {
            // `raftlock lease keep-alive 7 | head -1`: the reader has gone,
            // as it would on Ctrl-C.
            eprintln!(
                "stdout closed: stopped keeping lease {lease} alive; it expires after its ttl"
            );
            return Ok(());
        }
    }
    Err(Failure::Runtime(format!(
        "the keep-alives of lease {lease} stopped unexpectedly"
    )))
}
