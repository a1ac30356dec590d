//! Three real `raftlock serve` processes with TLS (mutual TLS between
//! peers) and an auth file, certificates made by `raftlock certs` itself,
//! used as a stranger would: through the `raftlock` CLI, the Rust client
//! and raw bytes on their ports.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftlock_client::{Client, ClientOptions, Error as ClientError, TlsOptions};
use raftlock_proto::internal::v1 as ipb;

use crate::common::*;
use raftlock_testkit::process::peers;

/// A CLI command must finish within this (they fail fast or succeed here).
const RUN_BOUND: Duration = Duration::from_secs(30);

/// Runs `cmd` in `dir`; returns (exit code, stdout, stderr).
fn run_in(dir: &Path, cmd: Command) -> (i32, String, String) {
    let (status, out, err) = run_bounded(cmd, dir, RUN_BOUND);
    (status.code().unwrap_or(-1), out, err)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `raftlock certs ARGS`, which must succeed; returns its stdout.
fn certs(dir: &Path, args: &[&str]) -> String {
    let mut cmd = raftlock();
    cmd.current_dir(dir).arg("certs").args(args);
    let (code, out, err) = run_in(dir, cmd);
    assert_eq!(code, 0, "raftlock certs {args:?}: {err}");
    out
}

/// Who a CLI command runs as.
#[derive(Clone, Copy)]
enum As<'a> {
    /// No TLS at all.
    Plaintext,
    /// Trusting this CA, no identity.
    CaOnly(&'a Path),
    /// Trusting the CA, presenting a client certificate (cert, key).
    Cert(&'a Path, &'a Path, &'a Path),
    /// Trusting the CA, sending a bearer token.
    Token(&'a Path, &'a str),
}

/// A 3-node TLS cluster with an auth file; every process is killed when
/// this is dropped, before its directory goes.
struct Secure {
    procs: BTreeMap<u64, Proc>,
    ports: BTreeMap<u64, u16>,
    peer_ports: BTreeMap<u64, u16>,
    peers: String,
    /// certs/ (the cluster's CA, node and client certificates), other/ (a
    /// CA of strangers), live/ (the files the nodes are given), data, logs.
    dir: tempfile::TempDir,
    /// The bearer token of identity `other`.
    token: String,
    /// The CA file clients trust (certs/ca.crt unless changed).
    client_ca: PathBuf,
}

const AUTH: &str = r#"
[[role]]
name = "jobs"
rules = [{ prefix = "jobs/", allow = ["inspect", "lock", "watch"] }]

[[role]]
name = "admin"
rules = [{ prefix = "", allow = ["inspect", "lock", "watch", "admin"] }]

[[identity]]
cert = "worker"
roles = ["jobs"]

[[identity]]
cert = "admin"
roles = ["admin"]
"#;

impl Secure {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Makes the certificates with `raftlock certs`, the auth file, and
    /// starts nodes 1..=3 (new ports if one was taken); returns the cluster
    /// and its leader.
    fn start() -> (Secure, u64) {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        certs(d, &["ca", "--dir", "certs"]);
        for id in 1..=3 {
            certs(d, &["node", "--id", &id.to_string(), "--dir", "certs"]);
        }
        certs(d, &["client", "--name", "worker", "--dir", "certs"]);
        certs(d, &["client", "--name", "admin", "--dir", "certs"]);
        certs(d, &["ca", "--dir", "other"]);
        certs(d, &["client", "--name", "worker", "--dir", "other"]);
        let token: serde_json::Value =
            serde_json::from_str(&certs(d, &["token", "--name", "other", "--json"]))
                .expect("token --json");
        let auth = format!(
            "{AUTH}\n{}\n",
            token["identity_toml"]
                .as_str()
                .expect("identity_toml")
                .replace("roles = []", "roles = [\"jobs\"]")
        );
        std::fs::write(d.join("auth.toml"), auth).expect("auth file");
        // The nodes' files live apart from certs/, so rotating them is a
        // copy into live/.
        std::fs::create_dir(d.join("live")).expect("live dir");
        std::fs::copy(d.join("certs/ca.crt"), d.join("live/ca.crt")).expect("copy CA");
        for id in 1..=3 {
            for ext in ["crt", "key"] {
                let f = format!("node-{id}.{ext}");
                std::fs::copy(d.join("certs").join(&f), d.join("live").join(&f)).expect("copy");
            }
        }
        let client_ca = d.join("certs/ca.crt");
        let mut cluster = Secure {
            procs: BTreeMap::new(),
            ports: BTreeMap::new(),
            peer_ports: BTreeMap::new(),
            peers: String::new(),
            dir,
            token: token["token"].as_str().expect("token").to_string(),
            client_ca,
        };
        for _attempt in 0..4 {
            let free = free_ports(6);
            cluster.ports = (1..=3).zip(free[..3].iter().copied()).collect();
            cluster.peer_ports = (1..=3).zip(free[3..].iter().copied()).collect();
            cluster.peers = peers(cluster.peer_ports.iter().map(|(i, p)| (*i, *p)));
            cluster.procs.clear();
            for id in 1..=3 {
                let data = cluster.path(&format!("data{}-{id}", cluster.ports[&1]));
                cluster.spawn(id, &data, &format!("node-{id}"), &cluster.peers.clone());
            }
            match cluster.wait_leader(&[1, 2, 3], Duration::from_secs(30)) {
                Ok(leader) => return (cluster, leader),
                Err(log) if log.contains("in use") => continue,
                Err(log) => panic!("{log}"),
            }
        }
        panic!("could not start a TLS cluster on free ports");
    }

    /// Starts `raftlock serve --id ID` with TLS (the certificate
    /// live/CERT.crt) and the auth file, on node `id`'s ports.
    fn spawn(&mut self, id: u64, data: &Path, cert: &str, peers: &str) {
        let cmd = self.serve(id, data, cert, peers);
        let log = self.path(&format!("node{id}.log"));
        self.procs.insert(id, Proc::spawn(cmd, &log));
    }

    fn serve(&self, id: u64, data: &Path, cert: &str, peers: &str) -> Command {
        let live = self.path("live");
        let mut cmd = raftlock();
        cmd.current_dir(self.dir.path())
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--data-dir", s(data)])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[&id])])
            .args([
                "--peer-listen",
                &format!("127.0.0.1:{}", self.peer_ports[&id]),
            ])
            .args(["--peers", peers])
            .args(["--tls-cert", s(&live.join(format!("{cert}.crt")))])
            .args(["--tls-key", s(&live.join(format!("{cert}.key")))])
            .args(["--tls-ca", s(&live.join("ca.crt"))])
            .args(["--auth", s(&self.path("auth.toml"))]);
        cmd
    }

    fn endpoints(&self) -> String {
        self.ports
            .values()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|(id, p)| format!("--- node {id} ---\n{}", p.log_text()))
            .collect()
    }

    /// The admin's view through node `id`: `raftlock status --json`.
    fn status(&self, id: u64) -> Option<serde_json::Value> {
        let (code, out, _) = self.run_on(
            &format!("127.0.0.1:{}", self.ports[&id]),
            self.admin(),
            &["status", "--json"],
        );
        if code != 0 {
            return None;
        }
        serde_json::from_str(&out).ok()
    }

    /// Waits until every node in `ids` names the same leader; Err with
    /// the logs if one exits or time runs out.
    fn wait_leader(&mut self, ids: &[u64], within: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + within;
        loop {
            for id in ids {
                let p = self.procs.get_mut(id).expect("a process");
                if let Some(status) = p.exited() {
                    return Err(format!("node {id} exited {status}:\n{}", p.log_text()));
                }
            }
            let leaders: Vec<Option<u64>> = ids
                .iter()
                .map(|id| self.status(*id).and_then(|s| s["leader_id"].as_u64()))
                .collect();
            if leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]) {
                return Ok(leaders[0].expect("a leader"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no common leader within {within:?}: {leaders:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ca(&self) -> PathBuf {
        self.client_ca.clone()
    }

    fn admin(&self) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.ca(),
            self.path("certs/client-admin.crt"),
            self.path("certs/client-admin.key"),
        )
    }

    fn worker(&self) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.ca(),
            self.path("certs/client-worker.crt"),
            self.path("certs/client-worker.key"),
        )
    }

    /// `raftlock ARGS` against `endpoints` as a client certificate (CA,
    /// cert, key).
    fn run_on(
        &self,
        endpoints: &str,
        who: (PathBuf, PathBuf, PathBuf),
        args: &[&str],
    ) -> (i32, String, String) {
        self.run_as(endpoints, As::Cert(&who.0, &who.1, &who.2), args)
    }

    /// `raftlock ARGS --endpoints E` as `who`.
    fn run_as(&self, endpoints: &str, who: As<'_>, args: &[&str]) -> (i32, String, String) {
        let mut cmd = with_endpoints(args, endpoints);
        match who {
            As::Plaintext => {}
            As::CaOnly(ca) => {
                cmd.args(["--ca", s(ca)]);
            }
            As::Cert(ca, cert, key) => {
                cmd.args(["--ca", s(ca), "--cert", s(cert), "--key", s(key)]);
            }
            As::Token(ca, token) => {
                cmd.args(["--ca", s(ca)]).env("RAFTLOCK_TOKEN", token);
            }
        }
        run_in(self.dir.path(), cmd)
    }

    /// `raftlock ARGS` against every node as `who`.
    fn run(&self, who: As<'_>, args: &[&str]) -> (i32, String, String) {
        self.run_as(&self.endpoints(), who, args)
    }

    /// `raftlock acquire NAME --json` as `who`, which must succeed; returns
    /// (lease, token).
    fn acquire(&self, who: As<'_>, name: &str) -> (u64, u64) {
        let (code, out, err) = self.run(who, &["acquire", name, "--ttl", "30s", "--json"]);
        assert_eq!(code, 0, "acquire {name}: {err}\n{}", self.logs());
        let v: serde_json::Value = serde_json::from_str(&out).expect("acquire --json");
        (
            v["lease_id"].as_u64().expect("lease_id"),
            v["token"].as_u64().expect("token"),
        )
    }
}

fn as_cert(who: &(PathBuf, PathBuf, PathBuf)) -> As<'_> {
    As::Cert(&who.0, &who.1, &who.2)
}

