"""Helpers of the task-execution e2e tests: queues and tasks over REST, polling with a
deadline, audits of the `calls` table, and a NATS connection to the test stack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import psycopg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from scheduler.v1 import events_pb2

from deploy.local.stack import Stack
from services.common import bus
from services.common.bus import SUBJECT_EVENTS
from tests.conftest import LONG_CALL_NUMBER

POLL_SECONDS = 0.05
# The default bound of a wait for something that must happen. Generous: on a loaded machine
# slowness must not turn into a failure, and a wait that ends in time asserts nothing.
WAIT_SECONDS = 60.0
WIRE_FORMAT = "%Y-%m-%d %H:%M:%S"
# An ordinary phone of the test stack: answers after 0.05 s and talks for 0.1 s.
ANSWERING_NUMBER = "+15550000100"
OTHER_ANSWERING_NUMBER = "+15550000200"
# A callback that talks for 1.5 s: a call lasts until the first of A and B hangs up, so both
# ends must be long-talking phones.
LONG_CALL = {"a_number": LONG_CALL_NUMBER, "b_number": LONG_CALL_NUMBER}

_T = TypeVar("_T")


# --- waiting ------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], _T | None], timeout: float, what: str) -> _T:
    """Poll `predicate` every 0.05 s until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_SECONDS)


async def wait_for_async(predicate: Callable[[], _T | None], within: float, what: str) -> _T:
    """wait_for, yielding to the event loop between polls (NATS keeps reading)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)


async def wait_for_awaitable(
    predicate: Callable[[], Awaitable[_T | None]], within: float, what: str
) -> _T:
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}: {value!r}")
        await asyncio.sleep(POLL_SECONDS)


# --- times --------------------------------------------------------------------------------------


def wire_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(WIRE_FORMAT)


def parse_wire(text: str) -> datetime:
    return datetime.strptime(text, WIRE_FORMAT).replace(tzinfo=UTC)


def stamped_between(text: str, before: datetime, after: datetime) -> bool:
    """A wire time (whole seconds) the database stamped between two readings of its clock
    (db_now): no margin against our clock for how long the request took."""
    return before.replace(microsecond=0) <= parse_wire(text) <= after


def whole_seconds_from_now(seconds: float) -> datetime:
    """A UTC moment about `seconds` from now, truncated to the second (the wire precision)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


