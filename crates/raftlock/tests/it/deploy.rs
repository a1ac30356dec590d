//! The files of deploy/ against the binary they deploy: every raftlock
//! command they run (Dockerfile CMD/ENTRYPOINT/HEALTHCHECK, compose
//! commands and healthchecks, the systemd unit's ExecStart/ExecStartPre,
//! the StatefulSet's args and probes, the certificate scripts) is run here,
//! `serve` with `--check`, with the environment the file gives it and its
//! placeholders (POD_NAME, POD_NAMESPACE, systemd specifiers) filled in;
//! the settings a deployment's safety depends on are asserted; and the
//! unit goes through `systemd-analyze verify` (and `security`) when
//! systemd-analyze is here (required when RAFTLOCK_REQUIRE_SYSTEMD_ANALYZE=1).
//! No Docker daemon or Kubernetes cluster is needed: what those would do
//! with the files is not run, what the binary does with them is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::common::*;

const RUN: Duration = Duration::from_secs(30);

/// The graceful stop of `raftlock serve` (runner::STOP_TIMEOUT): every
/// deployment's stop timeout must exceed it.
const NODE_STOP_SECS: u64 = 15;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn bin_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .expect("the binary's directory")
        .to_path_buf()
}

/// PATH with the built `raftlock` first, for the scripts.
fn path_with_bin() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Replaces every `from` with `to` in `text`, for each pair.
fn subst(text: &str, pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// Runs `argv` (argv[0] is `raftlock` or a path ending in it: the built
/// binary runs instead) with exactly `env` of the RAFTLOCK_ variables;
/// `serve` gets `--check`. Returns (exit code, stdout, stderr).
fn run_raftlock(
    what: &str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    dir: &Path,
) -> (i32, String, String) {
    assert!(
        argv.first()
            .is_some_and(|a| a == "raftlock" || a.ends_with("/raftlock")),
        "{what}: not a raftlock command: {argv:?}"
    );
    let mut args: Vec<String> = argv[1..].to_vec();
    if args.first().is_some_and(|a| a == "serve") {
        args.insert(1, "--check".into());
    }
    let mut cmd = raftlock();
    cmd.args(&args).envs(env).current_dir(dir);
    let (status, out, err) = run_bounded(cmd, dir, RUN);
    (status.code().unwrap_or(-1), out, err)
}

/// A `serve` command of a file must pass `--check`; returns what it printed.
fn serve_checks(what: &str, argv: &[String], env: &BTreeMap<String, String>, dir: &Path) -> String {
    let (code, out, err) = run_raftlock(what, argv, env, dir);
    assert_eq!(
        code,
        0,
        "{what}: `{}` with {env:?} fails the check:\n{err}",
        argv.join(" ")
    );
    out
}

/// A probe's command must be one the binary accepts: it may find no node
/// (exit 1) here, but never be a usage error (exit 2).
fn probe_parses(what: &str, argv: &[String], env: &BTreeMap<String, String>, dir: &Path) {
    let (code, _, err) = run_raftlock(what, argv, env, dir);
    assert!(
        code == 0 || code == 1,
        "{what}: `{}` is not accepted (exit {code}):\n{err}",
        argv.join(" ")
    );
    assert!(!err.contains("Usage:"), "{what}: {err}");
}

/// Runs a shell script of a file with the built binary first on PATH.
fn run_script(what: &str, program: &str, args: &[&str], dir: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args).env("PATH", path_with_bin()).current_dir(dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RAFTLOCK_") {
            cmd.env_remove(key);
        }
    }
    let (status, out, err) = run_bounded(cmd, dir, Duration::from_secs(120));
    let code = status.code().unwrap_or(-1);
    assert_eq!(code, 0, "{what} failed:\n{out}\n{err}");
    (code, out, err)
}

// ---------------------------------------------------------------------------
// deploy/Dockerfile
// ---------------------------------------------------------------------------

