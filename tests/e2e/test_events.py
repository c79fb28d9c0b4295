"""Webhook events as the dispatchers publish them on NATS (`callbacks.events.<event>`), read
through an ordered consumer of our own: which events, in which order, and what they carry."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict

from deploy.local.stack import Stack
from services.common.bus import SUBJECT_EVENTS
from tests.support.calls import calls_of_task
from tests.support.events import EventListener, ReceivedEvent
from tests.support.queues import create_queue
from tests.support.simulated_phones import ANSWERING_NUMBER, BUSY_NUMBER
from tests.support.waiting import WAIT_SECONDS

WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
URLS = {
    "url_before": "https://hooks.example.com/before?n=1",
    "url_before_again": "https://hooks.example.com/again",
    "url_success": "https://hooks.example.com/success",
    "url_after": "http://hooks.example.com:8080/after",
}
URL_OF_EVENT = {
    "before": "url_before",
    "before_again": "url_before_again",
    "success": "url_success",
    "after": "url_after",
}


@pytest.fixture
async def events(stack: Stack) -> AsyncIterator[EventListener]:
    """Listening before the test creates anything."""
    listener = EventListener(stack)
    await listener.start()
    yield listener
    await listener.stop()


def as_api_json(received: ReceivedEvent) -> dict[str, Any]:
    """The event's task as the REST API would print it."""
    return MessageToDict(
        received.event.task,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def check_envelope(received: ReceivedEvent, task: dict[str, Any], tenant: str) -> None:
    """What every event carries, whatever its name."""
    event = received.event
    assert received.subject == f"{SUBJECT_EVENTS}.{event.event}"
    assert event.event_id == f"{task['id']}:{event.attempt}:{event.event}"
    assert received.msg_id == event.event_id
    assert event.client_id == tenant
    assert event.url == task[URL_OF_EVENT[event.event]]
    assert WIRE_TIME.fullmatch(event.occurred_at), event.occurred_at
    assert event.task.id == task["id"]
    assert event.task.scheduler_id == task["scheduler_id"]


async def test_retried_task_announces_before_before_again_after(
    stack: Stack, api: httpx.Client, tenant: str, events: EventListener
) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one(a_number=BUSY_NUMBER, try_count=2, try_again_pause=0, **URLS)

    await events.wait_for(task["id"], "after", within=WAIT_SECONDS)
    final = queue.must_task(task["id"])

    received = events.of_task(task["id"])
    assert [(r.event.event, r.event.attempt) for r in received] == [
        ("before", 1),
        ("before_again", 2),
        ("after", 2),
    ]
    for item in received:
        check_envelope(item, final, tenant)
    first, second = calls_of_task(stack, task["id"])
    before, again, after = (r.event.task for r in received)
    assert (before.status, before.cdr, before.finish_result) == ("executed", first.call_uuid, "")
    assert (again.status, again.cdr, again.finish_result) == ("executed", second.call_uuid, "")
    assert final["status"] == "finished" and final["finish_result"] == "failed"
    assert final["finish_comment"] == "A was busy (2 attempts made)"
    assert after.finish_result == "failed"
    assert as_api_json(received[-1]) == final


async def test_successful_task_announces_before_success_after(
    stack: Stack, api: httpx.Client, tenant: str, events: EventListener
) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one(a_number=ANSWERING_NUMBER, try_count=3, **URLS)

    await events.wait_for(task["id"], "after", within=WAIT_SECONDS)
    final = queue.must_task(task["id"])

    received = events.of_task(task["id"])
    assert [(r.event.event, r.event.attempt) for r in received] == [
        ("before", 1),
        ("success", 1),
        ("after", 1),
    ]
    for item in received:
        check_envelope(item, final, tenant)
    assert received[1].event.url == URLS["url_success"]
    [call] = calls_of_task(stack, task["id"])
    success = received[1].event.task
    assert (success.status, success.cdr) == ("executed", call.call_uuid)
    assert (final["status"], final["finish_result"]) == ("finished", "success")
    assert as_api_json(received[-1]) == final


async def test_each_task_gets_its_own_events(
    api: httpx.Client, tenant: str, events: EventListener
) -> None:
    queue = create_queue(api, tenant, limit=3)
    tasks = queue.add(
        *({"a_number": f"+1555060000{i}", "b_number": "101", "url_after": URLS["url_after"]}
          for i in range(3))
    )  # fmt: skip

    for task in tasks:
        await events.wait_for(task["id"], "after", within=WAIT_SECONDS)

    for task in tasks:
        names = [r.event.event for r in events.of_task(task["id"])]
        assert names == ["after"], (task["id"], names)  # the only event with a URL
    ids = [r.event.event_id for t in tasks for r in events.of_task(t["id"])]
    assert len(ids) == len(set(ids)) == 3
