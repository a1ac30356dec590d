//! `raftlock status`: Admin.Status of the first node that answers, as a
//! table or as JSON.

use std::time::Duration;

use clap::Args;
use raftlock_client::{Client, ClientOptions, Error};
use raftlock_proto::v1 as pb;
use serde::Serialize;

use crate::commands::{AuthArgs, DEV_ENDPOINTS, endpoint_list};
use crate::exit::client_failure;
use crate::{Failure, runner};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Nodes to ask, in order, as host:port (comma-separated); the first
    /// that answers is shown. The default is the `raftlock dev` cluster.
    #[arg(
        long,
        env = "RAFTLOCK_ENDPOINTS",
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        default_value = DEV_ENDPOINTS
    )]
    pub endpoints: Vec<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Ask the leader (found through the first node that answers), which
    /// alone knows how far each node has replicated (matched, lag).
    #[arg(long)]
    pub leader: bool,

    /// Time allowed to connect to and hear from each node, in ms.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct StatusOut {
    /// The endpoint that answered.
    endpoint: String,
    node_id: u64,
    role: &'static str,
    term: u64,
    leader_id: Option<u64>,
    leader_addr: Option<String>,
    last_log_index: u64,
    applied_index: u64,
    snapshot_index: Option<u64>,
    purged_index: Option<u64>,
    leases: u64,
    locks: u64,
    /// The cluster's id; absent until its first leader named it.
    cluster_id: Option<String>,
    /// The high 16 bits of every token granted from now on.
    token_epoch: u32,
    /// No token, lease id or revision handed out so far is above it: the
    /// --token-floor for a cluster that replaces this one.
    token_high_water: u64,
    nodes: Vec<NodeOut>,
}

#[derive(Debug, Serialize)]
struct NodeOut {
    id: u64,
    /// Where clients reach the node.
    address: String,
    /// Where peers reach it (what the membership holds).
    peer_address: String,
    role: &'static str,
    voter: bool,
    matched_index: Option<u64>,
    lag: Option<u64>,
    /// Its release, as it told the answering node; absent while unknown
    /// (and for builds before 0.2).
    build_version: Option<String>,
    /// The peer protocol versions it speaks, "1" or "1..2"; absent while
    /// unknown.
    protocol: Option<String>,
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Leader) => "leader",
        Ok(pb::Role::Follower) => "follower",
        Ok(pb::Role::Candidate) => "candidate",
        Ok(pb::Role::Learner) => "learner",
        _ => "unknown",
    }
}

impl StatusOut {
    fn new(endpoint: String, s: pb::StatusResponse) -> StatusOut {
        StatusOut {
            endpoint,
            node_id: s.node_id,
            role: role_name(s.role),
            term: s.term,
            leader_id: s.leader_id,
            leader_addr: Some(s.leader_addr).filter(|a| !a.is_empty()),
            last_log_index: s.last_log_index,
            applied_index: s.applied_index,
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            leases: s.leases,
            locks: s.locks,
            cluster_id: Some(s.cluster_id).filter(|c| !c.is_empty()),
            token_epoch: s.token_epoch,
            token_high_water: s.token_high_water,
            nodes: s
                .nodes
                .into_iter()
                .map(|n| NodeOut {
                    id: n.id,
                    address: n.address,
                    peer_address: n.peer_address,
                    role: role_name(n.role),
                    voter: n.voter,
                    matched_index: n.matched_index,
                    lag: n.lag,
                    build_version: Some(n.build_version).filter(|v| !v.is_empty()),
                    protocol: (n.protocol_max != 0).then(|| {
                        if n.protocol_min == n.protocol_max {
                            n.protocol_max.to_string()
                        } else {
                            format!("{}..{}", n.protocol_min, n.protocol_max)
                        }
                    }),
                })
                .collect(),
        }
    }
}

