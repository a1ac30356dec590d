//! What a node knows about the connection a call arrived on. The node's
//! listeners put a [`ConnInfo`] into every request's extensions (tonic
//! copies a connection's `Connected::ConnectInfo` into each request), so
//! the services can tell who is calling: the verified certificate of a
//! TLS connection, and the remote address for logs.

use std::net::SocketAddr;

/// The connection of a call. Absent on in-process calls
/// (`NodeHandle::local_service`), which carry no certificate.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnInfo {
    /// The caller's address, when it came over TCP.
    pub(crate) remote: Option<SocketAddr>,
    /// The names of the certificate the caller presented, verified against
    /// the cluster's CA during the TLS handshake; `None` on plaintext
    /// connections and when the caller presented none.
    pub(crate) cert: Option<CertNames>,
}

/// The names in a verified certificate's subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertNames {
    /// The subject's common name: `node-<id>` for a node
    /// (`raftlock_proto::auth::node_common_name`), the identity's name for
    /// a client.
    pub(crate) common_name: String,
    /// The subject's organizational unit, if any
    /// (`raftlock_proto::auth::NODE_OU` / `CLIENT_OU`).
    pub(crate) org_unit: Option<String>,
}

impl ConnInfo {
    /// The connection info of `request`, if it came through a listener.
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Option<&ConnInfo> {
        request.extensions().get::<ConnInfo>()
    }
}
