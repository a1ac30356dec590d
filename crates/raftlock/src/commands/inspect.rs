//! `raftlock inspect NAME`: holders (owner, token, since, reason,
//! metadata) and queue of one lock.

use clap::Args as ClapArgs;

use crate::commands::Conn;
use crate::exit::{Failure, client_failure};
use crate::output::{LockOut, print_json};
use crate::runner;

#[derive(Debug, ClapArgs)]
pub struct InspectArgs {
    /// The lock's name.
    pub name: String,
    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(args: InspectArgs) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let client = args.conn.client().await?;
        let info = client
            .inspect(&args.name)
            .await
            .map_err(|e| client_failure(&e, &args.name, None))?;
        let out = info.map_or_else(|| LockOut::free(&args.name), LockOut::new);
        if args.conn.json {
            print_json(&out, true)
        } else {
            print!("{}", out.text());
            Ok(())
        }
    })
}
