"""The cluster fixtures themselves, spoken to with the generated stubs only
(not the client library they serve)."""

from __future__ import annotations

import grpc
import pytest

from conftest import Cluster, ClusterError, ClusterFactory
from raftlock.v1 import raftlock_pb2 as pb
from raftlock.v1 import raftlock_pb2_grpc as rpc


def grant_and_acquire(channel: grpc.Channel, name: str, metadata=()) -> int:
    lease = rpc.LeasesStub(channel).Grant(
        pb.GrantLeaseRequest(ttl_ms=10_000, owner="fixture-test"), timeout=10, metadata=metadata
    )
    assert lease.lease_id > 0
    got = rpc.LocksStub(channel).Acquire(
        pb.AcquireRequest(
            lease_id=lease.lease_id,
            locks=[pb.LockSpec(name=name, mode=pb.MODE_EXCLUSIVE)],
        ),
        timeout=10,
        metadata=metadata,
    )
    return got.token


def test_shared_cluster_grants_a_lease_and_a_lock_on_its_leader(cluster: Cluster) -> None:
    assert len(cluster.endpoints) == 3
    assert all(e.startswith("127.0.0.1:") for e in cluster.endpoints)
    leader = cluster.leader_id()
    assert cluster.leader_endpoint() == cluster.endpoints[leader - 1]
    with cluster.channel() as ch:
        assert grant_and_acquire(ch, "fixture/shared") > 0
    # Every node knows the leader.
    for i in cluster.ids:
        status = cluster.status(i)
        assert status is not None and status.leader_id == leader


def test_shared_cluster_refuses_to_kill_nodes(cluster: Cluster) -> None:
    with pytest.raises(ClusterError, match="fresh_cluster"):
        cluster.kill(1)


def test_fresh_cluster_elects_a_new_leader_and_takes_a_node_back(
    fresh_cluster: ClusterFactory,
) -> None:
    c = fresh_cluster()
    old = c.wait_for_leader()
    c.kill(old)
    assert old not in c.running_ids()
    new = c.wait_for_leader(not_id=old)
    assert new != old
    with c.channel(new) as ch:
        first = grant_and_acquire(ch, "fixture/failover-a")
    c.start(old)
    assert c.wait_for_leader() in c.ids
    # The restarted node answers from the same data and ports: it follows.
    status = c.status(old)
    assert status is not None and status.node_id == old
    with c.channel() as ch:
        assert grant_and_acquire(ch, "fixture/failover-b") > first
    c.stop_all()
    assert c.running_ids() == []


def test_secure_cluster_admits_the_admin_certificate_and_limits_the_token(
    secure_cluster: Cluster,
) -> None:
    c = secure_cluster
    assert c.ca_cert is not None and c.ca_cert.is_file()
    assert c.client_cert is not None and c.client_key is not None
    assert c.token is not None and c.token.startswith("rlt_")
    with c.channel() as ch:
        assert grant_and_acquire(ch, "fixture/secure-admin") > 0

    # The token over TLS without a client certificate: its own prefix only.
    bearer = (("authorization", f"Bearer {c.token}"),)
    server_only = grpc.ssl_channel_credentials(root_certificates=c.ca_cert.read_bytes())
    with grpc.secure_channel(c.leader_endpoint(), server_only) as ch:
        assert grant_and_acquire(ch, f"{c.token_prefix}x", bearer) > 0
        with pytest.raises(grpc.RpcError) as denied:
            grant_and_acquire(ch, "fixture/not-the-tokens", bearer)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # No identity at all.
        with pytest.raises(grpc.RpcError) as anonymous:
            rpc.AdminStub(ch).Status(pb.StatusRequest(), timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # Plaintext is not served.
    with grpc.insecure_channel(c.endpoints[0]) as ch:
        with pytest.raises(grpc.RpcError):
            rpc.AdminStub(ch).Status(pb.StatusRequest(), timeout=5)
