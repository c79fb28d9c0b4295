"""Call events from the dialers (NATS) -> task state changes (PostgreSQL).

Delivery is decided explicitly: applied -> ack; database down -> nak with a delay (retried);
unreadable or impossible message -> term (logged, never retried).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from scheduler.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import bus, metrics
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.dispatcher import repository
from services.dispatcher.lifecycle import EVENT_SUCCESS, resolve_attempt
from services.dispatcher.messages import webhook_events
from services.dispatcher.results import end_attempt_params, resolved_view

log = logging.getLogger(__name__)

OUTCOMES = {
    events_pb2.CALL_OUTCOME_CONNECTED: "connected",
    events_pb2.CALL_OUTCOME_A_BUSY: "a_busy",
    events_pb2.CALL_OUTCOME_A_NO_ANSWER: "a_no_answer",
    events_pb2.CALL_OUTCOME_A_REJECTED: "a_rejected",
    events_pb2.CALL_OUTCOME_B_BUSY: "b_busy",
    events_pb2.CALL_OUTCOME_B_NO_ANSWER: "b_no_answer",
    events_pb2.CALL_OUTCOME_B_REJECTED: "b_rejected",
    events_pb2.CALL_OUTCOME_ERROR: "error",
}
KINDS = (events_pb2.CallEvent.KIND_CONNECTED, events_pb2.CallEvent.KIND_ENDED)
DURABLE = "dispatcher-calls"


class PoisonMessage(Exception):
    """A message that can never be applied."""


def parse(msg: Msg) -> events_pb2.CallEvent:
    try:
        event = events_pb2.CallEvent.FromString(msg.data)
    except DecodeError as err:
        raise PoisonMessage(f"not a CallEvent: {err}") from None
    if event.kind not in KINDS or event.task_id == 0 or event.attempt == 0:
        raise PoisonMessage(f"incomplete CallEvent: {event}")
    if event.kind == events_pb2.CallEvent.KIND_ENDED and event.outcome not in OUTCOMES:
        raise PoisonMessage(f"unknown outcome {event.outcome}")
    return event


async def apply_call_events(conn: AsyncConnection, events: Sequence[events_pb2.CallEvent]) -> None:
    """Apply a batch of events with a few statements; stale ones (the attempt was already
    resolved, or the task deleted) change nothing."""
    tasks: dict[int, Any] = {
        row.id: row for row in await repository.lock_tasks(conn, [e.task_id for e in events])
    }
    changes: list[dict[str, Any]] = []
    messages: list[repository.Message] = []
    connected: list[str] = []
    for event in events:
        task = tasks.get(event.task_id)
        context = {"task_id": event.task_id, "attempt": event.attempt, "call_uuid": event.call_uuid}
        if task is None or task.status != "executed" or task.attempts != event.attempt:
            log.info("stale call event", extra={"action": "ignore_stale", **context})
            continue
        if event.kind == events_pb2.CallEvent.KIND_CONNECTED:
            messages.extend(webhook_events(task, [EVENT_SUCCESS]))
            connected.append(event.call_uuid)
            log.info("call connected", extra={"action": "connected", **context})
            continue
        outcome = OUTCOMES[event.outcome]
        resolution = resolve_attempt(
            outcome=outcome,
            comment=event.comment,
            attempt=task.attempts,
            try_count=task.try_count,
            try_again_pause=task.try_again_pause,
        )
        resolved = resolved_view(task, resolution)
        tasks[event.task_id] = resolved  # a duplicate in the same batch is now stale
        changes.append(end_attempt_params(task.id, resolution))
        metrics.ATTEMPTS_ENDED.labels(outcome).inc()
        messages.extend(webhook_events(resolved, resolution.events))
        log.info(
            "attempt ended",
            extra={
                "action": "attempt_ended",
                "outcome": outcome,
                "status": resolution.status,
                **context,
            },
        )
    await repository.mark_calls_connected(conn, connected)
    await repository.end_attempts(conn, changes)
    await repository.add_to_outbox(conn, messages)


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
            self._jetstream, bus.STREAM_CALLS, DURABLE, ack_wait_seconds=30
        )
        while not self._stopping:
            messages = await bus.fetch(subscription, self._batch)
            if messages:
                await self.handle(messages)

    async def handle(self, messages: Sequence[Msg]) -> None:
        parsed: list[tuple[Msg, events_pb2.CallEvent]] = []
        for msg in messages:
            try:
                parsed.append((msg, parse(msg)))
            except PoisonMessage as err:
                log.error("poison message", extra={"action": "term", "error": str(err)})
                await bus.settle(msg, "term")
        if not parsed:
            return
        try:
            async with transaction(self._engine) as conn:
                await apply_call_events(conn, [event for _, event in parsed])
                await repository.notify_wake(conn)
        except StorageUnavailable:
            for msg, _ in parsed:
                await bus.settle(msg, "nak", delay=1.0)
            return
        except Exception:
            log.exception("batch failed; applying one by one", extra={"action": "batch_retry"})
            await self._one_by_one(parsed)
            return
        self._outbox_ready.set()
        for msg, _ in parsed:
            await bus.settle(msg, "ack")

    async def _one_by_one(self, parsed: Sequence[tuple[Msg, events_pb2.CallEvent]]) -> None:
        for msg, event in parsed:
            try:
                async with transaction(self._engine) as conn:
                    await apply_call_events(conn, [event])
                    await repository.notify_wake(conn)
            except StorageUnavailable:
                await bus.settle(msg, "nak", delay=1.0)
            except Exception:
                log.exception(
                    "call event cannot be applied",
                    extra={"action": "term", "task_id": event.task_id, "attempt": event.attempt},
                )
                await bus.settle(msg, "term")
            else:
                await bus.settle(msg, "ack")
        self._outbox_ready.set()
