//! The metrics endpoint of a real 3-node cluster: Prometheus series that
//! follow what the cluster did, the HTTP health check, and bad requests.

use std::collections::BTreeMap;
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
    let mut series = BTreeMap::new();
    for line in body
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
        get(&at_leader, "raftlock_raft_role"),
        3.0,
        "the leader says so"
    );
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
    assert!(get(&at_leader, "raftlock_raft_millis_since_quorum_ack") >= 0.0);

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
        assert_eq!(get(&at_follower, "raftlock_raft_role"), 1.0);
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