/// Asserts a CLI failure is exit 5 with DENIED naming `missing`.
fn assert_denied((code, _, err): (i32, String, String), missing: &str) {
    assert_eq!(code, 5, "expected DENIED (exit 5): {err}");
    assert!(
        err.contains("DENIED") && err.contains(missing),
        "expected DENIED naming {missing:?}: {err}"
    );
}

#[test]
fn strangers_are_refused_and_identities_get_only_what_their_roles_allow() {
    let started = Instant::now();
    let (cluster, leader) = Secure::start();
    eprintln!(
        "TLS cluster up, leader {leader}, in {:?}",
        started.elapsed()
    );
    let worker = cluster.worker();
    let admin = cluster.admin();
    let ca = cluster.ca();

    // 1. No TLS at all: refused at once, saying TLS.
    for args in [
        &["list"][..],
        &["inspect", "jobs/x"],
        &["status"],
        &["acquire", "jobs/x", "--wait", "0"],
    ] {
        let asked = Instant::now();
        let (code, _, err) = cluster.run(As::Plaintext, args);
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "plaintext {args:?} took {:?} to fail: {err}",
            asked.elapsed()
        );
        assert_ne!(code, 0, "plaintext {args:?} succeeded");
        assert!(
            err.contains("TLS"),
            "plaintext {args:?}: exit {code}, no word of TLS: {err:?}"
        );
    }
    // Trusting another CA: the node's certificate is refused.
    let other_ca = cluster.path("other/ca.crt");
    let (code, _, err) = cluster.run(As::CaOnly(&other_ca), &["list"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("TLS") && err.contains("certificate"),
        "another CA: {err}"
    );
    // A client certificate of another CA, trusting the right one: the node
    // refuses the handshake.
    let (other_cert, other_key) = (
        cluster.path("other/client-worker.crt"),
        cluster.path("other/client-worker.key"),
    );
    let asked = Instant::now();
    let (code, _, err) = cluster.run(As::Cert(&ca, &other_cert, &other_key), &["list"]);
    assert_ne!(code, 0, "a client certificate of another CA was taken");
    assert!(
        err.contains("TLS") && err.contains("client certificate"),
        "client certificate of another CA: exit {code}: {err:?}"
    );
    assert!(asked.elapsed() < Duration::from_secs(5), "retried: {err}");
    // The CA but no identity: UNAUTHENTICATED.
    let (code, _, err) = cluster.run(As::CaOnly(&ca), &["acquire", "jobs/x", "--wait", "0"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("UNAUTHENTICATED"), "{err}");

    // 2. worker (role jobs) locks jobs/x...
    let (lease, token) = cluster.acquire(as_cert(&worker), "jobs/x");
    // ...but not billing/x, and may not force-release.
    assert_denied(
        cluster.run(as_cert(&worker), &["acquire", "billing/x", "--wait", "0"]),
        "lock on billing/x",
    );
    assert_denied(
        cluster.run(as_cert(&worker), &["force-release", "jobs/x"]),
        "admin on jobs/x",
    );
    // Another identity's lease (a bearer token's): worker may not use it,
    // keep it alive, release its lock or revoke it.
    let other = As::Token(&ca, &cluster.token);
    let (their_lease, their_token) = cluster.acquire(other, "jobs/theirs");
    let theirs = their_lease.to_string();
    let owned = format!("lease {their_lease} belongs to another identity");
    assert_denied(
        cluster.run(
            as_cert(&worker),
            &["acquire", "jobs/y", "--lease", &theirs, "--wait", "0"],
        ),
        &owned,
    );
    assert_denied(
        cluster.run(as_cert(&worker), &["lease", "keep-alive", &theirs]),
        &owned,
    );
    assert_denied(
        cluster.run(
            as_cert(&worker),
            &[
                "release",
                "jobs/theirs",
                "--lease",
                &theirs,
                "--token",
                &their_token.to_string(),
            ],
        ),
        &owned,
    );
    assert_denied(
        cluster.run(as_cert(&worker), &["lease", "revoke", &theirs]),
        &owned,
    );
    // The token's identity can (it owns the lease).
    let (code, _, err) = cluster.run(
        other,
        &[
            "release",
            "jobs/theirs",
            "--lease",
            &theirs,
            "--token",
            &their_token.to_string(),
        ],
    );
    assert_eq!(code, 0, "the owner releases: {err}");
    // An admin force-releases worker's lock.
    let (code, out, err) = cluster.run(as_cert(&admin), &["force-release", "jobs/x", "--json"]);
    assert_eq!(code, 0, "admin force-release: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("force-release --json");
    assert_eq!(v["released"][0]["lease_id"].as_u64(), Some(lease));
    assert_eq!(v["released"][0]["token"].as_u64(), Some(token));

    // The same through the Rust client.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(String::from).collect();
    rt.block_on(async {
        let tls = TlsOptions::from_files(
            Some(ca.as_path()),
            Some(worker.1.as_path()),
            Some(worker.2.as_path()),
        )
        .expect("worker TLS files");
        let client = Client::connect(
            endpoints.clone(),
            ClientOptions {
                tls: Some(tls),
                ..Default::default()
            },
        )
        .await
        .expect("connect");
        let guard = client
            .lock("jobs/rust")
            .try_acquire()
            .await
            .expect("worker locks jobs/rust");
        match client.lock("billing/rust").try_acquire().await {
            Err(ClientError::Denied {
                missing, identity, ..
            }) => {
                assert_eq!(missing, "lock on billing/rust");
                assert_eq!(identity, "worker");
            }
            other => panic!("billing/rust: {other:?}"),
        }
        let worker_lease = guard.session().lease_id();
        // The token identity may not revoke worker's lease.
        let token_client = Client::connect(
            endpoints.clone(),
            ClientOptions {
                tls: Some(TlsOptions::new().with_ca_file(&ca).expect("CA file")),
                token: Some(cluster.token.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("connect with a token");
        match token_client.revoke_lease(worker_lease).await {
            Err(ClientError::Denied { message, .. }) => {
                assert!(message.contains("belongs to another identity"), "{message}")
            }
            other => panic!("revoke of worker's lease by another identity: {other:?}"),
        }
        guard.release().await.expect("worker releases");
        // The CA but no identity.
        let anonymous = Client::connect(
            endpoints,
            ClientOptions {
                tls: Some(TlsOptions::new().with_ca_file(&ca).expect("CA file")),
                ..Default::default()
            },
        )
        .await
        .expect("connect");
        match anonymous.lock("jobs/anon").try_acquire().await {
            Err(ClientError::Unauthenticated { .. }) => {}
            other => panic!("no identity: {other:?}"),
        }
    });
    eprintln!("whole test {:?}", started.elapsed());
}

/// A raw TLS channel to `port` presenting the certificate `name` (of
/// certs/), as a peer would dial it.
async fn peer_channel(cluster: &Secure, port: u16, name: &str) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |f: String| std::fs::read(cluster.path(&f)).expect("read a PEM file");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("certs/ca.crt".into())))
        .identity(Identity::from_pem(
            read(format!("certs/{name}.crt")),
            read(format!("certs/{name}.key")),
        ))
        .domain_name("localhost");
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("TLS connection with a node certificate")
}

/// Writes `bytes` to 127.0.0.1:`port`, then reads until the node closes
/// the connection (at most 10 s). Whether it closes is not the point: the
/// cluster must keep serving.
fn garbage(port: u16, bytes: &[u8]) {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        panic!("connect to {port}");
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = conn.write_all(bytes);
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Pseudo-random bytes (xorshift), different per seed.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_node_certificate_speaks_only_for_its_node_and_garbage_leaves_the_cluster_serving() {
    let started = Instant::now();
    let (mut cluster, leader) = Secure::start();
    eprintln!(
        "TLS cluster up, leader {leader}, in {:?}",
        started.elapsed()
    );
    let worker = cluster.worker();

    // 3. A process given node 2's certificate as node 4 refuses to start.
    let mut impostor = {
        let port = free_ports(2);
        cluster.ports.insert(4, port[0]);
        cluster.peer_ports.insert(4, port[1]);
        let peers = format!("{},4=127.0.0.1:{}", cluster.peers, port[1]);
        let cmd = cluster.serve(4, &cluster.path("data-impostor"), "node-2", &peers);
        let p = Proc::spawn(cmd, &cluster.path("impostor.log"));
        cluster.ports.remove(&4);
        cluster.peer_ports.remove(&4);
        p
    };
    let status = impostor
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("node 4 with node 2's certificate kept running"));
    let log = impostor.log_text();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("node-2") && log.contains("node-4"),
        "the refusal names both nodes: {log}"
    );

    // Node 2's certificate claiming to be node 3 on a node's peer port:
    // refused, on Hello and on a Raft message.
    let target = if leader == 1 { 2 } else { 1 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use ipb::raft_transport_client::RaftTransportClient;
        let ch = peer_channel(&cluster, cluster.peer_ports[&target], "node-2").await;
        let mut peer = RaftTransportClient::new(ch);
        let hello = peer
            .hello(ipb::HelloRequest {
                from_id: 3,
                target_id: target,
                client_addr: format!("127.0.0.1:{}", cluster.ports[&3]),
                ..Default::default()
            })
            .await;
        match hello {
            Err(st) if st.code() == tonic::Code::PermissionDenied => {
                eprintln!(
                    "Hello as node 3 with node 2's certificate: {}",
                    st.message()
                )
            }
            other => panic!("Hello claiming node 3 with node 2's certificate: {other:?}"),
        }
        let vote = peer
            .vote(ipb::RaftMessage {
                from_id: 3,
                target_id: target,
                ..Default::default()
            })
            .await;
        match vote {
            Err(st) if st.code() == tonic::Code::PermissionDenied => {}
            other => panic!("Vote claiming node 3 with node 2's certificate: {other:?}"),
        }
        // A client certificate is no peer at all.
        let ch = peer_channel(&cluster, cluster.peer_ports[&target], "client-worker").await;
        let hello = RaftTransportClient::new(ch)
            .hello(ipb::HelloRequest {
                from_id: 2,
                target_id: target,
                ..Default::default()
            })
            .await;
        match hello {
            Err(st) if st.code() == tonic::Code::PermissionDenied => {}
            other => panic!("Hello with a client certificate: {other:?}"),
        }
    });
    cluster.acquire(as_cert(&worker), "jobs/after-impostors");

    // 6. Garbage on every node's peer and client ports, while a silent
    // connection stays open on the leader's peer port.
    let _silent = TcpStream::connect(("127.0.0.1", cluster.peer_ports[&leader])).expect("connect");
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend(random_bytes(7, 2048));
    let ports: Vec<u16> = cluster
        .peer_ports
        .values()
        .chain(cluster.ports.values())
        .copied()
        .collect();
    std::thread::scope(|scope| {
        for (i, port) in ports.iter().enumerate() {
            let preface = &preface;
            scope.spawn(move || {
                garbage(*port, &random_bytes(i as u64 + 1, 64 * 1024));
                garbage(*port, preface);
                // A TLS record header announcing a handshake, then junk.
                let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00];
                hello.extend(random_bytes(i as u64 + 100, 512));
                garbage(*port, &hello);
            });
        }
    });
    let after = Instant::now();
    for id in 1..=3 {
        let p = cluster.procs.get_mut(&id).expect("node");
        assert!(p.exited().is_none(), "node {id} died:\n{}", p.log_text());
    }
    let (_, token) = cluster.acquire(as_cert(&worker), "jobs/after-garbage");
    assert!(token > 0);
    let now = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "after the garbage: acquire and leader {now} in {:?}; whole test {:?}",
        after.elapsed(),
        started.elapsed()
    );
}