pub fn run(args: StatusArgs) -> Result<(), Failure> {
    let endpoints = endpoint_list(&args.endpoints)?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut options = ClientOptions::default();
    args.auth.apply(&endpoints, &mut options)?;
    let options = &options;
    let control = runner::control_runtime()?;
    let out = control.block_on(async {
        let mut errors = Vec::new();
        let mut found = None;
        for endpoint in &endpoints {
            match ask(endpoint, timeout, options).await {
                Ok(s) => {
                    found = Some(StatusOut::new(endpoint.clone(), s));
                    break;
                }
                // Every node would say the same: stop at the first.
                Err(
                    e @ (Error::Tls { .. } | Error::Denied { .. } | Error::Unauthenticated { .. }),
                ) => {
                    return Err(client_failure(&e, "", None));
                }
                Err(e) => errors.push(format!("{endpoint}: {}", text(&e))),
            }
        }
        let Some(first) = found else {
            return Err(Failure::Runtime(format!(
                "no raftlock node answered ({}); is the cluster running? Start one with \
                 `raftlock dev`, or name its nodes with --endpoints or RAFTLOCK_ENDPOINTS",
                errors.join("; ")
            )));
        };
        if !args.leader || first.role == "leader" {
            return Ok(first);
        }
        let Some(addr) = first.leader_addr.clone() else {
            eprintln!(
                "note: node {} knows no leader; showing its view",
                first.node_id
            );
            return Ok(first);
        };
        match ask(&addr, timeout, options).await {
            Ok(s) => Ok(StatusOut::new(addr, s)),
            Err(e) => {
                eprintln!(
                    "note: the leader at {addr} did not answer ({}); showing node {}'s view",
                    text(&e),
                    first.node_id
                );
                Ok(first)
            }
        }
    })?;
    if args.json {
        let text = serde_json::to_string_pretty(&out)
            .map_err(|e| Failure::Runtime(format!("cannot encode JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", table(&out));
    }
    Ok(())
}

/// Admin.Status of the node at `endpoint` itself, within `timeout`.
async fn ask(
    endpoint: &str,
    timeout: Duration,
    options: &ClientOptions,
) -> Result<pb::StatusResponse, Error> {
    Client::status_of_with(endpoint, timeout, options).await
}

/// An error of [`ask`] as one line: the transport's message alone when no
/// node answered.
fn text(e: &Error) -> String {
    match e {
        Error::Other { reason, .. } if reason == "UNIMPLEMENTED" => {
            "it does not serve the raftlock client API (a node's peer port? clients use the \
             --listen port, peers the --peer-listen port)"
                .to_string()
        }
        Error::Unavailable { message, .. } | Error::DeadlineExceeded { message, .. } => {
            message.clone()
        }
        e => e.to_string(),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn table(s: &StatusOut) -> String {
    let mut out = String::new();
    let leader = match (s.leader_id, &s.leader_addr) {
        (Some(id), Some(addr)) => format!("node {id} ({addr})"),
        (Some(id), None) => format!("node {id}"),
        _ => "none known".to_string(),
    };
    out.push_str(&format!(
        "node {} at {} answered, as {}\n",
        s.node_id, s.endpoint, s.role
    ));
    out.push_str(&format!("leader    {leader}\n"));
    out.push_str(&format!("term      {}\n", s.term));
    out.push_str(&format!(
        "log       last {}, applied {}, snapshot {}, purged {}\n",
        s.last_log_index,
        s.applied_index,
        opt(s.snapshot_index),
        opt(s.purged_index)
    ));
    out.push_str(&format!(
        "leases    {}\nlocks     {}\ncluster   {}\ntokens    epoch {}, high water {}\n\n",
        s.leases,
        s.locks,
        s.cluster_id.as_deref().unwrap_or("- (not named yet)"),
        s.token_epoch,
        s.token_high_water
    ));

    let header = [
        "ID",
        "ADDRESS",
        "PEER ADDRESS",
        "ROLE",
        "VOTER",
        "MATCHED",
        "LAG",
        "BUILD",
        "PROTOCOL",
    ];
    let rows: Vec<[String; 9]> = s
        .nodes
        .iter()
        .map(|n| {
            [
                n.id.to_string(),
                if n.address.is_empty() {
                    "-".to_string()
                } else {
                    n.address.clone()
                },
                n.peer_address.clone(),
                n.role.to_string(),
                if n.voter { "yes" } else { "no" }.to_string(),
                opt(n.matched_index),
                opt(n.lag),
                n.build_version.clone().unwrap_or_else(|| "-".into()),
                n.protocol.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        l.push('\n');
        l
    };
    out.push_str(&line(&header));
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
    }
    if rows.is_empty() {
        out.push_str("(no members: this node has not joined a cluster yet)\n");
    } else if s.role != "leader" {
        out.push_str("\n(matched and lag are known only by the leader: add --leader)\n");
    }
    out
}
