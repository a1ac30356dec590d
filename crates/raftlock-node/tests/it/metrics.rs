//! The metrics endpoint of a real 3-node cluster: Prometheus series that
//! follow what the cluster did, the HTTP health check, and bad requests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use raftlock_proto::v1 as pb;
use raftlock_testkit::cluster::Cluster;
use raftlock_testkit::grpc::{acquire_req, grant};
use raftlock_testkit::wait::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` (a whole HTTP request head) and returns the status code
/// and body of the answer.
async fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    try_http(addr, request)
        .await
        .expect("the endpoint answers with a status line, headers and a body")
}

/// [`http`], or None if the connection closed without an answer.
async fn try_http(addr: SocketAddr, request: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        // A reset (closed unanswered) reads as an empty answer.
        let _ = stream.read_to_string(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("the endpoint answers in time");
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    if code == 200 {
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("Content-Length");
        assert_eq!(length, body.len(), "Content-Length matches the body");
    }
    Some((code, body.to_string()))
}

async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (code, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(code, 200, "{body}");
    samples(&body)
}

/// The samples of an exposition (either text format): `name{labels}` →
/// value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut series = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number in {line:?}"));
        series.insert(name.to_string(), value);
    }
    series
}

fn metrics_addr(cluster: &Cluster, id: u64) -> SocketAddr {
    cluster.nodes[&id]
        .as_ref()
        .expect("node running")
        .metrics_addr()
        .expect("metrics endpoint configured")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_the_cluster_and_say_where_write_time_goes() {
    let cluster = Cluster::start_with(3, |c| c.metrics_listen = Some("127.0.0.1:0".into())).await;
    let leader = cluster.leader().await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let mut leases = cluster.leases(leader).await;
    let mut locks = cluster.locks(leader).await;
    let lease = grant(&mut leases, 30_000, "metrics").await;
    let cycles = 20;
    for i in 0..cycles {
        let name = format!("m/{i}");
        let got = locks
            .acquire(acquire_req(lease, &name, 0))
            .await
            .expect("acquire")
            .into_inner();
        locks
            .release(pb::ReleaseRequest {
                lease_id: lease,
                token: got.token,
                names: vec![name],
            })
            .await
            .expect("release");
    }
    let busy = locks
        .acquire(acquire_req(lease, "m/held", 0))
        .await
        .expect("acquire");
    assert!(busy.into_inner().token > 0);

    let at_leader = scrape(metrics_addr(&cluster, leader)).await;
    let get = |m: &BTreeMap<String, f64>, name: &str| -> f64 {
        *m.get(name).unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(get(&at_leader, "raftlock_node_id"), leader as f64);
    assert_eq!(
        get(&at_leader, "raftlock_raft_role{role=\"leader\"}"),
        1.0,
        "the leader says so"
    );
    assert_eq!(
        get(&at_leader, "raftlock_raft_role{role=\"follower\"}"),
        0.0
    );
    assert_eq!(get(&at_leader, "raftlock_is_leader"), 1.0);
    assert_eq!(get(&at_leader, "raftlock_raft_has_leader"), 1.0);
    assert!(get(&at_leader, "raftlock_leader_changes_total") >= 1.0);
    for f in &followers {
        let lag = get(
            &at_leader,
            &format!("raftlock_raft_replication_lag_entries{{peer=\"{f}\"}}"),
        );
        assert!(lag >= 0.0, "the leader reports follower {f}'s lag");
    }
    assert_eq!(get(&at_leader, "raftlock_raft_leader_id"), leader as f64);
    assert_eq!(
        get(&at_leader, "raftlock_grants_total"),
        f64::from(cycles + 1)
    );
    assert_eq!(
        get(&at_leader, "raftlock_releases_total"),
        f64::from(cycles)
    );
    assert_eq!(get(&at_leader, "raftlock_leases_granted_total"), 1.0);
    assert_eq!(get(&at_leader, "raftlock_leases"), 1.0);
    assert_eq!(get(&at_leader, "raftlock_locks"), 1.0, "m/held");
    // Lease grant + 2 per cycle + the last acquire went through this node.
    let writes = get(&at_leader, "raftlock_write_duration_seconds_count");
    assert!(writes >= f64::from(2 * cycles + 2), "{writes} writes");
    assert_eq!(
        get(
            &at_leader,
            "raftlock_write_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        writes
    );
    assert!(get(&at_leader, "raftlock_write_duration_seconds_sum") > 0.0);
    assert!(get(&at_leader, "raftlock_log_flush_duration_seconds_count") > 0.0);
    for f in &followers {
        let rtt = get(
            &at_leader,
            &format!("raftlock_peer_append_entries_duration_seconds_count{{peer=\"{f}\"}}"),
        );
        assert!(rtt > 0.0, "round trips to follower {f} are timed");
    }
    let ack = get(&at_leader, "raftlock_raft_quorum_ack_age_seconds");
    assert!((0.0..5.0).contains(&ack), "seconds, not ms: {ack}");

    for f in &followers {
        let addr = metrics_addr(&cluster, *f);
        // The state counters are replicated: a follower reports the same
        // once it has applied as far.
        let applied = get(&at_leader, "raftlock_raft_applied_index");
        let at_follower = eventually(Duration::from_secs(5), || async move {
            let m = scrape(addr).await;
            (m.get("raftlock_raft_applied_index").copied() >= Some(applied)).then_some(m)
        })
        .await;
        assert_eq!(
            get(&at_follower, "raftlock_raft_role{role=\"follower\"}"),
            1.0
        );
        assert_eq!(get(&at_follower, "raftlock_is_leader"), 0.0);
        assert!(
            !at_follower.contains_key("raftlock_raft_quorum_ack_age_seconds"),
            "leader only"
        );
        assert_eq!(get(&at_follower, "raftlock_raft_leader_id"), leader as f64);
        assert_eq!(
            get(&at_follower, "raftlock_grants_total"),
            f64::from(cycles + 1)
        );
        assert!(
            get(
                &at_follower,
                "raftlock_append_entries_taken_duration_seconds_count"
            ) > 0.0
        );
        assert!(get(&at_follower, "raftlock_log_flush_duration_seconds_count") > 0.0);
        assert_eq!(
            get(&at_follower, "raftlock_write_duration_seconds_count"),
            0.0,
            "no write went through a follower"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_endpoint_answers_health_and_refuses_what_it_does_not_serve() {
    let cluster = Cluster::start_with(3, |c| c.metrics_listen = Some("127.0.0.1:0".into())).await;
    let leader = cluster.leader().await;
    let addr = metrics_addr(&cluster, leader);
    let (code, body) = http(addr, "GET /health HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("leader {leader}")), "{body}");
    let (code, body) = http(addr, "GET /nothing HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("/metrics"), "says what is served: {body}");
    let (code, _) = http(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(code, 405);
    // A client that never finishes its request head cannot pin the
    // endpoint: others are still answered meanwhile.
    let _idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (code, _) = http(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(code, 200);
    // Connections beyond the limit are closed unanswered, and once the
    // idle ones time out the endpoint answers again.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let mut refused = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "over the limit: closed without an answer");
    drop(idle);
    drop(_idle);
    let (code, _) = eventually(Duration::from_secs(10), || async move {
        try_http(addr, "GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .filter(|answer| answer.0 == 200)
    })
    .await;
    assert_eq!(code, 200);
    // The same text without the endpoint, for embedders.
    let text = cluster.nodes[&leader]
        .as_ref()
        .expect("running")
        .metrics_text();
    assert!(
        text.contains("# TYPE raftlock_write_duration_seconds histogram"),
        "{text}"
    );

    // Without a quorum the survivor soon knows no leader: 503.
    let mut cluster = cluster;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let survivor = others[0];
    let survivor_addr = metrics_addr(&cluster, survivor);
    for id in [leader, others[1]] {
        cluster.stop(id).await;
    }
    let (code, body) = eventually(Duration::from_secs(10), || async move {
        let answer = http(survivor_addr, "GET /health HTTP/1.1\r\n\r\n").await;
        (answer.0 == 503).then_some(answer)
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("no leader"), "{body}");
    cluster.shutdown().await;
}

// ----- the series contract: docs/operations.md's table -----------------------

/// The repository's root (for docs/ and deploy/).
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The rows of the metrics table in docs/operations.md: exact name (as
/// PromQL spells it) → (type, label names).
fn documented_series() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(repo_root().join("docs/operations.md")).expect("the guide");
    let header = "| series | type | labels | what it is |";
    let table = doc
        .split_once(&format!("\n{header}\n"))
        .expect("the metrics table's header")
        .1;
    let mut rows = BTreeMap::new();
    for line in table.lines().skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert!(
            cells.len() >= 4,
            "a row of name | type | labels | meaning: {line}"
        );
        let name = cells[0].trim_matches('`').to_string();
        let labels = cells[2]
            .split(',')
            .map(|l| l.trim().trim_matches('`'))
            .filter(|l| !l.is_empty() && *l != "-")
            .map(str::to_string)
            .collect();
        let previous = rows.insert(name.clone(), (cells[1].to_string(), labels));
        assert!(previous.is_none(), "{name} is documented twice");
    }
    assert!(rows.len() > 40, "the table was found: {rows:?}");
    rows
}