/// One instruction of a Dockerfile, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    /// 0 for the first FROM's stage, 1 for the second, ...
    stage: usize,
    op: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut stage = None::<usize>;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            pending.push_str(part);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let whole = std::mem::take(&mut pending);
        let (op, args) = whole
            .split_once(char::is_whitespace)
            .unwrap_or((&whole, ""));
        let op = op.to_ascii_uppercase();
        if op == "FROM" {
            stage = Some(stage.map_or(0, |s| s + 1));
        }
        out.push(Instruction {
            stage: stage.expect("an instruction before the first FROM"),
            op,
            args: args.trim().to_string(),
        });
    }
    out
}

/// A JSON (exec form) array of strings.
fn exec_form(what: &str, text: &str) -> Vec<String> {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: `{text}` is not the exec form [\"...\"]: {e}"))
}

/// The final stage's image: its ENV, ENTRYPOINT, CMD, and so on.
struct Image {
    env: BTreeMap<String, String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    user: String,
    volumes: Vec<String>,
    expose: Vec<u16>,
    healthcheck: Vec<String>,
    stages: usize,
    builder_runs: Vec<String>,
}

fn image() -> Image {
    let instructions = dockerfile();
    let last = instructions.iter().map(|i| i.stage).max().expect("a FROM");
    let mut image = Image {
        env: BTreeMap::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        user: String::new(),
        volumes: Vec::new(),
        expose: Vec::new(),
        healthcheck: Vec::new(),
        stages: last + 1,
        builder_runs: Vec::new(),
    };
    for i in &instructions {
        if i.stage != last {
            if i.op == "RUN" {
                image.builder_runs.push(i.args.clone());
            }
            continue;
        }
        match i.op.as_str() {
            "ENV" => {
                for pair in i.args.split_whitespace() {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV {pair}: write KEY=VALUE"));
                    image.env.insert(k.to_string(), v.to_string());
                }
            }
            "ENTRYPOINT" => image.entrypoint = exec_form("ENTRYPOINT", &i.args),
            "CMD" => image.cmd = exec_form("CMD", &i.args),
            "USER" => image.user = i.args.clone(),
            "VOLUME" => image.volumes = exec_form("VOLUME", &i.args),
            "EXPOSE" => {
                image.expose = i
                    .args
                    .split_whitespace()
                    .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
                    .collect()
            }
            "HEALTHCHECK" => {
                let (_, cmd) = i
                    .args
                    .split_once("CMD ")
                    .expect("HEALTHCHECK ... CMD [...]");
                image.healthcheck = exec_form("HEALTHCHECK CMD", cmd.trim());
            }
            _ => {}
        }
    }
    image
}

