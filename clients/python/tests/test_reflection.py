"""Every node answers gRPC server reflection as Google's Python tooling
asks it: grpcio-reflection's descriptor database speaks only
grpc.reflection.v1alpha (the node serves v1 too)."""

from __future__ import annotations

from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from conftest import Cluster


def test_v1alpha_reflection_lists_and_resolves_the_api_on_every_node(cluster: Cluster) -> None:
    for node_id in cluster.ids:
        with cluster.channel(node_id) as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            services = set(db.get_services())
            assert {
                "raftlock.v1.Locks",
                "raftlock.v1.Leases",
                "raftlock.v1.Admin",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            } <= services, services
            # The peer transport is served on the peer port only.
            assert not any(s.startswith("raftlock.internal.") for s in services), services

            pool = DescriptorPool(db)
            locks = pool.FindServiceByName("raftlock.v1.Locks")
            acquire = locks.FindMethodByName("Acquire")
            assert acquire.input_type.full_name == "raftlock.v1.AcquireRequest"
            request = pool.FindMessageTypeByName("raftlock.v1.AcquireRequest")
            assert {"lease_id", "locks", "wait_timeout_ms"} <= set(request.fields_by_name)
            assert request.fields_by_name["locks"].message_type.full_name == "raftlock.v1.LockSpec"