/// How many times node `id`'s log says it reloaded its certificate files
/// after seeing them change.
fn reloads(cluster: &Secure, id: u64) -> usize {
    std::fs::read_to_string(cluster.path(&format!("node{id}.log")))
        .unwrap_or_default()
        .matches("certificates changed on disk; reloaded")
        .count()
}

/// Replaces `to` with `from`'s content in one rename.
fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

/// Waits (at most 15 s) until every node has reloaded at least `n` times.
fn wait_reloads(cluster: &Secure, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while (1..=3).any(|id| reloads(cluster, id) < n) {
        assert!(
            Instant::now() < deadline,
            "not every node reloaded its certificates {n} time(s) within 15 s\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_new_ca_and_node_certificates_rotated_on_disk_are_picked_up_while_clients_keep_locking() {
    let started = Instant::now();
    let (mut cluster, leader) = Secure::start();
    eprintln!(
        "TLS cluster up, leader {leader}, in {:?}",
        started.elapsed()
    );
    let d = cluster.dir.path().to_path_buf();
    // The new CA, its node certificates and a client certificate, with
    // `raftlock certs`; clients trust both CAs during the change.
    certs(&d, &["ca", "--dir", "new"]);
    for id in 1..=3 {
        certs(&d, &["node", "--id", &id.to_string(), "--dir", "new"]);
    }
    certs(&d, &["client", "--name", "worker", "--dir", "new"]);
    let bundle = d.join("bundle.crt");
    let mut both = std::fs::read(d.join("certs/ca.crt")).expect("old CA");
    both.extend(std::fs::read(d.join("new/ca.crt")).expect("new CA"));
    std::fs::write(&bundle, both).expect("bundle");
    cluster.client_ca = bundle.clone();
    let worker = cluster.worker();

    // A client that keeps locking and unlocking through the CLI.
    let stop = AtomicBool::new(false);
    let rotated = AtomicBool::new(false);
    let (ok_before, ok_after, failures) = std::thread::scope(|scope| {
        let looper = scope.spawn(|| {
            let (mut before, mut after, mut failures) = (0, 0, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                n += 1;
                let was_rotated = rotated.load(Ordering::SeqCst);
                let name = format!("jobs/loop-{n}");
                let (code, out, err) = cluster.run(as_cert(&worker), &["acquire", &name, "--json"]);
                if code != 0 {
                    failures.push(format!("acquire {name}: exit {code}: {err}"));
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&out).expect("acquire --json");
                let (lease, token) = (v["lease_id"].to_string(), v["token"].to_string());
                let (code, _, err) = cluster.run(
                    as_cert(&worker),
                    &["release", &name, "--lease", &lease, "--token", &token],
                );
                if code != 0 {
                    failures.push(format!("release {name}: exit {code}: {err}"));
                } else if was_rotated {
                    after += 1;
                } else {
                    before += 1;
                }
            }
            (before, after, failures)
        });
        // Nodes trust both CAs...
        std::thread::sleep(Duration::from_millis(500));
        replace_file(&bundle, &d.join("live/ca.crt"));
        wait_reloads(&cluster, 1);
        // ...then serve and dial with certificates of the new one.
        for id in 1..=3 {
            for ext in ["key", "crt"] {
                let f = format!("node-{id}.{ext}");
                replace_file(&d.join("new").join(&f), &d.join("live").join(&f));
            }
        }
        wait_reloads(&cluster, 2);
        rotated.store(true, Ordering::SeqCst);
        eprintln!("rotated at {:?}", started.elapsed());
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        looper.join().expect("the client loop")
    });
    assert!(
        failures.is_empty(),
        "the client failed across the rotation: {failures:#?}\n{}",
        cluster.logs()
    );
    assert!(
        ok_before > 0 && ok_after > 0,
        "locked {ok_before} times before and {ok_after} after"
    );

    // Nodes now present the new CA's certificates: a client trusting only
    // the new CA, with its client certificate, locks...
    let (new_ca, new_cert, new_key) = (
        d.join("new/ca.crt"),
        d.join("new/client-worker.crt"),
        d.join("new/client-worker.key"),
    );
    cluster.acquire(As::Cert(&new_ca, &new_cert, &new_key), "jobs/new-ca");
    // ...and one trusting only the old CA no longer gets through.
    let old_ca = d.join("certs/ca.crt");
    let (code, _, err) = cluster.run(
        As::Cert(&old_ca, &worker.1, &worker.2),
        &["inspect", "jobs/new-ca"],
    );
    assert_ne!(code, 0, "the old CA still verifies the nodes");
    assert!(err.contains("certificate"), "{err}");

    // A restarted follower dials its peers with its new certificate and
    // rejoins.
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.procs.get_mut(&follower).expect("follower").kill();
    let data = cluster.path(&format!("data{}-{follower}", cluster.ports[&1]));
    let peers = cluster.peers.clone();
    cluster.spawn(follower, &data, &format!("node-{follower}"), &peers);
    let now = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("after restarting node {follower}: {e}"));
    eprintln!(
        "locked {ok_before} times before and {ok_after} after the rotation; node {follower} \
         rejoined leader {now}; whole test {:?}",
        started.elapsed()
    );
}

#[test]
fn a_node_of_another_cluster_on_a_members_address_is_refused_and_gets_nothing() {
    let started = Instant::now();
    let (mut cluster, leader) = Secure::start();
    eprintln!(
        "TLS cluster up, leader {leader}, in {:?}",
        started.elapsed()
    );
    let worker = cluster.worker();
    let admin = cluster.admin();
    // A member other than the leader is replaced, on its own addresses,
    // by a node of a new one-node cluster (same CA, same id, new data).
    let gone = if leader == 3 { 2 } else { 3 };
    cluster.procs.get_mut(&gone).expect("member").kill();
    let own_peers = format!("{gone}=127.0.0.1:{}", cluster.peer_ports[&gone]);
    let fresh = cluster.path("data-other-cluster");
    cluster.spawn(gone, &fresh, &format!("node-{gone}"), &own_peers);
    let stranger = format!("127.0.0.1:{}", cluster.ports[&gone]);
    // It is the leader of its own cluster of one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = cluster.procs.get_mut(&gone).expect("stranger");
        if let Some(st) = p.exited() {
            panic!("the other cluster's node exited {st}:\n{}", p.log_text());
        }
        if let Some(s) = cluster.status(gone)
            && s["leader_id"].as_u64() == Some(gone)
        {
            assert_eq!(s["nodes"].as_array().map(Vec::len), Some(1), "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other cluster has no leader\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Cluster A's leader is refused by it: CLUSTER_MISMATCH.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster.procs[&leader]
        .log_text()
        .contains("nodes of different clusters never merge")
    {
        assert!(
            Instant::now() < deadline,
            "no cluster mismatch in the leader's log\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Cluster A keeps serving with its two others...
    let members: String = cluster
        .ports
        .iter()
        .filter(|(id, _)| **id != gone)
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let (code, out, err) = cluster.run_as(
        &members,
        as_cert(&worker),
        &["acquire", "jobs/only-in-a", "--json"],
    );
    assert_eq!(code, 0, "cluster A after the stranger came: {err}");
    let a: serde_json::Value = serde_json::from_str(&out).expect("acquire --json");
    let a_status = cluster.status(leader).expect("A's leader answers");
    assert_eq!(a_status["leader_id"].as_u64(), Some(leader));
    assert_eq!(
        a_status["nodes"].as_array().map(Vec::len),
        Some(3),
        "{a_status}"
    );
    // ...and the stranger never gets A's data or members.
    std::thread::sleep(Duration::from_secs(1));
    let s = cluster.status(gone).expect("the stranger answers");
    assert_eq!(s["leader_id"].as_u64(), Some(gone), "{s}");
    assert_eq!(s["nodes"].as_array().map(Vec::len), Some(1), "{s}");
    let (code, out, err) =
        cluster.run_on(&stranger, admin, &["inspect", "jobs/only-in-a", "--json"]);
    assert_eq!(code, 0, "{err}");
    let held: serde_json::Value = serde_json::from_str(&out).expect("inspect --json");
    eprintln!("jobs/only-in-a on the stranger: {held}");
    assert_eq!(
        held["free"].as_bool(),
        Some(true),
        "A's lock (lease {}) is on the other cluster's node: {out}",
        a["lease_id"]
    );
    // (While cluster A has it held.)
    let (code, out, err) = cluster.run_as(
        &members,
        as_cert(&worker),
        &["inspect", "jobs/only-in-a", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let in_a: serde_json::Value = serde_json::from_str(&out).expect("inspect --json");
    assert_eq!(in_a["holders"][0]["lease_id"], a["lease_id"], "{out}");
    eprintln!("whole test {:?}", started.elapsed());
}
