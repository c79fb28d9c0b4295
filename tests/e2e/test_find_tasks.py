"""Finding a queue's tasks by number (A or B) and by created-time range: filters of the task
list, combined with paging and the status filter."""

from __future__ import annotations

from typing import Any

import httpx

from deploy.local.stack import Stack
from tests.support.database import db_now
from tests.support.queues import create_queue
from tests.support.waiting import WAIT_SECONDS, wait_for
from tests.support.wire_times import wire_time

FAR = "2030-01-02 03:04:05"


def listed(api: httpx.Client, path: str, **params: Any) -> list[int]:
    response = api.get(f"{path}/task/", params=params)
    assert response.status_code == 200, response.text
    return [int(t["id"]) for t in response.json()]


def second_after(stack: Stack, wire: str) -> str:
    """The database's clock, to the second (the wire's precision), once it is past `wire`."""

    def later() -> str | None:
        now = wire_time(db_now(stack))
        return now if now > wire else None

    return wait_for(later, WAIT_SECONDS, f"a second after {wire}")


def test_find_by_number_matches_a_or_b(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant, status="off")
    tasks = queue.add(
        {"a_number": "+15551110001", "b_number": "201", "start_time_utc": FAR},
        {"a_number": "+15551110002", "b_number": "+15551110001", "start_time_utc": FAR},
        {"a_number": "+15551110003", "b_number": "202", "start_time_utc": FAR},
        {"a_number": "+15551110001", "b_number": "203", "start_time_utc": FAR},
    )
    ids = [t["id"] for t in tasks]

    assert listed(api, queue.path, number="+15551110001") == [ids[0], ids[1], ids[3]]
    assert listed(api, queue.path, number="+15551110001", limit=2) == [ids[0], ids[1]]
    assert listed(api, queue.path, number="+15551110001", after_id=ids[1]) == [ids[3]]
    assert listed(api, queue.path, number="202") == [ids[2]]
    assert listed(api, queue.path, number="999") == []
    assert listed(api, queue.path, number="+15551110001", status="finished") == []
    bad = api.get(f"{queue.path}/task/", params={"number": "not a number"})
    assert bad.status_code == 400, bad.text
    assert "number" in bad.json()["message"]


def test_find_by_created_time_range(stack: Stack, api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant, status="off")
    before = queue.add_one(start_time_utc=FAR)
    # The wire has whole seconds: each bound is the first second after the task before it
    # was created, by the database's clock (which stamps them).
    middle_from = second_after(stack, before["create_date_utc"])
    middle = queue.add_one(start_time_utc=FAR)
    middle_to = second_after(stack, middle["create_date_utc"])
    after = queue.add_one(start_time_utc=FAR)

    assert listed(api, queue.path, created_from_utc=middle_from, created_to_utc=middle_to) == [
        middle["id"]
    ]
    assert listed(api, queue.path, created_from_utc=middle_from) == [middle["id"], after["id"]]
    assert listed(api, queue.path, created_to_utc=middle_to) == [before["id"], middle["id"]]
    assert listed(api, queue.path, created_from_utc=middle_to, created_to_utc=middle_from) == []
    for bad in ({"created_from_utc": "yesterday"}, {"created_to_utc": "2030-13-01 00:00:00"}):
        response = api.get(f"{queue.path}/task/", params=bad)
        assert response.status_code == 400, response.text
