//! `raftlock force-release NAME [--lease L]`: the administrator's unlock.

use clap::Args as ClapArgs;

use crate::commands::Conn;
use crate::exit::{Failure, client_failure};
use crate::output::{mode_name, print_json};
use crate::runner;

#[derive(Debug, ClapArgs)]
pub struct ForceReleaseArgs {
    /// The lock's name.
    pub name: String,
    /// Only this lease's hold; all holds of the lock when absent.
    #[arg(long)]
    pub lease: Option<u64>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Never retried once it may have been applied: a force-release repeated
/// after it took effect would take the lock from the waiter it was just
/// handed to.
pub fn run(args: ForceReleaseArgs) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let client = args.conn.client().await?;
        let r = client
            .force_release(&args.name, args.lease)
            .await
            .map_err(|e| client_failure(&e, &args.name, args.lease))?;
        if args.conn.json {
            let released: Vec<serde_json::Value> = r
                .released
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "lease_id": h.lease_id,
                        "owner": h.owner,
                        "token": h.token,
                        "mode": mode_name(h.mode),
                    })
                })
                .collect();
            print_json(
                &serde_json::json!({"name": args.name, "released": released, "revision": r.revision}),
                true,
            )
        } else {
            if r.released.is_empty() {
                println!("{}: nothing to release (no matching hold)", args.name);
            }
            for h in &r.released {
                println!(
                    "force-released {} from lease {} ({}), token {}",
                    args.name, h.lease_id, h.owner, h.token
                );
            }
            Ok(())
        }
    })
}
