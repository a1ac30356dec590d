//! `raftlock watch` run as the real binary: `--from-revision` against
//! `raftlock dev`, and resuming a broken stream without losing or repeating
//! an event, against a node that breaks the stream in the middle of one
//! log entry's events (which a real node may do: its replay goes in batches
//! of 256 events, and the connection can break between two of them).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::common::*;
use futures::StreamExt;
use raftlock_proto::v1 as pb;
use raftlock_testkit::process;
use serde_json::Value;
use tonic::{Request, Response, Status};

/// A running `raftlock watch --json` and the lines it prints.
struct Watch {
    proc: Proc,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn spawn(mut cmd: Command, log: &Path) -> Watch {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(append(log))
            .spawn()
            .expect("spawn raftlock watch");
        let lines = process::lines(child.stdout.take().expect("stdout"));
        Watch {
            proc: Proc {
                child,
                log: log.to_path_buf(),
            },
            lines,
        }
    }

    /// The events printed until `done` says enough, or `within` passes;
    /// then a little longer, so an event printed twice would be seen.
    fn events_until(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut events: Vec<Value> = Vec::new();
        let deadline = Instant::now() + within;
        let mut settle: Option<Instant> = None;
        loop {
            let until = settle.unwrap_or(deadline);
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                return events;
            };
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("watch printed non-JSON ({e}): {line}"));
                    events.push(event);
                    if settle.is_none() && done(&events) {
                        settle = Some(Instant::now() + Duration::from_millis(500));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return events,
                Err(mpsc::RecvTimeoutError::Disconnected) => return events,
            }
        }
    }
}

/// (revision, type, lease, token) of each event, for comparisons.
fn summary(events: &[Value]) -> Vec<(u64, String, u64, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().unwrap_or(0),
                e["type"].as_str().unwrap_or("").to_string(),
                e["lease_id"].as_u64().unwrap_or(0),
                e["token"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn watch_from_revision_replays_history_and_then_follows_new_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());

    let first = dev.json(&["acquire", "fr/a", "--ttl", "1m", "--json"]);
    let (lease_a, token_a) = (
        first["lease_id"].as_u64().expect("lease_id"),
        first["token"].as_u64().expect("token"),
    );
    let (code, _, err) = dev.run(&[
        "release",
        "fr/a",
        "--token",
        &token_a.to_string(),
        "--lease",
        &lease_a.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let second = dev.json(&["acquire", "fr/b", "--ttl", "1m", "--json"]);
    let token_b = second["token"].as_u64().expect("token");

    // From the revision of the second grant: the first lock's events are
    // before it and must not come; the grant itself is included.
    let from = token_b.to_string();
    let watch = Watch::spawn(
        dev.cmd(&["watch", "fr/", "--json", "--from-revision", &from]),
        &tmp.path().join("watch-from.log"),
    );
    // Something new after the watch started, to see it follows on.
    let third = dev.json(&["acquire", "fr/c", "--ttl", "1m", "--json"]);
    let token_c = third["token"].as_u64().expect("token");
    let events = watch.events_until(Duration::from_secs(20), |seen| {
        seen.iter().any(|e| e["token"].as_u64() == Some(token_c))
    });
    let names: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or(""),
                e["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("fr/b", "acquired"), ("fr/c", "acquired")],
        "{events:?}\n{}",
        watch.proc.log_text()
    );
    assert_eq!(events[0]["revision"].as_u64(), Some(token_b), "{events:?}");
    assert_eq!(events[1]["token"].as_u64(), Some(token_c), "{events:?}");
    drop(watch);

    // From the very start: every event on the prefix, in order.
    let watch = Watch::spawn(
        dev.cmd(&["watch", "fr/", "--json", "--from-revision", "1"]),
        &tmp.path().join("watch-all.log"),
    );
    let events = watch.events_until(Duration::from_secs(20), |seen| seen.len() >= 4);
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or(""),
                e["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("fr/a", "acquired"),
            ("fr/a", "released"),
            ("fr/b", "acquired"),
            ("fr/c", "acquired"),
        ],
        "{events:?}"
    );
    let revisions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["revision"].as_u64())
        .collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
}