/// An OpenMetrics scrape's families, by the name PromQL uses (counters
/// with `_total`, info with `_info`) → (type, label names seen, samples).
fn scraped_families(openmetrics: &str) -> BTreeMap<String, (String, BTreeSet<String>, usize)> {
    assert!(
        openmetrics.ends_with("# EOF\n"),
        "a complete OpenMetrics text"
    );
    let mut families: BTreeMap<String, (String, BTreeSet<String>, usize)> = BTreeMap::new();
    let mut by_family_name = BTreeMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("# TYPE name type");
            let name = match kind {
                "counter" => format!("{family}_total"),
                "info" => format!("{family}_info"),
                _ => family.to_string(),
            };
            by_family_name.insert(family.to_string(), name.clone());
            let previous = families.insert(name, (kind.to_string(), BTreeSet::new(), 0));
            assert!(previous.is_none(), "{family} twice");
        }
    }
    for line in openmetrics.lines().filter(|l| !l.starts_with('#')) {
        let sample = line.split([' ', '{']).next().expect("a name");
        // The longest family name the sample's name starts with.
        let family = by_family_name
            .keys()
            .filter(|f| {
                sample == f.as_str()
                    || sample.strip_prefix(f.as_str()).is_some_and(|rest| {
                        ["_total", "_info", "_bucket", "_sum", "_count", "_created"].contains(&rest)
                    })
            })
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample {sample} belongs to no family"));
        let entry = families
            .get_mut(&by_family_name[family])
            .expect("the family");
        entry.2 += 1;
        for label in label_names(line) {
            if label != "le" {
                entry.1.insert(label);
            }
        }
    }
    families
}

