//! The public gRPC API (`raftlock.v1`) spoken directly, without the
//! product's client: for tests of the node's services and of processes.

use std::time::Duration;

use raftlock_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

/// A channel to 127.0.0.1:`port`; a node that does not answer within a
/// second is an error, and so is a call longer than five.
pub async fn channel(port: u16) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Admin.Status of the node on `port`, or None if it does not answer.
pub async fn status(port: u16) -> Option<pb::StatusResponse> {
    let channel = channel(port).await.ok()?;
    pb::admin_client::AdminClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

pub async fn leases(port: u16) -> pb::leases_client::LeasesClient<Channel> {
    pb::leases_client::LeasesClient::new(channel(port).await.expect("connect"))
}

pub async fn locks(port: u16) -> pb::locks_client::LocksClient<Channel> {
    pb::locks_client::LocksClient::new(channel(port).await.expect("connect"))
}

pub fn exclusive(name: &str) -> pb::LockSpec {
    pb::LockSpec {
        name: name.into(),
        mode: pb::Mode::Exclusive as i32,
        permits: 0,
    }
}

/// A new lease's id.
pub async fn grant(
    c: &mut pb::leases_client::LeasesClient<Channel>,
    ttl_ms: u64,
    owner: &str,
) -> u64 {
    c.grant(pb::GrantLeaseRequest {
        ttl_ms,
        owner: owner.into(),
    })
    .await
    .expect("grant lease")
    .into_inner()
    .lease_id
}

/// An exclusive acquire of `name` that waits at most `wait_ms` (0: a try).
pub fn acquire_req(lease: u64, name: &str, wait_ms: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lease_id: lease,
        locks: vec![exclusive(name)],
        wait_timeout_ms: wait_ms,
        ..Default::default()
    }
}

/// The machine-readable reason of an error status ("" if none), read by
/// the API's error contract.
pub fn reason_of(status: &tonic::Status) -> String {
    use raftlock_proto::errors::{Reason, classify};
    match classify(status).reason {
        Reason::Known(r) => r.name().to_string(),
        Reason::Unrecognized(r) => r,
        Reason::Absent => String::new(),
    }
}
