//! `raftlock health`: the gRPC health check of one node, for probes
//! (Docker's HEALTHCHECK, Kubernetes exec probes, scripts). Exit 0 only
//! when the node answers SERVING (it knows a leader); 1 when it answers
//! anything else or cannot be reached; 2 for bad usage.

use std::time::Duration;

use clap::Args;
use raftlock_client::{Client, ClientOptions, HealthStatus};

use crate::commands::AuthArgs;
use crate::exit::client_failure;
use crate::{Failure, runner};

/// Where a node serves clients by default (`--listen 0.0.0.0:7401`): a
/// probe runs beside the node it checks.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7401";

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The node to check, host:port of its client port (http:// or
    /// https:// allowed). With TLS, connect by a name or address its
    /// certificate lists (raftlock certs node --host).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,

    /// The service to ask about: "" (the node as a whole),
    /// raftlock.v1.Locks, raftlock.v1.Leases or raftlock.v1.Admin (all
    /// answer the same).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub service: String,

    /// Time allowed to connect and hear the answer, in ms.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,

    #[command(flatten)]
    pub auth: AuthArgs,
}

pub fn run(args: HealthArgs) -> Result<(), Failure> {
    let endpoint = args.endpoint.trim().to_string();
    if endpoint.is_empty() {
        return Err(Failure::Usage(
            "--endpoint is empty; give host:port of the node's client port, e.g. 127.0.0.1:7401"
                .into(),
        ));
    }
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut options = ClientOptions::default();
    args.auth
        .apply(std::slice::from_ref(&endpoint), &mut options)?;
    let control = runner::control_runtime()?;
    let answer = control.block_on(Client::health_of_with(
        &endpoint,
        &args.service,
        timeout,
        &options,
    ));
    match answer {
        Ok(HealthStatus::Serving) => {
            println!("{endpoint}: {}", HealthStatus::Serving.as_str());
            Ok(())
        }
        Ok(status) => Err(Failure::Runtime(format!(
            "{endpoint}: {}{}",
            status.as_str(),
            match status {
                HealthStatus::NotServing => {
                    " (the node knows no leader: no quorum, an election, or not yet a member)"
                }
                HealthStatus::ServiceUnknown => " (no such service; try --service \"\")",
                _ => "",
            }
        ))),
        Err(e) => Err(match client_failure(&e, "", None) {
            Failure::Runtime(m) => Failure::Runtime(format!("{endpoint}: {m}")),
            other => other,
        }),
    }
}