/// The port of a `host:port`.
fn port(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr}: no port"))
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_a_checked_non_root_node_in_another() {
    let image = image();
    assert!(image.stages >= 2, "not multi-stage");
    assert!(
        image
            .builder_runs
            .iter()
            .any(|r| r.contains("cargo build --release --locked -p raftlock")),
        "the builder does not `cargo build --release --locked -p raftlock`: {:?}",
        image.builder_runs
    );
    // The builder's Rust is the workspace's rust-version, and both stages
    // are the same Debian release (the binary links the builder's glibc).
    let froms: Vec<String> = dockerfile()
        .into_iter()
        .filter(|i| i.op == "FROM")
        .map(|i| i.args)
        .collect();
    let rust = froms
        .iter()
        .find_map(|f| f.strip_prefix("rust:"))
        .expect("a rust:VERSION-RELEASE builder");
    let (rust_version, release) = rust
        .split_whitespace()
        .next()
        .and_then(|tag| tag.split_once('-'))
        .expect("rust:VERSION-RELEASE");
    let manifest = read("Cargo.toml");
    assert!(
        manifest.contains(&format!("rust-version = \"{rust_version}\"")),
        "the builder's rust:{rust_version} is not the workspace's rust-version"
    );
    let runtime = froms.last().expect("a runtime stage");
    assert!(
        runtime.starts_with(&format!("debian:{release}")),
        "builder on {release}, runtime {runtime}: the binary needs the builder's glibc"
    );
    let (uid, gid) = image.user.split_once(':').unwrap_or((&image.user, ""));
    let uid: u32 = uid.parse().expect("USER is numeric (uid[:gid])");
    assert!(uid != 0, "USER is root");
    assert!(
        gid.is_empty() || gid.parse::<u32>().is_ok_and(|g| g != 0),
        "{}",
        image.user
    );

    // The data directory is on the volume; the ports exposed are those the
    // node listens on (the peer port is the client port + 1000).
    let data_dir = &image.env["RAFTLOCK_DATA_DIR"];
    assert!(
        image
            .volumes
            .iter()
            .any(|v| Path::new(data_dir).starts_with(v)),
        "RAFTLOCK_DATA_DIR {data_dir} is not on a VOLUME {:?}",
        image.volumes
    );
    let client = port(&image.env["RAFTLOCK_LISTEN"]);
    for p in [
        client,
        client + 1000,
        port(&image.env["RAFTLOCK_METRICS_LISTEN"]),
    ] {
        assert!(
            image.expose.contains(&p),
            "port {p} not in EXPOSE {:?}",
            image.expose
        );
    }

    // ENTRYPOINT + CMD, with what a user adds (an id and TLS or
    // --insecure), passes the check, with the image's environment.
    let dir = tempfile::tempdir().expect("tempdir");
    let argv: Vec<String> = image.entrypoint.iter().chain(&image.cmd).cloned().collect();
    assert_eq!(argv.get(1).map(String::as_str), Some("serve"), "{argv:?}");
    let mut env = image.env.clone();
    env.insert("RAFTLOCK_ID".into(), "1".into());
    env.insert("RAFTLOCK_INSECURE".into(), "true".into());
    let out = serve_checks("Dockerfile ENTRYPOINT+CMD", &argv, &env, dir.path());
    assert!(out.contains(&format!("data_dir = \"{data_dir}\"")), "{out}");

    assert_eq!(
        image.healthcheck.get(..2),
        Some(&["raftlock".to_string(), "health".to_string()][..]),
        "HEALTHCHECK {:?}",
        image.healthcheck
    );
    probe_parses(
        "Dockerfile HEALTHCHECK",
        &image.healthcheck,
        &image.env,
        dir.path(),
    );
}

#[test]
fn the_dockerignore_keeps_the_build_output_and_git_out_but_not_the_sources() {
    let text = read(".dockerignore");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for out in ["target", ".git"] {
        assert!(lines.contains(&out), ".dockerignore lacks {out}");
    }
    // What `cargo build --locked -p raftlock` of the workspace needs.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "crates",
        "vendor",
        "proto",
        "cluster-tests",
        "tools",
    ] {
        assert!(
            !lines.iter().any(|l| l.trim_start_matches('/') == needed),
            ".dockerignore drops {needed}, which the build needs"
        );
    }
}

// ---------------------------------------------------------------------------
// deploy/compose/docker-compose.yml
// ---------------------------------------------------------------------------

fn strings(what: &str, y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what}: not a list: {y:?}"))
        .iter()
        .map(|s| match s {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(n) => n.to_string(),
            other => panic!("{what}: {other:?} is not a string"),
        })
        .collect()
}

fn str_of<'a>(what: &str, y: &'a Yaml) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {y:?}"))
}

/// `10s`, `1m30s` or a number of seconds, as compose and systemd write them.
fn seconds(text: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("{text}: not a duration"));
        number.clear();
        total += match c {
            's' => n,
            'm' => n * 60,
            'h' => n * 3600,
            _ => panic!("{text}: unit {c}"),
        };
    }
    if !number.is_empty() {
        total += number.parse::<u64>().expect("seconds");
    }
    total
}

