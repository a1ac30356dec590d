//! `raftlock dev`: a ready 3-node cluster in one process on 127.0.0.1.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use raftlock_node::NodeConfig;

use crate::config::LogFormat;
use crate::runner::{self, End, RunningNode, Signals};
use crate::{Failure, logging};

/// First port of the dev cluster: nodes 1, 2 and 3 listen on 127.0.0.1 at
/// `DEV_BASE_PORT`, `+1` and `+2`. These are the endpoints that
/// `raftlock status` (and the client and CLI) use when none are given.
pub const DEV_BASE_PORT: u16 = 7401;

/// The dev cluster's endpoints, `DEV_BASE_PORT` to `DEV_BASE_PORT + 2`: the
/// default of `--endpoints` / `RAFTLOCK_ENDPOINTS`.
pub const DEV_ENDPOINTS: &str = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403";

/// Nodes in a dev cluster.
const DEV_NODES: u16 = 3;

/// How long `dev` waits for the cluster to elect a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// Where dev node `id` serves its metrics: 10 ports above the nodes'
/// (127.0.0.1:7411-7413 by default).
fn metrics_addr(base_port: u16, id: u64) -> String {
    format!(
        "127.0.0.1:{}",
        u64::from(base_port) + u64::from(METRICS_PORT_OFFSET) + id - 1
    )
}

/// Where dev node `id` serves clients.
fn client_addr(base_port: u16, id: u64) -> String {
    format!("127.0.0.1:{}", u64::from(base_port) + id - 1)
}

/// `path` made absolute (for the printed environment), or as it is.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The client identity `dev --secure` makes a certificate for (an admin
/// in its auth file).
const DEV_CLIENT: &str = "admin";

/// `dev --secure`'s auth file, in the dev directory.
const AUTH_FILE: &str = "auth.toml";

/// Writes the dev cluster's auth file unless it exists (a user may have
/// edited it): the `admin` client certificate may do everything.
fn write_auth_file(path: &Path) -> Result<(), Failure> {
    if path.exists() {
        return Ok(());
    }
    let text = format!(
        "# Written by `raftlock dev --secure`; edit freely (nodes re-read it on SIGHUP).\n\
         # docs/security.md explains roles, rules and identities.\n\
         [[role]]\n\
         name = \"admin\"\n\
         rules = [{{ prefix = \"\", allow = [\"inspect\", \"lock\", \"watch\", \"admin\"] }}]\n\n\
         [[identity]]\n\
         cert = \"{DEV_CLIENT}\"\n\
         roles = [\"admin\"]\n"
    );
    std::fs::write(path, text)
        .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", path.display())))
}

/// How far above a dev node's port its metrics port is.
const METRICS_PORT_OFFSET: u16 = 10;
/// Peer ports: the client ports + 1000, as `serve` defaults them.
const PEER_PORT_OFFSET: u16 = 1000;
/// Highest --base-port: the third node's metrics port must exist.
const MAX_BASE_PORT: u16 = u16::MAX - PEER_PORT_OFFSET - 2;

/// Records the base port in the directory: members' addresses are in the
/// Raft log, so the same directory only works on the same ports.
const MARKER: &str = "raftlock-dev.toml";

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory of the cluster's data (DIR/node1, DIR/node2, DIR/node3).
    #[arg(long, value_name = "DIR", default_value = "./raftlock-dev")]
    pub dir: PathBuf,

    /// Port of node 1; nodes 2 and 3 use the next two.
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = DEV_BASE_PORT,
        value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_BASE_PORT))
    )]
    pub base_port: u16,

    /// Delete DIR first and start an empty cluster.
    #[arg(long)]
    pub fresh: bool,

    /// TLS on every port, mutual TLS between the nodes, and auth: a CA and
    /// the nodes' and an `admin` client's certificates are made in
    /// DIR/certs, and DIR/auth.toml makes that client an admin of every
    /// name (both kept across restarts; edit auth.toml to add identities);
    /// the client environment to use them is printed (docs/security.md).
    #[arg(long)]
    pub secure: bool,

    /// Log line format on stderr; RUST_LOG sets the level.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

