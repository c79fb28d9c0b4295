"""`GET /client/{client_id}/call_history/{call_uuid}`: the record of each call a task made,
reachable from the task's `cdr`, and only by the tenant that owns it."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from deploy.local.stack import Stack
from tests.support.calls import CallRow, calls_of_task
from tests.support.database import db_now
from tests.support.queues import Queue, create_queue
from tests.support.simulated_phones import (
    ANSWERING_NUMBER,
    BUSY_NUMBER,
    LONG_CALL,
    NO_ANSWER_NUMBER,
    OTHER_ANSWERING_NUMBER,
)
from tests.support.stacks import ClientFactory
from tests.support.waiting import wait_for
from tests.support.wire_times import parse_wire

WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
RECORD_FIELDS = {
    "call_uuid", "task_id", "scheduler_id", "attempt", "result", "comment", "started_utc",
    "ended_utc", "duration_seconds", "talk_seconds", "legs", "backend", "ring_timeout",
    "call_duration",
}  # fmt: skip
LEG_FIELDS = {
    "role", "number", "result", "ring_started_utc", "answered_utc", "ended_utc",
    "ring_seconds", "talk_seconds", "hangup_by", "sip_call_id", "final_response",
    "teardown_confirmed",
}  # fmt: skip


def history(api: httpx.Client, client: str, call_uuid: str) -> httpx.Response:
    return api.get(f"/client/{client}/call_history/{call_uuid}")


def record_of(api: httpx.Client, client: str, call_uuid: str) -> dict[str, Any]:
    response = history(api, client, call_uuid)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert type(body["code"]) is int
    assert isinstance(body["message"], str) and body["message"]


def test_connected_call_record(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one()
    done = queue.wait_finished(task["id"], timeout=30)

    record = record_of(api, tenant, done["cdr"])

    assert set(record) == RECORD_FIELDS
    assert record["call_uuid"] == done["cdr"]
    assert (record["task_id"], record["scheduler_id"], record["attempt"]) == (
        task["id"],
        queue.id,
        1,
    )
    assert record["result"] == "connected"
    assert record["backend"] == "simulated"
    assert WIRE_TIME.fullmatch(record["started_utc"])
    assert WIRE_TIME.fullmatch(record["ended_utc"])
    assert parse_wire(record["started_utc"]) <= parse_wire(record["ended_utc"])
    # The test phones ring 0.05 s and talk 0.1 s: talked at least that, and the call was ended
    # by a phone (hangup_by below), not cut at the 5 s maximum. How much longer a loaded
    # machine made it is not a test's business (no clock against an upper bound).
    assert record["talk_seconds"] >= 0.1
    assert record["talk_seconds"] < record["duration_seconds"]
    a, b = record["legs"]
    assert all(set(leg) == LEG_FIELDS for leg in (a, b))
    assert (a["role"], a["number"], a["result"]) == ("a", ANSWERING_NUMBER, "answered")
    assert (b["role"], b["number"], b["result"]) == ("b", OTHER_ANSWERING_NUMBER, "answered")
    for leg in (a, b):
        assert WIRE_TIME.fullmatch(leg["answered_utc"]), leg
        assert leg["talk_seconds"] > 0
        assert leg["hangup_by"] in ("a", "b")


def test_the_tasks_call_limits_reach_the_phones_and_the_record(
    api: httpx.Client, tenant: str
) -> None:
    # The test dialer rings 0.3 s at most and lets calls talk 5 s; LONG_CALL phones talk 1.5 s.
    queue = create_queue(api, tenant)
    limited = queue.add_one(**LONG_CALL, callback_params={"call_duration": 1, "ring_timeout": 30})
    plain = queue.add_one(**LONG_CALL)
    assert (
        limited["callback_params"]["call_duration"],
        plain["callback_params"]["call_duration"],
    ) == (1, 0)
    assert limited["callback_params"]["ring_timeout"] == 30

    cut = record_of(api, tenant, queue.wait_finished(limited["id"], timeout=30)["cdr"])
    whole = record_of(api, tenant, queue.wait_finished(plain["id"], timeout=30)["cdr"])

    # The task's 1 s of talk, cut by the scheduler; its 30 s of ringing capped by the
    # dialer's 0.3 s (a task may shorten a call, never lengthen it).
    assert (cut["call_duration"], cut["ring_timeout"]) == (1.0, 0.3)
    assert {leg["hangup_by"] for leg in cut["legs"]} == {"system"}
    assert cut["talk_seconds"] >= 1.0
    # Without limits of its own, a task runs with the dialer's, and the phones hang up.
    assert (whole["call_duration"], whole["ring_timeout"]) == (5.0, 0.3)
    assert {leg["hangup_by"] for leg in whole["legs"]} == {"a"}


def test_every_attempt_has_its_own_record(stack: Stack, api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one(a_number=BUSY_NUMBER, try_count=2, try_again_pause=0)
    done = queue.wait_finished(task["id"], timeout=30)

    first, second = calls_of_task(stack, task["id"])

    assert done["cdr"] == second.call_uuid != first.call_uuid
    for attempt, call in enumerate((first, second), start=1):
        record = record_of(api, tenant, call.call_uuid)
        assert (record["attempt"], record["result"]) == (attempt, "a_busy")
        assert [(leg["role"], leg["result"]) for leg in record["legs"]] == [("a", "busy")]
        assert record["talk_seconds"] == 0


def test_first_extended_a_number_to_answer_takes_the_call(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one(
        a_number=NO_ANSWER_NUMBER,
        callback_params={"extended_a_numbers": [ANSWERING_NUMBER]},
    )
    done = queue.wait_finished(task["id"], timeout=30)
    assert done["finish_result"] == "success", done

    record = record_of(api, tenant, done["cdr"])

    assert record["result"] == "connected"
    assert [(leg["role"], leg["number"], leg["result"]) for leg in record["legs"]] == [
        ("a", NO_ANSWER_NUMBER, "cancelled"),
        ("a", ANSWERING_NUMBER, "answered"),
        ("b", OTHER_ANSWERING_NUMBER, "answered"),
    ]


def look_during_a_long_call(
    stack: Stack, api: httpx.Client, tenant: str, queue: Queue
) -> tuple[dict[str, Any], bool]:
    """The record of a long call read while it went on, and whether that look surely came
    before the call's end: the database's clock, read once the look was answered, was still
    before it (the row changes only after the end)."""
    task = queue.add_one(**LONG_CALL)
    [call] = wait_for(lambda: calls_of_task(stack, task["id"]), 60, "the call to be placed")

    record = record_of(api, tenant, call.call_uuid)
    answered_by = db_now(stack)

    assert queue.must_task(task["id"])["cdr"] == call.call_uuid
    queue.delete_task(task["id"])
    [ended] = wait_for(lambda: ended_calls(stack, task["id"]), 60, "the call to end")
    assert ended.ended_at is not None
    return record, answered_by < ended.ended_at


def ended_calls(stack: Stack, task_id: int) -> list[CallRow]:
    return [call for call in calls_of_task(stack, task_id) if call.ended_at is not None]


def test_call_in_progress_has_a_record_already(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)
    # The call's own end decides whether a look came during it, not a guess of how long a
    # look takes; on a machine slow enough to miss a call, another one.
    for _ in range(5):
        record, during_the_call = look_during_a_long_call(stack, api, tenant, queue)
        if during_the_call:
            break
    else:
        raise AssertionError("no look at a record while its call was in progress")

    assert record["result"] == "in_progress"
    assert record["ended_utc"] == ""


def test_call_history_is_private_to_its_tenant(
    api: httpx.Client, tenant: str, make_client: ClientFactory
) -> None:
    queue = create_queue(api, tenant)
    done = queue.wait_finished(queue.add_one()["id"], timeout=30)
    other = f"{tenant}-other"
    other_api = make_client(other)

    # Through its own path, the other tenant does not find it ...
    assert_error(history(other_api, other, done["cdr"]), 404)
    assert_error(history(other_api, "@me", done["cdr"]), 404)
    # ... and through ours it is refused, without our data.
    refused = history(other_api, tenant, done["cdr"])
    assert refused.status_code in (403, 404), refused.text
    assert done["cdr"] not in refused.text
    # The owner, by name or as @me.
    assert record_of(api, "@me", done["cdr"]) == record_of(api, tenant, done["cdr"])


def test_call_history_answers_400_for_a_malformed_id_and_404_for_an_unknown_one(
    api: httpx.Client, tenant: str
) -> None:
    for malformed in ("not-a-uuid", "12345", "0f0f0f0f-0f0f-0f0f-0f0f-0f0f0f0f0f0"):
        assert_error(history(api, tenant, malformed), 400)
    assert_error(history(api, tenant, str(uuid.uuid4())), 404)
    assert_error(history(api, "@me", str(uuid.uuid4())), 404)
