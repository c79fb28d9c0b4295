"""Saves the records of ended calls in batches: calls that end together share a transaction
and one UPDATE, instead of one transaction each."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.batching import Coalescer
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.dialer import repository
from services.dialer.backend import CallReport

log = logging.getLogger(__name__)


class RecordWriter:
    def __init__(self, engine: AsyncEngine, retry_seconds: float, max_batch: int = 500) -> None:
        self._engine = engine
        self._retry_seconds = retry_seconds
        self._batches: Coalescer[dict[str, Any]] = Coalescer(self._write, max_batch)

    async def save(self, call_uuid: str, report: CallReport) -> None:
        """Returns once the record is stored (or, after a long database outage, given up:
        the dispatcher's lease expiry then resolves the attempt)."""
        params = {
            "call_uuid": call_uuid,
            "result": report.outcome,
            "comment": report.comment,
            "ended_at": report.ended,
            "record": report.as_record(),
        }
        await self._batches.submit(params)

    async def run(self) -> None:
        await self._batches.run()

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            await self._write_retrying(rows)
        except Exception:
            log.exception("call records not saved", extra={"action": "save_failed"})
            raise

    async def _write_retrying(self, rows: list[dict[str, Any]]) -> None:
        delay, waited = 0.2, 0.0
        while True:
            try:
                async with transaction(self._engine) as conn:
                    await repository.finish_calls(conn, rows)
                return
            except StorageUnavailable:
                if waited >= self._retry_seconds:
                    raise
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)