pub fn run(args: DevArgs) -> Result<(), Failure> {
    prepare_dir(&args)?;
    // Bind all three before starting any, so a taken port is reported
    // before anything is bootstrapped. The metrics ports are only tried
    // here (each node binds its own a moment later).
    let mut listeners = Vec::new();
    let mut peer_listeners = Vec::new();
    let metrics_ports = (0..DEV_NODES).map(|i| args.base_port + METRICS_PORT_OFFSET + i);
    let peer_ports = (0..DEV_NODES).map(|i| args.base_port + PEER_PORT_OFFSET + i);
    let nodes = usize::from(DEV_NODES);
    for (i, port) in (0..DEV_NODES)
        .map(|i| args.base_port + i)
        .chain(peer_ports)
        .chain(metrics_ports)
        .enumerate()
    {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) if i < nodes => listeners.push(l),
            Ok(l) if i < 2 * nodes => peer_listeners.push(l),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                return Err(Failure::Runtime(format!(
                    "port {port} on 127.0.0.1 is already in use (another raftlock dev?); stop \
                     that process or choose other ports with --base-port, e.g. --base-port {} \
                     (and a new --dir, or --fresh: a dev directory remembers its ports)",
                    args.base_port.saturating_add(100).min(MAX_BASE_PORT)
                )));
            }
            Err(e) => {
                return Err(Failure::Runtime(format!(
                    "cannot listen on 127.0.0.1:{port}: {e}"
                )));
            }
        }
    }
    write_marker(&args)?;
    let certs = if args.secure {
        let dir = args.dir.join("certs");
        let certs =
            crate::commands::certs::local_cluster_certs(&dir, u64::from(DEV_NODES), DEV_CLIENT)?;
        write_auth_file(&args.dir.join(AUTH_FILE))?;
        Some(certs)
    } else {
        None
    };

    logging::init(args.log_format);
    let control = runner::control_runtime()?;
    let mut signals = Signals::with_hangup(&control)?;

    // The initial members name peer addresses.
    let members: BTreeMap<u64, String> = (0..DEV_NODES)
        .map(|i| {
            (
                u64::from(i) + 1,
                format!("127.0.0.1:{}", args.base_port + PEER_PORT_OFFSET + i),
            )
        })
        .collect();
    let mut nodes = Vec::new();
    let bound = listeners.into_iter().zip(peer_listeners);
    for ((listener, peer_listener), (id, peer_addr)) in bound.zip(&members) {
        let addr = client_addr(args.base_port, *id);
        let mut config = NodeConfig::new(*id, args.dir.join(format!("node{id}")), addr.clone());
        config.advertise = Some(addr);
        config.peer_listen = peer_addr.clone();
        config.peer_advertise = Some(peer_addr.clone());
        config.initial_members = members.clone();
        if let Some(certs) = &certs {
            let (cert, key) = certs.nodes[(*id - 1) as usize].clone();
            config.tls = Some(raftlock_node::TlsFiles {
                cert,
                key,
                ca: certs.ca.clone(),
            });
            config.auth = Some(raftlock_node::AuthSource::File(args.dir.join(AUTH_FILE)));
        }
        config.metrics_listen = Some(metrics_addr(args.base_port, *id));
        // Three nodes in one process, little data.
        config.cache_capacity_bytes = 16 * 1024 * 1024;
        let threads = crate::config::DEFAULT_WORKER_THREADS;
        let listeners = Some((listener, peer_listener));
        match RunningNode::start(config, listeners, threads, runner::node_span(*id)) {
            Ok(node) => nodes.push(node),
            Err(failure) => {
                // Stop the ones already running cleanly before reporting.
                let _ = runner::stop_all(nodes, &control, &mut signals);
                return Err(failure);
            }
        }
    }

    let leader = control.block_on(async {
        tokio::select! {
            leader = wait_leader(&nodes) => Ok(leader),
            name = signals.recv() => Err(name),
        }
    });
    let leader = match leader {
        Ok(Some(l)) => l,
        Ok(None) => {
            let _ = runner::stop_all(nodes, &control, &mut signals);
            return Err(Failure::Runtime(format!(
                "no leader was elected within {} s; see the log above",
                LEADER_TIMEOUT.as_secs()
            )));
        }
        Err(name) => {
            tracing::info!(signal = name, "stopping before the cluster was ready");
            return runner::stop_all(nodes, &control, &mut signals);
        }
    };

    let endpoints: Vec<String> = (1..=u64::from(DEV_NODES))
        .map(|id| client_addr(args.base_port, id))
        .collect();
    let mut banner = format!(
        "raftlock dev: 3-node cluster ready{}, data in {}\n",
        if certs.is_some() { " (TLS)" } else { "" },
        args.dir.display()
    );
    for (id, peer) in &members {
        let role = if *id == leader { "leader" } else { "follower" };
        let addr = client_addr(args.base_port, *id);
        banner.push_str(&format!("  node {id}  {addr}  {role}  (peers: {peer})\n"));
    }
    banner.push_str(&format!(
        "export RAFTLOCK_ENDPOINTS={}\n",
        endpoints.join(",")
    ));
    if let Some(certs) = &certs {
        banner.push_str(&format!(
            "export RAFTLOCK_CA={}\nexport RAFTLOCK_CERT={}\nexport RAFTLOCK_KEY={}\n",
            absolute(&certs.ca).display(),
            absolute(&certs.client.0).display(),
            absolute(&certs.client.1).display(),
        ));
    }
    banner.push_str(&format!(
        "Metrics: http://{}/metrics (nodes 2 and 3: the next ports)\n\
         Check it with `raftlock status`; stop with Ctrl-C (the data stays; --fresh starts over).\n",
        metrics_addr(args.base_port, 1)
    ));
    // One write, and its failure ignored: a reader that stops reading
    // (`raftlock dev | head -3`, a script that took the endpoints line)
    // must not stop the cluster (println! panics on a closed pipe).
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(banner.as_bytes())
            .and_then(|()| stdout.flush());
    }

    let result = match control.block_on(runner::wait_for_end(&nodes, &mut signals)) {
        End::Signal(name) => {
            tracing::info!(signal = name, "stopping the dev cluster");
            Ok(())
        }
        End::RaftStopped(id) => Err(Failure::Runtime(format!(
            "node {id}: Raft stopped unexpectedly (see the log above); stopping"
        ))),
    };
    runner::stop_all(nodes, &control, &mut signals)?;
    result
}

