"""The command line's exports and watch without a server: the columns users' spreadsheets
read (existing ones in place, new ones at the end) and how watch counts a queue's tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from services.cli.api import RestApi
from services.cli.exports import QUEUE_COLUMNS, TASK_COLUMNS, queue_row, task_row
from services.cli.watch import sample

# The columns before the vendor's newest revision, in their order: a spreadsheet that reads
# column N keeps reading the same field.
FIRST_TASK_COLUMNS = (
    "id",
    "scheduler_id",
    "name",
    "status",
    "a_number",
    "b_number",
    "extension_id",
    "try_count",
    "try_again_pause",
    "start_time_utc",
    "url_before",
    "url_before_again",
    "url_success",
    "url_after",
    "create_date_utc",
    "finish_result",
    "finish_comment",
    "cdr",
    "caller_id_name",
    "caller_id_number",
    "extended_a_numbers",
)


def test_task_columns_keep_their_places_and_the_new_ones_come_last() -> None:
    assert TASK_COLUMNS[: len(FIRST_TASK_COLUMNS)] == FIRST_TASK_COLUMNS
    assert TASK_COLUMNS[len(FIRST_TASK_COLUMNS) :] == (
        "try_count_caller",
        "try_again_pause_caller",
        "timezone",
    )


def test_a_task_row_has_the_new_fields_and_callback_params_flattened() -> None:
    task = {
        "id": 7,
        "status": "delayed_interval",
        "try_count_caller": 2,
        "try_again_pause_caller": 600,
        "callback_params": {
            "caller_id_name": "Sales",
            "extended_a_numbers": ["+1", "+2"],
            "timezone": "Europe/Berlin",
        },
    }
    row = task_row(task)
    assert list(row) == list(TASK_COLUMNS)
    assert row["status"] == "delayed_interval"
    assert (row["try_count_caller"], row["try_again_pause_caller"]) == (2, 600)
    assert (row["timezone"], row["extended_a_numbers"]) == ("Europe/Berlin", "+1 +2")
    assert row["caller_id_number"] == ""


def test_a_queue_row_has_its_interval_and_counters() -> None:
    queue = {
        "id": 3,
        "name": "sales",
        "status": "on",
        "concurrent_task_limit": 2,
        "comment": "",
        "create_date_utc": "2026-11-26 14:46:07",
        "interval_id": 4,
        "sched_task_count": 1,
        "task_count": 5,
        "last_call_date": "2026-11-26 15:00:00",
    }
    assert queue_row(queue) == {name: queue[name] for name in QUEUE_COLUMNS}


def test_watch_tells_tasks_held_by_the_window_from_those_held_by_the_limit() -> None:
    statuses = [
        ("scheduled", "2026-01-01 00:00:00"),  # due
        ("scheduled", "2099-01-01 00:00:00"),  # later
        ("delayed_concurrent_task", "2026-01-01 00:00:00"),
        ("delayed_concurrent_task", "2026-01-01 00:00:00"),
        ("delayed_interval", "2026-01-01 00:00:00"),
        ("delayed", "2026-01-01 00:00:00"),
        ("executed", "2026-01-01 00:00:00"),
        ("finished", "2026-01-01 00:00:00"),
    ]
    tasks = [
        {"id": i + 1, "status": s, "start_time_utc": t, "finish_result": "success"}
        for i, (s, t) in enumerate(statuses)
    ]

    def handle(request: httpx.Request) -> httpx.Response:
        body: Any = (
            tasks
            if request.url.path.endswith("/task/")
            else {"name": "q", "status": "on", "concurrent_task_limit": 1}
        )
        return httpx.Response(200, json=body)

    with RestApi("http://api", "t", transport=httpx.MockTransport(handle)) as api:
        seen = sample(api, 1, 0.0, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert (seen.due, seen.later, seen.held_by_limit, seen.held_by_window) == (1, 1, 2, 1)
    assert (seen.delayed, seen.in_flight, seen.finished) == (1, 1, 1)
