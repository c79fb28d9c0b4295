"""Saves the records of ended calls in batches: calls that end together share a transaction
(psycopg pipelines the statements), instead of one transaction each."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.dialer import repository
from services.dialer.backend import CallReport

log = logging.getLogger(__name__)

_Pending = tuple[dict[str, Any], "asyncio.Future[None]"]


class RecordWriter:
    def __init__(self, engine: AsyncEngine, retry_seconds: float, max_batch: int = 500) -> None:
        self._engine = engine
        self._retry_seconds = retry_seconds
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def save(self, call_uuid: str, report: CallReport) -> None:
        """Returns once the record is stored (or, after a long database outage, given up:
        the dispatcher's lease expiry then resolves the attempt)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        params = {
            "call_uuid": call_uuid,
            "result": report.outcome,
            "comment": report.comment,
            "ended_at": report.ended,
            "record": report.as_record(),
        }
        self._queue.put_nowait((params, done))
        await done

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write([params for params, _ in batch])
            except Exception as err:
                log.exception("call records not saved", extra={"action": "save_failed"})
                for _, done in batch:
                    if not done.done():
                        done.set_exception(err)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _write(self, rows: list[dict[str, Any]]) -> None:
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
