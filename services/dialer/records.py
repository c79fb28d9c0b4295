"""Saves what the dialer learns about its calls, in batches: calls that connect or end
together share a transaction and one UPDATE each, instead of one transaction each.

A call's end event is published once its record is stored, so that a task the dispatcher
finishes always has its call history; nothing waits for either, so a call's task ends as
soon as the call does.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from scheduler.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import call_records
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.common.retry import retry
from services.dialer import repository
from services.dialer.backend import CallReport
from services.dialer.batching import Coalescer
from services.dialer.events import CallEventPublisher

log = logging.getLogger(__name__)


class _Connected(NamedTuple):
    call_uuid: str


class _Ended(NamedTuple):
    row: dict[str, Any]
    event: events_pb2.CallEvent  # published once the row is stored


class RecordWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        events: CallEventPublisher,
        retry_seconds: float,
        max_batch: int = 1000,
    ) -> None:
        self._engine = engine
        self._events = events
        self._retry_seconds = retry_seconds
        self._batches: Coalescer[_Connected | _Ended] = Coalescer(self._write, max_batch)

    def note_connected(self, call_uuid: str) -> None:
        """Note, without waiting, that the call connected A and B: if its end is then never
        reported, the attempt's lease expiry still counts it as connected."""
        self._batches.submit_nowait(_Connected(call_uuid))

    def call_ended(self, call_uuid: str, report: CallReport, event: events_pb2.CallEvent) -> None:
        """Store the call's record, then publish its end event, without waiting for either.
        If the database stays unavailable for `retry_seconds`, neither happens (logged):
        the dispatcher's lease expiry then resolves the attempt."""
        row = {
            "call_uuid": call_uuid,
            "result": report.outcome,
            "comment": report.comment,
            "ended_at": report.ended,
            "connected_at": report.connected_at,
            "record": report.as_record(),
        }
        self._batches.submit_nowait(_Ended(row, event))

    async def drain(self) -> None:
        """Returns once every record noted so far was stored (or given up) and its event
        queued for publishing."""
        await self._batches.drain()

    async def run(self) -> None:
        await self._batches.run()

    async def _write(self, items: list[_Connected | _Ended]) -> None:
        ended = [item for item in items if isinstance(item, _Ended)]
        # A call that ended in this batch has its connection time in its end row.
        ended_calls = {item.row["call_uuid"] for item in ended}
        connected = [
            item.call_uuid
            for item in items
            if isinstance(item, _Connected) and item.call_uuid not in ended_calls
        ]
        try:
            await self._write_retrying(connected, [item.row for item in ended])
        except Exception:
            log.exception("call records not saved", extra={"action": "save_failed"})
            raise
        for item in ended:
            self._events.publish_nowait(item.event)

    async def _write_retrying(self, connected: list[str], ended: list[dict[str, Any]]) -> None:
        async def write() -> None:
            async with transaction(self._engine) as conn:
                await call_records.note_calls_connected(conn, connected)
                await repository.finish_calls(conn, ended)

        await retry(
            write,
            on=StorageUnavailable,
            first=0.2,
            cap=5.0,
            give_up_after=self._retry_seconds,
        )
