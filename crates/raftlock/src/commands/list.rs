//! `raftlock list [PREFIX]`: locks held or waited for.

use clap::Args as ClapArgs;

use crate::commands::Conn;
use crate::exit::{Failure, client_failure};
use crate::output::{LockOut, print_json, table};
use crate::runner;

#[derive(Debug, ClapArgs)]
pub struct ListArgs {
    /// Only locks whose names start with this.
    #[arg(default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(args: ListArgs) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let client = args.conn.client().await?;
        let locks = client
            .list(&args.prefix)
            .await
            .map_err(|e| client_failure(&e, &args.prefix, None))?;
        let out: Vec<LockOut> = locks.into_iter().map(LockOut::new).collect();
        if args.conn.json {
            return print_json(&out, true);
        }
        if out.is_empty() {
            println!("no locks held or waited for");
            return Ok(());
        }
        let rows: Vec<Vec<String>> = out
            .iter()
            .map(|l| {
                let owners: Vec<String> = l
                    .holders
                    .iter()
                    .map(|h| format!("{} (lease {}, token {})", h.owner, h.lease_id, h.token))
                    .collect();
                vec![
                    l.name.clone(),
                    l.kind.to_string(),
                    l.holders.len().to_string(),
                    l.queue.len().to_string(),
                    owners.join("; "),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["NAME", "KIND", "HOLDERS", "WAITING", "HELD BY"], &rows)
        );
        Ok(())
    })
}
