//! `raftlock extend NAME --lease L --token T [--ttl D]`.

use std::time::Duration;

use clap::Args as ClapArgs;

use crate::commands::{duration, release::HoldArgs};
use crate::exit::{Failure, client_failure};
use crate::output::{ms_text, now_unix_ms, print_json};
use crate::runner;

#[derive(Debug, ClapArgs)]
pub struct ExtendArgs {
    #[command(flatten)]
    pub hold: HoldArgs,
    /// Give the lease this new ttl (1s to 24h).
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
}

pub fn run(args: ExtendArgs) -> Result<(), Failure> {
    let hold = args.hold;
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let client = hold.conn.client().await?;
        let r = client
            .lease_ref(hold.lease)
            .extend(&hold.name, hold.token, args.ttl)
            .await
            .map_err(|e| client_failure(&e, &hold.name, Some(hold.lease)))?;
        if hold.conn.json {
            print_json(
                &serde_json::json!({
                    "name": hold.name,
                    "lease_id": hold.lease,
                    "ttl_ms": r.ttl_ms,
                    "extensions": r.extensions,
                    "expires_at_unix_ms": now_unix_ms() + r.ttl_ms,
                    "revision": r.revision,
                }),
                true,
            )
        } else {
            println!(
                "extended {}: lease {} lives {} from now unless kept alive (extension {})",
                hold.name,
                hold.lease,
                ms_text(r.ttl_ms),
                r.extensions
            );
            Ok(())
        }
    })
}
