"""Calling windows at work (issue 20): due tasks outside their queue's window wait as
`delayed_interval` and start when it opens; a callee's own zone; a change of the window
releases them; a dial request that reaches its dialer after the window closed is not dialed;
due tasks held by the queue's limit show `delayed_concurrent_task`. The real api,
dispatchers, dialers (simulated phones), PostgreSQL and NATS.

Windows here are datetime ranges around the database's clock: the test controls when they
open without waiting for a time of day."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from deploy.local.stack import Stack
from tests.support.calls import calls_of_task
from tests.support.database import db_now
from tests.support.queues import Queue, create_queue
from tests.support.simulated_phones import LONG_CALL
from tests.support.waiting import WAIT_SECONDS, wait_for
from tests.support.wire_times import parse_wire

PAST_ONLY = {"start_datetime": "2020-01-01 00:00:00", "end_datetime": "2020-01-02 00:00:00"}


def wall(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def create_interval(api: httpx.Client, tenant: str, conditions: list[dict[str, Any]]) -> int:
    response = api.post(
        f"/client/{tenant}/interval/", json={"timezone": "UTC", "conditions": conditions}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def windowed_queue(api: httpx.Client, tenant: str, conditions: list[dict[str, Any]]) -> Queue:
    queue = create_queue(api, tenant, status="off")
    queue.set(interval_id=create_interval(api, tenant, conditions), status="on")
    return queue


def listed(queue: Queue, status: str) -> list[int]:
    response = queue.api.get(f"{queue.path}/task/", params={"status": status})
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()]


def test_a_task_outside_its_window_waits_and_starts_when_it_opens(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    opening = db_now(stack).replace(microsecond=0) + timedelta(seconds=8)
    queue = windowed_queue(
        api,
        tenant,
        [{"start_datetime": wall(opening), "end_datetime": wall(opening + timedelta(hours=1))}],
    )
    task = queue.add_one()  # due at once, but the window opens later

    held = queue.wait_status(task["id"], "delayed_interval")
    assert held["finish_result"] == "" and held["cdr"] == ""
    assert listed(queue, "delayed_interval") == [task["id"]]
    assert listed(queue, "scheduled") == []
    done = queue.wait_finished(task["id"])

    assert done["finish_result"] == "success"
    [call] = calls_of_task(stack, task["id"])
    assert call.started_at >= opening, (call.started_at, opening)


@contextmanager
def dialers_paused(stack: Stack) -> Iterator[None]:
    """The stack's dialers stopped (SIGSTOP), as a dialer stuck behind a backlog would be:
    dial requests wait for them. Continued (SIGCONT) however the block ends."""
    pids = [stack.pid(f"dialer-{index}") for index in range(2)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_a_dial_request_that_reaches_the_dialer_after_the_window_closed_is_not_dialed(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    """The window is open when the task is claimed and closes while its dial request waits
    for a dialer. The dialer checks the window again just before dialing: no call then; the
    task waits as delayed_interval (no try spent: try_count is 1) and is called, as its
    first attempt, when the window opens again."""
    now = db_now(stack)
    # Time enough for the claim (milliseconds, unless the machine is very busy): a claim
    # after the closing would hold the task instead.
    closing = now.replace(microsecond=0) + timedelta(seconds=4)
    reopening = closing + timedelta(seconds=5)
    queue = windowed_queue(
        api,
        tenant,
        [
            {"start_datetime": wall(now - timedelta(hours=1)), "end_datetime": wall(closing)},
            {
                "start_datetime": wall(reopening),
                "end_datetime": wall(reopening + timedelta(hours=1)),
            },
        ],
    )
    with dialers_paused(stack):
        task = queue.add_one(try_count=1)  # due at once, in the window
        claimed = queue.wait_status(task["id"], "executed")
        wait_for(lambda: db_now(stack) >= closing, WAIT_SECONDS, "the window to close")

    # Held, or (dialed after the closing) finished: whichever comes first.
    held = queue.wait_task(
        task["id"],
        lambda t: t["status"] in ("delayed_interval", "finished"),
        WAIT_SECONDS,
        "held or finished",
    )
    assert held["status"] == "delayed_interval", held
    assert "spent no try and waits for the window to open" in held["finish_comment"], held
    assert held["cdr"] == claimed["cdr"]  # no new call yet: the refused one is forgotten
    assert history(queue, claimed["cdr"]).status_code == 404  # and was never a call
    done = queue.wait_finished(task["id"])

    assert done["finish_result"] == "success", done
    calls = queue.api.get(f"{queue.path}/task/{task['id']}/calls")
    assert calls.status_code == 200, calls.text
    [record] = calls.json()  # one call: the refused request left no record
    assert record["attempt"] == 1 and record["call_uuid"] == done["cdr"] != claimed["cdr"]
    assert parse_wire(record["started_utc"]) >= reopening, (record, reopening)


def history(queue: Queue, call_uuid: str) -> httpx.Response:
    return queue.api.get(f"/client/{queue.tenant}/call_history/{call_uuid}")


def test_a_callee_zone_where_the_window_is_closed_holds_only_that_task(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    now = db_now(stack)
    # Open now by UTC wall clocks, closed for good twelve hours ahead of UTC.
    around_now = {
        "start_datetime": wall(now - timedelta(hours=1)),
        "end_datetime": wall(now + timedelta(hours=1)),
    }
    queue = windowed_queue(api, tenant, [around_now])
    far_east, here = queue.add(
        {**LONG_CALL, "callback_params": {"timezone": "Etc/GMT-12"}},
        {"a_number": LONG_CALL["a_number"], "b_number": LONG_CALL["b_number"]},
    )
    assert far_east["callback_params"]["timezone"] == "Etc/GMT-12"

    # The claim that started `here` held `far_east` first (both were due; limit 1, and the
    # earlier task is far_east): its window is closed, and never opens again.
    queue.wait_status(here["id"], "executed")
    held = queue.must_task(far_east["id"])
    assert held["status"] == "delayed_interval", held
    assert calls_of_task(stack, far_east["id"]) == []
    queue.delete_task(here["id"])


def test_changing_the_window_releases_held_tasks(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = windowed_queue(api, tenant, [PAST_ONLY])
    task = queue.add_one()
    queue.wait_status(task["id"], "delayed_interval")
    interval_id = queue.set()["interval_id"]

    always = api.put(f"/client/{tenant}/interval/{interval_id}", json={"conditions": [{}]})
    assert always.status_code == 200, always.text

    assert queue.wait_finished(task["id"])["finish_result"] == "success"


def test_taking_the_interval_off_the_queue_releases_held_tasks(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = windowed_queue(api, tenant, [PAST_ONLY])
    task = queue.add_one()
    queue.wait_status(task["id"], "delayed_interval")

    queue.set(interval_id=0)

    assert queue.wait_finished(task["id"])["finish_result"] == "success"


def test_a_due_task_held_by_the_limit_is_delayed_concurrent_task(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant, limit=1)
    running = queue.add_one(**LONG_CALL)
    queue.wait_status(running["id"], "executed")
    waiting = queue.add_one()

    assert queue.wait_status(waiting["id"], "delayed_concurrent_task", WAIT_SECONDS)
    assert listed(queue, "delayed_concurrent_task") == [waiting["id"]]
    assert listed(queue, "scheduled") == []
    # A queue switched off holds nothing back: its tasks show as stored.
    queue.set(status="off")
    assert queue.must_task(waiting["id"])["status"] == "scheduled"
    assert listed(queue, "delayed_concurrent_task") == []
    queue.delete_task(running["id"])


def test_an_unknown_callee_zone_is_400(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant, status="off")
    response = api.post(
        f"{queue.path}/tasks/",
        json={"tasks": [{**LONG_CALL, "callback_params": {"timezone": "Mars/Olympus"}}]},
    )
    assert response.status_code == 400, response.text
    assert "timezone" in response.text
