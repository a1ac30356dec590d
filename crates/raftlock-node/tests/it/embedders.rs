//! A service that embeds raftlock builds our forks of openraft and sled.
//!
//! It depends on raftlock-node from its own workspace, where this
//! workspace's `[patch.crates-io]` (how the forks were once wired) does not
//! apply: it silently built crates.io's openraft and sled, whose `flush` is
//! not durable. The forks are dependencies by name now (`raftlock-openraft`,
//! `raftlock-sled`, vendor/README.md). This test builds
//! `examples/embedded.rs` as such an outside crate, in a temp workspace with
//! a path dependency on raftlock-node, and checks which openraft and sled it
//! gets. Offline (the crates come from cargo's cache, as after a build of
//! this workspace) and with its own target dir under `CARGO_TARGET_TMPDIR`,
//! kept between runs so that a second run only checks the example.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A first `cargo check` of raftlock-node's whole dependency graph on a
/// small, busy machine; later runs take seconds.
const CARGO_TIMEOUT: Duration = Duration::from_secs(20 * 60);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs `cargo args...` in `dir` with a deadline; returns stdout, or fails
/// the test with both outputs.
fn run_cargo(dir: &Path, target_dir: &Path, args: &[&str]) -> String {
    let out_path = dir.join("cargo.stdout");
    let err_path = dir.join("cargo.stderr");
    let mut child = Command::new(cargo())
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("create stdout file"))
        .stderr(fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("run cargo");
    let deadline = Instant::now() + CARGO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cargo {} took longer than {CARGO_TIMEOUT:?}; stderr:\n{}",
                args.join(" "),
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = fs::read_to_string(&out_path).expect("read cargo's stdout");
    assert!(
        status.success(),
        "cargo {} failed in an outside workspace ({status}). If it could not \
         download crates.io's openraft or sled, something names them again \
         (a [patch.crates-io] in place of the raftlock-openraft and \
         raftlock-sled dependencies?).\nstdout:\n{stdout}\nstderr:\n{}",
        args.join(" "),
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    stdout
}

#[test]
fn an_outside_crate_on_raftlock_node_builds_our_openraft_and_sled() {
    let root = workspace_root();
    let node = root.join("crates/raftlock-node");
    let client = root.join("crates/raftlock-client");
    let dir = tempfile::Builder::new()
        .prefix("raftlock-embedder-")
        .tempdir()
        .expect("temp dir");
    fs::create_dir(dir.path().join("src")).expect("src dir");
    fs::copy(
        node.join("examples/embedded.rs"),
        dir.path().join("src/main.rs"),
    )
    .expect("copy examples/embedded.rs");
    // The same versions as this workspace, so that nothing needs the
    // network; cargo adds the new root package and drops what it lacks.
    fs::copy(root.join("Cargo.lock"), dir.path().join("Cargo.lock")).expect("copy Cargo.lock");
    // An empty [workspace]: its own workspace, as a service's would be.
    let manifest = format!(
        "[package]\n\
         name = \"embedder\"\n\
         version = \"0.0.0\"\n\
         edition = \"2024\"\n\
         publish = false\n\
         \n\
         [dependencies]\n\
         raftlock-node = {{ path = '{}' }}\n\
         raftlock-client = {{ path = '{}' }}\n\
         tokio = {{ version = \"1\", features = [\"full\"] }}\n\
         tempfile = \"3\"\n\
         \n\
         [workspace]\n",
        node.display(),
        client.display()
    );
    fs::write(dir.path().join("Cargo.toml"), manifest).expect("write Cargo.toml");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("embedders-target");

    // Every package of the build, one per line: `name vX.Y.Z (path)` for
    // path packages, `name vX.Y.Z` for crates.io ones.
    let tree = run_cargo(
        dir.path(),
        &target_dir,
        &[
            "tree",
            "--offline",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ],
    );
    let packages: Vec<&str> = tree.lines().collect();
    for upstream in ["openraft", "sled"] {
        let named: Vec<&&str> = packages
            .iter()
            .filter(|p| p.starts_with(&format!("{upstream} ")))
            .collect();
        assert!(
            named.is_empty(),
            "an embedder builds {upstream} {named:?}, not our fork \
             (vendor/README.md)\n{tree}"
        );
    }
    for (fork, dir_name) in [("raftlock-openraft", "openraft"), ("raftlock-sled", "sled")] {
        let vendored = format!("({})", root.join("vendor").join(dir_name).display());
        assert!(
            packages
                .iter()
                .any(|p| p.starts_with(&format!("{fork} v")) && p.ends_with(&vendored)),
            "an embedder does not build {fork} from {vendored}\n{tree}"
        );
    }

    // And the example compiles there, against the forks' APIs.
    run_cargo(
        dir.path(),
        &target_dir,
        &["check", "--offline", "--quiet", "--bins"],
    );
}

#[test]
fn the_workspace_lock_has_no_crates_io_openraft_or_sled() {
    let lock = fs::read_to_string(workspace_root().join("Cargo.lock")).expect("read Cargo.lock");
    for upstream in ["openraft", "sled"] {
        assert!(
            !lock.contains(&format!("\nname = \"{upstream}\"\n")),
            "Cargo.lock has a package {upstream}: something depends on \
             crates.io's {upstream}, not on raftlock-{upstream} (vendor/README.md)"
        );
    }
    for fork in ["raftlock-openraft", "raftlock-sled"] {
        assert!(
            lock.contains(&format!("\nname = \"{fork}\"\n")),
            "Cargo.lock has no {fork}"
        );
    }
}
