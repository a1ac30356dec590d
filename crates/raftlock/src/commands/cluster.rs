//! `raftlock cluster status|add-learner|promote|remove|forget`: the membership
//! calls of the Admin API. Membership changes go to the leader (the calls
//! follow a NOT_LEADER's leader address).

use std::time::Duration;

use clap::{Args, Subcommand};
use raftlock_proto::v1 as pb;

use raftlock_client::Client;

use crate::commands::{CALL_TIMEOUT, Conn, status};
use crate::exit::{Failure, client_failure};
use crate::output::print_json;
use crate::runner;

/// How long `add-learner` may wait for the learner to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster as one node sees it (the same as `raftlock status`).
    Status(status::StatusArgs),
    /// Add a node as a non-voting learner: it starts receiving the log.
    ///
    /// Start the node first with `raftlock serve --id ID --listen ADDR`
    /// (and its TLS flags, or --insecure) without --peers (it waits to be
    /// added). Then `promote` it to a voter.
    /// A new node needs a new id: never reuse the id of a node whose data
    /// was lost.
    AddLearner {
        /// The new node's id (unique in the cluster, at least 1).
        id: u64,
        /// The new node's PEER address, host:port, at which the other
        /// nodes reach it (its --peer-listen port, e.g. 10.0.0.4:8401).
        address: String,
        /// Return once the membership entry is committed, without waiting
        /// for the learner to catch up with the log.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make a learner a voter (joint consensus; the learner should have
    /// caught up first).
    Promote {
        /// The learner's id.
        id: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a node (voter or learner) from the cluster. Stop its process
    /// afterwards; its data directory cannot rejoin under the same id.
    Remove {
        /// The node's id.
        id: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Forget a removed node's record (its store and client address), so
    /// that its id may come back with a new, empty data directory.
    ///
    /// The cluster refuses a node whose store differs from the one it
    /// recorded for that id (its data was lost). To bring such a node back
    /// under its id (a StatefulSet pod whose volume was lost): `cluster
    /// remove ID`, `cluster forget ID`, start it with an empty data
    /// directory, `cluster add-learner ID PEER_ADDR`, `cluster promote ID`.
    /// Refused while ID is a voter or learner.
    Forget {
        /// The node's id.
        id: u64,
        #[command(flatten)]
        conn: Conn,
    },
}

pub fn run(args: ClusterArgs) -> Result<(), Failure> {
    match args.command {
        ClusterCommand::Status(a) => status::run(a),
        ClusterCommand::AddLearner {
            id,
            address,
            no_wait,
            conn,
        } => {
            if id == 0 {
                return Err(Failure::Usage("node ids start at 1".into()));
            }
            let address = address.trim().to_string();
            if !address.contains(':') {
                return Err(Failure::Usage(format!(
                    "{address:?} is not host:port (e.g. 10.0.0.4:8401)"
                )));
            }
            let timeout = if no_wait {
                CALL_TIMEOUT
            } else {
                CATCH_UP_TIMEOUT
            };
            let what = format!("added node {id} ({address}) as a learner");
            change(&conn, timeout, &what, |client| async move {
                client.add_learner(id, &address, !no_wait).await
            })
        }
        ClusterCommand::Promote { id, conn } => change(
            &conn,
            CALL_TIMEOUT,
            &format!("promoted node {id} to voter"),
            |client| async move { client.promote(id).await },
        ),
        ClusterCommand::Forget { id, conn } => forget(id, &conn),
        ClusterCommand::Remove { id, conn } => change(
            &conn,
            CALL_TIMEOUT,
            &format!("removed node {id}"),
            |client| async move { client.remove_member(id).await },
        ),
    }
}

/// `cluster forget ID`.
fn forget(id: u64, conn: &Conn) -> Result<(), Failure> {
    if id == 0 {
        return Err(Failure::Usage("node ids start at 1".into()));
    }
    let rt = runner::control_runtime()?;
    let r = rt.block_on(async {
        let client = conn.client().await?;
        client
            .forget_member(id)
            .await
            .map_err(|e| client_failure(&e, "", None))
    })?;
    if conn.json {
        print_json(
            &serde_json::json!({ "id": id, "existed": r.existed, "revision": r.revision }),
            true,
        )
    } else {
        if r.existed {
            println!("forgot node {id}: it may be added again with a new data directory");
        } else {
            println!("node {id} had no record: nothing to forget");
        }
        println!("revision  {}", r.revision);
        Ok(())
    }
}

/// One membership call, printed as text or JSON.
fn change<F, Fut>(conn: &Conn, timeout: Duration, what: &str, call: F) -> Result<(), Failure>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<pb::MembershipResponse, raftlock_client::Error>>,
{
    let rt = runner::control_runtime()?;
    let r = rt.block_on(async {
        let client = conn.client_with(timeout).await?;
        call(client).await.map_err(|e| client_failure(&e, "", None))
    })?;
    if conn.json {
        print_json(
            &serde_json::json!({
                "voters": r.voters,
                "learners": r.learners,
                "revision": r.revision,
            }),
            true,
        )
    } else {
        let ids = |v: &[u64]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            }
        };
        println!("{what}");
        println!("voters    {}", ids(&r.voters));
        println!("learners  {}", ids(&r.learners));
        println!("revision  {}", r.revision);
        Ok(())
    }
}
