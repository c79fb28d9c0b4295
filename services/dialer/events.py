"""Publishes the dialer's call events in batches (CallEvents): the events that came up while
the previous batch was being stored go out together, as one JetStream message and one
acknowledgement instead of one each."""

from __future__ import annotations

import uuid

from nats.js import JetStreamContext
from scheduler.v1 import events_pb2

from services.common import bus
from services.dialer.batching import Coalescer

SUBJECT = bus.SUBJECT_CALL_BATCH


class CallEventPublisher:
    def __init__(self, jetstream: JetStreamContext, give_up_seconds: float, max_batch: int = 1000):
        self._jetstream = jetstream
        self._give_up_seconds = give_up_seconds
        self._batches: Coalescer[events_pb2.CallEvent] = Coalescer(self._publish, max_batch)

    async def publish(self, event: events_pb2.CallEvent) -> None:
        """Returns once JetStream stored the event, or the publish was given up after
        `give_up_seconds` of NATS outage (logged; the attempt's lease expiry resolves it)."""
        await self._batches.submit(event)

    def publish_nowait(self, event: events_pb2.CallEvent) -> None:
        """Queue the event behind those before it, without waiting for JetStream."""
        self._batches.submit_nowait(event)

    async def drain(self) -> None:
        """Returns once every event queued so far was stored (or given up)."""
        await self._batches.drain()

    async def run(self) -> None:
        await self._batches.run()

    async def _publish(self, events: list[events_pb2.CallEvent]) -> None:
        payload = events_pb2.CallEvents(events=events).SerializeToString()
        # One id for every retry of this batch: JetStream drops a re-publish of one it stored.
        await bus.publish_until_stored(
            self._jetstream,
            SUBJECT,
            payload,
            f"calls:{uuid.uuid4()}",
            give_up=self._give_up_seconds,
        )
