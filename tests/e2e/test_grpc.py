"""The api service answers internal callers directly over gRPC, with health and reflection."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from scheduler.v1 import scheduler_pb2 as pb
from scheduler.v1 import scheduler_pb2_grpc as pb_grpc

from deploy.local.stack import Stack

# A call's deadline: generous, so that a loaded machine is slow, not failing.
RPC_SECONDS = 30


@pytest.fixture
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.api_grpc_target) as open_channel:
        yield open_channel


def test_health_reports_serving_for_the_api(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "scheduler.v1.TaskScheduler"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_SECONDS)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_public_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=RPC_SECONDS)))
    names = {service.name for service in reply.list_services_response.service}
    assert "scheduler.v1.TaskScheduler" in names


def test_typed_calls_with_a_token(channel: grpc.Channel, stack: Stack, tenant: str) -> None:
    stub = pb_grpc.TaskSchedulerStub(channel)
    auth = (("authorization", f"Bearer {stack.token(tenant)}"),)
    queue = stub.CreateQueue(
        pb.CreateQueueRequest(client_id="@me", name="direct", concurrent_task_limit=3),
        metadata=auth,
        timeout=RPC_SECONDS,
    )
    assert (queue.name, queue.status, queue.concurrent_task_limit) == ("direct", "off", 3)
    created = stub.CreateTasks(
        pb.CreateTasksRequest(
            client_id=tenant,
            scheduler_id=queue.id,
            tasks=[pb.TaskInput(a_number="+100", b_number="200")],
        ),
        metadata=auth,
        timeout=RPC_SECONDS,
    )
    assert [t.status for t in created.items] == ["scheduled"]
    listed = stub.ListQueues(
        pb.ListQueuesRequest(client_id=tenant), metadata=auth, timeout=RPC_SECONDS
    )
    assert [q.id for q in listed.items] == [queue.id]


def test_direct_calls_need_a_valid_token_too(channel: grpc.Channel, tenant: str) -> None:
    stub = pb_grpc.TaskSchedulerStub(channel)
    for metadata in ((), (("authorization", "Bearer not-a-jwt"),)):
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListQueues(
                pb.ListQueuesRequest(client_id=tenant), metadata=metadata, timeout=RPC_SECONDS
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_idempotency_key_over_grpc(channel: grpc.Channel, stack: Stack, tenant: str) -> None:
    """gRPC clients send the key as metadata; a replay says so in its initial metadata, and a
    reused key is FAILED_PRECONDITION (the REST gateway makes it a 422)."""
    stub = pb_grpc.TaskSchedulerStub(channel)
    metadata = (
        ("authorization", f"Bearer {stack.token(tenant)}"),
        ("idempotency-key", "grpc-key-1"),
    )
    request = pb.CreateQueueRequest(client_id=tenant, name="once")
    first, call = stub.CreateQueue.with_call(request, metadata=metadata, timeout=RPC_SECONDS)
    again, replay = stub.CreateQueue.with_call(request, metadata=metadata, timeout=RPC_SECONDS)
    assert again == first
    assert ("idempotent-replayed", "true") not in tuple(call.initial_metadata())
    assert ("idempotent-replayed", "true") in tuple(replay.initial_metadata())
    with pytest.raises(grpc.RpcError) as refused:
        stub.CreateQueue(
            pb.CreateQueueRequest(client_id=tenant), metadata=metadata, timeout=RPC_SECONDS
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "grpc-key-1" in str(refused.value.details())
