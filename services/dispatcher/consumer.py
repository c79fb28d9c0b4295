"""Call events from the dialers (NATS) -> task state changes (PostgreSQL).

Delivery is decided explicitly: applied -> ack; database down -> nak with a delay (retried);
unreadable or impossible message -> term (logged, never retried).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from scheduler.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import bus, metrics
from services.common.batch_messages import read_batch, read_or_term
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.common.vocabulary import OUTCOME_FROM_PROTO
from services.dispatcher import repository, transitions
from services.dispatcher.results import write_plan

log = logging.getLogger(__name__)

KINDS = (events_pb2.CallEvent.KIND_CONNECTED, events_pb2.CallEvent.KIND_ENDED)


def _complete(event: events_pb2.CallEvent) -> bool:
    if event.kind not in KINDS or event.task_id == 0 or event.attempt == 0:
        return False
    return event.kind != events_pb2.CallEvent.KIND_ENDED or event.outcome in OUTCOME_FROM_PROTO


def parse(data: bytes) -> tuple[list[events_pb2.CallEvent], int]:
    """The events of a message that can be applied, and how many could not (incomplete)."""
    return read_batch(data, events_pb2.CallEvents, "events", events_pb2.CallEvent, _complete)


def _event(event: events_pb2.CallEvent) -> transitions.Event:
    if event.kind == events_pb2.CallEvent.KIND_CONNECTED:
        return transitions.Connected(event.task_id, event.attempt, event.call_uuid)
    outcome = OUTCOME_FROM_PROTO[event.outcome]
    closed_ms = event.window_closes_at_unix_ms
    closed_at = datetime.fromtimestamp(closed_ms / 1000, UTC) if closed_ms > 0 else None
    return transitions.Ended(
        event.task_id, event.attempt, event.call_uuid, outcome, event.comment, closed_at
    )


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
    plan = transitions.plan(tasks, [_event(event) for event in events])
    written = await write_plan(conn, plan, tasks, whole_rows=False)
    _log(plan)
    return written.webhooks


def _log(plan: transitions.Plan) -> None:
    """Log each event's effect, and count the attempts ended by outcome."""
    for event in plan.stale:
        log.info("stale call event", extra={"action": "ignore_stale", **_context(event)})
    outcomes: Counter[str] = Counter()
    for decision in plan.decisions:
        context = _context(decision.event)
        if decision.resolution is None:
            log.info("call connected", extra={"action": "connected", **context})
            continue
        outcomes[decision.outcome] += 1
        log.info(
            "attempt ended",
            extra={
                "action": "attempt_ended",
                "outcome": decision.outcome,
                "status": decision.resolution.status,
                **context,
            },
        )
    for outcome, count in outcomes.items():  # per batch: labels() validates and locks
        metrics.ATTEMPTS_ENDED.labels(outcome).inc(count)


def _context(event: transitions.Event) -> dict[str, Any]:
    call_uuid = event.call_uuid if not isinstance(event, transitions.LeaseExpired) else ""
    return {"task_id": event.task_id, "attempt": event.attempt, "call_uuid": call_uuid}


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
                await bus.settle(msg, bus.Verdict.NAK, delay=1.0)
            return
        except Exception:
            log.exception("batch failed; applying one by one", extra={"action": "batch_retry"})
            await self._one_by_one(parsed)
            return
        if queued:  # a publisher pass finding nothing was a transaction per batch
            self._outbox_ready.set()
        for msg, _ in parsed:
            await bus.settle(msg, bus.Verdict.ACK)

    async def _one_by_one(self, parsed: Sequence[tuple[Msg, list[events_pb2.CallEvent]]]) -> None:
        """After a failed batch: each message in a transaction of its own, so that one that
        can never be applied is terminated and the others go through."""
        for msg, events in parsed:
            try:
                async with transaction(self._engine) as conn:
                    await apply_call_events(conn, events)
            except StorageUnavailable:
                await bus.settle(msg, bus.Verdict.NAK, delay=1.0)
            except Exception:
                log.exception(
                    "call events cannot be applied",
                    extra={"action": "term", "task_ids": [event.task_id for event in events]},
                )
                await bus.settle(msg, bus.Verdict.TERM)
            else:
                await bus.settle(msg, bus.Verdict.ACK)
        self._outbox_ready.set()