/// The label names of a sample line.
fn label_names(line: &str) -> Vec<String> {
    labels(line).into_iter().map(|(name, _)| name).collect()
}

/// The labels of a sample line, reading quoted values with escapes.
fn labels(line: &str) -> Vec<(String, String)> {
    let Some(start) = line.find('{') else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    let mut chars = line[start + 1..].chars();
    let mut name = String::new();
    while let Some(c) = chars.next() {
        match c {
            '=' => {
                assert_eq!(chars.next(), Some('"'), "a quoted value in {line}");
                let mut value = String::new();
                let mut escaped = false;
                for v in chars.by_ref() {
                    match (escaped, v) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {
                            escaped = false;
                            value.push(v);
                        }
                    }
                }
                pairs.push((std::mem::take(&mut name), value));
            }
            ',' => {}
            '}' => break,
            c => name.push(c),
        }
    }
    pairs
}

/// A sample's identity whatever the format wrote: its name and its labels
/// in order, bucket bounds as numbers (`1` and `1.0` are one bound).
fn sample_identity(key: &str) -> (String, BTreeMap<String, String>) {
    let name = key.split('{').next().expect("a name").to_string();
    let labels = labels(key)
        .into_iter()
        .map(|(k, v)| {
            let v = match (k.as_str(), v.parse::<f64>()) {
                ("le", Ok(bound)) => format!("{bound}"),
                _ => v,
            };
            (k, v)
        })
        .collect();
    (name, labels)
}

