//! systemd's readiness protocol (sd_notify(3)) for `raftlock serve` under a
//! `Type=notify` unit: one datagram per state change to the socket named
//! by `NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract socket.
//! Without `NOTIFY_SOCKET` nothing is sent. Written by hand (~40 lines of
//! std) rather than a crate: the protocol is one `sendto`.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;

use crate::Failure;

/// Where to tell systemd about this process's state.
#[derive(Clone)]
pub struct Notifier {
    socket: Arc<UnixDatagram>,
    addr: Arc<SocketAddr>,
    /// `NOTIFY_SOCKET` as given, for messages.
    name: Arc<str>,
}

impl Notifier {
    /// The notifier of `NOTIFY_SOCKET`, `None` when it is unset or empty.
    /// A value that names no usable socket is an error: under a
    /// `Type=notify` unit the start would otherwise never be reported.
    pub fn from_env() -> Result<Option<Notifier>, Failure> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(value) if !value.is_empty() => Notifier::new(&value.to_string_lossy()).map(Some),
            _ => Ok(None),
        }
    }

    /// The notifier of socket `name`: `/path` or `@abstract-name`.
    pub fn new(name: &str) -> Result<Notifier, Failure> {
        let bad = |why: String| Failure::Usage(format!("NOTIFY_SOCKET={name:?}: {why}"));
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            abstract_addr(abstract_name.as_bytes()).map_err(|e| bad(e.to_string()))?
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name).map_err(|e| bad(e.to_string()))?
        } else {
            return Err(bad(
                "not a socket path (/...) or an abstract socket name (@...)".into(),
            ));
        };
        let socket = UnixDatagram::unbound()
            .map_err(|e| Failure::Runtime(format!("cannot create a unix socket: {e}")))?;
        Ok(Notifier {
            socket: Arc::new(socket),
            addr: Arc::new(addr),
            name: name.into(),
        })
    }

    /// Sends `state` (`READY=1`, `STATUS=...`, `STOPPING=1`, one or more
    /// `KEY=VALUE` lines). A failure is logged, never fatal: the node
    /// serves whether or not systemd hears about it.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::error!(socket = %self.name, state, error = %e, "cannot notify systemd");
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// The `STATUS=` line for a role, term and known leader (shown by
/// `systemctl status`).
pub fn status_line(role: &str, term: u64, leader: Option<u64>, member: bool) -> String {
    let leader = match leader {
        Some(id) => format!("leader {id}"),
        None => "no leader known".to_string(),
    };
    if member {
        format!("STATUS={role} in term {term}, {leader}")
    } else {
        format!("STATUS=not a member yet (waiting to be added), {leader}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_socket_name_is_refused_naming_it() {
        for bad in ["run/notify", "notify"] {
            let Err(Failure::Usage(m)) = Notifier::new(bad) else {
                panic!("{bad} accepted");
            };
            assert!(m.contains(bad), "{m}");
        }
    }

    #[test]
    fn a_path_socket_receives_what_is_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(path.to_str().expect("utf-8")).expect("notifier");
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
    }
}
