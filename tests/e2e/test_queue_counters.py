"""Queue counters through the REST gateway: task_count, sched_task_count and last_call_date
on GET and list, exact after adds, calls and deletes (checked against the tasks the API lists
and the call's own record)."""

from __future__ import annotations

import re

import httpx

from tests.support.queues import create_queue
from tests.support.simulated_phones import LONG_CALL
from tests.support.wire_times import parse_wire

WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def test_counters_of_a_queue_through_its_life(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant, status="off")
    fresh = api.get(queue.path).json()
    assert (fresh["task_count"], fresh["sched_task_count"], fresh["last_call_date"]) == (0, 0, "")

    queue.add(LONG_CALL, LONG_CALL, LONG_CALL)
    body = api.get(queue.path).json()
    assert (body["task_count"], body["sched_task_count"]) == (3, 3)
    [listed] = [
        q for q in api.get(f"/client/{tenant}/task_scheduler/").json() if q["id"] == queue.id
    ]
    assert (listed["task_count"], listed["sched_task_count"]) == (3, 3)

    # One task runs to its end; its call's record gives the time the queue shows.
    [first, *rest] = queue.tasks()
    for task in rest:
        queue.delete_task(task["id"])
    assert api.put(queue.path, json={"status": "on"}).status_code == 200
    done = queue.wait_finished(first["id"], timeout=30)
    body = api.get(queue.path).json()
    assert (body["task_count"], body["sched_task_count"]) == (1, 0)
    record = api.get(f"/client/{tenant}/call_history/{done['cdr']}").json()
    assert WIRE_TIME.fullmatch(body["last_call_date"]), body
    # The claim's time (the due time or later): not after the call's start by the dialer.
    assert parse_wire(body["last_call_date"]) <= parse_wire(record["started_utc"])
    assert parse_wire(body["last_call_date"]) >= parse_wire(first["create_date_utc"])
