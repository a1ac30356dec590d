//! `raftlock release NAME --lease L --token T`.

use clap::Args as ClapArgs;

use crate::commands::Conn;
use crate::exit::{Failure, client_failure};
use crate::output::print_json;
use crate::runner;

#[derive(Debug, ClapArgs)]
pub struct HoldArgs {
    /// The lock's name.
    pub name: String,
    /// The fencing token printed by acquire.
    #[arg(long)]
    pub token: u64,
    /// The lease that holds the lock.
    #[arg(long)]
    pub lease: u64,
    #[command(flatten)]
    pub conn: Conn,
}

/// Release one hold. Not retried once the outcome is unknown (the answer
/// was lost): a retry would meet NOT_HOLDER for the release that happened.
pub fn run(args: HoldArgs) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let client = args.conn.client().await?;
        let r = client
            .lease_ref(args.lease)
            .release(std::slice::from_ref(&args.name), args.token)
            .await
            .map_err(|e| client_failure(&e, &args.name, Some(args.lease)))?;
        if args.conn.json {
            print_json(
                &serde_json::json!({"released": r.names, "revision": r.revision}),
                true,
            )
        } else {
            println!("released {}", r.names.join(", "));
            Ok(())
        }
    })
}