/// The leader once every node knows the same one, or None after
/// [`LEADER_TIMEOUT`].
async fn wait_leader(nodes: &[RunningNode]) -> Option<u64> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let rafts: Vec<_> = nodes.iter().filter_map(RunningNode::raft).collect();
    while Instant::now() < deadline {
        let leaders: Vec<Option<u64>> = rafts
            .iter()
            .map(|r| r.metrics().borrow().current_leader)
            .collect();
        if let Some(Some(first)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*first))
        {
            return Some(*first);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[derive(serde::Deserialize)]
struct Marker {
    base_port: u16,
}

fn prepare_dir(args: &DevArgs) -> Result<(), Failure> {
    let dir = &args.dir;
    let marker_path = dir.join(MARKER);
    if args.fresh && dir.exists() {
        let is_dev = marker_path.exists()
            || std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !is_dev {
            return Err(Failure::Usage(format!(
                "refusing to delete {}: it has no {MARKER}, so it does not look like a raftlock \
                 dev directory; choose another --dir",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).map_err(|e| {
            Failure::Runtime(format!("cannot delete {} (--fresh): {e}", dir.display()))
        })?;
    }
    if let Some(marker) = read_marker(&marker_path)?
        && marker.base_port != args.base_port
    {
        return Err(Failure::Usage(format!(
            "{} holds a dev cluster created with --base-port {}, whose addresses are in its \
                 log; run with --base-port {}, or add --fresh to start over (deletes its data), \
                 or choose another --dir",
            dir.display(),
            marker.base_port,
            marker.base_port
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Runtime(format!("cannot create {}: {e}", dir.display())))
}

fn read_marker(path: &Path) -> Result<Option<Marker>, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|e| {
            Failure::Usage(format!(
                "{} is damaged ({e}); fix it or use --fresh",
                path.display()
            ))
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::Runtime(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn write_marker(args: &DevArgs) -> Result<(), Failure> {
    let path = args.dir.join(MARKER);
    let text = format!(
        "# Written by `raftlock dev`: this directory's cluster lives on these ports.\nbase_port = {}\n",
        args.base_port
    );
    std::fs::write(&path, text)
        .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_endpoints_are_the_three_ports_from_the_base_port() {
        let expected: Vec<String> = (0..DEV_NODES)
            .map(|i| format!("127.0.0.1:{}", DEV_BASE_PORT + i))
            .collect();
        assert_eq!(DEV_ENDPOINTS, expected.join(","));
    }
}