#[test]
fn the_compose_cluster_makes_its_certificates_and_every_node_passes_the_check() {
    let doc = &yaml("deploy/compose/docker-compose.yml")[0];
    let services = doc["services"].as_hash().expect("services");
    let image = image();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_dir, tls_dir) = (dir.path().join("ca"), dir.path().join("tls"));
    std::fs::create_dir_all(&ca_dir).expect("mkdir");
    std::fs::create_dir_all(&tls_dir).expect("mkdir");
    let paths = vec![
        (
            "/var/lib/raftlock/ca".to_string(),
            ca_dir.display().to_string(),
        ),
        (
            "/etc/raftlock/tls".to_string(),
            tls_dir.display().to_string(),
        ),
    ];

    // The one-shot certs service: its script, run twice (the second time
    // it must change nothing), makes what the nodes need and keeps the CA
    // key out of the volume the nodes mount.
    let certs = &doc["services"]["certs"];
    assert_eq!(
        strings("certs entrypoint", &certs["entrypoint"]),
        ["/bin/sh", "-ec"],
        "the certs script runs under sh -e, so a failing step fails it"
    );
    let script = subst(str_of("certs command", &certs["command"][0]), &paths);
    assert!(script.contains("raftlock certs ca"), "{script}");
    for round in 0..2 {
        run_script(
            &format!("certs service (run {round})"),
            "/bin/sh",
            &["-ec", &script],
            dir.path(),
        );
    }
    assert!(
        !tls_dir.join("ca.key").exists(),
        "the CA key reached the nodes' volume"
    );

    let mut nodes = 0;
    for (name, service) in services {
        let name = str_of("service name", name);
        if name == "certs" {
            continue;
        }
        nodes += 1;
        let mut env = image.env.clone();
        if let Some(vars) = service["environment"].as_hash() {
            for (k, v) in vars {
                let value = subst(str_of(name, v), &paths);
                env.insert(str_of(name, k).to_string(), value);
            }
        }
        let command: Vec<String> = strings(name, &service["command"])
            .iter()
            .map(|a| subst(a, &paths))
            .collect();
        let argv: Vec<String> = image.entrypoint.iter().cloned().chain(command).collect();
        let out = serve_checks(name, &argv, &env, dir.path());
        let id = name.rsplit('-').next().expect("raftlock-N");
        assert!(out.contains(&format!("\nid = {id}\n")), "{name}: {out}");
        assert_eq!(str_of(name, &service["hostname"]), name);
        // Its data is on a named volume at the image's VOLUME.
        let volumes = strings(name, &service["volumes"]);
        assert!(
            volumes.iter().any(|v| image
                .volumes
                .iter()
                .any(|iv| v.ends_with(&format!(":{iv}")))),
            "{name}: no volume at {:?}: {volumes:?}",
            image.volumes
        );
        let health = strings(name, &service["healthcheck"]["test"]);
        assert_eq!(
            health.first().map(String::as_str),
            Some("CMD"),
            "{name}: {health:?}"
        );
        probe_parses(
            &format!("{name} healthcheck"),
            &health[1..],
            &env,
            dir.path(),
        );
        let grace = seconds(str_of(name, &service["stop_grace_period"]));
        assert!(grace > NODE_STOP_SECS, "{name}: stop_grace_period {grace}s");
    }
    assert_eq!(nodes, 3);
}

// ---------------------------------------------------------------------------
// deploy/systemd/raftlock.service
// ---------------------------------------------------------------------------

