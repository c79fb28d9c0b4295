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


class Coalescer(Generic[Item]):
    def __init__(self, write: Callable[[list[Item]], Awaitable[None]], max_batch: int) -> None:
        self._write = write
        self._max_batch = max_batch
        # Each item with the future its submitter awaits (None: nobody waits for it).
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[None] | None]] = asyncio.Queue()

    async def submit(self, item: Item) -> None:
        """Returns once the batch holding `item` is written; raises what its write raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, done))
        await done

    def submit_nowait(self, item: Item) -> None:
        """Queue `item` without waiting for its write (a failed write is for `write` to
        log)."""
        self._queue.put_nowait((item, None))

    async def drain(self) -> None:
        """Returns once everything submitted so far has been written (or its write failed)."""
        await self._queue.join()

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            failure: Exception | None = None
            try:
                await self._write([item for item, _ in batch])
            except Exception as err:
                failure = err
            for _, done in batch:
                if done is not None and not done.done():
                    if failure is None:
                        done.set_result(None)
                    else:
                        done.set_exception(failure)
                self._queue.task_done()
