//! Log lines on stderr, level from `RUST_LOG`. The default is `info`, with
//! openraft's own chatter (state dumps, every vote) at `warn`: the node's
//! role changes are logged by `runner` instead. `RUST_LOG=info` shows
//! openraft's info lines too.
//!
//! Every node runs on its own tokio runtime whose threads are named
//! `node-<id>`, and lines carry the thread name: background tasks that a
//! node spawns (Raft replication, gRPC connections) do not inherit the
//! `serve{id}` / `node{id}` spans, but they always run on their node's
//! threads, so every line from a node still says which node it is.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

pub fn init(format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (filter, bad) = match &rust_log {
        None => (EnvFilter::new(DEFAULT_FILTER), None),
        Some(v) => match EnvFilter::try_new(v) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some(format!(
                    "RUST_LOG={v:?} is not a valid filter ({e}); using {DEFAULT_FILTER:?}"
                )),
            ),
        },
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_thread_names(true);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: logging not set up: {e}");
    }
    if let Some(message) = bad {
        tracing::warn!("{message}");
    }
}
