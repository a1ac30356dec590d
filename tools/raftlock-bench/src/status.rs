//! Admin.Status of one node: how the bench finds the raftlock leader. The
//! same call as `raftlock status` makes (its `status::ask`).

use std::time::Duration;

use raftlock_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

use crate::error_chain;

pub(crate) async fn ask(endpoint: &str, timeout: Duration) -> Result<pb::StatusResponse, String> {
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let channel: Channel = Endpoint::from_shared(uri)
        .map_err(|e| format!("not an address ({})", error_chain(&e)))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| error_chain(&e))?;
    pb::admin_client::AdminClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}
