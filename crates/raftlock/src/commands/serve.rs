//! `raftlock serve`: run one node of a cluster until SIGINT or SIGTERM. Its
//! options are `config::ServeArgs` (flags, environment, TOML file); the
//! node's life (runtime, signals, shutdown) is `runner::serve`.

pub use crate::config::ServeArgs as Args;
pub use crate::runner::serve as run;
