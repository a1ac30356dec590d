//! `raftlock serve` under systemd's `Type=notify`: with NOTIFY_SOCKET set
//! it sends STATUS= on role changes, READY=1 once it is a member that
//! knows a leader (not before), and STOPPING=1 when it stops. The socket
//! here is a datagram socket the test binds, as systemd's is.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use raftlock_testkit::process::{peers, serve_command};

use crate::common::*;

/// Datagrams received on `socket` until `until` is one of them or `within`
/// passed; all of them, in order.
fn receive(socket: &UnixDatagram, within: Duration, until: &str) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = text.lines().any(|l| l == until);
                got.push(text);
                if done {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    got
}

fn has(got: &[String], line: &str) -> bool {
    got.iter().any(|d| d.lines().any(|l| l == line))
}

#[test]
fn serve_notifies_systemd_ready_only_once_it_has_a_leader_and_stopping_at_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let ports = free_ports(4);
    let (p1, p2, pp1, pp2) = (ports[0], ports[1], ports[2], ports[3]);
    let peers = peers([(1, pp1), (2, pp2)]);
    let bin = Path::new(BIN);

    // Node 1 of 2 alone: a member, but no leader without node 2.
    let mut cmd = serve_command(bin, 1, &dir.path().join("n1"), p1, pp1, &peers);
    cmd.env("NOTIFY_SOCKET", &socket_path);
    let mut n1 = Proc::spawn(cmd, &dir.path().join("n1.log"));
    let early = receive(&socket, Duration::from_secs(3), "READY=1");
    assert!(!has(&early, "READY=1"), "ready without a leader: {early:?}");
    assert!(
        early.iter().any(|d| d.starts_with("STATUS=")),
        "no STATUS: {early:?}\n{}",
        n1.log_text()
    );

    // Node 2 (not notifying) makes a quorum: a leader, then READY=1.
    let _n2 = Proc::spawn(
        serve_command(bin, 2, &dir.path().join("n2"), p2, pp2, &peers),
        &dir.path().join("n2.log"),
    );
    let later = receive(&socket, Duration::from_secs(30), "READY=1");
    assert!(has(&later, "READY=1"), "{later:?}\n{}", n1.log_text());
    let ready = later
        .iter()
        .find(|d| d.lines().any(|l| l == "READY=1"))
        .expect("the READY datagram");
    assert!(
        ready.contains("STATUS=") && ready.contains("leader "),
        "{ready}"
    );

    signal(n1.pid(), libc::SIGTERM);
    let end = receive(&socket, Duration::from_secs(20), "STOPPING=1");
    assert!(has(&end, "STOPPING=1"), "{end:?}\n{}", n1.log_text());
    assert!(!has(&end, "READY=1"), "READY=1 sent twice: {end:?}");
    let status = n1.wait_exit(Duration::from_secs(20)).expect("exited");
    assert!(status.success(), "{status}\n{}", n1.log_text());
}

#[test]
fn serve_notifies_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!(
        "raftlock-test-notify-{}-{}",
        std::process::id(),
        free_ports(1)[0]
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract socket");
    let ports = free_ports(2);
    let mut cmd = serve_command(
        Path::new(BIN),
        1,
        &dir.path().join("n1"),
        ports[0],
        ports[1],
        &peers([(1, ports[1])]),
    );
    cmd.env("NOTIFY_SOCKET", format!("@{name}"));
    let n1 = Proc::spawn(cmd, &dir.path().join("n1.log"));
    let got = receive(&socket, Duration::from_secs(30), "READY=1");
    assert!(has(&got, "READY=1"), "{got:?}\n{}", n1.log_text());
}

#[test]
fn a_notify_socket_that_is_no_socket_name_stops_the_start_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(2);
    let mut cmd = serve_command(
        Path::new(BIN),
        1,
        &dir.path().join("n1"),
        ports[0],
        ports[1],
        &peers([(1, ports[1])]),
    );
    cmd.env("NOTIFY_SOCKET", "relative/notify");
    let (status, _, err) = run_bounded(cmd, dir.path(), Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("NOTIFY_SOCKET"), "{err}");
}