/// `Key=value` lines of the unit's [Service] section (a key may repeat).
fn unit_service() -> Vec<(String, String)> {
    let text = read("deploy/systemd/raftlock.service");
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section == "[Service]" {
            let (k, v) = line.split_once('=').expect("Key=value");
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

fn unit_value<'a>(service: &'a [(String, String)], key: &str) -> &'a str {
    service
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

#[test]
fn the_systemd_unit_waits_for_readiness_without_a_start_timeout_and_its_commands_pass_the_check() {
    let service = unit_service();
    assert_eq!(unit_value(&service, "Type"), "notify");
    assert_eq!(unit_value(&service, "TimeoutStartSec"), "infinity");
    let stop = seconds(unit_value(&service, "TimeoutStopSec"));
    assert!(stop > NODE_STOP_SECS, "TimeoutStopSec={stop}");
    assert!(
        unit_value(&service, "RestartPreventExitStatus")
            .split_whitespace()
            .any(|c| c == "2"),
        "a configuration mistake (exit 2) must not be restarted"
    );
    assert_eq!(unit_value(&service, "UMask"), "0077");
    assert_eq!(unit_value(&service, "StateDirectory"), "raftlock");
    assert_eq!(unit_value(&service, "ProtectSystem"), "strict");
    assert_eq!(unit_value(&service, "NoNewPrivileges"), "yes");
    assert!(
        unit_value(&service, "RestrictAddressFamilies")
            .split_whitespace()
            .any(|f| f == "AF_UNIX"),
        "sd_notify needs AF_UNIX"
    );

    // The example config with the paths of this test, certificates made by
    // the binary, and the unit's specifiers filled in.
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    let conf = etc.join("raftlock");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&conf).expect("mkdir");
    let paths = vec![
        ("/etc/raftlock".to_string(), conf.display().to_string()),
        ("%E".to_string(), etc.display().to_string()),
        ("%S".to_string(), state.display().to_string()),
    ];
    let toml = subst(&read("deploy/systemd/raftlock.toml"), &paths);
    std::fs::write(conf.join("raftlock.toml"), toml).expect("write the config");
    let conf_arg = conf.display().to_string();
    for args in [
        vec!["certs", "ca", "--dir", &conf_arg],
        vec!["certs", "node", "--id", "1", "--dir", &conf_arg],
    ] {
        let mut cmd = raftlock();
        cmd.args(&args);
        let (status, _, err) = run_bounded(cmd, dir.path(), RUN);
        assert!(status.success(), "raftlock {args:?}: {err}");
    }
    let mut env = BTreeMap::new();
    for (k, v) in &service {
        if k == "Environment" {
            let (name, value) = v.split_once('=').expect("Environment=NAME=VALUE");
            env.insert(name.to_string(), subst(value, &paths));
        }
    }
    let mut commands = 0;
    for key in ["ExecStartPre", "ExecStart"] {
        for (_, line) in service.iter().filter(|(k, _)| k == key) {
            let line = subst(line, &paths);
            let argv: Vec<String> = line
                .split_whitespace()
                .filter(|a| *a != "--check")
                .map(str::to_string)
                .collect();
            let out = serve_checks(key, &argv, &env, dir.path());
            assert!(out.contains("\nid = 1\n"), "{key}: {out}");
            let data = state.join("raftlock/data");
            assert!(
                out.contains(&format!("data_dir = \"{}\"", data.display())),
                "{key}: {out}"
            );
            commands += 1;
        }
    }
    assert_eq!(commands, 2, "ExecStartPre (the check) and ExecStart");
}

/// Where systemd-analyze is, or why the unit's checks by it are skipped
/// (a failure when RAFTLOCK_REQUIRE_SYSTEMD_ANALYZE=1: CI has it).
fn systemd_analyze() -> Option<&'static str> {
    let path = "systemd-analyze";
    let found = Command::new(path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(path);
    }
    let why = "systemd-analyze is not installed (apt-get install systemd)";
    if std::env::var("RAFTLOCK_REQUIRE_SYSTEMD_ANALYZE").as_deref() == Ok("1") {
        panic!("RAFTLOCK_REQUIRE_SYSTEMD_ANALYZE=1 but {why}");
    }
    eprintln!("skipping the systemd-analyze checks: {why}");
    None
}

/// A copy of the unit in a temporary directory whose commands run the
/// built binary (verify checks that each executable exists).
fn unit_copy(dir: &Path) -> PathBuf {
    let text = read("deploy/systemd/raftlock.service").replace("/usr/local/bin/raftlock", BIN);
    let path = dir.join("raftlock.service");
    std::fs::write(&path, text).expect("write the unit");
    path
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_security() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_copy(dir.path());
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    let err = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and values it cannot parse, but says
    // so, naming the unit: any word about it is a failure.
    assert!(
        out.status.success() && !err.contains("raftlock.service"),
        "systemd-analyze verify:\n{err}"
    );
    // Exposure 2.0 or better ("OK"); the unit scores about 1.4.
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    assert!(
        out.status.success(),
        "systemd-analyze security --threshold=20:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// deploy/kubernetes/
// ---------------------------------------------------------------------------

fn kind<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// `$(VAR)` of `env` in `text`, as the kubelet expands args and values.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    env.iter().fold(text.to_string(), |t, (k, v)| {
        t.replace(&format!("$({k})"), v)
    })
}

