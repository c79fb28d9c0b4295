"""PUT of a task (reschedule) and GET of its call records, through the real REST gateway."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from deploy.local.stack import Stack
from tests.support.calls import calls_of_task
from tests.support.database import db_now, stored_tasks
from tests.support.queues import create_queue
from tests.support.simulated_phones import ANSWERING_NUMBER, BUSY_NUMBER, OTHER_ANSWERING_NUMBER
from tests.support.waiting import WAIT_SECONDS, wait_for
from tests.support.wire_times import parse_wire, whole_seconds_from_now, wire_time

FAR = "2030-01-02 03:04:05"


def put(api: httpx.Client, path: str, **changes: Any) -> httpx.Response:
    return api.put(path, json=changes)


def reason(response: httpx.Response) -> str:
    details: list[dict[str, Any]] = response.json()["details"]
    return next(str(d["reason"]) for d in details if d["@type"].endswith("ErrorInfo"))


def next_run_at(stack: Stack, task_id: int) -> Any:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT next_run_at FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row[0]


# --- reschedule ---------------------------------------------------------------------------------


def test_a_partial_update_changes_only_what_is_sent(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    stack.admin("caller-id", "add", tenant, "+15557770000")
    queue = create_queue(api, tenant, status="off")
    task = queue.add_one(
        name="keep", start_time_utc=FAR, try_count=2, url_before="https://example.com/b"
    )
    path = f"{queue.path}/task/{task['id']}"

    response = put(api, path, try_count=5, try_again_pause=30, url_after="https://example.com/a")
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["try_count"] == 5
    assert changed["try_again_pause"] == "30"
    assert changed["url_after"] == "https://example.com/a"
    unchanged = {"try_count", "try_again_pause", "url_after"}
    assert {k: v for k, v in changed.items() if k not in unchanged} == {
        k: v for k, v in task.items() if k not in unchanged
    }

    params = {"caller_id_name": "Sales", "caller_id_number": "+15557770000"}
    response = put(api, path, start_time_utc="2031-05-06 07:08", callback_params=params)
    assert response.status_code == 200, response.text
    assert response.json()["start_time_utc"] == "2031-05-06 07:08:00"
    assert response.json()["callback_params"] == params | {
        "extended_a_numbers": [],
        "call_duration": 0,
        "ring_timeout": 0,
        "timezone": "",
    }
    assert response.json()["try_count"] == 5
    assert api.get(path).json() == response.json()
    assert next_run_at(stack, task["id"]).year == 2031
    assert stored_tasks(stack, tenant) == 1  # a reschedule neither adds nor removes a task


def test_a_new_start_time_wakes_the_dispatcher(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one(start_time_utc=FAR)
    start = whole_seconds_from_now(2)

    response = put(api, f"{queue.path}/task/{task['id']}", start_time_utc=wire_time(start))

    assert response.status_code == 200, response.text
    done = queue.wait_finished(task["id"])
    assert done["finish_result"] == "success"
    record = api.get(f"{queue.path}/task/{task['id']}/calls").json()
    assert len(record) == 1
    started = parse_wire(record[0]["started_utc"])
    # Started at the new time (the wire drops fractions), not at the 15 s timer or later.
    assert start - timedelta(seconds=1) <= started <= start + timedelta(seconds=2)


def test_an_executed_or_finished_task_is_a_409_that_says_why(
    api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one()
    queue.wait_finished(task["id"])

    response = put(api, f"{queue.path}/task/{task['id']}", start_time_utc=FAR)

    assert response.status_code == 409, response.text
    assert reason(response) == "CONFLICT"
    assert "finished" in response.json()["message"]
    assert queue.must_task(task["id"])["start_time_utc"] != FAR


def test_a_delayed_task_retries_at_its_new_start_time(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one(a_number=BUSY_NUMBER, try_count=2, try_again_pause=3600)
    queue.wait_status(task["id"], "delayed")
    path = f"{queue.path}/task/{task['id']}"

    # One attempt is made: a try_count that leaves none is refused.
    refused = put(api, path, try_count=1)
    assert refused.status_code == 400, refused.text
    assert "try_count" in refused.json()["message"]

    moved = put(api, path, start_time_utc=wire_time(db_now(stack)), a_number="ignored")
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "delayed"
    done = queue.wait_finished(task["id"])
    assert done["finish_result"] == "failed"

    calls = api.get(f"{path}/calls")
    assert calls.status_code == 200, calls.text
    records = calls.json()
    assert [r["attempt"] for r in records] == [2, 1]
    assert records[0]["call_uuid"] == done["cdr"]
    assert all(r["task_id"] == task["id"] and r["result"] == "a_busy" for r in records)
    # The same CallRecord as GET call_history.
    for record in records:
        assert api.get(f"/client/{tenant}/call_history/{record['call_uuid']}").json() == record


def test_an_a_leg_limit_set_on_a_delayed_task_counts_the_failures_before_it(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    """A-leg failures are counted while try_count_caller is off, so that a limit set later
    leaves A exactly the tries it says."""
    queue = create_queue(api, tenant)
    task = queue.add_one(a_number=BUSY_NUMBER, try_count=5, try_again_pause=3600)
    queue.wait_status(task["id"], "delayed")
    path = f"{queue.path}/task/{task['id']}"

    # A failed once: a limit of 1 leaves it no try.
    refused = put(api, path, try_count_caller=1)
    assert refused.status_code == 400, refused.text
    violations = [v for d in refused.json()["details"] for v in d.get("field_violations", [])]
    assert [v["field"] for v in violations] == ["try_count_caller"]
    assert "(at least 2)" in violations[0]["description"]
    assert queue.must_task(task["id"])["try_count_caller"] == 0

    moved = put(
        api,
        path,
        try_count_caller=2,
        try_again_pause_caller=0,
        start_time_utc=wire_time(db_now(stack)),
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["try_count_caller"], moved.json()["try_again_pause_caller"]) == (2, 0)
    done = queue.wait_finished(task["id"])

    assert done["finish_result"] == "failed"
    assert done["finish_comment"] == "A was busy (2 of 2 A-leg tries, try_count_caller)"
    assert [c.attempt for c in calls_of_task(stack, task["id"])] == [1, 2]


def test_policy_holds_on_reschedule(stack: Stack, api: httpx.Client, tenant: str) -> None:
    stack.admin("account", "add", tenant, "42", "--username", "u42", "--password", "pw")
    queue = create_queue(api, tenant, status="off")
    task = queue.add_one(start_time_utc=FAR, extension_id=42)
    path = f"{queue.path}/task/{task['id']}"

    not_owned = put(api, path, callback_params={"caller_id_number": "+15550009999"})
    assert not_owned.status_code == 400, not_owned.text
    assert reason(not_owned) == "CALLER_ID_NOT_ALLOWED"
    violations = not_owned.json()["details"][1]["field_violations"]
    assert violations[0]["field"] == "callback_params.caller_id_number"

    # The operator took the extension away: the task cannot be rescheduled onto it.
    stack.admin("account", "remove", tenant, "42")
    gone = put(api, path, start_time_utc="2031-01-01 00:00:00")
    assert gone.status_code == 400, gone.text
    assert reason(gone) == "EXTENSION_NOT_OWNED"
    assert queue.must_task(task["id"])["start_time_utc"] == FAR


def test_bad_input_unknown_and_foreign_tasks(
    api: httpx.Client, tenant: str, make_client: Any
) -> None:
    queue = create_queue(api, tenant, status="off")
    task = queue.add_one(start_time_utc=FAR)
    path = f"{queue.path}/task/{task['id']}"
    for bad in (
        {"start_time_utc": "tomorrow"},
        {"try_count": 0},
        {"try_count": 51},
        {"try_again_pause": "-1"},
        {"try_count_caller": -1},
        {"try_count_caller": 51},
        {"try_again_pause_caller": 864_001},
        {"url_after": "ftp://example.com"},
        {"callback_params": {"extended_a_numbers": ["x"]}},
    ):
        response = api.put(path, json=bad)
        assert response.status_code == 400, (bad, response.text)
    empty = api.put(path, json={})
    assert empty.status_code == 200, empty.text
    assert empty.json() == task
    assert api.put(f"{queue.path}/task/999999999", json={"try_count": 2}).status_code == 404
    assert api.get(f"{queue.path}/task/999999999/calls").status_code == 404
    other = make_client(f"{tenant}-x")
    assert (
        other.put(
            f"/client/{tenant}-x/task_scheduler/{queue.id}/task/{task['id']}", json={"try_count": 2}
        ).status_code
        == 404
    )
    assert other.put(path, json={"try_count": 2}).status_code == 403
    assert queue.must_task(task["id"]) == task


def test_a_task_without_calls_lists_none_and_records_outlive_the_task(
    api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)
    waiting = queue.add_one(start_time_utc=FAR)
    assert api.get(f"{queue.path}/task/{waiting['id']}/calls").json() == []
    done = queue.wait_finished(queue.add_one()["id"])
    queue.delete_task(done["id"])
    records = api.get(f"{queue.path}/task/{done['id']}/calls/").json()
    assert [r["call_uuid"] for r in records] == [done["cdr"]]


def test_a_reschedule_never_races_a_claim(stack: Stack, api: httpx.Client, tenant: str) -> None:
    """Tasks fall due while PUTs move them to 2030: each PUT either wins (200, and the task is
    never called) or finds the task claimed (409); never both."""
    queue = create_queue(api, tenant, limit=100)
    due = whole_seconds_from_now(2)
    tasks = queue.add(
        *[
            {"a_number": ANSWERING_NUMBER, "b_number": OTHER_ANSWERING_NUMBER,
             "start_time_utc": wire_time(due)}
            for _ in range(60)
        ]
    )  # fmt: skip
    outcomes: dict[int, int] = {}

    def reschedule(ids: list[int]) -> None:
        with httpx.Client(base_url=stack.rest_url, headers=dict(api.headers)) as client:
            # Start just before they fall due, so that claims and PUTs meet.
            time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds() - 0.3))
            for task_id in ids:
                response = client.put(f"{queue.path}/task/{task_id}", json={"start_time_utc": FAR})
                outcomes[task_id] = response.status_code

    ids = [t["id"] for t in tasks]
    threads = [threading.Thread(target=reschedule, args=(ids[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert set(outcomes.values()) <= {200, 409}, outcomes
    won = [i for i, code in outcomes.items() if code == 200]
    lost = [i for i, code in outcomes.items() if code == 409]
    wait_for(
        lambda: all(queue.must_task(i)["status"] == "finished" for i in lost) or None,
        WAIT_SECONDS,
        "the claimed tasks to finish",
    )
    for task_id in won:
        assert queue.must_task(task_id)["status"] == "scheduled"
        assert calls_of_task(stack, task_id) == []
    print(f"reschedule race: {len(won)} moved, {len(lost)} already claimed")