/// A 3-node cluster (metrics served, one configured lock group) that has
/// done a bit of everything the metrics count: grants and releases,
/// a queued wait that timed out, a BUSY refusal, a failed call, a watch,
/// and a lease that expired holding a lock.
async fn exercised_cluster() -> (Cluster, u64) {
    let cluster = Cluster::start_with(3, |c| {
        c.metrics_listen = Some("127.0.0.1:0".into());
        c.metrics_lock_groups = vec!["jobs/nightly/".into()];
    })
    .await;
    let leader = cluster.leader().await;
    let mut leases = cluster.leases(leader).await;
    let mut locks = cluster.locks(leader).await;
    let holder = grant(&mut leases, 30_000, "holder").await;
    let other = grant(&mut leases, 30_000, "other").await;
    let got = locks
        .acquire(acquire_req(holder, "jobs/nightly/1", 0))
        .await
        .expect("acquire")
        .into_inner();
    locks
        .release(pb::ReleaseRequest {
            lease_id: holder,
            token: got.token,
            names: vec!["jobs/nightly/1".into()],
        })
        .await
        .expect("release");
    locks
        .acquire(acquire_req(holder, "jobs/a", 0))
        .await
        .expect("acquire");
    let busy = locks
        .acquire(acquire_req(other, "jobs/a", 0))
        .await
        .expect_err("held by the holder");
    assert_eq!(busy.code(), tonic::Code::FailedPrecondition, "{busy:?}");
    let timed_out = locks
        .acquire(acquire_req(other, "jobs/a", 200))
        .await
        .expect_err("still held");
    assert_eq!(
        timed_out.code(),
        tonic::Code::DeadlineExceeded,
        "{timed_out:?}"
    );
    let missing = leases
        .revoke(pb::RevokeLeaseRequest {
            lease_id: holder + other + 1_000,
        })
        .await
        .expect_err("no such lease");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // A watch stream, opened and dropped.
    let stream = locks
        .watch(pb::WatchRequest {
            prefix: "jobs/".into(),
            ..Default::default()
        })
        .await
        .expect("watch");
    drop(stream);
    // A lease with the shortest ttl and no keep-alives expires holding a lock.
    let short = grant(&mut leases, 1_000, "short").await;
    locks
        .acquire(acquire_req(short, "jobs/expiring", 0))
        .await
        .expect("acquire");
    let addr = metrics_addr(&cluster, leader);
    eventually(Duration::from_secs(10), || async move {
        let m = scrape(addr).await;
        (m.get("raftlock_lock_expirations_total{group=\"jobs\"}") == Some(&1.0)).then_some(())
    })
    .await;
    (cluster, leader)
}

/// `promtool`, if RAFTLOCK_PROMTOOL names it; required when
/// RAFTLOCK_REQUIRE_PROMTOOL=1 (CI installs it).
fn promtool() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("RAFTLOCK_PROMTOOL").map(std::path::PathBuf::from);
    let required = std::env::var("RAFTLOCK_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
    match path {
        Some(p) if p.is_file() => Some(p),
        other => {
            assert!(
                !required,
                "RAFTLOCK_REQUIRE_PROMTOOL=1 but RAFTLOCK_PROMTOOL ({other:?}) is not a file"
            );
            eprintln!("promtool not given (RAFTLOCK_PROMTOOL): its checks are skipped");
            None
        }
    }
}

