//! The CLI's tests' view of the test kit: this package's `raftlock`
//! binary bound into the kit's process helpers, and `Dev`, a `raftlock
//! dev` to run CLI commands against.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use raftlock_testkit::grpc::{exclusive, leases, locks, status};
pub use raftlock_testkit::ports::{free_port_run, free_ports};
pub use raftlock_testkit::process::{Proc, append, run_bounded, signal};

use raftlock_testkit::process;

pub const BIN: &str = env!("CARGO_BIN_EXE_raftlock");

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// A `raftlock` command with no configuration leaking in from the
/// environment of whoever runs the tests.
pub fn raftlock() -> Command {
    process::command(bin())
}

/// Starts `raftlock dev` on free ports; returns it and its endpoints.
pub fn start_dev(dir: &Path) -> (Proc, String) {
    process::start_dev(bin(), dir)
}

/// `raftlock ARGS --endpoints ENDPOINTS`, the endpoints before a `--` if any.
pub fn with_endpoints(args: &[&str], endpoints: &str) -> Command {
    process::with_endpoints(bin(), args, endpoints)
}

/// Every CLI command a test runs must finish within this.
pub const CLI_BOUND: Duration = Duration::from_secs(60);

/// A running `raftlock dev` for CLI tests (killed when dropped), and how to
/// run commands against it.
pub struct Dev {
    pub proc: Proc,
    pub endpoints: String,
    pub dir: PathBuf,
}

impl Dev {
    pub fn start(tmp: &Path) -> Dev {
        let (proc, endpoints) = start_dev(tmp);
        Dev {
            proc,
            endpoints,
            dir: tmp.to_path_buf(),
        }
    }

    /// `raftlock ARGS --endpoints E`, the endpoints before a `--` if any.
    pub fn cmd(&self, args: &[&str]) -> Command {
        with_endpoints(args, &self.endpoints)
    }

    /// Runs a command; returns (exit code, stdout, stderr).
    pub fn run_cmd(&self, cmd: Command) -> (i32, String, String) {
        let (status, out, err) = run_bounded(cmd, &self.dir, CLI_BOUND);
        (status.code().unwrap_or(-1), out, err)
    }

    /// Runs `raftlock ARGS` against this cluster.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_cmd(self.cmd(args))
    }

    /// Runs a command that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "{args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }
}

/// A fresh exclusive hold of `name` by `lease`, through the node at `port`
/// (forwarded to the leader if needed).
pub async fn acquire_exclusive(
    port: u16,
    lease: u64,
    name: &str,
) -> raftlock_proto::v1::AcquireResponse {
    locks(port)
        .await
        .acquire(raftlock_proto::v1::AcquireRequest {
            lease_id: lease,
            locks: vec![exclusive(name)],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("acquire {name}: {e}"))
        .into_inner()
}