# --- REST ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    api: httpx.Client
    tenant: str
    id: int

    @property
    def path(self) -> str:
        return f"/client/{self.tenant}/task_scheduler/{self.id}"

    def add(self, *tasks: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.api.post(f"{self.path}/tasks/", json={"tasks": list(tasks)})
        assert response.status_code == 200, response.text
        created: list[dict[str, Any]] = response.json()
        assert len(created) == len(tasks)
        return created

    def add_one(self, **fields: Any) -> dict[str, Any]:
        task = {"a_number": ANSWERING_NUMBER, "b_number": OTHER_ANSWERING_NUMBER} | fields
        return self.add(task)[0]

    def task(self, task_id: int) -> dict[str, Any] | None:
        """The task as GET returns it, or None once it is gone (404)."""
        response = self.api.get(f"{self.path}/task/{task_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def must_task(self, task_id: int) -> dict[str, Any]:
        task = self.task(task_id)
        assert task is not None, f"task {task_id} is gone"
        return task

    def tasks(self) -> list[dict[str, Any]]:
        response = self.api.get(f"{self.path}/task/")
        assert response.status_code == 200, response.text
        body: list[dict[str, Any]] = response.json()
        return body

    def set(self, **changes: Any) -> dict[str, Any]:
        response = self.api.put(self.path, json=changes)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def delete(self) -> None:
        response = self.api.delete(self.path)
        assert response.status_code in (200, 204), response.text

    def delete_task(self, task_id: int) -> None:
        response = self.api.delete(f"{self.path}/task/{task_id}")
        assert response.status_code in (200, 204), response.text

    def wait_task(
        self, task_id: int, condition: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            task = self.must_task(task_id)
            return task if condition(task) else None

        return wait_for(check, timeout, f"task {task_id}: {what}")

    def wait_status(
        self, task_id: int, status: str, timeout: float = WAIT_SECONDS
    ) -> dict[str, Any]:
        return self.wait_task(task_id, lambda t: t["status"] == status, timeout, status)

    def wait_finished(self, task_id: int, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        return self.wait_status(task_id, "finished", timeout)

    def wait_all_finished(self, timeout: float = WAIT_SECONDS) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            tasks = self.tasks()
            return tasks if all(t["status"] == "finished" for t in tasks) else None

        return wait_for(check, timeout, f"every task of queue {self.id} to finish")


def create_queue(api: httpx.Client, tenant: str, *, status: str = "on", limit: int = 1) -> Queue:
    response = api.post(
        f"/client/{tenant}/task_scheduler/",
        json={"name": "dispatch", "status": status, "concurrent_task_limit": limit},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == status and body["concurrent_task_limit"] == limit, body
    return Queue(api, tenant, int(body["id"]))


# --- the database -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRow:
    call_uuid: str
    client_id: str
    queue_id: int
    task_id: int
    attempt: int
    result: str
    comment: str
    started_at: datetime
    ended_at: datetime | None
    record: dict[str, Any]


_CALL_COLUMNS = (
    "call_uuid, client_id, queue_id, task_id, attempt, result, comment, started_at, ended_at, "
    "record"
)


def _calls(stack: Stack, where: str, params: Sequence[Any]) -> list[CallRow]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE {where} ORDER BY started_at, attempt",
            params,
        ).fetchall()
    return [CallRow(*row) for row in rows]


def calls_of_task(stack: Stack, task_id: int) -> list[CallRow]:
    """Every call placed for a task, oldest first (the rows outlive a deleted task)."""
    return _calls(stack, "task_id = %s", (task_id,))


def calls_of_queue(stack: Stack, queue_id: int) -> list[CallRow]:
    return _calls(stack, "queue_id = %s", (queue_id,))


def db_now(stack: Stack) -> datetime:
    """The database clock, the one due times and calls.started_at are decided by."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


def stored_tasks(stack: Stack, tenant: str) -> int:
    """The tenant's count of stored tasks (its quota's counter), as the database has it."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT stored_tasks FROM tenant_usage WHERE client_id = %s", (tenant,)
        ).fetchone()
    return int(row[0]) if row else 0


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The most intervals in progress at one moment (an end and a start at the same moment
    do not overlap)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:  # at equal times, ends (-1) sort before starts (+1)
        running += step
        peak = max(peak, running)
    return peak


def call_intervals(calls: Iterable[CallRow]) -> list[tuple[datetime, datetime]]:
    ended = []
    for call in calls:
        assert call.ended_at is not None, f"call {call.call_uuid} has not ended"
        ended.append((call.started_at, call.ended_at))
    return ended


# --- NATS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedEvent:
    stream_seq: int
    subject: str
    msg_id: str
    event: events_pb2.TaskEvent


class EventListener:
    """Every TaskEvent published after `start`, in stream order, through an ordered
    (ephemeral) consumer: the services' durable consumers are never touched."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._client: NATS | None = None
        self._subscription: Any = None
        self.received: list[ReceivedEvent] = []

    async def start(self) -> None:
        # The local admin: no service's user may read another's messages.
        self._client, _ = await bus.connect(
            self._stack.nats_url, "test-events", self._stack.nats_login("admin")
        )
        jetstream = self._client.jetstream(timeout=30)
        self._subscription = await jetstream.subscribe(
            f"{SUBJECT_EVENTS}.>",
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        if self._client is not None:
            await self._client.close()

    async def _on_message(self, msg: Msg) -> None:
        self.received.append(
            ReceivedEvent(
                stream_seq=msg.metadata.sequence.stream,
                subject=msg.subject,
                msg_id=(msg.headers or {}).get("Nats-Msg-Id", ""),
                event=events_pb2.TaskEvent.FromString(msg.data),
            )
        )

    def of_task(self, task_id: int) -> list[ReceivedEvent]:
        return sorted(
            (r for r in self.received if r.event.task.id == task_id), key=lambda r: r.stream_seq
        )

    async def wait_for(self, task_id: int, event: str, within: float) -> list[ReceivedEvent]:
        """The task's events so far, once one named `event` has arrived."""

        def arrived() -> list[ReceivedEvent] | None:
            events = self.of_task(task_id)
            return events if any(r.event.event == event for r in events) else None

        return await wait_for_async(arrived, within, f"event {event!r} of task {task_id}")
