//! The CLI's TLS and token flags (--ca, --cert, --key, --auth-token and
//! RAFTLOCK_CA/CERT/KEY/TOKEN): mistakes in them are usage errors naming
//! what to fix, and a TLS failure says it is one.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use raftlock_proto::auth::env;

use crate::common::{CLI_BOUND, raftlock, run_bounded};

fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = raftlock();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let (status, out, err) = run_bounded(cmd, dir, CLI_BOUND);
    (status.code().unwrap_or(-1), out, err)
}

fn make_certs(dir: &Path) {
    let d = dir.to_str().expect("utf-8 path");
    for args in [
        vec!["certs", "ca", "--dir", d],
        vec!["certs", "client", "--name", "worker", "--dir", d],
    ] {
        let (code, _, err) = run(dir, &args, &[]);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
}

#[test]
fn a_certificate_without_its_key_is_a_usage_error_by_flag_or_environment() {
    let tmp = tempfile::tempdir().expect("tmp");
    make_certs(tmp.path());
    let cert = tmp.path().join("client-worker.crt");
    let cert = cert.to_str().expect("utf-8");
    let (code, _, err) = run(
        tmp.path(),
        &["list", "--endpoints", "127.0.0.1:1", "--cert", cert],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("without its key"), "{err}");
    let (code, _, err) = run(
        tmp.path(),
        &["inspect", "x", "--endpoints", "127.0.0.1:1"],
        &[(env::KEY, cert)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("without its certificate"), "{err}");
}

#[test]
fn an_unreadable_or_non_pem_ca_is_a_usage_error_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "hello").expect("write");
    for (file, says) in [("missing.crt", "cannot read"), ("junk.pem", "is not PEM")] {
        let path = tmp.path().join(file);
        let (code, _, err) = run(
            tmp.path(),
            &[
                "status",
                "--endpoints",
                "127.0.0.1:1",
                "--ca",
                path.to_str().expect("utf-8"),
            ],
            &[],
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(file) && err.contains(says), "{err}");
    }
}

#[test]
fn http_with_a_ca_and_a_bad_token_are_usage_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    make_certs(tmp.path());
    let ca = tmp.path().join("ca.crt");
    let (code, _, err) = run(
        tmp.path(),
        &[
            "list",
            "--endpoints",
            "http://127.0.0.1:1",
            "--ca",
            ca.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("http:// is plaintext"), "{err}");
    let (code, _, err) = run(
        tmp.path(),
        &["list", "--endpoints", "127.0.0.1:1"],
        &[(env::TOKEN, "two words")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(env::TOKEN) && err.contains("printable ASCII"),
        "{err}"
    );
}

/// A TCP server that answers every connection with an HTTP/1 error, as a
/// plaintext proxy or server would; stops after `connections` or 30 s.
fn plaintext_server(connections: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < connections && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    served += 1;
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf);
                    let _ =
                        stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (addr, handle)
}

#[test]
fn a_tls_client_of_a_plaintext_server_fails_at_once_saying_tls() {
    let tmp = tempfile::tempdir().expect("tmp");
    make_certs(tmp.path());
    let (addr, server) = plaintext_server(1);
    let started = Instant::now();
    let (code, _, err) = run(
        tmp.path(),
        &["list", "--endpoints", &addr],
        &[(env::CA, tmp.path().join("ca.crt").to_str().expect("utf-8"))],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("error: TLS") && err.contains("does not speak TLS"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "not retried for 10 s"
    );
    server.join().expect("server thread");
}
