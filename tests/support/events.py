"""The TaskEvents a stack publishes on NATS, read by a listener of the test's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from scheduler.v1 import events_pb2

from deploy.local.stack import Stack
from services.common import bus
from services.common.bus import SUBJECT_EVENTS
from tests.support.waiting import wait_for_async


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