/// Runs promtool with `args` (and `stdin`), and asserts it succeeds.
fn run_promtool(promtool: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new(promtool)
        .args(args)
        .current_dir(repo_root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("to promtool");
    }
    drop(input);
    let out = child.wait_with_output().expect("promtool ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_series_is_scraped_with_its_exact_name_type_and_labels() {
    let (cluster, leader) = exercised_cluster().await;
    let addr = metrics_addr(&cluster, leader);
    let accept =
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (code, openmetrics) =
        http(addr, &format!("GET /metrics HTTP/1.1\r\n{accept}\r\n\r\n")).await;
    assert_eq!(code, 200);
    let scraped = scraped_families(&openmetrics);
    let documented = documented_series();
    let scraped_names: BTreeSet<&String> = scraped.keys().collect();
    let documented_names: BTreeSet<&String> = documented.keys().collect();
    assert_eq!(
        scraped_names
            .difference(&documented_names)
            .collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "scraped but not in docs/operations.md's table"
    );
    assert_eq!(
        documented_names
            .difference(&scraped_names)
            .collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "documented but not scraped"
    );
    for (name, (kind, labels)) in &documented {
        let (scraped_kind, scraped_labels, samples) = &scraped[name];
        assert_eq!(kind, scraped_kind, "type of {name}");
        assert!(*samples > 0, "{name} has samples after the exercise");
        assert_eq!(labels, scraped_labels, "labels of {name}");
    }

    // The 0.0.4 text (what a scraper that does not ask gets) has the same
    // samples, and promtool takes it.
    let (code, text) = http(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, 200);
    assert!(!text.contains("# EOF"), "0.0.4 has no EOF marker");
    assert!(
        text.contains("# TYPE raftlock_grants_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE raftlock_build_info gauge\n"),
        "{text}"
    );
    let identities = |text: &str| {
        samples(text)
            .keys()
            .map(|k| sample_identity(k))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        identities(&text),
        identities(&openmetrics),
        "both formats carry the same series"
    );
    if let Some(promtool) = promtool() {
        run_promtool(&promtool, &["check", "metrics"], Some(&text));
    }
    cluster.shutdown().await;
}

/// Every `raftlock_*` name in `text` (rules, dashboards).
fn names_used(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("raftlock_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not a part of a longer word (e.g. a file name).
        let before = rest[..at].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '.') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_alert_rules_and_the_dashboard_use_only_scraped_series() {
    let rules_path = repo_root().join("deploy/prometheus/alerts.yml");
    let dashboard_path = repo_root().join("deploy/grafana/raftlock.json");
    let rules = std::fs::read_to_string(&rules_path).expect("deploy/prometheus/alerts.yml");
    let dashboard = std::fs::read_to_string(&dashboard_path).expect("deploy/grafana/raftlock.json");
    let (cluster, leader) = exercised_cluster().await;
    let (code, text) = http(
        metrics_addr(&cluster, leader),
        "GET /metrics HTTP/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    cluster.shutdown().await;
    // Sample names (`raftlock_x_bucket`) and family names (`raftlock_x`,
    // which texts may mention).
    let scraped: BTreeSet<String> = samples(&text)
        .into_keys()
        .map(|s| s.split('{').next().expect("a name").to_string())
        .chain(text.lines().filter_map(|l| {
            let rest = l.strip_prefix("# TYPE ")?;
            Some(rest.split(' ').next()?.to_string())
        }))
        .collect();
    for (file, text) in [("alerts.yml", &rules), ("raftlock.json", &dashboard)] {
        let used = names_used(text);
        assert!(used.len() >= 5, "{file} uses raftlock series: {used:?}");
        let unknown: Vec<&String> = used.iter().filter(|n| !scraped.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses series no node exports: {unknown:?}"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(
        dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8),
        "the dashboard has its panels"
    );
    if let Some(promtool) = promtool() {
        run_promtool(
            &promtool,
            &["check", "rules", "deploy/prometheus/alerts.yml"],
            None,
        );
        let out = run_promtool(
            &promtool,
            &["test", "rules", "deploy/prometheus/alerts.test.yml"],
            None,
        );
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_requests_are_counted_per_method_and_code() {
    let (cluster, leader) = exercised_cluster().await;
    // The dropped watch is counted once the server notices the reset.
    let addr = metrics_addr(&cluster, leader);
    let watch_cancelled =
        "raftlock_grpc_requests_total{method=\"raftlock.v1.Locks/Watch\",code=\"CANCELLED\"}";
    let m = eventually(Duration::from_secs(5), || async move {
        let m = scrape(addr).await;
        m.contains_key(watch_cancelled).then_some(m)
    })
    .await;
    let get = |name: &str| *m.get(name).unwrap_or_else(|| panic!("{name} missing"));
    let count = |method: &str, code: &str| {
        get(&format!(
            "raftlock_grpc_requests_total{{method=\"raftlock.v1.{method}\",code=\"{code}\"}}"
        ))
    };
    assert_eq!(count("Leases/Revoke", "NOT_FOUND"), 1.0);
    assert_eq!(count("Leases/Grant", "OK"), 3.0);
    assert_eq!(count("Locks/Release", "OK"), 1.0);
    assert_eq!(count("Locks/Acquire", "OK"), 3.0);
    assert_eq!(count("Locks/Acquire", "FAILED_PRECONDITION"), 1.0, "BUSY");
    assert_eq!(
        count("Locks/Acquire", "DEADLINE_EXCEEDED"),
        1.0,
        "WAIT_TIMEOUT"
    );
    // A stream the client dropped: its status never came.
    assert_eq!(count("Locks/Watch", "CANCELLED"), 1.0);
    assert_eq!(
        get("raftlock_grpc_request_duration_seconds_count{method=\"raftlock.v1.Locks/Acquire\"}"),
        5.0
    );
    assert!(
        !m.keys().any(|k| k.starts_with(
            "raftlock_grpc_request_duration_seconds_count{method=\"raftlock.v1.Locks/Watch\""
        )),
        "no latency for streams"
    );
    // Followers answered nothing.
    let follower = cluster.follower().await;
    let at_follower = scrape(metrics_addr(&cluster, follower)).await;
    assert!(
        !at_follower
            .keys()
            .any(|k| k.starts_with("raftlock_grpc_requests_total{")),
        "{at_follower:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_timeout_and_an_expiration_are_counted_in_their_group() {
    let (cluster, leader) = exercised_cluster().await;
    let m = scrape(metrics_addr(&cluster, leader)).await;
    let get = |name: &str| *m.get(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(
        get("raftlock_lock_wait_timeouts_total{group=\"jobs\"}"),
        1.0
    );
    assert_eq!(get("raftlock_lock_expirations_total{group=\"jobs\"}"), 1.0);
    // Two refusals of jobs/a: BUSY, then the queued wait.
    assert_eq!(get("raftlock_lock_contended_total{group=\"jobs\"}"), 2.0);
    assert_eq!(get("raftlock_lock_grants_total{group=\"jobs\"}"), 2.0);
    // The configured prefix is its own group, and wins over `jobs`.
    assert_eq!(
        get("raftlock_lock_grants_total{group=\"jobs/nightly/\"}"),
        1.0
    );
    assert_eq!(
        get("raftlock_lock_hold_duration_seconds_count{group=\"jobs/nightly/\"}"),
        1.0,
        "released: its hold was timed"
    );
    assert_eq!(
        get("raftlock_lock_hold_duration_seconds_count{group=\"jobs\"}"),
        1.0,
        "jobs/expiring's hold ended with its lease"
    );
    assert_eq!(
        get("raftlock_lock_wait_duration_seconds_count{group=\"jobs\"}"),
        2.0,
        "immediate grants wait 0"
    );
    // Every node applies the same events: a follower counts the expiry
    // too (the wait timeout only where the acquire was served).
    let follower = cluster.follower().await;
    let addr = metrics_addr(&cluster, follower);
    let at_follower = eventually(Duration::from_secs(5), || async move {
        let m = scrape(addr).await;
        (m.get("raftlock_lock_expirations_total{group=\"jobs\"}") == Some(&1.0)).then_some(m)
    })
    .await;
    assert_eq!(
        at_follower.get("raftlock_lock_wait_timeouts_total{group=\"jobs\"}"),
        Some(&0.0)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_group_labels_are_bounded() {
    let cluster = Cluster::start_with(1, |c| {
        c.metrics_listen = Some("127.0.0.1:0".into());
        c.metrics_max_lock_groups = 16;
    })
    .await;
    let leader = cluster.leader().await;
    let mut leases = cluster.leases(leader).await;
    let mut locks = cluster.locks(leader).await;
    let lease = grant(&mut leases, 30_000, "many").await;
    let prefixes = 500;
    let per_request = 50;
    for chunk in 0..prefixes / per_request {
        let names: Vec<String> = (0..per_request)
            .map(|i| format!("p{}/lock", chunk * per_request + i))
            .collect();
        locks
            .acquire(pb::AcquireRequest {
                lease_id: lease,
                locks: names
                    .iter()
                    .map(|n| raftlock_testkit::grpc::exclusive(n))
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("acquire");
    }
    // The groups count from the apply feed, a moment after the answers.
    let grants = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("raftlock_lock_grants_total{"))
            .map(|(_, v)| v)
            .sum()
    };
    let addr = metrics_addr(&cluster, leader);
    let m = eventually(Duration::from_secs(5), || async move {
        let m = scrape(addr).await;
        (grants(&m) >= f64::from(prefixes)).then_some(m)
    })
    .await;
    let groups: BTreeSet<&str> = m
        .keys()
        .filter_map(|k| k.strip_prefix("raftlock_lock_grants_total{group=\""))
        .map(|rest| rest.trim_end_matches("\"}"))
        .collect();
    assert_eq!(groups.len(), 17, "16 groups and _other: {groups:?}");
    assert!(groups.contains("_other"));
    assert_eq!(
        grants(&m),
        f64::from(prefixes),
        "every grant counted once, somewhere"
    );
    cluster.shutdown().await;
}
