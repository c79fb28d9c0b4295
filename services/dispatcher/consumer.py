"""Call events from the dialers (NATS) -> task state changes (PostgreSQL).

Delivery is decided explicitly: applied -> ack; database down -> nak with a delay (retried);
unreadable or impossible message -> term (logged, never retried).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from scheduler.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import bus, metrics
from services.common.batch_messages import read_batch, read_or_term
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.common.vocabulary import OUTCOME_FROM_PROTO, TaskStatus
from services.dispatcher import repository
from services.dispatcher.lifecycle import EVENT_SUCCESS, Resolution, resolve_attempt
from services.dispatcher.messages import has_webhook, webhook_events
from services.dispatcher.results import end_attempt_params, resolved_view

log = logging.getLogger(__name__)

KINDS = (events_pb2.CallEvent.KIND_CONNECTED, events_pb2.CallEvent.KIND_ENDED)


def _complete(event: events_pb2.CallEvent) -> bool:
    if event.kind not in KINDS or event.task_id == 0 or event.attempt == 0:
        return False
    return event.kind != events_pb2.CallEvent.KIND_ENDED or event.outcome in OUTCOME_FROM_PROTO


def parse(data: bytes) -> tuple[list[events_pb2.CallEvent], int]:
    """The events of a message that can be applied, and how many could not (incomplete)."""
    return read_batch(data, events_pb2.CallEvents, "events", events_pb2.CallEvent, _complete)


# A task id, its resolution (None if its call only connected), the webhook events it brings.
Announcement = tuple[int, Resolution | None, tuple[str, ...]]


async def apply_call_events(conn: AsyncConnection, events: Sequence[events_pb2.CallEvent]) -> int:
    """Apply a batch of events with a few statements; stale ones (the attempt was already
    resolved, or the task deleted) change nothing. A call that ended frees a place in its
    queue (even if its task was deleted), and an attempt that ended may make its task due
    again later: then the dispatchers are woken (at commit). Returns how many webhook
    events it put in the outbox."""
    tasks = {
        row.id: row
        for row in await repository.lock_tasks(conn, [event.task_id for event in events])
    }
    changes: list[dict[str, Any]] = []
    connected: list[str] = []
    ended: set[str] = set()
    resolved: set[int] = set()  # a second end of one attempt in the batch is stale
    outcomes: Counter[str] = Counter()
    announcements: list[Announcement] = []
    for event in events:
        task = tasks.get(event.task_id)
        context = {"task_id": event.task_id, "attempt": event.attempt, "call_uuid": event.call_uuid}
        if (
            task is None
            or task.id in resolved
            or task.status != TaskStatus.EXECUTED
            or task.attempts != event.attempt
        ):
            log.info("stale call event", extra={"action": "ignore_stale", **context})
            continue
        if event.kind == events_pb2.CallEvent.KIND_CONNECTED:
            announcements.append((task.id, None, (EVENT_SUCCESS,)))
            connected.append(event.call_uuid)
            log.info("call connected", extra={"action": "connected", **context})
            continue
        outcome = OUTCOME_FROM_PROTO[event.outcome]
        resolution = resolve_attempt(
            outcome=outcome,
            comment=event.comment,
            attempt=task.attempts,
            try_count=task.try_count,
            try_again_pause=task.try_again_pause,
        )
        resolved.add(task.id)
        ended.add(event.call_uuid)
        changes.append(end_attempt_params(task.id, resolution))
        announcements.append((task.id, resolution, resolution.events))
        outcomes[outcome] += 1
        log.info(
            "attempt ended",
            extra={
                "action": "attempt_ended",
                "outcome": outcome,
                "status": resolution.status,
                **context,
            },
        )
    webhooks = await _webhooks(conn, tasks, announcements)
    await repository.add_to_outbox(conn, webhooks)
    for word, count in outcomes.items():  # per batch: labels() per event cost 7 % here
        metrics.ATTEMPTS_ENDED.labels(word).inc(count)
    # connected_at matters only to an attempt whose end never comes (lease expiry): one that
    # ends in this same transaction needs no such note.
    await repository.mark_calls_connected(conn, [u for u in connected if u not in ended])
    await repository.end_attempts(conn, changes)
    if any(event.kind == events_pb2.CallEvent.KIND_ENDED for event in events):
        await repository.notify_wake(conn)
    return len(webhooks)


async def _webhooks(
    conn: AsyncConnection, tasks: dict[int, Any], announcements: Sequence[Announcement]
) -> list[repository.Message]:
    """The webhook events to publish, with the task as it is at each. Whole rows are read
    only for the tasks that have a URL for them."""
    wanted = [a for a in announcements if has_webhook(tasks[a[0]], a[2])]
    if not wanted:
        return []
    rows = await repository.tasks_by_id(conn, [task_id for task_id, _, _ in wanted])
    whole = {row.id: row for row in rows}
    return [
        message
        for task_id, resolution, names in wanted
        for message in webhook_events(
            whole[task_id] if resolution is None else resolved_view(whole[task_id], resolution),
            names,
        )
    ]


class CallEventConsumer:
    def __init__(
        self,
        engine: AsyncEngine,
        jetstream: JetStreamContext,
        batch: int,
        outbox_ready: asyncio.Event,
    ) -> None:
        self._engine = engine
        self._jetstream = jetstream
        self._batch = batch
        self._outbox_ready = outbox_ready
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        subscription = await bus.pull_consumer_when_ready(
            self._jetstream, bus.CONSUMER_DISPATCHER, ack_wait_seconds=30
        )
        while not self._stopping:
            messages = await bus.fetch(subscription, self._batch)
            if messages:
                await self.handle(messages)

    async def handle(self, messages: Sequence[Msg]) -> None:
        """Apply the messages' events, in transactions of about `batch` events."""
        chunk: list[tuple[Msg, list[events_pb2.CallEvent]]] = []
        for msg in messages:
            events = await read_or_term(msg, parse, "call events")
            if events is None:
                continue
            chunk.append((msg, events))
            if sum(len(events) for _, events in chunk) >= self._batch:
                await self._apply(chunk)
                chunk = []
        if chunk:
            await self._apply(chunk)

    async def _apply(self, parsed: Sequence[tuple[Msg, list[events_pb2.CallEvent]]]) -> None:
        try:
            async with transaction(self._engine) as conn:
                queued = await apply_call_events(
                    conn, [event for _, events in parsed for event in events]
                )
        except StorageUnavailable:
            for msg, _ in parsed:
                await bus.settle(msg, "nak", delay=1.0)
            return
        except Exception:
            log.exception("batch failed; applying one by one", extra={"action": "batch_retry"})
            await self._one_by_one(parsed)
            return
        if queued:  # a publisher pass finding nothing was a transaction per batch
            self._outbox_ready.set()
        for msg, _ in parsed:
            await bus.settle(msg, "ack")

    async def _one_by_one(self, parsed: Sequence[tuple[Msg, list[events_pb2.CallEvent]]]) -> None:
        """After a failed batch: each message in a transaction of its own, so that one that
        can never be applied is terminated and the others go through."""
        for msg, events in parsed:
            try:
                async with transaction(self._engine) as conn:
                    await apply_call_events(conn, events)
            except StorageUnavailable:
                await bus.settle(msg, "nak", delay=1.0)
            except Exception:
                log.exception(
                    "call events cannot be applied",
                    extra={"action": "term", "task_ids": [event.task_id for event in events]},
                )
                await bus.settle(msg, "term")
            else:
                await bus.settle(msg, "ack")
        self._outbox_ready.set()
