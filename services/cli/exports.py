"""`callbacks tasks export` and `callbacks calls export`: what the API shows, as CSV rows."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from services.cli.api import RestApi

# Users' spreadsheets read these by position too: existing columns keep their place, new
# ones go at the end.
TASK_COLUMNS = (
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
    # the vendor's newest revision
    "try_count_caller",
    "try_again_pause_caller",
    "timezone",
)
# callback_params' fields among TASK_COLUMNS; every other column is a field of the task.
_PARAM_COLUMNS = frozenset({"caller_id_name", "caller_id_number", "extended_a_numbers", "timezone"})
QUEUE_COLUMNS = (
    "id",
    "name",
    "status",
    "concurrent_task_limit",
    "comment",
    "create_date_utc",
    "interval_id",
    "task_count",
    "sched_task_count",
    "last_call_date",
)
CALL_COLUMNS = (
    "call_uuid",
    "scheduler_id",
    "task_id",
    "attempt",
    "result",
    "comment",
    "backend",
    "started_utc",
    "ended_utc",
    "duration_seconds",
    "talk_seconds",
    "a_number",
    "a_result",
    "b_number",
    "b_result",
    "hangup_by",
    "legs",
)


def task_row(task: dict[str, Any]) -> dict[str, Any]:
    """A task as the API answers it, callback_params flattened into columns of their own."""
    params = task.get("callback_params") or {}
    row = {
        name: params.get(name, "") if name in _PARAM_COLUMNS else task.get(name, "")
        for name in TASK_COLUMNS
    }
    row["extended_a_numbers"] = " ".join(params.get("extended_a_numbers") or [])
    return row


def queue_row(queue: dict[str, Any]) -> dict[str, Any]:
    """A queue as the API answers it (its counters included)."""
    return {name: queue.get(name, "") for name in QUEUE_COLUMNS}


def call_row(call: dict[str, Any]) -> dict[str, Any]:
    """A call record, its first A and B legs summed up in columns and every leg as JSON."""
    legs = call.get("legs") or []
    first: dict[str, dict[str, Any]] = {
        role: next((leg for leg in legs if leg.get("role") == role), {}) for role in ("a", "b")
    }
    ended_by = next((leg["hangup_by"] for leg in legs if leg.get("hangup_by")), "")
    row = {name: call.get(name, "") for name in CALL_COLUMNS[:11]}
    row.update(
        a_number=first["a"].get("number", ""),
        a_result=first["a"].get("result", ""),
        b_number=first["b"].get("number", ""),
        b_result=first["b"].get("result", ""),
        hangup_by=ended_by,
        legs=json.dumps(legs, separators=(",", ":")),
    )
    return row


def queue_ids(api: RestApi, queue: int | None) -> list[int]:
    return [queue] if queue is not None else [int(q["id"]) for q in api.queues()]


def tasks_of(api: RestApi, queues: Iterable[int], status: str = "") -> Iterator[dict[str, Any]]:
    for queue_id in queues:
        yield from api.tasks(queue_id, status=status)


def calls_of(api: RestApi, queues: Iterable[int]) -> Iterator[dict[str, Any]]:
    """Every call record of the queues' tasks: one request per task that has been called
    (the API lists calls per task; a task never called has no `cdr`)."""
    for task in tasks_of(api, queues):
        if task.get("cdr"):
            yield from reversed(api.task_calls(int(task["scheduler_id"]), int(task["id"])))


def write_csv(out: TextIO, columns: tuple[str, ...], rows: Iterable[dict[str, Any]]) -> int:
    """Write a header and the rows; how many rows."""
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count
