"""Poison messages on the services' work queues: unreadable or impossible dial requests and
call events are terminated (never redelivered forever, never blocking the queue), and the
system goes on placing calls."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext
from scheduler.v1 import events_pb2

from deploy.local.stack import Stack
from services.common import bus
from services.common.bus import STREAM_CALLS, STREAM_DIAL, SUBJECT_CALLS, SUBJECT_DIAL
from tests.support.calls import calls_of_task
from tests.support.queues import create_queue
from tests.support.simulated_phones import ANSWERING_NUMBER
from tests.support.waiting import WAIT_SECONDS, wait_for_async, wait_for_awaitable

# The services' durable consumers (read their state only; never consume from them).
DIALER_DURABLE = "dialer"
DISPATCHER_DURABLE = "dispatcher-calls"
GARBAGE = b"\xff\xff\xff\xff not protobuf"
# Far above any task id the tests create.
UNKNOWN_TASK_ID = 4_000_000_000


@pytest.fixture
async def jetstream(stack: Stack) -> AsyncIterator[JetStreamContext]:
    # The local admin: it publishes what no service's user may (callbacks.calls.ended).
    client, _ = await bus.connect(stack.nats_url, "test-poison", stack.nats_login("admin"))
    yield client.jetstream(timeout=30)
    await client.close()


def dial_request(**fields: object) -> bytes:
    values: dict[str, object] = {
        "task_id": UNKNOWN_TASK_ID,
        "attempt": 1,
        "call_uuid": str(uuid.uuid4()),
        "client_id": "poison",
        "queue_id": UNKNOWN_TASK_ID,
        "a_number": ANSWERING_NUMBER,
        "b_number": "101",
    }
    values.update(fields)
    return events_pb2.DialRequest(**values).SerializeToString()  # type: ignore[arg-type]


def call_event(**fields: object) -> bytes:
    values: dict[str, object] = {
        "kind": events_pb2.CallEvent.KIND_ENDED,
        "task_id": UNKNOWN_TASK_ID,
        "attempt": 1,
        "call_uuid": str(uuid.uuid4()),
        "outcome": events_pb2.CALL_OUTCOME_CONNECTED,
    }
    values.update(fields)
    return events_pb2.CallEvent(**values).SerializeToString()  # type: ignore[arg-type]


def batch_of_dials(*payloads: bytes) -> bytes:
    requests = [events_pb2.DialRequest.FromString(p) for p in payloads]
    return events_pb2.DialRequests(requests=requests).SerializeToString()


def batch_of_events(*payloads: bytes) -> bytes:
    events = [events_pb2.CallEvent.FromString(p) for p in payloads]
    return events_pb2.CallEvents(events=events).SerializeToString()


POISON_DIALS = {
    "garbage": GARBAGE,
    "empty": b"",
    "task_id 0": dial_request(task_id=0),
    "attempt 0": dial_request(attempt=0),
    "no call_uuid": dial_request(call_uuid=""),
    "no a_number": dial_request(a_number=""),
    # Well formed, but for no task: acknowledged without dialing.
    "unknown task": dial_request(),
    "batch of incomplete": batch_of_dials(dial_request(a_number=""), dial_request(attempt=0)),
    "batch, incomplete and unknown task": batch_of_dials(
        dial_request(call_uuid=""), dial_request()
    ),
}
POISON_CALL_EVENTS = {
    "garbage": GARBAGE,
    "empty": b"",
    "task_id 0": call_event(task_id=0),
    "attempt 0": call_event(attempt=0),
    "no kind": call_event(kind=events_pb2.CallEvent.KIND_UNSPECIFIED),
    "unknown outcome": call_event(outcome=99),
    # Well formed, but for no task: acknowledged as stale.
    "unknown task": call_event(),
    "unknown task connected": call_event(kind=events_pb2.CallEvent.KIND_CONNECTED),
    "batch of incomplete": batch_of_events(call_event(outcome=99), call_event(task_id=0)),
    "batch, incomplete and unknown task": batch_of_events(
        call_event(attempt=0), call_event(kind=events_pb2.CallEvent.KIND_CONNECTED), call_event()
    ),
}


async def settled(jetstream: JetStreamContext, stream: str, durable: str, last_seq: int) -> bool:
    """Nothing waiting for the consumer, nothing delivered and unanswered, and its ack floor
    past every message we published."""
    info = await jetstream.consumer_info(stream, durable)
    return (
        info.num_pending == 0
        and info.num_ack_pending == 0
        and info.ack_floor is not None
        and info.ack_floor.stream_seq >= last_seq
    )


async def test_poison_messages_are_terminated_and_calls_go_on(
    stack: Stack, api: httpx.Client, tenant: str, jetstream: JetStreamContext
) -> None:
    dial_seqs = [
        (await jetstream.publish(SUBJECT_DIAL, payload)).seq for payload in POISON_DIALS.values()
    ]
    ended_seqs = [
        (await jetstream.publish(f"{SUBJECT_CALLS}.{subject}", payload)).seq
        for subject in ("ended", "batch")
        for payload in POISON_CALL_EVENTS.values()
    ]

    # A task created afterwards runs normally, through the same consumers.
    queue = create_queue(api, tenant)
    task = queue.add_one()

    def finished() -> dict[str, Any] | None:
        current = queue.must_task(task["id"])
        return current if current["status"] == "finished" else None

    done = await wait_for_async(finished, WAIT_SECONDS, "the task to finish")
    assert done["finish_result"] == "success", done

    await wait_for_awaitable(
        lambda: settled(jetstream, STREAM_DIAL.name, DIALER_DURABLE, max(dial_seqs)),
        WAIT_SECONDS,
        f"{DIALER_DURABLE} to settle",
    )
    await wait_for_awaitable(
        lambda: settled(jetstream, STREAM_CALLS.name, DISPATCHER_DURABLE, max(ended_seqs)),
        WAIT_SECONDS,
        f"{DISPATCHER_DURABLE} to settle",
    )
    # Nothing was dialed for a task that does not exist.
    assert calls_of_task(stack, UNKNOWN_TASK_ID) == []
    assert [c.attempt for c in calls_of_task(stack, task["id"])] == [1]
