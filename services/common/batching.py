"""Coalescing many small writes into one: items submitted while a write is in progress go
out together in the next one.

Written here because it is a dozen lines of asyncio: a batch is whatever queued up during
the previous write, so a lone item goes out at once (no timer, no added latency) and a
busy stream of items goes out in few, large writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


def _consume_result(done: asyncio.Future[None]) -> None:
    """Mark a result nobody awaits as seen (asyncio would warn of an unread exception)."""
    if not done.cancelled():
        done.exception()


class Coalescer(Generic[Item]):
    def __init__(self, write: Callable[[list[Item]], Awaitable[None]], max_batch: int) -> None:
        self._write = write
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[None]]] = asyncio.Queue()

    async def submit(self, item: Item) -> None:
        """Returns once the batch holding `item` is written; raises what its write raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, done))
        await done

    def submit_nowait(self, item: Item) -> None:
        """Queue `item` without waiting for its write (a failed write is for `write` to
        log)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_consume_result)
        self._queue.put_nowait((item, done))

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write([item for item, _ in batch])
            except Exception as err:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(err)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