#[test]
fn a_watch_whose_reader_goes_away_exits_0_without_a_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());
    let log = tmp.path().join("watch-closed.log");
    let mut proc = Proc::spawn_keeping_stdout(
        {
            // From revision 1, so the first event comes whenever the
            // watch opens, before or after the acquire below.
            let mut cmd = dev.cmd(&["watch", "cp/", "--json", "--from-revision", "1"]);
            cmd.stdout(Stdio::piped());
            cmd
        },
        &log,
    );
    let mut stdout = BufReader::new(proc.child.stdout.take().expect("stdout"));
    dev.json(&["acquire", "cp/a", "--ttl", "1m", "--json"]);
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first event");
    assert!(first.contains("cp/a"), "{first}");
    // The reader goes (as `raftlock watch | head -1` does); the next event
    // finds the pipe closed.
    drop(stdout);
    dev.json(&["acquire", "cp/b", "--ttl", "1m", "--json"]);
    let status = proc.wait_exit(Duration::from_secs(20));
    let text = proc.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}\n{text}");
    assert!(!text.contains("panicked"), "{text}");
}

// ---------------------------------------------------------------------------
// A node that breaks the watch in the middle of one entry's events
// ---------------------------------------------------------------------------

/// The hand-off: lease 1 holds h/x, lease 2 queues, lease 1 releases and
/// the same entry (revision 7) grants h/x to lease 2, which later releases.
fn history() -> Vec<pb::Event> {
    let ev = |revision, kind: pb::EventType, lease_id, token| pb::Event {
        revision,
        r#type: kind as i32,
        name: "h/x".into(),
        lease_id,
        owner: format!("owner{lease_id}"),
        mode: if kind == pb::EventType::Acquired {
            pb::Mode::Exclusive as i32
        } else {
            0
        },
        token,
        ..Default::default()
    };
    vec![
        ev(5, pb::EventType::Acquired, 1, 5),
        ev(6, pb::EventType::Queued, 2, 0),
        ev(7, pb::EventType::Released, 1, 5),
        ev(7, pb::EventType::Acquired, 2, 7),
        ev(9, pb::EventType::Released, 2, 7),
    ]
}

/// Serves Watch (and List, for the current revision) from [`history`].
/// The first stream sends the events up to the release at revision 7 and
/// then breaks, so the grant of revision 7 is not delivered on it; a stream
/// opened later sends everything from its revision on and stays open.
#[derive(Clone, Default)]
struct SplittingNode {
    opened_from: Arc<Mutex<Vec<u64>>>,
    streams: Arc<AtomicUsize>,
}

type EventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::locks_server::Locks for SplittingNode {
    async fn acquire(
        &self,
        _: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        Err(Status::unimplemented("test node: watch only"))
    }
    async fn release(
        &self,
        _: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        Err(Status::unimplemented("test node: watch only"))
    }
    async fn extend(
        &self,
        _: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        Err(Status::unimplemented("test node: watch only"))
    }
    async fn inspect(
        &self,
        _: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        Err(Status::unimplemented("test node: watch only"))
    }
    async fn list(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        Ok(Response::new(pb::ListResponse {
            locks: Vec::new(),
            revision: 9,
            more: false,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let from = request.into_inner().from_revision;
        if let Ok(mut opened) = self.opened_from.lock() {
            opened.push(from);
        }
        let events: Vec<pb::Event> = history()
            .into_iter()
            .filter(|e| e.revision >= from)
            .collect();
        let stream: EventStream = if self.streams.fetch_add(1, Ordering::SeqCst) == 0 {
            // Up to and including the release of revision 7, then a break.
            let upto = events
                .iter()
                .position(|e| e.r#type == pb::EventType::Released as i32)
                .map_or(events.len(), |i| i + 1);
            let batch = pb::WatchResponse {
                events: events[..upto].to_vec(),
            };
            Box::pin(futures::stream::iter([
                Ok(batch),
                Err(Status::unavailable("test node: the connection broke")),
            ]))
        } else {
            let batch = pb::WatchResponse { events };
            Box::pin(futures::stream::iter([Ok(batch)]).chain(futures::stream::pending()))
        };
        Ok(Response::new(stream))
    }
}

/// Starts the splitting node on a free port; the runtime serving it.
fn start_splitting_node(node: SplittingNode) -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a free port");
    let addr = listener.local_addr().expect("local_addr");
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(pb::locks_server::LocksServer::new(node))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (rt, addr)
}

#[test]
fn a_watch_that_breaks_inside_a_hand_off_prints_its_release_and_grant_exactly_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = SplittingNode::default();
    let (rt, addr) = start_splitting_node(node.clone());

    let mut cmd = raftlock();
    cmd.args(["watch", "h/", "--json", "--from-revision", "5"])
        .args(["--endpoints", &addr.to_string()]);
    let watch = Watch::spawn(cmd, &tmp.path().join("watch.log"));
    let events = watch.events_until(Duration::from_secs(20), |seen| {
        seen.iter().any(|e| e["revision"].as_u64() == Some(9))
    });
    let want: Vec<(u64, String, u64, u64)> = vec![
        (5, "acquired".into(), 1, 5),
        (6, "queued".into(), 2, 0),
        (7, "released".into(), 1, 5),
        (7, "acquired".into(), 2, 7),
        (9, "released".into(), 2, 7),
    ];
    let opened = node
        .opened_from
        .lock()
        .map(|o| o.clone())
        .unwrap_or_default();
    assert_eq!(
        summary(&events),
        want,
        "every event once, in order (watch opened from {opened:?}); stderr:\n{}",
        watch.proc.log_text()
    );
    // It reopened at the revision whose events were cut, not after it.
    assert_eq!(opened, [5, 7], "watch opened from these revisions");
    drop(watch);
    rt.shutdown_background();
}

// ---------------------------------------------------------------------------
// Three `raftlock serve` processes: kill and restart the node the watch is on
// ---------------------------------------------------------------------------

/// Three `raftlock serve` nodes on free ports (killed when dropped).
struct Serve {
    dir: std::path::PathBuf,
    ports: Vec<u16>,
    peer_ports: Vec<u16>,
    peers: String,
    procs: Vec<Option<Proc>>,
}

impl Serve {
    fn spawn(&mut self, i: usize) {
        let id = i as u64 + 1;
        let data_dir = self.dir.join(format!("node{id}"));
        let cmd = process::serve_command(
            Path::new(BIN),
            id,
            &data_dir,
            self.ports[i],
            self.peer_ports[i],
            &self.peers,
        );
        let log = self.dir.join(format!("node{}.log", i + 1));
        self.procs[i] = Some(Proc::spawn(cmd, &log));
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .flatten()
            .map(|p| format!("--- {} ---\n{}", p.log.display(), p.log_text()))
            .collect()
    }

    /// Starts three nodes; on new ports if one could not bind. Returns the
    /// cluster and the index of its leader.
    fn start(tmp: &Path, rt: &tokio::runtime::Runtime) -> (Serve, usize) {
        for attempt in 0..4 {
            let mut ports = free_ports(6);
            let peer_ports = ports.split_off(3);
            let peers = process::peers((1..).zip(peer_ports.iter().copied()));
            let mut serve = Serve {
                dir: tmp.join(format!("serve{attempt}")),
                ports,
                peer_ports,
                peers,
                procs: vec![None, None, None],
            };
            std::fs::create_dir_all(&serve.dir).expect("create the cluster's directory");
            for i in 0..3 {
                serve.spawn(i);
            }
            match serve.wait_leader(&[0, 1, 2], rt) {
                Ok(leader) => return (serve, leader),
                Err(log) if log.contains("in use") => continue,
                Err(log) => panic!("no cluster: {log}"),
            }
        }
        panic!("could not start three nodes on free ports");
    }

    /// Waits (bounded) until the nodes `among` name one leader; its index.
    fn wait_leader(
        &mut self,
        among: &[usize],
        rt: &tokio::runtime::Runtime,
    ) -> Result<usize, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for i in among {
                if let Some(p) = self.procs[*i].as_mut()
                    && let Some(status) = p.exited()
                {
                    return Err(format!("node {} exited {status}: {}", i + 1, p.log_text()));
                }
            }
            let seen: Vec<Option<u64>> = among
                .iter()
                .map(|i| {
                    rt.block_on(status(self.ports[*i]))
                        .and_then(|s| s.leader_id)
                })
                .collect();
            if let Some(Some(leader)) = seen.first()
                && seen.iter().all(|l| *l == Some(*leader))
                && let Some(index) = usize::try_from(*leader).ok().and_then(|l| l.checked_sub(1))
            {
                return Ok(index);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no common leader among {among:?}: {seen:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// host:port of every node, node `first` first.
    fn endpoints(&self, first: usize) -> String {
        let mut order: Vec<usize> = vec![first];
        order.extend((0..3).filter(|i| *i != first));
        order
            .iter()
            .map(|i| format!("127.0.0.1:{}", self.ports[*i]))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[test]
fn a_watch_survives_kill_and_restart_of_its_node_across_a_hand_off() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut serve, leader) = Serve::start(tmp.path(), &rt);
    let all = serve.endpoints(leader);
    let run = |args: &[&str]| -> Value {
        let (status, out, err) = run_bounded(with_endpoints(args, &all), tmp.path(), CLI_BOUND);
        assert!(status.success(), "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    };

    // A holds h/x; the watch starts at its grant, on the leader (named
    // first); B queues behind A.
    let a = run(&["acquire", "h/x", "--ttl", "1m", "--owner", "a", "--json"]);
    let (a_lease, a_token) = (
        a["lease_id"].as_u64().expect("lease"),
        a["token"].as_u64().expect("token"),
    );
    let watch = Watch::spawn(
        with_endpoints(
            &[
                "watch",
                "h/",
                "--json",
                "--from-revision",
                &a_token.to_string(),
            ],
            &all,
        ),
        &tmp.path().join("watch.log"),
    );
    let mut b = Proc::spawn(
        with_endpoints(
            &[
                "acquire", "h/x", "--wait", "50s", "--ttl", "1m", "--owner", "b",
            ],
            &all,
        ),
        &tmp.path().join("b.log"),
    );
    let mut events =
        watch.events_until(CLI_BOUND, |seen| seen.iter().any(|e| e["type"] == "queued"));

    // Kill the node the watch is on, then hand h/x from A to B (one entry:
    // release and grant share a revision) while it is down.
    if let Some(p) = serve.procs[leader].as_mut() {
        p.kill();
    }
    let released = run(&[
        "release",
        "h/x",
        "--token",
        &a_token.to_string(),
        "--lease",
        &a_lease.to_string(),
        "--json",
    ]);
    let handoff = released["revision"].as_u64().expect("revision");
    let status = b
        .wait_exit(CLI_BOUND)
        .unwrap_or_else(|| panic!("B never got h/x: {}", b.log_text()));
    assert!(status.success(), "{}", b.log_text());

    // Bring the node back, then B releases.
    serve.spawn(leader);
    serve
        .wait_leader(&[0, 1, 2], &rt)
        .unwrap_or_else(|why| panic!("the restarted node did not rejoin: {why}"));
    let info = run(&["inspect", "h/x", "--json"]);
    let holder = &info["holders"][0];
    let (b_lease, b_token) = (
        holder["lease_id"].as_u64().expect("B holds h/x"),
        holder["token"].as_u64().expect("token"),
    );
    run(&[
        "release",
        "h/x",
        "--token",
        &b_token.to_string(),
        "--lease",
        &b_lease.to_string(),
        "--json",
    ]);
    events.extend(watch.events_until(CLI_BOUND, |seen| {
        seen.iter()
            .any(|e| e["type"] == "released" && e["token"].as_u64() == Some(b_token))
    }));

    let want = vec![
        (a_token, "acquired".to_string(), a_lease, a_token),
        (
            events[1]["revision"].as_u64().unwrap_or(0),
            "queued".into(),
            b_lease,
            0,
        ),
        (handoff, "released".into(), a_lease, a_token),
        (handoff, "acquired".into(), b_lease, b_token),
        (
            events
                .last()
                .and_then(|e| e["revision"].as_u64())
                .unwrap_or(0),
            "released".into(),
            b_lease,
            b_token,
        ),
    ];
    assert_eq!(
        summary(&events),
        want,
        "every event once, in order; watch stderr:\n{}",
        watch.proc.log_text()
    );
    assert_eq!(b_token, handoff, "B's token is the hand-off's revision");
}
