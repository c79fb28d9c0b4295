"""Task events (NATS) -> queued webhook deliveries (PostgreSQL).

Delivery of NATS messages: queued (or nothing to deliver) -> ack; database down -> nak with
a delay; unreadable -> term. A redelivered event is queued once (unique event_id).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from scheduler.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import bus
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.common.vocabulary import FinishResult, WebhookEvent
from services.notifier import repository
from services.notifier.policy import predecessors, sequence

log = logging.getLogger(__name__)

_EVENTS = frozenset(WebhookEvent)


def body_of(event: events_pb2.TaskEvent) -> str:
    """The JSON a receiver gets: the event, and the task exactly as the API returns it."""
    task = MessageToDict(
        event.task, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    payload = {
        "event": event.event,
        "event_id": event.event_id,
        "attempt": event.attempt,
        "time": event.occurred_at,
        "task": task,
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def delivery_row(event: events_pb2.TaskEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "client_id": event.client_id,
        "task_id": event.task.id,
        "seq": sequence(event.attempt, event.event),
        "predecessors": predecessors(
            event.attempt,
            event.event,
            frozenset(name for name in WebhookEvent if getattr(event.task, name.url_field)),
            succeeded=event.task.finish_result == FinishResult.SUCCESS,
        ),
        "event": event.event,
        "url": event.url,
        "body": body_of(event),
    }


def parse(msg: Msg) -> events_pb2.TaskEvent | None:
    try:
        event = events_pb2.TaskEvent.FromString(msg.data)
    except DecodeError:
        return None
    if not event.event_id or event.event not in _EVENTS or not event.task.id:
        return None
    return event


class EventConsumer:
    def __init__(self, engine: AsyncEngine, jetstream: JetStreamContext) -> None:
        self._engine = engine
        self._jetstream = jetstream
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        subscription = await bus.pull_consumer_when_ready(
            self._jetstream, bus.CONSUMER_NOTIFIER, ack_wait_seconds=30
        )
        while not self._stopping:
            messages = await bus.fetch(subscription, 200)
            if messages:
                await self.handle(messages)

    async def handle(self, messages: Sequence[Msg]) -> None:
        rows: list[dict[str, Any]] = []
        accepted: list[Msg] = []
        for msg in messages:
            event = parse(msg)
            if event is None:
                log.error("poison task event", extra={"action": "term", "subject": msg.subject})
                await bus.settle(msg, bus.Verdict.TERM)
                continue
            accepted.append(msg)
            if event.url:  # no URL for this event: nothing to deliver
                rows.append(delivery_row(event))
        try:
            async with transaction(self._engine) as conn:
                await repository.add_deliveries(conn, rows)
        except StorageUnavailable:
            for msg in accepted:
                await bus.settle(msg, bus.Verdict.NAK, delay=1.0)
            return
        for msg in accepted:
            await bus.settle(msg, bus.Verdict.ACK)
