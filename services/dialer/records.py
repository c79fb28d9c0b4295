"""Saves what the dialer learns about its calls, in batches: calls that connect or end
together share a transaction and one UPDATE each, instead of one transaction each."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.batching import Coalescer
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.dialer import repository
from services.dialer.backend import CallReport

log = logging.getLogger(__name__)

# What a row says about its call: it connected A and B, or it ended (with its record).
Kind = Literal["connected", "ended"]


class RecordWriter:
    def __init__(self, engine: AsyncEngine, retry_seconds: float, max_batch: int = 500) -> None:
        self._engine = engine
        self._retry_seconds = retry_seconds
        self._batches: Coalescer[tuple[Kind, dict[str, Any]]] = Coalescer(self._write, max_batch)

    def note_connected(self, call_uuid: str) -> None:
        """Note, without waiting, that the call connected A and B: if its end is then never
        reported, the attempt's lease expiry still counts it as connected."""
        self._batches.submit_nowait(("connected", {"call_uuid": call_uuid}))

    async def save(self, call_uuid: str, report: CallReport) -> None:
        """Returns once the record is stored (or, after a long database outage, given up:
        the dispatcher's lease expiry then resolves the attempt)."""
        connected_at = report.connected_at.isoformat() if report.connected_at else None
        row = {
            "call_uuid": call_uuid,
            "result": report.outcome,
            "comment": report.comment,
            "ended_at": report.ended.isoformat(),
            "connected_at": connected_at,
            "record": report.as_record(),
        }
        await self._batches.submit(("ended", row))

    async def run(self) -> None:
        await self._batches.run()

    async def _write(self, rows: list[tuple[Kind, dict[str, Any]]]) -> None:
        ended = [row for kind, row in rows if kind == "ended"]
        # A call that ended in this batch has its connection time in its end row.
        ended_calls = {row["call_uuid"] for row in ended}
        connected = [
            row["call_uuid"]
            for kind, row in rows
            if kind == "connected" and row["call_uuid"] not in ended_calls
        ]
        try:
            await self._write_retrying(connected, ended)
        except Exception:
            log.exception("call records not saved", extra={"action": "save_failed"})
            raise

    async def _write_retrying(self, connected: list[str], ended: list[dict[str, Any]]) -> None:
        delay, waited = 0.2, 0.0
        while True:
            try:
                async with transaction(self._engine) as conn:
                    await repository.note_calls_connected(conn, connected)
                    await repository.finish_calls(conn, ended)
                return
            except StorageUnavailable:
                if waited >= self._retry_seconds:
                    raise
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)