#[test]
fn every_statefulset_pod_passes_the_check_with_its_own_id_and_certificate() {
    let docs = yaml("deploy/kubernetes/raftlock.yaml");
    let sts = kind(&docs, "StatefulSet", "raftlock");
    let spec = &sts["spec"];
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    let headless_name = str_of("serviceName", &spec["serviceName"]);
    let headless = kind(&docs, "Service", headless_name);
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    let pdb = kind(&docs, "PodDisruptionBudget", "raftlock");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(1));
    let client = kind(&docs, "Service", "raftlock-client");
    assert!(
        client["spec"]["clusterIP"].is_badvalue(),
        "the client Service balances"
    );
    let pod = &spec["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("grace");
    assert!(
        grace as u64 > NODE_STOP_SECS,
        "terminationGracePeriodSeconds {grace}"
    );
    let uid = pod["securityContext"]["runAsUser"]
        .as_i64()
        .expect("runAsUser");
    assert_eq!(
        uid.to_string(),
        image().user.split(':').next().unwrap_or_default()
    );

    let replicas = spec["replicas"].as_i64().expect("replicas");
    let namespace = "locks";
    // The documented Secret, made by the documented script.
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = dir.path().join("certs");
    let script = repo().join("deploy/kubernetes/certs.sh");
    run_script(
        "deploy/kubernetes/certs.sh",
        "/bin/sh",
        &[
            &script.display().to_string(),
            namespace,
            &replicas.to_string(),
            &certs_dir.display().to_string(),
        ],
        dir.path(),
    );
    let secret = certs_dir.join("secret");
    assert!(
        !secret.join("ca.key").exists(),
        "the CA key is in the Secret"
    );
    let container = &pod["containers"][0];
    let mounts = container["volumeMounts"].as_vec().expect("volumeMounts");
    let tls_mount = mounts
        .iter()
        .find(|m| m["name"].as_str() == Some("tls"))
        .expect("the tls mount");
    let paths = vec![(
        str_of("mountPath", &tls_mount["mountPath"]).to_string(),
        secret.display().to_string(),
    )];
    let image = image();
    let sts_name = str_of("name", &sts["metadata"]["name"]);

    for ordinal in 0..replicas {
        let pod_name = format!("{sts_name}-{ordinal}");
        let mut vars = BTreeMap::new();
        for e in container["env"].as_vec().expect("env") {
            let name = str_of("env name", &e["name"]).to_string();
            let value = match (
                &e["value"],
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Yaml::String(v), _) => v.clone(),
                (_, Some("metadata.name")) => pod_name.clone(),
                (_, Some("metadata.namespace")) => namespace.to_string(),
                other => panic!("env {name}: {other:?}"),
            };
            vars.insert(name, value);
        }
        let mut env = image.env.clone();
        for (k, v) in &vars {
            env.insert(k.clone(), subst(&expand(v, &vars), &paths));
        }
        // A pod's hostname is its name (--id-from-hostname reads it).
        env.insert("RAFTLOCK_HOSTNAME".into(), pod_name.clone());
        let args: Vec<String> = strings("args", &container["args"])
            .iter()
            .map(|a| subst(&expand(a, &vars), &paths))
            .collect();
        assert!(args.iter().any(|a| a == "--id-from-hostname"), "{args:?}");
        let argv: Vec<String> = image.entrypoint.iter().cloned().chain(args).collect();
        let out = serve_checks(&pod_name, &argv, &env, dir.path());
        assert!(
            out.contains(&format!("\nid = {}\n", ordinal + 1)),
            "{pod_name}: {out}"
        );
        // Every peer is a pod of this StatefulSet under the headless
        // Service, id = ordinal + 1.
        for peer in 0..replicas {
            let entry = format!(
                "{} = \"{sts_name}-{peer}.{headless_name}.{namespace}.svc:8401\"",
                peer + 1
            );
            assert!(out.contains(&entry), "{pod_name}: no `{entry}` in\n{out}");
        }
        let probe = strings(
            "readinessProbe",
            &container["readinessProbe"]["exec"]["command"],
        );
        probe_parses(
            &format!("{pod_name} readinessProbe"),
            &probe,
            &env,
            dir.path(),
        );
    }
    // Liveness must not be the health check: a node without a quorum is
    // alive and waiting, and a restart would not help.
    assert!(
        container["livenessProbe"]["exec"].is_badvalue(),
        "livenessProbe runs a command: {:?}",
        container["livenessProbe"]
    );
}
